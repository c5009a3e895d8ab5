//! Test hosts as network namespaces on this machine: each [`Netns`] is a host with its own
//! loopback, joined to others by veth pairs ([`link`]), so traffic between "hosts" crosses a real
//! (virtual) network and never leaves the machine. Made with iproute2 (`ip netns`), as root;
//! removed (with their veth links) when dropped.
//!
//! A test can act as a client on a host with [`Netns::run`]: a new thread `setns`es into the
//! namespace (which moves only that thread), so the sockets it opens belong to that host.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// Makes a namespace named after the test process and `tag`, with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("ondemand-test-{}-{n}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns: sockets `f`
    /// opens belong to this host.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in the namespace")
    }

    /// Like [`run`](Self::run), without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name);
            f()
        })
    }
}

/// Moves the calling thread into the namespace `name` (for the rest of the thread's life).
fn enter(name: &str) {
    let file = File::open(format!("/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("open /run/netns/{name}: {e}"));
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns into {name}: {e}"));
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` and `b` with a veth pair: `a` gets `a_addr` (like "10.0.1.1/24") on an interface
/// named `a_if`, `b` gets `b_addr` on `b_if`; both up.
pub fn link(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    ip(&[
        "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, iface, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        ip(&["-n", &ns.name, "addr", "add", addr, "dev", iface]);
        ip(&["-n", &ns.name, "link", "set", iface, "up"]);
    }
}

/// Adds a route in `ns` (for a host reached through another).
pub fn route(ns: &Netns, to: &str, via: &str) {
    ip(&["-n", &ns.name, "route", "add", to, "via", via]);
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip (iproute2): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}(network namespaces need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

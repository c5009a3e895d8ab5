//! Whose is a loopback port: the app's, or another process's.
//!
//! In port mode ondemand picks a port that was free a moment ago and tells the app to listen on
//! it. Until the app binds it, any other process may take it, and a readiness check that only
//! connects would then send the app's traffic to that process. [`owner`] tells the two apart:
//! the listening sockets on the port (from [`sock_diag`], cheap on a host with many connections;
//! `/proc/net/tcp{,6}` where netlink is unavailable) against the sockets the processes of the
//! app's process group hold open (`/proc/<pid>/fd`), the group the app is stopped with.

use std::collections::HashSet;
use std::fs;
use std::io;

mod sock_diag;

/// Who listens on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Every listening socket on the port is held by a process of the app's group.
    App,
    /// Some listening socket on the port is held by a process outside it.
    Other,
    /// It cannot be told: no listener is visible, or some process of the group hides its
    /// open files (not dumpable, or ondemand is not root and the app runs as another user).
    Unknown,
}

/// Who listens on TCP `port` (any local address, IPv4 or IPv6): the processes of process group
/// `group` (the app's pid: it runs `setsid`), or another process.
pub fn owner(port: u16, group: u32) -> Owner {
    let listeners = listening_inodes(port);
    if listeners.is_empty() {
        return Owner::Unknown;
    }
    // Usually the app's main process holds the socket itself (one process, or a master whose
    // workers inherit it): only when it does not are all the processes of /proc looked at.
    if socket_inodes(group).is_ok_and(|main| listeners.iter().all(|i| main.contains(i))) {
        return Owner::App;
    }
    let Some(held) = group_socket_inodes(group) else {
        return Owner::Unknown;
    };
    if listeners.is_subset(&held) {
        Owner::App
    } else {
        Owner::Other
    }
}

/// The inodes of the sockets listening on `port`: from sock_diag, or where netlink cannot answer,
/// from the kernel's TCP tables in /proc.
fn listening_inodes(port: u16) -> HashSet<u64> {
    sock_diag::listening_inodes(port).unwrap_or_else(|_| listening_inodes_in_proc(port))
}

fn listening_inodes_in_proc(port: u16) -> HashSet<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|text| listeners_in(&text, port))
        .collect()
}

/// The inodes of the listening sockets on `port` in one table of `/proc/net/tcp` format:
/// `sl local_address rem_address st ... inode`, the address in hex as `ADDR:PORT`, state `0A`
/// for LISTEN.
fn listeners_in(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit_once(':')?.1;
            let listening = *fields.get(3)? == LISTEN;
            let on_port = u16::from_str_radix(local_port, 16).ok()? == port;
            (listening && on_port).then(|| fields.get(9)?.parse().ok())?
        })
        .collect()
}

/// The inodes of every socket open in a process of `group`; `None` when some process of it
/// hides its open files.
fn group_socket_inodes(group: u32) -> Option<HashSet<u64>> {
    let mut inodes = HashSet::new();
    for pid in super::usage::group_members(group) {
        match socket_inodes(pid) {
            Ok(found) => inodes.extend(found),
            // It exited while we looked: it holds nothing now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    Some(inodes)
}

/// The inodes of the sockets `pid` holds open (`/proc/<pid>/fd/*` links read `socket:[inode]`).
fn socket_inodes(pid: u32) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            inodes.push(inode);
        }
    }
    Ok(inodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_are_read_from_the_table() {
        assert_eq!(listeners_in(TABLE, 0x1F90), vec![4242]);
        assert_eq!(listeners_in(TABLE, 80), vec![4444]);
        assert!(listeners_in(TABLE, 81).is_empty());
    }

    /// A python in a session of its own that listens on a loopback port and waits; the port.
    fn listener_in_own_session() -> (Child, u16) {
        let script = "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\n\
                      print(s.getsockname()[1],flush=True)\ntime.sleep(60)";
        let mut command = Command::new("python3");
        command.args(["-c", script]).stdout(Stdio::piped());
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
        }
        let mut child = command.spawn().expect("python3 runs");
        let mut line = String::new();
        let stdout = child.stdout.as_mut().unwrap();
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line).unwrap();
        let port = line.trim().parse().expect("python prints its port");
        (child, port)
    }

    fn end(mut child: Child) {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_proc_tables_and_sock_diag_agree() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let from_proc = listening_inodes_in_proc(port);
        assert_eq!(from_proc.len(), 1);
        assert_eq!(sock_diag::listening_inodes(port).unwrap(), from_proc);
    }

    #[test]
    fn a_port_the_group_listens_on_is_the_apps() {
        let (app, port) = listener_in_own_session();
        assert_eq!(owner(port, app.id()), Owner::App);
        end(app);
    }

    #[test]
    fn a_port_another_process_took_is_not_the_apps() {
        // The "app" is a process in a session of its own; its port is taken by this test.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let (app, _) = listener_in_own_session();
        assert_eq!(owner(port, app.id()), Owner::Other);
        end(app);
    }

    #[test]
    fn a_port_nobody_listens_on_cannot_be_told() {
        // Bound, so no one else can listen on it, but not listening.
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = bound.local_addr().unwrap().port();
        assert_eq!(owner(port, std::process::id()), Owner::Unknown);
    }
}

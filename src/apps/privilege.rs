//! What ondemand needs to start an app as another user, and the clear refusal when it lacks it.
//!
//! Under systemd the shipped unit runs ondemand as the unprivileged user `ondemand` with no
//! capabilities; the drop-in `systemd/apps-as-other-users.conf` gives it exactly
//! [`NEEDED`] as ambient capabilities when apps set `user =` (see the README's Security section).
//! Ambient capabilities pass to every program a process executes, so ondemand clears its ambient
//! set at start ([`keep_capabilities_to_itself`]): the capabilities stay effective in ondemand and
//! no app (nor anything else ondemand runs) inherits them. An app started as another user loses
//! them at exec anyway: it is not root and its program has no file capabilities that
//! `NoNewPrivileges=` would let through.
//!
//! Without them, a start that needs a switch fails before anything is forked, with a message
//! naming the app, the user, what is missing and where to read how to grant it — not a bare
//! `EPERM` from the child.

use nix::libc;

/// The capabilities ondemand needs to run apps as other users, with why, in the order the
/// README and the drop-in list them.
pub const NEEDED: [(Capability, &str); 4] = [
    (Capability::Setuid, "switch the app's process to its user"),
    (
        Capability::Setgid,
        "set the app's group and supplementary groups",
    ),
    (
        Capability::Kill,
        "stop the app (signals to another user's processes)",
    ),
    (
        Capability::Chown,
        "hand the app its NOTIFY_SOCKET (ready = \"notify\")",
    ),
];

/// The README section to point to.
const SEE: &str = "see \"Security\" in the README (/usr/share/doc/ondemand/README.md.gz)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    Chown,
    Kill,
    Setgid,
    Setuid,
}

impl Capability {
    /// The bit in `/proc/PID/status` `CapEff` (linux/capability.h).
    fn bit(self) -> u32 {
        match self {
            Capability::Chown => 0,
            Capability::Kill => 5,
            Capability::Setgid => 6,
            Capability::Setuid => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Capability::Chown => "CAP_CHOWN",
            Capability::Kill => "CAP_KILL",
            Capability::Setgid => "CAP_SETGID",
            Capability::Setuid => "CAP_SETUID",
        }
    }
}

/// Clears the ambient capability set of the calling thread (and of the threads it starts after
/// this), so that programs ondemand runs never inherit its capabilities. Call first in `main`,
/// before any thread exists. A kernel without ambient capabilities (before 4.3) has none to clear.
pub fn keep_capabilities_to_itself() {
    // SAFETY: a plain prctl; it changes only this thread's ambient set.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
}

/// What running an app as `uid`/`gid`/`groups` changes from ondemand's own identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    pub uid: bool,
    pub groups: bool,
}

impl Switch {
    /// Compared with this process's effective ids and supplementary groups.
    pub fn to(uid: u32, gid: u32, groups: &[u32]) -> Switch {
        let mut wanted: Vec<u32> = groups.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut current: Vec<u32> = nix::unistd::getgroups()
            .map(|g| g.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        let egid = nix::unistd::getegid().as_raw();
        // getgroups may or may not list the effective group; getgrouplist always lists the
        // primary one.
        current.push(egid);
        current.sort_unstable();
        current.dedup();
        Switch {
            uid: uid != nix::unistd::geteuid().as_raw(),
            groups: gid != egid || wanted != current,
        }
    }

    pub fn any(self) -> bool {
        self.uid || self.groups
    }
}

/// Ok when ondemand can start (and stop) an app as `user`; else the reason to answer and log
/// (after the app's name). `notify` says whether the app gets a NOTIFY_SOCKET, which must be
/// given to its user.
pub fn check_switch(user: &str, switch: Switch, notify: bool) -> Result<(), String> {
    let needed = NEEDED.iter().filter(|(cap, _)| match cap {
        Capability::Setuid | Capability::Kill => switch.uid,
        Capability::Setgid => switch.groups,
        Capability::Chown => switch.uid && notify,
    });
    let effective = effective_capabilities();
    let missing: Vec<&(Capability, &str)> = needed
        .filter(|(cap, _)| effective & (1 << cap.bit()) == 0)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(cap, _)| cap.name()).collect();
    let why: Vec<&str> = missing.iter().map(|(_, why)| *why).collect();
    Err(format!(
        "cannot run it as user {user:?}: ondemand runs as {} without {} \
         (needed to {}). Under systemd, install the drop-in apps-as-other-users.conf for \
         ondemand.service; under xinetd, run ondemand as root; or remove `user =` from the app \
         — {SEE}",
        whoami(),
        names.join(", "),
        why.join(", ")
    ))
}

/// `uid 994 (ondemand)`.
fn whoami() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// The effective capability set of this process, from `/proc/self/status` (all bits clear if
/// it cannot be read: then every switch is refused with the message above, which is right for a
/// process that cannot even read its own status).
fn effective_capabilities() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_as_oneself_needs_nothing() {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .chain([gid])
            .collect();
        let switch = Switch::to(uid, gid, &groups);
        assert!(!switch.any(), "{switch:?}");
        assert_eq!(check_switch("me", switch, true), Ok(()));
    }

    #[test]
    fn the_refusal_names_the_app_the_user_and_what_is_missing() {
        if effective_capabilities() & (1 << Capability::Setuid.bit()) != 0 {
            eprintln!("skipped: this test process has CAP_SETUID");
            return;
        }
        let switch = Switch {
            uid: true,
            groups: true,
        };
        let message = check_switch("wiki", switch, false).unwrap_err();
        for needle in [
            "user \"wiki\"",
            "CAP_SETUID, CAP_SETGID, CAP_KILL",
            "apps-as-other-users.conf",
            "Security",
        ] {
            assert!(message.contains(needle), "{needle}: {message}");
        }
        assert!(!message.contains("CAP_CHOWN"), "{message}");
    }

    #[test]
    fn effective_capabilities_are_read() {
        let root = nix::unistd::geteuid().is_root();
        assert_eq!(
            effective_capabilities() & (1 << Capability::Setuid.bit()) != 0,
            root,
            "tests run as root with every capability, or as a user with none"
        );
    }
}

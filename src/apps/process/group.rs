//! The app's process group, and the processes that escape it.
//!
//! Each app runs in its own session and process group, whose id is the app's pid, so signalling
//! the group reaches everything the app started that stayed in it. A group id is only a number,
//! though: once the group's last member is gone the kernel may give it to an unrelated process.
//! [`super::AppProcess`] therefore signals and reaps the group only while the number is provably
//! still the app's: before its main process is reaped (the zombie holds the number), and for a
//! short while after (leftover members hold it; a freed number comes back only when the pid
//! counter wraps around).
//!
//! What escapes the group, such as a daemon that calls `setsid`, is found another way: ondemand
//! makes itself a child subreaper ([`become_subreaper`]), so orphans are reparented to it instead
//! of to init, and [`kill_strays`] kills and reaps them when ondemand is done.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How long [`kill_strays`] waits for what it killed to die.
const STRAYS_DEADLINE: Duration = Duration::from_secs(2);

/// How often [`kill_strays`] looks again while something it killed is still dying.
const STRAYS_POLL: Duration = Duration::from_millis(5);

/// Makes ondemand a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes orphaned by the apps,
/// including those that left their app's group, are reparented to ondemand instead of init, so
/// that stopping an app can reap its group and [`kill_strays`] can find the rest.
pub fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(
            "cannot become a child subreaper ({e}): processes that apps leave behind will be \
             reparented to init and not stopped with them"
        );
    }
}

/// Kills (SIGKILL) and reaps every remaining child of ondemand, including orphans reparented to
/// it as a subreaper, and returns how many it reaped. For the end of ondemand's life, after every
/// app has been stopped: it also kills the apps still running, behind their
/// [`super::AppProcess`]'s back. Blocks for up to two seconds while what it killed dies.
pub fn kill_strays() -> usize {
    let deadline = Instant::now() + STRAYS_DEADLINE;
    let mut reaped = 0;
    loop {
        let strays = children();
        if strays.is_empty() {
            return reaped;
        }
        for &pid in &strays {
            let _ = kill(pid, Signal::SIGKILL);
        }
        // Killing one may orphan its own children onto us: the next round finds those.
        let reaped_now = strays.iter().filter(|&&pid| reap(pid)).count();
        reaped += reaped_now;
        if Instant::now() >= deadline {
            tracing::warn!(
                "{} processes ondemand started did not die within {STRAYS_DEADLINE:?} of SIGKILL",
                strays.len() - reaped_now
            );
            return reaped;
        }
        if reaped_now < strays.len() {
            std::thread::sleep(STRAYS_POLL);
        }
    }
}

/// This process's children, read from `/proc/self/task/*/children` (each thread has its own
/// children: those it forked, and orphans the kernel handed to it).
fn children() -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids: Vec<Pid> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .map(Pid::from_raw)
                .collect::<Vec<_>>()
        })
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// Reaps `pid` if it has exited; true if it did.
fn reap(pid: Pid) -> bool {
    matches!(
        waitpid(pid, Some(WaitPidFlag::WNOHANG)),
        Ok(status) if status != WaitStatus::StillAlive
    )
}

/// Sends `signal` to every process in group `pgid`. A group that is already empty is fine.
pub(super) fn signal(app: &str, pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(app, "cannot send {signal} to the app's processes: {e}"),
    }
}

/// Reaps whatever has exited among ondemand's children in group `pgid`: the app's own children,
/// reparented to ondemand (a subreaper) when the app died.
pub(super) fn reap_members(pgid: i32) {
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            // ECHILD: none of ondemand's children is in the group.
            Err(_) => return,
        }
    }
}

/// True while some process in group `pgid` has not exited. Zombies do not count: they have
/// exited, and the ones that are not ondemand's to reap belong to init (`kill(-pgid, 0)` alone
/// would count them).
pub(super) fn has_live_members(pgid: i32) -> bool {
    if killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return true;
    };
    processes.flatten().any(|entry| {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        matches!(state_and_group(&stat), Some((state, group)) if group == pgid && !matches!(state, 'Z' | 'X'))
    })
}

/// The state letter and the process group from the text of `/proc/<pid>/stat`.
fn state_and_group(stat: &str) -> Option<(char, i32)> {
    // The command name, in parentheses, may itself contain spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let group = fields.next()?.parse().ok()?;
    Some((state, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_past_odd_command_names() {
        let stat = "4242 (we ird) (name)) S 1 4240 4240 0 -1 4194560 98 0 0 0";
        assert_eq!(state_and_group(stat), Some(('S', 4240)));
        assert_eq!(state_and_group("garbage"), None);
    }
}

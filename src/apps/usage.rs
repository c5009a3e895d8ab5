//! Memory and CPU of an app's processes, read from /proc: every process in the app's process
//! group (its main process is the group leader), so workers and helpers are counted too. Also
//! who those processes are ([`group_members`]), for the port-mode readiness check.
//! Only read when someone asks (`ondemand status`, a metrics scrape), never per request.

/// Resident memory (bytes) and CPU time (seconds) of the process groups `groups`.
pub fn of_groups(groups: &[u32]) -> (u64, f64) {
    if groups.is_empty() {
        return (0, 0.0);
    }
    let page = page_size();
    let ticks = ticks_per_second();
    let mut rss = 0;
    let mut cpu = 0.0;
    for (_, stat) in processes().filter(|(_, stat)| groups.contains(&stat.pgrp)) {
        rss += stat.rss_pages * page;
        cpu += (stat.utime + stat.stime) as f64 / ticks;
    }
    (rss, cpu)
}

/// The pids of the processes in process group `group`.
pub fn group_members(group: u32) -> Vec<u32> {
    processes()
        .filter(|(_, stat)| stat.pgrp == group)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every process visible in /proc, with its stat; one that exits meanwhile is left out.
fn processes() -> impl Iterator<Item = (u32, Stat)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
}

struct Stat {
    pgrp: u32,
    utime: u64,
    stime: u64,
    rss_pages: u64,
}

/// Fields of /proc/PID/stat after the command name (which may contain spaces and parentheses).
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(3) ppid(4) pgrp(5) ... utime(14) stime(15) ... rss(24), 1-based overall.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        pgrp: u32::try_from(field(5)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        rss_pages: field(24)?,
    })
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |v| v as u64)
}

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |v| v as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let line = "123 (my (odd) app) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 \
                    100 1000000 300 18446744073709551615";
        let s = super::parse_stat(line).unwrap();
        assert_eq!((s.pgrp, s.utime, s.stime, s.rss_pages), (123, 250, 50, 300));
    }

    #[test]
    fn measures_our_own_group() {
        let own = nix::unistd::getpgrp().as_raw() as u32;
        let (rss, _cpu) = super::of_groups(&[own]);
        assert!(rss > 0);
    }
}

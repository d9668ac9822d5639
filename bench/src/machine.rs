//! How busy the machine was with things other than the benchmark: the CPU time the whole
//! system spent, minus what this process and its children spent, from Linux's `/proc`. A
//! build running beside the benchmark shows up in every p99; this makes it visible in the report
//! instead of leaving it to be guessed. Elsewhere than Linux it reports nothing.

use std::time::Instant;

/// A reading of the CPU counters, in clock ticks.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    at: Instant,
    /// All CPUs, busy in processes (user, nice, system). Interrupt time is left out: with
    /// interrupt-time accounting the loopback traffic of the benchmark itself lands there, and
    /// is not in any process's counters.
    system_busy: u64,
    /// All CPUs, time taken by the hypervisor from this virtual machine.
    steal: u64,
    /// This process and the given children, user + system.
    ours: u64,
}

/// What other work took while the benchmark ran.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Interference {
    /// CPU used by other processes, as a percentage of all CPUs over the interval.
    pub other_pct: f64,
    /// CPU stolen by the hypervisor, as a percentage of all CPUs over the interval.
    pub steal_pct: f64,
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux architecture Rust supports; reading it needs `sysconf`.
    100.0
}

fn read_system() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy = v.first()? + v.get(1)? + v.get(2)?;
    Some((busy, *v.get(7)?))
}

fn read_process(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; the fields after it start at
    // field 3 (state), so utime (field 14) and stime (field 15) are the 12th and 13th.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time of every running process whose command name is one of `names` (servers the
/// benchmark uses, such as PostgreSQL's backends). A process that ends between two snapshots
/// takes its time with it, which then counts as other load: the figure errs towards "busy".
fn read_named(names: &[&str]) -> u64 {
    if names.is_empty() {
        return 0;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| names.contains(&comm.trim_end()))
        })
        .filter_map(|pid| read_process(&pid))
        .sum()
}

/// Reads the counters now, counting `children` (process ids) and the processes named in
/// `servers` as part of the benchmark.
pub fn snapshot(children: &[u32], servers: &[&str]) -> Option<Snapshot> {
    let (system_busy, steal) = read_system()?;
    let mut ours = read_process("self")?;
    for pid in children {
        ours += read_process(&pid.to_string())?;
    }
    ours += read_named(servers);
    Some(Snapshot {
        at: Instant::now(),
        system_busy,
        steal,
        ours,
    })
}

/// The other work between two snapshots, given the number of CPUs.
pub fn interference(start: Snapshot, end: Snapshot, cpus: usize) -> Option<Interference> {
    let capacity = end.at.duration_since(start.at).as_secs_f64() * cpus as f64;
    if capacity <= 0.0 {
        return None;
    }
    let secs = |ticks: u64| ticks as f64 / ticks_per_second();
    let busy = secs(end.system_busy.saturating_sub(start.system_busy));
    let ours = secs(end.ours.saturating_sub(start.ours));
    let steal = secs(end.steal.saturating_sub(start.steal));
    Some(Interference {
        other_pct: (100.0 * (busy - ours) / capacity).max(0.0),
        steal_pct: 100.0 * steal / capacity,
    })
}

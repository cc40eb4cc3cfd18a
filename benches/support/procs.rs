//! CPU and memory of a target's processes, read from /proc: one pid, or a pid (given directly or
//! through a pidfile) plus all its descendants (nginx master + workers, HAProxy).

use std::path::PathBuf;

/// Which processes make up a target.
#[derive(Clone, Debug)]
pub enum Procs {
    /// One process (llm-keyproxy, a child of the bench).
    One(u32),
    /// A root pid and every descendant, re-resolved at each reading (workers may be respawned).
    Tree(u32),
    /// A pidfile naming the root (read at each reading), plus every descendant.
    Pidfile(PathBuf),
}

impl Procs {
    /// `1234` is a pid (a tree), anything else a pidfile path.
    pub fn parse(spec: &str) -> Procs {
        match spec.trim().parse::<u32>() {
            Ok(pid) => Procs::Tree(pid),
            Err(_) => Procs::Pidfile(PathBuf::from(spec.trim())),
        }
    }

    /// The pids now (empty when the pidfile or process is gone).
    pub fn pids(&self) -> Vec<u32> {
        let root = match self {
            Procs::One(pid) => return vec![*pid],
            Procs::Tree(pid) => *pid,
            Procs::Pidfile(path) => match std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(pid) => pid,
                None => return Vec::new(),
            },
        };
        let parents = all_parents();
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let p = out[i];
            out.extend(
                parents
                    .iter()
                    .filter(|(_, ppid)| *ppid == p)
                    .map(|(pid, _)| *pid),
            );
            i += 1;
        }
        out
    }

    /// User + system CPU seconds of the processes so far.
    pub fn cpu_secs(&self) -> f64 {
        self.pids().iter().map(|&p| cpu_secs(p)).sum()
    }

    /// Resident set size, summed over the processes (shared pages counted once per process).
    pub fn rss_kib(&self) -> u64 {
        self.pids().iter().map(|&p| status_kib(p, "VmRSS:")).sum()
    }

    /// Proportional set size, summed (shared pages split between the processes sharing them).
    pub fn pss_kib(&self) -> u64 {
        self.pids()
            .iter()
            .map(|&p| {
                std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("Pss:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    pub fn count(&self) -> usize {
        self.pids().len()
    }
}

/// (pid, ppid) of every process.
fn all_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after = stat.rsplit(')').next()?;
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// CPU seconds of `pid` so far: the sum of its live threads' run time from
/// /proc/PID/task/TID/schedstat (nanoseconds, unlike the 10 ms ticks of /proc/PID/stat).
/// Threads that exited between two readings are not counted; the proxies measured here keep
/// their threads (nginx workers are single-threaded processes, HAProxy and tokio keep theirs).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .filter_map(|t| {
            let path = t.ok()?.path().join("schedstat");
            std::fs::read_to_string(path)
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    ns as f64 / 1e9
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// This process's soft limit on open files (children such as llm-keyproxy inherit it); None
/// when unlimited or unreadable.
pub fn open_file_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Descriptors this process has open now.
pub fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// CPU seconds of this (the bench) process: the load generator, plus the mock when in-process.
pub fn self_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

/// The machine, for the report: cores, CPU model, memory, kernel.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    serde_json::json!({
        "cores": cores,
        "cpu_model": model,
        "mem_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel,
        "loadavg_at_start": loadavg,
    })
}

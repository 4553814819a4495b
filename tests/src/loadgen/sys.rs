//! The process side of a load run: raising our own file-descriptor limit, and sampling another
//! process's CPU time and resident memory from `/proc` (plain text parsing, no unsafe code).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")
}

/// One sample of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// CPU-seconds the process used between `earlier` and this sample.
    pub fn cpu_seconds_since(&self, earlier: &ProcSample, clk_tck: u64) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / clk_tck.max(1) as f64
    }
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = std::fs::read_to_string(dir.join("stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(dir.join("status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(ProcSample { cpu_ticks: parse_cpu_ticks(&stat)?, rss_kib: parse_rss_kib(&status)? })
}

/// utime + stime from the text of `/proc/PID/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Result<u64> {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no `)` in /proc/PID/stat")?;
    // After `)`: field 3 (state) is index 0, so utime (field 14) is index 11, stime index 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.len() < 13 {
        bail!("/proc/PID/stat has too few fields");
    }
    let utime: u64 = fields[11].parse().context("utime")?;
    let stime: u64 = fields[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// VmRSS (KiB) from the text of `/proc/PID/status`.
pub fn parse_rss_kib(status: &str) -> Result<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS in /proc/PID/status")?;
    let value = line.trim_start_matches("VmRSS:").split_whitespace().next().context("empty VmRSS")?;
    value.parse().context("VmRSS value")
}

/// Clock ticks per second (`getconf CLK_TCK`, else the usual 100).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_text() {
        let stat = "1234 (my (odd) srv) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 8 0 100 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap_or(0), 325);
        assert!(parse_cpu_ticks("1 (x) S 1").is_err());
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   5120 kB\nThreads: 4\n";
        assert_eq!(parse_rss_kib(status).unwrap_or(0), 5120);
        assert!(parse_rss_kib("Name: x\n").is_err());
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(clock_ticks_per_sec() > 0);
    }
}

//! Latency recording and process probes (`/proc`) for the benchmark.

use std::path::Path;
use std::time::Duration;

/// Latency samples in microseconds. Exact: keeps every sample (a 60 s run at 1 000
/// CALLs/s is 60 000 `u32`s), so percentiles are exact rather than bucketed.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<u32>,
    sorted: bool,
}

impl Latencies {
    /// An empty recorder.
    pub fn new() -> Self {
        Latencies::default()
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        self.samples.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        self.sorted = false;
    }

    /// Adds all samples of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.samples.extend_from_slice(&other.samples);
        self.sorted = false;
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True without samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `q`-quantile (0.0..=1.0), nearest-rank; `None` without samples.
    pub fn quantile(&mut self, q: f64) -> Option<Duration> {
        self.sort();
        if self.samples.is_empty() {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.samples.len() as f64).ceil() as usize;
        let idx = rank.saturating_sub(1).min(self.samples.len() - 1);
        Some(Duration::from_micros(u64::from(self.samples[idx])))
    }

    /// The largest sample.
    pub fn max(&mut self) -> Option<Duration> {
        self.quantile(1.0)
    }
}

/// Resident set size of a process (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, "VmRSS:")
}

fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time of a process (utime + stime from `/proc/PID/stat`), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&text)
}

fn parse_stat_ticks(text: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (proc(5)).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we run on).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The soft limit on open files of this process (`/proc/self/limits`), if readable.
pub fn open_files_limit() -> Option<u64> {
    limit_from(Path::new("/proc/self/limits"))
}

fn limit_from(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut l = Latencies::new();
        assert_eq!(l.quantile(0.5), None);
        for us in 1..=100 {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.quantile(0.5), Some(Duration::from_micros(50)));
        assert_eq!(l.quantile(0.99), Some(Duration::from_micros(99)));
        assert_eq!(l.max(), Some(Duration::from_micros(100)));
        let mut m = Latencies::new();
        m.record(Duration::from_millis(5));
        l.merge(&m);
        assert_eq!(l.max(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (edge agent) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(300));
        let status = "Name:\tedge-agent\nVmPeak:\t  2000 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1234));
        let own = std::process::id();
        assert!(rss_kib(own).is_some_and(|k| k > 0));
        assert!(cpu_ticks(own).is_some());
        assert!(open_files_limit().is_some());
    }
}

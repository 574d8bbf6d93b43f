//! What every scenario reports besides its throughput: command-line numbers, latency
//! percentiles and the process's memory (resident and peak, from `/proc/self/status`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The commit this binary was built from (`git rev-parse --short HEAD`, `-dirty` when the
/// work tree had changes, `unknown` without git), recorded by `build.rs`.
pub(crate) const COMMIT: &str = env!("PERDURE_BENCH_COMMIT");

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Marks the start of the run; `emit` reports the seconds since.
pub(crate) fn start_clock() {
    STARTED.get_or_init(Instant::now);
}

/// Prints the scenario's JSON summary line (stdout, last line) with the build's commit and
/// the run's wall time in seconds (`run_seconds`, from process start) added.
pub(crate) fn emit(mut summary: serde_json::Value) {
    if let Some(map) = summary.as_object_mut() {
        map.insert("commit".into(), COMMIT.into());
        let secs = STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
        map.insert(
            "run_seconds".into(),
            ((secs * 100.0).round() / 100.0).into(),
        );
    }
    println!("{summary}");
}

/// The value after `name` in `rest`, parsed; `default` when absent or unparsable.
pub(crate) fn arg(rest: &[String], name: &str, default: u64) -> u64 {
    rest.windows(2)
        .find(|w| w.first().is_some_and(|a| a == name))
        .and_then(|w| w.get(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The text after `name` in `rest`; `default` when absent.
pub(crate) fn arg_str(rest: &[String], name: &str, default: &str) -> String {
    rest.windows(2)
        .find(|w| w.first().is_some_and(|a| a == name))
        .and_then(|w| w.get(1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// The `p` quantile (0..=1, nearest rank) of sorted durations, in milliseconds.
pub(crate) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The process's memory at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Memory {
    /// Resident set size now (`VmRSS`), bytes.
    pub(crate) rss: u64,
    /// Peak resident set size so far (`VmHWM`), bytes.
    pub(crate) peak: u64,
}

impl Memory {
    /// Reads `/proc/self/status`; zeros where it cannot be read (not Linux).
    pub(crate) fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory {
            rss: field("VmRSS:"),
            peak: field("VmHWM:"),
        }
    }

    /// The memory line printed to stderr.
    pub(crate) fn describe(&self) -> String {
        format!("RSS {} MiB (peak {} MiB)", self.rss >> 20, self.peak >> 20)
    }
}

/// CPU time (user + system) the process has used, in seconds, from `/proc/self/stat` (in
/// clock ticks of 1/100 s, Linux's fixed `USER_HZ`); 0 where it cannot be read.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| {
        rest.split_whitespace()
            .nth(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (field(11) + field(12)) as f64 / 100.0
}

//! Runtime metrics: counters and histograms, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let c = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {c}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {c}");
    }
}

/// The node's metrics. Shared by every actor of a node.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Episodes committed.
    pub episodes: AtomicU64,
    /// Episodes whose commit failed (rerun).
    pub episode_failures: AtomicU64,
    /// Episodes too large for one transaction, committed in stages.
    pub staged_episodes: AtomicU64,
    /// Activities executed.
    pub activities: AtomicU64,
    /// Activities that failed (as data).
    pub activity_failures: AtomicU64,
    /// Entity operation batches committed.
    pub entity_batches: AtomicU64,
    /// Entity operations executed.
    pub entity_operations: AtomicU64,
    /// Store commits by the runtime.
    pub commits: AtomicU64,
    /// Orchestrations started.
    pub starts: AtomicU64,
    /// Orchestrations finished (completed, failed, terminated).
    pub completions: AtomicU64,
    /// Activity tasks waiting for a worker.
    pub activity_queue_depth: AtomicI64,
    /// Instance actors alive (instances held in memory).
    pub active_instances: AtomicI64,
    /// Entity actors alive (entities held in memory).
    pub active_entities: AtomicI64,
    /// Instance activations that replayed a stored history (after a passivation, a restart
    /// or a failed commit).
    pub replays: AtomicU64,
    /// Instances and entities quarantined because a stored record of theirs does not decode.
    pub quarantined: AtomicU64,
    /// Timers armed in memory.
    pub armed_timers: AtomicI64,
    /// Partitions this node holds.
    pub partitions_owned: AtomicI64,
    /// Live nodes this node sees.
    pub cluster_nodes: AtomicI64,
    /// Episode latency (execute + commit).
    pub episode_latency: Histogram,
    /// Activity execution latency.
    pub activity_latency: Histogram,
    /// Commit latency.
    pub commit_latency: Histogram,
}

impl Metrics {
    /// Renders every metric in the Prometheus text exposition format.
    ///
    /// ```
    /// let m = perdure_node::metrics::Metrics::default();
    /// assert!(m.render_prometheus().contains("perdure_episodes_total 0"));
    /// ```
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 11] = [
            (
                "perdure_episodes_total",
                "Episodes committed.",
                &self.episodes,
            ),
            (
                "perdure_episode_failures_total",
                "Episodes whose commit failed.",
                &self.episode_failures,
            ),
            (
                "perdure_staged_episodes_total",
                "Episodes too large for one transaction, committed in stages.",
                &self.staged_episodes,
            ),
            (
                "perdure_activities_total",
                "Activities executed.",
                &self.activities,
            ),
            (
                "perdure_activity_failures_total",
                "Activities that failed.",
                &self.activity_failures,
            ),
            (
                "perdure_entity_batches_total",
                "Entity operation batches committed.",
                &self.entity_batches,
            ),
            (
                "perdure_entity_operations_total",
                "Entity operations executed.",
                &self.entity_operations,
            ),
            (
                "perdure_commits_total",
                "Store commits by the runtime.",
                &self.commits,
            ),
            (
                "perdure_starts_total",
                "Orchestrations started.",
                &self.starts,
            ),
            (
                "perdure_replays_total",
                "Instance activations that replayed a stored history.",
                &self.replays,
            ),
            (
                "perdure_quarantined_total",
                "Instances and entities set aside because a stored record does not decode.",
                &self.quarantined,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP perdure_completions_total Orchestrations finished.\n# TYPE perdure_completions_total counter\nperdure_completions_total {}",
            self.completions.load(Ordering::Relaxed)
        );
        let gauges: [(&str, &str, &AtomicI64); 6] = [
            (
                "perdure_activity_queue_depth",
                "Activity tasks waiting for a worker.",
                &self.activity_queue_depth,
            ),
            (
                "perdure_active_instances",
                "Instance actors alive (instances held in memory).",
                &self.active_instances,
            ),
            (
                "perdure_active_entities",
                "Entity actors alive (entities held in memory).",
                &self.active_entities,
            ),
            (
                "perdure_armed_timers",
                "Timers armed in memory.",
                &self.armed_timers,
            ),
            (
                "perdure_partitions_owned",
                "Partitions this node holds.",
                &self.partitions_owned,
            ),
            (
                "perdure_cluster_nodes",
                "Live nodes this node sees (itself included).",
                &self.cluster_nodes,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        self.episode_latency.render(
            "perdure_episode_seconds",
            "Episode latency (execute and commit).",
            &mut out,
        );
        self.activity_latency.render(
            "perdure_activity_seconds",
            "Activity execution latency.",
            &mut out,
        );
        self.commit_latency
            .render("perdure_commit_seconds", "Store commit latency.", &mut out);
        out
    }
}

/// The process's CPU time (user + system) and resident memory, in the Prometheus text
/// format under the standard names `process_cpu_seconds_total` and
/// `process_resident_memory_bytes`, read from `/proc/self/stat` and `/proc/self/status`.
/// Empty where `/proc` cannot be read (not Linux). A load generator in another process reads
/// them to report the node's CPU per orchestration.
///
/// ```
/// let text = perdure_node::metrics::render_process();
/// if cfg!(target_os = "linux") {
///     assert!(text.contains("process_cpu_seconds_total "));
///     assert!(text.contains("process_resident_memory_bytes "));
/// }
/// ```
pub fn render_process() -> String {
    let mut out = String::new();
    if let Some(cpu) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(cpu_seconds_from_stat)
    {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
        );
    }
    if let Some(rss) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(rss_bytes_from_status)
    {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
    }
    out
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds from the text of `/proc/self/stat` (fields 14 and 15, counted
/// after the parenthesised command name, which may itself hold spaces).
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, i.e. the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn rss_bytes_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_rss_are_parsed_from_proc_text() {
        let stat =
            "1234 (perdure node) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 10 0 0";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_from_stat("garbage"), None);
        let status = "Name:\tperdure\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(rss_bytes_from_status(status), Some(1024 * 1024));
        assert_eq!(rss_bytes_from_status("Name: x\n"), None);
    }
}

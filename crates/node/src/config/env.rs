//! The `PERDURE_*` environment variables of a node: one per configuration field (a few with
//! a second, older name), and a warning for the ones no field reads, so that a misspelt
//! variable does not go unnoticed.

use std::path::PathBuf;

use super::{ConfigError, ConfigLayer};

/// Every variable the node reads (without the `PERDURE_` prefix) and the field it sets.
const VARS: &[(&str, &str)] = &[
    ("STORE", "store.backend"),
    ("STORE_BACKEND", "store.backend"),
    ("DATA_DIR", "store.path"),
    ("STORE_PATH", "store.path"),
    ("STORE_URL", "store.url"),
    ("DATABASE_URL", "store.url"),
    ("STORE_POOL_SIZE", "store.pool_size"),
    ("STORE_TABLE", "store.table"),
    ("STORE_GROUP_COMMIT", "store.group_commit"),
    ("FDB_CLUSTER_FILE", "store.cluster_file"),
    ("HTTP", "http.bind"),
    ("HTTP_BIND", "http.bind"),
    ("PUBLIC_URL", "http.public_url"),
    ("MAX_BODY_BYTES", "http.max_body_bytes"),
    ("MAX_WAIT", "http.max_wait"),
    ("LOG_PAYLOADS", "http.log_payloads"),
    ("HTTP_TLS_CERT", "http.tls_cert"),
    ("HTTP_TLS_KEY", "http.tls_key"),
    ("GRPC_LISTEN", "grpc.listen"),
    ("NODE_NAME", "node.name"),
    ("PARTITIONS", "node.partitions"),
    (
        "MAX_CONCURRENT_ACTIVITIES",
        "node.max_concurrent_activities",
    ),
    ("ACTIVITY_QUEUE_BOUND", "node.activity_queue_bound"),
    ("ACTIVITY_LEASE", "node.activity_lease"),
    ("IDLE_PASSIVATION", "node.idle_passivation"),
    ("MAX_ACTIVE_PER_PARTITION", "node.max_active_per_partition"),
    ("PARTITION_QUEUE_BOUND", "node.partition_queue_bound"),
    ("MAX_PAYLOAD_BYTES", "node.max_payload_bytes"),
    ("PARTITION_LEASE", "node.partition_lease"),
    ("RECOVERY_BATCH", "node.recovery_batch"),
    ("STAGED_COMMIT_ITEMS", "node.staged_commit_items"),
    ("CLUSTER_NAME", "cluster.name"),
    ("CLUSTER_LEASE_TTL", "cluster.lease_ttl"),
    ("CLUSTER_HEARTBEAT_INTERVAL", "cluster.heartbeat_interval"),
    ("CLUSTER_MAX_MOVES_PER_TICK", "cluster.max_moves_per_tick"),
    ("LOG", "log.filter"),
    ("OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("CLUSTER_LISTEN", "cluster.listen"),
    ("CLUSTER_ADVERTISE", "cluster.advertise"),
    ("CLUSTER_SEEDS", "cluster.seeds"),
    ("CLUSTER_COOKIE", "cluster.cookie"),
    ("CLUSTER_TLS_CERT", "cluster.tls_cert"),
    ("CLUSTER_TLS_KEY", "cluster.tls_key"),
    ("CLUSTER_TLS_CA", "cluster.tls_ca"),
    ("CLUSTER_TLS_SERVER_NAME", "cluster.tls_server_name"),
    ("API_KEYS", "auth.keys"),
    ("METRICS_OPEN", "auth.metrics_open"),
    ("INSECURE_NO_AUTH", "auth.insecure_no_auth"),
];

/// `PERDURE_*` variables of Perdure's other tools (the `perdure` CLI, tests, benchmarks, the
/// container scripts): not the node's, and no reason to warn.
const OTHER_TOOLS: &[&str] = &[
    "URL",
    "API_KEY",
    "CA_CERT",
    "NODE_IMAGE",
    "POSTGRES_IMAGE",
    "PG_PASSWORD",
    "NODE_BIN",
    "PY_VENV",
    "REGENERATE_GOLDEN",
];

/// Prefixes (after `PERDURE_`) of other tools' variables.
const OTHER_TOOL_PREFIXES: &[&str] = &["TEST_", "BENCH_", "CRASH_", "NODE1_", "NODE2_", "NODE3_"];

impl ConfigLayer {
    /// The `PERDURE_*` environment variables present in `vars` (the table in
    /// `docs/operations.md`); other variables are left alone.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut l = Self::default();
        for (k, v) in vars {
            let Some(field) = k
                .strip_prefix("PERDURE_")
                .and_then(|name| VARS.iter().find(|(n, _)| *n == name))
                .map(|(_, f)| *f)
            else {
                continue;
            };
            let bad = |what: &str| ConfigError {
                field: field.to_string(),
                source_name: format!("environment {k}"),
                reason: format!("{v:?} is not {what}"),
            };
            let num = || -> Result<Option<u64>, ConfigError> {
                v.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| bad("a non-negative integer"))
            };
            let text = || Some(v.clone());
            let boolean = || -> Result<Option<bool>, ConfigError> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" => Ok(Some(true)),
                    "false" | "0" => Ok(Some(false)),
                    _ => Err(bad("a boolean (true, false, 1 or 0)")),
                }
            };
            let duration = || -> Result<Option<String>, ConfigError> {
                match super::parse_duration(&v) {
                    Some(_) => Ok(text()),
                    None => Err(bad("a duration (like 500ms, 30s, 5m, 1h)")),
                }
            };
            match field {
                "store.backend" => l.store.backend = text(),
                "store.path" => l.store.path = Some(PathBuf::from(&v)),
                "store.url" => l.store.url = text(),
                "store.pool_size" => l.store.pool_size = num()?,
                "store.table" => l.store.table = text(),
                "store.group_commit" => l.store.group_commit = boolean()?,
                "store.cluster_file" => l.store.cluster_file = Some(PathBuf::from(&v)),
                "http.bind" => l.http.bind = text(),
                "http.public_url" => l.http.public_url = text(),
                "http.max_body_bytes" => l.http.max_body_bytes = num()?,
                "http.max_wait" => l.http.max_wait = duration()?,
                "http.log_payloads" => l.http.log_payloads = boolean()?,
                "http.tls_cert" => l.http.tls_cert = Some(PathBuf::from(&v)),
                "http.tls_key" => l.http.tls_key = Some(PathBuf::from(&v)),
                "grpc.listen" => l.grpc.listen = text(),
                "node.name" => l.node.name = text(),
                "node.partitions" => l.node.partitions = num()?,
                "node.max_concurrent_activities" => l.node.max_concurrent_activities = num()?,
                "node.activity_queue_bound" => l.node.activity_queue_bound = num()?,
                "node.activity_lease" => l.node.activity_lease = duration()?,
                "node.idle_passivation" => l.node.idle_passivation = duration()?,
                "node.max_active_per_partition" => l.node.max_active_per_partition = num()?,
                "node.partition_queue_bound" => l.node.partition_queue_bound = num()?,
                "node.max_payload_bytes" => l.node.max_payload_bytes = num()?,
                "node.partition_lease" => l.node.partition_lease = duration()?,
                "node.recovery_batch" => l.node.recovery_batch = num()?,
                "node.staged_commit_items" => l.node.staged_commit_items = num()?,
                "cluster.name" => l.cluster.name = text(),
                "cluster.lease_ttl" => l.cluster.lease_ttl = duration()?,
                "cluster.heartbeat_interval" => l.cluster.heartbeat_interval = duration()?,
                "cluster.max_moves_per_tick" => l.cluster.max_moves_per_tick = num()?,
                "log.filter" => l.log.filter = text(),
                "telemetry.otlp_endpoint" => l.telemetry.otlp_endpoint = text(),
                "cluster.listen" => l.cluster.listen = text(),
                "cluster.advertise" => l.cluster.advertise = text(),
                "cluster.seeds" => l.cluster.seeds = Some(super::Seeds::Text(v.clone())),
                "cluster.cookie" => l.cluster.cookie = text(),
                "cluster.tls_cert" => l.cluster.tls_cert = Some(PathBuf::from(&v)),
                "cluster.tls_key" => l.cluster.tls_key = Some(PathBuf::from(&v)),
                "cluster.tls_ca" => l.cluster.tls_ca = Some(PathBuf::from(&v)),
                "cluster.tls_server_name" => l.cluster.tls_server_name = text(),
                "auth.keys" => l.auth.keys = Some(super::auth::keys_from_env(&k, &v)?),
                "auth.metrics_open" => l.auth.metrics_open = boolean()?,
                "auth.insecure_no_auth" => l.auth.insecure_no_auth = boolean()?,
                _ => {}
            }
        }
        Ok(l)
    }
}

/// Warnings for the `PERDURE_*` variables among `names` that the node does not read (and that
/// are not the variables of Perdure's other tools), each naming the variable and, when one is
/// close, the variable probably meant.
///
/// ```
/// let w = perdure_node::config::unknown_env_vars(["PERDURE_PARTITONS", "PERDURE_URL", "HOME"]);
/// assert_eq!(w.len(), 1);
/// assert!(w[0].contains("PERDURE_PARTITONS") && w[0].contains("PERDURE_PARTITIONS"));
/// ```
pub fn unknown_env_vars<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = Vec::new();
    for full in names {
        let Some(name) = full.strip_prefix("PERDURE_") else {
            continue;
        };
        if VARS.iter().any(|(n, _)| *n == name)
            || OTHER_TOOLS.contains(&name)
            || OTHER_TOOL_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            continue;
        }
        let closest = VARS
            .iter()
            .map(|(n, _)| (edit_distance(n, name), *n))
            .min()
            .filter(|(d, _)| *d <= 3);
        out.push(match closest {
            Some((_, n)) => format!(
                "ignoring unknown environment variable {full} (did you mean PERDURE_{n}?)"
            ),
            None => format!(
                "ignoring unknown environment variable {full} (docs/operations.md lists the node's PERDURE_* variables)"
            ),
        });
    }
    out
}

/// Levenshtein distance, over bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::super::NodeConfig;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<ConfigLayer, ConfigError> {
        ConfigLayer::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn every_field_has_a_variable() {
        let l = env(&[
            ("PERDURE_MAX_WAIT", "5s"),
            ("PERDURE_LOG_PAYLOADS", "TRUE"),
            ("PERDURE_ACTIVITY_QUEUE_BOUND", "7"),
            ("PERDURE_ACTIVITY_LEASE", "2m"),
            ("PERDURE_IDLE_PASSIVATION", "10s"),
            ("PERDURE_MAX_ACTIVE_PER_PARTITION", "9"),
            ("PERDURE_PARTITION_QUEUE_BOUND", "11"),
            ("PERDURE_PARTITION_LEASE", "20s"),
            ("PERDURE_RECOVERY_BATCH", "13"),
        ])
        .unwrap();
        let c = NodeConfig::resolve(&[("environment", l)]).unwrap();
        assert_eq!(c.http.max_wait.as_secs(), 5);
        assert!(c.http.log_payloads);
        assert_eq!(c.node.activity_queue_bound.get(), 7);
        assert_eq!(c.node.activity_lease.as_secs(), 120);
        assert_eq!(c.node.idle_passivation.as_secs(), 10);
        assert_eq!(c.node.max_active_per_partition.get(), 9);
        assert_eq!(c.node.partition_queue_bound.get(), 11);
        assert_eq!(c.node.cluster.lease_ttl.as_secs(), 20);
        assert_eq!(c.node.cluster.heartbeat_interval.as_secs(), 4);
        let l = env(&[
            ("PERDURE_NODE_NAME", "old-spelling"),
            ("PERDURE_CLUSTER_NAME", "n-7"),
            ("PERDURE_CLUSTER_LEASE_TTL", "3s"),
            ("PERDURE_CLUSTER_HEARTBEAT_INTERVAL", "500ms"),
            ("PERDURE_CLUSTER_MAX_MOVES_PER_TICK", "8"),
        ])
        .unwrap();
        let c2 = NodeConfig::resolve(&[("environment", l)]).unwrap();
        assert_eq!(c2.node.cluster.name, "n-7");
        assert_eq!(c2.node.cluster.lease_ttl.as_millis(), 3000);
        assert_eq!(c2.node.cluster.heartbeat_interval.as_millis(), 500);
        assert_eq!(c2.node.cluster.max_moves_per_tick.get(), 8);
        let l = env(&[("PERDURE_CLUSTER_HEARTBEAT_INTERVAL", "2s")]).unwrap();
        let e = NodeConfig::resolve(&[("environment", l)]).unwrap_err();
        assert_eq!(e.field, "cluster.heartbeat_interval");
        assert_eq!(c.node.recovery_batch.get(), 13);
        // Every field named in the table is one the file has too (so the two agree).
        for (_, field) in VARS {
            let (table, key) = field.split_once('.').unwrap();
            let toml_text = format!("[{table}]\n{key} = 1\n");
            let err = toml::from_str::<ConfigLayer>(&toml_text).err();
            assert!(
                err.as_ref()
                    .is_none_or(|e| !e.to_string().contains("unknown field")),
                "{field}: {err:?}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_field_and_variable() {
        let e = env(&[("PERDURE_LOG_PAYLOADS", "yes please")]).unwrap_err();
        assert_eq!(e.field, "http.log_payloads");
        assert!(e.source_name.contains("PERDURE_LOG_PAYLOADS"));
        let e = env(&[("PERDURE_PARTITION_LEASE", "soon")]).unwrap_err();
        assert_eq!(e.field, "node.partition_lease");
        assert!(e.source_name.contains("PERDURE_PARTITION_LEASE"));
    }

    #[test]
    fn unknown_variables_are_named_with_a_suggestion() {
        let w = unknown_env_vars([
            "PERDURE_PARTITONS",
            "PERDURE_STORE_URL",
            "PERDURE_TEST_POSTGRES_URL",
            "PERDURE_URL",
            "PERDURE_COLOUR_SCHEME",
            "PATH",
        ]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("PERDURE_PARTITONS") && w[0].contains("did you mean PERDURE_PARTITIONS?")
        );
        assert!(w[1].contains("PERDURE_COLOUR_SCHEME") && !w[1].contains("did you mean"));
        assert_eq!(edit_distance("PARTITIONS", "PARTITONS"), 1);
        assert_eq!(edit_distance("", "ABC"), 3);
    }
}

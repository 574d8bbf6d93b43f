//! Configuration of the `perdure-node` binary: a TOML file, `PERDURE_*` environment variables
//! and command-line flags, in that order of precedence (flags win), merged into the runtime's
//! [`NodeOptions`], the store choice and the HTTP options. Every error names the bad field and
//! where its value came from.
//!
//! ```
//! use perdure_node::config::{ConfigLayer, NodeConfig};
//! let file: ConfigLayer = toml::from_str(r#"
//!     [store]
//!     backend = "memory"
//!     [http]
//!     bind = "127.0.0.1:9090"
//!     [node]
//!     partitions = 16
//!     activity_lease = "2m"
//! "#).unwrap();
//! let cfg = NodeConfig::resolve(&[("file", file)]).unwrap();
//! assert_eq!(cfg.node.partitions.get(), 16);
//! assert_eq!(cfg.http_bind.port(), 9090);
//! assert_eq!(cfg.node.activity_lease.as_secs(), 120);
//!
//! let bad: ConfigLayer = toml::from_str("[node]\npartitions = 0").unwrap();
//! let err = NodeConfig::resolve(&[("file", bad)]).unwrap_err();
//! assert!(err.to_string().contains("node.partitions"));
//! ```

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::http::HttpOptions;
use crate::options::NodeOptions;
use crate::store::StoreOptions;

mod auth;
mod cluster;
mod env;

pub use auth::{AccessConfig, AuthLayer, KeyLayer};
pub use cluster::Seeds;

pub use env::unknown_env_vars;

/// A bad configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration field {field} (from {source_name}): {reason}")]
pub struct ConfigError {
    /// The field, as written in the TOML file (`node.partitions`).
    pub field: String,
    /// Where the value came from (`file`, `environment`, `flags`, `default`).
    pub source_name: String,
    /// What is wrong.
    pub reason: String,
}

/// The `[store]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreLayer {
    /// `embedded` (default), `postgres`, `foundationdb` or `memory`.
    pub backend: Option<String>,
    /// Data directory of the embedded store (default `./.perdure`).
    pub path: Option<PathBuf>,
    /// PostgreSQL connection string.
    pub url: Option<String>,
    /// PostgreSQL connection pool size.
    pub pool_size: Option<u64>,
    /// PostgreSQL table (default `kv`).
    pub table: Option<String>,
    /// PostgreSQL group commit (default `true`).
    pub group_commit: Option<bool>,
    /// FoundationDB cluster file.
    pub cluster_file: Option<PathBuf>,
}

/// The `[http]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLayer {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub bind: Option<String>,
    /// Origin used in management URIs (default: from the `Host` header).
    pub public_url: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: Option<u64>,
    /// Longest server-side wait of `waitForCompletion`.
    pub max_wait: Option<String>,
    /// Log each request's body size as it arrives, at trace level (off by default; bodies
    /// are never logged).
    pub log_payloads: Option<bool>,
    /// PEM certificate chain: with `tls_key`, the HTTP and gRPC listeners serve TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// The `[grpc]` table: the Durable Task gRPC protocol (`docs/grpc.md`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcLayer {
    /// Address to serve the protocol on (`127.0.0.1:4001`); unset: not served (`dev`
    /// serves it on 127.0.0.1:4001); `off`: not served.
    pub listen: Option<String>,
}

/// The `[node]` table: the runtime's options.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLayer {
    /// Node name: the older spelling of `cluster.name`.
    pub name: Option<String>,
    /// Partitions at first initialisation.
    pub partitions: Option<u64>,
    /// Activities run at once on this node.
    pub max_concurrent_activities: Option<u64>,
    /// Activity tasks queued before new ones are refused.
    pub activity_queue_bound: Option<u64>,
    /// Activity lease (`"5m"`).
    pub activity_lease: Option<String>,
    /// Idle time before an instance leaves memory.
    pub idle_passivation: Option<String>,
    /// Instances kept in memory per partition.
    pub max_active_per_partition: Option<u64>,
    /// Partition mailbox bound.
    pub partition_queue_bound: Option<u64>,
    /// Largest payload, in bytes.
    pub max_payload_bytes: Option<u64>,
    /// Partition lease: the older spelling of `cluster.lease_ttl`.
    pub partition_lease: Option<String>,
    /// Inbox messages per recovery batch.
    pub recovery_batch: Option<u64>,
    /// History events plus effects above which an episode commits in stages.
    pub staged_commit_items: Option<u64>,
}

/// The `[cluster]` table: membership and partition ownership.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterLayer {
    /// This node's name, unique among live nodes (default: the host name).
    pub name: Option<String>,
    /// Lifetime of a partition lease and of a heartbeat (`"5s"`).
    pub lease_ttl: Option<String>,
    /// How often the node writes its heartbeat and reconsiders its partitions (`"1s"`).
    pub heartbeat_interval: Option<String>,
    /// Partitions handed off per heartbeat at most.
    pub max_moves_per_tick: Option<u64>,
    /// Where the cluster transport listens (`host:port`); unset: no links to other nodes.
    pub listen: Option<String>,
    /// The `host:port` peers dial (default: `listen`).
    pub advertise: Option<String>,
    /// Addresses dialled at start (a hint; peers are also found from the store).
    pub seeds: Option<Seeds>,
    /// Shared secret of the cluster (required when `listen` is not loopback).
    pub cookie: Option<String>,
    /// PEM certificate chain for TLS between nodes.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS between nodes.
    pub tls_key: Option<PathBuf>,
    /// PEM CA that signs every node's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Name in the nodes' certificates (default `perdure`).
    pub tls_server_name: Option<String>,
}

/// The `[log]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLayer {
    /// A `tracing` filter (`info`, `perdure_node=debug`).
    pub filter: Option<String>,
}

/// The `[telemetry]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryLayer {
    /// OTLP/HTTP endpoint spans are exported to (`http://collector:4318`); unset: none.
    pub otlp_endpoint: Option<String>,
}

/// One layer of configuration (a file, the environment, or the flags); unset fields fall
/// through to the layer below.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// `[store]`.
    #[serde(default)]
    pub store: StoreLayer,
    /// `[http]`.
    #[serde(default)]
    pub http: HttpLayer,
    /// `[grpc]`.
    #[serde(default)]
    pub grpc: GrpcLayer,
    /// `[node]`.
    #[serde(default)]
    pub node: RuntimeLayer,
    /// `[cluster]`.
    #[serde(default)]
    pub cluster: ClusterLayer,
    /// `[log]`.
    #[serde(default)]
    pub log: LogLayer,
    /// `[auth]`.
    #[serde(default)]
    pub auth: AuthLayer,
    /// `[telemetry]`.
    #[serde(default)]
    pub telemetry: TelemetryLayer,
}

impl ConfigLayer {
    /// Reads a TOML file (errors name the file and the parser's message, which names the
    /// line and field).
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            field: "--config".into(),
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError {
            field: "(file)".into(),
            source_name: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// The resolved configuration of a node process.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The runtime's options.
    pub node: NodeOptions,
    /// The store.
    pub store: StoreOptions,
    /// Where the HTTP API listens.
    pub http_bind: SocketAddr,
    /// The HTTP API's options.
    pub http: HttpOptions,
    /// Where the Durable Task gRPC protocol is served (None: not served).
    pub grpc_listen: Option<SocketAddr>,
    /// Whether `grpc_listen` is only a default (of `dev`): if its port is taken, the node
    /// warns and runs without the gRPC listener instead of failing.
    pub grpc_listen_optional: bool,
    /// The log filter.
    pub log_filter: String,
    /// The cluster transport (None: no `cluster.listen`, no links to other nodes).
    pub transport: Option<crate::cluster::transport::TransportOptions>,
    /// API keys and their use (`[auth]`).
    pub access: AccessConfig,
    /// TLS of the HTTP and gRPC listeners (`http.tls_cert`, `http.tls_key`).
    pub tls: Option<crate::tls::TlsFiles>,
    /// Where spans are exported (`telemetry.otlp_endpoint`; None: not exported).
    pub otlp_endpoint: Option<String>,
}

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`, or a number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult_ms): (&str, u64) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.trim().parse().ok()?;
    Some(Duration::from_millis(n.checked_mul(mult_ms)?))
}

/// Picks the topmost set value of a field across layers (`layers` lowest first), with the name
/// of the layer it came from.
fn pick<'a, T: 'a>(
    layers: &'a [(&str, ConfigLayer)],
    get: impl Fn(&'a ConfigLayer) -> Option<&'a T>,
) -> Option<(&'a T, String)> {
    layers
        .iter()
        .rev()
        .find_map(|(name, l)| get(l).map(|v| (v, name.to_string())))
}

impl NodeConfig {
    /// Merges layers (lowest precedence first: file, environment, flags) over the defaults
    /// and validates the result.
    pub fn resolve(layers: &[(&str, ConfigLayer)]) -> Result<Self, ConfigError> {
        let err = |field: &str, src: &str, reason: String| ConfigError {
            field: field.to_string(),
            source_name: src.to_string(),
            reason,
        };
        let mut node = NodeOptions::default();
        macro_rules! nz {
            ($field:ident, $name:literal) => {
                if let Some((v, src)) = pick(layers, |l| l.node.$field.as_ref()) {
                    node.$field = usize::try_from(*v)
                        .ok()
                        .and_then(NonZeroUsize::new)
                        .ok_or_else(|| {
                            err($name, &src, format!("{v} must be a positive integer"))
                        })?;
                }
            };
        }
        macro_rules! dur {
            ($field:ident, $name:literal) => {
                if let Some((v, src)) = pick(layers, |l| l.node.$field.as_ref()) {
                    node.$field = parse_duration(v).ok_or_else(|| {
                        err(
                            $name,
                            &src,
                            format!("{v:?} is not a duration (like 500ms, 30s, 5m, 1h)"),
                        )
                    })?;
                }
            };
        }
        if let Some((v, src)) = pick(layers, |l| l.node.partitions.as_ref()) {
            node.partitions = u32::try_from(*v)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| err("node.partitions", &src, format!("{v} must be 1 to 65536")))?;
        }
        nz!(max_concurrent_activities, "node.max_concurrent_activities");
        nz!(activity_queue_bound, "node.activity_queue_bound");
        nz!(max_active_per_partition, "node.max_active_per_partition");
        nz!(partition_queue_bound, "node.partition_queue_bound");
        nz!(max_payload_bytes, "node.max_payload_bytes");
        nz!(recovery_batch, "node.recovery_batch");
        nz!(staged_commit_items, "node.staged_commit_items");
        dur!(activity_lease, "node.activity_lease");
        dur!(idle_passivation, "node.idle_passivation");
        let cdur = |v: &String, name: &str, src: &str| {
            parse_duration(v).ok_or_else(|| {
                err(
                    name,
                    src,
                    format!("{v:?} is not a duration (like 500ms, 30s, 5m, 1h)"),
                )
            })
        };
        if let Some((v, src)) = pick(layers, |l| l.node.partition_lease.as_ref()) {
            node.cluster.lease_ttl = cdur(v, "node.partition_lease", &src)?;
        }
        if let Some((v, src)) = pick(layers, |l| l.cluster.lease_ttl.as_ref()) {
            node.cluster.lease_ttl = cdur(v, "cluster.lease_ttl", &src)?;
        }
        if let Some((v, src)) = pick(layers, |l| l.cluster.heartbeat_interval.as_ref()) {
            node.cluster.heartbeat_interval = cdur(v, "cluster.heartbeat_interval", &src)?;
        } else if pick(layers, |l| {
            l.cluster
                .lease_ttl
                .as_ref()
                .or(l.node.partition_lease.as_ref())
        })
        .is_some()
        {
            // Follows the lease: five heartbeats per lease lifetime.
            node.cluster.heartbeat_interval = node.cluster.lease_ttl / 5;
        }
        if let Some((v, src)) = pick(layers, |l| l.cluster.max_moves_per_tick.as_ref()) {
            node.cluster.max_moves_per_tick = usize::try_from(*v)
                .ok()
                .and_then(NonZeroUsize::new)
                .ok_or_else(|| {
                    err(
                        "cluster.max_moves_per_tick",
                        &src,
                        format!("{v} must be a positive integer"),
                    )
                })?;
        }
        if let Some((v, _)) = pick(layers, |l| l.cluster.name.as_ref().or(l.node.name.as_ref())) {
            node.cluster.name = v.clone();
        }
        node.validate().map_err(|e| ConfigError {
            field: if e.field.starts_with("cluster.") {
                e.field.to_string()
            } else {
                format!("node.{}", e.field)
            },
            source_name: "merged configuration".into(),
            reason: e.reason,
        })?;

        let backend = pick(layers, |l| l.store.backend.as_ref());
        let path = || {
            pick(layers, |l| l.store.path.as_ref())
                .map(|(p, _)| p.clone())
                .unwrap_or_else(|| PathBuf::from("./.perdure"))
        };
        let store = match backend
            .as_ref()
            .map(|(b, s)| (b.to_ascii_lowercase(), s.clone()))
        {
            None => StoreOptions::Embedded { path: path() },
            Some((b, _)) if b == "embedded" || b == "fjall" => {
                StoreOptions::Embedded { path: path() }
            }
            Some((b, src)) if b == "postgres" || b == "postgresql" => {
                let url = match pick(layers, |l| l.store.url.as_ref()) {
                    Some((u, _)) => u.clone(),
                    None => {
                        return Err(err(
                            "store.url",
                            &src,
                            "the postgres backend needs a connection string \
                             (store.url, PERDURE_STORE_URL or --store-url)"
                                .into(),
                        ));
                    }
                };
                let pool_size = match pick(layers, |l| l.store.pool_size.as_ref()) {
                    None => NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
                    Some((v, src)) => usize::try_from(*v)
                        .ok()
                        .and_then(NonZeroUsize::new)
                        .ok_or_else(|| {
                            err(
                                "store.pool_size",
                                &src,
                                format!("{v} must be a positive integer"),
                            )
                        })?,
                };
                let group_commit =
                    pick(layers, |l| l.store.group_commit.as_ref()).is_none_or(|(v, _)| *v);
                StoreOptions::Postgres {
                    url,
                    pool_size,
                    table: pick(layers, |l| l.store.table.as_ref()).map(|(t, _)| t.clone()),
                    group_commit,
                }
            }
            Some((b, _)) if b == "foundationdb" || b == "fdb" => StoreOptions::Foundationdb {
                cluster_file: pick(layers, |l| l.store.cluster_file.as_ref())
                    .map(|(p, _)| p.clone()),
            },
            Some((b, _)) if b == "memory" => StoreOptions::Memory,
            Some((b, src)) => {
                return Err(err(
                    "store.backend",
                    &src,
                    format!("{b:?} is not a backend (embedded, postgres, foundationdb or memory)"),
                ));
            }
        };

        let http_bind = match pick(layers, |l| l.http.bind.as_ref()) {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some((v, src)) => v.parse().map_err(|e| {
                err(
                    "http.bind",
                    &src,
                    format!("{v:?} is not an address like 127.0.0.1:8080 ({e})"),
                )
            })?,
        };
        let mut http = HttpOptions {
            max_payload_bytes: node
                .max_payload_bytes
                .get()
                .saturating_mul(2)
                .max(64 * 1024),
            ..HttpOptions::default()
        };
        if let Some((v, src)) = pick(layers, |l| l.http.max_body_bytes.as_ref()) {
            http.max_payload_bytes = usize::try_from(*v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| err("http.max_body_bytes", &src, format!("{v} must be positive")))?;
        }
        if let Some((v, src)) = pick(layers, |l| l.http.max_wait.as_ref()) {
            http.max_wait = parse_duration(v)
                .ok_or_else(|| err("http.max_wait", &src, format!("{v:?} is not a duration")))?;
        }
        if let Some((v, src)) = pick(layers, |l| l.http.public_url.as_ref()) {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(err(
                    "http.public_url",
                    &src,
                    format!("{v:?} must start with http:// or https://"),
                ));
            }
            http.public_url = Some(v.clone());
        }
        if let Some((v, _)) = pick(layers, |l| l.http.log_payloads.as_ref()) {
            http.log_payloads = *v;
        }
        let tls = match (
            pick(layers, |l| l.http.tls_cert.as_ref()),
            pick(layers, |l| l.http.tls_key.as_ref()),
        ) {
            (None, None) => None,
            (Some((cert, _)), Some((key, _))) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some((_, src)), None) => {
                return Err(err(
                    "http.tls_key",
                    &src,
                    "http.tls_cert is set: TLS needs http.tls_key too".to_string(),
                ));
            }
            (None, Some((_, src))) => {
                return Err(err(
                    "http.tls_cert",
                    &src,
                    "http.tls_key is set: TLS needs http.tls_cert too".to_string(),
                ));
            }
        };
        let otlp_endpoint = match pick(layers, |l| l.telemetry.otlp_endpoint.as_ref()) {
            None => None,
            Some((v, _)) if v.trim().is_empty() => None,
            Some((v, src)) => {
                let v = v.trim();
                if !v.starts_with("http://") {
                    return Err(err(
                        "telemetry.otlp_endpoint",
                        &src,
                        format!(
                            "{v:?} must be an http:// URL (OTLP/HTTP, port 4318; https is not \
                             supported: use a collector on the node's host or network)"
                        ),
                    ));
                }
                Some(v.to_string())
            }
        };
        let grpc_listen = match pick(layers, |l| l.grpc.listen.as_ref()) {
            None => None,
            Some((v, _)) if v.trim().eq_ignore_ascii_case("off") => None,
            Some((v, src)) => Some(v.trim().parse().map_err(|e| {
                err(
                    "grpc.listen",
                    &src,
                    format!("{v:?} is not an address like 127.0.0.1:4001 or `off` ({e})"),
                )
            })?),
        };
        let log_filter = pick(layers, |l| l.log.filter.as_ref())
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| "info".to_string());
        node.traces = otlp_endpoint.is_some();
        let transport = cluster::resolve(layers, &node.cluster.name)?;
        let access = auth::resolve(layers, http_bind, grpc_listen)?;
        Ok(Self {
            node,
            store,
            http_bind,
            http,
            grpc_listen,
            grpc_listen_optional: false,
            log_filter,
            transport,
            access,
            tls,
            otlp_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigLayer {
        ConfigLayer::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file: ConfigLayer =
            toml::from_str("[node]\npartitions = 8\n[http]\nbind = \"127.0.0.1:1\"").unwrap();
        let e = env(&[("PERDURE_PARTITIONS", "16"), ("HOME", "/x")]);
        let mut flags = ConfigLayer::default();
        flags.http.bind = Some("127.0.0.1:3".into());
        let c =
            NodeConfig::resolve(&[("file", file), ("environment", e), ("flags", flags)]).unwrap();
        assert_eq!(c.node.partitions.get(), 16);
        assert_eq!(c.http_bind.port(), 3);
        assert_eq!(
            c.store,
            StoreOptions::Embedded {
                path: PathBuf::from("./.perdure")
            }
        );
    }

    #[test]
    fn grpc_listen_from_file_env_and_flags() {
        assert_eq!(NodeConfig::resolve(&[]).unwrap().grpc_listen, None);
        let file: ConfigLayer = toml::from_str("[grpc]\nlisten = \"127.0.0.1:4001\"").unwrap();
        let c = NodeConfig::resolve(&[("file", file.clone())]).unwrap();
        assert_eq!(c.grpc_listen.map(|a| a.port()), Some(4001));
        let e = env(&[("PERDURE_GRPC_LISTEN", "127.0.0.1:4002")]);
        let c = NodeConfig::resolve(&[("file", file.clone()), ("environment", e.clone())]).unwrap();
        assert_eq!(c.grpc_listen.map(|a| a.port()), Some(4002));
        let mut flags = ConfigLayer::default();
        flags.grpc.listen = Some("off".into());
        let c =
            NodeConfig::resolve(&[("file", file), ("environment", e), ("flags", flags)]).unwrap();
        assert_eq!(c.grpc_listen, None);
    }

    #[test]
    fn errors_name_the_field_and_source() {
        let e = NodeConfig::resolve(&[("environment", env(&[("PERDURE_STORE", "mongo")]))])
            .unwrap_err();
        assert_eq!(e.field, "store.backend");
        assert_eq!(e.source_name, "environment");
        let e = NodeConfig::resolve(&[("environment", env(&[("PERDURE_STORE", "postgres")]))])
            .unwrap_err();
        assert_eq!(e.field, "store.url");
        let bad = ConfigLayer::from_env([("PERDURE_PARTITIONS".to_string(), "x".to_string())])
            .unwrap_err();
        assert_eq!(bad.field, "node.partitions");
        let unknown = toml::from_str::<ConfigLayer>("[node]\npartitons = 3").unwrap_err();
        assert!(unknown.to_string().contains("partitons"), "{unknown}");
        let f: ConfigLayer = toml::from_str("[node]\nactivity_lease = \"soon\"").unwrap();
        let e = NodeConfig::resolve(&[("file", f)]).unwrap_err();
        assert_eq!(e.field, "node.activity_lease");
        let f: ConfigLayer = toml::from_str("[grpc]\nlisten = \"anywhere\"").unwrap();
        assert_eq!(
            NodeConfig::resolve(&[("file", f)]).unwrap_err().field,
            "grpc.listen"
        );
        let f: ConfigLayer = toml::from_str("[http]\nbind = \"localhost\"").unwrap();
        assert_eq!(
            NodeConfig::resolve(&[("file", f)]).unwrap_err().field,
            "http.bind"
        );
    }
}

//! Which store backend a node uses, as configuration, and the factory that opens it.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// The store backend and its settings. In TOML:
///
/// ```toml
/// [store]
/// backend = "embedded"
/// path = "./.perdure"
/// ```
///
/// ```toml
/// [store]
/// backend = "postgres"
/// url = "postgres://perdure:secret@127.0.0.1:5432/perdure"
/// pool_size = 16
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreOptions {
    /// In memory, nothing durable (tests).
    Memory,
    /// fjall on local disk, owned by this process (the default).
    Embedded {
        /// The data directory.
        #[serde(default = "default_path")]
        path: PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// Connection string (`postgres://user:password@host:port/database`).
        url: String,
        /// Most connections in the pool.
        #[serde(default = "default_pool_size")]
        pool_size: NonZeroUsize,
        /// The table (default `kv`): several clusters can share one database.
        #[serde(default)]
        table: Option<String>,
        /// Group commit (default `true`): many transactions of this node in one PostgreSQL
        /// transaction; `false` commits each in its own (see docs/storage-backends.md).
        #[serde(default = "default_group_commit")]
        group_commit: bool,
    },
    /// A FoundationDB cluster (needs the `foundationdb` cargo feature).
    Foundationdb {
        /// The cluster file; `None` uses FoundationDB's default lookup.
        #[serde(default)]
        cluster_file: Option<PathBuf>,
    },
}

impl std::fmt::Debug for StoreOptions {
    /// Prints the options without the PostgreSQL password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Embedded { path } => f.debug_struct("Embedded").field("path", path).finish(),
            Self::Postgres {
                url,
                pool_size,
                table,
                group_commit,
            } => f
                .debug_struct("Postgres")
                .field("url", &redact_password(url))
                .field("pool_size", pool_size)
                .field("table", table)
                .field("group_commit", group_commit)
                .finish(),
            Self::Foundationdb { cluster_file } => f
                .debug_struct("Foundationdb")
                .field("cluster_file", cluster_file)
                .finish(),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`; key-value strings
/// (`password=secret`) get the same treatment.
fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.split_whitespace()
        .map(|part| {
            if part.starts_with("password=") {
                "password=***"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn default_path() -> PathBuf {
    PathBuf::from("./.perdure")
}

fn default_group_commit() -> bool {
    true
}

fn default_pool_size() -> NonZeroUsize {
    NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN)
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::Embedded {
            path: default_path(),
        }
    }
}

/// This build was compiled without the backend the configuration asks for.
#[derive(Debug, thiserror::Error)]
#[error("this build of perdure-node has no {0} backend (rebuild with `--features {0}`)")]
pub struct BackendNotBuilt(pub &'static str);

/// Opens the configured store.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use perdure_node::store::{StoreOptions, open_store};
/// let dir = tempfile::tempdir().unwrap();
/// let store = open_store(&StoreOptions::Embedded { path: dir.path().into() }).await.unwrap();
/// assert_eq!(store.backend_name(), "embedded");
/// # });
/// ```
pub async fn open_store(options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match options {
        StoreOptions::Memory => Ok(Arc::new(super::memory::MemoryStore::new())),
        StoreOptions::Embedded { path } => {
            let path = path.clone();
            // Opening replays the journal: blocking work, kept off the async workers.
            let store =
                tokio::task::spawn_blocking(move || super::embedded::EmbeddedStore::open(path))
                    .await
                    .map_err(|e| StoreError::Fatal(Box::new(e)))??;
            Ok(Arc::new(store))
        }
        StoreOptions::Postgres {
            url,
            pool_size,
            table,
            group_commit,
        } => {
            let mode = if *group_commit {
                super::postgres::CommitMode::Group
            } else {
                super::postgres::CommitMode::Plain
            };
            Ok(Arc::new(
                super::postgres::PostgresStore::connect_with(
                    url,
                    pool_size.get(),
                    table.as_deref().unwrap_or(super::postgres::DEFAULT_TABLE),
                    mode,
                )
                .await?,
            ))
        }
        #[cfg(feature = "foundationdb")]
        StoreOptions::Foundationdb { cluster_file } => {
            Ok(Arc::new(super::fdb::FdbStore::open(cluster_file.clone())?))
        }
        #[cfg(not(feature = "foundationdb"))]
        StoreOptions::Foundationdb { .. } => {
            Err(StoreError::Fatal(Box::new(BackendNotBuilt("foundationdb"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let url = StoreOptions::Postgres {
            url: "postgres://perdure:s3cret@db:5432/perdure".into(),
            pool_size: default_pool_size(),
            table: None,
            group_commit: true,
        };
        let kv = StoreOptions::Postgres {
            url: "host=db user=perdure password=s3cret".into(),
            pool_size: default_pool_size(),
            table: None,
            group_commit: true,
        };
        for options in [url, kv] {
            let text = format!("{options:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("perdure"), "{text}");
        }
    }

    #[test]
    fn default_is_embedded_in_dot_perdure() {
        assert_eq!(
            StoreOptions::default(),
            StoreOptions::Embedded {
                path: PathBuf::from("./.perdure")
            }
        );
    }

    #[test]
    fn parses_from_toml() {
        let pg: StoreOptions =
            toml::from_str("backend = \"postgres\"\nurl = \"postgres://u:p@127.0.0.1/db\"\n")
                .expect("postgres options");
        assert_eq!(
            pg,
            StoreOptions::Postgres {
                url: "postgres://u:p@127.0.0.1/db".into(),
                pool_size: default_pool_size(),
                table: None,
                group_commit: true,
            }
        );
        let emb: StoreOptions = toml::from_str("backend = \"embedded\"").expect("embedded");
        assert_eq!(emb, StoreOptions::default());
        let fdb: StoreOptions =
            toml::from_str("backend = \"foundationdb\"\ncluster_file = \"/etc/fdb.cluster\"")
                .expect("fdb");
        assert_eq!(
            fdb,
            StoreOptions::Foundationdb {
                cluster_file: Some("/etc/fdb.cluster".into())
            }
        );
        assert!(
            toml::from_str::<StoreOptions>("backend = \"postgres\"\nurl = \"x\"\npool_size = 0")
                .is_err()
        );
        assert!(toml::from_str::<StoreOptions>("backend = \"cassandra\"").is_err());
    }

    #[tokio::test]
    async fn unbuilt_backend_is_a_clear_error() {
        if cfg!(feature = "foundationdb") {
            return;
        }
        let err = open_store(&StoreOptions::Foundationdb { cluster_file: None })
            .await
            .err()
            .map(|e| {
                format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            });
        assert!(err.is_some_and(|e| e.contains("--features foundationdb")));
    }
}

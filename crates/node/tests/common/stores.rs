//! The stores a runtime test runs on: memory, embedded, and PostgreSQL when
//! `PERDURE_TEST_POSTGRES_URL` is set (a loud skip otherwise, a failure under `CI=true`).
//!
//! [`every_store!`](crate::every_store) turns one test body into a test per backend, named
//! `<test>::memory`, `<test>::embedded` and `<test>::postgres`. The memory store runs one
//! transaction at a time; only the real stores make conflicts, retries and races happen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use perdure_node::store::Store;
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::memory::MemoryStore;
use perdure_node::store::postgres::PostgresStore;

/// One test's store, cleaned up by [`TestStore::finish`] (the embedded store's directory is
/// removed on drop in any case).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where the embedded store lives, or the PostgreSQL test table.
    place: Place,
}

enum Place {
    Memory,
    Dir(tempfile::TempDir),
    Table { url: String, table: String },
}

impl TestStore {
    /// A fresh memory store.
    pub fn memory() -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            place: Place::Memory,
        }
    }

    /// A fresh embedded store in a temporary directory.
    pub fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("embedded store opens");
        Self {
            store: Arc::new(store),
            place: Place::Dir(dir),
        }
    }

    /// The embedded store's directory (to reopen it after a restart).
    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self.place {
            Place::Dir(d) => Some(d.path()),
            _ => None,
        }
    }

    /// A fresh PostgreSQL table for `test`, or `None` (after a loud skip) when
    /// `PERDURE_TEST_POSTGRES_URL` is not set; under `CI=true` a missing URL fails the test.
    pub async fn postgres(test: &str) -> Option<Self> {
        let url = postgres_url(test)?;
        static N: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "rt_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            test.replace("::", "_")
        );
        let table: String = table
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(63)
            .collect();
        let store = PostgresStore::connect_without_timers(&url, 16, &table)
            .await
            .expect("connect to PostgreSQL");
        Some(Self {
            store: Arc::new(store),
            place: Place::Table { url, table },
        })
    }

    /// Another handle on the same data (a second node on the same store, or a restart):
    /// the same store for memory, the same table for PostgreSQL. The embedded store cannot
    /// be opened twice: its handle is shared.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.place {
            Place::Table { url, table } => Arc::new(
                PostgresStore::connect_without_timers(url, 16, table)
                    .await
                    .expect("reconnect to PostgreSQL"),
            ),
            _ => self.store.clone(),
        }
    }

    /// Drops the PostgreSQL table (the other stores clean up on drop).
    pub async fn finish(self) {
        if let Place::Table { url, table } = &self.place {
            let admin = PostgresStore::connect_without_timers(url, 1, table)
                .await
                .expect("connect");
            admin.drop_table(table).await.expect("drop test table");
        }
    }
}

/// `PERDURE_TEST_POSTGRES_URL`, or `None` after a loud skip (a panic under `CI=true`).
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: PERDURE_TEST_POSTGRES_URL is not set under CI=true");
            }
            eprintln!(
                "\n*** SKIPPED {test} on PostgreSQL: PERDURE_TEST_POSTGRES_URL is not set; \
                 run `eval \"$(bash .ci/postgres.sh | tail -n 1)\"` to test PostgreSQL ***\n"
            );
            None
        }
    }
}

/// One test body, run as three tests: on memory, on embedded and on PostgreSQL. A backend a
/// test cannot run on is named with the reason, `except [postgres = "why"]`, and its test is
/// marked `#[ignore]` with that reason (the runner reports it skipped).
///
/// ```ignore
/// every_store! {
///     #[tokio::test]
///     async fn fan_out(ts) {
///         let node = common::start_on(ts.store.clone()).await;
///         ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! every_store {
    ($(#[$attr:meta])* async fn $name:ident($ts:ident) $body:block) => {
        $crate::every_store! { except [] $(#[$attr])* async fn $name($ts) $body }
    };
    (except [$($skip:ident = $why:literal),* $(,)?] $(#[$attr:meta])* async fn $name:ident($ts:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($ts: &$crate::common::stores::TestStore) $body

            $crate::every_store! { @memory [$($skip = $why),*]
                $(#[$attr])*
                async fn memory() {
                    let ts = $crate::common::stores::TestStore::memory();
                    run(&ts).await;
                    ts.finish().await;
                }
            }

            $crate::every_store! { @embedded [$($skip = $why),*]
                $(#[$attr])*
                async fn embedded() {
                    let ts = $crate::common::stores::TestStore::embedded();
                    run(&ts).await;
                    ts.finish().await;
                }
            }

            $crate::every_store! { @postgres [$($skip = $why),*]
                $(#[$attr])*
                async fn postgres() {
                    let test = concat!(module_path!(), "::postgres");
                    let Some(ts) = $crate::common::stores::TestStore::postgres(test).await else {
                        return;
                    };
                    run(&ts).await;
                    ts.finish().await;
                }
            }
        }
    };
    // An excluded backend's test is marked ignored with the reason, so the test runner
    // reports it as skipped, never as passed.
    (@memory [] $item:item) => { $item };
    (@memory [memory = $why:literal $(, $k:ident = $w:literal)*] $item:item) => { #[ignore = $why] $item };
    (@memory [$s:ident = $sw:literal $(, $k:ident = $w:literal)*] $item:item) => {
        $crate::every_store! { @memory [$($k = $w),*] $item }
    };
    (@embedded [] $item:item) => { $item };
    (@embedded [embedded = $why:literal $(, $k:ident = $w:literal)*] $item:item) => { #[ignore = $why] $item };
    (@embedded [$s:ident = $sw:literal $(, $k:ident = $w:literal)*] $item:item) => {
        $crate::every_store! { @embedded [$($k = $w),*] $item }
    };
    (@postgres [] $item:item) => { $item };
    (@postgres [postgres = $why:literal $(, $k:ident = $w:literal)*] $item:item) => { #[ignore = $why] $item };
    (@postgres [$s:ident = $sw:literal $(, $k:ident = $w:literal)*] $item:item) => {
        $crate::every_store! { @postgres [$($k = $w),*] $item }
    };
}

//! The store conformance suite against every reachable backend: memory and embedded always,
//! PostgreSQL when `PERDURE_TEST_POSTGRES_URL` is set, FoundationDB when `FDB_CLUSTER_FILE`
//! is set (and the `foundationdb` feature is on). Each backend runs the key-value cases and
//! the state-layer cases (fencing, inbox, timers, activity leases, purge) as two tests.

use std::sync::Arc;

use perdure_node::store::Store;
use perdure_node::store::conformance::{self, Case};
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::memory::MemoryStore;

async fn on_memory(cases: Vec<Case>) {
    conformance::run_cases(&cases, || async {
        Arc::new(MemoryStore::new()) as Arc<dyn Store>
    })
    .await;
}

async fn on_embedded(cases: Vec<Case>) {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_cases(&cases, || {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
        dirs.lock().expect("lock").push(dir);
        async move { Arc::new(store) as Arc<dyn Store> }
    })
    .await;
}

/// Runs `cases` on PostgreSQL, one fresh table per case (dropped afterwards), or skips
/// loudly when `PERDURE_TEST_POSTGRES_URL` is not set.
async fn on_postgres(test: &str, cases: Vec<Case>) {
    on_postgres_with(
        test,
        cases,
        perdure_node::store::postgres::CommitMode::Group,
    )
    .await;
}

/// [`on_postgres`] with a commit mode (group commit, or one PostgreSQL transaction each).
async fn on_postgres_with(
    test: &str,
    cases: Vec<Case>,
    mode: perdure_node::store::postgres::CommitMode,
) {
    use perdure_node::store::postgres::PostgresStore;
    let url = match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set; \
                 run `eval \"$(bash .ci/postgres.sh | tail -n 1)\"` to test PostgreSQL ***\n"
            );
            return;
        }
    };
    let tables = std::sync::Mutex::new(Vec::new());
    let counter = std::sync::atomic::AtomicU32::new(0);
    conformance::run_cases(&cases, || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let table = format!("{test}_{}_{n}", std::process::id());
        tables.lock().expect("lock").push(table.clone());
        let url = url.clone();
        async move {
            let store = PostgresStore::connect_with(&url, 16, &table, mode)
                .await
                .expect("connect to PostgreSQL");
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
    let store = PostgresStore::connect(&url, 1).await.expect("connect");
    for table in tables.into_inner().expect("lock") {
        store.drop_table(&table).await.expect("drop test table");
    }
}

#[tokio::test]
async fn memory_passes_the_kv_suite() {
    on_memory(conformance::kv_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_passes_the_state_suite() {
    on_memory(perdure_node::state::conformance::state_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_passes_the_kv_suite() {
    on_embedded(conformance::kv_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_passes_the_state_suite() {
    on_embedded(perdure_node::state::conformance::state_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_kv_suite() {
    on_postgres("kv_conformance", conformance::kv_cases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_state_suite() {
    on_postgres(
        "state_conformance",
        perdure_node::state::conformance::state_cases(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_without_group_commit_passes_the_kv_and_state_suites() {
    let plain = perdure_node::store::postgres::CommitMode::Plain;
    on_postgres_with("kv_plain", conformance::kv_cases(), plain).await;
    on_postgres_with(
        "state_plain",
        perdure_node::state::conformance::state_cases(),
        plain,
    )
    .await;
}

/// Runs `cases` on FoundationDB, each under a fresh key prefix, or skips loudly when
/// `FDB_CLUSTER_FILE` is not set.
#[cfg(feature = "foundationdb")]
fn on_foundationdb(test: &str, cases: Vec<Case>) {
    use perdure_node::store::fdb::FdbStore;
    let Some(cluster_file) = std::env::var_os("FDB_CLUSTER_FILE") else {
        eprintln!(
            "\n*** SKIPPED {test}: FDB_CLUSTER_FILE is not set \
             (no FoundationDB cluster to test against) ***\n"
        );
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let counter = std::sync::atomic::AtomicU32::new(0);
        conformance::run_cases(&cases, || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let prefix =
                format!("perdure-conformance/{test}/{}/{n}/", std::process::id()).into_bytes();
            let store = FdbStore::open_with_prefix(Some(cluster_file.clone().into()), prefix)
                .expect("open FoundationDB");
            async move { Arc::new(store) as Arc<dyn Store> }
        })
        .await;
    });
}

/// Both suites in one test: the FoundationDB client's network thread starts once per process
/// and stops for good.
#[cfg(feature = "foundationdb")]
#[test]
fn foundationdb_passes_the_kv_and_state_suites() {
    on_foundationdb("kv", conformance::kv_cases());
    on_foundationdb("state", perdure_node::state::conformance::state_cases());
    perdure_node::store::fdb::stop_network();
}

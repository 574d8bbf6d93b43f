//! The store conformance suite against every reachable backend: memory and embedded always,
//! PostgreSQL when `PERDURE_TEST_POSTGRES_URL` is set, FoundationDB when `FDB_CLUSTER_FILE`
//! is set (and the `foundationdb` feature is on).

use std::sync::Arc;

use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::memory::MemoryStore;
use perdure_node::store::{Store, conformance};

#[tokio::test]
async fn memory_passes_the_kv_suite() {
    conformance::run_kv_suite(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_passes_the_kv_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_kv_suite(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
        dirs.lock().expect("lock").push(dir);
        async move { Arc::new(store) as Arc<dyn Store> }
    })
    .await;
}

/// The PostgreSQL connection string for tests, or `None` (with a loud skip message).
fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set; \
                 run `eval \"$(bash .ci/postgres.sh | tail -n 1)\"` to test PostgreSQL ***\n"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_kv_suite() {
    use perdure_node::store::postgres::PostgresStore;
    let Some(url) = postgres_url("postgres_passes_the_kv_suite") else {
        return;
    };
    let tables = std::sync::Mutex::new(Vec::new());
    let counter = std::sync::atomic::AtomicU32::new(0);
    conformance::run_kv_suite(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let table = format!("kv_conformance_{}_{n}", std::process::id());
        tables.lock().expect("lock").push(table.clone());
        let url = url.clone();
        async move {
            let store = PostgresStore::connect_with_table(&url, 16, &table)
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

#[cfg(feature = "foundationdb")]
#[test]
fn foundationdb_passes_the_kv_suite() {
    use perdure_node::store::fdb::FdbStore;
    let Some(cluster_file) = std::env::var_os("FDB_CLUSTER_FILE") else {
        eprintln!(
            "\n*** SKIPPED foundationdb_passes_the_kv_suite: FDB_CLUSTER_FILE is not set \
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
        conformance::run_kv_suite(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let prefix = format!("perdure-conformance/{}/{n}/", std::process::id()).into_bytes();
            let store = FdbStore::open_with_prefix(Some(cluster_file.clone().into()), prefix)
                .expect("open FoundationDB");
            async move { Arc::new(store) as Arc<dyn Store> }
        })
        .await;
    });
    perdure_node::store::fdb::stop_network();
}

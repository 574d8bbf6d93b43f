//! The crash test of staged episodes (issue 16): a child process runs one large fan-out on
//! the embedded store and dies (`abort`: no unwinding, nothing flushed) right after its Nth
//! committed transaction that touches the staged-episode keyspace — staging an effect chunk,
//! publishing, or writing a chunk out. A second child on the same store finishes the
//! orchestration; it must complete with the right sum, each task scheduled and completed
//! exactly once in its history, and no staged key left. The crash points are fixed, so every
//! run tries the same ones.
//!
//! The child is this test binary re-run with `PERDURE_STAGED_CRASH_CHILD=<dir>`,
//! `PERDURE_STAGED_CRASH_AT=<n>` (0: no crash), `PERDURE_STAGED_CRASH_FAN_OUT=<n>` and
//! `PERDURE_STAGED_CRASH_ITEMS=<staged_commit_items>` on the test `staged_crash_child`.

mod common;

use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use perdure_core::management::{IdReusePolicy, ManagementApi, ManagementError, StartRequest};
use perdure_core::{InstanceId, Payload};
use perdure_node::state::keys::Key;
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::{KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction};

/// A store that aborts the process right after the `at`th committed transaction that wrote
/// or cleared a key of the staged-episode keyspace.
struct AbortAfter {
    inner: Arc<dyn Store>,
    at: u64,
    seen: AtomicU64,
}

struct AbortAfterTx {
    inner: Box<dyn Transaction>,
    store: Arc<AbortAfter>,
    staged: bool,
}

fn is_staged(key: &[u8]) -> bool {
    key.starts_with(Key::new().str("s").as_bytes())
}

#[async_trait::async_trait]
impl Transaction for AbortAfterTx {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.get_range(range, opts).await
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.staged |= is_staged(key);
        self.inner.set(key, value)
    }
    fn clear(&mut self, key: &[u8]) {
        self.staged |= is_staged(key);
        self.inner.clear(key)
    }
    fn clear_range(&mut self, range: &KeyRange) {
        self.staged |= is_staged(&range.begin);
        self.inner.clear_range(range)
    }
    fn cached_reads(&mut self) {
        self.inner.cached_reads()
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let (store, staged) = (self.store.clone(), self.staged);
        self.inner.commit().await?;
        if staged {
            let n = store.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if n == store.at {
                println!("CRASHING after staged commit {n}");
                std::process::abort();
            }
        }
        Ok(())
    }
}

struct AbortAfterStore(Arc<AbortAfter>);

#[async_trait::async_trait]
impl Store for AbortAfterStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(AbortAfterTx {
            inner: self.0.inner.begin().await?,
            store: self.0.clone(),
            staged: false,
        }))
    }
    fn backend_name(&self) -> &'static str {
        "abort-after"
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is set to a number"))
}

/// The child: runs (or resumes) the fan-out; with no crash point, checks it and prints
/// `CHECKED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_crash_child() {
    let Ok(dir) = std::env::var("PERDURE_STAGED_CRASH_CHILD") else {
        return; // Only runs as the child of the tests below.
    };
    let (at, n) = (
        env_u64("PERDURE_STAGED_CRASH_AT"),
        env_u64("PERDURE_STAGED_CRASH_FAN_OUT"),
    );
    let items = env_u64("PERDURE_STAGED_CRASH_ITEMS");
    let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir).expect("store opens"));
    let abort = Arc::new(AbortAfter {
        inner: inner.clone(),
        at,
        seen: AtomicU64::new(0),
    });
    let mut opts = common::restart_options();
    opts.staged_commit_items = NonZeroUsize::new(items as usize).unwrap();
    // The restarted child waits for its dead predecessor's heartbeat to expire.
    opts.cluster.lease_ttl = Duration::from_secs(2);
    opts.cluster.heartbeat_interval = Duration::from_millis(500);
    let store: Arc<dyn Store> = Arc::new(AbortAfterStore(abort.clone()));
    let node =
        common::start_with_options(store, perdure_node::sample::sample_registry(), opts).await;
    let id = InstanceId::new("crash-fan").unwrap();
    let mut req = StartRequest::new("FanOutFanIn");
    req.instance_id = Some(id.clone());
    req.input = Some(Payload::json(&n).unwrap());
    req.reuse_policy = IdReusePolicy::RejectExisting;
    loop {
        match node.start(req.clone()).await {
            Ok(_) | Err(ManagementError::AlreadyExists { .. }) => break,
            Err(e) if e.is_retryable() => tokio::task::yield_now().await,
            Err(e) => panic!("start failed: {e}"),
        }
    }
    let state = node
        .wait_for_completion(id.clone(), Duration::from_secs(240))
        .await
        .unwrap()
        .expect("the instance exists");
    // Bounded: a write-out that never finishes fails here instead of hanging.
    assert_eq!(
        state.runtime_status,
        perdure_core::OrchestrationStatus::Completed,
        "{state:?}"
    );
    common::check_fan_out(&node, &id, n).await;
    assert_eq!(
        common::staged_keys(&inner).await,
        0,
        "no staged key is left"
    );
    println!(
        "CHECKED staged-commits={}",
        abort.seen.load(Ordering::SeqCst)
    );
    node.shutdown().await;
}

fn child(dir: &str, at: u64, fan_out: u64, items: u64) -> (bool, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "staged_crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PERDURE_STAGED_CRASH_CHILD", dir)
        .env("PERDURE_STAGED_CRASH_AT", at.to_string())
        .env("PERDURE_STAGED_CRASH_FAN_OUT", fan_out.to_string())
        .env("PERDURE_STAGED_CRASH_ITEMS", items.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("child runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// For each crash point: a child dies right after it, a second child finishes and checks.
fn crash_at_points(fan_out: u64, items: u64, points: &[u64]) {
    for &at in points {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().expect("a UTF-8 temp dir");
        let (ok, text) = child(d, at, fan_out, items);
        assert!(!ok, "the child survived crash point {at}:\n{text}");
        assert!(
            text.contains(&format!("CRASHING after staged commit {at}")),
            "the child did not reach crash point {at}:\n{text}"
        );
        let (ok, text) = child(d, 0, fan_out, items);
        assert!(
            ok && text.contains("CHECKED"),
            "after crash point {at}:\n{text}"
        );
    }
}

/// A fan-out of 2,000 with 100 items per transaction: 20 effect chunks staged (commits
/// 1–20), published (21), written out (22–41); the points cover each step and its edges.
#[test]
fn a_staged_fan_out_recovers_exactly_once_from_crashes_at_every_step() {
    if std::env::var("PERDURE_STAGED_CRASH_CHILD").is_ok() {
        return;
    }
    crash_at_points(2_000, 100, &[1, 10, 20, 21, 22, 30, 41]);
}

/// The case: a fan-out of 100,000 with the default 5,000 items per transaction
/// (20 effect chunks), killed while staging, right after publishing and while writing out.
#[test]
fn a_staged_fan_out_of_100000_recovers_exactly_once_from_crashes() {
    if std::env::var("PERDURE_STAGED_CRASH_CHILD").is_ok() {
        return;
    }
    crash_at_points(100_000, 5_000, &[10, 21, 30]);
}

//! PostgreSQL faults: bad configuration and an unreachable server at start (always run:
//! they need no server), and a server lost at runtime (needs `PERDURE_TEST_POSTGRES_URL`;
//! the test puts a TCP proxy it can cut between the store and the server).

use std::error::Error as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use perdure_node::store::postgres::{CommitMode, PostgresStore};
use perdure_node::store::{RetryOptions, Store, StoreError, Transaction, transact};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

fn chain(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A loopback port with nothing listening on it.
async fn closed_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}

#[tokio::test]
async fn unreachable_at_start_is_a_clear_retryable_error() -> anyhow::Result<()> {
    let port = closed_port().await?;
    let url = format!("postgres://perdure:perdure@127.0.0.1:{port}/perdure_test");
    let err = PostgresStore::connect(&url, 4)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("connected to a closed port"))?;
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let text = chain(&err);
    assert!(
        text.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        !text.contains("perdure:perdure"),
        "no credentials in errors: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_configuration_is_fatal() {
    for (url, pool, table, want) in [
        (
            "not a url ===",
            4,
            "kv",
            "invalid PostgreSQL connection string",
        ),
        ("postgres://u:p@127.0.0.1/db", 0, "kv", "pool size"),
        (
            "postgres://u:p@127.0.0.1/db",
            4,
            "kv; DROP TABLE x",
            "invalid table name",
        ),
    ] {
        match PostgresStore::connect_with_table(url, pool, table).await {
            Err(e @ StoreError::Fatal(_)) => assert!(chain(&e).contains(want), "{}", chain(&e)),
            Err(other) => panic!("{url}: expected Fatal, got {other:?}"),
            Ok(_) => panic!("{url}: accepted"),
        }
    }
}

/// A TCP proxy to the PostgreSQL server that can be cut (closing every connection and
/// refusing new ones) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    /// Connections being proxied (their sockets still open).
    live: watch::Sender<usize>,
}

/// Counts one proxied connection while it lives.
struct Live(watch::Sender<usize>);

impl Live {
    fn new(live: &watch::Sender<usize>) -> Self {
        live.send_modify(|n| *n += 1);
        Self(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Proxy {
    async fn start(target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let live = watch::Sender::new(0usize);
        let accept_up = up.clone();
        let accept_live = live.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                let live = Live::new(&accept_live);
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                    // Both sockets close before the connection stops counting as live.
                    drop((client, server));
                    drop(live);
                });
            }
        });
        Ok(Self {
            port,
            up,
            cut,
            live,
        })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Cuts, and returns once every proxied connection's sockets are closed.
    async fn cut_and_wait(&self) {
        self.cut();
        let mut live = self.live.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = live.wait_for(|n| *n == 0).await;
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A store that records when each transaction began: shows the attempts `transact` made,
/// including those that failed in `begin`.
struct Observed<S> {
    inner: S,
    begins: Mutex<Vec<Instant>>,
}

impl<S> Observed<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            begins: Mutex::new(Vec::new()),
        }
    }

    /// When each `begin` since the last call was made; clears the record.
    fn take_begins(&self) -> Vec<Instant> {
        std::mem::take(&mut *self.begins.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl<S: Store> Store for Observed<S> {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        self.begins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        self.inner.begin().await
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

/// The sleeps `transact` makes between `opts.max_attempts` failed attempts.
fn backoffs(opts: &RetryOptions) -> Vec<Duration> {
    let mut backoff = opts.initial_backoff;
    let mut all = Vec::new();
    for _ in 1..opts.max_attempts {
        all.push(backoff);
        backoff = (backoff * 2).min(opts.max_backoff);
    }
    all
}

/// `postgres://user:password@host:port/db` → (`host:port`, the URL with `{addr}` instead).
fn split_url(url: &str) -> Option<(String, String)> {
    let at = url.find('@')?;
    let rest = url.get(at + 1..)?;
    let slash = rest.find('/')?;
    let addr = rest.get(..slash)?.to_owned();
    let template = format!("{}@{{addr}}{}", url.get(..at)?, rest.get(slash..)?);
    Some((addr, template))
}

/// The test's PostgreSQL URL, or `None` with a loud skip message.
fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            None
        }
    }
}

/// A proxy to the test server and a store (on its own table) that goes through it.
async fn store_via_proxy(
    url: &str,
    table: &str,
    mode: CommitMode,
) -> anyhow::Result<(Arc<Proxy>, Observed<PostgresStore>)> {
    let (addr, template) =
        split_url(url).ok_or_else(|| anyhow::anyhow!("expected postgres://u:p@host:port/db"))?;
    let proxy = Proxy::start(addr).await?;
    let via_proxy = template.replace("{addr}", &format!("127.0.0.1:{}", proxy.port));
    let store = PostgresStore::connect_with(&via_proxy, 2, table, mode).await?;
    Ok((Arc::new(proxy), Observed::new(store)))
}

fn quick() -> RetryOptions {
    RetryOptions {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

async fn read_k(store: &dyn Store) -> Result<Option<Vec<u8>>, StoreError> {
    transact(store, &quick(), |tx| {
        Box::pin(async move { tx.get(b"k").await })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_at_runtime_retries_then_fails_typed_then_recovers() -> anyhow::Result<()> {
    let Some(url) = postgres_url("lost_at_runtime_retries_then_fails_typed_then_recovers") else {
        return Ok(());
    };
    let table = format!("kv_lost_{}", std::process::id());
    let (proxy, store) = store_via_proxy(&url, &table, CommitMode::Group).await?;
    let quick = quick();

    transact(&store, &quick, |tx| {
        Box::pin(async move {
            tx.set(b"k", b"before")?;
            Ok(())
        })
    })
    .await?;
    store.take_begins();

    proxy.cut_and_wait().await;
    let started = Instant::now();
    let result = transact(&store, &quick, move |tx| {
        Box::pin(async move {
            tx.set(b"k", b"during")?;
            Ok(())
        })
    })
    .await;
    let elapsed = started.elapsed();
    match result {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(chain(&e).contains("PostgreSQL"), "{}", chain(&e));
        }
        other => panic!("expected Unavailable after retries, got {other:?}"),
    }
    // Every attempt was made, each after its backoff (lower bounds only: a loaded machine
    // may take longer, never shorter).
    let begins = store.take_begins();
    assert_eq!(
        begins.len(),
        quick.max_attempts as usize,
        "attempts: {begins:?}"
    );
    let backoffs = backoffs(&quick);
    for (i, (pair, backoff)) in begins.windows(2).zip(&backoffs).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= *backoff,
            "attempt {} came {gap:?} after the previous, before its {backoff:?} backoff",
            i + 2
        );
    }
    let slept: Duration = backoffs.iter().sum();
    assert!(elapsed >= slept, "{elapsed:?} < {slept:?}");

    proxy.restore();
    let seen = read_k(&store).await?;
    assert_eq!(
        seen.as_deref(),
        Some(&b"before"[..]),
        "the failed write did not land"
    );
    store.inner.drop_table(&table).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_during_commit_is_maybe_committed_and_not_retried() -> anyhow::Result<()> {
    let Some(url) = postgres_url("lost_during_commit_is_maybe_committed_and_not_retried") else {
        return Ok(());
    };
    let table = format!("kv_lost_commit_{}", std::process::id());
    // The plain path (one PostgreSQL transaction per logical one); the group path's
    // lost COMMIT is tested in tests/store_postgres_group.rs.
    let (proxy, store) = store_via_proxy(&url, &table, CommitMode::Plain).await?;
    let runs = Arc::new(AtomicU32::new(0));
    let (closure_runs, closure_proxy) = (runs.clone(), proxy.clone());
    let result = transact(&store, &quick(), move |tx| {
        closure_runs.fetch_add(1, Ordering::SeqCst);
        let proxy = closure_proxy.clone();
        Box::pin(async move {
            tx.set(b"k", b"maybe")?;
            // The read sends the buffered write to the server: only COMMIT is left.
            assert_eq!(tx.get(b"k").await?.as_deref(), Some(&b"maybe"[..]));
            proxy.cut_and_wait().await;
            Ok(())
        })
    })
    .await;
    match &result {
        Err(e @ StoreError::MaybeCommitted(_)) => {
            assert!(!e.is_retryable());
            assert!(e.is_maybe_committed());
            assert!(
                chain(e).contains("connection lost during COMMIT"),
                "{}",
                chain(e)
            );
        }
        other => panic!("expected MaybeCommitted, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "transact did not rerun the closure"
    );
    assert_eq!(
        store.take_begins().len(),
        1,
        "transact began no second attempt"
    );

    proxy.restore();
    // COMMIT never reached the server (the connection was closed before it was sent), so
    // here the unknown outcome is known: nothing was written.
    assert_eq!(read_k(&store).await?, None);
    store.inner.drop_table(&table).await?;
    Ok(())
}

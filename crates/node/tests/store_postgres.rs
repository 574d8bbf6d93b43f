//! PostgreSQL faults: bad configuration and an unreachable server at start (always run:
//! they need no server), and a server lost at runtime (needs `PERDURE_TEST_POSTGRES_URL`;
//! the test puts a TCP proxy it can cut between the store and the server).

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use perdure_node::store::postgres::PostgresStore;
use perdure_node::store::{RetryOptions, StoreError, transact};
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
}

impl Proxy {
    async fn start(target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let accept_up = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Ok(Self { port, up, cut })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_at_runtime_retries_then_fails_typed_then_recovers() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("PERDURE_TEST_POSTGRES_URL") else {
        eprintln!(
            "\n*** SKIPPED lost_at_runtime_retries_then_fails_typed_then_recovers: \
             PERDURE_TEST_POSTGRES_URL is not set ***\n"
        );
        return Ok(());
    };
    let (addr, template) =
        split_url(&url).ok_or_else(|| anyhow::anyhow!("expected postgres://u:p@host:port/db"))?;
    let proxy = Proxy::start(addr).await?;
    let via_proxy = template.replace("{addr}", &format!("127.0.0.1:{}", proxy.port));
    let table = format!("kv_lost_{}", std::process::id());
    let store = PostgresStore::connect_with_table(&via_proxy, 2, &table).await?;
    let quick = RetryOptions {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };

    transact(&store, &quick, |tx| {
        Box::pin(async move {
            tx.set(b"k", b"before")?;
            Ok(())
        })
    })
    .await?;

    proxy.cut();
    let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = attempts.clone();
    let result = transact(&store, &quick, move |tx| {
        counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tx.set(b"k", b"during")?;
            Ok(())
        })
    })
    .await;
    match result {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(chain(&e).contains("PostgreSQL"), "{}", chain(&e));
        }
        other => panic!("expected Unavailable after retries, got {other:?}"),
    }
    assert!(attempts.load(Ordering::SeqCst) <= 4);

    proxy.restore();
    let seen = transact(&store, &quick, |tx| {
        Box::pin(async move { tx.get(b"k").await })
    })
    .await?;
    assert_eq!(
        seen.as_deref(),
        Some(&b"before"[..]),
        "the failed write did not land"
    );
    store.drop_table(&table).await?;
    Ok(())
}

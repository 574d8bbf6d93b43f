//! The PostgreSQL group commit (`store/postgres/group.rs`): conflicts decided in the node
//! between members of one group, a group where one member conflicts and the others commit,
//! a deposed owner's grouped commit fenced, and a connection lost during the group's COMMIT.
//! Needs `PERDURE_TEST_POSTGRES_URL` (skipped loudly without it).
//!
//! Grouping is made deterministic with a current-thread runtime: commits polled together by
//! one `join` are all queued before the committer task can run, so they form one group.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use perdure_core::Timestamp;
use perdure_node::state::leases;
use perdure_node::store::postgres::{CommitMode, PostgresStore};
use perdure_node::store::{RetryOptions, Store, StoreError, transact};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            None
        }
    }
}

async fn store(url: &str, table: &str) -> anyhow::Result<PostgresStore> {
    let s = PostgresStore::connect_with(url, 4, table, CommitMode::Group).await?;
    s.drop_table(table).await?;
    Ok(PostgresStore::connect_with(url, 4, table, CommitMode::Group).await?)
}

async fn read(store: &dyn Store, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let key = key.to_vec();
    transact(store, &RetryOptions::default(), move |tx| {
        let key = key.clone();
        Box::pin(async move { tx.get(&key).await })
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn one_group_decides_conflicts_in_the_node_and_commits_the_rest() -> anyhow::Result<()> {
    let Some(url) = postgres_url("one_group_decides_conflicts_in_the_node") else {
        return Ok(());
    };
    let table = format!("kv_group_mixed_{}", std::process::id());
    let store = store(&url, &table).await?;
    let mut setup = store.begin().await?;
    setup.set(b"counter", b"0")?;
    setup.commit().await?;
    let before = store.group_stats();

    // a and b both read `counter` and write it: in one group the later one (b) did not see
    // a's write and must conflict. c writes blindly; d reads another key and writes a third.
    let mut a = store.begin().await?;
    let mut b = store.begin().await?;
    let mut c = store.begin().await?;
    let mut d = store.begin().await?;
    assert_eq!(a.get(b"counter").await?.as_deref(), Some(&b"0"[..]));
    assert_eq!(b.get(b"counter").await?.as_deref(), Some(&b"0"[..]));
    assert_eq!(d.get(b"other").await?, None);
    a.set(b"counter", b"a")?;
    b.set(b"counter", b"b")?;
    c.set(b"blind", b"c")?;
    d.set(b"third", b"d")?;
    let (ra, rb, rc, rd) = tokio::join!(a.commit(), b.commit(), c.commit(), d.commit());
    assert!(ra.is_ok(), "{ra:?}");
    assert!(matches!(rb, Err(StoreError::Conflict)), "{rb:?}");
    assert!(rc.is_ok(), "{rc:?}");
    assert!(rd.is_ok(), "{rd:?}");

    let after = store.group_stats();
    assert_eq!(
        after.groups - before.groups,
        1,
        "one PostgreSQL transaction"
    );
    assert_eq!(after.committed - before.committed, 3);
    assert_eq!(after.conflicts - before.conflicts, 1);
    assert_eq!(read(&store, b"counter").await?.as_deref(), Some(&b"a"[..]));
    assert_eq!(read(&store, b"blind").await?.as_deref(), Some(&b"c"[..]));
    assert_eq!(read(&store, b"third").await?.as_deref(), Some(&b"d"[..]));
    store.drop_table(&table).await?;
    Ok(())
}

/// A group whose reads hold commits in one round trip; a group with a read another node
/// changed fails the one-round-trip check, writes nothing of it, and is run again in two
/// round trips: the stale member conflicts, the others commit.
#[tokio::test(flavor = "current_thread")]
async fn a_key_changed_by_another_node_fails_the_one_round_trip_check() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_key_changed_by_another_node_fails_the_one_round_trip_check")
    else {
        return Ok(());
    };
    let table = format!("kv_group_check_{}", std::process::id());
    let store = store(&url, &table).await?;
    let other = PostgresStore::connect_with(&url, 4, &table, CommitMode::Group).await?;
    let mut setup = store.begin().await?;
    setup.set(b"k", b"0")?;
    setup.set(b"j", b"0")?;
    setup.commit().await?;

    // Reads that hold: one round trip.
    let before = store.group_stats();
    let mut a = store.begin().await?;
    let mut b = store.begin().await?;
    assert_eq!(a.get(b"k").await?.as_deref(), Some(&b"0"[..]));
    assert_eq!(b.get(b"absent").await?, None);
    a.set(b"k", b"1")?;
    b.set(b"out-b", b"b")?;
    let (ra, rb) = tokio::join!(a.commit(), b.commit());
    assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
    let after = store.group_stats();
    assert_eq!(after.groups - before.groups, 1);
    assert_eq!(after.one_round_trip - before.one_round_trip, 1);
    assert_eq!(after.checks_failed, before.checks_failed);

    // `stale` read j; another node changes j; `fresh` read k (unchanged) and `blind` reads
    // nothing: in one group, only `stale` conflicts.
    let before = store.group_stats();
    let mut stale = store.begin().await?;
    let mut fresh = store.begin().await?;
    let mut blind = store.begin().await?;
    assert_eq!(stale.get(b"j").await?.as_deref(), Some(&b"0"[..]));
    assert_eq!(fresh.get(b"k").await?.as_deref(), Some(&b"1"[..]));
    let mut w = other.begin().await?;
    w.set(b"j", b"other")?;
    w.commit().await?;
    stale.set(b"out-stale", b"s")?;
    fresh.set(b"out-fresh", b"f")?;
    blind.set(b"out-blind", b"x")?;
    let (rs, rf, rx) = tokio::join!(stale.commit(), fresh.commit(), blind.commit());
    assert!(matches!(rs, Err(StoreError::Conflict)), "{rs:?}");
    assert!(rf.is_ok() && rx.is_ok(), "{rf:?} {rx:?}");
    let after = store.group_stats();
    assert_eq!(after.groups - before.groups, 1, "one PostgreSQL commit");
    assert_eq!(after.checks_failed - before.checks_failed, 1);
    assert_eq!(after.one_round_trip, before.one_round_trip);
    assert_eq!(
        read(&store, b"out-stale").await?,
        None,
        "nothing of it was written"
    );
    assert_eq!(
        read(&store, b"out-fresh").await?.as_deref(),
        Some(&b"f"[..])
    );
    assert_eq!(
        read(&store, b"out-blind").await?.as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(read(&store, b"j").await?.as_deref(), Some(&b"other"[..]));

    // A key seen absent that another node then wrote, and a key seen present that another
    // node then removed: both fail the check.
    for (seen, change) in [(None, Some(&b"new"[..])), (Some(&b"0"[..]), None)] {
        let key: &[u8] = if seen.is_none() { b"was-absent" } else { b"j2" };
        if let Some(v) = seen {
            let mut w = store.begin().await?;
            w.set(key, v)?;
            w.commit().await?;
        }
        let before = store.group_stats();
        let mut reader = store.begin().await?;
        assert_eq!(reader.get(key).await?.as_deref(), seen);
        let mut w = other.begin().await?;
        match change {
            Some(v) => w.set(key, v)?,
            None => w.clear(key),
        }
        w.commit().await?;
        reader.set(b"out-reader", b"r")?;
        let mut blind = store.begin().await?;
        blind.set(b"out-blind-2", b"x")?;
        let (rr, rb) = tokio::join!(reader.commit(), blind.commit());
        assert!(matches!(rr, Err(StoreError::Conflict)), "{rr:?}");
        assert!(rb.is_ok(), "{rb:?}");
        let after = store.group_stats();
        assert_eq!(after.checks_failed - before.checks_failed, 1);
        assert_eq!(read(&store, b"out-reader").await?, None);
    }

    // Two members that saw different values of one key: the group runs in two round trips
    // at once (no check to fail), and the one that saw the old value conflicts.
    let before = store.group_stats();
    let mut old_view = store.begin().await?;
    assert_eq!(old_view.get(b"k").await?.as_deref(), Some(&b"1"[..]));
    let mut w = other.begin().await?;
    w.set(b"k", b"2")?;
    w.commit().await?;
    let mut new_view = store.begin().await?;
    assert_eq!(new_view.get(b"k").await?.as_deref(), Some(&b"2"[..]));
    old_view.set(b"out-old", b"o")?;
    new_view.set(b"out-new", b"n")?;
    let (ro, rn) = tokio::join!(old_view.commit(), new_view.commit());
    assert!(matches!(ro, Err(StoreError::Conflict)), "{ro:?}");
    assert!(rn.is_ok(), "{rn:?}");
    let after = store.group_stats();
    assert_eq!(after.checks_failed, before.checks_failed);
    assert_eq!(after.one_round_trip, before.one_round_trip);
    store.drop_table(&table).await?;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_range_read_conflicts_with_an_earlier_members_write_in_the_group() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_range_read_conflicts_with_an_earlier_member") else {
        return Ok(());
    };
    let table = format!("kv_group_range_{}", std::process::id());
    let store = store(&url, &table).await?;
    // `writer` inserts into inbox/; `scanner` read inbox/ (empty) and records what it saw.
    let mut writer = store.begin().await?;
    let mut scanner = store.begin().await?;
    let range = perdure_node::store::KeyRange::prefix(b"inbox/");
    assert!(
        scanner
            .get_range(&range, perdure_node::store::RangeOptions::default())
            .await?
            .is_empty()
    );
    writer.set(b"inbox/1", b"m")?;
    scanner.set(b"seen", b"0 messages")?;
    let (rw, rs) = tokio::join!(writer.commit(), scanner.commit());
    assert!(rw.is_ok(), "{rw:?}");
    assert!(matches!(rs, Err(StoreError::Conflict)), "{rs:?}");
    assert_eq!(read(&store, b"seen").await?, None);
    store.drop_table(&table).await?;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_deposed_owners_grouped_commit_is_fenced() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_deposed_owners_grouped_commit_is_fenced") else {
        return Ok(());
    };
    let table = format!("kv_group_fence_{}", std::process::id());
    // Two nodes on one table, each with its own pool and committer.
    let old = store(&url, &table).await?;
    let new = PostgresStore::connect_with(&url, 4, &table, CommitMode::Group).await?;
    let lease = Duration::from_secs(10);
    let epoch = transact(&old, &RetryOptions::default(), move |tx| {
        Box::pin(
            async move { leases::acquire(tx, 7, "old", Timestamp::from_millis(0), lease).await },
        )
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("old owner did not get the lease"))?;

    // The old owner prepares a write under its epoch, with a neighbour in the same group.
    let mut stale = old.begin().await?;
    leases::check(stale.as_mut(), 7, epoch).await?;
    stale.set(b"partition-7/state", b"old")?;
    let mut neighbour = old.begin().await?;
    neighbour.set(b"partition-8/state", b"fine")?;

    // Meanwhile the new owner takes the partition over (its lease expired).
    let later = Timestamp::from_millis(60_000);
    let new_epoch = transact(&new, &RetryOptions::default(), move |tx| {
        Box::pin(async move { leases::acquire(tx, 7, "new", later, lease).await })
    })
    .await?;
    assert_eq!(new_epoch, Some(epoch + 1));

    let (rs, rn) = tokio::join!(stale.commit(), neighbour.commit());
    assert!(matches!(rs, Err(StoreError::Conflict)), "{rs:?}");
    assert!(rn.is_ok(), "{rn:?}");
    assert_eq!(read(&old, b"partition-7/state").await?, None);
    // Its retry (as `transact` runs it) sees the new epoch: fenced.
    let retried = transact(&old, &RetryOptions::default(), move |tx| {
        Box::pin(async move {
            leases::check(tx, 7, epoch).await?;
            tx.set(b"partition-7/state", b"old")
        })
    })
    .await;
    assert!(
        matches!(retried, Err(StoreError::Fenced { partition: 7, held, current }) if held == epoch && current == epoch + 1),
        "{retried:?}"
    );
    old.drop_table(&table).await?;
    Ok(())
}

/// A proxy that forwards everything, except that once armed it closes the connection
/// instead of forwarding a message holding `COMMIT` (so the server never sees it).
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl CommitCutter {
    async fn start(target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let armed = Arc::new(AtomicBool::new(false));
        let accept_armed = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else {
                    continue;
                };
                let armed = accept_armed.clone();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = buf.get(..n).unwrap_or_default();
                        if armed.load(Ordering::SeqCst)
                            && chunk.windows(7).any(|w| w == b"COMMIT\0")
                        {
                            // Dropping both halves closes both sockets.
                            break;
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { port, armed })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_connection_lost_during_the_group_commit_is_maybe_committed_for_every_member()
-> anyhow::Result<()> {
    let Some(url) = postgres_url("a_connection_lost_during_the_group_commit") else {
        return Ok(());
    };
    let at = url
        .find('@')
        .ok_or_else(|| anyhow::anyhow!("expected u:p@host:port/db"))?;
    let rest = url.get(at + 1..).unwrap_or_default();
    let slash = rest
        .find('/')
        .ok_or_else(|| anyhow::anyhow!("no database"))?;
    let addr = rest.get(..slash).unwrap_or_default().to_owned();
    let proxy = CommitCutter::start(addr.clone()).await?;
    let via = url.replace(&addr, &format!("127.0.0.1:{}", proxy.port));
    let table = format!("kv_group_lost_{}", std::process::id());
    let store = store(&via, &table).await?;
    // Written before: the node's cache holds it.
    let mut setup = store.begin().await?;
    setup.set(b"e", b"0")?;
    setup.commit().await?;

    let mut a = store.begin().await?;
    let mut b = store.begin().await?;
    let mut c = store.begin().await?;
    // A read-only member whose read came from the cache: it joins the group to be checked.
    let mut e = store.begin().await?;
    e.cached_reads();
    assert_eq!(e.get(b"e").await?.as_deref(), Some(&b"0"[..]));
    assert_eq!(a.get(b"a").await?, None);
    a.set(b"a", b"1")?;
    b.set(b"b", b"1")?;
    c.set(b"c", b"1")?;
    proxy.armed.store(true, Ordering::SeqCst);
    let (ra, rb, rc, re) = tokio::join!(a.commit(), b.commit(), c.commit(), e.commit());
    for r in [&ra, &rb, &rc] {
        assert!(
            matches!(r, Err(e) if e.is_maybe_committed() && !e.is_retryable()),
            "{r:?}"
        );
    }
    // It wrote nothing, so nothing of it can have committed: a retryable failure.
    assert!(
        matches!(&re, Err(StoreError::Unavailable(_))),
        "a write-free member of a group with an unknown outcome: {re:?}"
    );
    proxy.armed.store(false, Ordering::SeqCst);
    // COMMIT never reached the server: nothing was written, and the store recovers.
    for k in [b"a", b"b", b"c"] {
        assert_eq!(read(&store, k).await?, None);
    }
    let mut d = store.begin().await?;
    d.set(b"d", b"1")?;
    d.commit().await?;
    assert_eq!(read(&store, b"d").await?.as_deref(), Some(&b"1"[..]));
    store.drop_table(&table).await?;
    Ok(())
}

/// The node's cache of recent values (`store/postgres/cache.rs`): two stores on one table
/// are two nodes. A value this node wrote is read from its cache; after the other node
/// changes it, the guess is wrong, and the transaction that used it must neither commit nor
/// report what it decided from it: its commit conflicts, its error is re-checked, and the
/// retry sees the other node's value.
#[tokio::test]
async fn a_stale_cached_read_never_decides_an_outcome() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_stale_cached_read_never_decides_an_outcome") else {
        return Ok(());
    };
    let table = format!("kv_group_cache_{}", std::process::id());
    let here = store(&url, &table).await?;
    let there = PostgresStore::connect_with(&url, 4, &table, CommitMode::Group).await?;
    let retry = RetryOptions::default();
    // Written here: this node's cache holds "1".
    transact(&here, &retry, |tx| {
        Box::pin(async move {
            tx.set(b"k", b"1")?;
            Ok(())
        })
    })
    .await?;
    // The other node changes it.
    transact(&there, &retry, |tx| {
        Box::pin(async move {
            tx.set(b"k", b"2")?;
            Ok(())
        })
    })
    .await?;

    // 1. A read-write transaction: its first run reads the stale "1" from the cache and
    //    would copy it; the commit refuses that run, and the retry copies "2".
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = {
        let runs = runs.clone();
        transact(&here, &retry, move |tx| {
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.cached_reads();
                let v = tx.get(b"k").await?.unwrap_or_default();
                tx.set(b"copy", &v)?;
                Ok(v)
            })
        })
        .await?
    };
    assert_eq!(seen, b"2", "the committed run saw the other node's value");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "the stale run was refused");
    assert_eq!(read(&there, b"copy").await?.as_deref(), Some(&b"2"[..]));

    // 2. An error decided from a stale cached value is not reported: the other node moves
    //    on to "3", and a transaction that fails unless it sees "3" fails only while its
    //    reads are stale, which the check before reporting finds.
    transact(&there, &retry, |tx| {
        Box::pin(async move {
            tx.set(b"k", b"3")?;
            Ok(())
        })
    })
    .await?;
    let outcome = transact(&here, &retry, |tx| {
        Box::pin(async move {
            tx.cached_reads();
            match tx.get(b"k").await?.as_deref() {
                Some(b"3") => Ok(()),
                _ => Err(StoreError::Fenced {
                    partition: 0,
                    held: 3,
                    current: 2,
                }),
            }
        })
    })
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");

    // 3. A read-only transaction that read from the cache is checked at commit too.
    transact(&there, &retry, |tx| {
        Box::pin(async move {
            tx.set(b"k", b"4")?;
            Ok(())
        })
    })
    .await?;
    let mut stale = here.begin().await?;
    stale.cached_reads();
    let guess = stale.get(b"k").await?;
    if guess.as_deref() == Some(&b"4"[..]) {
        // Only if the cache was refreshed meanwhile; then the commit must hold.
        stale.commit().await?;
    } else {
        assert!(
            matches!(stale.commit().await, Err(StoreError::Conflict)),
            "a read-only transaction with a stale cached read must conflict"
        );
    }
    here.drop_table(&table).await?;
    Ok(())
}

/// The multi-range delete aliases its target: a table named like the alias of the ranges
/// (`r`) still commits range clears.
#[tokio::test]
async fn a_table_named_r_clears_ranges() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_table_named_r_clears_ranges") else {
        return Ok(());
    };
    let store = store(&url, "r").await?;
    let retry = RetryOptions::default();
    transact(&store, &retry, |tx| {
        Box::pin(async move {
            for k in [&b"a1"[..], b"a2", b"b1"] {
                tx.set(k, b"v")?;
            }
            Ok(())
        })
    })
    .await?;
    transact(&store, &retry, |tx| {
        Box::pin(async move {
            tx.clear_range(&perdure_node::store::KeyRange::prefix(b"a"));
            Ok(())
        })
    })
    .await?;
    assert_eq!(read(&store, b"a1").await?, None);
    assert_eq!(read(&store, b"a2").await?, None);
    assert_eq!(read(&store, b"b1").await?.as_deref(), Some(&b"v"[..]));
    store.drop_table("r").await?;
    Ok(())
}

/// A transaction's first read runs alone (no snapshot transaction); its second opens the
/// snapshot and re-reads the first. A change in between is a `Conflict` at the second read,
/// never a view mixing two snapshots, and `transact`'s rerun reads the new values.
#[tokio::test]
async fn a_second_read_after_a_change_to_the_first_conflicts() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_second_read_after_a_change_to_the_first_conflicts") else {
        return Ok(());
    };
    let table = format!("kv_group_second_read_{}", std::process::id());
    let store = store(&url, &table).await?;
    let mut setup = store.begin().await?;
    setup.set(b"a", b"1")?;
    setup.set(b"r/1", b"x")?;
    setup.commit().await?;

    // A key read, then changed, then another key read: conflict.
    let mut t = store.begin().await?;
    assert_eq!(t.get(b"a").await?.as_deref(), Some(&b"1"[..]));
    let mut w = store.begin().await?;
    w.set(b"a", b"2")?;
    w.set(b"b", b"2")?;
    w.commit().await?;
    assert!(matches!(t.get(b"b").await, Err(StoreError::Conflict)));
    drop(t);

    // A range read first opens the snapshot with it: a later change is not seen, and no
    // read conflicts.
    let range = perdure_node::store::KeyRange::prefix(b"r/");
    let opts = perdure_node::store::RangeOptions::default();
    let mut t = store.begin().await?;
    assert_eq!(t.get_range(&range, opts).await?.len(), 1);
    let mut w = store.begin().await?;
    w.set(b"r/2", b"y")?;
    w.set(b"c", b"2")?;
    w.commit().await?;
    assert_eq!(
        t.get_many(&[b"a", b"c"]).await?,
        [Some(b"2".to_vec()), None]
    );
    assert_eq!(
        t.get_range(&range, opts).await?.len(),
        1,
        "r/2 is after the snapshot"
    );
    t.commit().await?;

    // Two point reads open the snapshot; every later read comes from it.
    let mut t = store.begin().await?;
    assert_eq!(t.get(b"a").await?.as_deref(), Some(&b"2"[..]));
    assert_eq!(t.get(b"b").await?.as_deref(), Some(&b"2"[..]));
    let mut w = store.begin().await?;
    w.set(b"d", b"3")?;
    w.set(b"r/3", b"z")?;
    w.commit().await?;
    assert_eq!(t.get(b"d").await?, None, "d is after the snapshot");
    assert_eq!(
        t.get_range(&range, opts).await?.len(),
        2,
        "r/3 is after the snapshot"
    );
    t.commit().await?;

    // Under `transact`, the conflict is retried and the rerun sees one snapshot.
    let runs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (counter, writer) = (runs.clone(), store.clone());
    let seen = transact(&store, &RetryOptions::default(), move |tx| {
        let (counter, writer) = (counter.clone(), writer.clone());
        Box::pin(async move {
            let a = tx.get(b"a").await?;
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                let mut w = writer.begin().await?;
                w.set(b"a", b"4")?;
                w.set(b"b", b"4")?;
                w.commit().await?;
            }
            let b = tx.get(b"b").await?;
            Ok((a, b))
        })
    })
    .await?;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one conflict, one rerun");
    assert_eq!(seen, (Some(b"4".to_vec()), Some(b"4".to_vec())));
    store.drop_table(&table).await?;
    Ok(())
}

/// A wrong guess from the cache found at a transaction's second server read is a `Conflict`
/// that also drops the guess: the rerun reads the key from the server (without the drop every
/// rerun would read the same guess and conflict again).
#[tokio::test]
async fn a_wrong_cached_guess_found_at_a_second_read_is_dropped() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_wrong_cached_guess_found_at_a_second_read_is_dropped") else {
        return Ok(());
    };
    let table = format!("kv_group_guess_{}", std::process::id());
    let store = store(&url, &table).await?;
    let other = PostgresStore::connect_with(&url, 4, &table, CommitMode::Group).await?;
    // This node commits k: its cache now knows k = 1.
    let mut setup = store.begin().await?;
    setup.set(b"k", b"1")?;
    setup.commit().await?;
    // Another node changes it.
    let mut w = other.begin().await?;
    w.set(b"k", b"2")?;
    w.commit().await?;

    let mut t = store.begin().await?;
    t.cached_reads();
    assert_eq!(
        t.get(b"k").await?.as_deref(),
        Some(&b"1"[..]),
        "the cache's guess"
    );
    assert_eq!(t.get(b"x").await?, None, "a first read from the server");
    assert!(matches!(t.get(b"y").await, Err(StoreError::Conflict)));
    drop(t);

    let mut t = store.begin().await?;
    t.cached_reads();
    assert_eq!(
        t.get(b"k").await?.as_deref(),
        Some(&b"2"[..]),
        "read from the server"
    );
    drop(t);
    store.drop_table(&table).await?;
    Ok(())
}

/// A second read dropped while it opens the snapshot (a timeout around it, say) leaves the
/// transaction unable to answer any later read or to commit: its reads are not known to be
/// one snapshot's. (The second read marks the transaction before its first await; the read
/// is polled once and dropped. A timeout of zero did not always cut it: tokio's timer has a
/// resolution of 1 ms, and a read answered within it finished first.)
#[tokio::test]
async fn a_read_dropped_while_opening_the_snapshot_breaks_the_transaction() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_read_dropped_while_opening_the_snapshot") else {
        return Ok(());
    };
    let table = format!("kv_group_dropped_{}", std::process::id());
    let store = store(&url, &table).await?;
    // A read is cut only if its first poll does not finish it (it never has; the loop keeps
    // the test meaningful if a run ever does).
    let mut cut_reads = 0;
    for _ in 0..5 {
        let mut t = store.begin().await?;
        assert_eq!(t.get(b"a").await?, None);
        match t.get(b"b").now_or_never() {
            None => cut_reads += 1,
            Some(finished) => {
                eprintln!("the read finished on its first poll: {finished:?}");
                continue;
            }
        }
        assert!(matches!(t.get(b"c").await, Err(StoreError::Conflict)));
        assert!(matches!(t.commit().await, Err(StoreError::Conflict)));
    }
    assert!(cut_reads > 0, "no read was cut short");
    store.drop_table(&table).await?;
    Ok(())
}

/// Every committed increment of a counter counts once (one that committed but was reported as
/// a conflict would count twice, its rerun applying it again): transactions that read the counter from the cache and write it back, each also writing a
/// key of its own, from several tasks on a multi-threaded runtime (where the connection task
/// may answer `BEGIN` before the group's other statements are polled). A group whose writes
/// reached the server before its check once committed and was reported as conflicting; its
/// retry then counted the increment twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_increment_counts_once() -> anyhow::Result<()> {
    let Some(url) = postgres_url("every_committed_increment_counts_once") else {
        return Ok(());
    };
    let table = format!("kv_group_counter_{}", std::process::id());
    let store = Arc::new(store(&url, &table).await?);
    let before = store.group_stats();
    const TASKS: u64 = 4;
    const EACH: u64 = 400;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                transact(store.as_ref(), &RetryOptions::default(), move |tx| {
                    Box::pin(async move {
                        tx.cached_reads();
                        let n = match tx.get(b"counter").await? {
                            Some(v) => u64::from_be_bytes(v.try_into().unwrap_or([0; 8])),
                            None => 0,
                        };
                        tx.set(b"counter", &(n + 1).to_be_bytes())?;
                        tx.set(format!("mark/{t}/{i}").as_bytes(), b"")?;
                        Ok(())
                    })
                })
                .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let counter = read(store.as_ref(), b"counter").await?;
    let counter = counter.map(|v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])));
    let stats = store.group_stats();
    store.drop_table(&table).await?;
    assert_eq!(
        counter,
        Some(TASKS * EACH),
        "each committed increment counts once"
    );
    assert!(
        stats.one_round_trip > before.one_round_trip,
        "groups took the one-round-trip path: {stats:?}"
    );
    assert!(
        stats.pipelined > before.pipelined,
        "groups formed while another was in flight: {stats:?}"
    );
    assert!(
        stats.checks_failed > before.checks_failed,
        "a group's check failed (it read the counter an earlier group wrote): {stats:?}"
    );
    Ok(())
}

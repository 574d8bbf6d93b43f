//! The partition queues: inbox order and exactly-once consumption under concurrent
//! consumers, timer order, activity lease expiry and redelivery.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::Timestamp;
use tokio::sync::Barrier;

use super::fixtures::{message, number, task};
use super::{read_all, ro};
use crate::state::queues::{self, MessageIds, Redelivery};
use crate::state::records::InboxMessage;
use crate::store::{Store, StoreError, transact};

const PARTITION: u32 = 5;

/// Waits for spawned tasks, failing the case if one panicked.
async fn join_all<T>(
    handles: Vec<tokio::task::JoinHandle<Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(result) => out.push(result?),
            Err(join) => panic!("a concurrent task failed: {join}"),
        }
    }
    Ok(out)
}

/// Sends message `n` at time `n` (so inbox order is `n` order), from `ids`.
async fn send(store: &dyn Store, ids: &Arc<MessageIds>, n: u64) -> Result<(), StoreError> {
    let ids = ids.clone();
    transact(store, &ro(), move |tx| {
        let ids = ids.clone();
        Box::pin(async move {
            queues::send(tx, &ids, PARTITION, Timestamp(n), &message("i", n, 0)).map(|_| ())
        })
    })
    .await
}

/// Every inbox message of the partition, read in pages of `page` with `after`.
async fn read_inbox_paged(
    store: &dyn Store,
    page: usize,
) -> Result<Vec<(Vec<u8>, InboxMessage)>, StoreError> {
    let mut all: Vec<(Vec<u8>, InboxMessage)> = Vec::new();
    loop {
        let after = all.last().map(|(k, _)| k.clone());
        let rows = transact(store, &ro(), move |tx| {
            let after = after.clone();
            Box::pin(async move { queues::read_inbox(tx, PARTITION, after.as_deref(), page).await })
        })
        .await?;
        let n = rows.len();
        all.extend(rows);
        if n < page {
            return Ok(all);
        }
    }
}

/// Messages sent concurrently by three senders come back in time order; four consumers then
/// take the head of the inbox concurrently, each in its own transactions: every message is
/// consumed exactly once, each consumer sees its messages in inbox order, and nothing
/// (message or index entry) is left.
pub async fn inbox_order_and_exactly_once(store: Arc<dyn Store>) -> Result<(), StoreError> {
    const MESSAGES: u64 = 60;
    const SENDERS: u64 = 3;
    const CONSUMERS: usize = 4;
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let store = store.clone();
        let ids = Arc::new(MessageIds::new(s));
        senders.push(tokio::spawn(async move {
            // Each sender goes backwards through its share: order comes from the keys.
            for n in (0..MESSAGES).rev().filter(|n| n % SENDERS == s) {
                send(&*store, &ids, n).await?;
            }
            Ok(())
        }));
    }
    join_all(senders).await?;
    let inbox = read_inbox_paged(&*store, 7).await?;
    let order: Vec<u64> = inbox.iter().map(|(_, m)| number(m)).collect();
    assert_eq!(order, (0..MESSAGES).collect::<Vec<_>>(), "inbox order");

    let start = Arc::new(Barrier::new(CONSUMERS));
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let (store, start) = (store.clone(), start.clone());
        consumers.push(tokio::spawn(async move {
            start.wait().await;
            let mut seen: Vec<u64> = Vec::new();
            loop {
                let taken = transact(&*store, &ro(), |tx| {
                    Box::pin(async move {
                        let head = queues::read_inbox(tx, PARTITION, None, 3).await?;
                        for (k, m) in &head {
                            queues::remove(tx, k, m);
                        }
                        Ok(head.iter().map(|(_, m)| number(m)).collect::<Vec<u64>>())
                    })
                })
                .await?;
                if taken.is_empty() {
                    return Ok(seen);
                }
                seen.extend(taken);
            }
        }));
    }
    let views = join_all(consumers).await?;
    for view in &views {
        assert!(
            view.windows(2).all(|w| w[0] < w[1]),
            "a consumer sees messages in inbox order: {view:?}"
        );
    }
    let mut all: Vec<u64> = views.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every message consumed exactly once"
    );
    assert_eq!(
        read_all(&*store).await?,
        Vec::new(),
        "no message or index entry left"
    );
    Ok(())
}

/// Several consumers read the same head message, then all commit its removal at once:
/// exactly one commits, the others conflict.
pub async fn inbox_consumers_race_for_one_message(store: Arc<dyn Store>) -> Result<(), StoreError> {
    const CONSUMERS: usize = 4;
    let ids = Arc::new(MessageIds::new(1));
    send(&*store, &ids, 1).await?;
    let read = Arc::new(Barrier::new(CONSUMERS));
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let (store, read) = (store.clone(), read.clone());
        consumers.push(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            let head = queues::read_inbox(tx.as_mut(), PARTITION, None, 1).await?;
            assert_eq!(head.len(), 1, "every consumer sees the message");
            for (k, m) in &head {
                queues::remove(tx.as_mut(), k, m);
            }
            // Nobody commits before everyone has read the message.
            read.wait().await;
            Ok::<_, StoreError>(tx.commit().await)
        }));
    }
    let results = join_all(consumers).await?;
    let won = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict)))
        .count();
    assert_eq!(
        (won, conflicts),
        (1, CONSUMERS - 1),
        "exactly one consumer commits: {results:?}"
    );
    assert_eq!(read_all(&*store).await?, Vec::new(), "the message is gone");
    Ok(())
}

/// Timers written out of order by two senders come back in due order (ties in key order),
/// page by page; removing the due ones leaves the later ones.
pub async fn timer_order(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let dues: [u64; 8] = [50, 10, 30, 20, 40, 10, 70, 60];
    let mut senders = Vec::new();
    for s in 0..2u64 {
        let store = store.clone();
        senders.push(tokio::spawn(async move {
            let ids = Arc::new(MessageIds::new(s));
            for due in dues.iter().copied().skip(s as usize).step_by(2) {
                let ids = ids.clone();
                transact(&*store, &ro(), move |tx| {
                    let ids = ids.clone();
                    Box::pin(async move {
                        let msg = message("i", due, 0);
                        queues::add_timer(tx, &ids, PARTITION, Timestamp(due), &msg).map(|_| ())
                    })
                })
                .await?;
            }
            Ok(())
        }));
    }
    join_all(senders).await?;
    let mut timers: Vec<(Vec<u8>, InboxMessage)> = Vec::new();
    loop {
        let after = timers.last().map(|(k, _)| k.clone());
        let page = transact(&*store, &ro(), move |tx| {
            let after = after.clone();
            Box::pin(async move { queues::read_timers(tx, PARTITION, after.as_deref(), 3).await })
        })
        .await?;
        let n = page.len();
        timers.extend(page);
        if n < 3 {
            break;
        }
    }
    let mut sorted = dues.to_vec();
    sorted.sort_unstable();
    let due_of_key: Vec<u64> = timers
        .iter()
        .map(|(k, _)| queues::timer_due(k).map_or(u64::MAX, |t| t.0))
        .collect();
    assert_eq!(due_of_key, sorted, "timers in due order");
    let carried: Vec<u64> = timers.iter().map(|(_, m)| number(m)).collect();
    assert_eq!(carried, sorted, "each key carries its own timer");
    let timers = Arc::new(timers);
    transact(&*store, &ro(), move |tx| {
        let timers = timers.clone();
        Box::pin(async move {
            for (k, m) in timers.iter().filter(|(_, m)| number(m) <= 30) {
                queues::remove(tx, k, m);
            }
            Ok(())
        })
    })
    .await?;
    let left = transact(&*store, &ro(), |tx| {
        Box::pin(async move { queues::read_timers(tx, PARTITION, None, 100).await })
    })
    .await?;
    let left: Vec<u64> = left.iter().map(|(_, m)| number(m)).collect();
    assert_eq!(left, vec![40, 50, 60, 70]);
    Ok(())
}

/// A task's lease holds it until it expires; then concurrent redeliveries give exactly one
/// new attempt (attempt count raised, new lease); after the result is recorded, nothing is
/// redelivered.
pub async fn activity_lease_expiry_and_redelivery(store: Arc<dyn Store>) -> Result<(), StoreError> {
    const LEASE: Duration = Duration::from_secs(30);
    const REDELIVERERS: usize = 4;
    let t0 = Timestamp(1_000);
    let first = task("i", 7, 0, t0.add(LEASE));
    let key = transact(&*store, &ro(), move |tx| {
        let t = task("i", 7, 0, t0.add(LEASE));
        Box::pin(async move { queues::put_task(tx, PARTITION, &t) })
    })
    .await?;
    let key = Arc::new(key);
    let redeliver = |at: Timestamp| {
        let (store, key) = (store.clone(), key.clone());
        async move {
            transact(&*store, &ro(), move |tx| {
                let key = key.clone();
                Box::pin(async move { queues::redeliver(tx, PARTITION, &key, at, LEASE).await })
            })
            .await
        }
    };
    assert_eq!(
        redeliver(Timestamp(t0.0 + 10_000)).await?,
        Redelivery::Leased(first.lease_until),
        "not before the lease expires"
    );
    let expired = first.lease_until;
    let mut racers = Vec::new();
    for _ in 0..REDELIVERERS {
        racers.push(tokio::spawn(redeliver(expired)));
    }
    let outcomes = join_all(racers).await?;
    let again: Vec<&Redelivery> = outcomes
        .iter()
        .filter(|o| matches!(o, Redelivery::Again(_)))
        .collect();
    let mut second = first.clone();
    second.attempt = 2;
    second.lease_until = expired.add(LEASE);
    assert_eq!(
        again,
        vec![&Redelivery::Again(second.clone())],
        "one expiry, one new attempt: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Redelivery::Again(_))
                || *o == Redelivery::Leased(second.lease_until)),
        "the others see the new lease: {outcomes:?}"
    );
    let queued = transact(&*store, &ro(), |tx| {
        Box::pin(async move { queues::read_tasks(tx, PARTITION, None, 10).await })
    })
    .await?;
    assert_eq!(
        queued,
        vec![((*key).clone(), second.clone())],
        "the stored task"
    );
    // The second attempt's lease expires too.
    match redeliver(second.lease_until).await? {
        Redelivery::Again(t) => assert_eq!(t.attempt, 3),
        other => panic!("expected a third attempt, got {other:?}"),
    }
    // A result is recorded: the task is consumed, and no expiry brings it back.
    let k = key.clone();
    let consumed = transact(&*store, &ro(), move |tx| {
        let k = k.clone();
        Box::pin(async move { queues::consume(tx, &k).await })
    })
    .await?;
    assert!(consumed);
    assert_eq!(redeliver(Timestamp(u64::MAX)).await?, Redelivery::Gone);
    assert_eq!(read_all(&*store).await?, Vec::new());
    Ok(())
}

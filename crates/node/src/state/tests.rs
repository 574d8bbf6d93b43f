//! Tests of the state layer on the memory store. Fencing, inbox order and exactly-once
//! consumption, timer order, activity leases and purge run on every backend in the store
//! conformance suite (`crate::state::conformance::state_cases`).

use std::time::Duration;

use perdure_core::management::InstanceQuery;
use perdure_core::{
    EventKind, ExecutionId, HistoryEvent, InstanceId, OrchestrationStatus, Timestamp,
};

use super::records::{InboxMessage, InstanceRecord, MessageBody, Target};
use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{RangeOptions, RetryOptions, Store, StoreError, transact};

async fn tx<T: Send + 'static>(
    store: &MemoryStore,
    f: impl for<'t> Fn(&'t mut dyn Transaction) -> futures::future::BoxFuture<'t, Result<T, StoreError>>
    + Send
    + Sync
    + 'static,
) -> Result<T, StoreError> {
    let f = std::sync::Arc::new(f);
    transact(store as &dyn Store, &RetryOptions::default(), move |t| {
        let f = f.clone();
        Box::pin(async move { f(t).await })
    })
    .await
}

/// Acquires partition 3's lease for `owner` with a 30 s lease.
async fn acquire(store: &MemoryStore, owner: &'static str, now: Timestamp) -> Option<u64> {
    tx(store, move |t| {
        Box::pin(leases::acquire(t, 3, owner, now, Duration::from_secs(30)))
    })
    .await
    .unwrap()
}

fn msg(n: i64) -> InboxMessage {
    InboxMessage {
        target: Target::Instance(InstanceId::new("i").unwrap()),
        body: MessageBody::Event {
            execution_id: None,
            event: HistoryEvent::new(
                Timestamp(0),
                EventKind::EventRaised {
                    name: format!("e{n}"),
                    input: None,
                },
            ),
        },
    }
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_and_fences_the_old_epoch() {
    let store = MemoryStore::new();
    let now = Timestamp(1000);
    let e1 = acquire(&store, "a", now).await;
    assert_eq!(e1, Some(1));
    let released = tx(&store, |t| Box::pin(leases::release(t, 3, 1)))
        .await
        .unwrap();
    assert!(released);
    // Long before the lease would have expired, another owner takes it.
    let e2 = acquire(&store, "b", now).await;
    assert_eq!(e2, Some(2));
    // The old epoch is fenced, and releasing it again leaves the new owner's lease alone.
    let r = tx(&store, |t| {
        Box::pin(async move { leases::check(t, 3, 1).await.map(|_| ()) })
    })
    .await;
    assert!(matches!(r, Err(StoreError::Fenced { current: 2, .. })));
    let released = tx(&store, |t| Box::pin(leases::release(t, 3, 1)))
        .await
        .unwrap();
    assert!(!released);
    let held = tx(&store, |t| Box::pin(leases::read(t, 3))).await.unwrap();
    assert_eq!(
        held.map(|l| (l.owner, l.expires_at)),
        Some(("b".to_string(), now.add(Duration::from_secs(30))))
    );
}

fn record(id: &str, status: OrchestrationStatus, created: u64) -> InstanceRecord {
    InstanceRecord {
        instance_id: InstanceId::new(id).unwrap(),
        name: "N".into(),
        version: None,
        execution_id: ExecutionId("e".into()),
        status,
        input: None,
        output: None,
        custom_status: None,
        failure: None,
        created_at: Timestamp(created),
        updated_at: Timestamp(created),
        parent: None,
        history_len: 0,
        original_input: None,
    }
}

#[tokio::test]
async fn records_indexes_history_and_removal() {
    let store = MemoryStore::new();
    tx(&store, |t| {
        Box::pin(async move {
            for i in 0..10u64 {
                let st = if i % 2 == 0 {
                    OrchestrationStatus::Running
                } else {
                    OrchestrationStatus::Completed
                };
                instances::save(t, None, &record(&format!("r{i}"), st, i))?;
            }
            // Move r0 from Running to Failed.
            let old = record("r0", OrchestrationStatus::Running, 0);
            instances::save(t, Some(&old), &record("r0", OrchestrationStatus::Failed, 0))?;
            let id = InstanceId::new("r1").unwrap();
            let ev = HistoryEvent::new(Timestamp(1), EventKind::OrchestratorStarted);
            history::append(t, &id, 0, &[ev.clone(), ev.clone(), ev.clone()])?;
            history::append(t, &id, 3, &[ev.clone(), ev])?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let counts = tx(&store, |t| {
        Box::pin(async move { instances::count(t, &InstanceQuery::default()).await })
    })
    .await
    .unwrap();
    assert_eq!(counts.get(&OrchestrationStatus::Running), Some(&4));
    assert_eq!(counts.get(&OrchestrationStatus::Completed), Some(&5));
    assert_eq!(counts.get(&OrchestrationStatus::Failed), Some(&1));
    let (page, _) = tx(&store, |t| {
        Box::pin(async move {
            let q = InstanceQuery {
                created_from: Some(Timestamp(3)),
                created_to: Some(Timestamp(6)),
                ..Default::default()
            };
            instances::query(t, &q).await
        })
    })
    .await
    .unwrap();
    assert_eq!(page.len(), 4);
    let page2 = tx(&store, |t| {
        Box::pin(async move {
            let id = InstanceId::new("r1").unwrap();
            history::load_page(t, &id, 3, 5, 1).await
        })
    })
    .await
    .unwrap();
    assert_eq!(page2.len(), 2);
    // Removing r1 removes its record, index entries and history, and nothing else.
    tx(&store, |t| {
        Box::pin(async move {
            let id = InstanceId::new("r1").unwrap();
            let r = instances::load(t, &id).await?.ok_or(StoreError::Conflict)?;
            instances::remove(t, &r);
            history::cut(t, &id);
            Ok(())
        })
    })
    .await
    .unwrap();
    let counts = tx(&store, |t| {
        Box::pin(async move { instances::count(t, &InstanceQuery::default()).await })
    })
    .await
    .unwrap();
    assert_eq!(counts.values().sum::<u64>(), 9);
    let h = tx(&store, |t| {
        Box::pin(async move {
            let prefix = keys::Key::new().str(space::HISTORY).str("r1");
            t.get_range(
                &KeyRange::prefix(prefix.as_bytes()),
                RangeOptions::default(),
            )
            .await
        })
    })
    .await
    .unwrap();
    assert!(h.is_empty(), "{h:?}");
}

fn msg_to(id: &str, n: i64) -> InboxMessage {
    let mut m = msg(n);
    m.target = Target::Instance(InstanceId::new(id).unwrap());
    m
}

/// Every key of the store, in order.
async fn all_keys(store: &MemoryStore) -> Vec<Vec<u8>> {
    tx(store, |t| {
        Box::pin(async move {
            let rows = t
                .get_range(
                    &crate::store::KeyRange::new(Vec::new(), vec![0xFF]),
                    crate::store::RangeOptions::default(),
                )
                .await?;
            Ok(rows.into_iter().map(|(k, _)| k).collect())
        })
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn purge_messages_removes_only_the_instances_messages_in_batches() {
    let store = MemoryStore::new();
    let ids = std::sync::Arc::new(queues::MessageIds::new(3));
    // "a" (the purged one) and "ab" (an id it prefixes) share partition 2.
    let ids2 = ids.clone();
    tx(&store, move |t| {
        let ids = ids2.clone();
        Box::pin(async move {
            for n in 0..7 {
                queues::send(t, &ids, 2, Timestamp(n as u64), &msg_to("a", n))?;
                queues::add_timer(t, &ids, 2, Timestamp(1000 + n as u64), &msg_to("a", n))?;
            }
            queues::send(t, &ids, 2, Timestamp(1), &msg_to("ab", 0))?;
            queues::add_timer(t, &ids, 2, Timestamp(5), &msg_to("ab", 1))?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let before = all_keys(&store).await;
    // 14 messages of "a", 2 of "ab", one index key each.
    assert_eq!(before.len(), 32);
    // Batches of 4: 14 entries take four transactions, the last one finds fewer than 4.
    let a = InstanceId::new("a").unwrap();
    let mut steps = 0;
    loop {
        steps += 1;
        let a = a.clone();
        let more = tx(&store, move |t| {
            let a = a.clone();
            Box::pin(async move { queues::purge_messages(t, &a, 4).await })
        })
        .await
        .unwrap();
        if !more {
            break;
        }
    }
    assert_eq!(steps, 4);
    let after = all_keys(&store).await;
    assert_eq!(
        after.len(),
        4,
        "only ab's two messages and their index entries remain"
    );
    let ab_index = queues::messages_of_prefix(&InstanceId::new("ab").unwrap());
    let inbox = tx(&store, |t| Box::pin(queues::read_inbox(t, 2, None, 100)))
        .await
        .unwrap();
    let timers = tx(&store, |t| Box::pin(queues::read_timers(t, 2, None, 100)))
        .await
        .unwrap();
    assert_eq!(inbox.len() + timers.len(), 2);
    for (k, m) in inbox.iter().chain(timers.iter()) {
        assert_eq!(m.target, Target::Instance(InstanceId::new("ab").unwrap()));
        let idx = ab_index.clone().raw(k).into_bytes();
        assert!(after.contains(&idx), "index entry of a surviving message");
    }
    // Consuming a message with `remove` clears its index entry too.
    let consumed: Vec<(Vec<u8>, InboxMessage)> = inbox.into_iter().chain(timers).collect();
    let consumed = std::sync::Arc::new(consumed);
    tx(&store, move |t| {
        let consumed = consumed.clone();
        Box::pin(async move {
            for (k, m) in consumed.iter() {
                assert!(t.get(k).await?.is_some());
                queues::remove(t, k, m);
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    assert!(all_keys(&store).await.is_empty());
}

#[tokio::test]
async fn a_send_racing_with_purge_conflicts() {
    // The embedded store runs transactions concurrently and detects read conflicts (the
    // memory store serializes them).
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::embedded::EmbeddedStore::open(dir.path()).unwrap();
    let ids = queues::MessageIds::new(9);
    let a = InstanceId::new("a").unwrap();
    // The purge reads the (empty) index range; a send to the instance commits in between:
    // the purge's commit fails with a conflict, so its retry sees and removes the message.
    let mut purge = store.begin().await.unwrap();
    assert!(
        !queues::purge_messages(purge.as_mut(), &a, 10)
            .await
            .unwrap()
    );
    // The last purge step also removes the record (a read-only transaction never conflicts).
    clear(purge.as_mut(), &instances::record_key(&a));
    let mut send = store.begin().await.unwrap();
    queues::send(send.as_mut(), &ids, 0, Timestamp(1), &msg_to("a", 1)).unwrap();
    send.commit().await.unwrap();
    assert!(matches!(purge.commit().await, Err(StoreError::Conflict)));
    let mut retry = store.begin().await.unwrap();
    assert!(
        !queues::purge_messages(retry.as_mut(), &a, 10)
            .await
            .unwrap()
    );
    retry.commit().await.unwrap();
    let mut check = store.begin().await.unwrap();
    let left = check
        .get_range(
            &crate::store::KeyRange::new(vec![0x02, b'q'], vec![0x02, b'z']),
            crate::store::RangeOptions::default(),
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "no inbox message or index entry is left");
}

/// Found by the `text_parsers` fuzz target: a continuation token with a sign (`"+0"`) decoded
/// as the key `[0]`, so a token the node never handed out was accepted.
#[test]
fn continuation_tokens_are_hex_digits_only() {
    use super::instances::{decode_token, encode_token};
    for bad in ["+0", "-1", "+f", "0+", "zz", "0", " 0", "0 "] {
        assert_eq!(decode_token(bad), None, "{bad:?}");
    }
    assert_eq!(decode_token("00ff"), Some(vec![0, 0xff]));
    assert_eq!(decode_token("00FF"), Some(vec![0, 0xff]));
    assert_eq!(
        decode_token(&encode_token(b"\x00k\xfe")),
        Some(b"\x00k\xfe".to_vec())
    );
}

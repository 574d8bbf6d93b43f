//! Tests of the state layer on the memory store.

use std::time::Duration;

use perdure_core::management::InstanceQuery;
use perdure_core::{
    EventKind, ExecutionId, HistoryEvent, InstanceId, OrchestrationStatus, Timestamp,
};

use super::records::{InboxMessage, InstanceRecord, MessageBody, Target};
use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{RetryOptions, Store, StoreError, transact};

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
async fn a_deposed_epoch_is_fenced() {
    let store = MemoryStore::new();
    let now = Timestamp(1000);
    let lease = Duration::from_secs(30);
    let e1 = tx(&store, move |t| {
        Box::pin(leases::acquire(t, 3, "a", now, lease))
    })
    .await
    .unwrap();
    assert_eq!(e1, Some(1));
    // Another owner waits for expiry.
    let other = tx(&store, move |t| {
        Box::pin(leases::acquire(t, 3, "b", now, lease))
    })
    .await
    .unwrap();
    assert_eq!(other, None);
    // The same owner (a restart) takes it back with a new epoch; the old one is fenced.
    let e2 = tx(&store, move |t| {
        Box::pin(leases::acquire(t, 3, "a", now, lease))
    })
    .await
    .unwrap();
    assert_eq!(e2, Some(2));
    let r = tx(&store, |t| {
        Box::pin(async move { leases::check(t, 3, 1).await.map(|_| ()) })
    })
    .await;
    assert!(matches!(
        r,
        Err(StoreError::Fenced {
            partition: 3,
            held: 1,
            current: 2
        })
    ));
    // After expiry another owner may acquire.
    let later = Timestamp(1000 + 31_000);
    let e3 = tx(&store, move |t| {
        Box::pin(leases::acquire(t, 3, "b", later, lease))
    })
    .await
    .unwrap();
    assert_eq!(e3, Some(3));
}

#[tokio::test]
async fn inbox_is_ordered_and_consumed_once() {
    let store = MemoryStore::new();
    let ids = std::sync::Arc::new(queues::MessageIds::new(7));
    for n in 0..20 {
        let ids = ids.clone();
        tx(&store, move |t| {
            let ids = ids.clone();
            Box::pin(async move {
                queues::send(t, &ids, 1, Timestamp(n as u64 / 5), &msg(n)).map(|_| ())
            })
        })
        .await
        .unwrap();
    }
    let read = tx(&store, |t| Box::pin(queues::read_inbox(t, 1, 100)))
        .await
        .unwrap();
    let names: Vec<String> = read
        .iter()
        .map(|(_, m)| match &m.body {
            MessageBody::Event { event, .. } => match &event.kind {
                EventKind::EventRaised { name, .. } => name.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        })
        .collect();
    assert_eq!(names, (0..20).map(|n| format!("e{n}")).collect::<Vec<_>>());
    // Four consumers race for every message: each is consumed exactly once.
    let keys: Vec<Vec<u8>> = read.into_iter().map(|(k, _)| k).collect();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (store, keys) = (store.clone(), keys.clone());
        handles.push(tokio::spawn(async move {
            let mut won = 0;
            for k in keys {
                let k = std::sync::Arc::new(k);
                if tx(&store, move |t| {
                    let k = k.clone();
                    Box::pin(async move { queues::consume(t, &k).await })
                })
                .await
                .unwrap()
                {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 20);
    assert!(
        tx(&store, |t| Box::pin(queues::read_inbox(t, 1, 100)))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn timers_come_back_in_due_order() {
    let store = MemoryStore::new();
    let ids = std::sync::Arc::new(queues::MessageIds::new(1));
    for due in [50u64, 10, 30, 20, 40] {
        let ids = ids.clone();
        tx(&store, move |t| {
            let ids = ids.clone();
            Box::pin(async move {
                queues::add_timer(t, &ids, 0, Timestamp(due), &msg(due as i64)).map(|_| ())
            })
        })
        .await
        .unwrap();
    }
    let read = tx(&store, |t| Box::pin(queues::read_timers(t, 0, 10)))
        .await
        .unwrap();
    let dues: Vec<u64> = read
        .iter()
        .filter_map(|(k, _)| queues::timer_due(k).map(|d| d.as_millis()))
        .collect();
    assert_eq!(dues, vec![10, 20, 30, 40, 50]);
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
            history::append(t, &id, 0, &[ev.clone(), ev.clone(), ev])?;
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
            history::load_page(t, &id, 1, Some(5)).await
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
        Box::pin(async move { history::load(t, &InstanceId::new("r1").unwrap()).await })
    })
    .await
    .unwrap();
    assert!(h.is_empty());
}

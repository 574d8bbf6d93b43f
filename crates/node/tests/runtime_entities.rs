//! Entities: signals, calls, batching, critical sections, entities starting orchestrations.

mod common;

use std::sync::Arc;

use perdure_core::entity::EntityContext;
use perdure_core::management::{EntityQuery, ManagementApi};
use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::{EntityId, FailureDetails, InstanceId, OrchestrationStatus, Payload};
use perdure_node::store::memory::MemoryStore;
use serde_json::json;

/// An entity whose operation awaits the node's runtime (a tokio timer) before it changes its
/// state: `#[entity]` with an `async` method.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Slow {
    total: i64,
}

#[perdure_core::entity]
impl Slow {
    pub async fn add_after(&mut self, ctx: &mut EntityContext<Self>, n: i64, ms: u64) -> i64 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        // Still the same operation's context after the await (a panic fails the operation).
        assert_eq!(ctx.operation_name(), "add_after");
        self.total += n;
        self.total
    }

    pub fn total(&self) -> i64 {
        self.total
    }
}

#[perdure_core::orchestration]
async fn call_slow(ctx: OrchestrationContext, n: i64) -> Result<(i64, i64), TaskError> {
    let slow = ctx.entity::<Slow>("s");
    slow.signal().add_after(n, 5)?;
    let after = slow.add_after(n, 20).await?;
    Ok((after, slow.total().await?))
}

fn registry() -> perdure_core::registry::Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.register_entity::<Slow>().register(call_slow);
    r.add_orchestration(
        "ReadCounter",
        |ctx: OrchestrationContext, key: String| async move {
            let id = EntityId::new("Counter", key).map_err(|e| e.to_string())?;
            ctx.call_entity::<i64>(&id, "get", ())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .add_orchestration(
        "SignalFromOrchestration",
        |ctx: OrchestrationContext, n: i64| async move {
            let id = EntityId::new("Counter", "from-orch").map_err(|e| e.to_string())?;
            for _ in 0..n {
                ctx.signal_entity(&id, "add", 1)
                    .map_err(|e| e.to_string())?;
            }
            ctx.call_entity::<i64>(&id, "get", ())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .add_entity(
        "Starter",
        |ctx: &mut EntityContext<u32>| -> Result<String, FailureDetails> {
            let id = ctx.start_orchestration("HelloSequence", ())?;
            *ctx.state_or_default() += 1;
            Ok(id.to_string())
        },
    )
    .add_orchestration(
        "CallStarter",
        |ctx: OrchestrationContext, _: ()| async move {
            let id = EntityId::new("Starter", "s").map_err(|e| e.to_string())?;
            ctx.call_entity::<String>(&id, "start", ())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .add_orchestration(
        "LockThenFail",
        |ctx: OrchestrationContext, _: ()| async move {
            let id = EntityId::new("Counter", "locked").map_err(|e| e.to_string())?;
            let _section = ctx.lock_entities(&[id]).await.map_err(|e| e.to_string())?;
            Err::<(), _>("failed inside the critical section".to_string())
        },
    )
    .add_orchestration(
        "Balance",
        |ctx: OrchestrationContext, key: String| async move {
            let id = EntityId::new("Account", key).map_err(|e| e.to_string())?;
            ctx.call_entity::<i64>(&id, "balance", ())
                .await
                .map_err(|e: TaskError| e.to_string())
        },
    );
    r
}

every_store! {
    #[tokio::test]
    async fn counter_counts_every_signal_and_answers_calls(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let c1 = EntityId::new("Counter", "c1").unwrap();
        for _ in 0..500 {
            node.signal_entity(
                c1.clone(),
                "add".into(),
                Some(Payload::json(&1).unwrap()),
                None,
            )
            .await
            .unwrap();
        }
        let id = common::start(
            &node,
            "ReadCounter",
            "read-c1",
            Some(Payload::json(&"c1").unwrap()),
        )
        .await;
        let n: i64 = common::output(&node, &id).await;
        assert_eq!(n, 500);
        let st = node.get_entity(c1.clone()).await.unwrap().unwrap();
        assert_eq!(st.state, Some(Payload::json(&500).unwrap()));
        // Batching: far fewer batches than operations.
        let m = node.metrics();
        let batches = m.entity_batches.load(std::sync::atomic::Ordering::Relaxed);
        let ops = m
            .entity_operations
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ops, 501);
        assert!(batches <= ops, "{batches} batches for {ops} operations");
        let page = node
            .query_entities(EntityQuery {
                name: Some("counter".into()),
                fetch_state: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.entities.len(), 1);
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn async_entity_operations_await_on_the_node(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let id = common::start(&node, "call_slow", "slow-1", Some(Payload::json(&6).unwrap())).await;
        let (after, total): (i64, i64) = common::output(&node, &id).await;
        assert_eq!((after, total), (12, 12), "the signal and the call both ran, in order");
        let st = node.get_entity(EntityId::new("Slow", "s").unwrap()).await.unwrap().unwrap();
        assert_eq!(st.state, Some(Payload::json(&json!({"total": 12})).unwrap()));
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn orchestrations_signal_entities(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let id = common::start(
            &node,
            "SignalFromOrchestration",
            "sig-1",
            Some(Payload::json(&25).unwrap()),
        )
        .await;
        let n: i64 = common::output(&node, &id).await;
        assert_eq!(n, 25);
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn transfers_in_critical_sections_conserve_money(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        for key in ["alice", "bob"] {
            node.signal_entity(
                EntityId::new("Account", key).unwrap(),
                "deposit".into(),
                Some(Payload::json(&1000).unwrap()),
                None,
            )
            .await
            .unwrap();
        }
        let mut ids = Vec::new();
        for i in 0..20 {
            let (from, to) = if i % 2 == 0 {
                ("alice", "bob")
            } else {
                ("bob", "alice")
            };
            let input = json!({"from": from, "to": to, "amount": 10 + i});
            ids.push(
                common::start(
                    &node,
                    "Transfer",
                    &format!("t-{i}"),
                    Some(Payload::json(&input).unwrap()),
                )
                .await,
            );
        }
        for id in &ids {
            let ok: bool = common::output(&node, id).await;
            assert!(ok);
        }
        let mut total = 0;
        for key in ["alice", "bob"] {
            let id = common::start(
                &node,
                "Balance",
                &format!("bal-{key}"),
                Some(Payload::json(&key).unwrap()),
            )
            .await;
            let b: i64 = common::output(&node, &id).await;
            total += b;
        }
        assert_eq!(total, 2000);
        // Locks were released.
        let st = node
            .get_entity(EntityId::new("Account", "alice").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.locked_by, None);
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn entities_start_orchestrations(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let id = common::start(&node, "CallStarter", "cs-1", None).await;
        let started: String = common::output(&node, &id).await;
        let child = InstanceId::new(started).unwrap();
        let st = common::wait(&node, &child).await;
        assert_eq!(st.runtime_status, OrchestrationStatus::Completed);
        node.shutdown().await;
    }
}

/// Signals `add n` to Counter `key`, then reads it through the `ReadCounter` orchestration.
async fn add_then_read(node: &perdure_node::node::NodeHandle, key: &str, n: i64) -> i64 {
    let c = EntityId::new("Counter", key).unwrap();
    node.signal_entity(c, "add".into(), Some(Payload::json(&n).unwrap()), None)
        .await
        .unwrap();
    let id = common::start(
        node,
        "ReadCounter",
        &format!("read-{key}"),
        Some(Payload::json(&key).unwrap()),
    )
    .await;
    common::output(node, &id).await
}

every_store! {
    #[tokio::test]
    async fn a_failing_holder_releases_its_locks(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let id = common::start(&node, "LockThenFail", "lock-fail", None).await;
        assert_eq!(
            common::wait(&node, &id).await.runtime_status,
            OrchestrationStatus::Failed
        );
        let c = EntityId::new("Counter", "locked").unwrap();
        assert_eq!(add_then_read(&node, "locked", 7).await, 7);
        let st = node.get_entity(c).await.unwrap().unwrap();
        assert_eq!(st.locked_by, None);
        node.shutdown().await;
    }
}

#[tokio::test]
async fn cleaning_removes_records_without_state_or_lock() {
    use perdure_node::state::entities::entity_key;
    use perdure_node::state::records::EntityRecord;
    use perdure_node::store::{RetryOptions, transact};

    let store = Arc::new(MemoryStore::new());
    let node = common::start_with(store.clone(), registry()).await;
    // The runtime never stores an empty record (saving one removes it), so write it directly,
    // as another writer could have left it.
    let empty = EntityId::new("Counter", "empty").unwrap();
    let key = entity_key(&empty);
    transact(store.as_ref(), &RetryOptions::default(), move |tx| {
        let key = key.clone();
        Box::pin(async move { perdure_node::state::put(tx, &key, &EntityRecord::default()) })
    })
    .await
    .unwrap();
    let kept = EntityId::new("Counter", "kept").unwrap();
    assert_eq!(add_then_read(&node, "kept", 3).await, 3);
    assert!(node.get_entity(empty.clone()).await.unwrap().is_some());

    let r = node.clean_entity_storage(false, true).await.unwrap();
    assert_eq!(
        (r.empty_entities_removed, r.orphaned_locks_released),
        (0, 0)
    );
    assert!(node.get_entity(empty.clone()).await.unwrap().is_some());

    let r = node.clean_entity_storage(true, true).await.unwrap();
    assert_eq!(
        (r.empty_entities_removed, r.orphaned_locks_released),
        (1, 0)
    );
    assert!(node.get_entity(empty).await.unwrap().is_none());
    let st = node.get_entity(kept).await.unwrap().unwrap();
    assert_eq!(st.state, Some(Payload::json(&3).unwrap()));

    let r = node.clean_entity_storage(true, true).await.unwrap();
    assert_eq!(
        (r.empty_entities_removed, r.orphaned_locks_released),
        (0, 0)
    );
    node.shutdown().await;
}

/// Reads an entity until `done` holds for it (signals and lock grants arrive
/// asynchronously); fails with the last state read after 30 s.
async fn entity_until(
    node: &perdure_node::node::NodeHandle,
    id: &EntityId,
    done: impl Fn(&perdure_core::management::EntityState) -> bool,
) -> perdure_core::management::EntityState {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        last = node.get_entity(id.clone()).await.unwrap();
        if let Some(st) = &last
            && done(st)
        {
            return st.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("the entity never reached the state asked for; last read: {last:?}")
}

every_store! {
    #[tokio::test]
    async fn the_backlog_counts_operations_waiting_behind_a_lock(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let account = EntityId::new("Account", "held").unwrap();
        let deposit = |n: i64| {
            node.signal_entity(
                account.clone(),
                "deposit".into(),
                Some(Payload::json(&n).unwrap()),
                None,
            )
        };
        deposit(100).await.unwrap();
        entity_until(&node, &account, |st| st.state.is_some()).await;
        // A transfer that holds both accounts' locks until it gets `Confirm`.
        let input = json!({"from": "held", "to": "other", "amount": 10, "confirm": true});
        let id = common::start(
            &node,
            "Transfer",
            "t-held",
            Some(Payload::json(&input).unwrap()),
        )
        .await;
        let st = entity_until(&node, &account, |st| st.locked_by.is_some()).await;
        assert_eq!(st.backlog, 0, "nothing waits yet");
        for n in 1..=3 {
            deposit(n).await.unwrap();
        }
        // The three deposits wait behind the lock, and the listing says so too.
        let st = entity_until(&node, &account, |st| st.backlog == 3).await;
        assert!(st.locked_by.is_some());
        // The listing asks the partition actor too; while a run of the entity is in flight
        // (a re-read of the inbox wakes it) its messages are in the run, not counted: ask
        // again, bounded.
        let mut listed = None;
        for _ in 0..500 {
            let page = node
                .query_entities(EntityQuery {
                    name: Some("Account".into()),
                    key_prefix: Some("held".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(page.entities.len(), 1);
            listed = Some(page.entities[0].backlog);
            if listed == Some(3) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_eq!(listed, Some(3), "the listing shows the three waiting deposits");
        // Confirmed, the transfer runs and releases the locks; the deposits then run.
        node.raise_event(
            id.clone(),
            "Confirm".into(),
            Some(Payload::json(&true).unwrap()),
        )
        .await
        .unwrap();
        let ok: bool = common::output(&node, &id).await;
        assert!(ok);
        let st = entity_until(&node, &account, |st| {
            st.backlog == 0 && st.locked_by.is_none()
        })
        .await;
        let balance: i64 = st.state.unwrap().decode().unwrap();
        assert_eq!(balance, 100 - 10 + 1 + 2 + 3);
        node.shutdown().await;
    }
}

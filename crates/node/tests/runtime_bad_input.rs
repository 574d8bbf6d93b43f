//! Bad input: each gets a clear error or fails only its own instance; the node keeps running.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use perdure_core::activity::ActivityContext;
use perdure_core::management::{FunctionKind, ManagementApi, ManagementError, StartRequest};
use perdure_core::orchestration::OrchestrationContext;
use perdure_core::{EntityId, InstanceId, OrchestrationStatus, Payload};
use perdure_node::store::memory::MemoryStore;

fn registry() -> perdure_core::registry::Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_activity("Huge", |_ctx: ActivityContext, _: ()| async move {
        Ok::<_, String>("x".repeat(2 << 20))
    })
    .add_orchestration("CallsHuge", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_activity::<String>("Huge", ()).await.map(|s| s.len())
    })
    .add_orchestration("ReturnsHuge", |_ctx: OrchestrationContext, _: ()| async move {
        Ok::<_, String>("y".repeat(2 << 20))
    })
    .add_orchestration("TooManyActions", |ctx: OrchestrationContext, _: ()| async move {
        // 2,000 tasks with 6 kB inputs: one episode over the 10 MB transaction limit
        // (committed in stages since issue 16; it used to fail the instance).
        let big = "z".repeat(6000);
        let tasks: Vec<_> = (0..2000)
            .map(|_| ctx.call_activity::<String>("SayHello", big.clone()))
            .collect();
        perdure_core::orchestration::when_all(tasks).await;
        Ok::<_, String>(())
    })
    .add_activity("Panics", |_ctx: ActivityContext, _: ()| async move {
        if true {
            panic!("activity panicked on purpose");
        }
        Ok::<(), String>(())
    })
    .add_orchestration("CallsPanickingActivity", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_activity::<()>("Panics", ()).await
    })
    .add_orchestration("PanickingOrchestrator", |_ctx: OrchestrationContext, _: ()| async move {
        if true {
            panic!("orchestrator panicked on purpose");
        }
        Ok::<(), String>(())
    })
    .add_orchestration("CallsUnknownActivity", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_activity::<()>("NoSuchActivity", ()).await
    })
    .add_orchestration("CallsUnknownChild", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_sub_orchestration::<()>("NoSuchOrchestration", ()).await
    });
    r
}

async fn failed_with(node: &perdure_node::node::NodeHandle, id: &InstanceId) -> String {
    let st = common::wait(node, id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Failed, "{st:?}");
    st.failure.expect("failure details").to_string()
}

every_store! {
    #[tokio::test]
    async fn bad_input_is_refused_or_fails_one_instance(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;

        let err = node.start(StartRequest::new("Nope")).await.unwrap_err();
        match err {
            ManagementError::UnknownName {
                kind,
                name,
                registered,
            } => {
                assert_eq!(kind, FunctionKind::Orchestration);
                assert_eq!(name, "Nope");
                assert!(registered.contains(&"HelloSequence".to_string()));
            }
            other => panic!("{other:?}"),
        }
        let err = node
            .signal_entity(
                EntityId::new("Nope", "k").unwrap(),
                "add".into(),
                None,
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ManagementError::UnknownName {
                kind: FunctionKind::Entity,
                ..
            }
        ));

        let mut big = StartRequest::new("HelloSequence");
        big.input = Some(Payload::json(&"x".repeat(2 << 20)).unwrap());
        assert!(matches!(
            node.start(big).await,
            Err(ManagementError::PayloadTooLarge { .. })
        ));

        let id = common::start(
            &node,
            "FanOutFanIn",
            "bad-input",
            Some(Payload::json(&"abc").unwrap()),
        )
        .await;
        let f = failed_with(&node, &id).await;
        assert!(
            f.contains("u64") || f.to_lowercase().contains("input"),
            "{f}"
        );

        let id = common::start(&node, "CallsPanickingActivity", "panic-act", None).await;
        let f = failed_with(&node, &id).await;
        assert!(f.contains("activity panicked on purpose"), "{f}");

        let id = common::start(&node, "PanickingOrchestrator", "panic-orch", None).await;
        let f = failed_with(&node, &id).await;
        assert!(f.contains("orchestrator panicked on purpose"), "{f}");

        let id = common::start(&node, "CallsUnknownActivity", "unknown-act", None).await;
        let f = failed_with(&node, &id).await;
        assert!(f.contains("NoSuchActivity"), "{f}");

        let id = common::start(&node, "CallsUnknownChild", "unknown-child", None).await;
        let f = failed_with(&node, &id).await;
        assert!(f.contains("NoSuchOrchestration"), "{f}");

        // An entity operation that fails does not break the entity.
        let c = EntityId::new("Counter", "bad").unwrap();
        node.signal_entity(
            c.clone(),
            "add".into(),
            Some(Payload::json(&"not a number").unwrap()),
            None,
        )
        .await
        .unwrap();
        node.signal_entity(
            c.clone(),
            "add".into(),
            Some(Payload::json(&2).unwrap()),
            None,
        )
        .await
        .unwrap();

        let id = common::start(&node, "CallsHuge", "huge-activity", None).await;
        let f = failed_with(&node, &id).await;
        assert!(f.contains("PayloadTooLarge"), "{f}");

        let id = common::start(&node, "ReturnsHuge", "huge-output", None).await;
        let f = failed_with(&node, &id).await;
        assert!(f.contains("PayloadTooLarge"), "{f}");

        // An episode over the transaction limit commits in stages and completes.
        let id = common::start(&node, "TooManyActions", "too-many", None).await;
        let st = common::wait(&node, &id).await;
        assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
        assert!(node.metrics().staged_episodes.load(std::sync::atomic::Ordering::Relaxed) >= 1);

        // The node keeps running.
        let id = common::start(&node, "HelloSequence", "still-alive", None).await;
        let out: Vec<String> = common::output(&node, &id).await;
        assert_eq!(out.len(), 3);
        node.shutdown().await;
    }
}

/// Collects the node's log lines (a `tracing` writer) and wakes whoever waits for one.
#[derive(Clone, Default)]
struct Logs {
    text: Arc<std::sync::Mutex<String>>,
    written: Arc<tokio::sync::Notify>,
}

impl Logs {
    fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a log line contains every one of `parts`; returns that line.
    async fn wait_for(&self, parts: &[&str]) -> String {
        let wait = async {
            loop {
                let written = self.written.notified();
                if let Some(line) = self
                    .text()
                    .lines()
                    .find(|l| parts.iter().all(|p| l.contains(p)))
                {
                    return line.to_owned();
                }
                written.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("no log line with {parts:?}; logs:\n{}", self.text()))
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_str(&String::from_utf8_lossy(buf));
        self.written.notify_waiters();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_corrupt_instance_record_quarantines_that_instance_and_nothing_else() {
    use perdure_core::Timestamp;
    use perdure_core::history::{EventKind, HistoryEvent};
    use perdure_node::state::records::{InboxMessage, MessageBody, Target};
    use perdure_node::state::{instances, partition_of, queues};
    use perdure_node::store::{Store, escape_key};

    // The node logs to `logs` (this runtime has one thread: every node task logs here).
    let logs = Logs::default();
    let writer = logs.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );

    // A store holding garbage where an instance record should be, and a message for that
    // instance in its partition's inbox, as if the record had rotted on disk.
    let store = Arc::new(MemoryStore::new());
    let partitions = common::options().partitions.get();
    let bad = InstanceId::new("rotten").unwrap();
    let bad_partition = partition_of(bad.as_str(), partitions);
    let key = instances::record_key(&bad);
    let mut tx = store.begin().await.unwrap();
    tx.set(&key, &[0, 0xEE, 0xEE]).unwrap();
    let event = HistoryEvent::new(
        Timestamp::from_millis(1),
        EventKind::EventRaised {
            name: "Approval".into(),
            input: None,
        },
    );
    let msg = InboxMessage {
        target: Target::Instance(bad.clone()),
        body: MessageBody::Event {
            execution_id: None,
            event,
        },
    };
    queues::send(
        tx.as_mut(),
        &queues::MessageIds::new(7),
        bad_partition,
        Timestamp::from_millis(1),
        &msg,
    )
    .unwrap();
    tx.commit().await.unwrap();

    let node = common::start_with(store.clone(), registry()).await;
    // The partition meets the record, logs the typed error naming the key, and sets that
    // instance aside: nothing panics, and nothing of that instance is guessed.
    let line = logs
        .wait_for(&["quarantined", "corrupt record at key", &escape_key(&key)])
        .await;
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("partition={bad_partition}")),
        "{line}"
    );

    // Asked for it, the node answers with the same error, not a panic.
    match node.get_instance(bad.clone(), false).await {
        Err(ManagementError::Internal(text)) => {
            assert!(text.contains("corrupt record at key"), "{text}");
            assert!(text.contains(&escape_key(&key)), "{text}");
        }
        other => panic!("expected the corrupt record's error, got {other:?}"),
    }

    assert_eq!(node.metrics().quarantined.load(Ordering::Relaxed), 1);

    // Every partition keeps working, the rotten instance's own included.
    let mut others: Vec<u32> = (0..partitions).collect();
    for n in 0.. {
        if others.is_empty() {
            break;
        }
        let id = format!("healthy-{n}");
        let p = partition_of(&id, partitions);
        if let Some(i) = others.iter().position(|o| *o == p) {
            others.swap_remove(i);
            let id = common::start(&node, "HelloSequence", &id, None).await;
            let st = common::wait(&node, &id).await;
            assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
        }
    }
    let text = logs.text();
    assert!(!text.contains("panicked"), "nothing panicked:\n{text}");
    assert!(
        !text.contains("partition stops"),
        "no partition stopped:\n{text}"
    );
    // The rotten instance's message is still in the store: nothing was dropped.
    // (The memory store runs one transaction at a time: this one ends before the shutdown,
    // whose partitions release their leases in transactions of their own.)
    let left = {
        let mut tx = store.begin().await.unwrap();
        queues::read_inbox(tx.as_mut(), bad_partition, None, 100)
            .await
            .unwrap()
    };
    assert!(
        left.iter()
            .any(|(_, m)| m.target == Target::Instance(bad.clone())),
        "the message for the quarantined instance is kept"
    );
    node.shutdown().await;
}

/// `wait_for_completion` with a caller-given timeout past what an `Instant` holds: before
/// issue 12 `Instant::now() + timeout` panicked ("overflow when adding duration to
/// instant"); now the wait has no deadline and returns the completion.
#[tokio::test]
async fn a_wait_without_limit_does_not_panic() {
    let node = common::start_memory().await;
    let id = common::start(&node, "HelloSequence", "wait-max", None).await;
    let st = node
        .wait_for_completion(id.clone(), std::time::Duration::MAX)
        .await
        .expect("wait works")
        .expect("instance exists");
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    // An unknown instance answers at once, whatever the timeout.
    let none = node
        .wait_for_completion(
            InstanceId::new("no-such").unwrap(),
            std::time::Duration::MAX,
        )
        .await
        .expect("wait works");
    assert!(none.is_none());
}

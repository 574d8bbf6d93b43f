//! Every history event, action and record type round-trips through the codec and JSON;
//! decoding random bytes never panics.

use perdure_core::entity::{EntityAction, EntityBatchResult, OperationRequest, OperationResult};
use perdure_core::orchestration::{LogLevel, LogRecord};
use perdure_core::replay::{Episode, NonDeterminismError, Outcome, ReplayError, ReplayErrorKind};
use perdure_core::rewind::RewindPlan;
use perdure_core::{
    EntityId, EventKind, ExecutionId, FailureDetails, HistoryEvent, InstanceId,
    OrchestrationStatus, OrchestratorAction, ParentInstance, Payload, Timestamp, codec,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let bytes = codec::encode(v).unwrap();
    let back: T = codec::decode(&bytes).unwrap();
    assert_eq!(&back, v);
    let json = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, v);
}

fn kinds(text: String, n: i64, t: u64, bytes: Vec<u8>) -> Vec<EventKind> {
    let p = Some(Payload::binary(bytes));
    let id = InstanceId::new(format!("i{}", text.len())).unwrap();
    let entity = EntityId::new("e", format!("k{n}")).unwrap();
    let failure =
        FailureDetails::new(text.clone(), text.clone()).with_inner(FailureDetails::new("x", "y"));
    vec![
        EventKind::OrchestratorStarted,
        EventKind::OrchestratorCompleted,
        EventKind::ExecutionStarted {
            name: text.clone(),
            version: Some(text.clone()),
            input: p.clone(),
            execution_id: ExecutionId(text.clone()),
            parent: Some(ParentInstance {
                name: text.clone(),
                instance_id: id.clone(),
                execution_id: ExecutionId("x".into()),
                task_scheduled_id: n,
            }),
            scheduled_start: Some(Timestamp(t)),
        },
        EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Failed,
            result: p.clone(),
            failure: Some(failure.clone()),
        },
        EventKind::ExecutionTerminated {
            reason: Some(text.clone()),
        },
        EventKind::ExecutionSuspended { reason: None },
        EventKind::ExecutionResumed {
            reason: Some(text.clone()),
        },
        EventKind::ContinueAsNew { input: p.clone() },
        EventKind::TaskScheduled {
            name: text.clone(),
            version: None,
            input: p.clone(),
        },
        EventKind::TaskCompleted {
            task_scheduled_id: n,
            result: p.clone(),
        },
        EventKind::TaskFailed {
            task_scheduled_id: n,
            failure: failure.clone(),
        },
        EventKind::TimerCreated {
            fire_at: Timestamp(t),
        },
        EventKind::TimerFired {
            timer_id: n,
            fire_at: Timestamp(t),
        },
        EventKind::SubOrchestrationInstanceCreated {
            name: text.clone(),
            version: None,
            instance_id: id.clone(),
            input: p.clone(),
        },
        EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id: n,
            result: p.clone(),
        },
        EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id: n,
            failure: failure.clone(),
        },
        EventKind::EventRaised {
            name: text.clone(),
            input: p.clone(),
        },
        EventKind::EventSent {
            instance_id: id.clone(),
            name: text.clone(),
            input: p.clone(),
        },
        EventKind::EntityOperationSignaled {
            entity: entity.clone(),
            operation: text.clone(),
            input: p.clone(),
            scheduled_time: Some(Timestamp(t)),
        },
        EventKind::EntityOperationCalled {
            entity: entity.clone(),
            operation: text.clone(),
            input: None,
        },
        EventKind::EntityOperationCompleted {
            task_scheduled_id: n,
            result: p.clone(),
        },
        EventKind::EntityOperationFailed {
            task_scheduled_id: n,
            failure,
        },
        EventKind::EntityLockRequested {
            critical_section_id: text.clone(),
            lock_set: vec![entity.clone()],
        },
        EventKind::EntityLockGranted {
            critical_section_id: text.clone(),
        },
        EventKind::EntityUnlockSent {
            critical_section_id: text,
            entity,
        },
    ]
}

fn actions(text: String, n: i64, t: u64) -> Vec<OrchestratorAction> {
    let p = Payload::json(&text).ok();
    let id = InstanceId::new("target").unwrap();
    let entity = EntityId::new("e", "k").unwrap();
    vec![
        OrchestratorAction::ScheduleTask {
            id: n,
            name: text.clone(),
            version: Some(text.clone()),
            input: p.clone(),
        },
        OrchestratorAction::CreateTimer {
            id: n,
            fire_at: Timestamp(t),
        },
        OrchestratorAction::CreateSubOrchestration {
            id: n,
            name: text.clone(),
            version: None,
            instance_id: id.clone(),
            input: p.clone(),
        },
        OrchestratorAction::SendEvent {
            id: n,
            instance_id: id,
            name: text.clone(),
            input: p.clone(),
        },
        OrchestratorAction::SignalEntity {
            id: n,
            entity: entity.clone(),
            operation: text.clone(),
            input: p.clone(),
            scheduled_time: None,
        },
        OrchestratorAction::CallEntity {
            id: n,
            entity: entity.clone(),
            operation: text.clone(),
            input: p,
        },
        OrchestratorAction::LockEntities {
            id: n,
            critical_section_id: text.clone(),
            entities: vec![entity.clone()],
        },
        OrchestratorAction::UnlockEntity {
            id: n,
            critical_section_id: text,
            entity,
        },
    ]
}

proptest! {
    #[test]
    fn every_event_and_action_round_trips(text in "\\PC{0,20}", n in any::<i64>(), t in any::<u64>(), bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let history: Vec<HistoryEvent> = kinds(text.clone(), n, t, bytes)
            .into_iter()
            .map(|kind| HistoryEvent { event_id: n, timestamp: Timestamp(t), kind })
            .collect();
        for e in &history {
            roundtrip(e);
        }
        roundtrip(&history);
        let acts = actions(text.clone(), n, t);
        for a in &acts {
            roundtrip(a);
        }
        let episode = Episode {
            history: history.clone(),
            actions: acts.clone(),
            outcome: Outcome::ContinuedAsNew { input: None, carried_events: history.clone() },
            custom_status: Payload::json(&text).ok(),
            logs: vec![LogRecord { level: LogLevel::Warn, timestamp: Timestamp(t), message: text.clone() }],
        };
        roundtrip(&episode);
        roundtrip(&RewindPlan { history, actions: acts });
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec::decode::<HistoryEvent>(&bytes);
        let _ = codec::decode::<Vec<HistoryEvent>>(&bytes);
        let _ = codec::decode::<OrchestratorAction>(&bytes);
        let _ = codec::decode::<Episode>(&bytes);
        let _ = codec::decode::<EntityBatchResult>(&bytes);
        let mut versioned = vec![codec::FORMAT_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = codec::decode::<HistoryEvent>(&versioned);
        let _ = codec::decode::<Vec<HistoryEvent>>(&versioned);
        let _ = codec::decode::<Episode>(&versioned);
        let _ = serde_json::from_slice::<Vec<HistoryEvent>>(&bytes);
    }

    #[test]
    fn truncated_records_are_errors(cut in 0usize..200) {
        let history: Vec<HistoryEvent> = kinds("abc".into(), 3, 9, vec![1, 2, 3])
            .into_iter()
            .map(|kind| HistoryEvent::new(Timestamp(1), kind))
            .collect();
        let bytes = codec::encode(&history).unwrap();
        let cut = cut.min(bytes.len().saturating_sub(1));
        prop_assert!(codec::decode::<Vec<HistoryEvent>>(&bytes[..cut]).is_err());
    }
}

#[test]
fn other_records_round_trip() {
    let entity = EntityId::new("e", "k").unwrap();
    roundtrip(&OperationRequest::new("op", Payload::json(&1).ok()).with_request_id("r"));
    roundtrip(&EntityBatchResult {
        state: Payload::json(&5).ok(),
        results: vec![
            OperationResult::Completed(None),
            OperationResult::Failed(FailureDetails::new("a", "b")),
        ],
        actions: vec![
            EntityAction::SignalEntity {
                entity,
                operation: "x".into(),
                input: None,
                scheduled_time: Some(Timestamp(3)),
            },
            EntityAction::StartOrchestration {
                name: "o".into(),
                version: None,
                instance_id: InstanceId::new("c").unwrap(),
                input: None,
            },
        ],
    });
    for outcome in [
        Outcome::Running,
        Outcome::Completed { output: None },
        Outcome::Failed {
            failure: FailureDetails::new("a", "b"),
        },
        Outcome::Terminated {
            reason: Some("r".into()),
        },
    ] {
        roundtrip(&outcome);
    }
    let id = InstanceId::new("i").unwrap();
    roundtrip(&ReplayError {
        instance_id: id.clone(),
        index: 3,
        event: "TaskScheduled".into(),
        kind: ReplayErrorKind::DuplicateActionEvent,
    });
    roundtrip(&NonDeterminismError {
        code: "PERDURE-NONDETERMINISM".into(),
        instance_id: id,
        sequence: 2,
        expected: "a".into(),
        actual: "b".into(),
    });
}

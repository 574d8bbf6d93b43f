//! Generated records round-trip through the codec and JSON: failure details with inner
//! chains, payloads of any encoding and bytes, the management contract's types, retry
//! policies. Random bytes and random JSON never panic a decoder.

use std::collections::BTreeMap;
use std::time::Duration;

use perdure_core::entity::{EntityBatchResult, OperationRequest};
use perdure_core::management::{
    CleanEntityStorageResult, EntityPage, EntityQuery, EntityState, FunctionKind, IdReusePolicy,
    InstancePage, InstanceQuery, InstanceState, ManagementError, PurgeFilter, PurgeResult,
    StartRequest,
};
use perdure_core::replay::Episode;
use perdure_core::{
    Encoding, EntityId, EventKind, ExecutionId, FailureDetails, HistoryEvent, InstanceId,
    OrchestrationStatus, OrchestratorAction, Payload, RetryPolicy, Timestamp, codec,
};
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    v: &T,
) -> Result<(), TestCaseError> {
    let bytes = codec::encode(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = codec::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, v);
    let json = serde_json::to_string(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, v);
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,16}"
}

/// A failure with an inner chain of 1..=12 levels, every field generated.
fn failure() -> impl Strategy<Value = FailureDetails> {
    prop::collection::vec((text(), text(), prop::option::of(text())), 1..=12).prop_map(|levels| {
        levels
            .into_iter()
            .rev()
            .fold(None::<FailureDetails>, |inner, (t, m, d)| {
                let mut f = FailureDetails::new(t, m);
                f.details = d;
                f.inner = inner.map(Box::new);
                Some(f)
            })
            .unwrap_or_else(|| FailureDetails::new("", ""))
    })
}

/// Any encoding with any bytes (including JSON-tagged bytes that are not UTF-8 or not JSON).
fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Payload::binary),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(|data| Payload {
            encoding: Encoding::Json,
            data,
        }),
        text().prop_map(|s| Payload::json(&s).unwrap()),
        (any::<i64>(), text()).prop_map(|v| Payload::json(&v).unwrap()),
    ]
}

fn status() -> impl Strategy<Value = OrchestrationStatus> {
    prop::sample::select(OrchestrationStatus::ALL.to_vec())
}

fn instance_id() -> impl Strategy<Value = InstanceId> {
    "[a-zA-Z0-9:_-]{1,40}".prop_map(|s| InstanceId::new(s).unwrap())
}

fn entity_id() -> impl Strategy<Value = EntityId> {
    ("[a-zA-Z][a-zA-Z0-9]{0,10}", "[a-z0-9@:]{1,20}")
        .prop_map(|(n, k)| EntityId::new(n, k).unwrap())
}

fn ts() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp)
}

fn instance_state() -> impl Strategy<Value = InstanceState> {
    (
        (
            instance_id(),
            text(),
            prop::option::of(text()),
            text(),
            status(),
        ),
        (
            prop::option::of(payload()),
            prop::option::of(payload()),
            prop::option::of(payload()),
            prop::option::of(failure()),
        ),
        (ts(), ts(), prop::option::of(instance_id())),
    )
        .prop_map(
            |(
                (instance_id, name, version, exec, runtime_status),
                (input, output, custom_status, failure),
                (created_at, last_updated_at, parent_instance_id),
            )| InstanceState {
                instance_id,
                name,
                version,
                execution_id: ExecutionId(exec),
                runtime_status,
                input,
                output,
                custom_status,
                failure,
                created_at,
                last_updated_at,
                parent_instance_id,
            },
        )
}

fn entity_state() -> impl Strategy<Value = EntityState> {
    (
        entity_id(),
        prop::option::of(payload()),
        ts(),
        prop::option::of(text()),
        any::<u64>(),
    )
        .prop_map(
            |(id, state, last_modified, locked_by, backlog)| EntityState {
                id,
                state,
                last_modified,
                locked_by,
                backlog,
            },
        )
}

fn management_error() -> impl Strategy<Value = ManagementError> {
    prop_oneof![
        text().prop_map(ManagementError::NotFound),
        (instance_id(), status()).prop_map(|(instance_id, status)| {
            ManagementError::AlreadyExists {
                instance_id,
                status,
            }
        }),
        (instance_id(), status(), text()).prop_map(|(instance_id, status, operation)| {
            ManagementError::InvalidState {
                instance_id,
                status,
                operation,
            }
        }),
        (text(), prop::collection::vec(text(), 0..4)).prop_map(|(name, registered)| {
            ManagementError::UnknownName {
                kind: FunctionKind::Activity,
                name,
                registered,
            }
        }),
        text().prop_map(ManagementError::BadRequest),
        (any::<usize>(), any::<usize>())
            .prop_map(|(size, limit)| ManagementError::PayloadTooLarge { size, limit }),
        text().prop_map(ManagementError::Overloaded),
        text().prop_map(ManagementError::Unavailable),
        text().prop_map(ManagementError::Internal),
    ]
}

proptest! {
    #[test]
    fn failure_chains_round_trip(f in failure()) {
        roundtrip(&f)?;
        // Inside a history event and an episode, too.
        let event = HistoryEvent { event_id: 3, timestamp: Timestamp(9), kind: EventKind::TaskFailed {
            task_scheduled_id: 3, failure: f.clone() } };
        roundtrip(&event)?;
        roundtrip(&Episode {
            history: vec![event],
            actions: vec![],
            outcome: perdure_core::Outcome::Failed { failure: f },
            custom_status: None,
            logs: vec![],
        })?;
    }

    #[test]
    fn payloads_of_any_encoding_and_bytes_round_trip(p in payload()) {
        roundtrip(&p)?;
        roundtrip(&OperationRequest::new("op", Some(p.clone())))?;
        roundtrip(&OrchestratorAction::ScheduleTask { id: 1, name: "a".into(), version: None, input: Some(p) })?;
    }

    #[test]
    fn management_types_round_trip(
        state in instance_state(),
        entity in entity_state(),
        err in management_error(),
        statuses in prop::collection::vec(status(), 0..7),
        (page_size, fetch, cont) in (any::<u32>(), any::<bool>(), prop::option::of(text())),
        (from, to) in (prop::option::of(ts()), prop::option::of(ts())),
        (n1, n2) in (any::<u64>(), any::<u64>()),
    ) {
        roundtrip(&state)?;
        roundtrip(&InstancePage { instances: vec![state.clone(), state.clone()], continuation: cont.clone() })?;
        roundtrip(&entity)?;
        roundtrip(&EntityPage { entities: vec![entity.clone()], continuation: cont.clone() })?;
        roundtrip(&err)?;
        roundtrip(&InstanceQuery {
            created_from: from,
            created_to: to,
            statuses: statuses.clone(),
            instance_id_prefix: cont.clone(),
            name: Some(state.name.clone()),
            page_size,
            continuation: cont.clone(),
            fetch_payloads: fetch,
        })?;
        roundtrip(&EntityQuery {
            name: Some(entity.id.name().to_string()),
            key_prefix: cont.clone(),
            last_modified_from: from,
            last_modified_to: to,
            page_size,
            continuation: cont,
            fetch_state: fetch,
        })?;
        roundtrip(&PurgeFilter { created_from: from, created_to: to, statuses: statuses.clone() })?;
        roundtrip(&PurgeResult { deleted: n1, complete: fetch })?;
        roundtrip(&CleanEntityStorageResult { empty_entities_removed: n1, orphaned_locks_released: n2 })?;
        let mut start = StartRequest::new(state.name.clone());
        start.version = state.version.clone();
        start.instance_id = Some(state.instance_id.clone());
        start.input = state.input.clone();
        start.scheduled_start = from;
        start.reuse_policy = [IdReusePolicy::ReplaceFinished, IdReusePolicy::RejectExisting,
            IdReusePolicy::TerminateExisting][(n1 % 3) as usize];
        roundtrip(&start)?;
        let counts: BTreeMap<OrchestrationStatus, u64> = statuses.iter().map(|s| (*s, n2)).collect();
        roundtrip(&counts)?;
        for kind in [FunctionKind::Orchestration, FunctionKind::Activity, FunctionKind::Entity] {
            roundtrip(&kind)?;
        }
    }

    #[test]
    fn retry_policies_round_trip(
        attempts in 1u32..100,
        (first_ms, max_ms) in (0u64..1_000_000, 0u64..10_000_000),
        quarter_steps in 4u32..40,
        timeout in prop::option::of(0u64..1_000_000),
        on in prop::collection::vec(text(), 0..3),
    ) {
        let mut p = RetryPolicy::new(attempts, Duration::from_millis(first_ms))
            .with_backoff_coefficient(f64::from(quarter_steps) / 4.0)
            .with_max_retry_interval(Duration::from_millis(max_ms))
            .retry_on(on);
        if let Some(t) = timeout {
            p = p.with_retry_timeout(Duration::from_millis(t));
        }
        roundtrip(&p)?;
    }

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut versioned = vec![codec::FORMAT_VERSION];
        versioned.extend_from_slice(&bytes);
        for b in [&bytes, &versioned] {
            let _ = codec::decode::<FailureDetails>(b);
            let _ = codec::decode::<Payload>(b);
            let _ = codec::decode::<EntityId>(b);
            let _ = codec::decode::<InstanceId>(b);
            let _ = codec::decode::<InstanceState>(b);
            let _ = codec::decode::<InstancePage>(b);
            let _ = codec::decode::<EntityState>(b);
            let _ = codec::decode::<ManagementError>(b);
            let _ = codec::decode::<StartRequest>(b);
            let _ = codec::decode::<RetryPolicy>(b);
            let _ = codec::decode::<EntityBatchResult>(b);
            let _ = codec::decode::<BTreeMap<OrchestrationStatus, u64>>(b);
        }
        let _ = serde_json::from_slice::<HistoryEvent>(&bytes);
        let _ = serde_json::from_slice::<Episode>(&bytes);
        let _ = serde_json::from_slice::<InstanceState>(&bytes);
        let _ = serde_json::from_slice::<StartRequest>(&bytes);
        let _ = serde_json::from_slice::<FailureDetails>(&bytes);
        let _ = serde_json::from_slice::<Payload>(&bytes);
    }

    /// Structured garbage: valid JSON of the right shape with random values in it.
    #[test]
    fn random_json_values_never_panic(
        kind in "[A-Za-z]{1,30}",
        id in any::<i64>(),
        t in any::<i64>(),
        field in "\\PC{0,10}",
        number in any::<f64>(),
    ) {
        let candidates = [
            serde_json::json!({"event_id": id, "timestamp": t, "kind": {kind.clone(): {field.clone(): number}}}),
            serde_json::json!({"event_id": id, "timestamp": t, "kind": kind.clone()}),
            serde_json::json!({"event_id": id, "timestamp": t, "kind": {"TaskCompleted": {"task_scheduled_id": number, "result": {"encoding": kind.clone(), "data": field.clone()}}}}),
            serde_json::json!({"event_id": id, "timestamp": t, "kind": {"EntityOperationCalled": {"entity": {"name": field.clone(), "key": kind.clone()}, "operation": "", "input": null}}}),
            serde_json::json!({"error_type": field.clone(), "message": kind.clone(), "details": number, "inner": {"inner": id}}),
        ];
        for v in &candidates {
            let text = v.to_string();
            let _ = serde_json::from_str::<HistoryEvent>(&text);
            let _ = serde_json::from_str::<FailureDetails>(&text);
            let list = format!("[{text}]");
            let _ = perdure_core::testing::history_from_json(&InstanceId::new("j").unwrap(), &list);
        }
    }
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let mut text = String::new();
    for _ in 0..10_000 {
        text.push_str(r#"{"error_type":"t","message":"m","details":null,"inner":"#);
    }
    text.push_str("null");
    for _ in 0..10_000 {
        text.push('}');
    }
    assert!(serde_json::from_str::<FailureDetails>(&text).is_err());
    let nested_list = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(
        perdure_core::testing::history_from_json(&InstanceId::new("j").unwrap(), &nested_list)
            .is_err()
    );
}

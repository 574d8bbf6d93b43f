//! Conversions between the protocol's messages and Perdure's management types.

use perdure_core::management::{EntityState, InstanceState};
use perdure_core::{EntityId, FailureDetails, InstanceId, OrchestrationStatus, Payload, Timestamp};
use tonic::Status;

use super::error::bad_id;
use super::proto;

/// The protocol's status enum (RUNNING=0 ... SUSPENDED=7) for a Perdure status.
pub(crate) fn status_to_proto(s: OrchestrationStatus) -> proto::OrchestrationStatus {
    use proto::OrchestrationStatus as P;
    match s {
        OrchestrationStatus::Running => P::Running,
        OrchestrationStatus::Completed => P::Completed,
        OrchestrationStatus::ContinuedAsNew => P::ContinuedAsNew,
        OrchestrationStatus::Failed => P::Failed,
        OrchestrationStatus::Terminated => P::Terminated,
        OrchestrationStatus::Pending => P::Pending,
        OrchestrationStatus::Suspended => P::Suspended,
    }
}

/// A Perdure status for the protocol's enum value; `Ok(None)` for CANCELED, which Perdure
/// has no instance in (a filter on it matches nothing); an error for an unknown number.
pub(crate) fn status_from_proto(v: i32) -> Result<Option<OrchestrationStatus>, Status> {
    use proto::OrchestrationStatus as P;
    let p = P::try_from(v)
        .map_err(|_| Status::invalid_argument(format!("{v} is not an orchestration status")))?;
    Ok(match p {
        P::Running => Some(OrchestrationStatus::Running),
        P::Completed => Some(OrchestrationStatus::Completed),
        P::ContinuedAsNew => Some(OrchestrationStatus::ContinuedAsNew),
        P::Failed => Some(OrchestrationStatus::Failed),
        P::Canceled => None,
        P::Terminated => Some(OrchestrationStatus::Terminated),
        P::Pending => Some(OrchestrationStatus::Pending),
        P::Suspended => Some(OrchestrationStatus::Suspended),
    })
}

/// A protobuf timestamp for a Perdure one (milliseconds since the epoch).
pub(crate) fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    let ms = t.as_millis();
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9: fits.
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// A Perdure timestamp for a protobuf one; times before the epoch are refused (`field` names
/// the request field in the message).
pub(crate) fn timestamp_from_proto(
    t: &prost_types::Timestamp,
    field: &str,
) -> Result<Timestamp, Status> {
    let bad = || Status::invalid_argument(format!("{field}: {t:?} is not a time after 1970"));
    let secs = u64::try_from(t.seconds).map_err(|_| bad())?;
    let sub_ms = u64::try_from(t.nanos.clamp(0, 999_999_999) / 1_000_000).map_err(|_| bad())?;
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(sub_ms))
        .map(Timestamp::from_millis)
        .ok_or_else(bad)
}

/// An optional timestamp field.
pub(crate) fn opt_timestamp(
    t: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<Timestamp>, Status> {
    t.map(|t| timestamp_from_proto(t, field)).transpose()
}

/// A payload from the protocol's string form: JSON text, as every SDK's data converter
/// writes it; an empty string is no payload (the SDKs send `""` for `None` in places).
/// Anything else is refused rather than stored unreadable.
pub(crate) fn payload_from_proto(
    s: Option<String>,
    field: &str,
) -> Result<Option<Payload>, Status> {
    s.filter(|text| !text.is_empty())
        .map(|text| {
            Payload::from_json_text(text)
                .map_err(|e| Status::invalid_argument(format!("{field} is not JSON text: {e}")))
        })
        .transpose()
}

/// A payload in the protocol's string form (JSON text; a binary payload as lossy UTF-8).
pub(crate) fn payload_to_proto(p: &Payload) -> String {
    match p.as_json_str() {
        Some(s) => s.to_string(),
        None => String::from_utf8_lossy(&p.data).into_owned(),
    }
}

/// Failure details with their chain of inner failures (at most
/// [`perdure_core::failure::MAX_FAILURE_DEPTH`] deep, as stored).
pub(crate) fn failure_to_proto(f: &FailureDetails) -> proto::TaskFailureDetails {
    proto::TaskFailureDetails {
        error_type: f.error_type.clone(),
        error_message: f.message.clone(),
        stack_trace: f.details.clone(),
        inner_failure: f.inner.as_deref().map(|i| Box::new(failure_to_proto(i))),
        is_non_retriable: false,
        properties: Default::default(),
    }
}

/// An instance id from a request; the protocol has no other way to say "missing" than "".
pub(crate) fn instance_id(s: &str) -> Result<InstanceId, Status> {
    InstanceId::new(s).map_err(|e| bad_id("instanceId", s, e))
}

/// An entity id in the `@name@key` form.
pub(crate) fn entity_id(s: &str) -> Result<EntityId, Status> {
    EntityId::parse(s).map_err(|e| bad_id("entity instanceId (@name@key)", s, e))
}

/// The protocol's instance state.
pub(crate) fn state_to_proto(s: &InstanceState) -> proto::OrchestrationState {
    let terminal = s.runtime_status.is_terminal();
    proto::OrchestrationState {
        instance_id: s.instance_id.as_str().to_string(),
        name: s.name.clone(),
        version: s.version.clone(),
        orchestration_status: status_to_proto(s.runtime_status) as i32,
        scheduled_start_timestamp: None,
        created_timestamp: Some(timestamp_to_proto(s.created_at)),
        last_updated_timestamp: Some(timestamp_to_proto(s.last_updated_at)),
        input: s.input.as_ref().map(payload_to_proto),
        output: s.output.as_ref().map(payload_to_proto),
        custom_status: s.custom_status.as_ref().map(payload_to_proto),
        failure_details: s.failure.as_ref().map(failure_to_proto),
        execution_id: Some(s.execution_id.to_string()),
        completed_timestamp: terminal.then(|| timestamp_to_proto(s.last_updated_at)),
        parent_instance_id: s
            .parent_instance_id
            .as_ref()
            .map(|p| p.as_str().to_string()),
        tags: Default::default(),
    }
}

/// The protocol's entity metadata.
pub(crate) fn entity_to_proto(e: &EntityState, include_state: bool) -> proto::EntityMetadata {
    proto::EntityMetadata {
        instance_id: e.id.to_string(),
        last_modified_time: Some(timestamp_to_proto(e.last_modified)),
        backlog_queue_size: i32::try_from(e.backlog).unwrap_or(i32::MAX),
        locked_by: e.locked_by.clone(),
        serialized_state: if include_state {
            e.state.as_ref().map(payload_to_proto)
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_with_the_protocol_numbers() {
        for s in OrchestrationStatus::ALL {
            let p = status_to_proto(s) as i32;
            assert_eq!(status_from_proto(p).unwrap(), Some(s));
        }
        assert_eq!(status_to_proto(OrchestrationStatus::Running) as i32, 0);
        assert_eq!(status_to_proto(OrchestrationStatus::Suspended) as i32, 7);
        assert_eq!(status_from_proto(4).unwrap(), None);
        assert!(status_from_proto(99).is_err());
    }

    #[test]
    fn timestamps_round_trip_and_refuse_before_the_epoch() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(
            timestamp_from_proto(&timestamp_to_proto(t), "t").unwrap(),
            t
        );
        let before = prost_types::Timestamp {
            seconds: -1,
            nanos: 0,
        };
        assert!(timestamp_from_proto(&before, "t").is_err());
        let huge = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: i32::MAX,
        };
        assert!(timestamp_from_proto(&huge, "t").is_err());
    }

    #[test]
    fn failures_keep_their_inner_chain() {
        let f = FailureDetails::new("Outer", "o").with_inner(FailureDetails::new("Inner", "i"));
        let p = failure_to_proto(&f);
        assert_eq!(p.error_type, "Outer");
        assert_eq!(p.inner_failure.map(|i| i.error_message), Some("i".into()));
    }
}

//! The JSON the HTTP API answers, decoded into the core's management types.

use perdure_core::management::{EntityState, InstanceState, ManagementError};
use perdure_core::{
    Encoding, EntityId, ExecutionId, FailureDetails, InstanceId, OrchestrationStatus, Payload,
    iso8601,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ClientError;

fn payload(raw: Option<Box<RawValue>>) -> Option<Payload> {
    raw.map(|r| Payload {
        encoding: Encoding::Json,
        data: r.get().as_bytes().to_vec(),
    })
}

fn protocol(message: impl Into<String>) -> ClientError {
    ClientError::Protocol {
        status: 200,
        url: String::new(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FailureWire {
    error_type: String,
    error_message: String,
    #[serde(default)]
    error_details: Option<String>,
    #[serde(default)]
    inner_failure: Option<Box<FailureWire>>,
}

impl FailureWire {
    fn into_core(self) -> FailureDetails {
        FailureDetails {
            error_type: self.error_type,
            message: self.error_message,
            details: self.error_details,
            inner: self.inner_failure.map(|i| Box::new(i.into_core())),
        }
    }
}

/// The status object of the HTTP API.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusWire {
    name: String,
    instance_id: String,
    runtime_status: String,
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    output: Option<Box<RawValue>>,
    #[serde(default)]
    custom_status: Option<Box<RawValue>>,
    created_time: String,
    last_updated_time: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    execution_id: Option<String>,
    #[serde(default)]
    parent_instance_id: Option<String>,
    #[serde(default)]
    failure_details: Option<FailureWire>,
}

impl StatusWire {
    /// Into the core's instance state.
    pub(crate) fn into_state(self) -> Result<InstanceState, ClientError> {
        let runtime_status = OrchestrationStatus::parse(&self.runtime_status)
            .ok_or_else(|| protocol(format!("unknown runtimeStatus {:?}", self.runtime_status)))?;
        let failure = self.failure_details.map(FailureWire::into_core);
        // For a failed instance the API shows the failure text as output; the failure itself
        // is in `failure`.
        let output = if failure.is_some() && runtime_status == OrchestrationStatus::Failed {
            None
        } else {
            payload(self.output)
        };
        Ok(InstanceState {
            instance_id: InstanceId::new(self.instance_id)
                .map_err(|e| protocol(format!("instanceId: {e}")))?,
            name: self.name,
            version: self.version,
            execution_id: ExecutionId(self.execution_id.unwrap_or_default()),
            runtime_status,
            input: payload(self.input),
            output,
            custom_status: payload(self.custom_status),
            failure,
            created_at: iso8601::parse(&self.created_time)
                .ok_or_else(|| protocol(format!("createdTime {:?}", self.created_time)))?,
            last_updated_at: iso8601::parse(&self.last_updated_time)
                .ok_or_else(|| protocol(format!("lastUpdatedTime {:?}", self.last_updated_time)))?,
            parent_instance_id: self
                .parent_instance_id
                .and_then(|p| InstanceId::new(p).ok()),
        })
    }
}

#[derive(Deserialize)]
struct EntityIdWire {
    name: String,
    key: String,
}

/// One entity of the list route.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntityWire {
    entity_id: EntityIdWire,
    last_operation_time: String,
    #[serde(default)]
    state: Option<Box<RawValue>>,
    #[serde(default)]
    locked_by: Option<String>,
    #[serde(default)]
    backlog_queue_size: u64,
}

impl EntityWire {
    /// Into the core's entity state.
    pub(crate) fn into_state(self) -> Result<EntityState, ClientError> {
        Ok(EntityState {
            id: EntityId::new(self.entity_id.name, self.entity_id.key)
                .map_err(|e| protocol(format!("entityId: {e}")))?,
            state: payload(self.state),
            last_modified: iso8601::parse(&self.last_operation_time).ok_or_else(|| {
                protocol(format!("lastOperationTime {:?}", self.last_operation_time))
            })?,
            locked_by: self.locked_by,
            backlog: self.backlog_queue_size,
        })
    }
}

/// The answer of the purge routes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PurgeWire {
    pub(crate) instances_deleted: u64,
    #[serde(default = "yes")]
    pub(crate) complete: bool,
}

fn yes() -> bool {
    true
}

/// The management payload's id.
#[derive(Deserialize)]
pub(crate) struct IdWire {
    pub(crate) id: String,
}

/// An error body.
#[derive(Deserialize)]
pub(crate) struct ErrorWire {
    #[serde(rename = "Message", default)]
    pub(crate) message: Option<String>,
    #[serde(rename = "perdureError", default)]
    pub(crate) typed: Option<ManagementError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_object_decodes_with_payloads_as_sent_and_failures() {
        let w: StatusWire = serde_json::from_str(
            r#"{"name":"Hello","instanceId":"a b","runtimeStatus":"Failed",
                "input":"{\"n\": 1}","customStatus":null,
                "output":"Orchestrator function 'Hello' failed: Boom: no",
                "createdTime":"2024-01-01T00:00:00.123Z","lastUpdatedTime":"2024-01-01T00:00:01Z",
                "failureDetails":{"errorType":"Boom","errorMessage":"no",
                    "innerFailure":{"errorType":"Io","errorMessage":"disk"}},
                "unknownField": 1}"#,
        )
        .unwrap();
        let s = w.into_state().unwrap();
        assert_eq!(s.instance_id.as_str(), "a b");
        assert_eq!(s.runtime_status, OrchestrationStatus::Failed);
        // The input is kept exactly as sent (a JSON string holding JSON).
        assert_eq!(s.input.unwrap().as_json_str(), Some(r#""{\"n\": 1}""#));
        assert!(s.output.is_none(), "the failure text is not an output");
        let f = s.failure.unwrap();
        assert_eq!((f.error_type.as_str(), f.message.as_str()), ("Boom", "no"));
        assert_eq!(f.inner.unwrap().error_type, "Io");
        assert_eq!(s.created_at.as_millis() % 1000, 123);
        assert!(s.custom_status.is_none());
    }

    #[test]
    fn bad_status_and_dates_are_protocol_errors() {
        let w: StatusWire = serde_json::from_str(
            r#"{"name":"x","instanceId":"i","runtimeStatus":"running?","createdTime":"x","lastUpdatedTime":"x"}"#,
        )
        .unwrap();
        assert!(matches!(w.into_state(), Err(ClientError::Protocol { .. })));
    }

    #[test]
    fn error_body_carries_the_typed_error() {
        let e: ErrorWire = serde_json::from_str(
            r#"{"Message":"m","ExceptionMessage":"m","ExceptionType":"NotFound","perdureError":{"NotFound":"x"}}"#,
        )
        .unwrap();
        assert_eq!(e.typed, Some(ManagementError::NotFound("x".into())));
    }
}

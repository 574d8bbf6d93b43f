//! JSON shapes of the Durable Functions HTTP API: the status object, the management payload,
//! history events and entity entries.

use axum::http::{HeaderMap, HeaderValue};
use perdure_core::management::{EntityState, InstanceState};
use perdure_core::{EventKind, FailureDetails, HistoryEvent, Payload, iso8601};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{AppState, BASE_PATH};

/// A payload written as the JSON it holds (as sent by the client); binary payloads are shown
/// as a short description string.
pub(crate) struct PayloadJson<'a>(pub(crate) &'a Payload);

impl Serialize for PayloadJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            return s.serialize_none();
        }
        match self
            .0
            .as_json_str()
            .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
        {
            Some(raw) => raw.serialize(s),
            None => s.serialize_str(&format!("<binary payload of {} bytes>", self.0.len())),
        }
    }
}

/// A payload as a `serde_json::Value` (for history events).
fn payload_value(p: &Payload) -> Value {
    p.as_json_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| Value::String(format!("<binary payload of {} bytes>", p.len())))
}

/// The output field: the output payload, or for a failed instance the failure text (as
/// Durable Functions shows it).
enum OutputJson<'a> {
    Payload(PayloadJson<'a>),
    Text(String),
}

impl Serialize for OutputJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Payload(p) => p.serialize(s),
            Self::Text(t) => s.serialize_str(t),
        }
    }
}

/// Failure details in the JSON form Perdure's client reads back.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailureJson<'a> {
    error_type: &'a str,
    error_message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_details: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inner_failure: Option<Box<FailureJson<'a>>>,
}

impl<'a> FailureJson<'a> {
    fn new(f: &'a FailureDetails) -> Self {
        Self {
            error_type: &f.error_type,
            error_message: &f.message,
            error_details: f.details.as_deref(),
            inner_failure: f.inner.as_deref().map(|i| Box::new(Self::new(i))),
        }
    }
}

/// The status object of one instance.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusJson<'a> {
    name: &'a str,
    instance_id: &'a str,
    runtime_status: &'static str,
    input: Option<PayloadJson<'a>>,
    custom_status: Option<PayloadJson<'a>>,
    output: Option<OutputJson<'a>>,
    created_time: String,
    last_updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_events: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    execution_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_instance_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_details: Option<FailureJson<'a>>,
}

impl<'a> StatusJson<'a> {
    /// Renders a state; `show_input` false writes `input: null`.
    pub(crate) fn new(st: &'a InstanceState, show_input: bool) -> Self {
        let output = match (&st.output, &st.failure) {
            (Some(p), _) => Some(OutputJson::Payload(PayloadJson(p))),
            (None, Some(f)) => Some(OutputJson::Text(format!(
                "Orchestrator function '{}' failed: {}",
                st.name, f
            ))),
            (None, None) => None,
        };
        Self {
            name: &st.name,
            instance_id: st.instance_id.as_str(),
            runtime_status: st.runtime_status.as_str(),
            input: if show_input {
                st.input.as_ref().map(PayloadJson)
            } else {
                None
            },
            custom_status: st.custom_status.as_ref().map(PayloadJson),
            output,
            created_time: iso8601::format(st.created_at),
            last_updated_time: iso8601::format(st.last_updated_at),
            history_events: None,
            version: st.version.as_deref(),
            execution_id: &st.execution_id.0,
            parent_instance_id: st.parent_instance_id.as_ref().map(|i| i.as_str()),
            failure_details: st.failure.as_ref().map(FailureJson::new),
        }
    }

    /// Adds the history.
    pub(crate) fn with_history(mut self, events: Vec<Value>) -> Self {
        self.history_events = Some(events);
        self
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986 unreserved).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The base URL of the Durable Functions routes, for management URIs.
pub(crate) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    base_url_of(state, headers.get(axum::http::header::HOST))
}

/// The base URL of the Durable Functions routes for a request with this `Host` header.
pub(crate) fn base_url_of(state: &AppState, host: Option<&HeaderValue>) -> String {
    if let Some(url) = &state.opts.public_url {
        return format!("{}{BASE_PATH}", url.trim_end_matches('/'));
    }
    let host = host
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let scheme = if state.opts.tls { "https" } else { "http" };
    format!("{scheme}://{host}{BASE_PATH}")
}

/// The status query URI of an instance under a base URL.
pub(crate) fn instance_uri(base: &str, id: &str) -> String {
    let id = encode(id);
    let mut uri = String::with_capacity(base.len() + "/instances/".len() + id.len());
    uri.push_str(base);
    uri.push_str("/instances/");
    uri.push_str(&id);
    uri
}

/// Writes `s` as the inside of a JSON string (escaped as `serde_json` escapes it).
fn push_json_str_inner(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    // Cannot fail: writing a string into a Vec.
    if serde_json::to_writer(&mut *out, s).is_ok() {
        // Drop the quotes serde_json wrote around it.
        out.remove(start);
        out.pop();
    }
}

/// The management payload: the URIs to drive one instance, as JSON
/// (`{"id":..,"statusQueryGetUri":..,"sendEventPostUri":..,...}`, the field names and order
/// of Durable Functions), written straight into one buffer; and the status query URI, for
/// the `Location` header.
///
/// With `code` (the key a request presented as its `code` query parameter), every URI
/// carries it on as `code=`, as Durable Functions' URIs carry the function key.
pub(crate) fn management_payload(base: &str, id: &str, code: Option<&str>) -> (Vec<u8>, String) {
    /// (field, suffix after the instance URI), in Durable Functions' order.
    const URIS: [(&str, &str); 8] = [
        ("statusQueryGetUri", ""),
        ("sendEventPostUri", "/raiseEvent/{eventName}"),
        ("terminatePostUri", "/terminate?reason={text}"),
        ("rewindPostUri", "/rewind?reason={text}"),
        ("purgeHistoryDeleteUri", ""),
        ("restartPostUri", "/restart"),
        ("suspendPostUri", "/suspend?reason={text}"),
        ("resumePostUri", "/resume?reason={text}"),
    ];
    let inst = instance_uri(base, id);
    let mut escaped = Vec::with_capacity(inst.len() + 8);
    push_json_str_inner(&mut escaped, &inst);
    // Percent-encoded: nothing in it needs JSON escaping.
    let code = code.map(encode);
    let mut out = Vec::with_capacity(16 + id.len() + 8 * (escaped.len() + 48));
    out.extend_from_slice(b"{\"id\":\"");
    push_json_str_inner(&mut out, id);
    out.push(b'"');
    for (field, suffix) in URIS {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(&escaped);
        out.extend_from_slice(suffix.as_bytes());
        if let Some(c) = &code {
            out.extend_from_slice(if suffix.contains('?') {
                b"&code="
            } else {
                b"?code="
            });
            out.extend_from_slice(c.as_bytes());
        }
        out.push(b'"');
    }
    out.push(b'}');
    let status_uri = match &code {
        Some(c) => format!("{inst}?code={c}"),
        None => inst,
    };
    (out, status_uri)
}

/// One history event in the Durable Functions shape (`EventType`, `Timestamp`, ...).
/// Results are shown only with `show_output`; inputs only with `show_input`.
pub(crate) fn history_event(ev: &HistoryEvent, show_input: bool, show_output: bool) -> Value {
    let mut m = Map::new();
    m.insert("EventType".into(), json!(ev.name()));
    m.insert("EventId".into(), json!(ev.event_id));
    m.insert("Timestamp".into(), json!(iso8601::format(ev.timestamp)));
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    let input = |p: &Option<Payload>| match p {
        Some(p) if show_input => payload_value(p),
        _ => Value::Null,
    };
    let result = |p: &Option<Payload>| match p {
        Some(p) if show_output => payload_value(p),
        _ => Value::Null,
    };
    let failure =
        |f: &FailureDetails| serde_json::to_value(FailureJson::new(f)).unwrap_or(Value::Null);
    match &ev.kind {
        EventKind::OrchestratorStarted | EventKind::OrchestratorCompleted => {}
        EventKind::ExecutionStarted {
            name,
            version,
            input: i,
            execution_id,
            parent,
            scheduled_start,
        } => {
            put("FunctionName", json!(name));
            put("Version", json!(version));
            put("Input", input(i));
            put("ExecutionId", json!(execution_id.0));
            if let Some(p) = parent {
                put("ParentInstanceId", json!(p.instance_id.as_str()));
            }
            if let Some(t) = scheduled_start {
                put("ScheduledStartTime", json!(iso8601::format(*t)));
            }
        }
        EventKind::ExecutionCompleted {
            status,
            result: r,
            failure: f,
        } => {
            put("OrchestrationStatus", json!(status.as_str()));
            put("Result", result(r));
            if let Some(f) = f {
                put("FailureDetails", failure(f));
            }
        }
        EventKind::ExecutionTerminated { reason }
        | EventKind::ExecutionSuspended { reason }
        | EventKind::ExecutionResumed { reason } => put("Reason", json!(reason)),
        EventKind::ContinueAsNew { input: i } => put("Input", input(i)),
        EventKind::TaskScheduled {
            name,
            version,
            input: i,
        } => {
            put("FunctionName", json!(name));
            put("Version", json!(version));
            put("Input", input(i));
        }
        EventKind::TaskCompleted {
            task_scheduled_id,
            result: r,
        }
        | EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id,
            result: r,
        }
        | EventKind::EntityOperationCompleted {
            task_scheduled_id,
            result: r,
        } => {
            put("TaskScheduledId", json!(task_scheduled_id));
            put("Result", result(r));
        }
        EventKind::TaskFailed {
            task_scheduled_id,
            failure: f,
        }
        | EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id,
            failure: f,
        }
        | EventKind::EntityOperationFailed {
            task_scheduled_id,
            failure: f,
        } => {
            put("TaskScheduledId", json!(task_scheduled_id));
            put("Reason", json!(f.message));
            put("FailureDetails", failure(f));
        }
        EventKind::TimerCreated { fire_at } => put("FireAt", json!(iso8601::format(*fire_at))),
        EventKind::TimerFired { timer_id, fire_at } => {
            put("TimerId", json!(timer_id));
            put("FireAt", json!(iso8601::format(*fire_at)));
        }
        EventKind::SubOrchestrationInstanceCreated {
            name,
            version,
            instance_id,
            input: i,
        } => {
            put("FunctionName", json!(name));
            put("Version", json!(version));
            put("InstanceId", json!(instance_id.as_str()));
            put("Input", input(i));
        }
        EventKind::EventRaised { name, input: i } => {
            put("Name", json!(name));
            put("Input", input(i));
        }
        EventKind::EventSent {
            instance_id,
            name,
            input: i,
        } => {
            put("InstanceId", json!(instance_id.as_str()));
            put("Name", json!(name));
            put("Input", input(i));
        }
        EventKind::EntityOperationSignaled {
            entity,
            operation,
            input: i,
            scheduled_time,
        } => {
            put("EntityId", json!(entity.to_string()));
            put("Operation", json!(operation));
            put("Input", input(i));
            if let Some(t) = scheduled_time {
                put("ScheduledTime", json!(iso8601::format(*t)));
            }
        }
        EventKind::EntityOperationCalled {
            entity,
            operation,
            input: i,
        } => {
            put("EntityId", json!(entity.to_string()));
            put("Operation", json!(operation));
            put("Input", input(i));
        }
        EventKind::EntityLockRequested {
            critical_section_id,
            lock_set,
        } => {
            put("CriticalSectionId", json!(critical_section_id));
            put(
                "LockSet",
                json!(lock_set.iter().map(|e| e.to_string()).collect::<Vec<_>>()),
            );
        }
        EventKind::EntityLockGranted {
            critical_section_id,
        } => put("CriticalSectionId", json!(critical_section_id)),
        EventKind::EntityUnlockSent {
            critical_section_id,
            entity,
        } => {
            put("CriticalSectionId", json!(critical_section_id));
            put("EntityId", json!(entity.to_string()));
        }
    }
    Value::Object(m)
}

/// The entity id object.
#[derive(Serialize)]
pub(crate) struct EntityIdJson<'a> {
    name: &'a str,
    key: &'a str,
}

/// One entity in a list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntityJson<'a> {
    entity_id: EntityIdJson<'a>,
    last_operation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<PayloadJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_by: Option<&'a str>,
    backlog_queue_size: u64,
}

impl<'a> EntityJson<'a> {
    /// Renders an entity entry.
    pub(crate) fn new(e: &'a EntityState) -> Self {
        Self {
            entity_id: EntityIdJson {
                name: e.id.name(),
                key: e.id.key(),
            },
            last_operation_time: iso8601::format(e.last_modified),
            state: e.state.as_ref().map(PayloadJson),
            locked_by: e.locked_by.as_deref(),
            backlog_queue_size: e.backlog,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload as a serde struct, as it was rendered before `management_payload`.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ManagementPayload {
        id: String,
        status_query_get_uri: String,
        send_event_post_uri: String,
        terminate_post_uri: String,
        rewind_post_uri: String,
        purge_history_delete_uri: String,
        restart_post_uri: String,
        suspend_post_uri: String,
        resume_post_uri: String,
    }

    impl ManagementPayload {
        fn new(base: &str, id: &str) -> Self {
            let inst = format!("{base}/instances/{}", encode(id));
            Self {
                id: id.to_string(),
                status_query_get_uri: inst.clone(),
                send_event_post_uri: format!("{inst}/raiseEvent/{{eventName}}"),
                terminate_post_uri: format!("{inst}/terminate?reason={{text}}"),
                rewind_post_uri: format!("{inst}/rewind?reason={{text}}"),
                purge_history_delete_uri: inst.clone(),
                restart_post_uri: format!("{inst}/restart"),
                suspend_post_uri: format!("{inst}/suspend?reason={{text}}"),
                resume_post_uri: format!("{inst}/resume?reason={{text}}"),
            }
        }
    }

    #[test]
    fn management_payload_is_the_serialized_struct() {
        for (base, id) in [
            (
                "http://127.0.0.1:8080/runtime/webhooks/durabletask",
                "abc-1",
            ),
            (
                "http://h/runtime/webhooks/durabletask",
                "my id \"ü\" \\ \u{7}\t",
            ),
            ("http://we\"ird\\host/x", "a"),
            ("", ""),
        ] {
            let (body, uri) = management_payload(base, id, None);
            let expected = serde_json::to_vec(&ManagementPayload::new(base, id)).unwrap();
            assert_eq!(
                String::from_utf8(body).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            assert_eq!(uri, ManagementPayload::new(base, id).status_query_get_uri);
        }
    }

    #[test]
    fn a_code_is_carried_by_every_management_uri() {
        let (body, uri) = management_payload("http://h/x", "i", Some("pd/k+1"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(uri, "http://h/x/instances/i?code=pd%2Fk%2B1");
        assert_eq!(v["statusQueryGetUri"], uri.as_str());
        assert_eq!(
            v["terminatePostUri"],
            "http://h/x/instances/i/terminate?reason={text}&code=pd%2Fk%2B1"
        );
        assert_eq!(
            v["sendEventPostUri"],
            "http://h/x/instances/i/raiseEvent/{eventName}?code=pd%2Fk%2B1"
        );
    }
}

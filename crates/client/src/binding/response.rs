//! The HTTP answers of the binding: the check-status `202`, what a finished instance answers,
//! and client errors as responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use perdure_core::management::{InstanceState, ManagementError};
use perdure_core::{FailureDetails, OrchestrationStatus, Payload, iso8601};
use serde::Serialize;
use serde_json::value::RawValue;

use super::RequestHead;
use crate::{ClientError, HttpResponseParts};

/// The `content-type` of every JSON answer (the node's).
const JSON_TYPE: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

/// A JSON response.
fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, JSON_TYPE)], body).into_response()
}

/// The management payload's fields in Durable Functions' order (the node's start answer's).
const PAYLOAD_ORDER: [&str; 9] = [
    "id",
    "statusQueryGetUri",
    "sendEventPostUri",
    "terminatePostUri",
    "rewindPostUri",
    "purgeHistoryDeleteUri",
    "restartPostUri",
    "suspendPostUri",
    "resumePostUri",
];

/// A JSON object written with the payload's fields first, in their order, then any others
/// (a `serde_json::Value` keeps its keys sorted).
struct Ordered<'a>(&'a serde_json::Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(obj) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(obj.len()))?;
        for k in PAYLOAD_ORDER {
            if let Some(v) = obj.get(k) {
                map.serialize_entry(k, v)?;
            }
        }
        for (k, v) in obj {
            if !PAYLOAD_ORDER.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// The check-status answer: its status (202), `Location`, `Retry-After` and the management
/// payload as JSON.
impl IntoResponse for HttpResponseParts {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::ACCEPTED);
        // Cannot fail: a `serde_json::Value` always serializes.
        let body = serde_json::to_vec(&Ordered(&self.body)).unwrap_or_default();
        let mut resp = json(status, body);
        // A location that is not a header value (a public origin with spaces, say) is left
        // out rather than failing the answer; the body still carries it.
        if let Ok(loc) = HeaderValue::from_str(&self.location) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(self.retry_after_secs),
        );
        resp
    }
}

/// Whether the status object shows the input: the incoming request's `showInput` query
/// parameter (name in any case, `false`/`0` hide it), `true` by default, as the status route.
pub(super) fn show_input<R: RequestHead + ?Sized>(req: &R) -> bool {
    let Some(query) = req.uri().and_then(|u| u.query()) else {
        return true;
    };
    !query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k.eq_ignore_ascii_case("showInput") && (v.eq_ignore_ascii_case("false") || v == "0")
    })
}

/// A payload as the JSON it holds; a binary payload as a short description string.
fn raw(p: &Payload) -> Box<RawValue> {
    p.as_json_str()
        .and_then(|t| RawValue::from_string(t.to_string()).ok())
        .or_else(|| {
            serde_json::value::to_raw_value(&format!("<binary payload of {} bytes>", p.len())).ok()
        })
        .unwrap_or_else(|| RawValue::NULL.to_owned())
}

/// A payload field: `null` when absent or empty.
fn field(p: Option<&Payload>) -> Option<Box<RawValue>> {
    p.filter(|p| !p.is_empty()).map(raw)
}

/// Failure details as the status route shows them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureJson<'a> {
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

/// The status object, as `GET instances/{id}` answers it (without history).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusJson<'a> {
    name: &'a str,
    instance_id: &'a str,
    runtime_status: &'static str,
    input: Option<Box<RawValue>>,
    custom_status: Option<Box<RawValue>>,
    output: Option<Box<RawValue>>,
    created_time: String,
    last_updated_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    execution_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_instance_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_details: Option<FailureJson<'a>>,
}

impl<'a> StatusJson<'a> {
    fn new(st: &'a InstanceState, show_input: bool) -> Self {
        // A failed instance shows its failure text as output, as Durable Functions does.
        let output = match (&st.output, &st.failure) {
            (Some(p), _) => field(Some(p)),
            (None, Some(f)) => serde_json::value::to_raw_value(&format!(
                "Orchestrator function '{}' failed: {f}",
                st.name
            ))
            .ok(),
            (None, None) => None,
        };
        Self {
            name: &st.name,
            instance_id: st.instance_id.as_str(),
            runtime_status: st.runtime_status.as_str(),
            input: if show_input {
                field(st.input.as_ref())
            } else {
                None
            },
            custom_status: field(st.custom_status.as_ref()),
            output,
            created_time: iso8601::format(st.created_at),
            last_updated_time: iso8601::format(st.last_updated_at),
            version: st.version.as_deref(),
            execution_id: &st.execution_id.0,
            parent_instance_id: st.parent_instance_id.as_ref().map(|i| i.as_str()),
            failure_details: st.failure.as_ref().map(FailureJson::new),
        }
    }
}

/// What a finished instance answers (Durable Functions' `HttpApiHandler`
/// `WaitForCompletionOrCreateCheckStatusResponseAsync`): Completed is `200` with the output;
/// Failed and Terminated are the status object with the code the status route gives them,
/// `200` (`500` for Failed when asked).
pub(super) fn finished(st: &InstanceState, show_input: bool, fail_500: bool) -> Response {
    if st.runtime_status == OrchestrationStatus::Completed {
        let out = field(st.output.as_ref()).unwrap_or_else(|| RawValue::NULL.to_owned());
        return json(StatusCode::OK, out.get().as_bytes().to_vec());
    }
    let code = match st.runtime_status {
        OrchestrationStatus::Failed if fail_500 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    };
    match serde_json::to_vec(&StatusJson::new(st, show_input)) {
        Ok(body) => json(code, body),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            &format!("could not encode the status: {e}"),
            None,
        ),
    }
}

/// An error body shaped like Durable Functions' (and the node's).
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "ExceptionMessage")]
    exception_message: &'a str,
    #[serde(rename = "ExceptionType")]
    exception_type: &'a str,
    #[serde(rename = "perdureError", skip_serializing_if = "Option::is_none")]
    typed: Option<&'a ManagementError>,
}

fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    typed: Option<&ManagementError>,
) -> Response {
    let body = ErrorBody {
        message,
        exception_message: message,
        exception_type: kind,
        typed,
    };
    let mut resp = json(status, serde_json::to_vec(&body).unwrap_or_default());
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A client error as the starter's answer. A node's management error keeps the node's status
/// code (unknown instance or name `404`, live id `409`, finished instance `410`, malformed
/// `400`, too large `413`, overloaded `429` and unavailable `503` with `Retry-After: 1`,
/// internal `500`) and its typed body. A node that could not be reached or answered
/// something unexpected, or refused the service's API key, is `502`, a wait that ran out `504`, a value that did not
/// (de)serialize or a misconfigured client `500`.
impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ClientError::Management(m) => match m {
                ManagementError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
                ManagementError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
                ManagementError::InvalidState { .. } => (StatusCode::GONE, "InvalidState"),
                ManagementError::UnknownName { .. } => (StatusCode::NOT_FOUND, "UnknownName"),
                ManagementError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
                ManagementError::PayloadTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge")
                }
                ManagementError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
                ManagementError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
                ManagementError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal"),
            },
            ClientError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "Unreachable"),
            ClientError::Protocol { .. } => (StatusCode::BAD_GATEWAY, "Protocol"),
            // The service's own key was refused: its caller is not at fault.
            ClientError::Denied { .. } => (StatusCode::BAD_GATEWAY, "Denied"),
            ClientError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            ClientError::Payload(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Payload"),
            ClientError::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Config"),
        };
        let typed = match &self {
            ClientError::Management(m) => Some(m),
            _ => None,
        };
        error_response(status, kind, &self.to_string(), typed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    #[test]
    fn show_input_reads_the_query_like_the_status_route() {
        let req = |uri: &str| Request::get(uri).body(()).unwrap();
        assert!(show_input(&req("/api/x")));
        assert!(show_input(&req("/api/x?wait=3&showInput=true")));
        assert!(!show_input(&req("/api/x?SHOWINPUT=False")));
        assert!(!show_input(&req("/api/x?a=1&showInput=0")));
        assert!(show_input(&axum::http::HeaderMap::new()));
    }

    #[test]
    fn the_payload_is_written_in_durable_functions_order() {
        let client = crate::DurableClient::http(["http://n:1"]).unwrap();
        let id = crate::InstanceId::new("a").unwrap();
        let mut parts = client.create_check_status_response("http://n:1", &id);
        parts.body["extra"] = serde_json::json!(1);
        let text = serde_json::to_string(&Ordered(&parts.body)).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        let mut last = 0;
        for k in PAYLOAD_ORDER.iter().copied().chain(["extra"]) {
            assert!(at(k) >= last, "{k} out of order in {text}");
            last = at(k);
        }
    }

    #[test]
    fn management_errors_keep_the_node_status_codes() {
        let e = ClientError::Management(ManagementError::Unavailable("store".into()));
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let r = ClientError::Management(ManagementError::NotFound("x".into())).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ClientError::Config("bad".into()).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

//! Orchestration instance routes: start, status, list, purge, events and lifecycle.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use perdure_core::management::{
    FunctionKind, IdReusePolicy, InstanceQuery, ManagementError, PurgeFilter, StartRequest,
};
use perdure_core::{InstanceId, OrchestrationStatus};
use serde::Serialize;

use super::access::QueryCode;
use super::error::ApiError;
use super::extract::{Host, P, Params, body_payload, instance_id, instance_id_owned};
use super::render::{
    StatusJson, base_url, base_url_of, history_event, instance_uri, management_payload,
};
use super::{AppState, St};
use crate::access::{CallerRole, may_replace};

/// Header carrying the paging continuation token, both ways.
pub(crate) const CONTINUATION: &str = "x-ms-continuation-token";

/// Largest page a list request may ask for with `top` (larger values are capped; the
/// continuation token carries on).
pub(crate) const MAX_PAGE: u32 = 1000;

/// Most batches one bulk purge request runs before answering.
const MAX_PURGE_BATCHES: usize = 1_000_000;

type ApiResult = Result<Response, ApiError>;

/// The content type of every JSON answer.
const JSON_TYPE: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");

/// A JSON response from encoded bytes.
pub(crate) fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, JSON_TYPE)], bytes).into_response()
}

/// A JSON response.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => ApiError::plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            format!("could not encode the response: {e}"),
        )
        .into_response(),
    }
}

/// An empty 202 Accepted (what Durable Functions answers to event and lifecycle requests).
fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// 202 + `Location` + `Retry-After` + the management payload.
fn accepted_with_payload(state: &AppState, host: &Host, id: &InstanceId) -> Response {
    let base = base_url_of(state, host.0.as_ref());
    let code = host.1.as_ref().map(|c| c.0.as_str());
    let (body, status_uri) = management_payload(&base, id.as_str(), code);
    let mut resp = json_bytes(StatusCode::ACCEPTED, body);
    if let Ok(loc) = HeaderValue::from_maybe_shared(Bytes::from(status_uri)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    resp
}

/// `POST orchestrators/{name}`.
pub(crate) async fn start(
    st: St,
    P(name): P<String>,
    params: Params,
    host: Host,
    caller: Option<Extension<CallerRole>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    start_inner(st, name, None, params, host, caller, &headers, body).await
}

/// `POST orchestrators/{name}/{id}`.
pub(crate) async fn start_with_id(
    st: St,
    P((name, id)): P<(String, String)>,
    params: Params,
    host: Host,
    caller: Option<Extension<CallerRole>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    start_inner(st, name, Some(id), params, host, caller, &headers, body).await
}

#[allow(clippy::too_many_arguments)]
async fn start_inner(
    axum::extract::State(state): St,
    name: String,
    id: Option<String>,
    params: Params,
    host: Host,
    caller: Option<Extension<CallerRole>>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let instance_id = id.map(instance_id_owned).transpose()?;
    let input = body_payload(body)?;
    // Unknown names are the runtime's to refuse (404 with what is registered).
    let mut req = StartRequest::new(name);
    req.instance_id = instance_id;
    req.input = input;
    req.version = params.get("version").map(str::to_string);
    req.scheduled_start = params.time("scheduledStartTime")?;
    // The trace the orchestration joins: this request's span when spans are exported, else
    // the caller's `traceparent`.
    req.trace_parent = crate::telemetry::current()
        .or_else(|| super::trace::incoming(headers))
        .map(|t| t.to_string());
    let may_replace = may_replace(caller.map(|Extension(c)| c));
    if !may_replace {
        req.reuse_policy = IdReusePolicy::RejectExisting;
    }
    let id = match state.api.start(req).await {
        Err(ManagementError::AlreadyExists {
            instance_id,
            status,
        }) if !may_replace && status.is_terminal() => {
            return Err(replace_refused(&instance_id));
        }
        other => other?,
    };
    Ok(accepted_with_payload(&state, &host, &id))
}

/// 403 for a start or restart that would replace an existing instance's history with a key
/// below the admin's.
fn replace_refused(id: &InstanceId) -> ApiError {
    ApiError::plain(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "instance {id} exists: replacing it drops its history, as a purge does, which needs \
             the admin role (purge it first, or use another id)"
        ),
    )
}

/// `GET instances/{id}`: 200 when finished, 202 (with `Location`) while not, 404 unknown.
/// Perdure addition: `waitForCompletion=30s` waits server-side (up to the configured maximum)
/// for the instance to finish before answering.
pub(crate) async fn status(
    axum::extract::State(state): St,
    P(raw): P<String>,
    params: Params,
    headers: HeaderMap,
    query_code: Option<axum::Extension<QueryCode>>,
) -> ApiResult {
    let id = instance_id(&raw)?;
    let show_input = params.bool("showInput", true)?;
    let show_history = params.bool("showHistory", false)?;
    let show_history_output = params.bool("showHistoryOutput", false)?;
    let fail_500 = params.bool("returnInternalServerErrorOnFailure", false)?;
    // The wait answers with the state it saw last (with payloads): no second read, and in a
    // cluster no second forwarded request, unless the node's stop cut the wait short.
    let mut waited_state = None;
    if let Some(wait) = params.duration("waitForCompletion")? {
        let wait = wait.min(state.opts.max_wait);
        let waited = state.api.wait_for_completion(id.clone(), wait);
        match state.opts.shutting_down.clone() {
            Some(mut rx) => {
                tokio::select! {
                    r = waited => waited_state = Some(r?),
                    _ = rx.wait_for(|down| *down) => {}
                }
            }
            None => waited_state = Some(waited.await?),
        }
        if matches!(waited_state, Some(None)) {
            return Err(ApiError::not_found(id.as_str()));
        }
    }
    let inst = match waited_state.flatten() {
        Some(inst) => inst,
        None => match state.api.get_instance(id.clone(), true).await? {
            Some(inst) => inst,
            None => return Err(ApiError::not_found(id.as_str())),
        },
    };
    let mut body = StatusJson::new(&inst, show_input);
    if show_history {
        let events = state.api.get_history(id.clone()).await?.unwrap_or_default();
        body = body.with_history(
            events
                .iter()
                .map(|e| history_event(e, show_input, show_history_output))
                .collect(),
        );
    }
    let code = match inst.runtime_status {
        OrchestrationStatus::Failed if fail_500 => StatusCode::INTERNAL_SERVER_ERROR,
        s if s.is_terminal() => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    let mut resp = json(code, &body);
    if code == StatusCode::ACCEPTED {
        let mut uri = instance_uri(&base_url(&state, &headers), id.as_str());
        if let Some(axum::Extension(QueryCode(c))) = &query_code {
            uri.push_str("?code=");
            uri.push_str(&super::render::encode(c));
        }
        if let Ok(loc) = HeaderValue::from_maybe_shared(Bytes::from(uri)) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    Ok(resp)
}

/// `GET instances/{id}/history` (Perdure addition): the history events in Perdure's native
/// JSON form, for tools that replay or inspect them.
pub(crate) async fn history(axum::extract::State(state): St, P(raw): P<String>) -> ApiResult {
    let id = instance_id(&raw)?;
    match state.api.get_history(id.clone()).await? {
        Some(events) => Ok(json(StatusCode::OK, &events)),
        None => Err(ApiError::not_found(id.as_str())),
    }
}

/// The continuation token of a listing request: the `x-ms-continuation-token` header (empty or
/// `null`, as clients send on the first page, means none), else `continuationToken=`. A header
/// that is not text is a 400, like a token the node did not hand out.
pub(crate) fn continuation(
    params: &Params,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get(CONTINUATION) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_request("malformed continuation token: the header is not ASCII text")
        })?),
        None => None,
    };
    Ok(header
        .filter(|v| !v.is_empty() && *v != "null")
        .map(str::to_string)
        .or_else(|| params.get("continuationToken").map(str::to_string)))
}

fn instance_query(params: &Params, headers: &HeaderMap) -> Result<InstanceQuery, ApiError> {
    let continuation = continuation(params, headers)?;
    Ok(InstanceQuery {
        created_from: params.time("createdTimeFrom")?,
        created_to: params.time("createdTimeTo")?,
        statuses: params.statuses("runtimeStatus")?,
        instance_id_prefix: params.get("instanceIdPrefix").map(str::to_string),
        name: params.get("name").map(str::to_string),
        page_size: params.u32("top")?.unwrap_or(0).min(MAX_PAGE),
        continuation,
        fetch_payloads: true,
    })
}

/// `GET instances`: a page of status objects; the next page's token in
/// `x-ms-continuation-token`. Filters: `createdTimeFrom`, `createdTimeTo`, `runtimeStatus`,
/// `instanceIdPrefix`, `top`, `showInput` (default false), and Perdure's `name`.
pub(crate) async fn list(
    axum::extract::State(state): St,
    params: Params,
    headers: HeaderMap,
) -> ApiResult {
    let query = instance_query(&params, &headers)?;
    let show_input = params.bool("showInput", false)?;
    let page = state.api.query_instances(query).await?;
    let body: Vec<StatusJson<'_>> = page
        .instances
        .iter()
        .map(|i| StatusJson::new(i, show_input))
        .collect();
    let mut resp = json(StatusCode::OK, &body);
    if let Some(Ok(v)) = page.continuation.as_deref().map(HeaderValue::from_str) {
        resp.headers_mut().insert(CONTINUATION, v);
    }
    Ok(resp)
}

/// `GET instanceCounts` (Perdure addition): instances per runtime status for the same filters
/// as `GET instances`.
pub(crate) async fn counts(
    axum::extract::State(state): St,
    params: Params,
    headers: HeaderMap,
) -> ApiResult {
    let query = instance_query(&params, &headers)?;
    let counts = state.api.count_instances(query).await?;
    let body: BTreeMap<&'static str, u64> = OrchestrationStatus::ALL
        .iter()
        .map(|s| (s.as_str(), counts.get(s).copied().unwrap_or(0)))
        .collect();
    Ok(json(StatusCode::OK, &body))
}

/// `GET functions` (Perdure addition): the registered function names per kind.
pub(crate) async fn functions(axum::extract::State(state): St) -> ApiResult {
    let body = serde_json::json!({
        "orchestrations": state.api.registered_names(FunctionKind::Orchestration),
        "activities": state.api.registered_names(FunctionKind::Activity),
        "entities": state.api.registered_names(FunctionKind::Entity),
    });
    Ok(json(StatusCode::OK, &body))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PurgeJson {
    instances_deleted: u64,
    complete: bool,
}

/// `DELETE instances/{id}`: 200 `{"instancesDeleted": 1}`, 404 when there was nothing to
/// purge, 409 for an instance that has not finished.
pub(crate) async fn purge_one(axum::extract::State(state): St, P(raw): P<String>) -> ApiResult {
    let id = instance_id(&raw)?;
    let r = state
        .api
        .purge_instance(id.clone())
        .await
        .map_err(|e| match e {
            e @ ManagementError::InvalidState { .. } => {
                ApiError::from(e).with_status(StatusCode::CONFLICT)
            }
            e => e.into(),
        })?;
    let body = PurgeJson {
        instances_deleted: r.deleted,
        complete: true,
    };
    let code = if r.deleted == 0 {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Ok(json(code, &body))
}

/// `DELETE instances`: purges finished instances matching `createdTimeFrom`, `createdTimeTo`
/// and `runtimeStatus`, batch after batch until none is left (404 when none matched).
/// Perdure addition: `incremental=true` runs one batch and reports `complete`.
pub(crate) async fn purge_by_filter(axum::extract::State(state): St, params: Params) -> ApiResult {
    let filter = PurgeFilter {
        created_from: params.time("createdTimeFrom")?,
        created_to: params.time("createdTimeTo")?,
        statuses: params.statuses("runtimeStatus")?,
    };
    let incremental = params.bool("incremental", false)?;
    let mut total = 0u64;
    let mut complete = false;
    for _ in 0..MAX_PURGE_BATCHES {
        let r = state.api.purge_instances(filter.clone()).await?;
        total = total.saturating_add(r.deleted);
        complete = r.complete;
        if incremental || r.complete || r.deleted == 0 {
            break;
        }
    }
    let code = if total == 0 && complete {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    Ok(json(
        code,
        &PurgeJson {
            instances_deleted: total,
            complete,
        },
    ))
}

/// `POST instances/{id}/raiseEvent/{event}`: 202; 404 unknown; 410 finished.
pub(crate) async fn raise_event(
    axum::extract::State(state): St,
    P((raw, event)): P<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = instance_id(&raw)?;
    if event.is_empty() {
        return Err(ApiError::bad_request("the event name must not be empty"));
    }
    let data = body_payload(body)?;
    state.api.raise_event(id, event, data).await?;
    Ok(accepted())
}

fn reason(params: &Params) -> Option<String> {
    params.get("reason").map(str::to_string)
}

/// `POST instances/{id}/terminate?reason=`: 202; 404; 410 when finished. Perdure addition:
/// `recursive=true` terminates sub-orchestrations too.
pub(crate) async fn terminate(
    axum::extract::State(state): St,
    P(raw): P<String>,
    params: Params,
) -> ApiResult {
    let id = instance_id(&raw)?;
    let recursive = params.bool("recursive", false)?;
    state.api.terminate(id, reason(&params), recursive).await?;
    Ok(accepted())
}

/// `POST instances/{id}/suspend?reason=`.
pub(crate) async fn suspend(
    axum::extract::State(state): St,
    P(raw): P<String>,
    params: Params,
) -> ApiResult {
    state
        .api
        .suspend(instance_id(&raw)?, reason(&params))
        .await?;
    Ok(accepted())
}

/// `POST instances/{id}/resume?reason=`.
pub(crate) async fn resume(
    axum::extract::State(state): St,
    P(raw): P<String>,
    params: Params,
) -> ApiResult {
    state
        .api
        .resume(instance_id(&raw)?, reason(&params))
        .await?;
    Ok(accepted())
}

/// `POST instances/{id}/rewind?reason=`: 202; 410 unless failed.
pub(crate) async fn rewind(
    axum::extract::State(state): St,
    P(raw): P<String>,
    params: Params,
) -> ApiResult {
    state
        .api
        .rewind(instance_id(&raw)?, reason(&params))
        .await?;
    Ok(accepted())
}

/// `POST instances/{id}/restart?restartWithNewInstanceId=`: 202 + the management payload of
/// the restarted instance.
pub(crate) async fn restart(
    axum::extract::State(state): St,
    P(raw): P<String>,
    params: Params,
    host: Host,
    caller: Option<Extension<CallerRole>>,
) -> ApiResult {
    let new_id = params.bool("restartWithNewInstanceId", true)?;
    let id = instance_id(&raw)?;
    if !new_id && !may_replace(caller.map(|Extension(c)| c)) {
        return Err(replace_refused(&id));
    }
    let id = state.api.restart(id, new_id).await?;
    Ok(accepted_with_payload(&state, &host, &id))
}

//! Entity routes: signal, read state, list, clean storage.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use perdure_core::management::EntityQuery;
use serde::Serialize;

use super::St;
use super::error::ApiError;
use super::extract::{P, Params, body_payload, entity_id};
use super::instances::{CONTINUATION, continuation, json};
use super::render::{EntityJson, PayloadJson};

type ApiResult = Result<Response, ApiError>;

/// `POST entities/{name}/{key}?op=`: 202. Perdure addition: `scheduledTime=` delivers the
/// operation no earlier than that time.
pub(crate) async fn signal(
    axum::extract::State(state): St,
    P((name, key)): P<(String, String)>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = entity_id(&name, &key)?;
    let Some(op) = params.get("op").map(str::to_string) else {
        return Err(ApiError::bad_request(
            "the query parameter op (the operation name) is required",
        ));
    };
    let input = body_payload(body)?;
    let at = params.time("scheduledTime")?;
    state.api.signal_entity(id, op, input, at).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET entities/{name}/{key}`: 200 with the state as JSON; 404 when the entity has none.
/// Perdure addition: `metadata=true` answers the list entry (id, last operation time, lock,
/// backlog and state) instead, and 404 only when the entity does not exist.
pub(crate) async fn get_state(
    axum::extract::State(state): St,
    P((name, key)): P<(String, String)>,
    params: Params,
) -> ApiResult {
    let id = entity_id(&name, &key)?;
    let found = state.api.get_entity(id.clone()).await?;
    if params.bool("metadata", false)? {
        return match found.as_ref() {
            Some(e) => Ok(json(StatusCode::OK, &EntityJson::new(e))),
            None => Err(ApiError::from_management(
                perdure_core::management::ManagementError::NotFound(id.to_string()),
            )),
        };
    }
    match found.as_ref().and_then(|e| e.state.as_ref()) {
        Some(p) => Ok(json(StatusCode::OK, &PayloadJson(p))),
        None => Err(ApiError::from_management(
            perdure_core::management::ManagementError::NotFound(id.to_string()),
        )),
    }
}

/// `GET entities`: every entity.
pub(crate) async fn list(st: St, params: Params, headers: HeaderMap) -> ApiResult {
    list_inner(st, None, params, headers).await
}

/// `GET entities/{name}`: the entities of one name.
pub(crate) async fn list_by_name(
    st: St,
    P(name): P<String>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult {
    list_inner(st, Some(name), params, headers).await
}

async fn list_inner(
    axum::extract::State(state): St,
    name: Option<String>,
    params: Params,
    headers: HeaderMap,
) -> ApiResult {
    let continuation = continuation(&params, &headers)?;
    let query = EntityQuery {
        name: name.map(|n| n.to_lowercase()),
        key_prefix: params.get("keyPrefix").map(str::to_string),
        last_modified_from: params.time("lastOperationTimeFrom")?,
        last_modified_to: params.time("lastOperationTimeTo")?,
        page_size: params
            .u32("top")?
            .unwrap_or(0)
            .min(super::instances::MAX_PAGE),
        continuation,
        fetch_state: params.bool("fetchState", false)?,
    };
    let page = state.api.query_entities(query).await?;
    let body: Vec<EntityJson<'_>> = page.entities.iter().map(EntityJson::new).collect();
    let mut resp = json(StatusCode::OK, &body);
    if let Some(Ok(v)) = page.continuation.as_deref().map(HeaderValue::from_str) {
        resp.headers_mut().insert(CONTINUATION, v);
    }
    Ok(resp)
}

/// The counts under the field names of Durable Functions' `CleanEntityStorageResult`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CleanJson {
    number_of_empty_entities_removed: u64,
    number_of_orphaned_locks_removed: u64,
}

/// `POST` or `DELETE maintenance/cleanEntityStorage` (Perdure addition; Durable Functions
/// offers it only in its client SDKs): removes empty entities and releases orphaned locks.
pub(crate) async fn clean(axum::extract::State(state): St, params: Params) -> ApiResult {
    let remove_empty = params.bool("removeEmptyEntities", true)?;
    let release = params.bool("releaseOrphanedLocks", true)?;
    let r = state
        .api
        .clean_entity_storage(remove_empty, release)
        .await?;
    Ok(json(
        StatusCode::OK,
        &CleanJson {
            number_of_empty_entities_removed: r.empty_entities_removed,
            number_of_orphaned_locks_removed: r.orphaned_locks_released,
        },
    ))
}

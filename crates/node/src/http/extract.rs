//! Request parsing that tolerates what real clients send: query names and booleans in any
//! case, Python-style dates, empty bodies with any content type, percent-encoded paths.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use perdure_core::{EntityId, InstanceId, OrchestrationStatus, Payload, Timestamp, iso8601};
use serde::de::DeserializeOwned;

use super::access::QueryCode;
use super::error::ApiError;

/// Path parameters, percent-decoded; a bad path is a JSON 400.
pub(crate) struct P<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(P(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "bad path: {}",
                e.body_text()
            ))),
        }
    }
}

/// Query parameters, looked up by name ignoring case (as ASP.NET does).
pub(crate) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
            Ok(Query(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(format!(
                "bad query string: {}",
                e.body_text()
            ))),
        }
    }
}

impl Params {
    /// The first value of a parameter, if present and non-empty.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A boolean: `true`/`false` in any case, `1`/`0`; absent means `default`.
    pub(crate) fn bool(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(ApiError::bad_request(format!(
                "query parameter {name}: {v:?} is not a boolean (true or false)"
            ))),
        }
    }

    /// A date-time (ISO-8601).
    pub(crate) fn time(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => iso8601::parse(v).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query parameter {name}: {v:?} is not an ISO-8601 date-time"
                ))
            }),
        }
    }

    /// A non-negative integer.
    pub(crate) fn u32(&self, name: &str) -> Result<Option<u32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "query parameter {name}: {v:?} is not a non-negative integer"
                ))
            }),
        }
    }

    /// A comma-separated list of runtime statuses.
    pub(crate) fn statuses(&self, name: &str) -> Result<Vec<OrchestrationStatus>, ApiError> {
        let mut out = Vec::new();
        for v in self
            .0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            let st = OrchestrationStatus::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "query parameter {name}: {v:?} is not a runtime status (one of {})",
                    OrchestrationStatus::ALL.map(|s| s.as_str()).join(", ")
                ))
            })?;
            if !out.contains(&st) {
                out.push(st);
            }
        }
        Ok(out)
    }

    /// A duration: a number of seconds, or a number with `ms`, `s` or `m`.
    pub(crate) fn duration(&self, name: &str) -> Result<Option<Duration>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let bad = || {
            ApiError::bad_request(format!(
                "query parameter {name}: {v:?} is not a duration (like 30, 30s, 500ms or 2m)"
            ))
        };
        let v = v.trim();
        let (num, unit_ms) = if let Some(n) = v.strip_suffix("ms") {
            (n, 1)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000)
        } else if let Some(n) = v.strip_suffix('m') {
            (n, 60_000)
        } else {
            (v, 1000)
        };
        let n: u64 = num.trim().parse().map_err(|_| bad())?;
        Ok(Some(Duration::from_millis(n.saturating_mul(unit_ms))))
    }
}

/// Validates an instance id from a path (a JSON 400 naming the rule otherwise).
pub(crate) fn instance_id(raw: &str) -> Result<InstanceId, ApiError> {
    instance_id_owned(raw.to_string())
}

/// Like [`instance_id`], keeping the string it is given.
pub(crate) fn instance_id_owned(raw: String) -> Result<InstanceId, ApiError> {
    InstanceId::new(raw).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// What a handler needs of a request to build management URIs, without copying the header
/// map: its `Host` header, and the key it presented as its `code` query parameter (which the
/// URIs carry on).
pub(crate) struct Host(pub(crate) Option<HeaderValue>, pub(crate) Option<QueryCode>);

impl<S: Send + Sync> FromRequestParts<S> for Host {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Host(
            parts.headers.get(header::HOST).cloned(),
            parts.extensions.get::<QueryCode>().cloned(),
        ))
    }
}

/// Validates an entity id from a path.
pub(crate) fn entity_id(name: &str, key: &str) -> Result<EntityId, ApiError> {
    EntityId::new(name, key).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The body as a JSON payload, stored exactly as sent: an empty (or all-whitespace) body is no
/// payload, whatever its content type; anything else must be valid JSON.
pub(crate) fn body_payload(
    body: Result<Bytes, BytesRejection>,
) -> Result<Option<Payload>, ApiError> {
    let body = body.map_err(|e| ApiError::plain(e.status(), "BodyRejected", e.body_text()))?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(ApiError::bad_request(format!("malformed JSON body: {e}")));
    }
    Ok(Some(Payload {
        encoding: perdure_core::Encoding::Json,
        data: body.to_vec(),
    }))
}

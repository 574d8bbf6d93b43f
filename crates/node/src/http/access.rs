//! Access control of the HTTP API: which role each route needs, and the key a request
//! presents (`docs/operations.md`, "Access control").

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, BASE_PATH, RPC_BASE_PATH};
use crate::access::{CallerRole, Decision, Role};

/// The key a request presented in its `code` query parameter, when it was accepted: the
/// management URLs a start returns carry it on, as Durable Functions' do.
#[derive(Clone, Debug)]
pub(crate) struct QueryCode(pub(crate) String);

/// The role a request needs; `None`: an open route.
pub(crate) fn needed_role(method: &Method, path: &str, metrics_open: bool) -> Option<Role> {
    match path {
        "/healthz" | "/readyz" => return None,
        // The dashboard's static assets: no data in them; their API calls carry the key.
        "/dashboard" | "/dashboard/" | "/dashboard/app.js" | "/dashboard/app.css"
            if method == Method::GET || method == Method::HEAD =>
        {
            return None;
        }
        "/metrics" if metrics_open => return None,
        _ => {}
    }
    let read = method == Method::GET || method == Method::HEAD;
    let api = path
        .strip_prefix(BASE_PATH)
        .or_else(|| path.strip_prefix(RPC_BASE_PATH));
    match api {
        // Purges (by id or by filter) are the admin's.
        Some(rest) if method == Method::DELETE && rest.starts_with("/instances") => {
            Some(Role::Admin)
        }
        Some(_) if read => Some(Role::Reader),
        Some(_) => Some(Role::Operator),
        None if read => Some(Role::Reader),
        // Cluster operations and anything else that writes outside the instance API.
        None if path.starts_with("/cluster") => Some(Role::Admin),
        None => Some(Role::Operator),
    }
}

/// The key a request presents, and whether it came in the query string.
fn presented(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<(String, bool)> {
    // A Bearer token first; another scheme (Basic from a proxy, say) leaves the other places
    // to look at, and is read last.
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '));
    if let Some((scheme, token)) = authorization
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some((token.trim().to_string(), false));
    }
    if let Some(v) = headers
        .get("x-functions-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        return Some((v.to_string(), false));
    }
    if uri.query().is_some()
        && let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        && let Some((_, v)) = pairs
            .into_iter()
            .find(|(k, v)| k.eq_ignore_ascii_case("code") && !v.is_empty())
    {
        return Some((v, true));
    }
    // Basic: the key as the password (or, without one, as the user name), which is how a
    // client that only takes URLs sends one: `https://key:<key>@host/...` (the Durable
    // Functions Python client's binding URLs, through aiohttp).
    let (scheme, token) = authorization?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
    let key = if password.is_empty() { user } else { password };
    (!key.is_empty()).then(|| (key.to_string(), false))
}

/// The middleware: lets a request through when its key's role suffices (or when no key is
/// configured); answers 401 (no key, or an unknown one) or 403 (a role too low) with a JSON
/// body otherwise.
pub(crate) async fn check(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let keys = &state.opts.keys;
    if keys.is_empty() {
        return next.run(req).await;
    }
    let needs = needed_role(req.method(), req.uri().path(), state.opts.metrics_open);
    let key = presented(req.headers(), req.uri());
    match keys.decide(needs, key.as_ref().map(|(k, _)| k.as_str())) {
        Decision::Allow(role) => {
            if let Some(role) = role {
                req.extensions_mut().insert(CallerRole(role));
            }
            if let Some((k, true)) = key {
                req.extensions_mut().insert(QueryCode(k));
            }
            next.run(req).await
        }
        refused => {
            let (status, kind) = match refused {
                Decision::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
                _ => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            };
            tracing::debug!(method = %req.method(), path = req.uri().path(), status = status.as_u16(), "request refused by access control");
            let mut resp = ApiError::plain(status, kind, refused.message()).into_response();
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"perdure\""),
                );
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_of_the_issue() {
        let at = |p: &str| format!("{BASE_PATH}{p}");
        let rpc = |p: &str| format!("{RPC_BASE_PATH}{p}");
        let cases: &[(Method, String, Option<Role>)] = &[
            (Method::GET, "/healthz".into(), None),
            (Method::GET, "/readyz".into(), None),
            (Method::GET, "/metrics".into(), None),
            (Method::GET, at("/instances/x"), Some(Role::Reader)),
            (Method::GET, rpc("/instances/x"), Some(Role::Reader)),
            (Method::GET, at("/entities/c/k"), Some(Role::Reader)),
            (
                Method::GET,
                "/cluster/partitions".into(),
                Some(Role::Reader),
            ),
            (Method::GET, "/dashboard".into(), None),
            (Method::GET, "/dashboard/app.js".into(), None),
            (Method::POST, "/dashboard/".into(), Some(Role::Operator)),
            (Method::GET, "/dashboard/other".into(), Some(Role::Reader)),
            (
                Method::POST,
                at("/orchestrators/Hello"),
                Some(Role::Operator),
            ),
            (
                Method::POST,
                at("/instances/x/raiseEvent/e"),
                Some(Role::Operator),
            ),
            (
                Method::POST,
                at("/instances/x/terminate"),
                Some(Role::Operator),
            ),
            (Method::POST, at("/entities/c/k"), Some(Role::Operator)),
            (
                Method::POST,
                at("/maintenance/cleanEntityStorage"),
                Some(Role::Operator),
            ),
            (Method::DELETE, at("/instances/x"), Some(Role::Admin)),
            (Method::DELETE, at("/instances"), Some(Role::Admin)),
            (Method::DELETE, rpc("/instances/"), Some(Role::Admin)),
            (Method::POST, "/cluster/leave".into(), Some(Role::Admin)),
            (Method::POST, "/elsewhere".into(), Some(Role::Operator)),
        ];
        for (m, p, want) in cases {
            assert_eq!(needed_role(m, p, true), *want, "{m} {p}");
        }
        assert_eq!(
            needed_role(&Method::GET, "/metrics", false),
            Some(Role::Reader)
        );
    }

    #[test]
    fn keys_are_taken_from_the_three_places() {
        let uri: axum::http::Uri = "/x?a=1&Code=pd%2Fkey".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h, &uri), Some(("pd/key".to_string(), true)));
        h.insert("x-functions-key", HeaderValue::from_static("fk"));
        assert_eq!(presented(&h, &uri), Some(("fk".to_string(), false)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  tok "),
        );
        assert_eq!(presented(&h, &uri), Some(("tok".to_string(), false)));
        // Another scheme is not a key: the other places are looked at.
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented(&h, &uri), Some(("fk".to_string(), false)));
        h.remove("x-functions-key");
        assert_eq!(presented(&h, &uri), Some(("pd/key".to_string(), true)));
        let bare: axum::http::Uri = "/x".parse().unwrap();
        assert_eq!(presented(&HeaderMap::new(), &bare), None);
        // Basic is read last: the password, or the user name when there is no password.
        assert_eq!(presented(&h, &bare), None, "xyz is not base64 of anything");
        let basic = |creds: &str| {
            use base64::Engine as _;
            let mut h = HeaderMap::new();
            let v = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            );
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
            h
        };
        let k = |s: &str| Some((s.to_string(), false));
        assert_eq!(presented(&basic("key:pd_secret"), &bare), k("pd_secret"));
        assert_eq!(presented(&basic("pd_secret:"), &bare), k("pd_secret"));
        assert_eq!(presented(&basic("pd_secret"), &bare), k("pd_secret"));
        assert_eq!(presented(&basic(":"), &bare), None);
        assert_eq!(
            presented(&basic("u:p"), &uri),
            Some(("pd/key".into(), true))
        );
    }
}

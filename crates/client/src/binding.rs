//! The Durable Client binding of an axum HTTP starter (feature `axum`): what Durable
//! Functions' `[DurableClient]` binding gives an HTTP-triggered function.
//!
//! - [`DurableClientBinding`] is an axum extractor: a handler takes it as an argument and gets
//!   the [`DurableClient`] (it derefs to it) plus where the management URLs point.
//! - [`DurableClientBinding::create_check_status_response`] answers `202 Accepted` with
//!   `Location`, `Retry-After: 10` and the management payload (`statusQueryGetUri`,
//!   `sendEventPostUri`, ...), like `CreateCheckStatusResponse`.
//! - [`DurableClientBinding::wait_for_completion_or_create_check_status_response`] waits for
//!   the instance first, like `WaitForCompletionOrCreateCheckStatusResponseAsync`.
//! - [`ClientError`] and [`HttpResponseParts`] are axum responses, so a handler can return
//!   `Result<Response, ClientError>` and use `?`.
//!
//! # The binding in the app state
//!
//! The extractor takes the binding from the router's state through [`FromRef`]: make the
//! binding the state, or implement `FromRef<YourState> for DurableClientBinding` (what
//! `#[derive(FromRef)]` of axum's `macros` feature writes for you):
//!
//! ```
//! use axum::extract::FromRef;
//! use perdure_client::binding::DurableClientBinding;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     durable: DurableClientBinding,
//!     greeting: String,
//! }
//!
//! impl FromRef<AppState> for DurableClientBinding {
//!     fn from_ref(state: &AppState) -> Self {
//!         state.durable.clone()
//!     }
//! }
//! # let _ = |s: AppState| DurableClientBinding::from_ref(&s);
//! ```
//!
//! # Where the management URLs point
//!
//! The starter is a separate service from the Perdure nodes, and only a node serves the
//! management routes, so the URLs must name a node (see [`NodeOrigin`]):
//!
//! - over HTTP ([`DurableClientBinding::http`]): the first node URL the client is given;
//! - in process ([`DurableClientBinding::in_process`]): the origin of the incoming request,
//!   for an app that serves the node's HTTP API itself (`perdure_node::http::router` merged
//!   into its router);
//! - [`DurableClientBinding::with_public_origin`]: a fixed origin, for nodes behind a proxy or
//!   a load balancer.
//!
//! # A starter
//!
//! ```no_run
//! use axum::body::Bytes;
//! use axum::extract::Path;
//! use axum::http::StatusCode;
//! use axum::http::request::Parts;
//! use axum::response::{IntoResponse, Response};
//! use perdure_client::StartOptions;
//! use perdure_client::binding::DurableClientBinding;
//!
//! /// `POST /api/orchestrators/{name}`: the body (JSON, or empty for none) is the input.
//! async fn http_start(
//!     client: DurableClientBinding,
//!     parts: Parts,
//!     Path(name): Path<String>,
//!     body: Bytes,
//! ) -> Result<Response, Response> {
//!     let input: serde_json::Value = if body.is_empty() {
//!         serde_json::Value::Null
//!     } else {
//!         serde_json::from_slice(&body)
//!             .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?
//!     };
//!     // A `ClientError` is a response: 404 for an unknown name, 409 for a live id, ...
//!     let id = client
//!         .schedule_new_orchestration(&name, &input, StartOptions::default())
//!         .await
//!         .map_err(IntoResponse::into_response)?;
//!     Ok(client.create_check_status_response(&parts, &id))
//! }
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let binding = DurableClientBinding::http(["http://127.0.0.1:8080"])?;
//! let app = axum::Router::new()
//!     .route("/api/orchestrators/{name}", axum::routing::post(http_start))
//!     .with_state(binding);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::http::BASE_PATH;
use crate::{
    ClientError, ClientResult, DurableClient, HttpClientOptions, HttpResponseParts, InstanceId,
    ManagementApi,
};

mod response;

/// Where the management URLs of a check-status response point: a Perdure node, as the caller
/// of the starter reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOrigin {
    /// A fixed origin, `http(s)://host[:port]`: a node, or the proxy in front of the nodes.
    Url(String),
    /// The origin the incoming request was addressed to: `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` when a proxy set them, else the `Host` header (plain `http`). For an
    /// app that embeds a node and serves its HTTP API on its own listener.
    Request,
}

/// The parts of an incoming request the binding reads (its URI and headers), implemented for
/// [`Parts`], [`Request`] and a bare [`HeaderMap`].
pub trait RequestHead {
    /// The request's headers.
    fn headers(&self) -> &HeaderMap;
    /// The request's URI, when there is one (an absolute URI, or an HTTP/2 `:authority`, names
    /// the origin when no `Host` header does).
    fn uri(&self) -> Option<&Uri>;
}

impl RequestHead for Parts {
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn uri(&self) -> Option<&Uri> {
        Some(&self.uri)
    }
}

impl<B> RequestHead for Request<B> {
    fn headers(&self) -> &HeaderMap {
        Request::headers(self)
    }
    fn uri(&self) -> Option<&Uri> {
        Some(Request::uri(self))
    }
}

impl RequestHead for HeaderMap {
    fn headers(&self) -> &HeaderMap {
        self
    }
    fn uri(&self) -> Option<&Uri> {
        None
    }
}

/// The Durable Client binding of an axum HTTP starter: a [`DurableClient`] (it derefs to one)
/// and the origin of the management URLs it hands out. Cheap to clone; keep one in the app
/// state and take it as a handler argument (it is a [`FromRequestParts`] extractor for any
/// state it can be taken from with [`FromRef`]).
///
/// ```
/// use perdure_client::binding::{DurableClientBinding, NodeOrigin};
///
/// # fn main() -> Result<(), perdure_client::ClientError> {
/// let b = DurableClientBinding::http(["http://node1:8080", "http://node2:8080"])?;
/// assert_eq!(b.origin(), &NodeOrigin::Url("http://node1:8080".into()));
/// let b = b.with_public_origin("https://durable.example.com/");
/// assert_eq!(b.origin(), &NodeOrigin::Url("https://durable.example.com".into()));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DurableClientBinding {
    client: DurableClient,
    origin: NodeOrigin,
    internal_server_error_on_failure: bool,
}

/// `http://host:port` from a node URL given with or without the API's base path.
fn origin_of(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    u.strip_suffix(BASE_PATH)
        .unwrap_or(u)
        .trim_end_matches('/')
        .to_string()
}

impl DurableClientBinding {
    /// A binding over the HTTP API of these nodes; management URLs point to the first one.
    pub fn http<I, S>(urls: I) -> ClientResult<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::http_with(HttpClientOptions::new(urls))
    }

    /// A binding over HTTP with explicit options; management URLs point to the first node.
    pub fn http_with(opts: HttpClientOptions) -> ClientResult<Self> {
        let Some(first) = opts.urls.first() else {
            return Err(ClientError::Config("no node URL given".into()));
        };
        let origin = NodeOrigin::Url(origin_of(first));
        Ok(Self::new(DurableClient::http_with(opts)?, origin))
    }

    /// A binding over a node in the same process; management URLs point to the origin of the
    /// incoming request, so the app must also serve the node's HTTP API
    /// (`perdure_node::http::router`), or set [`DurableClientBinding::with_public_origin`].
    pub fn in_process(api: Arc<dyn ManagementApi>) -> Self {
        Self::new(DurableClient::in_process(api), NodeOrigin::Request)
    }

    /// A binding over an existing client. The client does not tell which transport it uses,
    /// so the origin is explicit: [`NodeOrigin::Url`] with a node for an HTTP client,
    /// [`NodeOrigin::Request`] for an app that serves the node's API itself.
    pub fn new(client: DurableClient, origin: NodeOrigin) -> Self {
        let origin = match origin {
            NodeOrigin::Url(u) => NodeOrigin::Url(origin_of(&u)),
            NodeOrigin::Request => NodeOrigin::Request,
        };
        Self {
            client,
            origin,
            internal_server_error_on_failure: false,
        }
    }

    /// Management URLs point to this origin (`https://durable.example.com`, with or without
    /// the API's base path): the public address of the nodes behind a proxy.
    pub fn with_public_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = NodeOrigin::Url(origin_of(&origin.into()));
        self
    }

    /// Durable Functions' `returnInternalServerErrorOnFailure`: the status query URI asks the
    /// node for `500` when the instance has failed, and
    /// [`DurableClientBinding::wait_for_completion_or_create_check_status_response`] answers
    /// `500` (instead of `200`) for a failed instance. Off by default, as in Durable Functions.
    pub fn return_internal_server_error_on_failure(mut self, yes: bool) -> Self {
        self.internal_server_error_on_failure = yes;
        self
    }

    /// The client.
    pub fn client(&self) -> &DurableClient {
        &self.client
    }

    /// The client, without the binding.
    pub fn into_client(self) -> DurableClient {
        self.client
    }

    /// Where management URLs point.
    pub fn origin(&self) -> &NodeOrigin {
        &self.origin
    }

    /// The origin of the management URLs for this request (`http://host:port`).
    pub fn management_origin<R: RequestHead + ?Sized>(&self, request: &R) -> String {
        match &self.origin {
            NodeOrigin::Url(u) => u.clone(),
            NodeOrigin::Request => request_origin(request),
        }
    }

    /// The management payload of an instance (`id`, `statusQueryGetUri`, `sendEventPostUri`,
    /// `terminatePostUri`, `rewindPostUri`, `purgeHistoryDeleteUri`, `restartPostUri`,
    /// `suspendPostUri`, `resumePostUri`), for a starter that builds its own answer.
    pub fn create_http_management_payload<R: RequestHead + ?Sized>(
        &self,
        request: &R,
        instance_id: &InstanceId,
    ) -> serde_json::Value {
        self.check_status_parts(&self.management_origin(request), instance_id)
            .body
    }

    /// The answer of an HTTP starter, as Durable Functions' `CreateCheckStatusResponse`:
    /// `202 Accepted`, `Location` (the status query URI), `Retry-After: 10` and the management
    /// payload as JSON body.
    ///
    /// ```
    /// use perdure_client::InstanceId;
    /// use perdure_client::binding::DurableClientBinding;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let binding = DurableClientBinding::http(["http://127.0.0.1:8080"])?;
    /// let request = axum::http::Request::post("/api/orchestrators/Approval").body(())?;
    /// let resp = binding.create_check_status_response(&request, &InstanceId::new("order-1")?);
    /// assert_eq!(resp.status(), 202);
    /// assert_eq!(
    ///     resp.headers()["location"],
    ///     "http://127.0.0.1:8080/runtime/webhooks/durabletask/instances/order-1"
    /// );
    /// assert_eq!(resp.headers()["retry-after"], "10");
    /// # Ok(()) }
    /// ```
    pub fn create_check_status_response<R: RequestHead + ?Sized>(
        &self,
        request: &R,
        instance_id: &InstanceId,
    ) -> Response {
        self.check_status_parts(&self.management_origin(request), instance_id)
            .into_response()
    }

    /// Waits up to `timeout` for the instance to finish, then answers as Durable Functions'
    /// `WaitForCompletionOrCreateCheckStatusResponseAsync`:
    ///
    /// - **Completed**: `200` with the output as JSON body;
    /// - **Failed**: `200` with the status object (`500` with
    ///   [`DurableClientBinding::return_internal_server_error_on_failure`]);
    /// - **Terminated**: `200` with the status object;
    /// - not finished within `timeout`, or unknown: the `202` of
    ///   [`DurableClientBinding::create_check_status_response`].
    ///
    /// The status object is the one `GET statusQueryGetUri` answers; its input is left out
    /// when the incoming request has `showInput=false` in its query, as Durable Functions reads
    /// it there (its history is never included).
    ///
    /// The wait is the client's long poll
    /// ([`DurableClient::wait_for_instance_completion`]), so `retry_interval` is not used to
    /// poll, as with Durable Functions' backends that wait without polling; it is kept for the
    /// same signature and, as there, must not be longer than `timeout`
    /// ([`ClientError::Config`] otherwise). Errors other than the timeout and an unknown
    /// instance (an unreachable node, ...) are returned.
    ///
    /// The request is read before the returned future starts, which borrows nothing: a
    /// handler may pass its `Request` (whose body is not `Sync`) and stay `Send`.
    pub fn wait_for_completion_or_create_check_status_response<R: RequestHead + ?Sized>(
        &self,
        request: &R,
        instance_id: &InstanceId,
        timeout: Duration,
        retry_interval: Duration,
    ) -> impl Future<Output = ClientResult<Response>> + Send + 'static {
        let origin = self.management_origin(request);
        let show_input = response::show_input(request);
        let binding = self.clone();
        let id = instance_id.clone();
        async move {
            if retry_interval > timeout {
                return Err(ClientError::Config(format!(
                    "the retry interval {retry_interval:?} is longer than the timeout {timeout:?}"
                )));
            }
            match binding
                .client
                .wait_for_instance_completion(&id, timeout)
                .await
            {
                Ok(done) => Ok(response::finished(
                    &done.state,
                    show_input,
                    binding.internal_server_error_on_failure,
                )),
                Err(ClientError::Timeout { .. }) => {
                    Ok(binding.check_status_parts(&origin, &id).into_response())
                }
                Err(e) if e.is_not_found() => {
                    Ok(binding.check_status_parts(&origin, &id).into_response())
                }
                Err(e) => Err(e),
            }
        }
    }

    /// The check-status answer for a management origin.
    fn check_status_parts(&self, origin: &str, instance_id: &InstanceId) -> HttpResponseParts {
        let mut parts = self
            .client
            .create_check_status_response(origin, instance_id);
        if self.internal_server_error_on_failure {
            parts
                .location
                .push_str("?returnInternalServerErrorOnFailure=true");
            parts.body["statusQueryGetUri"] = serde_json::Value::String(parts.location.clone());
        }
        parts
    }
}

impl std::ops::Deref for DurableClientBinding {
    type Target = DurableClient;

    fn deref(&self) -> &DurableClient {
        &self.client
    }
}

impl<S> FromRequestParts<S> for DurableClientBinding
where
    S: Send + Sync,
    DurableClientBinding: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        Ok(Self::from_ref(state))
    }
}

/// `State<DurableClient>` works in a router whose state is the binding.
impl FromRef<DurableClientBinding> for DurableClient {
    fn from_ref(binding: &DurableClientBinding) -> Self {
        binding.client.clone()
    }
}

/// The first value of a header that may hold a comma list (one entry per proxy).
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .split(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Whether a host (`name[:port]`) can be put in a URL as is: no path, user info, query or
/// fragment can ride in with it.
fn is_plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'\\' | b'@' | b'?' | b'#'))
}

/// The origin an incoming request was addressed to: `X-Forwarded-Proto` / `X-Forwarded-Host`
/// (the first entry), else the `Host` header or the URI's authority, else `localhost`; the
/// scheme is `http` unless a proxy or an absolute URI says `https`.
fn request_origin<R: RequestHead + ?Sized>(req: &R) -> String {
    let headers = req.headers();
    let uri = req.uri();
    let scheme = first_value(headers, "x-forwarded-proto")
        .or_else(|| uri.and_then(Uri::scheme_str))
        .filter(|s| s.eq_ignore_ascii_case("https"))
        .map_or("http", |_| "https");
    let host = first_value(headers, "x-forwarded-host")
        .filter(|h| is_plain_host(h))
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| is_plain_host(h))
        })
        .or_else(|| {
            uri.and_then(Uri::authority)
                .map(|a| a.as_str())
                .filter(|h| is_plain_host(h))
        })
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn request_origin_prefers_the_proxy_headers_then_host() {
        assert_eq!(
            request_origin(&head(&[("host", "127.0.0.1:3000")])),
            "http://127.0.0.1:3000"
        );
        assert_eq!(
            request_origin(&head(&[
                ("host", "10.0.0.5:3000"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "api.example.com, proxy.internal"),
            ])),
            "https://api.example.com"
        );
        // A forwarded scheme that is neither http nor https is ignored.
        assert_eq!(
            request_origin(&head(&[("host", "h:1"), ("x-forwarded-proto", "gopher")])),
            "http://h:1"
        );
        // A host that would smuggle a path or user info falls through to the next source.
        assert_eq!(
            request_origin(&head(&[
                ("host", "good:1"),
                ("x-forwarded-host", "evil.example/x")
            ])),
            "http://good:1"
        );
        assert_eq!(request_origin(&HeaderMap::new()), "http://localhost");
        // HTTP/2: no Host header, the authority is in the URI.
        let req = Request::get("https://h2.example:8443/api/x")
            .body(())
            .unwrap();
        assert_eq!(request_origin(&req), "https://h2.example:8443");
    }

    #[test]
    fn node_urls_lose_the_base_path_and_trailing_slashes() {
        assert_eq!(origin_of("http://n:8080/"), "http://n:8080");
        assert_eq!(
            origin_of(" http://n:8080/runtime/webhooks/durabletask/ "),
            "http://n:8080"
        );
        let b = DurableClientBinding::http_with(HttpClientOptions::new(Vec::<String>::new()));
        assert!(matches!(b, Err(ClientError::Config(_))));
    }
}

//! The HTTP transport: the Durable Functions HTTP API of one or more nodes, with keep-alive
//! connections and failover.
//!
//! Failover retries a request on the next node only when it cannot have taken effect: the
//! connection could not be made, the node answered 429 or 503 (it refused the work), or the
//! request is a read (GET), which is safe to repeat after any transport error.
//!
//! With several nodes of one cluster, a request about one instance or entity goes first to
//! the node that owns its partition (the `owners` module; [`HttpClientOptions::route_to_owner`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use perdure_core::management::*;
use perdure_core::{HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp, iso8601};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use crate::error::{ClientError, ClientResult};
use crate::wire::{ErrorWire, IdWire, PurgeWire, StatusWire};

mod api;
mod entities;
mod owners;

/// Where the Durable Functions routes live on a node.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";

const CONTINUATION: &str = "x-ms-continuation-token";

/// Options of the HTTP transport. Its `Debug` shows whether a key is set, never the key.
#[derive(Clone)]
pub struct HttpClientOptions {
    /// Node URLs (`http://host:port`, with or without the base path).
    pub urls: Vec<String>,
    /// Time limit of one request (a server-side wait is added on top).
    pub request_timeout: Duration,
    /// Time limit to open a connection.
    pub connect_timeout: Duration,
    /// Longest server-side wait per status request of `wait_for_completion`.
    pub wait_chunk: Duration,
    /// The API key sent with every request (`Authorization: Bearer`), for nodes that
    /// require keys.
    pub api_key: Option<String>,
    /// PEM certificates trusted beside the public roots, for `https://` nodes whose
    /// certificate a private CA signed.
    pub ca_certificates: Vec<Vec<u8>>,
    /// With several URLs: send each request about one instance or entity to the node that
    /// owns its partition, read from the nodes' partition table (default on). A node then
    /// need not forward it to the owner; a stale table only costs that forwarding.
    pub route_to_owner: bool,
}

impl std::fmt::Debug for HttpClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientOptions")
            .field("urls", &self.urls)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("wait_chunk", &self.wait_chunk)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_certificates", &self.ca_certificates.len())
            .field("route_to_owner", &self.route_to_owner)
            .finish()
    }
}

impl HttpClientOptions {
    /// Options for these node URLs, with default timeouts.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
            wait_chunk: Duration::from_secs(30),
            api_key: None,
            ca_certificates: Vec::new(),
            route_to_owner: true,
        }
    }

    /// These options with routing to owners on or off (see
    /// [`HttpClientOptions::route_to_owner`]).
    pub fn with_route_to_owner(mut self, on: bool) -> Self {
        self.route_to_owner = on;
        self
    }

    /// These options trusting the PEM certificate(s) `pem` (a private CA) for `https://`
    /// nodes.
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificates.push(pem.into());
        self
    }

    /// These options with an API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

/// A response: status, continuation header, body.
struct Answer {
    status: StatusCode,
    /// The `x-ms-continuation-token` header, if any.
    continuation: Option<String>,
    body: Bytes,
    url: String,
}

/// A request body: shared bytes, so that a retry on another node does not copy it.
type Body = Option<Bytes>;

/// A payload as a request body.
fn body(p: Option<&Payload>) -> Body {
    p.map(|p| Bytes::copy_from_slice(&p.data))
}

/// The `content-type` of request bodies.
const JSON_TYPE: HeaderValue = HeaderValue::from_static("application/json");

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
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

/// Builds a query string from pairs (values encoded).
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn time(t: Option<Timestamp>) -> Option<String> {
    t.map(iso8601::format)
}

fn statuses(s: &[OrchestrationStatus]) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
    }
}

/// The HTTP transport. Cheap to share (`Arc`); connections are pooled.
#[derive(Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
    nodes: Vec<String>,
    /// `nodes`, parsed once: a request's URL is a copy with its path and query set, which
    /// spares parsing the scheme and host (with IDNA mapping) on every request.
    urls: Vec<Url>,
    preferred: AtomicUsize,
    /// With `route_to_owner` and several nodes.
    owners: Option<owners::Owners>,
    opts: HttpClientOptions,
}

impl HttpTransport {
    /// A transport over the given nodes.
    pub fn new(opts: HttpClientOptions) -> ClientResult<Self> {
        if opts.urls.is_empty() {
            return Err(ClientError::Config("no node URL given".into()));
        }
        let mut nodes = Vec::new();
        let mut urls = Vec::new();
        for u in &opts.urls {
            let u = u.trim().trim_end_matches('/');
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ClientError::Config(format!(
                    "node URL {u:?} must start with http:// or https://"
                )));
            }
            let base = u.strip_suffix(BASE_PATH).unwrap_or(u);
            let node = format!("{base}{BASE_PATH}");
            let url = Url::parse(&node)
                .map_err(|e| ClientError::Config(format!("node URL {u:?}: {e}")))?;
            urls.push(url);
            nodes.push(node);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = &opts.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
                ClientError::Config("the API key holds characters a header cannot carry".into())
            })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        for pem in &opts.ca_certificates {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Config(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config(
                    "CA certificate: no PEM certificate in it".into(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        let owners = (opts.route_to_owner && nodes.len() > 1).then(|| {
            let origins = nodes
                .iter()
                .map(|n| n.strip_suffix(BASE_PATH).unwrap_or(n).to_string())
                .collect();
            owners::Owners::new(
                client.clone(),
                origins,
                opts.connect_timeout + Duration::from_secs(2),
            )
        });
        Ok(Self {
            client,
            nodes,
            urls,
            preferred: AtomicUsize::new(0),
            owners,
            opts,
        })
    }

    /// The node base URLs (with the API's base path).
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The URL of `path` (with its query, if any) on a node: what parsing `{node}{path}`
    /// gives.
    fn url_on(node: &Url, path: &str) -> Url {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut url = node.clone();
        let mut full = String::with_capacity(node.path().len() + path.len());
        full.push_str(node.path());
        full.push_str(path);
        url.set_path(&full);
        url.set_query(query);
        url
    }

    /// Sends a request; `route` is the routing key (instance id or entity id) of a request
    /// about one instance or entity, which then goes to its owner first.
    async fn send(
        &self,
        route: Option<&str>,
        method: Method,
        path: &str,
        body: Body,
        header: Option<(&'static str, &str)>,
        extra_timeout: Duration,
    ) -> ClientResult<Answer> {
        let n = self.nodes.len();
        let safe = method == Method::GET;
        let attempts = n * 2;
        let owner = match (route, &self.owners) {
            (Some(key), Some(o)) => o.owner_of(key).await,
            _ => None,
        };
        let start = owner.unwrap_or_else(|| self.preferred.load(Ordering::Relaxed));
        let mut last_err: Option<reqwest::Error> = None;
        for attempt in 0..attempts {
            let idx = (start + attempt) % n;
            let (Some(node), Some(node_url)) = (self.nodes.get(idx), self.urls.get(idx)) else {
                continue;
            };
            let url = format!("{node}{path}");
            let mut req = self
                .client
                .request(method.clone(), Self::url_on(node_url, path))
                .timeout(self.opts.request_timeout + extra_timeout);
            req = match &body {
                Some(b) => req.header(CONTENT_TYPE, JSON_TYPE).body(b.clone()),
                None if method == Method::POST => req.header(CONTENT_TYPE, JSON_TYPE),
                None => req,
            };
            if let Some((name, value)) = header {
                req = req.header(name, value);
            }
            match req.send().await {
                Err(e) => {
                    let retry = e.is_connect() || (safe && !e.is_builder());
                    if !retry {
                        return Err(ClientError::Unreachable {
                            method: method.to_string(),
                            path: path.to_string(),
                            source: e,
                        });
                    }
                    if let Some(o) = &self.owners {
                        o.unreachable(idx);
                    }
                    tracing::debug!(%url, error = %e, "node failed; trying the next one");
                    last_err = Some(e);
                }
                Ok(resp) => {
                    let status = resp.status();
                    let refused = matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    );
                    if refused && attempt + 1 < attempts {
                        let backoff = Duration::from_millis(20 * (attempt as u64 + 1));
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    self.preferred.store(idx, Ordering::Relaxed);
                    let continuation = resp
                        .headers()
                        .get(CONTINUATION)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = match resp.bytes().await {
                        Ok(b) => b,
                        Err(e) if safe && attempt + 1 < attempts => {
                            last_err = Some(e);
                            continue;
                        }
                        Err(e) => {
                            return Err(ClientError::Unreachable {
                                method: method.to_string(),
                                path: path.to_string(),
                                source: e,
                            });
                        }
                    };
                    return Ok(Answer {
                        status,
                        continuation,
                        body,
                        url,
                    });
                }
            }
            self.preferred.store((idx + 1) % n, Ordering::Relaxed);
        }
        match last_err {
            Some(source) => Err(ClientError::Unreachable {
                method: method.to_string(),
                path: path.to_string(),
                source,
            }),
            None => Err(ClientError::Config("no node to send to".into())),
        }
    }

    fn error(a: &Answer) -> ClientError {
        if matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let message = match serde_json::from_slice::<ErrorWire>(&a.body) {
                Ok(ErrorWire {
                    message: Some(m), ..
                }) => m,
                _ => String::from_utf8_lossy(&a.body).chars().take(500).collect(),
            };
            return ClientError::Denied {
                status: a.status.as_u16(),
                url: a.url.clone(),
                message,
            };
        }
        match serde_json::from_slice::<ErrorWire>(&a.body) {
            Ok(ErrorWire { typed: Some(e), .. }) => ClientError::Management(e),
            Ok(ErrorWire {
                message: Some(m), ..
            }) if a.status == StatusCode::NOT_FOUND => {
                ClientError::Management(ManagementError::NotFound(m))
            }
            Ok(ErrorWire {
                message: Some(m), ..
            }) => ClientError::Protocol {
                status: a.status.as_u16(),
                url: a.url.clone(),
                message: m,
            },
            _ => ClientError::Protocol {
                status: a.status.as_u16(),
                url: a.url.clone(),
                message: String::from_utf8_lossy(&a.body).chars().take(500).collect(),
            },
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(a: &Answer) -> ClientResult<T> {
        serde_json::from_slice(&a.body).map_err(|e| ClientError::Protocol {
            status: a.status.as_u16(),
            url: a.url.clone(),
            message: format!("undecodable body: {e}"),
        })
    }

    fn expect(a: Answer, ok: &[StatusCode]) -> ClientResult<Answer> {
        if ok.contains(&a.status) {
            Ok(a)
        } else {
            Err(Self::error(&a))
        }
    }

    /// Starts an orchestration.
    pub async fn start(&self, req: StartRequest) -> ClientResult<InstanceId> {
        let mut path = format!("/orchestrators/{}", enc(&req.name));
        if let Some(id) = &req.instance_id {
            path.push('/');
            path.push_str(&enc(id.as_str()));
        }
        if req.version.is_some() || req.scheduled_start.is_some() {
            path.push_str(&query(&[
                ("version", req.version.clone()),
                ("scheduledStartTime", time(req.scheduled_start)),
            ]));
        }
        // The request is ours: its payload becomes the body without a copy.
        let input = req.input.map(|p| Bytes::from(p.data));
        // The W3C trace context the orchestration's spans join.
        let trace = req.trace_parent.as_deref().map(|t| ("traceparent", t));
        let route = req.instance_id.as_ref().map(InstanceId::as_str);
        let a = self
            .send(route, Method::POST, &path, input, trace, Duration::ZERO)
            .await?;
        let a = Self::expect(a, &[StatusCode::ACCEPTED, StatusCode::OK])?;
        let id: IdWire = Self::decode(&a)?;
        InstanceId::new(id.id).map_err(|e| ClientError::Protocol {
            status: a.status.as_u16(),
            url: a.url.clone(),
            message: format!("bad instance id: {e}"),
        })
    }

    async fn status(
        &self,
        id: &InstanceId,
        with_payloads: bool,
        wait: Option<Duration>,
    ) -> ClientResult<Option<InstanceState>> {
        let path = format!(
            "/instances/{}{}",
            enc(id.as_str()),
            query(&[
                ("showInput", (!with_payloads).then(|| "false".to_string())),
                (
                    "waitForCompletion",
                    wait.map(|w| format!("{}ms", w.as_millis()))
                ),
            ])
        );
        let a = self
            .send(
                Some(id.as_str()),
                Method::GET,
                &path,
                None,
                None,
                wait.unwrap_or_default(),
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return match Self::error(&a) {
                e if e.is_not_found() => Ok(None),
                e => Err(e),
            };
        }
        let a = Self::expect(
            a,
            &[
                StatusCode::OK,
                StatusCode::ACCEPTED,
                StatusCode::INTERNAL_SERVER_ERROR,
            ],
        )?;
        let wire: StatusWire = match Self::decode(&a) {
            Ok(w) => w,
            Err(_) if a.status == StatusCode::INTERNAL_SERVER_ERROR => return Err(Self::error(&a)),
            Err(e) => return Err(e),
        };
        let mut st = wire.into_state()?;
        if !with_payloads {
            st.input = None;
            st.output = None;
        }
        Ok(Some(st))
    }

    /// An instance's state.
    pub async fn get_instance(
        &self,
        id: &InstanceId,
        with_payloads: bool,
    ) -> ClientResult<Option<InstanceState>> {
        self.status(id, with_payloads, None).await
    }

    /// An instance's history (Perdure's native form).
    pub async fn get_history(&self, id: &InstanceId) -> ClientResult<Option<Vec<HistoryEvent>>> {
        let path = format!("/instances/{}/history", enc(id.as_str()));
        let a = self
            .send(
                Some(id.as_str()),
                Method::GET,
                &path,
                None,
                None,
                Duration::ZERO,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let a = Self::expect(a, &[StatusCode::OK])?;
        Self::decode(&a).map(Some)
    }

    /// Waits (with server-side long polls) until the instance finishes or `timeout` passes;
    /// returns its last known state.
    pub async fn wait_for_completion(
        &self,
        id: &InstanceId,
        timeout: Duration,
    ) -> ClientResult<Option<InstanceState>> {
        // A timeout too large for the clock (`Duration::MAX`, `?wait=1e19`) waits without end.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let chunk = left.min(self.opts.wait_chunk);
            let st = self.status(id, true, Some(chunk)).await?;
            match &st {
                Some(s) if !s.runtime_status.is_terminal() && !left.is_zero() => {
                    if chunk.is_zero() {
                        return Ok(st);
                    }
                }
                _ => return Ok(st),
            }
        }
    }

    fn instance_query(q: &InstanceQuery) -> String {
        query(&[
            ("createdTimeFrom", time(q.created_from)),
            ("createdTimeTo", time(q.created_to)),
            ("runtimeStatus", statuses(&q.statuses)),
            ("instanceIdPrefix", q.instance_id_prefix.clone()),
            ("name", q.name.clone()),
            ("top", (q.page_size > 0).then(|| q.page_size.to_string())),
            ("showInput", Some(q.fetch_payloads.to_string())),
        ])
    }

    /// One page of instances.
    pub async fn query_instances(&self, q: &InstanceQuery) -> ClientResult<InstancePage> {
        let path = format!("/instances{}", Self::instance_query(q));
        let a = self
            .send(
                None,
                Method::GET,
                &path,
                None,
                q.continuation.as_deref().map(|c| (CONTINUATION, c)),
                Duration::ZERO,
            )
            .await?;
        let a = Self::expect(a, &[StatusCode::OK])?;
        let wires: Vec<StatusWire> = Self::decode(&a)?;
        let mut instances = Vec::with_capacity(wires.len());
        for w in wires {
            let mut st = w.into_state()?;
            if !q.fetch_payloads {
                st.input = None;
                st.output = None;
            }
            instances.push(st);
        }
        Ok(InstancePage {
            instances,
            continuation: a.continuation,
        })
    }

    /// Instances per status.
    pub async fn count_instances(
        &self,
        q: &InstanceQuery,
    ) -> ClientResult<BTreeMap<OrchestrationStatus, u64>> {
        let path = format!("/instanceCounts{}", Self::instance_query(q));
        let a = self
            .send(None, Method::GET, &path, None, None, Duration::ZERO)
            .await?;
        let a = Self::expect(a, &[StatusCode::OK])?;
        let raw: BTreeMap<String, u64> = Self::decode(&a)?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| OrchestrationStatus::parse(&k).map(|s| (s, v)))
            .collect())
    }

    async fn post_op(&self, route: Option<&str>, path: String, body: Body) -> ClientResult<Answer> {
        let a = self
            .send(route, Method::POST, &path, body, None, Duration::ZERO)
            .await?;
        Self::expect(a, &[StatusCode::ACCEPTED, StatusCode::OK])
    }

    /// Raises an event.
    pub async fn raise_event(
        &self,
        id: &InstanceId,
        name: &str,
        data: Option<&Payload>,
    ) -> ClientResult<()> {
        let path = format!("/instances/{}/raiseEvent/{}", enc(id.as_str()), enc(name));
        self.post_op(Some(id.as_str()), path, self::body(data))
            .await
            .map(drop)
    }

    /// Terminates an instance.
    pub async fn terminate(
        &self,
        id: &InstanceId,
        reason: Option<String>,
        recursive: bool,
    ) -> ClientResult<()> {
        let path = format!(
            "/instances/{}/terminate{}",
            enc(id.as_str()),
            query(&[
                ("reason", reason),
                ("recursive", recursive.then(|| "true".to_string()))
            ])
        );
        self.post_op(Some(id.as_str()), path, None).await.map(drop)
    }

    async fn lifecycle(
        &self,
        id: &InstanceId,
        op: &str,
        reason: Option<String>,
    ) -> ClientResult<()> {
        let path = format!(
            "/instances/{}/{op}{}",
            enc(id.as_str()),
            query(&[("reason", reason)])
        );
        self.post_op(Some(id.as_str()), path, None).await.map(drop)
    }

    /// Suspends an instance.
    pub async fn suspend(&self, id: &InstanceId, reason: Option<String>) -> ClientResult<()> {
        self.lifecycle(id, "suspend", reason).await
    }

    /// Resumes an instance.
    pub async fn resume(&self, id: &InstanceId, reason: Option<String>) -> ClientResult<()> {
        self.lifecycle(id, "resume", reason).await
    }

    /// Rewinds a failed instance.
    pub async fn rewind(&self, id: &InstanceId, reason: Option<String>) -> ClientResult<()> {
        self.lifecycle(id, "rewind", reason).await
    }

    /// Restarts an instance; returns the restarted instance's id.
    pub async fn restart(
        &self,
        id: &InstanceId,
        new_instance_id: bool,
    ) -> ClientResult<InstanceId> {
        let path = format!(
            "/instances/{}/restart?restartWithNewInstanceId={new_instance_id}",
            enc(id.as_str())
        );
        let a = self.post_op(Some(id.as_str()), path, None).await?;
        let w: IdWire = Self::decode(&a)?;
        InstanceId::new(w.id).map_err(|e| ClientError::Protocol {
            status: a.status.as_u16(),
            url: a.url.clone(),
            message: format!("bad instance id: {e}"),
        })
    }

    fn purge_answer(a: Answer) -> ClientResult<PurgeResult> {
        if a.status == StatusCode::NOT_FOUND
            && let Ok(w) = serde_json::from_slice::<PurgeWire>(&a.body)
        {
            return Ok(PurgeResult {
                deleted: w.instances_deleted,
                complete: true,
            });
        }
        let a = Self::expect(a, &[StatusCode::OK])?;
        let w: PurgeWire = Self::decode(&a)?;
        Ok(PurgeResult {
            deleted: w.instances_deleted,
            complete: w.complete,
        })
    }

    /// Purges one finished instance.
    pub async fn purge_instance(&self, id: &InstanceId) -> ClientResult<PurgeResult> {
        let path = format!("/instances/{}", enc(id.as_str()));
        let a = self
            .send(
                Some(id.as_str()),
                Method::DELETE,
                &path,
                None,
                None,
                Duration::ZERO,
            )
            .await?;
        Self::purge_answer(a)
    }

    /// Purges one batch of finished instances matching a filter.
    pub async fn purge_instances(&self, f: &PurgeFilter) -> ClientResult<PurgeResult> {
        let path = format!(
            "/instances{}",
            query(&[
                ("createdTimeFrom", time(f.created_from)),
                ("createdTimeTo", time(f.created_to)),
                ("runtimeStatus", statuses(&f.statuses)),
                ("incremental", Some("true".into())),
            ])
        );
        let a = self
            .send(None, Method::DELETE, &path, None, None, Duration::ZERO)
            .await?;
        Self::purge_answer(a)
    }

    /// Registered function names per kind (`orchestrations`, `activities`, `entities`).
    pub async fn registered_functions(&self) -> ClientResult<BTreeMap<String, Vec<String>>> {
        let a = self
            .send(None, Method::GET, "/functions", None, None, Duration::ZERO)
            .await?;
        let a = Self::expect(a, &[StatusCode::OK])?;
        Self::decode(&a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_key() {
        let o = HttpClientOptions::new(["http://h:1"]).with_api_key("pd_secret_0123456789");
        let text = format!("{o:?}");
        assert!(
            !text.contains("pd_secret") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn node_urls_are_normalised_and_checked() {
        let t = HttpTransport::new(HttpClientOptions::new([
            "http://a:1/",
            "http://b:2/runtime/webhooks/durabletask/",
        ]))
        .unwrap();
        assert_eq!(
            t.nodes(),
            [
                "http://a:1/runtime/webhooks/durabletask",
                "http://b:2/runtime/webhooks/durabletask"
            ]
        );
        assert!(matches!(
            HttpTransport::new(HttpClientOptions::new(["a:1"])),
            Err(ClientError::Config(_))
        ));
        assert!(matches!(
            HttpTransport::new(HttpClientOptions::new(Vec::<String>::new())),
            Err(ClientError::Config(_))
        ));
    }

    #[test]
    fn request_urls_are_what_parsing_the_joined_text_gives() {
        let t = HttpTransport::new(HttpClientOptions::new([
            "http://127.0.0.1:8080",
            "https://Example.COM/runtime/webhooks/durabletask/",
            "http://[::1]:9",
        ]))
        .unwrap();
        for (node, url) in t.nodes().iter().zip(&t.urls) {
            for path in [
                "/orchestrators/Approval",
                "/orchestrators/A/my%20id%C3%BC?version=1&scheduledStartTime=2026-01-01T00%3A00%3A00Z",
                "/instances?showInput=true",
                "/instances/x%2Fy/raiseEvent/E",
                "/functions",
                "/entities/Counter/c1?op=add",
            ] {
                let expected = Url::parse(&format!("{node}{path}")).unwrap();
                assert_eq!(HttpTransport::url_on(url, path), expected, "{node} {path}");
            }
        }
    }

    #[test]
    fn query_strings_encode_values() {
        assert_eq!(enc("my id ü/%"), "my%20id%20%C3%BC%2F%25");
        assert_eq!(
            query(&[
                ("a", Some("x y".into())),
                ("b", None),
                ("c", Some("1".into()))
            ]),
            "?a=x%20y&c=1"
        );
        assert_eq!(query(&[("b", None)]), "");
    }
}

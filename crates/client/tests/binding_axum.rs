//! The Durable Client binding of an axum HTTP starter (`perdure_client::binding`), against a
//! real node started in process with the sample app, its HTTP API served on a loopback port.
//! The starter is the example service (`examples/http_starter.rs`) or a router built here,
//! served on its own loopback port and called with reqwest, as a caller would.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use perdure_client::binding::{DurableClientBinding, NodeOrigin};
use perdure_client::{ClientError, DurableClient, InstanceId, StartOptions};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::store::memory::MemoryStore;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

#[allow(dead_code)]
#[path = "../examples/http_starter.rs"]
mod http_starter;

const BASE: &str = "/runtime/webhooks/durabletask";

/// The fields of the check-status body.
const PAYLOAD_FIELDS: [&str; 9] = [
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

/// A node with the sample app (HelloSequence, Approval, Withdraw, ...) on a memory store.
async fn start_node() -> NodeHandle {
    Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(Arc::new(MemoryStore::new()))
        .start()
        .await
        .expect("node starts")
}

/// Serves a router on a loopback port; the listener is bound before this returns, so requests
/// wait in its backlog rather than fail.
async fn serve(app: Router) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// The node's HTTP API (`perdure_node::http::router`).
fn node_api(node: &NodeHandle) -> Router {
    perdure_node::http::router(Arc::new(node.clone()), Default::default())
}

/// A node, its HTTP API on a loopback port, and a binding over HTTP to it.
struct Fixture {
    node: NodeHandle,
    node_url: String,
    binding: DurableClientBinding,
    servers: Vec<JoinHandle<()>>,
}

impl Fixture {
    async fn new() -> Self {
        let node = start_node().await;
        let (addr, server) = serve(node_api(&node)).await;
        let node_url = format!("http://{addr}");
        let binding = DurableClientBinding::http([node_url.clone()]).unwrap();
        Self {
            node,
            node_url,
            binding,
            servers: vec![server],
        }
    }

    /// Serves the example starter over this binding; returns its base URL.
    async fn starter(&mut self) -> String {
        let (addr, server) = serve(http_starter::app(self.binding.clone())).await;
        self.servers.push(server);
        format!("http://{addr}")
    }

    async fn stop(self) {
        for s in &self.servers {
            s.abort();
        }
        self.node.shutdown().await;
    }
}

/// Status, headers and JSON body of an answer.
async fn read(resp: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// Status, headers and JSON body of an axum response.
async fn read_axum(resp: Response) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&bytes).unwrap(),
    )
}

fn uri(body: &Value, field: &str) -> String {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .to_string()
}

/// Checks a check-status answer: 202, `Location` = `statusQueryGetUri`, `Retry-After: 10`,
/// JSON, exactly the payload's fields, every URL on `origin` under the instance's URI.
/// Returns the instance id.
fn assert_check_status(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    origin: &str,
) -> String {
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    let mut expected = PAYLOAD_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(fields, expected);
    assert_eq!(
        headers[header::LOCATION.as_str()],
        uri(body, "statusQueryGetUri")
    );
    assert_eq!(headers[header::RETRY_AFTER.as_str()], "10");
    assert!(
        headers[header::CONTENT_TYPE.as_str()]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let inst = format!("{origin}{BASE}/instances/{id}");
    assert_eq!(uri(body, "statusQueryGetUri"), inst);
    assert_eq!(uri(body, "purgeHistoryDeleteUri"), inst);
    assert_eq!(
        uri(body, "sendEventPostUri"),
        format!("{inst}/raiseEvent/{{eventName}}")
    );
    for f in &PAYLOAD_FIELDS[1..] {
        assert!(uri(body, f).starts_with(&inst), "{f}: {body}");
    }
    id
}

/// The management URLs of the 202 reach the node: the status query shows the instance, the
/// event URL completes an Approval, the purge URL removes it.
#[tokio::test]
async fn check_status_urls_reach_the_node_and_drive_the_instance() {
    let mut fx = Fixture::new().await;
    let starter = fx.starter().await;
    let http = reqwest::Client::new();

    let resp = http
        .post(format!("{starter}/api/orchestrators/Approval"))
        .json(&json!({"timeoutSeconds": 300}))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    let id = assert_check_status(status, &headers, &body, &fx.node_url);

    // The status query URI answers for the instance: not finished yet.
    let (status, _, state) = read(
        http.get(uri(&body, "statusQueryGetUri"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{state}");
    assert_eq!(state["instanceId"], id.as_str());
    assert_eq!(state["name"], "Approval");
    assert_eq!(state["input"], json!({"timeoutSeconds": 300}));

    // The event URL raises the event the orchestration waits for.
    let event_url = uri(&body, "sendEventPostUri").replace("{eventName}", "Approval");
    let resp = http.post(event_url).json(&true).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let (status, _, state) = read(
        http.get(format!(
            "{}?waitForCompletion=30s",
            uri(&body, "statusQueryGetUri")
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["runtimeStatus"], "Completed");
    assert_eq!(state["output"], "approved");

    // The purge URL removes the finished instance.
    let (status, _, purged) = read(
        http.delete(uri(&body, "purgeHistoryDeleteUri"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["instancesDeleted"], 1);
    let gone = http
        .get(uri(&body, "statusQueryGetUri"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    fx.stop().await;
}

/// `?wait=` on a fast orchestration: 200 with the output itself, no `Location`.
#[tokio::test]
async fn wait_answers_the_output_of_a_fast_orchestration() {
    let mut fx = Fixture::new().await;
    let starter = fx.starter().await;
    let resp = reqwest::Client::new()
        .post(format!("{starter}/api/orchestrators/HelloSequence?wait=30"))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
    assert!(headers.get(header::LOCATION.as_str()).is_none());
    assert!(
        headers[header::CONTENT_TYPE.as_str()]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    fx.stop().await;
}

/// `?wait=` on an orchestration that waits for an event: the 202 check-status answer once the
/// time is up; its event URL then lets the instance finish.
#[tokio::test]
async fn wait_answers_202_for_an_orchestration_that_waits_for_an_event() {
    let mut fx = Fixture::new().await;
    let starter = fx.starter().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{starter}/api/orchestrators/Approval?wait=0.3"))
        .json(&json!({"timeoutSeconds": 300}))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    let id = assert_check_status(status, &headers, &body, &fx.node_url);

    let event_url = uri(&body, "sendEventPostUri").replace("{eventName}", "Approval");
    let resp = http.post(event_url).json(&false).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let done = fx
        .binding
        .wait_for_instance_completion(&InstanceId::new(id).unwrap(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.read_output::<String>().unwrap().unwrap(), "rejected");
    fx.stop().await;
}

/// What a finished instance answers, through a binding over either transport: Completed is
/// the output; Failed and Terminated the status object, 200 (500 for Failed when asked); an
/// unknown instance the 202.
async fn finished_answers(binding: DurableClientBinding, tag: &str) {
    let req = Request::post("/api/start").body(()).unwrap();
    let wait = Duration::from_secs(30);
    let tick = Duration::from_millis(100);

    // Failed: withdrawing from an empty account.
    let id = binding
        .schedule_new_orchestration(
            "Withdraw",
            &json!({"account": format!("{tag}-empty"), "amount": 30}),
            StartOptions::with_id(format!("{tag}-withdraw")),
        )
        .await
        .unwrap();
    let resp = binding
        .wait_for_completion_or_create_check_status_response(&req, &id, wait, tick)
        .await
        .unwrap();
    let (status, _, body) = read_axum(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runtimeStatus"], "Failed");
    assert_eq!(body["instanceId"], id.as_str());
    assert_eq!(body["name"], "Withdraw");
    assert_eq!(body["input"]["amount"], 30);
    assert!(
        body["output"]
            .as_str()
            .unwrap()
            .starts_with("Orchestrator function 'Withdraw' failed"),
        "{body}"
    );
    assert!(body["failureDetails"]["errorType"].is_string(), "{body}");
    assert!(body.to_string().contains("InsufficientFunds"), "{body}");

    // Failed, with returnInternalServerErrorOnFailure: 500, and the status query URI asks
    // the node for it too.
    let strict = binding
        .clone()
        .return_internal_server_error_on_failure(true);
    let resp = strict
        .wait_for_completion_or_create_check_status_response(&req, &id, wait, tick)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let payload = strict.create_http_management_payload(&req, &id);
    assert!(
        uri(&payload, "statusQueryGetUri").ends_with("?returnInternalServerErrorOnFailure=true")
    );

    // `showInput=false` in the starter's request leaves the input out, as the status route.
    let hide = Request::post("/api/start?showInput=false")
        .body(())
        .unwrap();
    let resp = binding
        .wait_for_completion_or_create_check_status_response(&hide, &id, wait, tick)
        .await
        .unwrap();
    let (_, _, body) = read_axum(resp).await;
    assert_eq!(body["input"], Value::Null, "{body}");

    // Terminated.
    let id = binding
        .schedule_new_orchestration(
            "Approval",
            &json!({"timeoutSeconds": 300}),
            StartOptions::with_id(format!("{tag}-terminated")),
        )
        .await
        .unwrap();
    binding
        .terminate(&id, Some("cancelled"), false)
        .await
        .unwrap();
    let resp = binding
        .wait_for_completion_or_create_check_status_response(&req, &id, wait, tick)
        .await
        .unwrap();
    let (status, _, body) = read_axum(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["runtimeStatus"], "Terminated");

    // Completed: the output, even when null.
    let id = binding
        .schedule_new_orchestration(
            "HelloSequence",
            &(),
            StartOptions::with_id(format!("{tag}-hello")),
        )
        .await
        .unwrap();
    let resp = binding
        .wait_for_completion_or_create_check_status_response(&req, &id, wait, tick)
        .await
        .unwrap();
    let (status, _, body) = read_axum(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0], "Hello Tokyo!");

    // Unknown: the check-status answer, as Durable Functions (it found no status).
    let nobody = InstanceId::new(format!("{tag}-nobody")).unwrap();
    let resp = binding
        .wait_for_completion_or_create_check_status_response(&req, &nobody, tick, tick)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // A retry interval longer than the timeout is refused, as Durable Functions does.
    let err = binding
        .wait_for_completion_or_create_check_status_response(&req, &nobody, tick, wait)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Config(_)), "{err}");
}

#[tokio::test]
async fn finished_instances_answer_as_durable_functions_over_http() {
    let fx = Fixture::new().await;
    finished_answers(fx.binding.clone(), "http").await;
    fx.stop().await;
}

#[tokio::test]
async fn finished_instances_answer_as_durable_functions_in_process() {
    let node = start_node().await;
    finished_answers(
        DurableClientBinding::in_process(Arc::new(node.clone())),
        "local",
    )
    .await;
    node.shutdown().await;
}

/// An app that embeds a node and serves its HTTP API next to the starter: the management
/// URLs use the request's origin (or the proxy's, from `X-Forwarded-*`), and they work.
#[tokio::test]
async fn in_process_binding_points_urls_at_the_app_serving_the_node_api() {
    let node = start_node().await;
    let binding = DurableClientBinding::in_process(Arc::new(node.clone()));
    assert_eq!(binding.origin(), &NodeOrigin::Request);
    let app = http_starter::app(binding).merge(node_api(&node));
    let (addr, server) = serve(app).await;
    let origin = format!("http://{addr}");
    let http = reqwest::Client::new();

    let resp = http
        .post(format!("{origin}/api/orchestrators/HelloSequence"))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    let id = assert_check_status(status, &headers, &body, &origin);
    let (status, _, state) = read(
        http.get(format!(
            "{}?waitForCompletion=30s",
            uri(&body, "statusQueryGetUri")
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["instanceId"], id.as_str());
    assert_eq!(state["output"][2], "Hello London!");

    // Behind a proxy.
    let resp = http
        .post(format!("{origin}/api/orchestrators/HelloSequence"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "durable.example.com")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_check_status(status, &headers, &body, "https://durable.example.com");

    server.abort();
    node.shutdown().await;
}

/// An app state that holds the binding among other things.
#[derive(Clone)]
struct AppState {
    durable: DurableClientBinding,
    greeting: &'static str,
}

impl FromRef<AppState> for DurableClientBinding {
    fn from_ref(state: &AppState) -> Self {
        state.durable.clone()
    }
}

async fn start_with_id(
    client: DurableClientBinding,
    State(state): State<AppState>,
    parts: Parts,
    Path((name, id)): Path<(String, String)>,
    axum::Json(input): axum::Json<Value>,
) -> Result<Response, ClientError> {
    let id = client
        .schedule_new_orchestration(&name, &input, StartOptions::with_id(id))
        .await?;
    let mut resp = client.create_check_status_response(&parts, &id);
    resp.headers_mut()
        .insert("x-greeting", state.greeting.parse().unwrap());
    Ok(resp)
}

/// `State<DurableClient>` in a router whose state is the binding.
async fn status(State(client): State<DurableClient>, Path(id): Path<String>) -> Response {
    match client
        .get_instance(&InstanceId::new(id).unwrap(), false, false)
        .await
    {
        Ok(Some(m)) => m.runtime_status().as_str().into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The extractor takes the binding from an app state through `FromRef`, in a real router on
/// a loopback port; a public origin set on the binding names the management URLs; client
/// errors are answered with the node's status codes.
#[tokio::test]
async fn extractor_takes_the_binding_from_the_app_state() {
    let fx = Fixture::new().await;
    let state = AppState {
        durable: fx
            .binding
            .clone()
            .with_public_origin("https://durable.example.com/runtime/webhooks/durabletask/"),
        greeting: "hello",
    };
    let app = Router::new()
        .route("/start/{name}/{id}", post(start_with_id))
        .with_state(state);
    let (addr, server) = serve(app).await;
    let status_app = Router::new()
        .route("/status/{id}", get(status))
        .with_state(fx.binding.clone());
    let (status_addr, status_server) = serve(status_app).await;
    let http = reqwest::Client::new();

    let resp = http
        .post(format!("http://{addr}/start/Approval/from-ref"))
        .json(&json!({"timeoutSeconds": 300}))
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(headers["x-greeting"], "hello");
    let id = assert_check_status(status, &headers, &body, "https://durable.example.com");
    assert_eq!(id, "from-ref");
    // The instance was started on the node.
    let resp = http
        .get(format!("http://{status_addr}/status/from-ref"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let shown = resp.text().await.unwrap();
    assert!(matches!(shown.as_str(), "Pending" | "Running"), "{shown}");

    // A second start of the live id: the node's 409, as a JSON error with the typed error.
    let resp = http
        .post(format!("http://{addr}/start/Approval/from-ref"))
        .json(&json!({"timeoutSeconds": 300}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["ExceptionType"], "AlreadyExists");
    assert!(body["perdureError"]["AlreadyExists"].is_object(), "{body}");
    // An unknown orchestration: 404 with what is registered.
    let resp = http
        .post(format!("http://{addr}/start/NoSuchThing/x1"))
        .json(&json!({"timeoutSeconds": 300}))
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["ExceptionType"], "UnknownName");
    assert!(body["Message"].as_str().unwrap().contains("HelloSequence"));

    server.abort();
    status_server.abort();
    fx.stop().await;
}

/// The example starter refuses a body that is not JSON and a bad `wait` before starting
/// anything.
#[tokio::test]
async fn the_example_starter_refuses_bad_requests_before_starting() {
    let mut fx = Fixture::new().await;
    let starter = fx.starter().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{starter}/api/orchestrators/HelloSequence"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = http
        .post(format!("{starter}/api/orchestrators/HelloSequence?wait=-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let counts = fx
        .binding
        .count_instances(Default::default())
        .await
        .unwrap();
    assert_eq!(counts.values().sum::<u64>(), 0, "{counts:?}");
    fx.stop().await;
}

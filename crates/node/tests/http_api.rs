//! The HTTP API's routes, status codes and JSON shapes, over an in-memory `ManagementApi`.

mod http_fake;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_fake::FakeApi;
use perdure_node::http::{HttpOptions, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const B: &str = "/runtime/webhooks/durabletask";

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct App {
    api: Arc<FakeApi>,
    router: axum::Router,
}

impl App {
    fn new() -> Self {
        Self::with(HttpOptions::default())
    }
    fn with(opts: HttpOptions) -> Self {
        let api = Arc::new(FakeApi::default());
        let router = router(api.clone(), opts);
        Self { api, router }
    }
    async fn req(&self, method: &str, uri: &str, ct: Option<&str>, body: &[u8]) -> Resp {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "node1:8080");
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let req = b.body(Body::from(body.to_vec())).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }
    async fn get(&self, uri: &str) -> Resp {
        self.req("GET", uri, None, b"").await
    }
    async fn post(&self, uri: &str, body: &str) -> Resp {
        self.req("POST", uri, Some("application/json"), body.as_bytes())
            .await
    }
    async fn post_empty(&self, uri: &str) -> Resp {
        // What the Python client sends for a POST without a body.
        self.req("POST", uri, Some("application/octet-stream"), b"")
            .await
    }
    async fn delete(&self, uri: &str) -> Resp {
        self.req("DELETE", uri, None, b"").await
    }
}

#[tokio::test]
async fn start_answers_202_with_location_and_management_payload() {
    let app = App::new();
    let r = app
        .post(
            &format!("{B}/orchestrators/Approval/order-1"),
            r#"{"n": 1}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let j = r.json();
    let base = format!("http://node1:8080{B}/instances/order-1");
    assert_eq!(j["id"], "order-1");
    assert_eq!(j["statusQueryGetUri"], base);
    assert_eq!(
        j["sendEventPostUri"],
        format!("{base}/raiseEvent/{{eventName}}")
    );
    assert_eq!(
        j["terminatePostUri"],
        format!("{base}/terminate?reason={{text}}")
    );
    assert_eq!(j["rewindPostUri"], format!("{base}/rewind?reason={{text}}"));
    assert_eq!(j["purgeHistoryDeleteUri"], base);
    assert_eq!(j["restartPostUri"], format!("{base}/restart"));
    assert_eq!(
        j["suspendPostUri"],
        format!("{base}/suspend?reason={{text}}")
    );
    assert_eq!(j["resumePostUri"], format!("{base}/resume?reason={{text}}"));
    assert_eq!(r.header("location"), Some(base.as_str()));
    assert_eq!(r.header("retry-after"), Some("10"));

    // Without an id, one is generated; an empty octet-stream body is no input.
    let r = app.post_empty(&format!("{B}/orchestrators/Hello")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let s = app.get(&format!("{B}/instances/{id}")).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json()["input"], Value::Null);

    // A live id cannot be started again.
    let r = app
        .post_empty(&format!("{B}/orchestrators/Approval/order-1"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["ExceptionType"], "AlreadyExists");
}

#[tokio::test]
async fn start_rejects_unknown_names_bad_ids_bad_json_and_big_bodies() {
    let app = App::with(HttpOptions {
        max_payload_bytes: 1024,
        ..HttpOptions::default()
    });
    let r = app.post_empty(&format!("{B}/orchestrators/Nope")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let j = r.json();
    let msg = j["ExceptionMessage"].as_str().unwrap();
    assert!(msg.contains("Nope") && msg.contains("Hello"), "{msg}");
    assert_eq!(
        j["perdureError"]["UnknownName"]["registered"][0],
        "Approval"
    );

    let r = app
        .post(&format!("{B}/orchestrators/Hello/x"), "{nope")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.json()["Message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("malformed JSON") && msg.contains("line 1"),
        "{msg}"
    );

    let long = "a".repeat(300);
    let r = app
        .post_empty(&format!("{B}/orchestrators/Hello/{long}"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["Message"].as_str().unwrap().contains("256"));

    let big = format!("\"{}\"", "x".repeat(2000));
    let r = app
        .post(&format!("{B}/orchestrators/Hello/big"), &big)
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json()["Message"].is_string());
}

#[tokio::test]
async fn python_double_encoded_input_is_stored_as_sent() {
    let app = App::new();
    // The Python client sends the JSON text of {"city": "Tokyo"} as a JSON string literal.
    let sent = r#""{\"city\": \"Tokyo\"}""#;
    let r = app
        .post(&format!("{B}/orchestrators/Hello/py-1"), sent)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let s = app.get(&format!("{B}/instances/py-1")).await.json();
    assert_eq!(s["input"], json!(r#"{"city": "Tokyo"}"#));
    assert_eq!(s["output"], json!(r#"{"city": "Tokyo"}"#));
}

#[tokio::test]
async fn status_codes_fields_and_query_flags() {
    let app = App::new();
    app.post(
        &format!("{B}/orchestrators/Approval/a%20b%20%C3%BC"),
        r#"[1,2]"#,
    )
    .await;
    // Percent-encoded ids are decoded.
    let r = app
        .get(&format!("{B}/instances/a%20b%20%C3%BC?showInput=True"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        r.header("location"),
        Some(format!("http://node1:8080{B}/instances/a%20b%20%C3%BC").as_str())
    );
    assert_eq!(r.header("retry-after"), Some("5"));
    let j = r.json();
    assert_eq!(j["name"], "Approval");
    assert_eq!(j["instanceId"], "a b ü");
    assert_eq!(j["runtimeStatus"], "Running");
    assert_eq!(j["input"], json!([1, 2]));
    assert_eq!(j["output"], Value::Null);
    assert_eq!(j["customStatus"], Value::Null);
    assert!(j["createdTime"].as_str().unwrap().ends_with('Z'));
    assert!(j["lastUpdatedTime"].as_str().unwrap().ends_with('Z'));
    assert!(j.get("historyEvents").is_none());

    let j = app
        .get(&format!("{B}/instances/a%20b%20%C3%BC?showInput=FALSE"))
        .await
        .json();
    assert_eq!(j["input"], Value::Null);

    let r = app
        .get(&format!(
            "{B}/instances/a%20b%20%C3%BC?showHistory=true&showHistoryOutput=True"
        ))
        .await;
    let h = &r.json()["historyEvents"];
    assert_eq!(h[0]["EventType"], "ExecutionStarted");
    assert_eq!(h[0]["FunctionName"], "Approval");
    assert_eq!(h[0]["Input"], json!([1, 2]));

    let r = app
        .get(&format!("{B}/instances/a%20b%20%C3%BC?showInput=maybe"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Unknown: 404 with a JSON body.
    let r = app.get(&format!("{B}/instances/ghost")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["ExceptionType"], "NotFound");

    // Failed: 200, or 500 when asked.
    app.post_empty(&format!("{B}/orchestrators/Fails/f1")).await;
    let r = app.get(&format!("{B}/instances/f1")).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["runtimeStatus"], "Failed");
    assert!(j["output"].as_str().unwrap().contains("it failed"));
    assert_eq!(j["failureDetails"]["errorType"], "Boom");
    let r = app
        .get(&format!(
            "{B}/instances/f1?returnInternalServerErrorOnFailure=true"
        ))
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    // The server-side wait answers the final state.
    let r = app
        .get(&format!("{B}/instances/f1?waitForCompletion=2s"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .get(&format!("{B}/instances/f1?waitForCompletion=soon"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Native history.
    let r = app.get(&format!("{B}/instances/f1/history")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()[0]["kind"]["ExecutionStarted"].is_object());
}

#[tokio::test]
async fn list_pages_with_continuation_header_and_filters() {
    let app = App::new();
    for i in 0..25 {
        app.post_empty(&format!("{B}/orchestrators/Hello/h-{i:02}"))
            .await;
    }
    for i in 0..5 {
        app.post_empty(&format!("{B}/orchestrators/Approval/r-{i}"))
            .await;
    }
    // Python's get_status_all: trailing slash, no top.
    let r = app.get(&format!("{B}/instances/")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json().as_array().unwrap().len(), 30);
    assert!(r.header("x-ms-continuation-token").is_none());

    // Paging with top and the token sent back in the request header.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut b = Request::builder().uri(format!("{B}/instances?top=7&runtimeStatus=Completed"));
        if let Some(t) = &token {
            b = b.header("x-ms-continuation-token", t);
        }
        let resp = app
            .router
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        token = resp
            .headers()
            .get("x-ms-continuation-token")
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let page: Vec<Value> = serde_json::from_slice(&body).unwrap();
        assert!(page.len() <= 7);
        seen.extend(
            page.into_iter()
                .map(|v| v["instanceId"].as_str().unwrap().to_string()),
        );
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 25);

    let r = app
        .get(&format!(
            "{B}/instances?runtimeStatus=Running,Pending&instanceIdPrefix=r-&createdTimeFrom=2020-01-01T00:00:00.000000Z"
        ))
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let r = app.get(&format!("{B}/instances?name=Approval")).await;
    assert_eq!(r.json().as_array().unwrap().len(), 5);
    let r = app.get(&format!("{B}/instances?runtimeStatus=Bogus")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = app.get(&format!("{B}/instanceCounts")).await;
    let j = r.json();
    assert_eq!(j["Completed"], 25);
    assert_eq!(j["Running"], 5);
    assert_eq!(j["Failed"], 0);
}

#[tokio::test]
async fn purge_one_and_by_filter() {
    let app = App::new();
    for i in 0..250 {
        app.post_empty(&format!("{B}/orchestrators/Hello/p-{i}"))
            .await;
    }
    app.post_empty(&format!("{B}/orchestrators/Approval/live"))
        .await;
    let r = app.delete(&format!("{B}/instances/p-0")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["instancesDeleted"], 1);
    let r = app.delete(&format!("{B}/instances/p-0")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.delete(&format!("{B}/instances/live")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // One batch at a time when asked.
    let r = app
        .delete(&format!(
            "{B}/instances/?runtimeStatus=Completed&incremental=true"
        ))
        .await;
    assert_eq!(
        r.json(),
        json!({"instancesDeleted": 100, "complete": false})
    );
    // Otherwise every batch.
    let r = app
        .delete(&format!(
            "{B}/instances/?createdTimeFrom=2020-01-01T00:00:00.000000Z&runtimeStatus=Completed"
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["instancesDeleted"], 149);
    let r = app
        .delete(&format!("{B}/instances/?runtimeStatus=Completed"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["instancesDeleted"], 0);
}

#[tokio::test]
async fn events_and_lifecycle() {
    let app = App::new();
    app.post_empty(&format!("{B}/orchestrators/Approval/w"))
        .await;
    let r = app
        .post(&format!("{B}/instances/w/raiseEvent/Approved"), r#""true""#)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.body.is_empty());
    let r = app
        .post_empty(&format!("{B}/instances/w/raiseEvent/Ping"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let raised = app.api.raised();
    assert_eq!(raised[0].1, "Approved");
    assert_eq!(
        raised[0].2.as_ref().unwrap().as_json_str(),
        Some(r#""true""#)
    );
    assert!(raised[1].2.is_none());
    let r = app
        .post(&format!("{B}/instances/nope/raiseEvent/X"), "1")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = app
        .post_empty(&format!("{B}/instances/w/suspend?reason=pause"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let j = app.get(&format!("{B}/instances/w")).await.json();
    assert_eq!(j["runtimeStatus"], "Suspended");
    let r = app
        .post_empty(&format!("{B}/instances/w/resume?reason=go"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .post_empty(&format!("{B}/instances/w/rewind?reason=x"))
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    let r = app
        .post_empty(&format!("{B}/instances/w/terminate?reason=enough%20now"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let j = app.get(&format!("{B}/instances/w")).await.json();
    assert_eq!(j["runtimeStatus"], "Terminated");
    assert_eq!(j["output"], "enough now");
    // Finished: 410.
    for op in ["terminate", "suspend", "resume"] {
        let r = app.post_empty(&format!("{B}/instances/w/{op}")).await;
        assert_eq!(r.status, StatusCode::GONE, "{op}");
        assert_eq!(r.json()["ExceptionType"], "InvalidState");
    }
    let r = app
        .post(&format!("{B}/instances/w/raiseEvent/Late"), "1")
        .await;
    assert_eq!(r.status, StatusCode::GONE);
    let r = app
        .post_empty(&format!("{B}/instances/ghost/terminate"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Rewind a failed instance.
    app.post_empty(&format!("{B}/orchestrators/Fails/f")).await;
    let r = app
        .post_empty(&format!("{B}/instances/f/rewind?reason=retry"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    // Restart: 202 with the new instance's management payload.
    let r = app
        .post_empty(&format!(
            "{B}/instances/w/restart?restartWithNewInstanceId=False"
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.json()["id"], "w");
    let r = app
        .post_empty(&format!("{B}/instances/ghost/restart"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.post_empty(&format!("{B}/instances/f/restart")).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_ne!(r.json()["id"], "f");
    assert!(r.header("location").is_some());
}

#[tokio::test]
async fn entities_signal_get_list_clean() {
    let app = App::new();
    let r = app
        .post(&format!("{B}/entities/Counter/c1?op=add"), r#"5"#)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // Double-encoded, as the Python client sends it.
    let r = app
        .post(&format!("{B}/entities/counter/c1?op=add"), r#""2""#)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .post_empty(&format!("{B}/entities/counter/c2?op=reset"))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app.post_empty(&format!("{B}/entities/counter/c1")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .post_empty(&format!("{B}/entities/ghost/c1?op=add"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = app.get(&format!("{B}/entities/counter/c1")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!(7));
    let r = app.get(&format!("{B}/entities/counter/none")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = app
        .get(&format!("{B}/entities/counter?fetchState=true"))
        .await;
    let j = r.json();
    assert_eq!(j.as_array().unwrap().len(), 2);
    assert_eq!(j[0]["entityId"], json!({"name": "counter", "key": "c1"}));
    assert_eq!(j[0]["state"], json!(7));
    assert!(j[0]["lastOperationTime"].is_string());
    let j = app.get(&format!("{B}/entities/")).await.json();
    assert!(j[0].get("state").is_none());

    let r = app
        .post_empty(&format!("{B}/maintenance/cleanEntityStorage"))
        .await;
    assert_eq!(
        r.json(),
        json!({"numberOfEmptyEntitiesRemoved": 2, "numberOfOrphanedLocksRemoved": 1})
    );
}

#[tokio::test]
async fn probes_metrics_and_json_fallbacks() {
    let app = App::with(HttpOptions {
        readiness: Some(Arc::new(|| false)),
        metrics: Some(Arc::new(|| "perdure_up 1".to_string())),
        ..HttpOptions::default()
    });
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    let r = app.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["status"], "not ready");
    let r = app.get("/metrics").await;
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.starts_with("perdure_up 1\n"), "{text}");
    assert!(
        text.contains("perdure_http_requests_total{class=\"2xx\"}"),
        "{text}"
    );

    let r = app.get("/runtime/webhooks/durabletaskinstances/x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["Message"].as_str().unwrap().contains("no route"));
    let r = app.req("PUT", &format!("{B}/instances/x"), None, b"").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    r.json();
    let r = app.get(&format!("{B}/functions")).await.json();
    assert_eq!(r["entities"], json!(["counter"]));
    // The loopback RPC layout of the Durable Functions host serves the same routes.
    let r = app.get("/durabletask/functions").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn hostile_inputs_get_json_answers_and_never_a_panic() {
    let app = App::new();
    app.post_empty(&format!("{B}/orchestrators/Approval/x"))
        .await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("GET", format!("{B}/instances/%FF%FE"), vec![]),
        ("GET", format!("{B}/instances/a%2Fb"), vec![]),
        ("GET", format!("{B}/instances/x?top=-1"), vec![]),
        (
            "GET",
            format!("{B}/instances?top=99999999999999999999"),
            vec![],
        ),
        (
            "GET",
            format!("{B}/instances?createdTimeFrom=2024-02-30T99:99:99Z"),
            vec![],
        ),
        (
            "GET",
            format!("{B}/instances?createdTimeFrom=%F0%9F%92%A9"),
            vec![],
        ),
        ("GET", format!("{B}/instances/x?showHistory=%00"), vec![]),
        // Extreme numbers: long zone offsets (an overflow before issue 12), huge durations.
        (
            "GET",
            format!("{B}/instances?createdTimeFrom=2024-01-01T00:00:00%2B99999999999999999"),
            vec![],
        ),
        (
            "GET",
            format!("{B}/instances?createdTimeTo=2024-01-01T00:00:00-9223372036854775807:99"),
            vec![],
        ),
        (
            "GET",
            format!("{B}/instances?createdTimeFrom=99999999999-01-01"),
            vec![],
        ),
        (
            "GET",
            format!("{B}/instances/x?waitForCompletion=18446744073709551615m"),
            vec![],
        ),
        (
            "GET",
            format!("{B}/instances?continuationToken=%2Bf%2Bf"),
            vec![],
        ),
        ("GET", format!("{B}/entities/a@b/k"), vec![]),
        ("POST", format!("{B}/orchestrators/Hello/x%00y"), vec![]),
        (
            "POST",
            format!("{B}/orchestrators/Hello/ok"),
            vec![0xff, 0xfe, 0x00],
        ),
        (
            "POST",
            format!("{B}/orchestrators/Hello/ok2"),
            deep.into_bytes(),
        ),
        (
            "POST",
            format!("{B}/instances/x/raiseEvent/e"),
            b"{\"a\":".to_vec(),
        ),
        (
            "POST",
            format!("{B}/entities/counter/k?op=add"),
            b"\"\\ud800\"".to_vec(),
        ),
        (
            "POST",
            format!("{B}/instances/x/terminate?reason=%ZZ"),
            vec![],
        ),
        ("DELETE", format!("{B}/instances?runtimeStatus=,,,"), vec![]),
        (
            "POST",
            format!("{B}/instances/x/restart?restartWithNewInstanceId=maybe"),
            vec![],
        ),
    ];
    for (method, uri, body) in cases {
        let r = app.req(method, &uri, Some("application/json"), &body).await;
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{method} {uri}: {}",
            r.status
        );
        if !r.body.is_empty() {
            let _: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
                panic!(
                    "{method} {uri}: not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&r.body)
                )
            });
        }
    }
}

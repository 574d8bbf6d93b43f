//! OpenTelemetry traces: a spawned `perdure-test-node` exports its spans over OTLP/HTTP to a
//! receiver this test runs (the OTLP protobuf messages of `opentelemetry-proto`), and the
//! span trees are checked: a hello-3 started with a `traceparent` header, a fan-out started
//! through `perdure-client`, a sub-orchestration with an entity, and an orchestration that
//! finishes after the node restarted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use perdure_client::{DurableClient, StartOptions};
use perdure_tests::NodeProcess;
use prost::Message as _;

/// A span as received: ids in hex.
#[derive(Clone, Debug)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attrs: BTreeMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Span>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves OTLP/HTTP `POST /v1/traces` on a free port; returns its origin and the spans.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body.as_ref())
                    .expect("an OTLP export request");
                let mut got = store.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let attrs = s
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                        Some(AnyValue::StringValue(s)) => s,
                                        Some(AnyValue::IntValue(i)) => i.to_string(),
                                        Some(AnyValue::BoolValue(b)) => b.to_string(),
                                        other => format!("{other:?}"),
                                    };
                                    (kv.key.clone(), v)
                                })
                                .collect();
                            got.push(Span {
                                trace: hex(&s.trace_id),
                                id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                name: s.name,
                                attrs,
                            });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (origin, spans)
}

/// Waits (up to 30 s) until `done` holds for the spans of `trace`; returns them.
async fn trace_spans(spans: &Spans, trace: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let of: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        if done(&of) {
            return of;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {trace} incomplete: {of:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn orchestration_of<'a>(spans: &'a [Span], name: &str, instance: &str) -> Option<&'a Span> {
    spans.iter().find(|s| {
        s.name == format!("orchestration {name}")
            && s.attrs.get("perdure.instance_id").map(String::as_str) == Some(instance)
    })
}

fn has_orchestration(name: &'static str, instance: &'static str) -> impl Fn(&[Span]) -> bool {
    move |s| orchestration_of(s, name, instance).is_some()
}

const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T2: &str = "0af7651916cd43dd8448eb211c80319c";
const T3: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f809";
const T4: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
const T5: &str = "5f4e3d2c1b0a99887766554433221100";
const T6: &str = "66666666666666666666666666666666";
const T7: &str = "77777777777777777777777777777777";
const CALLER: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{CALLER}-01")
}

async fn start_raw(origin: &str, name: &str, id: &str, input: &str, trace: &str) {
    let r = reqwest::Client::new()
        .post(format!(
            "{origin}/runtime/webhooks/durabletask/orchestrators/{name}/{id}"
        ))
        .header("traceparent", traceparent(trace))
        .header("content-type", "application/json")
        .body(input.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_form_one_trace_per_orchestration() {
    let (otlp, spans) = receiver().await;
    let envs = [
        ("PERDURE_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let grpc = format!("127.0.0.1:{port}");
    let node = NodeProcess::spawn_test_app_env(&["--grpc", &grpc], &envs).unwrap();
    let client = DurableClient::http([node.origin.as_str()]).unwrap();

    // hello-3 with a traceparent header: request span -> orchestration span -> 4 episodes
    // and 3 activities.
    start_raw(&node.origin, "HelloSequence", "otel-hello", "", T1).await;
    let s = trace_spans(&spans, T1, has_orchestration("HelloSequence", "otel-hello")).await;
    let http = named(
        &s,
        "POST /runtime/webhooks/durabletask/orchestrators/{name}/{id}",
    );
    assert_eq!(http.len(), 1, "{s:#?}");
    assert_eq!(
        http[0].parent, CALLER,
        "the request span is the caller's child"
    );
    let orch = orchestration_of(&s, "HelloSequence", "otel-hello").unwrap();
    assert_eq!(
        orch.parent, http[0].id,
        "the orchestration span is the start's child"
    );
    for k in ["perdure.execution_id", "perdure.partition", "perdure.name"] {
        assert!(orch.attrs.contains_key(k), "{k}: {orch:?}");
    }
    assert_eq!(orch.attrs["perdure.status"], "Completed");
    let episodes = named(&s, "episode HelloSequence");
    let activities = named(&s, "activity SayHello");
    // One span per episode and per activity attempt: replays add none.
    assert_eq!(episodes.len(), 4, "{s:#?}");
    assert_eq!(activities.len(), 3, "{s:#?}");
    for e in episodes.iter().chain(&activities) {
        assert_eq!(e.parent, orch.id, "{e:?}");
        assert_eq!(e.attrs["instance"], "otel-hello");
        assert_eq!(e.attrs["execution_id"], orch.attrs["perdure.execution_id"]);
        assert_eq!(e.attrs["partition"], orch.attrs["perdure.partition"]);
    }
    // Nothing else in the trace: every span is one of those.
    assert_eq!(s.len(), 1 + 1 + 4 + 3, "{s:#?}");

    // A restart under the same id joins the restart request's trace (admin-free node).
    let r = reqwest::Client::new()
        .post(format!(
            "{}/runtime/webhooks/durabletask/instances/otel-hello/restart?restartWithNewInstanceId=false",
            node.origin
        ))
        .header("traceparent", traceparent(T7))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let s = trace_spans(&spans, T7, has_orchestration("HelloSequence", "otel-hello")).await;
    let restart = named(
        &s,
        "POST /runtime/webhooks/durabletask/instances/{id}/restart",
    );
    assert_eq!(restart.len(), 1, "{s:#?}");
    let orch = orchestration_of(&s, "HelloSequence", "otel-hello").unwrap();
    assert_eq!(orch.parent, restart[0].id);
    assert_eq!(named(&s, "activity SayHello").len(), 3, "{s:#?}");
    assert!(
        s.iter().all(|x| !x.parent.is_empty()),
        "no root but the caller's: {s:#?}"
    );

    // A fan-out started through perdure-client with a trace parent: its 5 activities are
    // the orchestration span's children.
    let opts = StartOptions {
        instance_id: Some("otel-fan".into()),
        trace_parent: Some(traceparent(T2)),
        ..StartOptions::default()
    };
    client
        .schedule_new_orchestration("FanOutFanIn", &5u64, opts)
        .await
        .unwrap();
    let s = trace_spans(&spans, T2, has_orchestration("FanOutFanIn", "otel-fan")).await;
    let orch = orchestration_of(&s, "FanOutFanIn", "otel-fan").unwrap();
    let squares = named(&s, "activity Square");
    assert_eq!(squares.len(), 5, "{s:#?}");
    assert!(squares.iter().all(|a| a.parent == orch.id), "{s:#?}");
    assert!(
        named(&s, "episode FanOutFanIn")
            .iter()
            .all(|e| e.parent == orch.id)
    );

    // A sub-orchestration: its orchestration span is its parent's child, its activities its
    // own, all in the parent's trace.
    start_raw(
        &node.origin,
        "ChaosMix",
        "otel-mix",
        r#"{"counter":"otel","n":2}"#,
        T3,
    )
    .await;
    let s = trace_spans(&spans, T3, |s| {
        has_orchestration("ChaosMix", "otel-mix")(s)
            && s.iter().any(|x| x.name == "orchestration FanOutFanIn")
    })
    .await;
    let parent = orchestration_of(&s, "ChaosMix", "otel-mix").unwrap();
    let child = named(&s, "orchestration FanOutFanIn");
    assert_eq!(child.len(), 1, "{s:#?}");
    assert_eq!(child[0].parent, parent.id);
    let squares = named(&s, "activity Square");
    assert_eq!(squares.len(), 2, "{s:#?}");
    assert!(squares.iter().all(|a| a.parent == child[0].id), "{s:#?}");
    assert!(
        named(&s, "episode ChaosMix")
            .iter()
            .all(|e| e.parent == parent.id)
    );

    // The Durable Task gRPC protocol: the request's parentTraceContext.
    use perdure_node::grpc::proto;
    let mut sidecar = proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient::connect(
        format!("http://{grpc}"),
    )
    .await
    .unwrap();
    sidecar
        .start_instance(proto::CreateInstanceRequest {
            name: "HelloSequence".into(),
            instance_id: "otel-grpc".into(),
            parent_trace_context: Some(proto::TraceContext {
                trace_parent: traceparent(T5),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = trace_spans(&spans, T5, has_orchestration("HelloSequence", "otel-grpc")).await;
    let rpc = named(&s, "StartInstance");
    assert_eq!(rpc.len(), 1, "{s:#?}");
    assert_eq!(rpc[0].parent, CALLER);
    let orch = orchestration_of(&s, "HelloSequence", "otel-grpc").unwrap();
    assert_eq!(orch.parent, rpc[0].id);
    assert_eq!(named(&s, "activity SayHello").len(), 3, "{s:#?}");
    node.terminate().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_survives_a_restart() {
    let (otlp, spans) = receiver().await;
    let data = tempfile::tempdir().unwrap();
    let envs = [
        ("PERDURE_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let args = |port: &str| -> Vec<std::ffi::OsString> {
        [
            "dev",
            "--http",
            port,
            "--grpc",
            "off",
            "--partitions",
            "4",
            "--data-dir",
        ]
        .iter()
        .map(Into::into)
        .chain([data.path().as_os_str().to_owned()])
        .collect()
    };
    let node =
        NodeProcess::spawn_app(&args("127.0.0.1:0"), &envs, tempfile::tempdir().unwrap()).unwrap();
    start_raw(&node.origin, "EchoEvent", "otel-restart", "", T4).await;
    start_raw(&node.origin, "EchoEvent", "otel-terminated", "", T6).await;
    trace_spans(&spans, T6, |s| !named(s, "episode EchoEvent").is_empty()).await;
    // The first episode ran (it waits for the event) before the stop.
    let first = trace_spans(&spans, T4, |s| !named(s, "episode EchoEvent").is_empty()).await;
    let http = named(
        &first,
        "POST /runtime/webhooks/durabletask/orchestrators/{name}/{id}",
    );
    assert_eq!(http.len(), 1);
    let start_span = http[0].id.clone();
    assert!(node.terminate().unwrap());

    let node =
        NodeProcess::spawn_app(&args("127.0.0.1:0"), &envs, tempfile::tempdir().unwrap()).unwrap();
    let r = reqwest::Client::new()
        .post(format!(
            "{}/runtime/webhooks/durabletask/instances/otel-restart/raiseEvent/Ping",
            node.origin
        ))
        .header("content-type", "application/json")
        .body("true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let s = trace_spans(&spans, T4, has_orchestration("EchoEvent", "otel-restart")).await;
    let orch = orchestration_of(&s, "EchoEvent", "otel-restart").unwrap();
    assert_eq!(
        orch.parent, start_span,
        "the stored context outlived the process"
    );
    let episodes = named(&s, "episode EchoEvent");
    assert_eq!(episodes.len(), 2, "one episode per process: {s:#?}");
    assert!(episodes.iter().all(|e| e.parent == orch.id));

    // An instance terminated by the restarted node, which never ran an episode of it: its
    // orchestration span is exported too.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/runtime/webhooks/durabletask/instances/otel-terminated/terminate?reason=test",
            node.origin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let s = trace_spans(
        &spans,
        T6,
        has_orchestration("EchoEvent", "otel-terminated"),
    )
    .await;
    let orch = orchestration_of(&s, "EchoEvent", "otel-terminated").unwrap();
    assert_eq!(orch.attrs["perdure.status"], "Terminated");
    node.terminate().unwrap();
}

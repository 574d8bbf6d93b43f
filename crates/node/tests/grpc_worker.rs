//! The worker side of the Durable Task gRPC protocol against a node, with the generated tonic
//! client playing the worker: work items over `GetWorkItems`, a worker that disconnects
//! mid-episode, an abandoned activity, late and repeated completions, and a node restarted
//! while a worker holds an item. Every body runs on memory, the embedded store and
//! PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use perdure_core::management::ManagementApi;
use perdure_core::{EventKind, InstanceId};
use perdure_node::grpc::proto::orchestrator_action::OrchestratorActionType as A;
use perdure_node::grpc::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use perdure_node::grpc::proto::work_item::Request as W;
use perdure_node::grpc::proto::*;
use perdure_node::grpc::{GrpcExecutors, WorkerHub};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::runtime::core_executor::CoreExecutor;
use perdure_node::store::Store;
use tonic::Code;
use tonic::transport::Channel;

/// A node with the sample app in process and the workers of a hub for everything else,
/// serving gRPC on a loopback port.
struct Fixture {
    node: NodeHandle,
    addr: std::net::SocketAddr,
    client: TaskHubSidecarServiceClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start(store: Arc<dyn Store>) -> Self {
        let hub = WorkerHub::new();
        let local = Arc::new(CoreExecutor::new(Arc::new(
            perdure_node::sample::sample_registry(),
        )));
        let node = Node::builder()
            .executors(Arc::new(GrpcExecutors::new(local, hub.clone())))
            .store(store)
            .options(common::options())
            .start()
            .await
            .expect("node starts");
        let api: Arc<dyn ManagementApi> = Arc::new(node.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            perdure_node::grpc::serve_with(
                api,
                listener,
                None,
                Some(hub),
                Default::default(),
                None,
                async move {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        let client = connect(addr).await;
        Self {
            node,
            addr,
            client,
            stop: Some(stop),
            server,
        }
    }

    /// Stops serving (the hub closes, the workers' streams end), then stops the node.
    async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        drop(self.client);
        let _ = self.server.await;
        self.node.shutdown().await;
    }

    async fn worker(&self) -> Worker {
        self.worker_with(None).await
    }

    /// A worker that serves only what `filters` lists.
    async fn worker_with(&self, filters: Option<WorkItemFilters>) -> Worker {
        let mut client = connect(self.addr).await;
        let stream = client
            .get_work_items(GetWorkItemsRequest {
                work_item_filters: filters,
                ..Default::default()
            })
            .await
            .expect("GetWorkItems")
            .into_inner();
        Worker { client, stream }
    }

    async fn start_instance(&mut self, name: &str, id: &str, input: &str) {
        self.client
            .start_instance(CreateInstanceRequest {
                instance_id: id.into(),
                name: name.into(),
                input: Some(input.into()),
                ..Default::default()
            })
            .await
            .expect("start");
    }

    async fn wait(&mut self, id: &str) -> OrchestrationState {
        let mut req = tonic::Request::new(GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
        });
        req.set_timeout(Duration::from_secs(30));
        self.client
            .wait_for_instance_completion(req)
            .await
            .expect("wait")
            .into_inner()
            .orchestration_state
            .expect("state")
    }

    /// The kinds of the instance's stored history events.
    async fn history(&self, id: &str) -> Vec<EventKind> {
        let id = InstanceId::new(id).unwrap();
        self.node
            .get_history(id)
            .await
            .expect("history")
            .expect("the instance exists")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

async fn connect(addr: std::net::SocketAddr) -> TaskHubSidecarServiceClient<Channel> {
    TaskHubSidecarServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

struct Worker {
    client: TaskHubSidecarServiceClient<Channel>,
    stream: tonic::Streaming<WorkItem>,
}

impl Worker {
    /// The next work item other than a health ping.
    async fn next(&mut self) -> (W, String) {
        loop {
            let item = tokio::time::timeout(Duration::from_secs(30), self.stream.message())
                .await
                .expect("a work item within 30 s")
                .expect("stream ok")
                .expect("stream open");
            match item.request {
                Some(W::HealthPing(_)) => continue,
                Some(r) => return (r, item.completion_token),
                None => panic!("a work item without a request"),
            }
        }
    }

    async fn orchestrator(&mut self) -> (OrchestratorRequest, String) {
        match self.next().await {
            (W::OrchestratorRequest(r), t) => (r, t),
            (other, _) => panic!("expected an orchestrator request, got {other:?}"),
        }
    }

    async fn activity(&mut self) -> (ActivityRequest, String) {
        match self.next().await {
            (W::ActivityRequest(r), t) => (r, t),
            (other, _) => panic!("expected an activity request, got {other:?}"),
        }
    }

    /// `CompleteActivityTask` of task 1 of `instance` with `result`.
    async fn complete_activity(
        &mut self,
        token: String,
        instance: &str,
        result: &str,
    ) -> Result<(), tonic::Status> {
        self.client
            .complete_activity_task(ActivityResponse {
                instance_id: instance.into(),
                task_id: 1,
                result: Some(result.into()),
                completion_token: token,
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    async fn complete(
        &mut self,
        token: &str,
        instance: &str,
        actions: Vec<OrchestratorAction>,
    ) -> Result<(), tonic::Status> {
        complete(self.client.clone(), token, instance, actions).await
    }
}

/// `CompleteOrchestratorTask` with these actions.
async fn complete(
    mut client: TaskHubSidecarServiceClient<Channel>,
    token: &str,
    instance: &str,
    actions: Vec<OrchestratorAction>,
) -> Result<(), tonic::Status> {
    client
        .complete_orchestrator_task(OrchestratorResponse {
            instance_id: instance.into(),
            actions,
            completion_token: token.into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// The TaskCompleted an episode's new events carry (after OrchestratorStarted).
fn task_completed(next: &OrchestratorRequest) -> &TaskCompletedEvent {
    match next.new_events.get(1).and_then(|e| e.event_type.as_ref()) {
        Some(history_event::EventType::TaskCompleted(done)) => done,
        _ => panic!(
            "the new events carry the activity's result: {:?}",
            next.new_events
        ),
    }
}

fn schedule(id: i32, name: &str, input: &str) -> OrchestratorAction {
    OrchestratorAction {
        id,
        orchestrator_action_type: Some(A::ScheduleTask(ScheduleTaskAction {
            name: name.into(),
            input: Some(input.into()),
            ..Default::default()
        })),
    }
}

fn finish_with(result: &str) -> OrchestratorAction {
    OrchestratorAction {
        id: 99,
        orchestrator_action_type: Some(A::CompleteOrchestration(CompleteOrchestrationAction {
            orchestration_status: OrchestrationStatus::Completed as i32,
            result: Some(result.into()),
            ..Default::default()
        })),
    }
}

fn kind_of(e: &HistoryEvent) -> &'static str {
    use history_event::EventType as E;
    match &e.event_type {
        Some(E::OrchestratorStarted(_)) => "OrchestratorStarted",
        Some(E::ExecutionStarted(_)) => "ExecutionStarted",
        Some(E::TaskScheduled(_)) => "TaskScheduled",
        Some(E::TaskCompleted(_)) => "TaskCompleted",
        Some(E::OrchestratorCompleted(_)) => "OrchestratorCompleted",
        _ => "other",
    }
}

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entity_of_a_worker_starts_an_orchestration_at_its_scheduled_time(ts) {
        let mut f = Fixture::start(ts.store.clone()).await;
        let mut w = f.worker().await;
        f.client
            .signal_entity(SignalEntityRequest {
                instance_id: "@remoteStarter@k".into(),
                name: "go".into(),
                ..Default::default()
            })
            .await
            .expect("signal");
        let (batch, token) = match w.next().await {
            (W::EntityRequest(r), t) => (r, t),
            (other, _) => panic!("expected an entity batch, got {other:?}"),
        };
        assert_eq!(batch.operations.len(), 1);
        let (at_ms, at) = from_now_ms(1_500);
        use operation_action::OperationActionType as O;
        w.client
            .complete_entity_task(EntityBatchResult {
                results: vec![OperationResult {
                    result_type: Some(operation_result::ResultType::Success(
                        OperationResultSuccess::default(),
                    )),
                }],
                actions: vec![OperationAction {
                    id: 0,
                    operation_action_type: Some(O::StartNewOrchestration(
                        StartNewOrchestrationAction {
                            instance_id: "later-1".into(),
                            name: "HelloSequence".into(),
                            scheduled_time: Some(at),
                            ..Default::default()
                        },
                    )),
                }],
                completion_token: token,
                ..Default::default()
            })
            .await
            .expect("complete the batch");
        // The batch commits after its completion is taken: until then there is no instance.
        let id = InstanceId::new("later-1").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while f.node.get_instance(id.clone(), false).await.expect("read").is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the start was never recorded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let st = f.wait("later-1").await;
        assert_eq!(st.orchestration_status, OrchestrationStatus::Completed as i32);
        let history = f
            .node
            .get_history(InstanceId::new("later-1").unwrap())
            .await
            .expect("history")
            .expect("exists");
        // The start carries its time, and nothing ran before it.
        let started = history.iter().find_map(|e| match &e.kind {
            EventKind::ExecutionStarted { scheduled_start, .. } => Some(*scheduled_start),
            _ => None,
        });
        assert_eq!(started.flatten().map(|t| t.as_millis()), Some(at_ms), "{history:?}");
        let first = history.first().expect("events").timestamp.as_millis();
        assert!(first >= at_ms, "ran at {first}, scheduled for {at_ms}");
        f.finish().await;
    }
}

/// The wall-clock time `ms` from now, in milliseconds and as a protobuf timestamp.
fn from_now_ms(ms: u64) -> (u64, prost_types::Timestamp) {
    let at_ms = common::wall_clock_now().as_millis() + ms;
    let at = prost_types::Timestamp {
        seconds: (at_ms / 1000) as i64,
        nanos: ((at_ms % 1000) * 1_000_000) as i32,
    };
    (at_ms, at)
}

/// Completes an entity batch of one operation with success and `actions`.
async fn complete_batch(w: &mut Worker, token: String, actions: Vec<OperationAction>) {
    w.client
        .complete_entity_task(EntityBatchResult {
            results: vec![OperationResult {
                result_type: Some(operation_result::ResultType::Success(
                    OperationResultSuccess::default(),
                )),
            }],
            actions,
            completion_token: token,
            ..Default::default()
        })
        .await
        .expect("complete the batch");
}

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entity_start_of_a_live_instance_is_ignored_and_leaves_no_timer(ts) {
        let f = Fixture::start(ts.store.clone()).await;
        // A live instance: Approval waits for its event (and has its own timer).
        let id = InstanceId::new("live-1").unwrap();
        let mut req = perdure_core::management::StartRequest::new("Approval");
        req.instance_id = Some(id.clone());
        req.input = Some(perdure_core::Payload::json(&serde_json::json!({"timeoutSeconds": 100000})).unwrap());
        f.node.start(req).await.expect("start");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while common::keys_in(&ts.store, "t").await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "Approval never armed its timer");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = f.node.get_instance(id.clone(), false).await.expect("read").expect("exists");
        let timers = common::keys_in(&ts.store, "t").await;

        // An entity of the worker starts "live-1" an hour from now.
        let mut w = f.worker().await;
        let signal = |op: &'static str| {
            let mut client = f.client.clone();
            async move {
                client
                    .signal_entity(SignalEntityRequest {
                        instance_id: "@remoteStarter@k".into(),
                        name: op.into(),
                        ..Default::default()
                    })
                    .await
                    .expect("signal");
            }
        };
        signal("go").await;
        let token = match w.next().await {
            (W::EntityRequest(_), t) => t,
            (other, _) => panic!("expected an entity batch, got {other:?}"),
        };
        let (_, at) = from_now_ms(3_600_000);
        use operation_action::OperationActionType as O;
        complete_batch(
            &mut w,
            token,
            vec![OperationAction {
                id: 0,
                operation_action_type: Some(O::StartNewOrchestration(StartNewOrchestrationAction {
                    instance_id: "live-1".into(),
                    name: "HelloSequence".into(),
                    scheduled_time: Some(at),
                    ..Default::default()
                })),
            }],
        )
        .await;
        // The entity's next batch comes once the first one has committed.
        signal("again").await;
        let token = match w.next().await {
            (W::EntityRequest(b), t) => {
                // Only "again": "go" is not run a second time (its batch committed).
                let ops: Vec<&str> = b.operations.iter().map(|o| o.operation.as_str()).collect();
                assert_eq!(ops, ["again"], "the first batch did not commit");
                t
            }
            (other, _) => panic!("expected the second entity batch, got {other:?}"),
        };
        // The start was ignored whole: no timer for it, and the live instance is untouched.
        assert_eq!(common::keys_in(&ts.store, "t").await, timers, "a stray start timer");
        let after = f.node.get_instance(id.clone(), false).await.expect("read").expect("exists");
        assert_eq!(after.name, "Approval");
        assert_eq!(after.runtime_status, before.runtime_status);
        assert_eq!(after.created_at, before.created_at);
        complete_batch(&mut w, token, Vec::new()).await;
        f.finish().await;
    }
}

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disconnected_worker_hands_its_episode_to_another_and_it_completes_once(ts) {
        let mut f = Fixture::start(ts.store.clone()).await;
        let mut a = f.worker().await;
        f.start_instance("RemoteHello", "r1", "\"Oslo\"").await;
        let (req, first) = a.orchestrator().await;
        assert_eq!(req.instance_id, "r1");
        assert!(req.past_events.is_empty());
        let kinds: Vec<_> = req.new_events.iter().map(kind_of).collect();
        assert_eq!(kinds, ["OrchestratorStarted", "ExecutionStarted"]);

        // A goes away holding the episode: B gets it under a new token.
        let mut b = f.worker().await;
        // A's stream goes; its connection stays, and completes late.
        let Worker { client: a_client, stream } = a;
        drop(stream);
        let (again, second) = b.orchestrator().await;
        assert_eq!(again.instance_id, "r1");
        assert_ne!(first, second);
        let late = complete(a_client, &first, "r1", vec![finish_with("\"from A\"")]).await;
        assert_eq!(late.expect_err("A's token is stale").code(), Code::NotFound);

        // B schedules the node's own Rust activity, then finishes with its result.
        b.complete(&second, "r1", vec![schedule(1, "SayHello", "\"Oslo\"")])
            .await
            .expect("first episode");
        let (next, token) = b.orchestrator().await;
        let past: Vec<_> = next.past_events.iter().map(kind_of).collect();
        assert_eq!(
            past,
            ["OrchestratorStarted", "ExecutionStarted", "TaskScheduled", "OrchestratorCompleted"]
        );
        assert_eq!(next.past_events[2].event_id, 1);
        let done = task_completed(&next);
        assert_eq!(done.task_scheduled_id, 1);
        assert_eq!(done.result.as_deref(), Some("\"Hello Oslo!\""));
        b.complete(&token, "r1", vec![finish_with("\"Hello Oslo!\"")])
            .await
            .expect("last episode");
        let repeated = b.complete(&token, "r1", vec![finish_with("\"again\"")]).await;
        assert_eq!(repeated.expect_err("completed already").code(), Code::NotFound);

        let st = f.wait("r1").await;
        assert_eq!(st.orchestration_status, OrchestrationStatus::Completed as i32);
        assert_eq!(st.output.as_deref(), Some("\"Hello Oslo!\""));
        let history = f.history("r1").await;
        let scheduled = history.iter().filter(|k| matches!(k, EventKind::TaskScheduled { .. })).count();
        let ended = history.iter().filter(|k| matches!(k, EventKind::ExecutionCompleted { .. })).count();
        assert_eq!((scheduled, ended), (1, 1), "{history:?}");
        f.finish().await;
    }
}

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_activity_is_handed_out_again_and_counts_once(ts) {
        let mut f = Fixture::start(ts.store.clone()).await;
        let mut w = f.worker().await;
        f.start_instance("RemoteCalc", "c1", "20").await;
        let (_, token) = w.orchestrator().await;
        w.complete(&token, "c1", vec![schedule(1, "RemoteDouble", "20")])
            .await
            .expect("schedules");
        let (act, first) = w.activity().await;
        assert_eq!((act.name.as_str(), act.task_id, act.input.as_deref()), ("RemoteDouble", 1, Some("20")));
        w.client
            .abandon_task_activity_work_item(AbandonActivityTaskRequest {
                completion_token: first.clone(),
            })
            .await
            .expect("abandon");
        let (again, second) = w.activity().await;
        assert_eq!(again.task_id, 1);
        assert_ne!(first, second);
        let stale = w.complete_activity(first, "c1", "1").await;
        assert_eq!(stale.expect_err("abandoned token").code(), Code::NotFound);
        w.complete_activity(second, "c1", "40").await.expect("complete");
        let (next, token) = w.orchestrator().await;
        let done = task_completed(&next);
        assert_eq!(done.result.as_deref(), Some("40"));
        w.complete(&token, "c1", vec![finish_with("40")]).await.expect("finish");
        let st = f.wait("c1").await;
        assert_eq!(st.output.as_deref(), Some("40"));
        f.finish().await;
    }
}

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_response_that_breaks_the_protocol_fails_only_its_instance(ts) {
        let mut f = Fixture::start(ts.store.clone()).await;
        let mut w = f.worker().await;
        f.start_instance("RemoteBad", "b1", "null").await;
        let (_, token) = w.orchestrator().await;
        // An input that is not JSON text, and an action without a type.
        let bad = vec![
            schedule(1, "X", "not json"),
            OrchestratorAction { id: 2, orchestrator_action_type: None },
        ];
        w.complete(&token, "b1", bad).await.expect("taken");
        let st = f.wait("b1").await;
        assert_eq!(st.orchestration_status, OrchestrationStatus::Failed as i32);
        let failure = st.failure_details.expect("failure details");
        assert_eq!(failure.error_type, "WorkerProtocolError");
        assert!(failure.error_message.contains("not JSON"), "{failure:?}");
        // Two actions with one id: refused too.
        f.start_instance("RemoteBad", "b2", "null").await;
        let (_, token) = w.orchestrator().await;
        let twice = vec![schedule(1, "SayHello", "\"a\""), schedule(1, "SayHello", "\"b\"")];
        w.complete(&token, "b2", twice).await.expect("taken");
        let st = f.wait("b2").await;
        let failure = st.failure_details.expect("failure details");
        assert!(failure.error_message.contains("action id 1"), "{failure:?}");
        // A worker that fails the orchestration may send its pending actions along, repeated
        // ids and all: its failure is what counts.
        f.start_instance("RemoteBad", "b3", "null").await;
        let (_, token) = w.orchestrator().await;
        let failing = vec![
            schedule(1, "SayHello", "\"a\""),
            schedule(1, "SayHello", "\"a\""),
            OrchestratorAction {
                id: -1,
                orchestrator_action_type: Some(A::CompleteOrchestration(
                    CompleteOrchestrationAction {
                        orchestration_status: OrchestrationStatus::Failed as i32,
                        failure_details: Some(TaskFailureDetails {
                            error_type: "NonDeterminismError".into(),
                            error_message: "the code changed".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
            },
        ];
        w.complete(&token, "b3", failing).await.expect("taken");
        let st = f.wait("b3").await;
        assert_eq!(st.orchestration_status, OrchestrationStatus::Failed as i32);
        let failure = st.failure_details.expect("failure details");
        assert_eq!(failure.error_type, "NonDeterminismError", "{failure:?}");
        // The node still serves the sample app in process.
        f.start_instance("HelloSequence", "h1", "null").await;
        let st = f.wait("h1").await;
        assert_eq!(st.orchestration_status, OrchestrationStatus::Completed as i32);
        f.finish().await;
    }
}

/// A node stopped while a worker holds an episode runs it again after its restart, for the
/// worker that connects then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_held_when_the_node_stops_runs_again_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        perdure_node::store::embedded::EmbeddedStore::open(dir.path()).expect("store opens"),
    );
    let mut f = Fixture::start(store.clone()).await;
    let mut w = f.worker().await;
    f.start_instance("RemoteHello", "s1", "\"Rome\"").await;
    let (_, held) = w.orchestrator().await;
    f.finish().await;
    // The old node's token means nothing to the new one.
    let mut f = Fixture::start(store).await;
    let mut w2 = f.worker().await;
    let (req, token) = w2.orchestrator().await;
    assert_eq!(req.instance_id, "s1");
    assert!(
        req.past_events.is_empty(),
        "the first episode never committed"
    );
    let stale = w2.complete(&held, "s1", vec![finish_with("\"old\"")]).await;
    assert_eq!(
        stale.expect_err("a token from before the restart").code(),
        Code::NotFound
    );
    w2.complete(&token, "s1", vec![finish_with("\"Ciao Rome\"")])
        .await
        .expect("complete");
    let st = f.wait("s1").await;
    assert_eq!(st.output.as_deref(), Some("\"Ciao Rome\""));
    f.finish().await;
}

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_activity_waits_for_a_worker_that_serves_it(ts) {
        let mut f = Fixture::start(ts.store.clone()).await;
        let only = |o: Vec<&str>, a: Vec<&str>| WorkItemFilters {
            orchestrations: o
                .into_iter()
                .map(|n| OrchestrationFilter { name: n.into(), versions: vec![] })
                .collect(),
            activities: a
                .into_iter()
                .map(|n| ActivityFilter { name: n.into(), versions: vec![] })
                .collect(),
            entities: vec![],
        };
        let mut w = f.worker_with(Some(only(vec!["RemoteOnly"], vec![]))).await;
        f.start_instance("RemoteOnly", "n1", "null").await;
        let (_, token) = w.orchestrator().await;
        w.complete(&token, "n1", vec![schedule(1, "LaterActivity", "7")])
            .await
            .expect("schedules");
        // Nobody serves the activity yet: it waits; the worker that serves it gets it.
        let mut later = f.worker_with(Some(only(vec![], vec!["LaterActivity"]))).await;
        let (act, token) = later.activity().await;
        assert_eq!((act.name.as_str(), act.input.as_deref()), ("LaterActivity", Some("7")));
        later.complete_activity(token, "n1", "49").await
            .expect("complete");
        let (next, token) = w.orchestrator().await;
        let done = task_completed(&next);
        assert_eq!(done.result.as_deref(), Some("49"));
        w.complete(&token, "n1", vec![finish_with("49")]).await.expect("finish");
        assert_eq!(f.wait("n1").await.output.as_deref(), Some("49"));
        f.finish().await;
    }
}

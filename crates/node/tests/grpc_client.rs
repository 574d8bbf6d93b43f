//! The Durable Task gRPC client RPCs (`TaskHubSidecarService`) against a node with the sample
//! app, through the generated tonic client on a loopback port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use perdure_core::management::ManagementApi;
use perdure_node::grpc::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use perdure_node::grpc::proto::*;
use perdure_node::node::NodeHandle;
use tonic::Code;
use tonic::transport::Channel;

struct Fixture {
    node: NodeHandle,
    client: TaskHubSidecarServiceClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Fixture {
    /// `StreamInstanceHistory`, all chunks.
    async fn history(
        &mut self,
        id: &str,
        execution_id: Option<String>,
    ) -> Result<Vec<HistoryEvent>, tonic::Status> {
        let mut stream = self
            .client
            .stream_instance_history(StreamInstanceHistoryRequest {
                instance_id: id.into(),
                execution_id,
                for_work_item_processing: false,
            })
            .await?
            .into_inner();
        let mut events = Vec::new();
        while let Some(chunk) = stream.message().await? {
            events.extend(chunk.events);
        }
        Ok(events)
    }

    async fn start() -> Self {
        let node = common::start_memory().await;
        let api: Arc<dyn ManagementApi> = Arc::new(node.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            perdure_node::grpc::serve(api, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let client = TaskHubSidecarServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Self {
            node,
            client,
            stop: Some(stop),
            server,
        }
    }

    async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        drop(self.client);
        let _ = self.server.await;
        self.node.shutdown().await;
    }

    async fn start_instance(&mut self, name: &str, id: &str, input: Option<&str>) -> String {
        self.client
            .start_instance(CreateInstanceRequest {
                instance_id: id.into(),
                name: name.into(),
                input: input.map(Into::into),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .instance_id
    }

    async fn wait(&mut self, id: &str) -> OrchestrationState {
        let mut req = tonic::Request::new(GetInstanceRequest {
            instance_id: id.into(),
            get_inputs_and_outputs: true,
        });
        req.set_timeout(Duration::from_secs(30));
        let r = self
            .client
            .wait_for_instance_completion(req)
            .await
            .unwrap()
            .into_inner();
        assert!(r.exists);
        r.orchestration_state.unwrap()
    }

    async fn state(&mut self, id: &str, payloads: bool) -> GetInstanceResponse {
        self.client
            .get_instance(GetInstanceRequest {
                instance_id: id.into(),
                get_inputs_and_outputs: payloads,
            })
            .await
            .unwrap()
            .into_inner()
    }
}

fn status(s: &OrchestrationState) -> OrchestrationStatus {
    OrchestrationStatus::try_from(s.orchestration_status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_sequence_starts_and_completes() {
    let mut f = Fixture::start().await;
    f.client.hello(()).await.unwrap();
    let id = f.start_instance("HelloSequence", "hello-1", None).await;
    assert_eq!(id, "hello-1");
    let s = f.wait(&id).await;
    assert_eq!(status(&s), OrchestrationStatus::Completed);
    assert_eq!(s.name, "HelloSequence");
    let out: Vec<String> = serde_json::from_str(s.output.as_deref().unwrap()).unwrap();
    assert_eq!(out, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
    assert!(s.created_timestamp.is_some() && s.completed_timestamp.is_some());
    assert!(s.execution_id.is_some());
    // Without payloads: no output.
    let r = f.state(&id, false).await;
    assert!(r.exists && r.orchestration_state.unwrap().output.is_none());
    // Unknown id: exists = false, not an error.
    let r = f.state("nobody-here", true).await;
    assert!(!r.exists && r.orchestration_state.is_none());
    // A generated id when none is given.
    let generated = f.start_instance("HelloSequence", "", None).await;
    assert!(!generated.is_empty());
    f.wait(&generated).await;
    // The history, streamed: the DTFx shapes (action ids are event ids, results name them).
    let history = f.history(&id, s.execution_id.clone()).await.unwrap();
    use history_event::EventType as E;
    assert!(matches!(
        history[0].event_type,
        Some(E::OrchestratorStarted(_))
    ));
    assert!(
        matches!(&history[1].event_type, Some(E::ExecutionStarted(e)) if e.name == "HelloSequence")
    );
    let scheduled: Vec<i32> = history
        .iter()
        .filter(|e| matches!(e.event_type, Some(E::TaskScheduled(_))))
        .map(|e| e.event_id)
        .collect();
    let completed: Vec<i32> = history
        .iter()
        .filter_map(|e| match &e.event_type {
            Some(E::TaskCompleted(c)) => Some(c.task_scheduled_id),
            _ => None,
        })
        .collect();
    assert_eq!(scheduled.len(), 3);
    assert_eq!(scheduled, completed);
    assert!(matches!(
        history.iter().rev().nth(1).and_then(|e| e.event_type.as_ref()),
        Some(E::ExecutionCompleted(c)) if c.orchestration_status == OrchestrationStatus::Completed as i32
    ));
    let e = f.history("nobody-here", None).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = f
        .history(&id, Some("not-this-one".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_suspend_resume_and_terminate() {
    let mut f = Fixture::start().await;
    let id = f
        .start_instance("Approval", "approval-1", Some(r#"{"timeoutSeconds": 300}"#))
        .await;
    let mut req = tonic::Request::new(GetInstanceRequest {
        instance_id: id.clone(),
        get_inputs_and_outputs: false,
    });
    req.set_timeout(Duration::from_secs(30));
    let started = f
        .client
        .wait_for_instance_start(req)
        .await
        .unwrap()
        .into_inner();
    assert!(started.exists);
    f.client
        .suspend_instance(SuspendRequest {
            instance_id: id.clone(),
            reason: Some("checking".into()),
        })
        .await
        .unwrap();
    let s = f.state(&id, false).await.orchestration_state.unwrap();
    assert_eq!(status(&s), OrchestrationStatus::Suspended);
    // The wait ends at the call's deadline with DEADLINE_EXCEEDED.
    let mut req = tonic::Request::new(GetInstanceRequest {
        instance_id: id.clone(),
        get_inputs_and_outputs: false,
    });
    req.set_timeout(Duration::from_millis(300));
    let e = f
        .client
        .wait_for_instance_completion(req)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    f.client
        .resume_instance(ResumeRequest {
            instance_id: id.clone(),
            reason: None,
        })
        .await
        .unwrap();
    f.client
        .raise_event(RaiseEventRequest {
            instance_id: id.clone(),
            name: "Approval".into(),
            input: Some("true".into()),
        })
        .await
        .unwrap();
    let s = f.wait(&id).await;
    assert_eq!(status(&s), OrchestrationStatus::Completed);
    assert_eq!(s.output.as_deref(), Some(r#""approved""#));

    let other = f
        .start_instance("Approval", "approval-2", Some(r#"{"timeoutSeconds": 300}"#))
        .await;
    f.client
        .terminate_instance(TerminateRequest {
            instance_id: other.clone(),
            output: Some(r#""no longer needed""#.into()),
            recursive: true,
        })
        .await
        .unwrap();
    let s = f.wait(&other).await;
    assert_eq!(status(&s), OrchestrationStatus::Terminated);
    assert_eq!(s.output.as_deref(), Some(r#""no longer needed""#));
    // Raising an event on an unknown instance: NOT_FOUND.
    let e = f
        .client
        .raise_event(RaiseEventRequest {
            instance_id: "missing".into(),
            name: "Approval".into(),
            input: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_purge() {
    let mut f = Fixture::start().await;
    for i in 0..3 {
        let id = f
            .start_instance("HelloSequence", &format!("q-{i}"), None)
            .await;
        f.wait(&id).await;
    }
    let live = f
        .start_instance("Approval", "q-live", Some(r#"{"timeoutSeconds": 300}"#))
        .await;
    // Two per page: the continuation token leads through all of them.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = f
            .client
            .query_instances(QueryInstancesRequest {
                query: Some(InstanceQuery {
                    runtime_status: vec![OrchestrationStatus::Completed as i32],
                    instance_id_prefix: Some("q-".into()),
                    max_instance_count: 2,
                    continuation_token: token.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.orchestration_state.into_iter().map(|s| s.instance_id));
        match page.continuation_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["q-0", "q-1", "q-2"]);
    // ListInstanceIds: finished instances only, paged by its key.
    let mut listed = Vec::new();
    let mut key = None;
    loop {
        let page = f
            .client
            .list_instance_ids(ListInstanceIdsRequest {
                page_size: 2,
                last_instance_key: key.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.instance_ids);
        match page.last_instance_key {
            Some(k) if !k.is_empty() => key = Some(k),
            _ => break,
        }
    }
    listed.sort();
    assert_eq!(listed, ["q-0", "q-1", "q-2"]);
    let e = f
        .client
        .list_instance_ids(ListInstanceIdsRequest {
            runtime_status: vec![OrchestrationStatus::Running as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // CANCELED matches nothing in Perdure.
    let none = f
        .client
        .query_instances(QueryInstancesRequest {
            query: Some(InstanceQuery {
                runtime_status: vec![OrchestrationStatus::Canceled as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.orchestration_state.is_empty());

    // By id; a live instance is refused; an unknown one purges nothing.
    let r = f
        .client
        .purge_instances(PurgeInstancesRequest {
            request: Some(purge_instances_request::Request::InstanceId("q-0".into())),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deleted_instance_count, 1);
    assert!(!f.state("q-0", false).await.exists);
    let e = f
        .client
        .purge_instances(PurgeInstancesRequest {
            request: Some(purge_instances_request::Request::InstanceId(live.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // By filter: the other two completed ones.
    let r = f
        .client
        .purge_instances(PurgeInstancesRequest {
            request: Some(purge_instances_request::Request::PurgeInstanceFilter(
                PurgeInstanceFilter {
                    runtime_status: vec![OrchestrationStatus::Completed as i32],
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deleted_instance_count, 2);
    assert_eq!(r.is_complete, Some(true));
    assert!(f.state(&live, false).await.exists);
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_signal_get_and_query() {
    let mut f = Fixture::start().await;
    for n in [2, 3] {
        f.client
            .signal_entity(SignalEntityRequest {
                instance_id: "@Counter@c1".into(),
                name: "add".into(),
                input: Some(n.to_string()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // The signals are processed asynchronously: wait until the state shows both.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let entity = loop {
        let r = f
            .client
            .get_entity(GetEntityRequest {
                instance_id: "@counter@c1".into(),
                include_state: true,
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(e) = r
            .entity
            .filter(|e| e.serialized_state.as_deref() == Some("5"))
        {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter never reached 5"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(entity.instance_id, "@counter@c1");
    let page = f
        .client
        .query_entities(QueryEntitiesRequest {
            query: Some(EntityQuery {
                instance_id_starts_with: Some("@counter@".into()),
                include_state: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.entities.len(), 1);
    assert_eq!(page.entities[0].serialized_state.as_deref(), Some("5"));
    let r = f
        .client
        .get_entity(GetEntityRequest {
            instance_id: "@counter@nobody".into(),
            include_state: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.exists);
    f.client
        .clean_entity_storage(CleanEntityStorageRequest {
            remove_empty_entities: true,
            release_orphaned_locks: true,
            ..Default::default()
        })
        .await
        .unwrap();
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_unimplemented_rpcs() {
    let mut f = Fixture::start().await;
    let e = f
        .client
        .get_instance(GetInstanceRequest {
            instance_id: "a/b".into(),
            get_inputs_and_outputs: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("a/b"), "{}", e.message());
    let e = f
        .client
        .signal_entity(SignalEntityRequest {
            instance_id: "counter-without-at".into(),
            name: "add".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = f
        .client
        .start_instance(CreateInstanceRequest {
            instance_id: "bad-json".into(),
            name: "HelloSequence".into(),
            input: Some("{not json".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = f
        .client
        .start_instance(CreateInstanceRequest {
            instance_id: "unknown-name".into(),
            name: "NoSuchOrchestration".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = f
        .client
        .query_instances(QueryInstancesRequest {
            query: Some(InstanceQuery {
                runtime_status: vec![42],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Id reuse: an empty replaceable list refuses an existing id.
    let id = f.start_instance("HelloSequence", "reuse-1", None).await;
    f.wait(&id).await;
    let e = f
        .client
        .start_instance(CreateInstanceRequest {
            instance_id: id.clone(),
            name: "HelloSequence".into(),
            orchestration_id_reuse_policy: Some(OrchestrationIdReusePolicy {
                replaceable_status: vec![],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    // ... and COMPLETED in the list replaces it.
    f.client
        .start_instance(CreateInstanceRequest {
            instance_id: id.clone(),
            name: "HelloSequence".into(),
            orchestration_id_reuse_policy: Some(OrchestrationIdReusePolicy {
                replaceable_status: vec![OrchestrationStatus::Completed as i32],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    f.wait(&id).await;
    // A service built without a worker hub does not serve the worker side.
    let e = f
        .client
        .get_work_items(GetWorkItemsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("GetWorkItems"), "{}", e.message());
    let e = f
        .client
        .complete_activity_task(ActivityResponse::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    f.finish().await;
}

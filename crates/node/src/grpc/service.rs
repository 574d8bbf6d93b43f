//! The `TaskHubSidecarService` implementation: each client RPC delegates to
//! [`super::instances`] or [`super::entities`]; the worker-side RPCs go to the
//! [`WorkerHub`] when the node serves workers, and answer `UNIMPLEMENTED` otherwise.

use crate::access::{CallerRole, may_replace};
use std::pin::Pin;
use std::sync::Arc;

use perdure_core::management::ManagementApi;
use tonic::{Request, Response, Status};

use super::error::{unimplemented, work_items_unimplemented};
use super::proto::task_hub_sidecar_service_server::TaskHubSidecarService;
use super::proto::*;
use super::workers::{Completion, ItemKind, WorkerHub};
use super::{deadline, entities, instances};

/// The protocol's service over a management implementation.
#[derive(Clone)]
pub struct Sidecar {
    api: Arc<dyn ManagementApi>,
    shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
    workers: Option<Arc<WorkerHub>>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar").finish_non_exhaustive()
    }
}

impl Sidecar {
    /// The service over `api`; server-side waits end with `UNAVAILABLE` once
    /// `shutting_down` turns true.
    pub fn new(
        api: Arc<dyn ManagementApi>,
        shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Self {
        Self {
            api,
            shutting_down,
            workers: None,
        }
    }

    /// Serves the worker side too: work items of `hub` go to the workers that connect with
    /// `GetWorkItems` (the node's executor must be a [`super::GrpcExecutors`] over the same
    /// hub).
    pub fn with_workers(mut self, hub: Arc<WorkerHub>) -> Self {
        self.workers = Some(hub);
        self
    }

    fn hub(&self, rpc: &str) -> Result<&Arc<WorkerHub>, Status> {
        self.workers
            .as_ref()
            .ok_or_else(|| work_items_unimplemented(rpc))
    }

    /// Runs a server-side wait, cut short when the node begins shutting down (so that a
    /// long wait does not hold up a graceful shutdown).
    async fn wait<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        match self.shutting_down.clone() {
            None => fut.await,
            Some(mut rx) => tokio::select! {
                r = fut => r,
                _ = rx.wait_for(|down| *down) => {
                    Err(Status::unavailable("the node is shutting down; call again"))
                }
            },
        }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// A server stream of the service.
type ServerStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl TaskHubSidecarService for Sidecar {
    async fn hello(&self, _: Request<()>) -> Rpc<()> {
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        r: Request<CreateInstanceRequest>,
    ) -> Rpc<CreateInstanceResponse> {
        use tracing::Instrument as _;
        let may_replace = may_replace(r.extensions().get::<CallerRole>().copied());
        // The trace the orchestration joins: the request's `parentTraceContext` (the
        // Durable Task SDKs), else a `traceparent` metadata entry.
        let metadata = r
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let r = r.into_inner();
        let incoming = r
            .parent_trace_context
            .as_ref()
            .and_then(|t| crate::telemetry::TraceParent::parse(&t.trace_parent))
            .or_else(|| {
                metadata
                    .as_deref()
                    .and_then(crate::telemetry::TraceParent::parse)
            });
        let span = tracing::info_span!(
            "grpc",
            otel.name = "StartInstance",
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = "StartInstance"
        );
        if let Some(tp) = &incoming {
            crate::telemetry::set_parent(&span, tp);
        }
        // The request's own span when spans are exported, else the caller's context.
        let trace = span
            .in_scope(crate::telemetry::current)
            .or(incoming)
            .map(|t| t.to_string());
        instances::start(&*self.api, r, self.workers.as_deref(), may_replace, trace)
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn get_instance(&self, r: Request<GetInstanceRequest>) -> Rpc<GetInstanceResponse> {
        instances::get(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn rewind_instance(
        &self,
        r: Request<RewindInstanceRequest>,
    ) -> Rpc<RewindInstanceResponse> {
        instances::rewind(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn restart_instance(
        &self,
        r: Request<RestartInstanceRequest>,
    ) -> Rpc<RestartInstanceResponse> {
        let may_replace = may_replace(r.extensions().get::<CallerRole>().copied());
        instances::restart(&*self.api, r.into_inner(), may_replace)
            .await
            .map(Response::new)
    }

    async fn wait_for_instance_start(
        &self,
        r: Request<GetInstanceRequest>,
    ) -> Rpc<GetInstanceResponse> {
        let timeout = deadline::timeout(r.metadata());
        self.wait(instances::wait_for_start(
            &*self.api,
            r.into_inner(),
            timeout,
        ))
        .await
        .map(Response::new)
    }

    async fn wait_for_instance_completion(
        &self,
        r: Request<GetInstanceRequest>,
    ) -> Rpc<GetInstanceResponse> {
        let timeout = deadline::timeout(r.metadata());
        self.wait(instances::wait_for_completion(
            &*self.api,
            r.into_inner(),
            timeout,
        ))
        .await
        .map(Response::new)
    }

    async fn raise_event(&self, r: Request<RaiseEventRequest>) -> Rpc<RaiseEventResponse> {
        instances::raise_event(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn terminate_instance(&self, r: Request<TerminateRequest>) -> Rpc<TerminateResponse> {
        instances::terminate(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn suspend_instance(&self, r: Request<SuspendRequest>) -> Rpc<SuspendResponse> {
        instances::suspend(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn resume_instance(&self, r: Request<ResumeRequest>) -> Rpc<ResumeResponse> {
        instances::resume(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn query_instances(
        &self,
        r: Request<QueryInstancesRequest>,
    ) -> Rpc<QueryInstancesResponse> {
        instances::query(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_instance_ids(
        &self,
        r: Request<ListInstanceIdsRequest>,
    ) -> Rpc<ListInstanceIdsResponse> {
        instances::list_ids(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn purge_instances(
        &self,
        r: Request<PurgeInstancesRequest>,
    ) -> Rpc<PurgeInstancesResponse> {
        instances::purge(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    type GetWorkItemsStream = ServerStream<WorkItem>;

    async fn get_work_items(
        &self,
        r: Request<GetWorkItemsRequest>,
    ) -> Rpc<Self::GetWorkItemsStream> {
        let stream = self
            .hub("GetWorkItems")?
            .connect(r.into_inner().work_item_filters)?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete_activity_task(
        &self,
        r: Request<ActivityResponse>,
    ) -> Rpc<CompleteTaskResponse> {
        let r = r.into_inner();
        let token = r.completion_token.clone();
        self.hub("CompleteActivityTask")?
            .complete(&token, Completion::Activity(r))?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn complete_orchestrator_task(
        &self,
        r: Request<OrchestratorResponse>,
    ) -> Rpc<CompleteTaskResponse> {
        let r = r.into_inner();
        let token = r.completion_token.clone();
        self.hub("CompleteOrchestratorTask")?
            .complete(&token, Completion::Orchestrator(r))?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn complete_entity_task(
        &self,
        r: Request<EntityBatchResult>,
    ) -> Rpc<CompleteTaskResponse> {
        let r = r.into_inner();
        let token = r.completion_token.clone();
        self.hub("CompleteEntityTask")?
            .complete(&token, Completion::Entity(r))?;
        Ok(Response::new(CompleteTaskResponse {}))
    }

    type StreamInstanceHistoryStream = ServerStream<HistoryChunk>;

    async fn stream_instance_history(
        &self,
        r: Request<StreamInstanceHistoryRequest>,
    ) -> Rpc<Self::StreamInstanceHistoryStream> {
        let chunks = instances::history(&*self.api, r.into_inner()).await?;
        Ok(Response::new(Box::pin(futures::stream::iter(
            chunks.into_iter().map(Ok),
        ))))
    }

    async fn create_task_hub(
        &self,
        _: Request<CreateTaskHubRequest>,
    ) -> Rpc<CreateTaskHubResponse> {
        Err(unimplemented(
            "CreateTaskHub",
            "a node serves one task hub, created with its store",
        ))
    }

    async fn delete_task_hub(
        &self,
        _: Request<DeleteTaskHubRequest>,
    ) -> Rpc<DeleteTaskHubResponse> {
        Err(unimplemented(
            "DeleteTaskHub",
            "a node serves one task hub; purge instances instead",
        ))
    }

    async fn signal_entity(&self, r: Request<SignalEntityRequest>) -> Rpc<SignalEntityResponse> {
        entities::signal(&*self.api, r.into_inner(), self.workers.as_deref())
            .await
            .map(Response::new)
    }

    async fn get_entity(&self, r: Request<GetEntityRequest>) -> Rpc<GetEntityResponse> {
        entities::get(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn query_entities(&self, r: Request<QueryEntitiesRequest>) -> Rpc<QueryEntitiesResponse> {
        entities::query(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn clean_entity_storage(
        &self,
        r: Request<CleanEntityStorageRequest>,
    ) -> Rpc<CleanEntityStorageResponse> {
        entities::clean(&*self.api, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn abandon_task_activity_work_item(
        &self,
        r: Request<AbandonActivityTaskRequest>,
    ) -> Rpc<AbandonActivityTaskResponse> {
        self.hub("AbandonTaskActivityWorkItem")?
            .abandon(&r.into_inner().completion_token, ItemKind::Activity)?;
        Ok(Response::new(AbandonActivityTaskResponse {}))
    }

    async fn abandon_task_orchestrator_work_item(
        &self,
        r: Request<AbandonOrchestrationTaskRequest>,
    ) -> Rpc<AbandonOrchestrationTaskResponse> {
        self.hub("AbandonTaskOrchestratorWorkItem")?
            .abandon(&r.into_inner().completion_token, ItemKind::Orchestration)?;
        Ok(Response::new(AbandonOrchestrationTaskResponse {}))
    }

    async fn abandon_task_entity_work_item(
        &self,
        r: Request<AbandonEntityTaskRequest>,
    ) -> Rpc<AbandonEntityTaskResponse> {
        self.hub("AbandonTaskEntityWorkItem")?
            .abandon(&r.into_inner().completion_token, ItemKind::Entity)?;
        Ok(Response::new(AbandonEntityTaskResponse {}))
    }

    async fn skip_graceful_orchestration_terminations(
        &self,
        _: Request<SkipGracefulOrchestrationTerminationsRequest>,
    ) -> Rpc<SkipGracefulOrchestrationTerminationsResponse> {
        Err(unimplemented(
            "SkipGracefulOrchestrationTerminations",
            "TerminateInstance ends an instance at once; there is no graceful termination",
        ))
    }
}

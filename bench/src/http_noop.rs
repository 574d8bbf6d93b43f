//! A `ManagementApi` that accepts every start at once and stores nothing: `http-starts --noop`
//! measures the HTTP layer's own ceiling (parsing, routing, JSON, the client) without the
//! runtime.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use perdure_core::management::*;
use perdure_core::{EntityId, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp};

pub(crate) struct NoopApi;

fn no<'a, T: Send + 'a>() -> BoxFuture<'a, ManagementResult<T>> {
    futures::future::ready(Err(ManagementError::BadRequest("noop".into()))).boxed()
}

impl ManagementApi for NoopApi {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        let id = req
            .instance_id
            .map(Ok)
            .unwrap_or_else(|| InstanceId::new("generated"))
            .map_err(|e| ManagementError::BadRequest(e.to_string()));
        futures::future::ready(id).boxed()
    }
    fn get_instance(
        &self,
        _: InstanceId,
        _: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        no()
    }
    fn get_history(
        &self,
        _: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>> {
        no()
    }
    fn wait_for_completion(
        &self,
        _: InstanceId,
        _: Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        no()
    }
    fn query_instances(&self, _: InstanceQuery) -> BoxFuture<'_, ManagementResult<InstancePage>> {
        no()
    }
    fn count_instances(
        &self,
        _: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>> {
        no()
    }
    fn raise_event(
        &self,
        _: InstanceId,
        _: String,
        _: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        no()
    }
    fn terminate(
        &self,
        _: InstanceId,
        _: Option<String>,
        _: bool,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        no()
    }
    fn suspend(&self, _: InstanceId, _: Option<String>) -> BoxFuture<'_, ManagementResult<()>> {
        no()
    }
    fn resume(&self, _: InstanceId, _: Option<String>) -> BoxFuture<'_, ManagementResult<()>> {
        no()
    }
    fn rewind(&self, _: InstanceId, _: Option<String>) -> BoxFuture<'_, ManagementResult<()>> {
        no()
    }
    fn restart(&self, _: InstanceId, _: bool) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        no()
    }
    fn purge_instance(&self, _: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        no()
    }
    fn purge_instances(&self, _: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        no()
    }
    fn signal_entity(
        &self,
        _: EntityId,
        _: String,
        _: Option<Payload>,
        _: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        no()
    }
    fn get_entity(&self, _: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        no()
    }
    fn query_entities(&self, _: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        no()
    }
    fn clean_entity_storage(
        &self,
        _: bool,
        _: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        no()
    }
    fn registered_names(&self, _: FunctionKind) -> Vec<String> {
        Vec::new()
    }
}

//! The HTTP transport as a [`ManagementApi`], for code that works with any implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use perdure_core::management::*;
use perdure_core::{EntityId, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp};

use super::HttpTransport;
use crate::error::ClientResult;

fn boxed<'a, T: Send + 'a>(
    f: impl std::future::Future<Output = ClientResult<T>> + Send + 'a,
) -> BoxFuture<'a, ManagementResult<T>> {
    f.map(|r| r.map_err(ManagementError::from)).boxed()
}

/// The HTTP transport as a [`ManagementApi`] (errors flattened into [`ManagementError`]).
/// `registered_names` is not available synchronously over HTTP and answers an empty list; use
/// [`HttpTransport::registered_functions`].
impl ManagementApi for HttpTransport {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        boxed(HttpTransport::start(self, req))
    }
    fn get_instance(
        &self,
        id: InstanceId,
        with_payloads: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        boxed(async move { HttpTransport::get_instance(self, &id, with_payloads).await })
    }
    fn get_history(
        &self,
        id: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>> {
        boxed(async move { HttpTransport::get_history(self, &id).await })
    }
    fn wait_for_completion(
        &self,
        id: InstanceId,
        timeout: Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        boxed(async move { HttpTransport::wait_for_completion(self, &id, timeout).await })
    }
    fn query_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<InstancePage>> {
        boxed(async move { HttpTransport::query_instances(self, &query).await })
    }
    fn count_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>> {
        boxed(async move { HttpTransport::count_instances(self, &query).await })
    }
    fn raise_event(
        &self,
        id: InstanceId,
        name: String,
        data: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        boxed(async move { HttpTransport::raise_event(self, &id, &name, data.as_ref()).await })
    }
    fn terminate(
        &self,
        id: InstanceId,
        reason: Option<String>,
        recursive: bool,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        boxed(async move { HttpTransport::terminate(self, &id, reason, recursive).await })
    }
    fn suspend(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        boxed(async move { HttpTransport::suspend(self, &id, reason).await })
    }
    fn resume(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        boxed(async move { HttpTransport::resume(self, &id, reason).await })
    }
    fn rewind(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        boxed(async move { HttpTransport::rewind(self, &id, reason).await })
    }
    fn restart(
        &self,
        id: InstanceId,
        new_instance_id: bool,
    ) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        boxed(async move { HttpTransport::restart(self, &id, new_instance_id).await })
    }
    fn purge_instance(&self, id: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        boxed(async move { HttpTransport::purge_instance(self, &id).await })
    }
    fn purge_instances(&self, filter: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        boxed(async move { HttpTransport::purge_instances(self, &filter).await })
    }
    fn signal_entity(
        &self,
        entity: EntityId,
        operation: String,
        input: Option<Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        boxed(async move {
            HttpTransport::signal_entity(self, &entity, &operation, input.as_ref(), scheduled_time)
                .await
        })
    }
    fn get_entity(&self, entity: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        boxed(async move { HttpTransport::get_entity(self, &entity).await })
    }
    fn query_entities(&self, query: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        boxed(async move { HttpTransport::query_entities(self, &query).await })
    }
    fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        boxed(HttpTransport::clean_entity_storage(
            self,
            remove_empty,
            release_orphaned_locks,
        ))
    }
    fn registered_names(&self, _kind: FunctionKind) -> Vec<String> {
        Vec::new()
    }
}

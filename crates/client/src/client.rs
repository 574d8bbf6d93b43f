//! [`DurableClient`]: the typed client over either transport.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, TryStreamExt};
use perdure_core::management::*;
use perdure_core::{EntityId, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, ClientResult};
use crate::http::{BASE_PATH, HttpClientOptions, HttpTransport, enc};

#[derive(Clone)]
enum Transport {
    Http(Arc<HttpTransport>),
    Local(Arc<dyn ManagementApi>),
}

/// The Durable Client. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct DurableClient {
    transport: Transport,
}

impl std::fmt::Debug for DurableClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::Http(h) => f
                .debug_tuple("DurableClient::Http")
                .field(&h.nodes())
                .finish(),
            Transport::Local(_) => f.write_str("DurableClient::InProcess"),
        }
    }
}

/// Options of a start.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The instance id (a new unique one when `None`).
    pub instance_id: Option<String>,
    /// Start no earlier than this.
    pub scheduled_start: Option<Timestamp>,
    /// The orchestration version.
    pub version: Option<String>,
    /// A W3C `traceparent` (`00-<trace id>-<span id>-01`): the orchestration's spans join
    /// that trace (sent as the `traceparent` header; see docs/operations.md, "Traces").
    pub trace_parent: Option<String>,
}

impl StartOptions {
    /// Options with an explicit instance id.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            instance_id: Some(id.into()),
            ..Self::default()
        }
    }
}

/// An instance's state, with its history when asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrchestrationMetadata {
    /// The state.
    pub state: InstanceState,
    /// The history of the current execution, when asked for.
    pub history: Option<Vec<HistoryEvent>>,
}

impl OrchestrationMetadata {
    /// The runtime status.
    pub fn runtime_status(&self) -> OrchestrationStatus {
        self.state.runtime_status
    }

    /// Whether the instance has finished.
    pub fn is_finished(&self) -> bool {
        self.state.runtime_status.is_terminal()
    }

    /// The input decoded into `T` (`None` when there is none).
    pub fn read_input<T: DeserializeOwned>(&self) -> ClientResult<Option<T>> {
        decode(self.state.input.as_ref())
    }

    /// The output decoded into `T`.
    pub fn read_output<T: DeserializeOwned>(&self) -> ClientResult<Option<T>> {
        decode(self.state.output.as_ref())
    }

    /// The custom status decoded into `T`.
    pub fn read_custom_status<T: DeserializeOwned>(&self) -> ClientResult<Option<T>> {
        decode(self.state.custom_status.as_ref())
    }
}

fn decode<T: DeserializeOwned>(p: Option<&Payload>) -> ClientResult<Option<T>> {
    p.map(|p| p.decode::<T>()).transpose().map_err(Into::into)
}

/// Encodes a value; JSON `null` means "no payload".
fn encode<T: Serialize + ?Sized>(v: &T) -> ClientResult<Option<Payload>> {
    let p = Payload::json(v)?;
    Ok(if p.data == b"null" { None } else { Some(p) })
}

/// What an HTTP starter answers: 202, `Location` and `Retry-After` headers, and the
/// management payload as body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponseParts {
    /// The status code (202).
    pub status: u16,
    /// The `Location` header: the status query URI.
    pub location: String,
    /// The `Retry-After` header, in seconds.
    pub retry_after_secs: u64,
    /// The management payload.
    pub body: serde_json::Value,
}

fn id(s: &str) -> ClientResult<InstanceId> {
    InstanceId::new(s)
        .map_err(|e| ClientError::Management(ManagementError::BadRequest(e.to_string())))
}

impl DurableClient {
    /// A client over the HTTP API of these nodes (`http://host:port`).
    pub fn http<I, S>(urls: I) -> ClientResult<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::http_with(HttpClientOptions::new(urls))
    }

    /// A client over HTTP with explicit options.
    pub fn http_with(opts: HttpClientOptions) -> ClientResult<Self> {
        Ok(Self {
            transport: Transport::Http(Arc::new(HttpTransport::new(opts)?)),
        })
    }

    /// A client calling a node in the same process.
    pub fn in_process(api: Arc<dyn ManagementApi>) -> Self {
        Self {
            transport: Transport::Local(api),
        }
    }

    /// The client as a [`ManagementApi`] trait object.
    pub fn as_management_api(&self) -> Arc<dyn ManagementApi> {
        match &self.transport {
            Transport::Http(h) => h.clone(),
            Transport::Local(l) => l.clone(),
        }
    }

    /// Starts an orchestration with an input (anything serializable; `&()` for none) and
    /// returns its instance id.
    pub async fn schedule_new_orchestration<T: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &T,
        opts: StartOptions,
    ) -> ClientResult<InstanceId> {
        let mut req = StartRequest::new(name);
        req.input = encode(input)?;
        req.instance_id = opts.instance_id.as_deref().map(id).transpose()?;
        req.scheduled_start = opts.scheduled_start;
        req.version = opts.version;
        req.trace_parent = opts.trace_parent;
        self.start(req).await
    }

    /// Starts an orchestration from a full request (raw payload, reuse policy).
    /// Over HTTP the reuse policy is the node's default.
    pub async fn start(&self, req: StartRequest) -> ClientResult<InstanceId> {
        match &self.transport {
            Transport::Http(h) => h.start(req).await,
            Transport::Local(l) => Ok(l.start(req).await?),
        }
    }

    /// An instance's state (`None` if unknown), with payloads and/or history as asked.
    pub async fn get_instance(
        &self,
        instance_id: &InstanceId,
        with_payloads: bool,
        with_history: bool,
    ) -> ClientResult<Option<OrchestrationMetadata>> {
        let state = match &self.transport {
            Transport::Http(h) => h.get_instance(instance_id, with_payloads).await?,
            Transport::Local(l) => l.get_instance(instance_id.clone(), with_payloads).await?,
        };
        let Some(state) = state else {
            return Ok(None);
        };
        let history = if with_history {
            self.get_history(instance_id).await?
        } else {
            None
        };
        Ok(Some(OrchestrationMetadata { state, history }))
    }

    /// The history of an instance's current execution.
    pub async fn get_history(
        &self,
        instance_id: &InstanceId,
    ) -> ClientResult<Option<Vec<HistoryEvent>>> {
        match &self.transport {
            Transport::Http(h) => h.get_history(instance_id).await,
            Transport::Local(l) => Ok(l.get_history(instance_id.clone()).await?),
        }
    }

    /// Waits until the instance finishes, up to `timeout`, using server-side waits (long
    /// polls), never a tight loop. Errors with [`ClientError::Timeout`] if it has not finished,
    /// and with a not-found management error if it does not exist.
    pub async fn wait_for_instance_completion(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> ClientResult<OrchestrationMetadata> {
        let st = match &self.transport {
            Transport::Http(h) => h.wait_for_completion(instance_id, timeout).await?,
            Transport::Local(l) => {
                l.wait_for_completion(instance_id.clone(), timeout).await?;
                l.get_instance(instance_id.clone(), true).await?
            }
        };
        match st {
            None => Err(ManagementError::NotFound(instance_id.to_string()).into()),
            Some(s) if s.runtime_status.is_terminal() => Ok(OrchestrationMetadata {
                state: s,
                history: None,
            }),
            Some(_) => Err(ClientError::Timeout {
                instance_id: instance_id.to_string(),
                waited: timeout,
            }),
        }
    }

    /// One page of instances.
    pub async fn query_instances_page(&self, query: InstanceQuery) -> ClientResult<InstancePage> {
        match &self.transport {
            Transport::Http(h) => h.query_instances(&query).await,
            Transport::Local(l) => Ok(l.query_instances(query).await?),
        }
    }

    /// All instances matching a query, page after page, as a stream.
    pub fn query_instances(
        &self,
        query: InstanceQuery,
    ) -> impl Stream<Item = ClientResult<InstanceState>> + Send + 'static {
        let client = self.clone();
        paged(query, move |q: InstanceQuery| {
            let client = client.clone();
            async move {
                let page = client.query_instances_page(q.clone()).await?;
                let next = page.continuation.map(|c| InstanceQuery {
                    continuation: Some(c),
                    ..q
                });
                Ok((page.instances, next))
            }
        })
    }

    /// Counts of instances per status.
    pub async fn count_instances(
        &self,
        query: InstanceQuery,
    ) -> ClientResult<BTreeMap<OrchestrationStatus, u64>> {
        match &self.transport {
            Transport::Http(h) => h.count_instances(&query).await,
            Transport::Local(l) => Ok(l.count_instances(query).await?),
        }
    }

    /// Raises an event with data (`&()` for none).
    pub async fn raise_event<T: Serialize + ?Sized>(
        &self,
        instance_id: &InstanceId,
        event_name: &str,
        data: &T,
    ) -> ClientResult<()> {
        let data = encode(data)?;
        match &self.transport {
            Transport::Http(h) => h.raise_event(instance_id, event_name, data.as_ref()).await,
            Transport::Local(l) => Ok(l
                .raise_event(instance_id.clone(), event_name.to_string(), data)
                .await?),
        }
    }

    /// Raises an event with a payload as is (for example JSON text from a command line).
    pub async fn raise_event_payload(
        &self,
        instance_id: &InstanceId,
        event_name: &str,
        data: Option<Payload>,
    ) -> ClientResult<()> {
        match &self.transport {
            Transport::Http(h) => h.raise_event(instance_id, event_name, data.as_ref()).await,
            Transport::Local(l) => Ok(l
                .raise_event(instance_id.clone(), event_name.to_string(), data)
                .await?),
        }
    }

    /// Terminates an instance (and its sub-orchestrations when `recursive`).
    pub async fn terminate(
        &self,
        instance_id: &InstanceId,
        reason: Option<&str>,
        recursive: bool,
    ) -> ClientResult<()> {
        let reason = reason.map(str::to_string);
        match &self.transport {
            Transport::Http(h) => h.terminate(instance_id, reason, recursive).await,
            Transport::Local(l) => Ok(l.terminate(instance_id.clone(), reason, recursive).await?),
        }
    }

    /// Suspends an instance.
    pub async fn suspend(
        &self,
        instance_id: &InstanceId,
        reason: Option<&str>,
    ) -> ClientResult<()> {
        let reason = reason.map(str::to_string);
        match &self.transport {
            Transport::Http(h) => h.suspend(instance_id, reason).await,
            Transport::Local(l) => Ok(l.suspend(instance_id.clone(), reason).await?),
        }
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, instance_id: &InstanceId, reason: Option<&str>) -> ClientResult<()> {
        let reason = reason.map(str::to_string);
        match &self.transport {
            Transport::Http(h) => h.resume(instance_id, reason).await,
            Transport::Local(l) => Ok(l.resume(instance_id.clone(), reason).await?),
        }
    }

    /// Rewinds a failed instance.
    pub async fn rewind(&self, instance_id: &InstanceId, reason: Option<&str>) -> ClientResult<()> {
        let reason = reason.map(str::to_string);
        match &self.transport {
            Transport::Http(h) => h.rewind(instance_id, reason).await,
            Transport::Local(l) => Ok(l.rewind(instance_id.clone(), reason).await?),
        }
    }

    /// Restarts an instance with its original input; returns the (new) instance id.
    pub async fn restart(
        &self,
        instance_id: &InstanceId,
        new_instance_id: bool,
    ) -> ClientResult<InstanceId> {
        match &self.transport {
            Transport::Http(h) => h.restart(instance_id, new_instance_id).await,
            Transport::Local(l) => Ok(l.restart(instance_id.clone(), new_instance_id).await?),
        }
    }

    /// Purges one finished instance; returns how many were removed (0 when there was no
    /// such instance, as Durable Functions' clients report it).
    pub async fn purge_instance(&self, instance_id: &InstanceId) -> ClientResult<u64> {
        let r = match &self.transport {
            Transport::Http(h) => h.purge_instance(instance_id).await,
            Transport::Local(l) => l
                .purge_instance(instance_id.clone())
                .await
                .map_err(ClientError::from),
        };
        match r {
            Ok(r) => Ok(r.deleted),
            Err(e) if e.is_not_found() => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Purges one batch of finished instances matching a filter.
    pub async fn purge_instances_batch(&self, filter: PurgeFilter) -> ClientResult<PurgeResult> {
        match &self.transport {
            Transport::Http(h) => h.purge_instances(&filter).await,
            Transport::Local(l) => Ok(l.purge_instances(filter).await?),
        }
    }

    /// Purges every finished instance matching a filter, batch after batch; returns the total.
    pub async fn purge_instances(&self, filter: PurgeFilter) -> ClientResult<u64> {
        self.purge_instances_with_progress(filter, |_| {}).await
    }

    /// Like [`DurableClient::purge_instances`], calling `progress` with the running total after
    /// each batch.
    pub async fn purge_instances_with_progress(
        &self,
        filter: PurgeFilter,
        mut progress: impl FnMut(u64),
    ) -> ClientResult<u64> {
        let mut total = 0u64;
        loop {
            let r = self.purge_instances_batch(filter.clone()).await?;
            total = total.saturating_add(r.deleted);
            progress(total);
            if r.complete || r.deleted == 0 {
                return Ok(total);
            }
        }
    }

    /// Signals an entity operation with an input (`&()` for none).
    pub async fn signal_entity<T: Serialize + ?Sized>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: &T,
        scheduled_time: Option<Timestamp>,
    ) -> ClientResult<()> {
        let input = encode(input)?;
        match &self.transport {
            Transport::Http(h) => {
                h.signal_entity(entity, operation, input.as_ref(), scheduled_time)
                    .await
            }
            Transport::Local(l) => Ok(l
                .signal_entity(entity.clone(), operation.to_string(), input, scheduled_time)
                .await?),
        }
    }

    /// Signals an entity operation with a payload as is.
    pub async fn signal_entity_payload(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Option<Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> ClientResult<()> {
        match &self.transport {
            Transport::Http(h) => {
                h.signal_entity(entity, operation, input.as_ref(), scheduled_time)
                    .await
            }
            Transport::Local(l) => Ok(l
                .signal_entity(entity.clone(), operation.to_string(), input, scheduled_time)
                .await?),
        }
    }

    /// An entity (`None` if it does not exist).
    pub async fn get_entity(&self, entity: &EntityId) -> ClientResult<Option<EntityState>> {
        match &self.transport {
            Transport::Http(h) => h.get_entity(entity).await,
            Transport::Local(l) => Ok(l.get_entity(entity.clone()).await?),
        }
    }

    /// An entity's state decoded into `T` (`None` if it has none).
    pub async fn get_entity_state<T: DeserializeOwned>(
        &self,
        entity: &EntityId,
    ) -> ClientResult<Option<T>> {
        let e = self.get_entity(entity).await?;
        decode(e.as_ref().and_then(|e| e.state.as_ref()))
    }

    /// One page of entities.
    pub async fn query_entities_page(&self, query: EntityQuery) -> ClientResult<EntityPage> {
        match &self.transport {
            Transport::Http(h) => h.query_entities(&query).await,
            Transport::Local(l) => Ok(l.query_entities(query).await?),
        }
    }

    /// All entities matching a query, as a stream.
    pub fn query_entities(
        &self,
        query: EntityQuery,
    ) -> impl Stream<Item = ClientResult<EntityState>> + Send + 'static {
        let client = self.clone();
        paged(query, move |q: EntityQuery| {
            let client = client.clone();
            async move {
                let page = client.query_entities_page(q.clone()).await?;
                let next = page.continuation.map(|c| EntityQuery {
                    continuation: Some(c),
                    ..q
                });
                Ok((page.entities, next))
            }
        })
    }

    /// Removes empty entities and releases orphaned locks.
    pub async fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> ClientResult<CleanEntityStorageResult> {
        match &self.transport {
            Transport::Http(h) => {
                h.clean_entity_storage(remove_empty, release_orphaned_locks)
                    .await
            }
            Transport::Local(l) => Ok(l
                .clean_entity_storage(remove_empty, release_orphaned_locks)
                .await?),
        }
    }

    /// The management payload of an instance for a node's public origin
    /// (`http://host:port`): the URIs a caller uses to drive it.
    pub fn create_http_management_payload(
        &self,
        origin: &str,
        instance_id: &InstanceId,
    ) -> serde_json::Value {
        let inst = format!(
            "{}{BASE_PATH}/instances/{}",
            origin.trim_end_matches('/'),
            enc(instance_id.as_str())
        );
        serde_json::json!({
            "id": instance_id.as_str(),
            "statusQueryGetUri": inst,
            "sendEventPostUri": format!("{inst}/raiseEvent/{{eventName}}"),
            "terminatePostUri": format!("{inst}/terminate?reason={{text}}"),
            "rewindPostUri": format!("{inst}/rewind?reason={{text}}"),
            "purgeHistoryDeleteUri": inst,
            "restartPostUri": format!("{inst}/restart"),
            "suspendPostUri": format!("{inst}/suspend?reason={{text}}"),
            "resumePostUri": format!("{inst}/resume?reason={{text}}"),
        })
    }

    /// The 202 answer of an HTTP starter: `Location`, `Retry-After` and the management
    /// payload.
    pub fn create_check_status_response(
        &self,
        origin: &str,
        instance_id: &InstanceId,
    ) -> HttpResponseParts {
        let body = self.create_http_management_payload(origin, instance_id);
        HttpResponseParts {
            status: 202,
            location: body["statusQueryGetUri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            retry_after_secs: 10,
            body,
        }
    }
}

/// A stream over every item of a paged query: `fetch` returns one page and the query for the
/// next page, if any.
fn paged<Q, T, F, Fut>(first: Q, fetch: F) -> impl Stream<Item = ClientResult<T>> + Send + 'static
where
    Q: Send + 'static,
    T: Send + 'static,
    F: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ClientResult<(Vec<T>, Option<Q>)>> + Send + 'static,
{
    let fetch = Arc::new(fetch);
    futures::stream::try_unfold(Some(first), move |q| {
        let fetch = fetch.clone();
        async move {
            let Some(q) = q else {
                return Ok::<_, ClientError>(None);
            };
            let (items, next) = fetch(q).await?;
            Ok(Some((
                futures::stream::iter(items.into_iter().map(Ok::<_, ClientError>)),
                next,
            )))
        }
    })
    .try_flatten()
}

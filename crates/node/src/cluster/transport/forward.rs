//! Location transparency: [`ClusterApi`] is the [`ManagementApi`] every node's HTTP API and
//! in-process client use. An operation on one instance or entity runs where the target's
//! partition is owned: here when this node holds it, else on the owner through a router
//! (see [`super::Links`]). Fan-out queries (query, count, purge by filter, entity listing,
//! entity storage cleanup) read the shared store and run on any node.
//!
//! During a handoff or failover (no owner known, or the owner answers "not mine", or no link
//! to it) a request waits, bounded by [`ForwardOptions::handoff_wait`], then fails with 503
//! (`Unavailable`) naming the partition.
//!
//! At most once: a forwarded operation is sent again only when no earlier attempt can have
//! taken effect (no route, "not mine", not ready), or when the operation is idempotent
//! (reads, waits, terminate, suspend, resume, purge). A start without an instance id gets its
//! id here, at the ingress node, before the first attempt, and is sent with
//! [`IdReusePolicy::RejectExisting`]; a retry that finds the instance already there is the
//! earlier attempt's success. Other operations whose attempt may have been delivered
//! (timeout, link closed) fail with 500 (`Internal`) saying so, never run twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use perdure_core::management::{
    CleanEntityStorageResult, EntityPage, EntityQuery, EntityState, FunctionKind, IdReusePolicy,
    InstancePage, InstanceQuery, InstanceState, ManagementApi, ManagementError, ManagementResult,
    PurgeFilter, PurgeResult, StartRequest,
};
use perdure_core::{EntityId, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp};

use super::Links;
use super::router::PeerHandler;
use super::wire::{
    ForwardReply, ForwardRequest, PeerCast, PeerReply, PeerRequest, WorkItemRequest, WorkersSummary,
};

/// Who owns each partition, as this node currently knows it. The membership side implements
/// it from the store's lease records.
pub trait PartitionOwners: Send + Sync + 'static {
    /// The owner of `partition` (None: none right now: a handoff or failover).
    fn owner(&self, partition: u32) -> Option<String>;
    /// Whether this node holds `partition`'s lease now.
    fn is_local(&self, partition: u32) -> bool;
    /// Resolves when the owners change after this call (a request waiting for an owner then
    /// asks again at once instead of at its next back-off step); never, by default. The
    /// subscription starts with the call, not with the first poll.
    fn changed(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}

/// A fixed (settable) ownership table: for tests and single-node setups.
#[derive(Debug)]
pub struct StaticOwners {
    local: String,
    owners: Mutex<BTreeMap<u32, String>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl StaticOwners {
    /// A table where every partition is owned by `owner_of(p)`.
    pub fn new(
        local: impl Into<String>,
        partitions: u32,
        owner_of: impl Fn(u32) -> String,
    ) -> Self {
        Self {
            local: local.into(),
            owners: Mutex::new((0..partitions).map(|p| (p, owner_of(p))).collect()),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Sets (Some) or clears (None: handoff under way) the owner of a partition.
    pub fn set(&self, partition: u32, owner: Option<String>) {
        let mut m = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        match owner {
            Some(o) => m.insert(partition, o),
            None => m.remove(&partition),
        };
        drop(m);
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl PartitionOwners for StaticOwners {
    fn owner(&self, partition: u32) -> Option<String> {
        self.owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&partition)
            .cloned()
    }

    fn is_local(&self, partition: u32) -> bool {
        self.owner(partition).is_some_and(|o| o == self.local)
    }

    fn changed(&self) -> BoxFuture<'static, ()> {
        let mut rx = self.changed.subscribe();
        Box::pin(async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Receives nudges from peers: "new messages were committed to this partition's inbox".
pub trait NudgeTarget: Send + Sync + 'static {
    /// The partition's owner here should read its inbox and timers now.
    fn nudge(&self, partition: u32);
}

/// Bounds of forwarding.
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// How long a request waits for an owner during a handoff or failover (the partition
    /// lease plus a few seconds) before it fails with 503.
    pub handoff_wait: Duration,
    /// How long one forwarded request may take (a long poll adds its own wait).
    pub call_timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            handoff_wait: Duration::from_secs(15),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// The cluster-wide [`ManagementApi`] of a node (see the module docs).
pub struct ClusterApi {
    local: Arc<dyn ManagementApi>,
    links: Arc<dyn Links>,
    owners: Arc<dyn PartitionOwners>,
    partitions: u32,
    new_id: Arc<dyn Fn() -> String + Send + Sync>,
    nudges: Option<Arc<dyn NudgeTarget>>,
    opts: ForwardOptions,
}

impl std::fmt::Debug for ClusterApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterApi")
            .field("node", &self.links.local_node())
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl ClusterApi {
    /// A cluster API over a local node's API. `new_id` makes instance ids unique across the
    /// cluster (the node's generator).
    pub fn new(
        local: Arc<dyn ManagementApi>,
        links: Arc<dyn Links>,
        owners: Arc<dyn PartitionOwners>,
        partitions: u32,
        new_id: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Self {
        Self {
            local,
            links,
            owners,
            partitions,
            new_id,
            nudges: None,
            opts: ForwardOptions::default(),
        }
    }

    /// A cluster API over a running node.
    pub fn for_node(
        node: crate::node::NodeHandle,
        links: Arc<dyn Links>,
        owners: Arc<dyn PartitionOwners>,
    ) -> Self {
        let partitions = node.partitions();
        let shared = node.shared().clone();
        Self::new(
            Arc::new(node),
            links,
            owners,
            partitions,
            Arc::new(move || shared.new_instance_id()),
        )
    }

    /// Sets the bounds.
    pub fn with_options(mut self, opts: ForwardOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Where nudges from peers go.
    pub fn with_nudges(mut self, target: Arc<dyn NudgeTarget>) -> Self {
        self.nudges = Some(target);
        self
    }

    /// The partition of a routing key.
    pub fn partition_of(&self, routing_key: &str) -> u32 {
        crate::state::partition_of(routing_key, self.partitions)
    }

    /// Sends a nudge for `partition` to its owner (nothing when this node owns it or no
    /// owner is known: the new owner recovers from the inbox on acquiring).
    pub fn nudge(&self, partition: u32) {
        if self.owners.is_local(partition) {
            if let Some(n) = &self.nudges {
                n.nudge(partition);
            }
            return;
        }
        if let Some(owner) = self.owners.owner(partition)
            && let Err(e) = self.links.cast(&owner, &PeerCast::Nudge { partition })
        {
            tracing::debug!(partition, owner, error = %e, "nudge not sent");
        }
    }

    /// Runs a targeted operation where its partition is owned (see the module docs).
    pub async fn route(&self, req: ForwardRequest) -> ManagementResult<ForwardReply> {
        let p = self.partition_of(&req.routing_key());
        let idempotent = matches!(
            req,
            ForwardRequest::GetInstance { .. }
                | ForwardRequest::GetHistory { .. }
                | ForwardRequest::WaitForCompletion { .. }
                | ForwardRequest::GetEntity { .. }
                | ForwardRequest::Terminate { .. }
                | ForwardRequest::Suspend { .. }
                | ForwardRequest::Resume { .. }
                | ForwardRequest::PurgeInstance { .. }
        ) || matches!(&req, ForwardRequest::Start { req } if req.reuse_policy == IdReusePolicy::RejectExisting);
        let call_timeout = match &req {
            ForwardRequest::WaitForCompletion { timeout_ms, .. } => {
                self.opts.call_timeout + Duration::from_millis(*timeout_ms)
            }
            _ => self.opts.call_timeout,
        };
        let me = self.links.local_node().to_string();
        let deadline = tokio::time::Instant::now() + self.opts.handoff_wait;
        let mut backoff = Duration::from_millis(5);
        let mut delivered_maybe = false;
        let last: String;
        // No subscription on the first attempt (the hot path: most requests find their owner
        // at once); from the second on, subscribed before the owners are read, so a change in
        // between still wakes.
        let mut retried = false;
        loop {
            let changed = retried.then(|| self.owners.changed());
            let why = if self.owners.is_local(p) {
                return Ok(run_local(self.local.as_ref(), req).await);
            } else {
                match self.owners.owner(p) {
                    None => format!("partition {p} has no owner (handoff or failover under way)"),
                    Some(n) if n == me => format!("this node is acquiring partition {p}"),
                    Some(n) => {
                        let request = PeerRequest::Forward(req.clone());
                        match self.links.call(&n, &request, call_timeout).await {
                            Ok(PeerReply::Forwarded(r)) => {
                                return Ok(if delivered_maybe {
                                    accept_earlier_start(&req, *r)
                                } else {
                                    *r
                                });
                            }
                            Ok(PeerReply::NotMine { .. }) => {
                                format!("node {n} no longer owns partition {p}")
                            }
                            Ok(PeerReply::NotReady) => format!("node {n} is not serving yet"),
                            Ok(PeerReply::Undecodable(m)) => {
                                return Err(ManagementError::Internal(format!(
                                    "node {n} could not read the forwarded {} ({m}); \
                                     are the nodes on different versions?",
                                    req.operation()
                                )));
                            }
                            Ok(
                                other @ (PeerReply::Pong
                                | PeerReply::WorkItemDone { .. }
                                | PeerReply::NoWorker(_)
                                | PeerReply::WorkItemFailed(_)
                                | PeerReply::WorkItemUnfinished(_)),
                            ) => {
                                return Err(ManagementError::Internal(format!(
                                    "node {n} answered a forwarded {} with {other:?}",
                                    req.operation()
                                )));
                            }
                            Err(e) if e.maybe_delivered() => {
                                if !idempotent {
                                    return Err(ManagementError::Internal(format!(
                                        "the forwarded {} to node {n} may or may not have \
                                         taken effect: {e}",
                                        req.operation()
                                    )));
                                }
                                delivered_maybe = true;
                                e.to_string()
                            }
                            Err(e) => e.to_string(),
                        }
                    }
                }
            };
            let now = tokio::time::Instant::now();
            if now + backoff >= deadline {
                last = why;
                break;
            }
            tracing::debug!(partition = p, reason = %why, "waiting for the owner of a partition");
            // A bounded back-off: ownership changes are decided by the store, and the
            // membership side learns them on its own schedule.
            let changed = changed.unwrap_or_else(|| self.owners.changed());
            retried = true;
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = changed => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
        Err(ManagementError::Unavailable(format!(
            "no owner of partition {p} answered within {:?} ({last}); retry later",
            self.opts.handoff_wait
        )))
    }

    async fn instance_id(&self, req: ForwardRequest) -> ManagementResult<InstanceId> {
        match self.route(req).await? {
            ForwardReply::InstanceId(r) => r,
            other => Err(unexpected(&other)),
        }
    }

    async fn unit(&self, req: ForwardRequest) -> ManagementResult<()> {
        match self.route(req).await? {
            ForwardReply::Unit(r) => r,
            other => Err(unexpected(&other)),
        }
    }

    async fn instance(&self, req: ForwardRequest) -> ManagementResult<Option<InstanceState>> {
        match self.route(req).await? {
            ForwardReply::Instance(r) => r,
            other => Err(unexpected(&other)),
        }
    }
}

/// A start sent again after an attempt that may have been delivered: "already exists" is that
/// attempt's success (the id was generated here, nobody else knows it).
fn accept_earlier_start(req: &ForwardRequest, reply: ForwardReply) -> ForwardReply {
    match (req, reply) {
        (
            ForwardRequest::Start { req },
            ForwardReply::InstanceId(Err(ManagementError::AlreadyExists { instance_id, .. })),
        ) if req.reuse_policy == IdReusePolicy::RejectExisting
            && req.instance_id.as_ref() == Some(&instance_id) =>
        {
            ForwardReply::InstanceId(Ok(instance_id))
        }
        (_, r) => r,
    }
}

fn unexpected(r: &ForwardReply) -> ManagementError {
    ManagementError::Internal(format!("a peer answered with the wrong reply kind: {r:?}"))
}

/// Runs a forwarded operation against this node's own API.
pub async fn run_local(api: &dyn ManagementApi, req: ForwardRequest) -> ForwardReply {
    use ForwardRequest as R;
    match req {
        R::Start { req } => ForwardReply::InstanceId(api.start(req).await),
        R::GetInstance { id, with_payloads } => {
            ForwardReply::Instance(api.get_instance(id, with_payloads).await)
        }
        R::GetHistory { id } => ForwardReply::History(api.get_history(id).await),
        R::WaitForCompletion { id, timeout_ms } => ForwardReply::Instance(
            api.wait_for_completion(id, Duration::from_millis(timeout_ms))
                .await,
        ),
        R::RaiseEvent { id, name, data } => {
            ForwardReply::Unit(api.raise_event(id, name, data).await)
        }
        R::Terminate {
            id,
            reason,
            recursive,
        } => ForwardReply::Unit(api.terminate(id, reason, recursive).await),
        R::Suspend { id, reason } => ForwardReply::Unit(api.suspend(id, reason).await),
        R::Resume { id, reason } => ForwardReply::Unit(api.resume(id, reason).await),
        R::Rewind { id, reason } => ForwardReply::Unit(api.rewind(id, reason).await),
        R::Restart {
            id,
            new_instance_id,
        } => ForwardReply::InstanceId(api.restart(id, new_instance_id).await),
        R::PurgeInstance { id } => ForwardReply::Purge(api.purge_instance(id).await),
        R::SignalEntity {
            entity,
            operation,
            input,
            scheduled_time,
        } => ForwardReply::Unit(
            api.signal_entity(entity, operation, input, scheduled_time)
                .await,
        ),
        R::GetEntity { entity } => ForwardReply::Entity(api.get_entity(entity).await),
    }
}

/// What a node answers its peers: forwarded operations on partitions it owns, pings and
/// nudges.
pub struct ServePeers {
    local: Arc<dyn ManagementApi>,
    owners: Arc<dyn PartitionOwners>,
    partitions: u32,
    nudges: Option<Arc<dyn NudgeTarget>>,
    work: Option<Arc<dyn PeerWork>>,
}

/// The seam to a node's gRPC workers, for peers' work items and worker summaries
/// (implemented by `crate::grpc::peers`).
pub trait PeerWork: Send + Sync + 'static {
    /// Runs a peer's work item on this node's workers; the reply is
    /// [`PeerReply::WorkItemDone`] or [`PeerReply::NoWorker`].
    fn run(&self, item: WorkItemRequest) -> BoxFuture<'static, PeerReply>;
    /// What a peer's workers serve now.
    fn workers(&self, summary: WorkersSummary);
    /// A peer no longer waits for its work item `id`.
    fn withdraw(&self, origin: String, incarnation: u64, id: u64);
}

impl ServePeers {
    /// Serves `local` for the partitions `owners` says this node holds.
    pub fn new(
        local: Arc<dyn ManagementApi>,
        owners: Arc<dyn PartitionOwners>,
        partitions: u32,
        nudges: Option<Arc<dyn NudgeTarget>>,
    ) -> Self {
        Self {
            local,
            owners,
            partitions,
            nudges,
            work: None,
        }
    }

    /// Also serves peers' work items and worker summaries with `work`.
    pub fn with_work(mut self, work: Arc<dyn PeerWork>) -> Self {
        self.work = Some(work);
        self
    }
}

impl PeerHandler for ServePeers {
    fn handle(&self, request: PeerRequest) -> BoxFuture<'static, PeerReply> {
        let local = self.local.clone();
        let owners = self.owners.clone();
        let partitions = self.partitions;
        let work = self.work.clone();
        Box::pin(async move {
            match request {
                PeerRequest::Ping => PeerReply::Pong,
                PeerRequest::WorkItem(item) => match work {
                    Some(w) => w.run(item).await,
                    None => PeerReply::NoWorker("this node does not serve gRPC workers".into()),
                },
                PeerRequest::Forward(req) => {
                    let p = crate::state::partition_of(&req.routing_key(), partitions);
                    if !owners.is_local(p) {
                        return PeerReply::NotMine { partition: p };
                    }
                    PeerReply::Forwarded(Box::new(run_local(local.as_ref(), req).await))
                }
            }
        })
    }

    fn cast(&self, message: PeerCast) {
        match message {
            PeerCast::Nudge { partition } => {
                if let Some(n) = &self.nudges
                    && partition < self.partitions
                {
                    n.nudge(partition);
                }
            }
            PeerCast::Workers(summary) => {
                if let Some(w) = &self.work {
                    w.workers(summary);
                }
            }
            PeerCast::WithdrawWorkItem {
                origin,
                incarnation,
                id,
            } => {
                if let Some(w) = &self.work {
                    w.withdraw(origin, incarnation, id);
                }
            }
        }
    }
}

impl ManagementApi for ClusterApi {
    fn start(&self, mut req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        Box::pin(async move {
            if req.instance_id.is_none() {
                // Chosen here so every attempt names the same instance (see the module docs).
                req.instance_id = Some(
                    InstanceId::new((self.new_id)())
                        .map_err(|e| ManagementError::Internal(e.to_string()))?,
                );
                req.reuse_policy = IdReusePolicy::RejectExisting;
            }
            self.instance_id(ForwardRequest::Start { req }).await
        })
    }

    fn get_instance(
        &self,
        id: InstanceId,
        with_payloads: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        Box::pin(self.instance(ForwardRequest::GetInstance { id, with_payloads }))
    }

    fn get_history(
        &self,
        id: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>> {
        Box::pin(async move {
            match self.route(ForwardRequest::GetHistory { id }).await? {
                ForwardReply::History(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }

    fn wait_for_completion(
        &self,
        id: InstanceId,
        timeout: Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Box::pin(self.instance(ForwardRequest::WaitForCompletion { id, timeout_ms }))
    }

    fn query_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<InstancePage>> {
        self.local.query_instances(query)
    }

    fn count_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>> {
        self.local.count_instances(query)
    }

    fn raise_event(
        &self,
        id: InstanceId,
        name: String,
        data: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.unit(ForwardRequest::RaiseEvent { id, name, data }))
    }

    fn terminate(
        &self,
        id: InstanceId,
        reason: Option<String>,
        recursive: bool,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.unit(ForwardRequest::Terminate {
            id,
            reason,
            recursive,
        }))
    }

    fn suspend(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.unit(ForwardRequest::Suspend { id, reason }))
    }

    fn resume(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.unit(ForwardRequest::Resume { id, reason }))
    }

    fn rewind(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.unit(ForwardRequest::Rewind { id, reason }))
    }

    fn restart(
        &self,
        id: InstanceId,
        new_instance_id: bool,
    ) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        Box::pin(self.instance_id(ForwardRequest::Restart {
            id,
            new_instance_id,
        }))
    }

    fn purge_instance(&self, id: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        Box::pin(async move {
            match self.route(ForwardRequest::PurgeInstance { id }).await? {
                ForwardReply::Purge(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }

    fn purge_instances(&self, filter: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        self.local.purge_instances(filter)
    }

    fn signal_entity(
        &self,
        entity: EntityId,
        operation: String,
        input: Option<Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.unit(ForwardRequest::SignalEntity {
            entity,
            operation,
            input,
            scheduled_time,
        }))
    }

    fn get_entity(&self, entity: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        Box::pin(async move {
            match self.route(ForwardRequest::GetEntity { entity }).await? {
                ForwardReply::Entity(r) => r,
                other => Err(unexpected(&other)),
            }
        })
    }

    fn query_entities(&self, query: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        self.local.query_entities(query)
    }

    fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        self.local
            .clean_entity_storage(remove_empty, release_orphaned_locks)
    }

    fn registered_names(&self, kind: FunctionKind) -> Vec<String> {
        self.local.registered_names(kind)
    }
}

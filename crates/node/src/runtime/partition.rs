//! The partition actor: owns one partition's lease, its pending inbox messages, its timers and
//! the in-memory instance and entity state of its ids. It processes messages in rounds: every
//! instance and entity with new messages runs one episode (or one operation batch), and the
//! round's transactions commit concurrently (one transaction per episode), so the store's
//! group commit batches them. Nothing here polls: the actor sleeps until a message arrives or
//! its earliest timer is due.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use perdure_core::{EntityId, InstanceId, Timestamp};
use tokio::time::Instant;

use super::entity::{self, EntityPlan, EntitySlot};
use super::instance::{self, InstancePlan, InstanceSlot};
use super::outbox::Outbox;
use super::{PartitionMsg, Shared};
use crate::state::records::{InboxMessage, Target};
use crate::state::{leases, queues};
use crate::store::{StoreError, transact};

/// Commits in flight per partition at most.
const MAX_PLANS_PER_ROUND: usize = 512;

/// A finished commit: its target, its plan and the outcome.
pub(crate) type Done = (Target, Arc<Plan>, Result<Committed, StoreError>);

/// Where a finished commit is reported (the partition actor's mailbox).
pub(crate) type DoneFn = Arc<dyn Fn(Done) + Send + Sync>;

/// A message with its store key.
pub(crate) type Keyed = (Vec<u8>, InboxMessage);

/// One prepared transaction.
pub(crate) enum Plan {
    Instance(Box<InstancePlan>),
    Entity(EntityPlan),
}

/// The outcome of a commit attempt.
pub(crate) enum Committed {
    /// Committed; deliver the outbox.
    Done(Outbox),
    /// A consumed message was already gone: nothing was written.
    Stale,
}

/// The state of one partition actor.
pub struct Partition {
    pub(crate) shared: Arc<Shared>,
    pub(crate) partition: u32,
    pub(crate) epoch: u64,
    pending: HashMap<Target, VecDeque<Keyed>>,
    known: HashSet<Vec<u8>>,
    dirty: VecDeque<Target>,
    dirty_set: HashSet<Target>,
    /// Targets with a commit in flight.
    busy: HashSet<Target>,
    timers: BTreeMap<(Timestamp, Vec<u8>), InboxMessage>,
    pub(crate) instances: HashMap<InstanceId, InstanceSlot>,
    pub(crate) entities: HashMap<EntityId, EntitySlot>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("partition", &self.partition)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// Acquires the partition's lease (its actor then recovers the inbox, timers and
    /// activity tasks, see [`Partition::recover`]).
    pub async fn start(shared: Arc<Shared>, partition: u32) -> Result<Self, StoreError> {
        // The owner is the node's configured name, stable across restarts: a restarted node
        // takes its partitions back at once (the new epoch fences the old process); another
        // node waits for the lease to expire.
        let owner = shared.opts.node_name.clone();
        let now = shared.clock.now();
        let dur = shared.opts.partition_lease;
        let epoch = transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let owner = owner.clone();
            Box::pin(async move { leases::acquire(tx, partition, &owner, now, dur).await })
        })
        .await?;
        let Some(epoch) = epoch else {
            // Another node holds an unexpired lease: report its epoch.
            let current = transact(shared.store.as_ref(), &shared.retry, move |tx| {
                Box::pin(async move { leases::read(tx, partition).await })
            })
            .await?
            .map_or(0, |l| l.epoch);
            return Err(StoreError::Fenced {
                partition,
                held: 0,
                current,
            });
        };
        if let Some(e) = shared.epochs.get(partition as usize) {
            e.store(epoch, Ordering::Release);
        }
        let me = Self {
            shared,
            partition,
            epoch,
            pending: HashMap::new(),
            known: HashSet::new(),
            dirty: VecDeque::new(),
            dirty_set: HashSet::new(),
            busy: HashSet::new(),
            timers: BTreeMap::new(),
            instances: HashMap::new(),
            entities: HashMap::new(),
        };
        Ok(me)
    }

    /// Reads the partition's inbox, timers and activity queue (on acquisition).
    pub(crate) async fn recover(&mut self) -> Result<(), StoreError> {
        let p = self.partition;
        let batch = self.shared.opts.recovery_batch.get();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let a = after.clone();
            let msgs = transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
                let a = a.clone();
                Box::pin(async move { queues::read_inbox(tx, p, a.as_deref(), batch).await })
            })
            .await?;
            let n = msgs.len();
            after = msgs.last().map(|(k, _)| k.clone());
            self.add_pending(msgs);
            if n < batch {
                break;
            }
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let a = after.clone();
            let ts = transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
                let a = a.clone();
                Box::pin(async move { queues::read_timers(tx, p, a.as_deref(), batch).await })
            })
            .await?;
            let n = ts.len();
            after = ts.last().map(|(k, _)| k.clone());
            for (k, m) in ts {
                if let Some(due) = queues::timer_due(&k) {
                    self.timers.insert((due, k), m);
                }
            }
            if n < batch {
                break;
            }
        }
        // Activity tasks left by a previous owner run again (at least once), with their
        // attempt count raised and a new lease.
        let mut after: Option<Vec<u8>> = None;
        let epoch = self.epoch;
        let lease = self.shared.opts.activity_lease;
        let now = self.shared.clock.now();
        loop {
            let a = after.clone();
            let tasks = transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
                let a = a.clone();
                Box::pin(async move {
                    leases::check(tx, p, epoch).await?;
                    let mut tasks = queues::read_tasks(tx, p, a.as_deref(), batch).await?;
                    for (_, t) in tasks.iter_mut() {
                        t.attempt += 1;
                        t.lease_until = now.add(lease);
                        queues::put_task(tx, p, t)?;
                    }
                    Ok(tasks)
                })
            })
            .await?;
            let n = tasks.len();
            after = tasks.last().map(|(k, _)| k.clone());
            if let Some(pool) = self.shared.activities.get() {
                for (k, t) in tasks {
                    pool.submit(p, k, t);
                }
            }
            if n < batch {
                break;
            }
        }
        self.shared
            .metrics
            .armed_timers
            .fetch_add(self.timers.len() as i64, Ordering::Relaxed);
        Ok(())
    }

    /// Commits in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.busy.len()
    }

    /// The earliest armed timer.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.timers.first_key_value().map(|((d, _), _)| *d)
    }

    fn add_pending(&mut self, msgs: Vec<Keyed>) {
        for (k, m) in msgs {
            if !self.known.insert(k.clone()) {
                continue;
            }
            let t = m.target.clone();
            self.pending.entry(t.clone()).or_default().push_back((k, m));
            self.mark_dirty(t);
        }
    }

    fn mark_dirty(&mut self, t: Target) {
        if self.dirty_set.insert(t.clone()) {
            self.dirty.push_back(t);
        }
    }

    /// Puts messages back in front of a target's queue (they were not consumed).
    fn requeue_front(&mut self, target: &Target, msgs: VecDeque<Keyed>) {
        if msgs.is_empty() {
            return;
        }
        let q = self.pending.entry(target.clone()).or_default();
        for m in msgs.into_iter().rev() {
            q.push_front(m);
        }
    }

    pub(crate) fn handle(&mut self, m: PartitionMsg) -> Option<tokio::sync::oneshot::Sender<()>> {
        match m {
            PartitionMsg::Deliver(msgs) => {
                if let Some(d) = self.shared.depth.get(self.partition as usize) {
                    d.fetch_sub(msgs.len(), Ordering::Relaxed);
                }
                self.add_pending(msgs);
            }
            PartitionMsg::Timers(ts) => {
                self.shared
                    .metrics
                    .armed_timers
                    .fetch_add(ts.len() as i64, Ordering::Relaxed);
                for (k, due, m) in ts {
                    self.timers.insert((due, k), m);
                }
            }
            PartitionMsg::Forget(id) => {
                if self.instances.remove(&id).is_some() {
                    self.shared
                        .metrics
                        .active_instances
                        .fetch_sub(1, Ordering::Relaxed);
                }
            }
            PartitionMsg::Shutdown(s) => return Some(s),
        }
        None
    }

    pub(crate) fn fire_due(&mut self) {
        let now = self.shared.clock.now();
        let mut due = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, k), m) = entry.remove_entry();
            due.push((k, m));
        }
        self.shared
            .metrics
            .armed_timers
            .fetch_sub(due.len() as i64, Ordering::Relaxed);
        self.add_pending(due);
    }

    pub(crate) async fn renew(&mut self) -> Result<(), StoreError> {
        let (p, epoch) = (self.partition, self.epoch);
        let now = self.shared.clock.now();
        let dur = self.shared.opts.partition_lease;
        transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
            Box::pin(async move { leases::renew(tx, p, epoch, now, dur).await })
        })
        .await
    }

    pub(crate) fn passivate_idle(&mut self) {
        let idle = self.shared.opts.idle_passivation;
        let before = self.instances.len();
        let pending = &self.pending;
        self.instances.retain(|id, s| {
            s.last_used.elapsed() < idle || pending.contains_key(&Target::Instance(id.clone()))
        });
        let removed = before - self.instances.len();
        self.shared
            .metrics
            .active_instances
            .fetch_sub(removed as i64, Ordering::Relaxed);
        self.entities.retain(|id, s| {
            s.last_used.elapsed() < idle || pending.contains_key(&Target::Entity(id.clone()))
        });
    }

    /// Keeps the number of live instances under the bound by passivating the least recently
    /// used ones without pending messages.
    fn enforce_bound(&mut self) {
        let max = self.shared.opts.max_active_per_partition.get();
        if self.instances.len() <= max {
            return;
        }
        let mut by_age: Vec<(Instant, InstanceId)> = self
            .instances
            .iter()
            .map(|(id, s)| (s.last_used, id.clone()))
            .collect();
        by_age.sort();
        let excess = self.instances.len() - max;
        let mut removed = 0;
        for (_, id) in by_age {
            if removed >= excess {
                break;
            }
            if self.pending.contains_key(&Target::Instance(id.clone())) {
                continue;
            }
            self.instances.remove(&id);
            removed += 1;
        }
        self.shared
            .metrics
            .active_instances
            .fetch_sub(removed as i64, Ordering::Relaxed);
    }

    /// Prepares the next episode (or entity batch) of every dirty target that has no commit
    /// in flight, and starts their commits. Commits of different targets overlap, and a
    /// target's next episode starts as soon as its previous commit is done (pipelining), so
    /// the store's group commit sees many transactions at once.
    pub(crate) async fn launch(&mut self, done: &DoneFn) -> Result<(), StoreError> {
        while !self.dirty.is_empty() && self.busy.len() < MAX_PLANS_PER_ROUND {
            let n = self.dirty.len().min(MAX_PLANS_PER_ROUND - self.busy.len());
            let targets: Vec<Target> = self.dirty.drain(..n).collect();
            for t in targets {
                self.dirty_set.remove(&t);
                if self.busy.contains(&t) {
                    // Marked dirty again when its commit completes.
                    continue;
                }
                let Some(msgs) = self.pending.remove(&t) else {
                    continue;
                };
                let (plan, leftover) = match &t {
                    Target::Instance(id) => {
                        let (p, l) = instance::prepare(self, id.clone(), msgs).await?;
                        (p.map(|p| Plan::Instance(Box::new(p))), l)
                    }
                    Target::Entity(id) => {
                        let (p, l) = entity::prepare(self, id.clone(), msgs).await?;
                        (p.map(Plan::Entity), l)
                    }
                };
                self.requeue_front(&t, leftover);
                let Some(plan) = plan else { continue };
                self.busy.insert(t.clone());
                let shared = self.shared.clone();
                let (p, epoch) = (self.partition, self.epoch);
                let commit_done = done.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    let plan = Arc::new(plan);
                    let r = commit(shared.clone(), p, epoch, plan.clone()).await;
                    shared.metrics.commit_latency.observe(started.elapsed());
                    commit_done((t, plan, r));
                });
            }
        }
        self.enforce_bound();
        Ok(())
    }

    /// Applies the outcome of one commit.
    pub(crate) async fn complete(
        &mut self,
        t: Target,
        plan: Arc<Plan>,
        r: Result<Committed, StoreError>,
    ) -> Result<(), StoreError> {
        self.busy.remove(&t);
        let p = self.partition;
        let plan = Arc::try_unwrap(plan).map_err(|_| StoreError::Conflict)?;
        match r {
            Ok(Committed::Done(out)) => {
                self.shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
                match plan {
                    Plan::Instance(ip) => {
                        for (k, _) in &ip.consumed {
                            self.known.remove(k);
                        }
                        instance::applied(self, *ip);
                    }
                    Plan::Entity(ep) => {
                        for (k, _) in &ep.consumed {
                            self.known.remove(k);
                        }
                        entity::applied(self, ep);
                    }
                }
                self.shared.dispatch(out);
            }
            Err(e @ StoreError::LimitExceeded { .. }) => {
                // Rerunning cannot help: only this instance (or entity batch) fails.
                tracing::error!(partition = p, target = ?t, error = %e, "episode over the store's limits");
                self.fail_too_large(&t, plan, &e).await?;
            }
            Ok(Committed::Stale) | Err(_) => {
                if let Err(e) = &r {
                    if matches!(e, StoreError::Fenced { .. } | StoreError::Corrupt { .. }) {
                        return r.map(|_| ());
                    }
                    tracing::warn!(partition = p, error = %e, "commit failed; rerunning");
                    self.shared
                        .metrics
                        .episode_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                // Forget the in-memory state (the store is the truth) and rerun with the
                // messages that are still in the store.
                let consumed = match plan {
                    Plan::Instance(ip) => {
                        if self.instances.remove(&ip.id).is_some() {
                            self.shared
                                .metrics
                                .active_instances
                                .fetch_sub(1, Ordering::Relaxed);
                        }
                        ip.consumed
                    }
                    Plan::Entity(ep) => {
                        self.entities.remove(&ep.id);
                        ep.consumed
                    }
                };
                let mut keep: VecDeque<Keyed> = consumed.into_iter().collect();
                if matches!(r, Ok(Committed::Stale)) {
                    keep = self.drop_missing(keep).await?;
                }
                self.requeue_front(&t, keep);
            }
        }
        if self.pending.contains_key(&t) {
            self.mark_dirty(t);
        }
        Ok(())
    }

    /// Commits the failure of an instance whose episode was over the store's limits; for an
    /// entity batch, drops its messages (callers get a failure).
    async fn fail_too_large(
        &mut self,
        t: &Target,
        plan: Plan,
        e: &StoreError,
    ) -> Result<(), StoreError> {
        let replacement = match plan {
            Plan::Instance(ip) => Some(Plan::Instance(Box::new(instance::too_large_plan(
                self, *ip, e,
            )))),
            Plan::Entity(ep) => entity::too_large_plan(self, ep, e).map(Plan::Entity),
        };
        let Some(plan) = replacement else {
            return Ok(());
        };
        let plan = Arc::new(plan);
        match commit(
            self.shared.clone(),
            self.partition,
            self.epoch,
            plan.clone(),
        )
        .await?
        {
            Committed::Done(out) => {
                let plan = Arc::try_unwrap(plan).map_err(|_| StoreError::Conflict)?;
                match plan {
                    Plan::Instance(ip) => {
                        for (k, _) in &ip.consumed {
                            self.known.remove(k);
                        }
                        instance::applied(self, *ip);
                    }
                    Plan::Entity(ep) => {
                        for (k, _) in &ep.consumed {
                            self.known.remove(k);
                        }
                        entity::applied(self, ep);
                    }
                }
                self.shared.dispatch(out);
            }
            Committed::Stale => {
                self.instances
                    .retain(|id, _| Target::Instance(id.clone()) != *t);
            }
        }
        Ok(())
    }

    async fn drop_missing(&mut self, msgs: VecDeque<Keyed>) -> Result<VecDeque<Keyed>, StoreError> {
        let keys: Vec<Vec<u8>> = msgs.iter().map(|(k, _)| k.clone()).collect();
        let present = transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
            let keys = keys.clone();
            Box::pin(async move {
                let mut out = Vec::with_capacity(keys.len());
                for k in &keys {
                    out.push(tx.get(k).await?.is_some());
                }
                Ok(out)
            })
        })
        .await?;
        let mut keep = VecDeque::new();
        for ((k, m), here) in msgs.into_iter().zip(present) {
            if here {
                keep.push_back((k, m));
            } else {
                self.known.remove(&k);
            }
        }
        Ok(keep)
    }
}

async fn commit(
    shared: Arc<Shared>,
    partition: u32,
    epoch: u64,
    plan: Arc<Plan>,
) -> Result<Committed, StoreError> {
    let sh = shared.clone();
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (sh, plan) = (sh.clone(), plan.clone());
        Box::pin(async move {
            leases::check(tx, partition, epoch).await?;
            let consumed = match plan.as_ref() {
                Plan::Instance(p) => &p.consumed,
                Plan::Entity(p) => &p.consumed,
            };
            for (k, _) in consumed {
                if tx.get(k).await?.is_none() {
                    return Ok(Committed::Stale);
                }
            }
            for (k, m) in consumed {
                queues::remove(tx, k, m);
            }
            let out = match plan.as_ref() {
                Plan::Instance(p) => instance::write(tx, &sh, partition, p).await?,
                Plan::Entity(p) => entity::write(tx, &sh, p).await?,
            };
            Ok(Committed::Done(out))
        })
    })
    .await
}

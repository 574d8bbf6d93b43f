//! The partition actor's state: the partition's lease, its pending inbox messages, its timers
//! and the instance and entity actors of its ids. It processes messages in rounds: every
//! instance and entity with new messages gets one run (one episode, or one operation batch)
//! in its own actor, and the runs' transactions commit concurrently (one transaction per
//! episode), so the store's group commit batches them. Nothing here polls: the actor sleeps
//! until a message arrives or its earliest timer is due.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use perdure_core::Timestamp;
use ractor::ActorRef;
use tokio::time::Instant;

use super::partition_actor::ActorMsg;
use super::target_actor::{self, Ran, TargetArgs, TargetMsg};
use super::{PartitionMsg, Shared};
use crate::state::records::{InboxMessage, Target};
use crate::state::{leases, queues};
use crate::store::{StoreError, transact};

/// Runs in flight per partition at most.
const MAX_RUNS_IN_FLIGHT: usize = 512;

/// A message with its store key.
pub(crate) type Keyed = (Vec<u8>, InboxMessage);

/// The partition's handle on one instance or entity actor.
struct ActorHandle {
    actor: ActorRef<TargetMsg>,
    /// Last run, for passivation.
    last_used: Instant,
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
    /// Targets with a run in flight.
    busy: HashSet<Target>,
    /// Busy targets that got new messages during their run (they run again when it reports,
    /// even if it stalled).
    woken: HashSet<Target>,
    timers: BTreeMap<(Timestamp, Vec<u8>), InboxMessage>,
    /// The live instance and entity actors.
    residents: HashMap<Target, ActorHandle>,
    /// Targets whose stored records do not decode: they are not run again until the node
    /// restarts; their messages stay queued (in memory and in the store), nothing is dropped.
    quarantined: HashSet<Target>,
    /// When the lease was last renewed (or acquired).
    renewed: Instant,
    /// While [`recover`](Self::recover) runs: its pages count as the cluster round's progress
    /// (a re-read's do not: it is not the round's work).
    recovering: bool,
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
        // The acquisition checks in the same transaction that this process is still the
        // node's current incarnation: a frozen process that wakes up after a restarted one
        // took its name over acquires nothing.
        let owner = shared.opts.cluster.name.clone();
        let now = shared.clock.now();
        // The lease's time counts from here, not from when the acquisition committed.
        let acquired = Instant::now();
        let dur = shared.opts.cluster.lease_ttl;
        let incarnation = shared.node_id;
        let epoch = transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let owner = owner.clone();
            Box::pin(async move {
                match crate::state::members::read(tx, &owner).await? {
                    Some(r) if r.incarnation == incarnation => {}
                    _ => return Ok(None),
                }
                leases::acquire(tx, partition, &owner, now, dur).await
            })
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
            woken: HashSet::new(),
            timers: BTreeMap::new(),
            residents: HashMap::new(),
            quarantined: HashSet::new(),
            renewed: acquired,
            recovering: false,
        };
        Ok(me)
    }

    /// Reads the partition's inbox, timers and activity queue (on acquisition).
    ///
    /// Renewals are messages to the partition's actor and wait behind the recovery, which
    /// may take longer than the lease on a slow store: between its pages the recovery (and a
    /// re-read) renews the lease itself once a renewal is due. The pages stay read-only
    /// transactions, which never conflict with the messages written meanwhile.
    pub(crate) async fn recover(&mut self) -> Result<(), StoreError> {
        let armed = self.timers.len();
        self.recovering = true;
        // Episodes committed in stages whose effects a previous owner did not finish writing
        // go first: what they write is read by the scans below.
        let read = async {
            self.finish_staged().await?;
            self.scan_inbox_and_timers().await?;
            self.recover_tasks().await
        }
        .await;
        self.recovering = false;
        read?;
        self.shared
            .metrics
            .armed_timers
            .fetch_add((self.timers.len() - armed) as i64, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the inbox and timers again (another node may have written to them); what is
    /// already known is skipped.
    pub(crate) async fn rescan(&mut self) -> Result<(), StoreError> {
        let armed = self.timers.len();
        self.scan_inbox_and_timers().await?;
        self.shared
            .metrics
            .armed_timers
            .fetch_add((self.timers.len() - armed) as i64, Ordering::Relaxed);
        Ok(())
    }

    async fn finish_staged(&mut self) -> Result<(), StoreError> {
        let batch = self.shared.opts.recovery_batch.get();
        let mut after = None;
        loop {
            let page =
                super::staged::unfinished(&self.shared, self.partition, after, batch).await?;
            self.renew_if_due().await?;
            let n = page.len();
            for (id, m) in page.iter().filter_map(|(_, row)| row.as_ref()) {
                super::staged::finish(&self.shared, self.partition, self.epoch, id, m).await?;
                self.renew_if_due().await?;
            }
            after = page.into_iter().last().map(|(k, _)| k);
            if n < batch {
                return Ok(());
            }
        }
    }

    async fn scan_inbox_and_timers(&mut self) -> Result<(), StoreError> {
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
            self.renew_if_due().await?;
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
            self.renew_if_due().await?;
            let n = ts.len();
            after = ts.last().map(|(k, _)| k.clone());
            for (k, m) in ts {
                if self.known.contains(&k) {
                    continue;
                }
                if let Some(due) = queues::timer_due(&k) {
                    self.timers.insert((due, k), m);
                }
            }
            if n < batch {
                break;
            }
        }
        Ok(())
    }

    async fn recover_tasks(&mut self) -> Result<(), StoreError> {
        let p = self.partition;
        let batch = self.shared.opts.recovery_batch.get();
        // Activity tasks left by a previous owner run again (at least once), with their
        // attempt count raised and a new lease.
        let mut after: Option<Vec<u8>> = None;
        let lease = self.shared.opts.activity_lease;
        let now = self.shared.clock.now();
        let epoch = self.epoch;
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
            self.renew_if_due().await?;
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
        Ok(())
    }

    /// Runs in flight.
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
        if self.quarantined.contains(&t) {
            return;
        }
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
                    super::sub_depth(d, msgs.len());
                }
                self.add_pending(msgs);
            }
            PartitionMsg::Timers(ts) => {
                // A timer a rescan already armed is replaced, not counted twice.
                let armed = self.timers.len();
                for (k, due, m) in ts {
                    self.timers.insert((due, k), m);
                }
                self.shared
                    .metrics
                    .armed_timers
                    .fetch_add((self.timers.len() - armed) as i64, Ordering::Relaxed);
            }
            PartitionMsg::Forget(id) => {
                // A run in flight still reports; the next one starts a fresh actor.
                self.passivate(&Target::Instance(id));
            }
            PartitionMsg::Backlog(t, reply) => {
                let n = self.pending.get(&t).map_or(0, |q| q.len() as u64);
                let _ = reply.send(n);
            }
            PartitionMsg::Shutdown(s) => return Some(s),
            // Handled by the actor (it reads the store).
            PartitionMsg::Rescan => {}
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

    /// Renews the lease if a third of its time has passed since the last renewal: for the
    /// pages of a recovery or re-read, during which the actor's renewal messages wait.
    async fn renew_if_due(&mut self) -> Result<(), StoreError> {
        // Called between pages: a recovery is moving.
        if self.recovering {
            self.shared.round_progress.fetch_add(1, Ordering::Relaxed);
        }
        self.renew_after(self.shared.opts.cluster.lease_ttl / 3)
            .await
    }

    /// The actor's periodic renewal (every third of the lease): skipped when the lease was
    /// renewed less than a sixth of it ago, so the renewals that queued up behind a long
    /// recovery do not all run back to back (each writes the lease row that new runs read).
    /// The longest gap between renewals stays under half the lease.
    pub(crate) async fn renew_periodic(&mut self) -> Result<(), StoreError> {
        self.renew_after(self.shared.opts.cluster.lease_ttl / 6)
            .await
    }

    async fn renew_after(&mut self, since: std::time::Duration) -> Result<(), StoreError> {
        if self.renewed.elapsed() >= since {
            self.renew().await?;
        }
        Ok(())
    }

    async fn renew(&mut self) -> Result<(), StoreError> {
        let (p, epoch) = (self.partition, self.epoch);
        let now = self.shared.clock.now();
        let dur = self.shared.opts.cluster.lease_ttl;
        if self.shared.abandoned.load(Ordering::Relaxed) {
            // Test seam: a frozen process renews nothing.
            return Ok(());
        }
        let started = Instant::now();
        transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
            Box::pin(async move { leases::renew(tx, p, epoch, now, dur).await })
        })
        .await?;
        self.renewed = started;
        Ok(())
    }

    /// Gives the partition's lease up (on stop), so that another node need not wait for it
    /// to expire. A failure is only logged: the lease then expires as it would have.
    pub(crate) async fn release_lease(&self) {
        let (p, epoch) = (self.partition, self.epoch);
        let r = transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
            Box::pin(async move { leases::release(tx, p, epoch).await })
        })
        .await;
        match r {
            Ok(true) => tracing::debug!(partition = p, epoch, "partition lease released"),
            Ok(false) => tracing::debug!(partition = p, epoch, "partition lease already lost"),
            Err(e) => {
                tracing::warn!(partition = p, epoch, error = %e, "partition lease not released")
            }
        }
    }

    /// Stops the actor of a target (its queued run, if any, finishes first).
    fn passivate(&mut self, t: &Target) {
        if let Some(r) = self.residents.remove(t) {
            let _ = r.actor.cast(TargetMsg::Passivate);
            self.gauge(t).fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The gauge that counts the live actors of a target's kind.
    fn gauge(&self, t: &Target) -> &std::sync::atomic::AtomicI64 {
        match t {
            Target::Instance(_) => &self.shared.metrics.active_instances,
            Target::Entity(_) => &self.shared.metrics.active_entities,
        }
    }

    /// Whether a target's actor can be stopped now: no run in flight, nothing pending.
    fn idle(&self, t: &Target) -> bool {
        !self.busy.contains(t) && !self.pending.contains_key(t)
    }

    /// Passivates the actors unused for the configured idle time.
    pub(crate) fn passivate_idle(&mut self) {
        let idle = self.shared.opts.idle_passivation;
        let stale: Vec<Target> = self
            .residents
            .iter()
            .filter(|(t, r)| r.last_used.elapsed() >= idle && self.idle(t))
            .map(|(t, _)| t.clone())
            .collect();
        for t in stale {
            self.passivate(&t);
        }
    }

    /// Stops every actor (the partition stops).
    pub(crate) fn passivate_all(&mut self) {
        let all: Vec<Target> = self.residents.keys().cloned().collect();
        for t in all {
            self.passivate(&t);
        }
    }

    /// Keeps the number of live actors under the bound by passivating the least recently used
    /// ones that are idle.
    fn enforce_bound(&mut self) {
        let max = self.shared.opts.max_active_per_partition.get();
        if self.residents.len() <= max {
            return;
        }
        let mut by_age: Vec<(Instant, Target)> = self
            .residents
            .iter()
            .filter(|(t, _)| self.idle(t))
            .map(|(t, r)| (r.last_used, t.clone()))
            .collect();
        by_age.sort();
        let excess = self.residents.len() - max;
        for (_, t) in by_age.into_iter().take(excess) {
            self.passivate(&t);
        }
    }

    /// Hands the pending messages of every dirty target that has no run in flight to its
    /// actor (spawning it if needed). Runs of different targets overlap, and a target's next
    /// run starts as soon as its previous one reported (pipelining), so the store's group
    /// commit sees many transactions at once.
    pub(crate) fn launch(&mut self, myself: &ActorRef<ActorMsg>) -> Result<(), StoreError> {
        while !self.dirty.is_empty() && self.busy.len() < MAX_RUNS_IN_FLIGHT {
            let n = self.dirty.len().min(MAX_RUNS_IN_FLIGHT - self.busy.len());
            let targets: Vec<Target> = self.dirty.drain(..n).collect();
            for t in targets {
                self.dirty_set.remove(&t);
                if self.busy.contains(&t) {
                    // Marked dirty again when its run reports.
                    self.woken.insert(t);
                    continue;
                }
                let Some(msgs) = self.pending.remove(&t) else {
                    continue;
                };
                let mut msgs = Some(msgs);
                // A send fails only if the actor stopped by itself; one fresh actor is tried.
                for _ in 0..2 {
                    let Some(m) = msgs.take() else { break };
                    let actor = self.resident(&t, myself)?;
                    match actor.send_message(TargetMsg::Run(m)) {
                        Ok(()) => {}
                        Err(ractor::MessagingErr::SendErr(TargetMsg::Run(m))) => {
                            self.passivate(&t);
                            msgs = Some(m);
                        }
                        Err(_) => {}
                    }
                }
                if let Some(m) = msgs {
                    tracing::error!(partition = self.partition, target = ?t, "actor refuses messages");
                    self.pending.insert(t, m);
                    return Err(StoreError::Unavailable(
                        "an instance or entity actor refused its messages".into(),
                    ));
                }
                self.busy.insert(t);
            }
        }
        self.enforce_bound();
        Ok(())
    }

    /// The actor of a target, spawned if it has none.
    fn resident(
        &mut self,
        t: &Target,
        myself: &ActorRef<ActorMsg>,
    ) -> Result<ActorRef<TargetMsg>, StoreError> {
        if let Some(r) = self.residents.get_mut(t) {
            r.last_used = Instant::now();
            return Ok(r.actor.clone());
        }
        let actor = target_actor::spawn(TargetArgs {
            shared: self.shared.clone(),
            partition: self.partition,
            epoch: self.epoch,
            target: t.clone(),
            report: myself.clone(),
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start an actor: {e}").into()))?;
        self.gauge(t).fetch_add(1, Ordering::Relaxed);
        self.residents.insert(
            t.clone(),
            ActorHandle {
                actor: actor.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(actor)
    }

    /// Takes the report of one run.
    pub(crate) fn complete(&mut self, ran: Ran) -> Result<(), StoreError> {
        let Ran {
            target,
            gone,
            requeue,
            fatal,
            stalled,
        } = ran;
        self.busy.remove(&target);
        let woken = self.woken.remove(&target);
        for k in &gone {
            self.known.remove(k);
        }
        self.requeue_front(&target, requeue);
        match fatal {
            Some(e @ StoreError::Corrupt { .. }) => {
                // One rotten record costs its own instance or entity, not the partition.
                tracing::error!(
                    partition = self.partition,
                    target = ?target,
                    error = %e,
                    "quarantined until the node restarts: a stored record does not decode; its messages are kept"
                );
                self.shared
                    .metrics
                    .quarantined
                    .fetch_add(1, Ordering::Relaxed);
                self.passivate(&target);
                self.quarantined.insert(target);
                return Ok(());
            }
            Some(e) => return Err(e),
            None => {}
        }
        // A stalled run waits for a new message; one that came during the run wakes it.
        if self.pending.contains_key(&target) && (!stalled || woken) {
            self.mark_dirty(target);
        }
        Ok(())
    }
}

//! The partition manager of a node: every heartbeat it writes the node's heartbeat record,
//! reads the membership and the leases, computes the desired placement, hands off the
//! partitions it should no longer hold (draining them first) and acquires the free ones it
//! should. It also restarts partition actors that stopped on an error, with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use perdure_core::Timestamp;
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ClusterView, NodeView, PartitionView, placement};
use crate::runtime::partition::Partition;
use crate::runtime::partition_actor::{ActorMsg, PartitionActor};
use crate::runtime::{PartitionMsg, Shared};
use crate::state::records::{LeaseRecord, NodeRecord};
use crate::state::{leases, members};
use crate::store::{StoreError, transact};

/// Commands to the manager task.
pub(crate) enum ManagerCmd {
    /// Reconsider now (membership changed).
    Kick,
    /// Hand every partition off, leave the membership, and stop.
    Leave(oneshot::Sender<()>),
    /// Test seam: stop heartbeats and renewals without releasing anything (a frozen process).
    Abandon(oneshot::Sender<()>),
}

/// A partition this node runs.
struct Held {
    actor: ActorRef<ActorMsg>,
    task: JoinHandle<()>,
    /// About when it was acquired (the store's `since` is written in the same transaction).
    since: Timestamp,
}

/// The manager's state.
pub(crate) struct Manager {
    shared: Arc<Shared>,
    me: NodeRecord,
    held: BTreeMap<u32, Held>,
    /// Partitions whose actor failed: not before this instant, and the failure count.
    backoff: BTreeMap<u32, (Instant, u32)>,
    view: watch::Sender<ClusterView>,
    last_rescan: Instant,
    /// Rounds in a row whose every retry conflicted.
    conflicts: u32,
    superseded: bool,
    /// Set while a round taken as stuck finishes: what it publishes was read before it got
    /// stuck, so it publishes the node not ready.
    stuck: Arc<std::sync::atomic::AtomicBool>,
}

/// A heartbeat got no answer from the store in time.
#[derive(Debug, thiserror::Error)]
#[error("the store did not answer a heartbeat within {} ms", .0.as_millis())]
struct NoAnswer(Duration);

/// How the manager is reached.
pub(crate) struct ManagerHandle {
    pub(crate) cmds: mpsc::UnboundedSender<ManagerCmd>,
    pub(crate) view: watch::Receiver<ClusterView>,
    pub(crate) task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Manager {
    pub(crate) fn new(shared: Arc<Shared>, me: NodeRecord) -> (Self, watch::Receiver<ClusterView>) {
        let (view, rx) = watch::channel(ClusterView {
            node: shared.opts.cluster.name.clone(),
            not_ready: Some("starting".into()),
            ..ClusterView::default()
        });
        (
            Self {
                shared,
                me,
                held: BTreeMap::new(),
                backoff: BTreeMap::new(),
                view,
                last_rescan: Instant::now(),
                conflicts: 0,
                superseded: false,
                stuck: Arc::default(),
            },
            rx,
        )
    }

    /// Runs the loop (after the first [`Manager::tick`] ran in `Node::start`).
    pub(crate) async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<ManagerCmd>,
        first: Duration,
    ) {
        let mut next = first;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                cmd = cmds.recv() => match cmd {
                    Some(ManagerCmd::Kick) => {}
                    Some(ManagerCmd::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(ManagerCmd::Abandon(done)) => {
                        self.shared.abandoned.store(true, Ordering::Relaxed);
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
            let interval = self.shared.opts.cluster.heartbeat_interval;
            next = match self.tick().await {
                Ok(d) => {
                    self.conflicts = 0;
                    d
                }
                // Contention with the other nodes' rounds (every retry conflicted) says
                // nothing by itself about whether this node can serve: try again soon, stay
                // ready. Rounds that keep conflicting for half a lease lifetime do: the
                // heartbeat is not getting through, and the others will count this node dead.
                Err(crate::store::StoreError::Conflict) => {
                    self.conflicts = self.conflicts.saturating_add(1);
                    let retry = interval / 4;
                    if retry.saturating_mul(self.conflicts)
                        >= self.shared.opts.cluster.lease_ttl / 2
                    {
                        self.not_ready(format!(
                            "the store refused this node's heartbeat {} rounds in a row (conflicts)",
                            self.conflicts
                        ));
                    } else {
                        tracing::info!("cluster round kept conflicting; trying again");
                    }
                    retry
                }
                Err(e) => {
                    self.not_ready(format!("the store is unreachable: {e}"));
                    self.shared.opts.cluster.heartbeat_interval
                }
            };
        }
    }

    fn not_ready(&self, reason: String) {
        tracing::warn!(reason = %reason, "node not ready");
        self.view.send_modify(|v| v.not_ready = Some(reason));
    }

    /// One round: heartbeat, read the membership and leases, hand off, acquire. Returns
    /// when to run the next.
    pub(crate) async fn tick(&mut self) -> Result<Duration, StoreError> {
        let c = self.shared.opts.cluster.clone();
        let interval = c.heartbeat_interval;
        if self.superseded {
            return Ok(interval);
        }
        let retry = round_retry(interval);
        // Heartbeat (a store that does not answer counts as unreachable).
        let still_me =
            tokio::time::timeout(c.lease_ttl / 2, beat(&self.shared, &mut self.me, &retry))
                .await
                .map_err(|_| StoreError::Unavailable(Box::new(NoAnswer(c.lease_ttl / 2))))??;
        if !still_me {
            // A newer process of this node's name took over: everything held is fenced.
            tracing::error!(node = %c.name, "a newer process took this node's name over: stopping all partitions");
            self.superseded = true;
            self.drain(self.held.keys().copied().collect()).await;
            self.not_ready("superseded by a newer process of the same node name".into());
            return Ok(interval);
        }
        // The rest of the round (draining, recovering) may outlast the lease: the heartbeat
        // goes on beside it.
        let mut me = self.me.clone();
        let shared = self.shared.clone();
        let view = self.view.clone();
        let stuck = self.stuck.clone();
        let next = beating(&shared, &mut me, &view, &stuck, self.round(retry)).await;
        self.me = me;
        if self.stuck.swap(false, Ordering::Relaxed) {
            // The round published the node not ready: run a fresh one (heartbeat first) at
            // once.
            return next.map(|_| Duration::ZERO);
        }
        next
    }

    /// A round after its heartbeat: read the membership and the leases, hand off, acquire,
    /// publish. Returns when to run the next.
    async fn round(&mut self, retry: crate::store::RetryOptions) -> Result<Duration, StoreError> {
        let c = self.shared.opts.cluster.clone();
        let interval = c.heartbeat_interval;
        let partitions = self.shared.partitions;
        let (nodes, table) = transact(self.shared.store.as_ref(), &retry, move |tx| {
            Box::pin(async move {
                let nodes = members::list(tx).await?;
                let table = leases::read_all(tx, partitions).await?;
                Ok((nodes, table))
            })
        })
        .await?;
        let now = self.shared.clock.now();

        // Partition actors that stopped by themselves (an error): restart with backoff.
        let stopped: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in stopped {
            self.held.remove(&p);
            self.shared.set_route(p, None);
            // An actor that panicked skipped its own reset of the count.
            self.shared.forget_queued(p);
            let failures = self.backoff.get(&p).map_or(0, |(_, n)| *n) + 1;
            let delay = interval
                .saturating_mul(1 << failures.min(5))
                .min(Duration::from_secs(30));
            tracing::warn!(
                partition = p,
                failures,
                delay_ms = delay.as_millis() as u64,
                "partition actor stopped: restarting it after a backoff"
            );
            self.backoff.insert(p, (Instant::now() + delay, failures));
        }

        let live: Vec<&str> = nodes
            .iter()
            .filter(|n| members::is_fresh(n, now, c.lease_ttl) && !n.leaving)
            .map(|n| n.name.as_str())
            .collect();
        let desired = placement::placement(&live, partitions);

        // Hand off what another live node should run (rate-limited).
        let give: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|p| {
                desired
                    .get(*p as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|d| d != c.name)
            })
            .take(c.max_moves_per_tick.get())
            .collect();
        for p in &give {
            tracing::info!(
                partition = p,
                to = desired.get(*p as usize).copied().flatten().unwrap_or(""),
                "handing partition off"
            );
        }
        self.drain(give).await;

        // Acquire what this node should run and is free.
        let take: Vec<u32> = (0..partitions)
            .filter(|p| desired.get(*p as usize).copied().flatten() == Some(c.name.as_str()))
            .filter(|p| !self.held.contains_key(p))
            .filter(|p| {
                self.backoff
                    .get(p)
                    .is_none_or(|(t, _)| *t <= Instant::now())
            })
            .filter(|p| match table.get(*p as usize) {
                Some(Some((l, _))) => l.owner == c.name || l.expires_at <= now,
                _ => true,
            })
            .collect();
        let pending = (0..partitions)
            .filter(|p| desired.get(*p as usize).copied().flatten() == Some(c.name.as_str()))
            .any(|p| !self.held.contains_key(&p) && !take.contains(&p));
        self.acquire(take).await;

        // Without links that deliver nudges, owners re-read their inboxes every heartbeat;
        // with them, once per lease lifetime as a safety net (a nudge sent by a node with a
        // stale view of the owners is lost, never the message: it is in the store).
        let every = if self.shared.nudge.delivers() {
            c.lease_ttl
        } else {
            interval
        };
        if self.last_rescan.elapsed() >= every {
            self.last_rescan = Instant::now();
            for p in self.held.keys() {
                self.shared.rescan(*p);
            }
        }
        self.publish(&nodes, table, &desired, now);
        // While a partition this node should run is still held elsewhere (being drained),
        // look again soon: a handoff should not wait a whole heartbeat.
        Ok(if pending {
            interval.min(Duration::from_millis(100))
        } else {
            interval
        })
    }

    fn publish(
        &mut self,
        nodes: &[NodeRecord],
        table: Vec<Option<(LeaseRecord, Option<Timestamp>)>>,
        desired: &[Option<&str>],
        now: Timestamp,
    ) {
        let c = &self.shared.opts.cluster;
        let mut rows: Vec<PartitionView> = table
            .into_iter()
            .enumerate()
            .map(|(p, l)| {
                let (owner, epoch, since, expires_at) = match l {
                    Some((l, since)) if l.expires_at > now => {
                        (Some(l.owner), l.epoch, since, Some(l.expires_at))
                    }
                    Some((l, _)) => (None, l.epoch, None, Some(l.expires_at)),
                    None => (None, 0, None, None),
                };
                PartitionView {
                    partition: p as u32,
                    owner,
                    epoch,
                    since,
                    expires_at,
                    desired: desired.get(p).copied().flatten().map(str::to_string),
                }
            })
            .collect();
        // What this node did in this round is newer than what it read.
        for r in rows.iter_mut() {
            let p = r.partition;
            if let Some(h) = self.held.get(&p) {
                if r.owner.as_deref() != Some(c.name.as_str()) || r.since.is_none() {
                    r.since = Some(h.since);
                }
                r.owner = Some(c.name.clone());
                r.epoch = self.shared.epoch(p);
            } else if r.owner.as_deref() == Some(c.name.as_str()) {
                r.owner = None;
            }
        }
        self.shared
            .set_owners(rows.iter().map(|r| r.owner.clone()).collect());
        let count = |name: &str| {
            rows.iter()
                .filter(|r| r.owner.as_deref() == Some(name))
                .count()
        };
        let nodes = nodes
            .iter()
            .map(|n| NodeView {
                name: n.name.clone(),
                http_address: n.http_address.clone(),
                cluster_address: n.cluster_address.clone(),
                version: n.version.clone(),
                started_at: n.started_at,
                last_seen: n.last_seen,
                live: members::is_fresh(n, now, c.lease_ttl),
                leaving: n.leaving,
                partitions: count(&n.name),
            })
            .collect::<Vec<_>>();
        let owned: Vec<u32> = self.held.keys().copied().collect();
        let m = &self.shared.metrics;
        m.partitions_owned
            .store(owned.len() as i64, Ordering::Relaxed);
        m.cluster_nodes.store(
            nodes.iter().filter(|n| n.live && !n.leaving).count() as i64,
            Ordering::Relaxed,
        );
        // A round taken as stuck read all this before it got stuck.
        let not_ready = self
            .stuck
            .load(Ordering::Relaxed)
            .then(|| "catching up after a stuck cluster round".to_string());
        self.view.send_replace(ClusterView {
            node: c.name.clone(),
            not_ready,
            owned,
            nodes,
            partitions: rows,
        });
    }

    /// Acquires partitions, starts their actors, publishes their routes, then recovers them
    /// (routes first: recovery may send messages to other partitions).
    async fn acquire(&mut self, take: Vec<u32>) {
        if take.is_empty() {
            return;
        }
        let started = futures::future::join_all(
            take.iter()
                .map(|p| Partition::start(self.shared.clone(), *p)),
        )
        .await;
        let mut fresh = Vec::new();
        for (p, r) in take.into_iter().zip(started) {
            match r {
                Ok(part) => match ractor::Actor::spawn(None, PartitionActor, part).await {
                    Ok((actor, task)) => {
                        self.shared.set_route(p, Some(actor.clone()));
                        let since = self.shared.clock.now();
                        self.held.insert(
                            p,
                            Held {
                                actor: actor.clone(),
                                task,
                                since,
                            },
                        );
                        fresh.push((p, actor));
                    }
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "partition actor did not start")
                    }
                },
                Err(StoreError::Fenced { .. }) => {
                    tracing::debug!(partition = p, "partition taken by another node meanwhile")
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "partition not acquired"),
            }
        }
        let mut recovered = Vec::new();
        for (p, actor) in fresh {
            let (tx, rx) = oneshot::channel();
            if actor.cast(ActorMsg::Recover(tx)).is_ok() {
                recovered.push((p, rx));
            }
        }
        for (p, rx) in recovered {
            match rx.await {
                Ok(Ok(())) => {
                    self.backoff.remove(&p);
                    tracing::info!(
                        partition = p,
                        epoch = self.shared.epoch(p),
                        "partition acquired"
                    );
                }
                // The actor stops itself; the next round restarts it after a backoff.
                Ok(Err(e)) => {
                    tracing::warn!(partition = p, error = %e, "partition recovery failed")
                }
                Err(_) => tracing::warn!(
                    partition = p,
                    "partition recovery failed: the actor stopped before answering"
                ),
            }
        }
    }

    /// Drains partitions: each finishes its runs in flight, passivates its actors and
    /// releases its lease, so that the next owner takes it at once.
    async fn drain(&mut self, give: Vec<u32>) {
        let mut waits = Vec::new();
        for p in give {
            if let Some(h) = self.held.remove(&p) {
                self.shared.set_route(p, None);
                let (tx, rx) = oneshot::channel();
                let _ = h.actor.cast(ActorMsg::External(PartitionMsg::Shutdown(tx)));
                let progress = &self.shared.round_progress;
                waits.push(async move {
                    let _ = rx.await;
                    let _ = h.task.await;
                    progress.fetch_add(1, Ordering::Relaxed);
                });
            }
        }
        futures::future::join_all(waits).await;
    }

    /// Leaves: marks the record leaving (others stop counting this node), hands every
    /// partition off, and removes the record.
    async fn leave(&mut self) {
        self.me.leaving = true;
        let r = beat(&self.shared, &mut self.me, &self.shared.retry).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not mark this node as leaving");
        }
        // Draining may take long: keep the (leaving) record fresh meanwhile.
        let mut me = self.me.clone();
        let shared = self.shared.clone();
        let view = self.view.clone();
        let all = self.held.keys().copied().collect();
        let stuck = self.stuck.clone();
        beating(&shared, &mut me, &view, &stuck, self.drain(all)).await;
        self.stuck.store(false, Ordering::Relaxed);
        self.me = me;
        let (name, inc) = (self.me.name.clone(), self.me.incarnation);
        let r = transact(self.shared.store.as_ref(), &self.shared.retry, move |tx| {
            let name = name.clone();
            Box::pin(async move { members::remove(tx, &name, inc).await })
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not remove this node's membership record");
        }
        self.shared
            .metrics
            .partitions_owned
            .store(0, Ordering::Relaxed);
        self.view.send_modify(|v| {
            v.owned.clear();
            v.not_ready = Some("the node is stopping".into());
        });
        tracing::info!("left the cluster");
    }
}

/// The manager's transactions give up within a heartbeat: a store outage must show (not
/// ready) long before leases expire, not after the runtime's long retry budget.
fn round_retry(interval: Duration) -> crate::store::RetryOptions {
    crate::store::RetryOptions {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(1),
        max_backoff: interval / 8,
    }
}

/// Writes this node's heartbeat record, unless a newer process of its name took the record
/// over: then writes nothing and returns `false`.
async fn beat(
    shared: &Shared,
    me: &mut NodeRecord,
    retry: &crate::store::RetryOptions,
) -> Result<bool, StoreError> {
    me.last_seen = shared.clock.now();
    me.beats += 1;
    let rec = me.clone();
    transact(shared.store.as_ref(), retry, move |tx| {
        let me = rec.clone();
        Box::pin(async move {
            match members::read(tx, &me.name).await? {
                Some(r) if r.incarnation != me.incarnation => Ok(false),
                _ => {
                    members::write(tx, &me)?;
                    Ok(true)
                }
            }
        })
    })
    .await
}

/// A round (or a leave's drain) that makes no progress for this many lease lifetimes is taken
/// as stuck (a store call or a partition that never answers): see [`beating`].
const STUCK_ROUND_LEASES: u32 = 5;

/// Runs `work` (the rest of a round, a leave's drain) and writes a heartbeat every interval
/// until it is done, counting from the heartbeat written just before: draining and
/// recovering may take longer than the lease, and the node must not look dead meanwhile.
/// The work keeps running while a heartbeat is written (it may hold a store connection the
/// heartbeat waits for). Stops beating when the record was taken over; the next round acts
/// on it. Sets `stuck` when it takes the work as stuck.
///
/// What the node reports meanwhile (`/readyz`, the cluster view):
/// - heartbeats that keep failing (or do not answer within half a lease) for half a lease
///   make it not ready, with the error; the next heartbeat that gets through makes it ready
///   again;
/// - work that makes no progress (no page of a recovery or re-read, no partition drained:
///   `Shared::round_progress`) for [`STUCK_ROUND_LEASES`] lease lifetimes makes it not ready
///   and stops the heartbeats, so that the other nodes count it dead and take over the
///   partitions whose leases lapse (a partition stuck on one store call renews nothing);
///   the partitions whose actors keep renewing stay with it. The caller runs a fresh round
///   when the work ends.
async fn beating<T>(
    shared: &Shared,
    me: &mut NodeRecord,
    view: &watch::Sender<ClusterView>,
    stuck: &std::sync::atomic::AtomicBool,
    work: impl Future<Output = T>,
) -> T {
    use futures::future::{Either, select};
    let c = &shared.opts.cluster;
    let interval = c.heartbeat_interval;
    let retry = round_retry(interval);
    let stuck_after = c.lease_ttl.saturating_mul(STUCK_ROUND_LEASES);
    let set_reason = |reason: Option<String>| {
        if let Some(r) = &reason {
            tracing::warn!(reason = %r, "node not ready");
        }
        view.send_modify(|v| v.not_ready = reason);
    };
    let progress = || shared.round_progress.load(Ordering::Relaxed);
    let beats = async {
        // Every interval from the heartbeat just written, however long each write takes.
        let mut every = tokio::time::interval_at(Instant::now() + interval, interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok = Instant::now();
        let mut failing = false;
        let (mut seen, mut moved) = (progress(), Instant::now());
        loop {
            every.tick().await;
            if progress() != seen {
                (seen, moved) = (progress(), Instant::now());
            }
            if moved.elapsed() >= stuck_after {
                set_reason(Some(format!(
                    "a cluster round has made no progress for {} s (a partition's recovery or \
                     drain, or a store call, does not finish): heartbeats stopped so that \
                     other nodes take over what lapses",
                    moved.elapsed().as_secs()
                )));
                stuck.store(true, Ordering::Relaxed);
                return;
            }
            let beat = tokio::time::timeout(c.lease_ttl / 2, beat(shared, me, &retry));
            let error = match beat.await {
                Ok(Ok(true)) => {
                    last_ok = Instant::now();
                    if std::mem::take(&mut failing) {
                        set_reason(None);
                    }
                    continue;
                }
                Ok(Ok(false)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => NoAnswer(c.lease_ttl / 2).to_string(),
            };
            tracing::warn!(error = %error, "heartbeat during a long round failed");
            if last_ok.elapsed() >= c.lease_ttl / 2 {
                failing = true;
                set_reason(Some(format!(
                    "heartbeats have failed for {} ms during a long cluster round: {error}",
                    last_ok.elapsed().as_millis()
                )));
            }
        }
    };
    let mut work = std::pin::pin!(work);
    match select(work.as_mut(), std::pin::pin!(beats)).await {
        Either::Left((out, _)) => out,
        Either::Right(((), work)) => work.await,
    }
}

impl ManagerHandle {
    /// Stops the manager: a graceful leave, or (`abandon`) a frozen process.
    pub(crate) async fn stop(&self, abandon: bool) {
        let (tx, rx) = oneshot::channel();
        let cmd = if abandon {
            ManagerCmd::Abandon(tx)
        } else {
            ManagerCmd::Leave(tx)
        };
        if self.cmds.send(cmd).is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

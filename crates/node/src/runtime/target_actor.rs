//! Instance and entity actors: one ractor actor per active orchestration instance (an
//! instance actor) and per active entity (an entity actor), each with its own serialized
//! mailbox. Its partition actor spawns it on demand, hands it the target's pending messages
//! one run at a time, and stops it when it is idle or the partition's bound is reached
//! (passivation).
//!
//! A run activates the target if needed (loads the record; an orchestration replays its
//! history once and then keeps the live orchestrator between episodes), prepares one episode
//! (or one entity batch), commits it as one transaction, applies it to the in-memory state,
//! delivers what it sent, and reports [`Ran`] to the partition. Runs of different targets
//! overlap, so the store's group commit sees many transactions at once; a target has at most
//! one run in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use perdure_core::{EntityId, InstanceId};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Shared;
use super::commit::{Committed, Plan, commit, still_stored};
use super::entity::{self, EntitySlot};
use super::instance::{self, InstanceSlot};
use super::partition::Keyed;
use super::partition_actor::ActorMsg;
use crate::state::records::Target;
use crate::store::StoreError;

/// What an instance or entity actor holds.
// The actor's state lives in its own task either way; boxing the larger variant would only
// add an allocation per actor.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Resident {
    /// An orchestration instance (None until activated, or after its state was dropped).
    Instance(InstanceId, Option<InstanceSlot>),
    /// An entity.
    Entity(EntityId, Option<EntitySlot>),
}

impl Resident {
    fn new(target: Target) -> Self {
        match target {
            Target::Instance(id) => Self::Instance(id, None),
            Target::Entity(id) => Self::Entity(id, None),
        }
    }

    fn target(&self) -> Target {
        match self {
            Self::Instance(id, _) => Target::Instance(id.clone()),
            Self::Entity(id, _) => Target::Entity(id.clone()),
        }
    }

    /// Drops the in-memory state (the store is the truth; the next run reloads it).
    fn forget(&mut self) {
        match self {
            Self::Instance(_, s) => *s = None,
            Self::Entity(_, s) => *s = None,
        }
    }
}

/// The messages of an instance or entity actor.
pub(crate) enum TargetMsg {
    /// Run the next episode (or entity batch) with these pending messages, in order.
    Run(VecDeque<Keyed>),
    /// Stop (passivation, purge or shutdown); processed after any queued run.
    Passivate,
}

// Local only (see `ActorMsg`).
impl ractor::Message for TargetMsg {}

impl std::fmt::Debug for TargetMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Run(m) => write!(f, "Run({})", m.len()),
            Self::Passivate => f.write_str("Passivate"),
        }
    }
}

/// The report of one run to the partition actor.
pub(crate) struct Ran {
    pub(crate) target: Target,
    /// Keys no longer pending: consumed by the commit, or found already gone.
    pub(crate) gone: Vec<Vec<u8>>,
    /// Messages to put back in front of the target's queue, in order.
    pub(crate) requeue: VecDeque<Keyed>,
    /// A failure that stops the partition (its lease is lost, its data corrupt, or the store
    /// unreachable past the retries).
    pub(crate) fatal: Option<StoreError>,
    /// The run consumed nothing: every message waits for another one (an entity locked by a
    /// critical section holds the others' operations until its holder's next message). The
    /// target runs again only when a new message arrives, not in a loop.
    pub(crate) stalled: bool,
}

/// What an instance or entity actor starts with.
pub(crate) struct TargetArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) partition: u32,
    pub(crate) epoch: u64,
    pub(crate) target: Target,
    pub(crate) report: ActorRef<ActorMsg>,
}

/// The state of an instance or entity actor.
pub(crate) struct TargetState {
    shared: Arc<Shared>,
    partition: u32,
    epoch: u64,
    report: ActorRef<ActorMsg>,
    resident: Resident,
    /// Most operations the next entity batch takes: set after a batch was over the store's
    /// limits (half of it), cleared by the next commit.
    entity_cap: Option<usize>,
}

/// The actor of one orchestration instance or one entity.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TargetActor;

impl Actor for TargetActor {
    type Msg = TargetMsg;
    type State = TargetState;
    type Arguments = TargetArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<TargetMsg>,
        args: TargetArgs,
    ) -> Result<TargetState, ActorProcessingErr> {
        Ok(TargetState {
            shared: args.shared,
            partition: args.partition,
            epoch: args.epoch,
            report: args.report,
            resident: Resident::new(args.target),
            entity_cap: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<TargetMsg>,
        msg: TargetMsg,
        st: &mut TargetState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TargetMsg::Run(msgs) => {
                // Boxed, so an idle actor's task stays small.
                let ran = Box::pin(run(st, msgs)).await;
                // The partition may be gone (stopping): then nobody needs the report.
                let _ = st.report.cast(ActorMsg::Ran(ran));
            }
            TargetMsg::Passivate => myself.stop(None),
        }
        Ok(())
    }
}

/// Spawns the actor of a target; it takes messages at once.
pub(crate) fn spawn(args: TargetArgs) -> Result<ActorRef<TargetMsg>, ractor::SpawnErr> {
    let (actor, _starting) = ractor::actor::ActorRuntime::spawn_instant(None, TargetActor, args)?;
    Ok(actor)
}

/// One run: prepare, commit, apply, deliver.
async fn run(st: &mut TargetState, msgs: VecDeque<Keyed>) -> Ran {
    let target = st.resident.target();
    let shared = st.shared.clone();
    let prepared = match &mut st.resident {
        Resident::Instance(id, slot) => instance::prepare(&shared, slot, id.clone(), msgs)
            .await
            .map(|(p, l)| (p.map(|p| Plan::Instance(Box::new(p))), l)),
        Resident::Entity(id, slot) => {
            entity::prepare(&shared, slot, id.clone(), msgs, st.entity_cap)
                .await
                .map(|(p, l)| (p.map(Plan::Entity), l))
        }
    };
    let mut ran = Ran {
        target,
        gone: Vec::new(),
        requeue: VecDeque::new(),
        fatal: None,
        stalled: false,
    };
    let (plan, leftover) = match prepared {
        Ok(x) => x,
        Err(e) => {
            st.resident.forget();
            ran.fatal = Some(e);
            return ran;
        }
    };
    ran.requeue = leftover;
    let Some(plan) = plan else {
        ran.stalled = !ran.requeue.is_empty();
        return ran;
    };
    let started = std::time::Instant::now();
    let plan = Arc::new(plan);
    let r = commit(&shared, st.partition, st.epoch, plan.clone()).await;
    shared.metrics.commit_latency.observe(started.elapsed());
    let Ok(plan) = Arc::try_unwrap(plan) else {
        st.resident.forget();
        ran.fatal = Some(StoreError::Conflict);
        return ran;
    };
    match r {
        Ok(Committed::Done(out)) => {
            st.entity_cap = None;
            ran.gone = plan.consumed().iter().map(|(k, _)| k.clone()).collect();
            applied(st, plan, out);
        }
        Ok(Committed::Restart(e)) => {
            tracing::error!(partition = st.partition, target = ?ran.target, error = %e, "an earlier staged episode's write-out failed; the partition restarts to finish it");
            st.resident.forget();
            ran.fatal = Some(e);
        }
        Ok(Committed::Unfinished(e)) => {
            // The episode committed; its remaining effects are written out by the
            // partition's recovery, which this error starts (its actor stops).
            tracing::error!(partition = st.partition, target = ?ran.target, error = %e, "a staged episode's write-out failed; the partition restarts to finish it");
            ran.gone = plan.consumed().iter().map(|(k, _)| k.clone()).collect();
            applied(st, plan, super::outbox::Outbox::default());
            st.resident.forget();
            ran.fatal = Some(e);
        }
        Err(StoreError::LimitExceeded { .. }) if matches!(&plan, Plan::Entity(p) if p.operations > 1) =>
        {
            // Nothing is dropped: the same messages run again, in batches of half as many
            // operations, down to one operation alone.
            let ops = match &plan {
                Plan::Entity(p) => p.operations,
                Plan::Instance(_) => 1,
            };
            st.entity_cap = Some((ops / 2).max(1));
            tracing::warn!(partition = st.partition, target = ?ran.target, operations = ops, "entity batch over the store's limits; running it in smaller batches");
            return rerun(st, plan.into_consumed(), false, ran).await;
        }
        Ok(Committed::Superseded) => {
            tracing::debug!(target = ?ran.target, "start of a replaced execution dropped");
            ran.gone = plan.consumed().iter().map(|(k, _)| k.clone()).collect();
            st.resident.forget();
        }
        Err(e @ StoreError::LimitExceeded { .. }) => {
            // Rerunning cannot help: only this instance (or entity batch) fails.
            tracing::error!(partition = st.partition, target = ?ran.target, error = %e, "episode over the store's limits");
            match fail_too_large(st, plan, &e).await {
                Ok(Ok(gone)) => ran.gone = gone,
                Ok(Err(consumed)) => return rerun(st, consumed, true, ran).await,
                Err(e) => {
                    st.resident.forget();
                    ran.fatal = Some(e);
                }
            }
        }
        Err(e @ (StoreError::Fenced { .. } | StoreError::Corrupt { .. })) => {
            st.resident.forget();
            ran.fatal = Some(e);
        }
        Ok(Committed::Stale) | Err(_) => {
            let stale = r.is_ok();
            if let Err(e) = &r {
                tracing::warn!(partition = st.partition, error = %e, "commit failed; rerunning");
                shared
                    .metrics
                    .episode_failures
                    .fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            return rerun(st, plan.into_consumed(), stale, ran).await;
        }
    }
    ran
}

/// After a failed or stale commit: forgets the in-memory state (the store is the truth) and
/// hands back the consumed messages that are still in the store, to run again.
async fn rerun(st: &mut TargetState, consumed: Vec<Keyed>, stale: bool, mut ran: Ran) -> Ran {
    st.resident.forget();
    let mut keep: VecDeque<Keyed> = VecDeque::with_capacity(consumed.len());
    if stale {
        match still_stored(&st.shared, &consumed).await {
            Ok(here) => {
                for (m, here) in consumed.into_iter().zip(here) {
                    if here {
                        keep.push_back(m);
                    } else {
                        ran.gone.push(m.0);
                    }
                }
            }
            Err(e) => {
                ran.fatal = Some(e);
                return ran;
            }
        }
    } else {
        keep.extend(consumed);
    }
    keep.append(&mut ran.requeue);
    ran.requeue = keep;
    ran
}

/// Applies a committed plan to the in-memory state and delivers its outbox.
fn applied(st: &mut TargetState, plan: Plan, mut out: super::outbox::Outbox) {
    let shared = &st.shared;
    shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
    match (plan, &mut st.resident) {
        (Plan::Instance(mut p), Resident::Instance(_, slot)) => {
            if let Some(stored) = out.record.take() {
                p.record = Some(*stored);
            }
            instance::applied(shared, slot, *p)
        }
        (Plan::Entity(p), Resident::Entity(_, slot)) => entity::applied(shared, slot, p),
        _ => {}
    }
    shared.dispatch(out);
}

/// Commits the failure of an instance whose episode was over the store's limits; for an
/// entity batch, drops its operations (callers get a failure). Returns the keys consumed, or
/// the messages back if one of them was already gone (stale).
async fn fail_too_large(
    st: &mut TargetState,
    plan: Plan,
    e: &StoreError,
) -> Result<Result<Vec<Vec<u8>>, Vec<Keyed>>, StoreError> {
    let shared = st.shared.clone();
    let replacement = match (plan, &mut st.resident) {
        (Plan::Instance(ip), Resident::Instance(_, slot)) => Some(Plan::Instance(Box::new(
            instance::too_large_plan(&shared, slot, *ip, e),
        ))),
        (Plan::Entity(ep), Resident::Entity(_, slot)) => {
            entity::too_large_plan(&shared, slot, ep, e).map(Plan::Entity)
        }
        _ => None,
    };
    let Some(plan) = replacement else {
        return Ok(Ok(Vec::new()));
    };
    let plan = Arc::new(plan);
    let r = commit(&shared, st.partition, st.epoch, plan.clone()).await?;
    let plan = Arc::try_unwrap(plan).map_err(|_| StoreError::Conflict)?;
    match r {
        Committed::Done(out) => {
            let gone = plan.consumed().iter().map(|(k, _)| k.clone()).collect();
            applied(st, plan, out);
            Ok(Ok(gone))
        }
        Committed::Superseded => {
            st.resident.forget();
            Ok(Ok(plan.consumed().iter().map(|(k, _)| k.clone()).collect()))
        }
        Committed::Unfinished(e) | Committed::Restart(e) => {
            st.resident.forget();
            Err(e)
        }
        Committed::Stale => Ok(Err(plan.into_consumed())),
    }
}

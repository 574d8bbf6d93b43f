//! The partition actor (ractor): owns one partition's [`Partition`] state and processes its
//! mailbox one message at a time. Episodes run in the instance and entity actors it owns,
//! which report back to its mailbox, so the partition keeps handing out work while they wait
//! for the store (pipelining). The earliest timer is armed as one sleeping task that sends
//! `TimerDue`; nothing polls.

use std::sync::atomic::Ordering;

use perdure_core::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::PartitionMsg;
use super::partition::Partition;
use super::target_actor::Ran;
use crate::store::StoreError;

/// The messages of a partition actor.
pub(crate) enum ActorMsg {
    /// A message from the rest of the node.
    External(PartitionMsg),
    /// Recover the inbox, timers and activity queue, then answer.
    Recover(oneshot::Sender<Result<(), StoreError>>),
    /// An instance or entity actor finished a run.
    Ran(Ran),
    /// The armed timer is due.
    TimerDue(u64),
    /// Renew the lease.
    Renew,
    /// Passivate idle instances.
    Sweep,
}

// Local only: with ractor's `cluster` feature (needed by ractor_cluster) every message type
// says whether it can cross nodes; partition messages never do.
impl ractor::Message for ActorMsg {}

impl std::fmt::Debug for ActorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::External(_) => "External",
            Self::Recover(_) => "Recover",
            Self::Ran(_) => "Ran",
            Self::TimerDue(_) => "TimerDue",
            Self::Renew => "Renew",
            Self::Sweep => "Sweep",
        })
    }
}

/// The actor's state: the partition plus the actor's own bookkeeping.
pub(crate) struct ActorState {
    part: Partition,
    /// The armed wake-up: its due time, generation and sleeping task.
    wake: Option<(Timestamp, u64, JoinHandle<()>)>,
    generation: u64,
    shutdown: Option<oneshot::Sender<()>>,
    intervals: Vec<JoinHandle<()>>,
}

/// The partition actor.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PartitionActor;

impl Actor for PartitionActor {
    type Msg = ActorMsg;
    type State = ActorState;
    type Arguments = Partition;

    async fn pre_start(
        &self,
        myself: ActorRef<ActorMsg>,
        part: Partition,
    ) -> Result<ActorState, ActorProcessingErr> {
        // Nothing is queued for this actor yet (its route is published after it started);
        // what a previous actor of the partition left counted was dropped with it.
        part.shared.forget_queued(part.partition);
        let renew = part.shared.opts.cluster.lease_ttl / 3;
        let sweep = part.shared.opts.idle_passivation;
        let intervals = vec![
            myself.send_interval(renew, || ActorMsg::Renew),
            myself.send_interval(sweep, || ActorMsg::Sweep),
        ];
        Ok(ActorState {
            part,
            wake: None,
            generation: 0,
            shutdown: None,
            intervals,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ActorMsg>,
        state: &mut ActorState,
    ) -> Result<(), ActorProcessingErr> {
        for h in state.intervals.drain(..) {
            h.abort();
        }
        if let Some((_, _, h)) = state.wake.take() {
            h.abort();
        }
        state.part.passivate_all();
        let p = state.part.partition;
        state.part.shared.forget_queued(p);
        if let Some(e) = state.part.shared.epochs.get(p as usize) {
            e.store(0, Ordering::Release);
        }
        if !state.part.shared.abandoned.load(Ordering::Relaxed) {
            state.part.release_lease().await;
        }
        if let Some(s) = state.shutdown.take() {
            let _ = s.send(());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ActorMsg>,
        msg: ActorMsg,
        st: &mut ActorState,
    ) -> Result<(), ActorProcessingErr> {
        let result = match msg {
            ActorMsg::External(PartitionMsg::Rescan) => {
                if let Some(f) = st.part.shared.rescans.get(st.part.partition as usize) {
                    f.store(false, Ordering::Release);
                }
                st.part.rescan().await
            }
            ActorMsg::External(m) => {
                if let Some(s) = st.part.handle(m) {
                    st.shutdown = Some(s);
                }
                Ok(())
            }
            ActorMsg::Recover(reply) => {
                let r = st.part.recover().await;
                let failed = r.as_ref().err().map(|e| e.to_string());
                let _ = reply.send(r);
                match failed {
                    Some(e) => {
                        tracing::error!(partition = st.part.partition, error = %e, "recovery failed");
                        myself.stop(None);
                        return Ok(());
                    }
                    None => Ok(()),
                }
            }
            ActorMsg::Ran(ran) => st.part.complete(ran),
            ActorMsg::TimerDue(g) => {
                if st.wake.as_ref().is_some_and(|(_, wg, _)| *wg == g) {
                    st.wake = None;
                }
                st.part.fire_due();
                Ok(())
            }
            ActorMsg::Renew => st.part.renew_periodic().await,
            ActorMsg::Sweep => {
                st.part.passivate_idle();
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(partition = st.part.partition, error = %e, "partition stops");
            myself.stop(None);
            return Ok(());
        }
        if st.shutdown.is_none() {
            if let Err(e) = st.part.launch(&myself) {
                tracing::error!(partition = st.part.partition, error = %e, "partition stops");
                myself.stop(None);
                return Ok(());
            }
            arm(&myself, st);
        } else if st.part.in_flight() == 0 {
            myself.stop(None);
        }
        Ok(())
    }
}

/// Arms one sleeping task for the earliest timer (re-armed when an earlier one arrives).
fn arm(myself: &ActorRef<ActorMsg>, st: &mut ActorState) {
    let Some(due) = st.part.next_due() else {
        return;
    };
    if st.wake.as_ref().is_some_and(|(d, _, _)| *d <= due) {
        return;
    }
    if let Some((_, _, h)) = st.wake.take() {
        h.abort();
    }
    st.generation += 1;
    let g = st.generation;
    let at = st.part.shared.clock.instant_at(due);
    let me = myself.clone();
    let h = tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        let _ = me.cast(ActorMsg::TimerDue(g));
    });
    st.wake = Some((due, g, h));
}

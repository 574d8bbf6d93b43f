//! The mutable state shared by an orchestration's context, its durable tasks and the replay
//! engine. Everything is ordered (`BTreeMap`, `VecDeque`): no hash order, no clock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crate::orchestration::entities::LockState;
use crate::orchestration::{LogRecord, TaskKind};
use crate::{
    EntityId, ExecutionId, FailureDetails, HistoryEvent, InstanceId, OrchestratorAction,
    ParentInstance, Payload, Timestamp,
};

/// The state behind an `Arc<Mutex<_>>`.
pub(crate) type Shared = Arc<Mutex<OrchestrationState>>;

/// Locks the shared state, ignoring poisoning (a panic in user code is turned into a failure
/// of the instance; the state itself stays consistent because no user code runs under it).
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, OrchestrationState> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a durable task waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SlotKey {
    /// A scheduled action, by sequence number.
    Task(i64),
    /// A wait for an external event, by waiter number.
    Event(u64),
}

/// How a durable task ended, before conversion to the task's output type.
#[derive(Clone, Debug)]
pub(crate) enum Completion {
    /// Completed with an output (activity, sub-orchestration, entity call, external event).
    Success(Option<Payload>),
    /// Failed (TaskFailed, SubOrchestrationInstanceFailed, EntityOperationFailed).
    Failure(FailureDetails),
    /// A timer fired, or a lock was granted.
    Signal,
    /// An event wait's deadline timer fired first (see
    /// `OrchestrationContext::wait_for_external_event_with_timeout`).
    TimedOut(std::time::Duration),
}

/// Describes a task for error messages.
#[derive(Clone, Debug)]
pub(crate) struct TaskInfo {
    pub(crate) kind: TaskKind,
    pub(crate) name: String,
    pub(crate) task_id: i64,
    pub(crate) instance_id: InstanceId,
    /// For entity calls: the target, so the critical section can track in-flight calls.
    pub(crate) entity: Option<EntityId>,
}

pub(crate) struct Slot {
    pub(crate) info: TaskInfo,
    pub(crate) result: Option<Completion>,
    pub(crate) waker: Option<Waker>,
    /// For event waits: the event name.
    pub(crate) event_name: Option<String>,
    /// For event waits that received an event: its arrival number and time, so an event
    /// given back by a dropped wait keeps its place.
    pub(crate) event_arrival: Option<(u64, Timestamp)>,
}

/// An external event that arrived before anyone waited for it.
#[derive(Clone, Debug)]
pub(crate) struct BufferedEvent {
    pub(crate) arrival: u64,
    pub(crate) timestamp: Timestamp,
    pub(crate) input: Option<Payload>,
}

/// A pending continue-as-new request.
#[derive(Clone, Debug)]
pub(crate) struct ContinueAsNewRequest {
    pub(crate) input: Option<Payload>,
    pub(crate) preserve_unprocessed_events: bool,
}

/// The fixed facts of an execution, from its ExecutionStarted event.
#[derive(Clone, Debug)]
pub(crate) struct ExecutionInfo {
    pub(crate) instance_id: InstanceId,
    pub(crate) execution_id: ExecutionId,
    pub(crate) name: String,
    pub(crate) version: Option<String>,
    pub(crate) parent: Option<ParentInstance>,
}

pub(crate) struct OrchestrationState {
    pub(crate) info: Arc<ExecutionInfo>,
    pub(crate) is_replaying: bool,
    pub(crate) current_time: Timestamp,
    pub(crate) next_seq: i64,
    /// Actions the code produced that history has not recorded yet, by sequence number.
    pub(crate) open_actions: BTreeMap<i64, OrchestratorAction>,
    pub(crate) slots: BTreeMap<SlotKey, Slot>,
    next_waiter: u64,
    event_waiters: BTreeMap<String, VecDeque<u64>>,
    event_buffer: BTreeMap<String, VecDeque<BufferedEvent>>,
    /// Deadline timers of event waits: timer sequence number -> (waiter, timeout). Decided
    /// when the timer's TimerFired is applied, in history order, not when the wait is polled.
    event_deadlines: BTreeMap<i64, (u64, std::time::Duration)>,
    arrivals: u64,
    /// Critical section id -> sequence number of its lock request.
    pub(crate) lock_requests: BTreeMap<String, i64>,
    pub(crate) lock: LockState,
    /// Entities with an entity call in flight inside the current critical section.
    pub(crate) calls_in_flight: BTreeSet<EntityId>,
    pub(crate) custom_status: Option<Payload>,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) continue_as_new: Option<ContinueAsNewRequest>,
    guid_counter: u64,
    rng: u64,
    /// Set once the orchestration has finished: later actions are not recorded.
    pub(crate) finished: bool,
}

impl OrchestrationState {
    pub(crate) fn new(info: ExecutionInfo, now: Timestamp, replaying: bool) -> Self {
        let seed =
            crate::sha1::seed_from(&format!("{}\u{0}{}", info.instance_id, info.execution_id));
        Self {
            info: Arc::new(info),
            is_replaying: replaying,
            current_time: now,
            next_seq: 0,
            open_actions: BTreeMap::new(),
            slots: BTreeMap::new(),
            next_waiter: 0,
            event_waiters: BTreeMap::new(),
            event_buffer: BTreeMap::new(),
            event_deadlines: BTreeMap::new(),
            arrivals: 0,
            lock_requests: BTreeMap::new(),
            lock: LockState::None,
            calls_in_flight: BTreeSet::new(),
            custom_status: None,
            logs: Vec::new(),
            continue_as_new: None,
            guid_counter: 0,
            rng: seed,
            finished: false,
        }
    }

    /// Records an action under the next sequence number; with `kind`, also a slot that a
    /// completion event fills.
    pub(crate) fn schedule(
        &mut self,
        make: impl FnOnce(i64) -> OrchestratorAction,
        slot: Option<(TaskKind, String, Option<EntityId>)>,
    ) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if !self.finished {
            self.open_actions.insert(seq, make(seq));
        }
        if let Some((kind, name, entity)) = slot {
            let info = TaskInfo {
                kind,
                name,
                task_id: seq,
                instance_id: self.info.instance_id.clone(),
                entity,
            };
            self.slots.insert(
                SlotKey::Task(seq),
                Slot {
                    info,
                    result: None,
                    waker: None,
                    event_name: None,
                    event_arrival: None,
                },
            );
        }
        seq
    }

    /// Fills the slot of a scheduled task; returns the waker to wake (after unlocking), or
    /// `Err(())` when no task waits on `seq` (abandoned or unknown).
    pub(crate) fn complete(&mut self, seq: i64, c: Completion) -> Result<Option<Waker>, ()> {
        match self.slots.get_mut(&SlotKey::Task(seq)) {
            Some(slot) if slot.result.is_none() => {
                slot.result = Some(c);
                Ok(slot.waker.take())
            }
            _ => Err(()),
        }
    }

    /// Ties an event wait to its deadline timer: when the timer fires before an event reached
    /// the wait, the wait ends with [`Completion::TimedOut`] and leaves its queue, so a later
    /// event goes to the next wait for that name.
    pub(crate) fn set_event_deadline(
        &mut self,
        timer_seq: i64,
        wait: SlotKey,
        timeout: std::time::Duration,
    ) {
        if let SlotKey::Event(waiter) = wait
            && self.slots.get(&wait).is_some_and(|s| s.result.is_none())
        {
            self.event_deadlines.insert(timer_seq, (waiter, timeout));
        }
    }

    /// A TimerFired for `seq`: if it is an event wait's deadline and the wait has no event
    /// yet, the wait times out; returns the waker to wake. Only a timer's completion may do
    /// this (a completion of another kind for that sequence number is ignored elsewhere).
    pub(crate) fn fire_event_deadline(&mut self, seq: i64) -> Option<Option<Waker>> {
        let (waiter, timeout) = self.event_deadlines.remove(&seq)?;
        self.expire_event_wait(waiter, timeout)
    }

    /// Ends a still-waiting event wait with a timeout; `None` when it already has a result or
    /// is gone. Returns the waker to wake.
    fn expire_event_wait(
        &mut self,
        waiter: u64,
        timeout: std::time::Duration,
    ) -> Option<Option<Waker>> {
        let slot = self.slots.get_mut(&SlotKey::Event(waiter))?;
        if slot.result.is_some() {
            return None;
        }
        slot.result = Some(Completion::TimedOut(timeout));
        let waker = slot.waker.take();
        if let Some(name) = slot.event_name.clone()
            && let Some(queue) = self.event_waiters.get_mut(&name)
        {
            queue.retain(|w| *w != waiter);
            if queue.is_empty() {
                self.event_waiters.remove(&name);
            }
        }
        Some(waker)
    }

    /// Starts waiting for an external event: takes a buffered one if present.
    pub(crate) fn wait_for_event(&mut self, name: &str) -> SlotKey {
        let waiter = self.next_waiter;
        self.next_waiter += 1;
        let key = SlotKey::Event(waiter);
        let buffered = self
            .event_buffer
            .get_mut(name)
            .and_then(VecDeque::pop_front);
        if self.event_buffer.get(name).is_some_and(VecDeque::is_empty) {
            self.event_buffer.remove(name);
        }
        let mut event_arrival = None;
        let result = match buffered {
            Some(ev) => {
                event_arrival = Some((ev.arrival, ev.timestamp));
                Some(Completion::Success(ev.input))
            }
            None => {
                self.event_waiters
                    .entry(name.to_string())
                    .or_default()
                    .push_back(waiter);
                None
            }
        };
        let info = TaskInfo {
            kind: TaskKind::ExternalEvent,
            name: name.to_string(),
            task_id: -1,
            instance_id: self.info.instance_id.clone(),
            entity: None,
        };
        self.slots.insert(
            key,
            Slot {
                info,
                result,
                waker: None,
                event_name: Some(name.to_string()),
                event_arrival,
            },
        );
        key
    }

    /// Delivers an EventRaised to the oldest waiter of that name, or buffers it.
    pub(crate) fn raise_event(
        &mut self,
        name: &str,
        timestamp: Timestamp,
        input: Option<Payload>,
    ) -> Option<Waker> {
        let arrival = self.arrivals;
        self.arrivals += 1;
        if let Some(queue) = self.event_waiters.get_mut(name) {
            while let Some(waiter) = queue.pop_front() {
                if let Some(slot) = self.slots.get_mut(&SlotKey::Event(waiter)) {
                    slot.result = Some(Completion::Success(input));
                    slot.event_arrival = Some((arrival, timestamp));
                    let waker = slot.waker.take();
                    if queue.is_empty() {
                        self.event_waiters.remove(name);
                    }
                    return waker;
                }
            }
            self.event_waiters.remove(name);
        }
        self.event_buffer
            .entry(name.to_string())
            .or_default()
            .push_back(BufferedEvent {
                arrival,
                timestamp,
                input,
            });
        None
    }

    /// Forgets a dropped task. A dropped event wait leaves its queue; an event it received but
    /// never returned goes back to the front of the buffer.
    pub(crate) fn drop_slot(&mut self, key: SlotKey) {
        let Some(slot) = self.slots.remove(&key) else {
            return;
        };
        if let (SlotKey::Event(waiter), Some(name)) = (key, slot.event_name) {
            match slot.result {
                Some(Completion::Success(input)) => {
                    let (arrival, timestamp) = slot.event_arrival.unwrap_or_else(|| {
                        self.arrivals += 1;
                        (self.arrivals - 1, self.current_time)
                    });
                    self.event_buffer
                        .entry(name)
                        .or_default()
                        .push_front(BufferedEvent {
                            arrival,
                            timestamp,
                            input,
                        });
                }
                _ => {
                    if let Some(queue) = self.event_waiters.get_mut(&name) {
                        queue.retain(|w| *w != waiter);
                        if queue.is_empty() {
                            self.event_waiters.remove(&name);
                        }
                    }
                }
            }
        }
    }

    /// External events received and never consumed, in arrival order.
    pub(crate) fn unprocessed_events(&self) -> Vec<HistoryEvent> {
        let mut all: Vec<(u64, HistoryEvent)> = self
            .event_buffer
            .iter()
            .flat_map(|(name, queue)| {
                queue.iter().map(move |ev| {
                    (
                        ev.arrival,
                        HistoryEvent::new(
                            ev.timestamp,
                            crate::EventKind::EventRaised {
                                name: name.clone(),
                                input: ev.input.clone(),
                            },
                        ),
                    )
                })
            })
            .collect();
        all.sort_by_key(|(a, _)| *a);
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// The next deterministic GUID.
    pub(crate) fn new_guid(&mut self) -> String {
        let name = format!(
            "{}_{}_{}",
            self.info.instance_id,
            self.current_time.as_millis(),
            self.guid_counter
        );
        self.guid_counter += 1;
        crate::sha1::uuid_v5(&crate::sha1::URL_NAMESPACE, name.as_bytes())
    }

    /// The next value of the deterministic random source (SplitMix64).
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> OrchestrationState {
        OrchestrationState::new(
            ExecutionInfo {
                instance_id: InstanceId::new("i").unwrap(),
                execution_id: ExecutionId("e".into()),
                name: "n".into(),
                version: None,
                parent: None,
            },
            Timestamp(0),
            false,
        )
    }

    #[test]
    fn events_buffer_fifo_and_waiters_leave_on_drop() {
        let mut st = state();
        assert!(
            st.raise_event("E", Timestamp(1), Payload::json(&1).ok())
                .is_none()
        );
        assert!(
            st.raise_event("E", Timestamp(2), Payload::json(&2).ok())
                .is_none()
        );
        let first = st.wait_for_event("E");
        assert!(
            matches!(&st.slots[&first].result, Some(Completion::Success(Some(p))) if p.decode::<i32>().unwrap() == 1)
        );
        let second = st.wait_for_event("E");
        let third = st.wait_for_event("E");
        assert!(st.slots[&third].result.is_none());
        st.drop_slot(third);
        // With the waiter gone, the next event is buffered.
        st.raise_event("E", Timestamp(3), Payload::json(&3).ok());
        assert_eq!(st.unprocessed_events().len(), 1);
        let _ = second;
    }

    #[test]
    fn guids_and_random_are_deterministic() {
        let (mut a, mut b) = (state(), state());
        assert_eq!(a.new_guid(), b.new_guid());
        assert_ne!(a.new_guid(), state().new_guid());
        assert_eq!(a.next_random(), b.next_random());
    }

    /// Values recorded with the hand-written SHA-1 that core carried before it used the
    /// RustCrypto `sha1` crate: histories replay only if these never change.
    #[test]
    fn guids_and_random_match_recorded_values() {
        let mut st = state();
        let guids = [st.new_guid(), st.new_guid()];
        let random = st.next_random();
        assert_eq!(
            guids,
            [
                "ab1c1485-d69b-5608-821c-27497fe9e209",
                "0c05f1d8-43d0-55cf-bcb0-565b8030673d"
            ]
        );
        assert_eq!(random, 2_325_587_807_654_794_331);
    }
}

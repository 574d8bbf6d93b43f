//! The checks of the code against the engine: its actions against the recorded history
//! (non-determinism), and its waits against the durable tasks (non-durable awaits).

use crate::orchestration::TaskKind;
use crate::orchestration::entities::release_locks;
use crate::orchestration::state::{Shared, Slot, lock};
use crate::replay::describe::{action_matches, describe_action, describe_event};
use crate::replay::{
    NON_DURABLE_AWAIT_ERROR, NonDeterminismError, OrchestrationExecutor, ReplayError,
    ReplayErrorKind,
};
use crate::{FailureDetails, HistoryEvent, InstanceId, OrchestrationStatus};

/// At most this many idle durable tasks are named in a non-durable-await failure.
const IDLE_TASKS_NAMED: usize = 5;

impl OrchestrationExecutor {
    pub(super) fn code_status(&self) -> Option<OrchestrationStatus> {
        let sh = self.shared.as_ref()?;
        match &self.code_result {
            None => None,
            Some(Err(_)) => Some(OrchestrationStatus::Failed),
            Some(Ok(_)) if lock(sh).continue_as_new.is_some() => {
                Some(OrchestrationStatus::ContinuedAsNew)
            }
            Some(Ok(_)) => Some(OrchestrationStatus::Completed),
        }
    }

    pub(super) fn fail_nondeterministic(&mut self, sh: &Shared, nd: NonDeterminismError) {
        self.nondeterminism = Some(nd);
        // Unrecorded actions are dropped, but the locks are released *before* the code is
        // stopped: dropping the code's critical section would otherwise schedule the unlocks
        // into the actions being dropped, and the entities would stay locked.
        let mut st = lock(sh);
        st.open_actions.clear();
        release_locks(&mut st, None);
        st.finished = true;
        drop(st);
        self.stop_code();
    }

    pub(super) fn code_is_checked(&self) -> bool {
        self.nondeterminism.is_none() && self.terminated.is_none() && !self.not_found
    }

    pub(super) fn match_action(
        &mut self,
        sh: &Shared,
        event: &HistoryEvent,
        index: usize,
    ) -> Result<(), ReplayError> {
        if self.nondeterminism.is_some() || self.not_found {
            return Ok(());
        }
        let seq = event.event_id;
        let mut st = lock(sh);
        match st.open_actions.remove(&seq) {
            Some(action) if action_matches(&action, &event.kind) => Ok(()),
            Some(action) => {
                drop(st);
                let nd = NonDeterminismError::new(
                    &self.instance_id,
                    seq,
                    describe_event(event),
                    describe_action(&action),
                );
                self.fail_nondeterministic(sh, nd);
                Ok(())
            }
            None if seq >= 0 && seq < st.next_seq && !st.finished && self.code_result.is_none() => {
                Err(self.error(index, event, ReplayErrorKind::DuplicateActionEvent))
            }
            None => {
                let actual = match (&self.code_result, &self.terminated) {
                    (Some(Err(failure)), _) => {
                        format!("no action (the orchestration had already failed: {failure})")
                    }
                    (Some(Ok(_)), _) => {
                        "no action (the orchestration had already completed)".to_string()
                    }
                    (None, Some(_)) => "no action (the orchestration was terminated)".to_string(),
                    (None, None) => "no action (the orchestrator is waiting)".to_string(),
                };
                drop(st);
                let nd =
                    NonDeterminismError::new(&self.instance_id, seq, describe_event(event), actual);
                self.fail_nondeterministic(sh, nd);
                Ok(())
            }
        }
    }

    pub(super) fn check_episode_end(&mut self, sh: &Shared) {
        if !self.code_is_checked() {
            return;
        }
        let st = lock(sh);
        let found = if let Some((seq, action)) = st.open_actions.first_key_value() {
            Some(NonDeterminismError::new(
                &self.instance_id,
                *seq,
                "no event (the episode ended)",
                describe_action(action),
            ))
        } else if let Some(result) = &self.code_result {
            let actual = match result {
                Ok(_) => "the orchestration completed".to_string(),
                Err(failure) => format!("the orchestration failed ({failure})"),
            };
            Some(NonDeterminismError::new(
                &self.instance_id,
                st.next_seq,
                "the orchestration still running",
                actual,
            ))
        } else {
            None
        };
        drop(st);
        if let Some(nd) = found {
            self.fail_nondeterministic(sh, nd);
        }
    }

    /// Fails the code when it waits and no durable task can wake it: the orchestrator is
    /// pending, and no durable task waits with a waker for its completion (a task registers
    /// one when it is polled and returns `Pending`; its completion or event takes it). The
    /// engine wakes the code only through those wakers, so nothing it will ever apply can poll
    /// the code again: the code awaits something else (a runtime timer, a channel, I/O,
    /// `std::future::pending`).
    ///
    /// Runs where an episode's new events have all been applied: at the end of
    /// [`execute`](Self::execute)'s new events and, when replaying, before the first event that
    /// an episode appends after them (an action event, ExecutionCompleted, ContinueAsNew or
    /// OrchestratorCompleted). The state there is the same live and in replay, so the failure
    /// replays, and a recorded episode that ended with the code stuck but still running is a
    /// mismatch. Once true it stays true (nothing can poll the code), so batching does not
    /// change the outcome. Only the first call of an episode checks: nothing polls the code
    /// after it in that episode.
    pub(super) fn check_non_durable_await(&mut self, sh: &Shared) {
        if std::mem::replace(&mut self.awaits_checked, true)
            || self.future.is_none()
            || !self.code_is_checked()
        {
            return;
        }
        let st = lock(sh);
        if st
            .slots
            .values()
            .any(|s| s.result.is_none() && s.waker.is_some())
        {
            return;
        }
        let idle: Vec<String> = st
            .slots
            .values()
            .take(IDLE_TASKS_NAMED)
            .map(describe_idle)
            .collect();
        let more = st.slots.len() - idle.len();
        drop(st);
        let failure = non_durable_await_failure(&self.instance_id, &idle, more);
        self.code_finished(Err(failure));
    }

    pub(super) fn check_history_completion(
        &mut self,
        sh: &Shared,
        event: &HistoryEvent,
        status: OrchestrationStatus,
    ) {
        if !self.code_is_checked() || status == OrchestrationStatus::Terminated {
            return;
        }
        let code_status = self.code_status();
        let st = lock(sh);
        let found = if let Some((seq, action)) = st.open_actions.first_key_value() {
            Some(NonDeterminismError::new(
                &self.instance_id,
                *seq,
                describe_event(event),
                describe_action(action),
            ))
        } else {
            match code_status {
                None => Some(NonDeterminismError::new(
                    &self.instance_id,
                    st.next_seq,
                    describe_event(event),
                    "the orchestration still running",
                )),
                Some(s) if s != status => Some(NonDeterminismError::new(
                    &self.instance_id,
                    st.next_seq,
                    describe_event(event),
                    format!("the orchestration ending as {s}"),
                )),
                Some(_) => None,
            }
        };
        drop(st);
        if let Some(nd) = found {
            self.fail_nondeterministic(sh, nd);
        }
    }
}

fn describe_idle(slot: &Slot) -> String {
    let info = &slot.info;
    let what = match info.kind {
        TaskKind::Timer | TaskKind::Lock => format!("{} (task {})", info.kind, info.task_id),
        TaskKind::ExternalEvent => format!("{} '{}'", info.kind, info.name),
        kind => format!("{kind} '{}' (task {})", info.name, info.task_id),
    };
    if slot.result.is_some() {
        format!("{what}, completed")
    } else {
        what
    }
}

/// The failure of an orchestrator that waits for something no durable task can bring.
fn non_durable_await_failure(
    instance_id: &InstanceId,
    idle: &[String],
    more: usize,
) -> FailureDetails {
    let mut message = format!(
        "instance {instance_id}: the orchestrator awaited a future that is not a durable task \
         (a runtime timer, a channel, network I/O, std::future::pending, or a task awaited again \
         after it completed), so nothing can wake it. An orchestrator may await only durable \
         tasks (timers, activities, sub-orchestrations, external events, entity calls and \
         locks) and combinations of them; such code belongs in an activity"
    );
    if !idle.is_empty() {
        message.push_str(&format!(
            ". Durable tasks that exist but are not awaited: {}",
            idle.join(", ")
        ));
        if more > 0 {
            message.push_str(&format!(" and {more} more"));
        }
    }
    FailureDetails::new(NON_DURABLE_AWAIT_ERROR, message)
}

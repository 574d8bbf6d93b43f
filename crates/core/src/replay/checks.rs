//! The non-determinism checks: code's actions against the recorded history.

use crate::orchestration::entities::release_locks;
use crate::orchestration::state::{Shared, lock};
use crate::replay::describe::{action_matches, describe_action, describe_event};
use crate::replay::{NonDeterminismError, OrchestrationExecutor, ReplayError, ReplayErrorKind};
use crate::{HistoryEvent, OrchestrationStatus};

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

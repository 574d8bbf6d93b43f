//! Delivering completion events to the tasks that wait for them.

use crate::HistoryEvent;
use crate::orchestration::TaskKind;
use crate::orchestration::state::{Completion, Shared, SlotKey, lock};
use crate::replay::OrchestrationExecutor;

impl OrchestrationExecutor {
    /// Fills the task `seq` with its completion and wakes it. A completion for a task that
    /// was never scheduled, or of the wrong kind, is ignored with a warning (as DTFx does: a
    /// duplicate delivery must not fail an instance); one for a task the code dropped is
    /// ignored silently.
    pub(super) fn deliver(
        &mut self,
        sh: &Shared,
        event: &HistoryEvent,
        seq: i64,
        kind: TaskKind,
        completion: Completion,
    ) {
        let mut st = lock(sh);
        let known = seq >= 0 && seq < st.next_seq;
        let slot_kind = st.slots.get(&SlotKey::Task(seq)).map(|s| s.info.kind);
        if slot_kind.is_some_and(|k| k != kind) {
            drop(st);
            self.warn(format!(
                "ignored {} for task {seq}: that task is not a {kind}",
                event.name()
            ));
            return;
        }
        if kind == TaskKind::Timer
            && let Some(waker) = st.fire_event_deadline(seq)
        {
            drop(st);
            if let Some(w) = waker {
                w.wake();
            }
            return;
        }
        match st.complete(seq, completion) {
            Ok(waker) => {
                drop(st);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Err(()) => {
                drop(st);
                if !known {
                    self.warn(format!(
                        "ignored {} for task {seq}: no such task was scheduled",
                        event.name()
                    ));
                }
            }
        }
    }
}

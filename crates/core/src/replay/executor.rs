//! [`OrchestrationExecutor`]: the live orchestrator and the rules that tie it to history.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::orchestration::entities::release_locks;
use crate::orchestration::state::{Completion, ExecutionInfo, OrchestrationState, Shared, lock};
use crate::orchestration::{LogLevel, LogRecord, OrchestrationContext, TaskFuture, TaskKind};
use crate::panic::panic_failure;
use crate::registry::Registry;
use crate::replay::describe::{action_event, is_action_event};
use crate::replay::{Episode, NonDeterminismError, Outcome, ReplayError, ReplayErrorKind};
use crate::{
    EventKind, FailureDetails, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp,
};

type OrchestratorFuture = TaskFuture<Result<Option<Payload>, FailureDetails>>;

/// A waker that sets a flag: the executor polls again only when something woke it.
struct WakeFlag(AtomicBool);

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

/// The replay engine for one orchestration instance. `Send`: the node keeps it in the
/// instance's actor between episodes, so an active instance is never replayed from scratch.
///
/// Each [`execute`](Self::execute) is one episode: new events in, the history to append and
/// the actions to perform out. [`load`](Self::load) rebuilds an executor from stored history
/// (after passivation or a crash) and continues exactly where the live one would have.
///
/// ```
/// use std::sync::Arc;
/// use perdure_core::{InstanceId, OrchestratorAction, Payload, Timestamp};
/// use perdure_core::orchestration::{OrchestrationContext, TaskError};
/// use perdure_core::registry::Registry;
/// use perdure_core::replay::{OrchestrationExecutor, Outcome};
/// use perdure_core::testing::events;
///
/// let mut registry = Registry::new();
/// registry.add_orchestration("Double", |ctx: OrchestrationContext, n: i64| async move {
///     let m: i64 = ctx.call_activity("Add", (n, n)).await?;
///     Ok::<_, TaskError>(m)
/// });
/// let registry = Arc::new(registry);
/// let id = InstanceId::new("i1").unwrap();
///
/// // Episode 1: the instance starts and schedules the activity (sequence number 0).
/// let mut ex = OrchestrationExecutor::new(registry.clone(), id.clone());
/// let first = ex.execute(Timestamp(1_000), vec![events::execution_started("Double", &21)]);
/// assert_eq!(first.outcome, Outcome::Running);
/// assert!(matches!(&first.actions[..], [OrchestratorAction::ScheduleTask { id: 0, name, .. }] if name == "Add"));
///
/// // The node commits `first.history`; later the instance is reactivated from it.
/// let mut ex = OrchestrationExecutor::load(registry, id, &first.history).unwrap();
/// assert!(ex.non_determinism().is_none());
///
/// // Episode 2: the activity's result arrives and the orchestration completes.
/// let second = ex.execute(Timestamp(2_000), vec![events::task_completed(0, &42)]);
/// assert_eq!(second.outcome, Outcome::Completed { output: Some(Payload::json(&42).unwrap()) });
/// assert!(second.actions.is_empty());
/// ```
pub struct OrchestrationExecutor {
    pub(super) registry: Arc<Registry>,
    pub(super) instance_id: InstanceId,
    pub(super) shared: Option<Shared>,
    pub(super) future: Option<OrchestratorFuture>,
    flag: Arc<WakeFlag>,
    pub(super) waker: Waker,
    pub(super) current_time: Timestamp,
    pub(super) replaying: bool,
    pub(super) code_result: Option<Result<Option<Payload>, FailureDetails>>,
    pub(super) not_found: bool,
    pub(super) nondeterminism: Option<NonDeterminismError>,
    pub(super) terminated: Option<Option<String>>,
    pub(super) history_outcome: Option<Outcome>,
    pub(super) events_applied: usize,
    pub(super) warnings: Vec<LogRecord>,
    /// Whether the current episode's waits were checked (see `check_non_durable_await`).
    pub(super) awaits_checked: bool,
}

impl std::fmt::Debug for OrchestrationExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestrationExecutor")
            .field("instance_id", &self.instance_id)
            .field("events_applied", &self.events_applied)
            .field("outcome", &self.history_outcome)
            .finish()
    }
}

impl OrchestrationExecutor {
    /// An executor for an instance with no history yet (the first episode's new events start
    /// with ExecutionStarted).
    pub fn new(registry: Arc<Registry>, instance_id: InstanceId) -> Self {
        let flag = Arc::new(WakeFlag(AtomicBool::new(false)));
        Self {
            registry,
            instance_id,
            shared: None,
            future: None,
            waker: Waker::from(flag.clone()),
            flag,
            current_time: Timestamp::default(),
            replaying: true,
            code_result: None,
            not_found: false,
            nondeterminism: None,
            terminated: None,
            history_outcome: None,
            events_applied: 0,
            warnings: Vec::new(),
            awaits_checked: false,
        }
    }

    /// Rebuilds an instance by replaying the stored history of its current execution
    /// (`is_replaying` is true meanwhile). A mismatch between code and history is not an
    /// error here: the next [`execute`](Self::execute) fails the instance with it (see
    /// [`non_determinism`](Self::non_determinism)). A structurally corrupt history is a
    /// [`ReplayError`].
    pub fn load(
        registry: Arc<Registry>,
        instance_id: InstanceId,
        past: &[HistoryEvent],
    ) -> Result<Self, ReplayError> {
        let mut ex = Self::new(registry, instance_id);
        for (index, event) in past.iter().enumerate() {
            ex.apply(event, index)?;
        }
        ex.events_applied = past.len();
        Ok(ex)
    }

    /// The instance id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// The non-determinism found while replaying, if any.
    pub fn non_determinism(&self) -> Option<&NonDeterminismError> {
        self.nondeterminism.as_ref()
    }

    /// The number of history events applied so far (the stored history's length).
    pub fn history_len(&self) -> usize {
        self.events_applied
    }

    /// Whether the execution has ended (its history holds a completion).
    pub fn is_finished(&self) -> bool {
        self.history_outcome.is_some()
    }

    /// The outcome recorded in history, or `Running`.
    pub fn outcome(&self) -> Outcome {
        self.history_outcome.clone().unwrap_or(Outcome::Running)
    }

    /// The current custom status.
    pub fn custom_status(&self) -> Option<Payload> {
        self.shared
            .as_ref()
            .and_then(|sh| lock(sh).custom_status.clone())
    }

    /// Runs one episode at time `now`: applies `new_events` (completions, external events,
    /// ExecutionStarted on a fresh start, ExecutionTerminated, ...), runs the orchestrator
    /// until it waits, and returns what to append and perform. An event that cannot apply
    /// (for example a second ExecutionStarted) is left out of the history with a warning in
    /// `logs`.
    pub fn execute(&mut self, now: Timestamp, new_events: Vec<HistoryEvent>) -> Episode {
        if let Some(outcome) = &self.history_outcome {
            return Episode {
                history: Vec::new(),
                actions: Vec::new(),
                outcome: outcome.clone(),
                custom_status: self.custom_status(),
                logs: Vec::new(),
            };
        }
        self.replaying = false;
        if let Some(sh) = &self.shared {
            lock(sh).is_replaying = false;
        }
        let base = self.events_applied;
        let mut history = Vec::with_capacity(new_events.len() + 4);
        let started = HistoryEvent::new(now, EventKind::OrchestratorStarted);
        if let Err(e) = self.apply(&started, base) {
            self.warn(format!("{e}"));
        }
        history.push(started);
        if self.future.is_some() && self.flag.0.load(Ordering::Acquire) {
            // Only an applied event wakes the code through the engine, and each is followed by
            // polls until the flag is clear: something else woke it since the last episode.
            self.warn(format!(
                "instance {}: the orchestrator was woken between episodes by a future that is \
                 not a durable task; its progress depends on when episodes run and will not \
                 replay (such code belongs in an activity)",
                self.instance_id
            ));
        }
        for event in new_events {
            match self.apply(&event, base + history.len()) {
                Ok(()) => history.push(event),
                Err(e) => self.warn(format!("event left out of history: {e}")),
            }
        }
        let Some(sh) = self.shared.clone() else {
            let failure = FailureDetails::new(
                "ReplayError",
                format!(
                    "instance {}: no ExecutionStarted event; the execution cannot start",
                    self.instance_id
                ),
            );
            return self.close_episode(history, Vec::new(), Outcome::Failed { failure }, now, None);
        };
        self.check_non_durable_await(&sh);
        let mut st = lock(&sh);
        // An ExecutionCompleted among the new events already ended the execution.
        let outcome = match &self.history_outcome {
            Some(recorded) => recorded.clone(),
            None => self.current_outcome(&st),
        };
        let open = std::mem::take(&mut st.open_actions);
        let mut actions = Vec::with_capacity(open.len());
        for (_, action) in open {
            history.push(action_event(&action, now));
            actions.push(action);
        }
        if outcome.is_finished() {
            st.finished = true;
        }
        let custom_status = st.custom_status.clone();
        let logs = std::mem::take(&mut st.logs);
        drop(st);
        let mut episode = self.close_episode(history, actions, outcome, now, custom_status);
        let mut all_logs = logs;
        all_logs.append(&mut episode.logs);
        episode.logs = all_logs;
        episode
    }

    fn close_episode(
        &mut self,
        mut history: Vec<HistoryEvent>,
        actions: Vec<crate::OrchestratorAction>,
        outcome: Outcome,
        now: Timestamp,
        custom_status: Option<Payload>,
    ) -> Episode {
        if self.history_outcome.is_none()
            && let Some(event) = terminal_event(&outcome, now)
        {
            history.push(event);
            self.history_outcome = Some(outcome.clone());
        }
        history.push(HistoryEvent::new(now, EventKind::OrchestratorCompleted));
        self.events_applied += history.len();
        Episode {
            history,
            actions,
            outcome,
            custom_status,
            logs: std::mem::take(&mut self.warnings),
        }
    }

    fn current_outcome(&self, st: &OrchestrationState) -> Outcome {
        if let Some(nd) = &self.nondeterminism {
            return Outcome::Failed {
                failure: nd.to_failure_details(),
            };
        }
        if let Some(reason) = &self.terminated {
            return Outcome::Terminated {
                reason: reason.clone(),
            };
        }
        match &self.code_result {
            None => Outcome::Running,
            Some(Err(failure)) => Outcome::Failed {
                failure: failure.clone(),
            },
            Some(Ok(output)) => match &st.continue_as_new {
                Some(can) => Outcome::ContinuedAsNew {
                    input: can.input.clone(),
                    carried_events: if can.preserve_unprocessed_events {
                        st.unprocessed_events()
                    } else {
                        Vec::new()
                    },
                },
                None => Outcome::Completed {
                    output: output.clone(),
                },
            },
        }
    }

    pub(super) fn warn(&mut self, message: String) {
        if !self.replaying {
            self.warnings.push(LogRecord {
                level: LogLevel::Warn,
                timestamp: self.current_time,
                message,
            });
        }
    }

    pub(super) fn error(
        &self,
        index: usize,
        event: &HistoryEvent,
        kind: ReplayErrorKind,
    ) -> ReplayError {
        ReplayError {
            instance_id: self.instance_id.clone(),
            index,
            event: event.name().to_string(),
            kind,
        }
    }

    /// Applies one history event, then runs the orchestrator if it was woken.
    fn apply(&mut self, event: &HistoryEvent, index: usize) -> Result<(), ReplayError> {
        if self.history_outcome.is_some() {
            return match event.kind {
                EventKind::OrchestratorCompleted => Ok(()),
                _ => Err(self.error(index, event, ReplayErrorKind::EventAfterCompletion)),
            };
        }
        let sh = match (&event.kind, &self.shared) {
            (EventKind::OrchestratorStarted, _) => {
                self.awaits_checked = false;
                self.current_time = event.timestamp;
                if let Some(sh) = &self.shared {
                    lock(sh).current_time = event.timestamp;
                }
                return Ok(());
            }
            (EventKind::ExecutionStarted { .. }, Some(_)) => {
                return Err(self.error(index, event, ReplayErrorKind::DuplicateExecutionStarted));
            }
            (EventKind::ExecutionStarted { .. }, None) => {
                self.start(event);
                self.poll();
                return Ok(());
            }
            (_, None) => {
                return Err(self.error(index, event, ReplayErrorKind::MissingExecutionStarted));
            }
            (_, Some(sh)) => sh.clone(),
        };
        match &event.kind {
            EventKind::OrchestratorCompleted => {
                self.check_non_durable_await(&sh);
                self.check_episode_end(&sh);
            }
            EventKind::ExecutionCompleted {
                status,
                result,
                failure,
            } => {
                self.check_non_durable_await(&sh);
                self.check_history_completion(&sh, event, *status);
                let outcome = match status {
                    OrchestrationStatus::Completed => Outcome::Completed {
                        output: result.clone(),
                    },
                    OrchestrationStatus::Failed => Outcome::Failed {
                        failure: failure.clone().unwrap_or_else(|| {
                            FailureDetails::new("Unknown", "failed without details")
                        }),
                    },
                    OrchestrationStatus::Terminated => Outcome::Terminated {
                        reason: self.terminated.clone().flatten(),
                    },
                    OrchestrationStatus::ContinuedAsNew => Outcome::ContinuedAsNew {
                        input: None,
                        carried_events: Vec::new(),
                    },
                    _ => {
                        return Err(self.error(index, event, ReplayErrorKind::BadCompletionStatus));
                    }
                };
                self.stop_code();
                self.history_outcome = Some(outcome);
            }
            EventKind::ContinueAsNew { input } => {
                self.check_non_durable_await(&sh);
                self.check_history_completion(&sh, event, OrchestrationStatus::ContinuedAsNew);
                self.stop_code();
                self.history_outcome = Some(Outcome::ContinuedAsNew {
                    input: input.clone(),
                    carried_events: Vec::new(),
                });
            }
            EventKind::ExecutionTerminated { reason } => {
                if self.terminated.is_none() {
                    self.terminated = Some(reason.clone());
                    // Release the locks before stopping the code (see `fail_nondeterministic`).
                    let mut st = lock(&sh);
                    st.open_actions.clear();
                    release_locks(&mut st, None);
                    st.finished = true;
                    drop(st);
                    self.stop_code();
                }
            }
            EventKind::ExecutionSuspended { .. } | EventKind::ExecutionResumed { .. } => {}
            kind if is_action_event(kind) => {
                // Replaying: the episode's new events are applied (see `execute`).
                self.check_non_durable_await(&sh);
                self.match_action(&sh, event, index)?;
            }
            EventKind::TaskCompleted {
                task_scheduled_id,
                result,
            } => self.deliver(
                &sh,
                event,
                *task_scheduled_id,
                TaskKind::Activity,
                Completion::Success(result.clone()),
            ),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure,
            } => self.deliver(
                &sh,
                event,
                *task_scheduled_id,
                TaskKind::Activity,
                Completion::Failure(failure.clone()),
            ),
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id,
                result,
            } => self.deliver(
                &sh,
                event,
                *task_scheduled_id,
                TaskKind::SubOrchestration,
                Completion::Success(result.clone()),
            ),
            EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id,
                failure,
            } => self.deliver(
                &sh,
                event,
                *task_scheduled_id,
                TaskKind::SubOrchestration,
                Completion::Failure(failure.clone()),
            ),
            EventKind::EntityOperationCompleted {
                task_scheduled_id,
                result,
            } => self.deliver(
                &sh,
                event,
                *task_scheduled_id,
                TaskKind::EntityCall,
                Completion::Success(result.clone()),
            ),
            EventKind::EntityOperationFailed {
                task_scheduled_id,
                failure,
            } => self.deliver(
                &sh,
                event,
                *task_scheduled_id,
                TaskKind::EntityCall,
                Completion::Failure(failure.clone()),
            ),
            EventKind::TimerFired { timer_id, .. } => {
                self.deliver(&sh, event, *timer_id, TaskKind::Timer, Completion::Signal)
            }
            EventKind::EntityLockGranted {
                critical_section_id,
            } => {
                let seq = lock(&sh).lock_requests.get(critical_section_id).copied();
                match seq {
                    Some(seq) => self.deliver(&sh, event, seq, TaskKind::Lock, Completion::Signal),
                    None => self.warn(format!(
                        "ignored EntityLockGranted for unknown critical section {critical_section_id}"
                    )),
                }
            }
            EventKind::EventRaised { name, input } => {
                let waker = lock(&sh).raise_event(name, event.timestamp, input.clone());
                if let Some(w) = waker {
                    w.wake();
                }
            }
            _ => self.warn(format!("ignored {} event", event.name())),
        }
        self.poll();
        Ok(())
    }

    fn start(&mut self, event: &HistoryEvent) {
        let EventKind::ExecutionStarted {
            name,
            version,
            input,
            execution_id,
            parent,
            ..
        } = &event.kind
        else {
            return;
        };
        let info = ExecutionInfo {
            instance_id: self.instance_id.clone(),
            execution_id: execution_id.clone(),
            name: name.clone(),
            version: version.clone(),
            parent: parent.clone(),
        };
        let state = OrchestrationState::new(info, self.current_time, self.replaying);
        let shared: Shared = Arc::new(Mutex::new(state));
        self.shared = Some(shared.clone());
        match self.registry.orchestration(name, version.as_deref()) {
            Ok(f) => {
                let ctx = OrchestrationContext::new(shared);
                let input = input.clone();
                match std::panic::catch_unwind(AssertUnwindSafe(|| f(ctx, input))) {
                    Ok(fut) => {
                        self.future = Some(fut);
                        self.flag.0.store(true, Ordering::Release);
                    }
                    Err(p) => self.code_finished(Err(panic_failure(p))),
                }
            }
            Err(e) => {
                self.not_found = true;
                self.code_result = Some(Err(e.to_failure_details()));
            }
        }
    }

    /// Polls the orchestrator while it has been woken. A panic fails the instance.
    fn poll(&mut self) {
        while self.nondeterminism.is_none() && self.flag.0.swap(false, Ordering::AcqRel) {
            let Some(fut) = self.future.as_mut() else {
                return;
            };
            let mut cx = Context::from_waker(&self.waker);
            match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(result)) => self.code_finished(result),
                Err(p) => self.code_finished(Err(panic_failure(p))),
            }
        }
    }

    pub(super) fn code_finished(&mut self, result: Result<Option<Payload>, FailureDetails>) {
        self.stop_code();
        self.code_result = Some(result);
        if let Some(sh) = &self.shared {
            release_locks(&mut lock(sh), None);
        }
    }

    /// Drops the orchestrator future (a panic in a destructor is contained).
    pub(super) fn stop_code(&mut self) {
        if let Some(fut) = self.future.take() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(fut)));
        }
    }
}

fn terminal_event(outcome: &Outcome, now: Timestamp) -> Option<HistoryEvent> {
    let kind = match outcome {
        Outcome::Running => return None,
        Outcome::Completed { output } => EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Completed,
            result: output.clone(),
            failure: None,
        },
        Outcome::Failed { failure } => EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Failed,
            result: None,
            failure: Some(failure.clone()),
        },
        Outcome::Terminated { .. } => EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Terminated,
            result: None,
            failure: None,
        },
        Outcome::ContinuedAsNew { input, .. } => EventKind::ContinueAsNew {
            input: input.clone(),
        },
    };
    Some(HistoryEvent::new(now, kind))
}

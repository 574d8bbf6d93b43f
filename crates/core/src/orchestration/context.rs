//! [`OrchestrationContext`]: what an orchestrator uses to do anything durable.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::orchestration::state::{ContinueAsNewRequest, ExecutionInfo, Shared, lock};
use crate::orchestration::task::{convert_result, convert_unit, encode_payload};
use crate::orchestration::{DurableTask, LogLevel, LogRecord, TaskError, TaskKind};
use crate::{
    ExecutionId, InstanceId, OrchestratorAction, ParentInstance, Payload, RetryPolicy, Timestamp,
};

/// The orchestrator's handle on its instance: scheduling calls, time, ids, events.
///
/// Cheap to clone and `Send`; all clones share one instance. Every scheduling call takes the
/// next sequence number when it is made (program order), not when it is awaited.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use perdure_core::orchestration::{Either, OrchestrationContext, TaskError, when_all, when_any2};
/// use perdure_core::{Registry, testing::OrchestrationTester};
///
/// async fn approve(ctx: OrchestrationContext, items: Vec<String>) -> Result<String, TaskError> {
///     ctx.set_custom_status(&"checking");
///     // Fan out: every call is scheduled at once; results come back in call order.
///     let checks = when_all(items.iter().map(|i| ctx.call_activity::<bool>("Check", i))).await;
///     if !checks.into_iter().collect::<Result<Vec<bool>, _>>()?.into_iter().all(|ok| ok) {
///         return Ok("rejected".into());
///     }
///     // Wait for a human, at most one day (a durable timer as the timeout).
///     let approval = ctx.wait_for_external_event::<bool>("Approval");
///     let timeout = ctx.create_timer_after(Duration::from_secs(24 * 3600));
///     Ok(match when_any2(approval, timeout).await {
///         Either::Left(approved) => if approved? { "approved" } else { "rejected" }.into(),
///         Either::Right(()) => "timed out".into(),
///     })
/// }
///
/// let mut registry = Registry::new();
/// registry
///     .add_orchestration("Approve", approve)
///     .add_activity("Check", |_ctx, item: String| async move { Ok::<_, String>(!item.is_empty()) });
/// let mut tester = OrchestrationTester::new(Arc::new(registry));
/// tester.raise_event_after(Duration::from_secs(3600), "Approval", &true);
/// let run = tester.run("Approve", &vec!["a".to_string(), "b".to_string()]);
/// assert_eq!(run.output::<String>().unwrap(), "approved");
/// ```
#[derive(Clone)]
pub struct OrchestrationContext {
    pub(crate) shared: Shared,
    pub(crate) info: Arc<ExecutionInfo>,
}

impl std::fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestrationContext")
            .field("instance_id", &self.info.instance_id)
            .field("name", &self.info.name)
            .finish()
    }
}

/// Options of a sub-orchestration call.
#[derive(Clone, Debug, Default)]
pub struct SubOrchestrationOptions {
    /// The child's instance id; by default `{parent id}:{sequence number}`.
    pub instance_id: Option<InstanceId>,
    /// The child's orchestration version.
    pub version: Option<String>,
    /// Retry a failed child (with the same instance id) under this policy.
    pub retry: Option<RetryPolicy>,
}

impl OrchestrationContext {
    pub(crate) fn new(shared: Shared) -> Self {
        let info = lock(&shared).info.clone();
        Self { shared, info }
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.info.instance_id
    }

    /// This execution's id.
    pub fn execution_id(&self) -> &ExecutionId {
        &self.info.execution_id
    }

    /// The orchestration name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The orchestration version, if any.
    pub fn version(&self) -> Option<&str> {
        self.info.version.as_deref()
    }

    /// The parent instance, for a sub-orchestration.
    pub fn parent(&self) -> Option<&ParentInstance> {
        self.info.parent.as_ref()
    }

    /// Whether the orchestrator is replaying history (its effects were already recorded).
    pub fn is_replaying(&self) -> bool {
        lock(&self.shared).is_replaying
    }

    /// The current time of the orchestration: the timestamp of the episode's
    /// OrchestratorStarted event. Deterministic across replays.
    pub fn current_utc_date_time(&self) -> Timestamp {
        lock(&self.shared).current_time
    }

    /// A new deterministic, name-based (version 5) UUID, derived from the instance id, the
    /// current orchestration time and a counter.
    pub fn new_guid(&self) -> String {
        lock(&self.shared).new_guid()
    }

    /// The next value of a deterministic random source seeded by instance and execution id.
    pub fn random_u64(&self) -> u64 {
        lock(&self.shared).next_random()
    }

    /// A deterministic random number in `[0, 1)`.
    pub fn random_f64(&self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sets the custom status shown by status queries.
    pub fn set_custom_status<T: Serialize + ?Sized>(&self, status: &T) {
        let payload = Payload::json(status).ok();
        lock(&self.shared).custom_status = payload;
    }

    /// Clears the custom status.
    pub fn clear_custom_status(&self) {
        lock(&self.shared).custom_status = None;
    }

    /// Logs a line, only when not replaying (replay-safe). The node emits it with `tracing`.
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        let mut st = lock(&self.shared);
        if !st.is_replaying {
            let timestamp = st.current_time;
            st.logs.push(LogRecord {
                level,
                timestamp,
                message: message.into(),
            });
        }
    }

    /// Logs at info level (replay-safe).
    pub fn log_info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at warn level (replay-safe).
    pub fn log_warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at error level (replay-safe).
    pub fn log_error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message);
    }

    pub(crate) fn ready<O>(&self, value: Result<O, TaskError>) -> DurableTask<Result<O, TaskError>>
    where
        O: DeserializeOwned,
    {
        DurableTask::ready(self.shared.clone(), value, convert_result::<O>)
    }

    /// Schedules an activity; its output decodes into `O`.
    pub fn call_activity<O: DeserializeOwned>(
        &self,
        name: &str,
        input: impl Serialize,
    ) -> DurableTask<Result<O, TaskError>> {
        let input = match encode_payload(&input) {
            Ok(p) => p,
            Err(message) => {
                return self.ready(Err(TaskError::Encode {
                    kind: TaskKind::Activity,
                    name: name.to_string(),
                    message,
                }));
            }
        };
        self.schedule_activity(name, input)
    }

    pub(crate) fn schedule_activity<O: DeserializeOwned>(
        &self,
        name: &str,
        input: Option<Payload>,
    ) -> DurableTask<Result<O, TaskError>> {
        let seq = lock(&self.shared).schedule(
            |id| OrchestratorAction::ScheduleTask {
                id,
                name: name.to_string(),
                version: None,
                input,
            },
            Some((TaskKind::Activity, name.to_string(), None)),
        );
        DurableTask::pending(
            self.shared.clone(),
            crate::orchestration::state::SlotKey::Task(seq),
            convert_result::<O>,
        )
    }

    /// Creates a durable timer that fires at `fire_at`.
    pub fn create_timer(&self, fire_at: Timestamp) -> DurableTask<()> {
        let seq = lock(&self.shared).schedule(
            |id| OrchestratorAction::CreateTimer { id, fire_at },
            Some((TaskKind::Timer, "timer".to_string(), None)),
        );
        DurableTask::pending(
            self.shared.clone(),
            crate::orchestration::state::SlotKey::Task(seq),
            convert_unit,
        )
    }

    /// Creates a durable timer that fires `delay` after the current orchestration time.
    pub fn create_timer_after(&self, delay: Duration) -> DurableTask<()> {
        let fire_at = self.current_utc_date_time().add(delay);
        self.create_timer(fire_at)
    }

    /// Waits for the next external event called `name` (FIFO per name). Events that arrived
    /// before the wait are buffered and delivered in order.
    pub fn wait_for_external_event<O: DeserializeOwned>(
        &self,
        name: &str,
    ) -> DurableTask<Result<O, TaskError>> {
        let key = lock(&self.shared).wait_for_event(name);
        DurableTask::pending(self.shared.clone(), key, convert_result::<O>)
    }

    /// Waits for the next external event called `name`, at most `timeout` (orchestration
    /// time); after that it fails with [`TaskError::Timeout`] (Durable Functions'
    /// `WaitForExternalEvent<T>(name, timeout)` throwing `TimeoutException`).
    ///
    /// The timeout is a durable timer created by this call whatever happens (as Durable
    /// Functions does), so the call takes one sequence number. When the event wins, the timer
    /// is dropped and its TimerFired, when it comes, is ignored. When the timer wins, the wait
    /// leaves the event's queue: a later event of that name is buffered for the next wait.
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use perdure_core::{OrchestrationContext, Registry, TaskError, testing::OrchestrationTester};
    ///
    /// async fn approve(ctx: OrchestrationContext, _: ()) -> Result<String, TaskError> {
    ///     let hour = Duration::from_secs(3600);
    ///     Ok(match ctx.wait_for_external_event_with_timeout::<bool>("Approval", hour).await {
    ///         Ok(true) => "approved".into(),
    ///         Ok(false) => "rejected".into(),
    ///         Err(e) if e.is_timeout() => "escalated".into(),
    ///         Err(e) => return Err(e),
    ///     })
    /// }
    ///
    /// let mut registry = Registry::new();
    /// registry.add_orchestration("Approve", approve);
    /// let registry = Arc::new(registry);
    /// let mut tester = OrchestrationTester::new(registry.clone());
    /// tester.raise_event_after(Duration::from_secs(60), "Approval", &true);
    /// assert_eq!(tester.run("Approve", &()).output::<String>().unwrap(), "approved");
    /// // Nobody answers: the timer fires after an hour of orchestration time.
    /// let run = OrchestrationTester::new(registry).run("Approve", &());
    /// assert_eq!(run.output::<String>().unwrap(), "escalated");
    /// ```
    pub fn wait_for_external_event_with_timeout<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> crate::orchestration::TaskFuture<Result<O, TaskError>> {
        let key = lock(&self.shared).wait_for_event(name);
        let event = DurableTask::pending(self.shared.clone(), key, convert_result::<O>);
        // The deadline is decided when its TimerFired is applied, in history order, as Durable
        // Functions decides it (its race is attached when the wait is made): an event that
        // arrives after the deadline goes to the next wait, however late this one is awaited.
        // The timer's own task is not kept; its TimerFired only ends the wait.
        let timer = self.create_timer_after(timeout);
        if let Some(seq) = timer.task_id() {
            lock(&self.shared).set_event_deadline(seq, key, timeout);
        }
        drop(timer);
        Box::pin(event)
    }

    /// Like [`wait_for_external_event_with_timeout`](Self::wait_for_external_event_with_timeout),
    /// but resolves to `Ok(default)` when the timeout elapses (Durable Functions'
    /// `WaitForExternalEvent<T>(name, timeout, defaultValue)`).
    ///
    /// ```
    /// use std::{sync::Arc, time::Duration};
    /// use perdure_core::{OrchestrationContext, Registry, TaskError, testing::OrchestrationTester};
    ///
    /// async fn quorum(ctx: OrchestrationContext, _: ()) -> Result<u32, TaskError> {
    ///     let votes = ctx.wait_for_external_event_or("Votes", Duration::from_secs(600), 0u32);
    ///     votes.await
    /// }
    ///
    /// let mut registry = Registry::new();
    /// registry.add_orchestration("Quorum", quorum);
    /// let run = OrchestrationTester::new(Arc::new(registry)).run("Quorum", &());
    /// assert_eq!(run.output::<u32>().unwrap(), 0);
    /// ```
    pub fn wait_for_external_event_or<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        timeout: Duration,
        default: O,
    ) -> crate::orchestration::TaskFuture<Result<O, TaskError>> {
        let wait = self.wait_for_external_event_with_timeout::<O>(name, timeout);
        Box::pin(async move {
            match wait.await {
                Err(e) if e.is_timeout() => Ok(default),
                other => other,
            }
        })
    }

    /// Raises an event on another instance (one-way).
    pub fn send_event(
        &self,
        instance_id: &InstanceId,
        name: &str,
        data: impl Serialize,
    ) -> Result<(), TaskError> {
        let input = encode_payload(&data).map_err(|message| TaskError::Encode {
            kind: TaskKind::ExternalEvent,
            name: name.to_string(),
            message,
        })?;
        lock(&self.shared).schedule(
            |id| OrchestratorAction::SendEvent {
                id,
                instance_id: instance_id.clone(),
                name: name.to_string(),
                input,
            },
            None,
        );
        Ok(())
    }

    /// Schedules a sub-orchestration with a default child id (`{parent}:{seq}`).
    pub fn call_sub_orchestration<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        input: impl Serialize,
    ) -> crate::orchestration::TaskFuture<Result<O, TaskError>> {
        self.call_sub_orchestration_with_options(name, input, SubOrchestrationOptions::default())
    }

    /// Schedules a sub-orchestration with an explicit id, version or retry policy.
    pub fn call_sub_orchestration_with_options<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        input: impl Serialize,
        options: SubOrchestrationOptions,
    ) -> crate::orchestration::TaskFuture<Result<O, TaskError>> {
        let input = match encode_payload(&input) {
            Ok(p) => p,
            Err(message) => {
                return Box::pin(self.ready(Err(TaskError::Encode {
                    kind: TaskKind::SubOrchestration,
                    name: name.to_string(),
                    message,
                })));
            }
        };
        if let Err(e) = self.check_sub_orchestration_allowed() {
            return Box::pin(self.ready(Err(e.into())));
        }
        let first = self.schedule_sub_orchestration::<O>(
            name,
            options.version.clone(),
            options.instance_id.clone(),
            input.clone(),
        );
        match options.retry {
            None => Box::pin(first),
            Some(policy) => {
                let child_id = self.child_id_of(&first);
                crate::orchestration::retry::retry_sub_orchestration(
                    self.clone(),
                    first,
                    name.to_string(),
                    options.version,
                    child_id,
                    input,
                    policy,
                )
            }
        }
    }

    fn child_id_of<T>(&self, task: &DurableTask<T>) -> Option<InstanceId> {
        let seq = task.task_id()?;
        match lock(&self.shared).open_actions.get(&seq) {
            Some(OrchestratorAction::CreateSubOrchestration { instance_id, .. }) => {
                Some(instance_id.clone())
            }
            _ => None,
        }
    }

    pub(crate) fn schedule_sub_orchestration<O: DeserializeOwned>(
        &self,
        name: &str,
        version: Option<String>,
        instance_id: Option<InstanceId>,
        input: Option<Payload>,
    ) -> DurableTask<Result<O, TaskError>> {
        let mut st = lock(&self.shared);
        let seq = st.next_seq;
        let child = match instance_id {
            Some(id) => id,
            None => match InstanceId::new(format!("{}:{:04}", self.info.instance_id, seq)) {
                Ok(id) => id,
                Err(_) => match InstanceId::new(st.new_guid()) {
                    Ok(id) => id,
                    Err(e) => {
                        drop(st);
                        return self.ready(Err(TaskError::Encode {
                            kind: TaskKind::SubOrchestration,
                            name: name.to_string(),
                            message: e.to_string(),
                        }));
                    }
                },
            },
        };
        let seq = st.schedule(
            |id| OrchestratorAction::CreateSubOrchestration {
                id,
                name: name.to_string(),
                version,
                instance_id: child,
                input,
            },
            Some((TaskKind::SubOrchestration, name.to_string(), None)),
        );
        drop(st);
        DurableTask::pending(
            self.shared.clone(),
            crate::orchestration::state::SlotKey::Task(seq),
            convert_result::<O>,
        )
    }

    /// Ends this execution when the orchestrator returns `Ok`, and starts a new one with
    /// `input`. With `preserve_unprocessed_events`, external events received and not yet
    /// consumed are carried into the new execution.
    pub fn continue_as_new(&self, input: impl Serialize, preserve_unprocessed_events: bool) {
        let input = encode_payload(&input).ok().flatten();
        lock(&self.shared).continue_as_new = Some(ContinueAsNewRequest {
            input,
            preserve_unprocessed_events,
        });
    }
}

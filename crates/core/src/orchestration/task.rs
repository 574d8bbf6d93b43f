//! Durable tasks: the futures an orchestrator awaits, and the error they fail with.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::orchestration::LockError;
use crate::orchestration::state::{Completion, Shared, SlotKey, TaskInfo, lock};
use crate::{FailureDetails, InstanceId, Payload};

/// The error type (`FailureDetails::error_type`) of a [`TaskError::Timeout`] that an
/// orchestrator propagates.
pub const TIMEOUT_ERROR: &str = "TimeoutError";

/// A boxed, `Send` future of a durable operation (for example an activity call with retries).
pub type TaskFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What kind of durable task failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// An activity.
    Activity,
    /// A sub-orchestration.
    SubOrchestration,
    /// An entity operation called by the orchestration.
    EntityCall,
    /// A wait for an external event.
    ExternalEvent,
    /// A durable timer.
    Timer,
    /// A lock request (critical section).
    Lock,
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Activity => "activity",
            Self::SubOrchestration => "sub-orchestration",
            Self::EntityCall => "entity operation",
            Self::ExternalEvent => "external event",
            Self::Timer => "timer",
            Self::Lock => "lock",
        })
    }
}

/// Why a durable task did not produce its value. Domain failures are data: an orchestrator
/// gets this as `Err` and may handle it or propagate it with `?` (the task's
/// [`FailureDetails`] then becomes the inner failure of the orchestration's failure).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// The activity, sub-orchestration or entity operation failed.
    #[error("{kind} '{name}' (task {task_id}) failed: {failure}")]
    Failed {
        /// What failed.
        kind: TaskKind,
        /// Its name (activity / orchestration name, or `entity.operation`).
        name: String,
        /// Its sequence number.
        task_id: i64,
        /// The failure reported by the task.
        failure: FailureDetails,
    },
    /// The task's result (or an event's data) does not match the type the orchestrator asked
    /// for.
    #[error(
        "instance {instance_id}: result of {kind} '{name}' (task {task_id}) does not match the \
         expected type: {message}"
    )]
    Decode {
        /// The instance.
        instance_id: InstanceId,
        /// What produced the value.
        kind: TaskKind,
        /// Its name.
        name: String,
        /// Its sequence number (`-1` for an external event).
        task_id: i64,
        /// The decoder's message.
        message: String,
    },
    /// The input given to the scheduling call could not be encoded as JSON.
    #[error("input of {kind} '{name}' cannot be encoded: {message}")]
    Encode {
        /// What was being scheduled.
        kind: TaskKind,
        /// Its name.
        name: String,
        /// The encoder's message.
        message: String,
    },
    /// A critical-section rule was broken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The task did not complete within its timeout (Durable Functions' `TimeoutException`),
    /// for example
    /// [`wait_for_external_event_with_timeout`](crate::OrchestrationContext::wait_for_external_event_with_timeout).
    #[error("{kind} '{name}' timed out after {timeout:?}")]
    Timeout {
        /// What timed out.
        kind: TaskKind,
        /// Its name (the event name for an external event).
        name: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
}

impl TaskError {
    /// The failure details an orchestration fails with when it propagates this error.
    pub fn to_failure_details(&self) -> FailureDetails {
        match self {
            Self::Failed { failure, .. } => {
                FailureDetails::new("TaskFailedError", self.to_string()).with_inner(failure.clone())
            }
            Self::Decode { .. } => FailureDetails::new("PayloadDecodeError", self.to_string()),
            Self::Encode { .. } => FailureDetails::new("PayloadEncodeError", self.to_string()),
            Self::Lock(e) => FailureDetails::new("LockingRulesViolation", e.to_string()),
            Self::Timeout { .. } => FailureDetails::new(TIMEOUT_ERROR, self.to_string()),
        }
    }

    /// Whether the task timed out ([`TaskError::Timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// The failure of the task, when it failed (rather than being misused).
    pub fn failure(&self) -> Option<&FailureDetails> {
        match self {
            Self::Failed { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

impl From<TaskError> for FailureDetails {
    fn from(e: TaskError) -> Self {
        e.to_failure_details()
    }
}

impl From<TaskError> for String {
    fn from(e: TaskError) -> Self {
        e.to_string()
    }
}

type Convert<T> = fn(Completion, &TaskInfo, &Shared) -> T;

/// A durable task: a future resolved by a history event (TaskCompleted, TimerFired,
/// EventRaised, ...). It is `Unpin`, so `&mut task` is a future too and a task may be kept
/// after losing a [`when_any`](crate::orchestration::when_any).
///
/// Dropping a task that waits for an external event removes it from that event's queue.
#[must_use = "a durable task does nothing unless awaited"]
pub struct DurableTask<T> {
    shared: Shared,
    key: Option<SlotKey>,
    ready: Option<T>,
    convert: Convert<T>,
}

impl<T> Unpin for DurableTask<T> {}

impl<T> DurableTask<T> {
    pub(crate) fn pending(shared: Shared, key: SlotKey, convert: Convert<T>) -> Self {
        Self {
            shared,
            key: Some(key),
            ready: None,
            convert,
        }
    }

    pub(crate) fn ready(shared: Shared, value: T, convert: Convert<T>) -> Self {
        Self {
            shared,
            key: None,
            ready: Some(value),
            convert,
        }
    }

    /// Whether the task already has its result (polling it would return `Ready`).
    pub fn is_completed(&self) -> bool {
        if self.ready.is_some() {
            return true;
        }
        match self.key {
            Some(key) => lock(&self.shared)
                .slots
                .get(&key)
                .is_some_and(|s| s.result.is_some()),
            None => false,
        }
    }

    /// The task's sequence number, for tasks that scheduled an action.
    pub fn task_id(&self) -> Option<i64> {
        match self.key {
            Some(SlotKey::Task(seq)) => Some(seq),
            _ => None,
        }
    }
}

impl<T> Future for DurableTask<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(v) = this.ready.take() {
            return Poll::Ready(v);
        }
        let Some(key) = this.key else {
            return Poll::Pending;
        };
        let mut st = lock(&this.shared);
        let Some(slot) = st.slots.get_mut(&key) else {
            return Poll::Pending;
        };
        match slot.result.take() {
            Some(c) => {
                let slot = st.slots.remove(&key);
                drop(st);
                this.key = None;
                match slot {
                    Some(slot) => Poll::Ready((this.convert)(c, &slot.info, &this.shared)),
                    None => Poll::Pending,
                }
            }
            None => {
                match &slot.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for DurableTask<T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.shared).drop_slot(key);
        }
    }
}

impl<T> fmt::Debug for DurableTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableTask")
            .field("task_id", &self.task_id())
            .field("completed", &self.is_completed())
            .finish()
    }
}

/// Decodes a payload (`None` as JSON `null`) into `O`.
pub(crate) fn decode_payload<O: DeserializeOwned>(payload: Option<&Payload>) -> Result<O, String> {
    match payload {
        None => serde_json::from_slice(b"null").map_err(|e| e.to_string()),
        Some(p) => p.decode().map_err(|e| e.to_string()),
    }
}

/// Encodes a value as a JSON payload; JSON `null` becomes `None`.
pub(crate) fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Option<Payload>, String> {
    let p = Payload::json(value).map_err(|e| e.to_string())?;
    Ok(if p.data == b"null" { None } else { Some(p) })
}

pub(crate) fn convert_result<O: DeserializeOwned>(
    c: Completion,
    info: &TaskInfo,
    shared: &Shared,
) -> Result<O, TaskError> {
    if let Some(entity) = &info.entity {
        lock(shared).calls_in_flight.remove(entity);
    }
    match c {
        Completion::Success(p) => decode_payload(p.as_ref()).map_err(|message| TaskError::Decode {
            instance_id: info.instance_id.clone(),
            kind: info.kind,
            name: info.name.clone(),
            task_id: info.task_id,
            message,
        }),
        Completion::Failure(failure) => Err(TaskError::Failed {
            kind: info.kind,
            name: info.name.clone(),
            task_id: info.task_id,
            failure,
        }),
        Completion::Signal => decode_payload(None).map_err(|message| TaskError::Decode {
            instance_id: info.instance_id.clone(),
            kind: info.kind,
            name: info.name.clone(),
            task_id: info.task_id,
            message,
        }),
        Completion::TimedOut(timeout) => Err(TaskError::Timeout {
            kind: info.kind,
            name: info.name.clone(),
            timeout,
        }),
    }
}

pub(crate) fn convert_unit(_: Completion, _: &TaskInfo, _: &Shared) {}

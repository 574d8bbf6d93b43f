//! What an activity sees of its invocation.

use crate::InstanceId;

/// The context of one activity invocation: which instance scheduled it, under which name and
/// sequence number, and which delivery attempt this is (activities run at least once).
///
/// ```
/// use perdure_core::{InstanceId, activity::ActivityContext};
/// let ctx = ActivityContext::new(InstanceId::new("i1").unwrap(), "SayHello", 3, 1);
/// assert_eq!((ctx.name(), ctx.task_id(), ctx.attempt()), ("SayHello", 3, 1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivityContext {
    instance_id: InstanceId,
    name: String,
    task_id: i64,
    attempt: u32,
}

impl ActivityContext {
    /// A context for running activity `name`, scheduled by `instance_id` as task `task_id`.
    pub fn new(
        instance_id: InstanceId,
        name: impl Into<String>,
        task_id: i64,
        attempt: u32,
    ) -> Self {
        Self {
            instance_id,
            name: name.into(),
            task_id,
            attempt,
        }
    }

    /// The orchestration instance that scheduled this activity.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }

    /// The activity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's sequence number (the `event_id` of its TaskScheduled event).
    pub fn task_id(&self) -> i64 {
        self.task_id
    }

    /// The delivery attempt, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

//! Retries of activities and sub-orchestrations: a loop in the orchestrator, with durable
//! timers between attempts. Backoff comes from [`RetryPolicy::delay_before_attempt`]; the
//! retry timeout is measured with orchestration time (history timestamps), never a clock.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::orchestration::task::encode_payload;
use crate::orchestration::{DurableTask, OrchestrationContext, TaskError, TaskFuture, TaskKind};
use crate::{InstanceId, Payload, RetryPolicy, Timestamp};

/// Whether another attempt should follow a failed attempt number `attempt`.
fn should_retry(
    policy: &RetryPolicy,
    err: &TaskError,
    attempt: u32,
    started: Timestamp,
    now: Timestamp,
) -> bool {
    let Some(failure) = err.failure() else {
        return false;
    };
    if attempt >= policy.max_attempts || !policy.should_retry(failure) {
        return false;
    }
    match policy.retry_timeout {
        Some(timeout) => now.since(started) < timeout,
        None => true,
    }
}

impl OrchestrationContext {
    /// Schedules an activity and retries it under `policy` when it fails. The first attempt
    /// is scheduled now; each retry waits on a durable timer first.
    pub fn call_activity_with_retry<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        policy: RetryPolicy,
        input: impl Serialize,
    ) -> TaskFuture<Result<O, TaskError>> {
        let input = match encode_payload(&input) {
            Ok(p) => p,
            Err(message) => {
                return Box::pin(self.ready(Err(TaskError::Encode {
                    kind: TaskKind::Activity,
                    name: name.to_string(),
                    message,
                })));
            }
        };
        let first = self.schedule_activity::<O>(name, input.clone());
        let ctx = self.clone();
        let name = name.to_string();
        let started = self.current_utc_date_time();
        Box::pin(async move {
            let mut attempt = 1u32;
            let mut result = first.await;
            loop {
                let err = match result {
                    Ok(v) => return Ok(v),
                    Err(e) => e,
                };
                if !should_retry(&policy, &err, attempt, started, ctx.current_utc_date_time()) {
                    return Err(err);
                }
                attempt += 1;
                let delay = policy.delay_before_attempt(attempt);
                if !delay.is_zero() {
                    ctx.create_timer_after(delay).await;
                }
                result = ctx.schedule_activity::<O>(&name, input.clone()).await;
            }
        })
    }
}

/// The retry loop of a sub-orchestration (every attempt uses the same child instance id).
pub(crate) fn retry_sub_orchestration<O: DeserializeOwned + Send + 'static>(
    ctx: OrchestrationContext,
    first: DurableTask<Result<O, TaskError>>,
    name: String,
    version: Option<String>,
    child_id: Option<InstanceId>,
    input: Option<Payload>,
    policy: RetryPolicy,
) -> TaskFuture<Result<O, TaskError>> {
    let started = ctx.current_utc_date_time();
    Box::pin(async move {
        let mut attempt = 1u32;
        let mut result = first.await;
        loop {
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !should_retry(&policy, &err, attempt, started, ctx.current_utc_date_time()) {
                return Err(err);
            }
            attempt += 1;
            let delay = policy.delay_before_attempt(attempt);
            if !delay.is_zero() {
                ctx.create_timer_after(delay).await;
            }
            if let Err(e) = ctx.check_sub_orchestration_allowed() {
                return Err(e.into());
            }
            result = ctx
                .schedule_sub_orchestration::<O>(
                    &name,
                    version.clone(),
                    child_id.clone(),
                    input.clone(),
                )
                .await;
        }
    })
}

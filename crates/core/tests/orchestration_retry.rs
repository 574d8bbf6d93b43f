//! Retries: backoff computed from history timestamps, timeouts, error filters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::testing::OrchestrationTester;
use perdure_core::{EventKind, FailureDetails, Registry, RetryPolicy};

fn registry(policy: RetryPolicy) -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("Retry", move |ctx: OrchestrationContext, ()| {
        let policy = policy.clone();
        async move {
            let v: u32 = ctx.call_activity_with_retry("Flaky", policy, ()).await?;
            Ok::<_, TaskError>(v)
        }
    });
    Arc::new(r)
}

fn flaky(
    fail_times: u32,
    error_type: &'static str,
) -> (
    Arc<AtomicU32>,
    impl FnMut(()) -> Result<u32, FailureDetails> + Send + 'static,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    (calls, move |()| {
        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= fail_times {
            Err(FailureDetails::new(
                error_type,
                format!("attempt {n} failed"),
            ))
        } else {
            Ok(n)
        }
    })
}

#[test]
fn backoff_timers_come_from_history_time() {
    let policy = RetryPolicy::new(5, Duration::from_secs(1)).with_backoff_coefficient(2.0);
    let mut t = OrchestrationTester::new(registry(policy));
    let (calls, mock) = flaky(3, "Transient");
    t.mock_activity("Flaky", mock);
    let run = t.run("Retry", &());
    assert_eq!(run.output::<u32>().unwrap(), 4);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Each TimerCreated is due `delay` after the OrchestratorStarted of its episode.
    let mut episode_time = None;
    let mut delays = Vec::new();
    for e in &run.history {
        match &e.kind {
            EventKind::OrchestratorStarted => episode_time = Some(e.timestamp),
            EventKind::TimerCreated { fire_at } => {
                delays.push(fire_at.as_millis() - episode_time.unwrap().as_millis())
            }
            _ => {}
        }
    }
    assert_eq!(delays, vec![1000, 2000, 4000]);
    assert_eq!(run.end_time.as_millis() - t.start_time().as_millis(), 7000);
}

#[test]
fn gives_up_after_max_attempts_with_last_failure() {
    let policy = RetryPolicy::new(3, Duration::from_secs(1));
    let mut t = OrchestrationTester::new(registry(policy));
    let (calls, mock) = flaky(10, "Transient");
    t.mock_activity("Flaky", mock);
    let failure = t.run("Retry", &()).output::<u32>().unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(failure.inner.unwrap().message, "attempt 3 failed");
}

#[test]
fn retry_timeout_is_measured_in_orchestration_time() {
    let policy = RetryPolicy::new(10, Duration::from_secs(1))
        .with_backoff_coefficient(2.0)
        .with_retry_timeout(Duration::from_millis(2500));
    let mut t = OrchestrationTester::new(registry(policy));
    let (calls, mock) = flaky(100, "Transient");
    t.mock_activity("Flaky", mock);
    assert!(t.run("Retry", &()).output::<u32>().is_err());
    // Attempts at t=0s, 1s, 3s; at 3s, 3s >= 2.5s elapsed: give up.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[test]
fn only_listed_error_types_are_retried() {
    let policy = RetryPolicy::new(5, Duration::from_secs(1)).retry_on(["Transient"]);
    let mut t = OrchestrationTester::new(registry(policy));
    let (calls, mock) = flaky(10, "Fatal");
    t.mock_activity("Flaky", mock);
    assert!(t.run("Retry", &()).output::<u32>().is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

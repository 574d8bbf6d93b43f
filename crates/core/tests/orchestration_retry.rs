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

/// Drives the executor by hand with irregular episode times: each TimerCreated's `fire_at` is
/// the time of the episode that saw the failure (its OrchestratorStarted) plus the backoff, so
/// it is the same on every replay, whatever the wall clock says when replaying.
#[test]
fn timer_fire_at_values_come_from_the_episode_timestamps() {
    use perdure_core::replay::{OrchestrationExecutor, Outcome};
    use perdure_core::testing::events;
    use perdure_core::{InstanceId, OrchestratorAction, Timestamp};

    let policy = RetryPolicy::new(4, Duration::from_secs(1))
        .with_backoff_coefficient(3.0)
        .with_max_retry_interval(Duration::from_secs(5));
    let registry = registry(policy);
    let id = InstanceId::new("r").unwrap();
    let fail = |seq: i64, n: u32| {
        events::task_failed(
            seq,
            FailureDetails::new("Transient", format!("attempt {n} failed")),
        )
    };
    let inputs = [
        (
            Timestamp(1_000),
            vec![events::execution_started("Retry", &())],
        ),
        (Timestamp(7_777), vec![fail(0, 1)]),
        (
            Timestamp(9_000),
            vec![events::timer_fired(1, Timestamp(8_777))],
        ),
        (Timestamp(20_000), vec![fail(2, 2)]),
        (
            Timestamp(23_500),
            vec![events::timer_fired(3, Timestamp(23_000))],
        ),
        (Timestamp(30_000), vec![fail(4, 3)]),
        (
            Timestamp(35_001),
            vec![events::timer_fired(5, Timestamp(35_000))],
        ),
        (Timestamp(40_000), vec![fail(6, 4)]),
    ];
    let mut ex = OrchestrationExecutor::new(registry.clone(), id.clone());
    let episodes: Vec<_> = inputs
        .iter()
        .map(|(now, evs)| ex.execute(*now, evs.clone()))
        .collect();
    let actions: Vec<String> = episodes
        .iter()
        .flat_map(|ep| ep.actions.iter())
        .map(|a| match a {
            OrchestratorAction::ScheduleTask { id, name, .. } => format!("{id}: task {name}"),
            OrchestratorAction::CreateTimer { id, fire_at } => {
                format!("{id}: timer at {}", fire_at.as_millis())
            }
            other => format!("{other:?}"),
        })
        .collect();
    // Delays 1s, 3s, then 9s capped at 5s, each from the failure's episode time.
    assert_eq!(
        actions,
        [
            "0: task Flaky",
            "1: timer at 8777",
            "2: task Flaky",
            "3: timer at 23000",
            "4: task Flaky",
            "5: timer at 35000",
            "6: task Flaky",
        ]
    );
    let fire_ats: Vec<u64> = episodes
        .iter()
        .flat_map(|ep| ep.history.iter())
        .filter_map(|e| match e.kind {
            EventKind::TimerCreated { fire_at } => Some(fire_at.as_millis()),
            _ => None,
        })
        .collect();
    assert_eq!(fire_ats, [8_777, 23_000, 35_000]);
    match &episodes.last().unwrap().outcome {
        Outcome::Failed { failure } => {
            assert_eq!(failure.inner.as_ref().unwrap().message, "attempt 4 failed")
        }
        other => panic!("{other:?}"),
    }
    // Replaying any prefix and running the rest produces the same timers: the replayed
    // episodes take their time from history, not from when the replay runs.
    for k in 0..episodes.len() {
        let prefix: Vec<_> = episodes[..k]
            .iter()
            .flat_map(|e| e.history.clone())
            .collect();
        let mut ex = OrchestrationExecutor::load(registry.clone(), id.clone(), &prefix).unwrap();
        assert!(ex.non_determinism().is_none());
        for (i, (now, evs)) in inputs.iter().enumerate().skip(k) {
            let ep = ex.execute(*now, evs.clone());
            assert_eq!(ep.history, episodes[i].history, "prefix {k}, episode {i}");
            assert_eq!(ep.actions, episodes[i].actions);
        }
    }
}

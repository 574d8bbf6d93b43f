//! Rewind of failed executions, including retried activities.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::rewind::{RewindError, rewind_history};
use perdure_core::testing::{OrchestrationTester, events};
use perdure_core::{
    EventKind, FailureDetails, InstanceId, OrchestratorAction, Registry, RetryPolicy, Timestamp,
};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("Steps", |ctx: OrchestrationContext, ()| async move {
        let a: i32 = ctx.call_activity("A", ()).await?;
        let b: i32 = ctx
            .call_activity_with_retry("B", RetryPolicy::new(3, Duration::from_secs(1)), a)
            .await?;
        let c: i32 = ctx.call_activity("C", b).await?;
        Ok::<_, TaskError>(c)
    });
    Arc::new(r)
}

#[test]
fn rewind_resumes_after_the_last_successful_step() {
    let registry = registry();
    let mut t = OrchestrationTester::new(registry.clone());
    let b_calls = Arc::new(AtomicU32::new(0));
    let calls = b_calls.clone();
    t.mock_activity("A", |()| Ok(1))
        .mock_activity("B", move |_: i32| {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<i32, _>(FailureDetails::new("Down", "service down"))
        })
        .mock_activity("C", |b: i32| Ok(b + 100));
    let run = t.run("Steps", &());
    assert!(run.output::<i32>().is_err());
    assert_eq!(b_calls.load(Ordering::SeqCst), 3);

    let plan = rewind_history(&run.history).unwrap();
    // The last attempt of B (sequence 5: A=0, B=1, timer=2, B=3, timer=4, B=5) is re-issued.
    match &plan.actions[..] {
        [OrchestratorAction::ScheduleTask { id: 5, name, .. }] => assert_eq!(name, "B"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        !plan
            .history
            .iter()
            .any(|e| matches!(e.kind, EventKind::ExecutionCompleted { .. }))
    );
    // Earlier attempts' failures are kept.
    let kept_failures = plan
        .history
        .iter()
        .filter(|e| e.name() == "TaskFailed")
        .count();
    assert_eq!(kept_failures, 2);

    let mut ex =
        OrchestrationExecutor::load(registry, InstanceId::new("test").unwrap(), &plan.history)
            .unwrap();
    assert!(ex.non_determinism().is_none());
    let ep = ex.execute(Timestamp(u64::MAX / 2), vec![events::task_completed(5, &7)]);
    assert!(
        matches!(&ep.actions[..], [OrchestratorAction::ScheduleTask { name, .. }] if name == "C")
    );
    let ep = ex.execute(
        Timestamp(u64::MAX / 2 + 1),
        vec![events::task_completed(6, &107)],
    );
    assert!(matches!(ep.outcome, Outcome::Completed { .. }));
}

#[test]
fn only_failed_executions_rewind() {
    let mut t = OrchestrationTester::new(registry());
    t.mock_activity("A", |()| Ok(1))
        .mock_activity("B", |x: i32| Ok(x))
        .mock_activity("C", |x: i32| Ok(x));
    let run = t.run("Steps", &());
    assert_eq!(rewind_history(&run.history), Err(RewindError::NotFailed));
}

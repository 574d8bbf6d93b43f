//! A panic in user code never unwinds into the caller: wherever it happens (creating the
//! orchestrator, a later episode, a destructor, while replaying, in an activity or an entity
//! operation) it becomes `FailureDetails { error_type: "PanicError", message }`.

use std::sync::Arc;

use perdure_core::entity::{EntityContext, OperationRequest, OperationResult};
use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::registry::execute_activity;
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{HistoryBuilder, NonDeterminismReport, events, replay_history};
use perdure_core::{
    ActivityContext, EntityId, FailureDetails, InstanceId, Registry, Timestamp,
    execute_entity_batch,
};

/// Panics when dropped.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("bomb in a destructor");
    }
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("PanicsCreating", |_ctx: OrchestrationContext, ()| {
        if true {
            panic!("panicked creating the future");
        }
        async move { Ok::<_, TaskError>(()) }
    });
    r.add_orchestration("PanicsLater", |ctx: OrchestrationContext, ()| async move {
        let n: i32 = ctx.call_activity("A", ()).await?;
        if n > 0 {
            panic!("panicked in episode two with {n}");
        }
        Ok::<_, TaskError>(n)
    });
    r.add_orchestration(
        "PanicsDropped",
        |ctx: OrchestrationContext, ()| async move {
            let _bomb = Bomb;
            let n: i32 = ctx.wait_for_external_event("never").await?;
            std::mem::forget(_bomb);
            Ok::<_, TaskError>(n)
        },
    );
    r.add_orchestration("PanicsAny", |_ctx: OrchestrationContext, ()| async move {
        if true {
            std::panic::panic_any(42u8);
        }
        Ok::<_, TaskError>(())
    });
    r.add_activity("Explodes", |_ctx: ActivityContext, s: String| async move {
        if !s.is_empty() {
            panic!("activity got {s}");
        }
        Ok::<_, String>(s)
    });
    r.add_entity(
        "Fragile",
        |ctx: &mut EntityContext<i32>| -> Result<i32, FailureDetails> {
            *ctx.state_or_default() += 1;
            if ctx.operation_name() == "break" {
                panic!("entity broke at {}", ctx.state().copied().unwrap_or(0));
            }
            Ok(*ctx.state_or_default())
        },
    );
    Arc::new(r)
}

fn id() -> InstanceId {
    InstanceId::new("p").unwrap()
}

fn panic_failure(outcome: &Outcome) -> &FailureDetails {
    match outcome {
        Outcome::Failed { failure } if failure.error_type == "PanicError" => failure,
        other => panic!("expected a PanicError failure, got {other:?}"),
    }
}

#[test]
fn panics_creating_running_and_dropping_fail_the_instance() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("PanicsCreating", &())],
    );
    assert_eq!(
        panic_failure(&ep.outcome).message,
        "panicked creating the future"
    );

    let mut ex = OrchestrationExecutor::new(registry(), id());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("PanicsLater", &())],
    );
    assert_eq!(ep.outcome, Outcome::Running);
    let ep = ex.execute(Timestamp(1), vec![events::task_completed(0, &5)]);
    assert_eq!(
        panic_failure(&ep.outcome).message,
        "panicked in episode two with 5"
    );
    assert!(ep.history.iter().any(|e| e.name() == "ExecutionCompleted"));

    // Terminating drops the orchestrator; its destructor panics; the instance still ends
    // as terminated.
    let mut ex = OrchestrationExecutor::new(registry(), id());
    ex.execute(
        Timestamp(0),
        vec![events::execution_started("PanicsDropped", &())],
    );
    let ep = ex.execute(Timestamp(1), vec![events::terminated(None)]);
    assert!(
        matches!(ep.outcome, Outcome::Terminated { .. }),
        "{:?}",
        ep.outcome
    );

    let mut ex = OrchestrationExecutor::new(registry(), id());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("PanicsAny", &())],
    );
    assert_eq!(
        panic_failure(&ep.outcome).message,
        "panic with a non-string payload"
    );
}

#[test]
fn a_panic_while_replaying_is_reported_not_unwound() {
    // History: the activity returned 5 and the orchestration went on waiting (recorded by
    // code that did not panic). The current code panics on 5 during replay.
    let h = HistoryBuilder::new(Timestamp(0))
        .started("PanicsLater", &())
        .task_scheduled(0, "A")
        .episode(Timestamp(1))
        .task_completed(0, &5)
        .task_scheduled(1, "B")
        .end()
        .build();
    let ex = OrchestrationExecutor::load(registry(), id(), &h).unwrap();
    let nd = ex.non_determinism().expect("mismatch");
    assert!(nd.actual.contains("PanicError"), "{nd}");
    assert!(nd.actual.contains("panicked in episode two with 5"), "{nd}");
    match replay_history(registry(), id(), &h) {
        Err(NonDeterminismReport::NonDeterminism(found)) => assert_eq!(&found, nd),
        other => panic!("{other:?}"),
    }
}

#[test]
fn panics_in_activities_and_entity_operations_become_failures() {
    let r = registry();
    let activity = r.activity("Explodes").unwrap();
    let ctx = ActivityContext::new(id(), "Explodes", 3, 1);
    let failure = futures::executor::block_on(execute_activity(
        &activity,
        ctx,
        perdure_core::Payload::json(&"boom").ok(),
    ))
    .unwrap_err();
    assert_eq!(
        (failure.error_type.as_str(), failure.message.as_str()),
        ("PanicError", "activity got boom")
    );

    let entity = EntityId::new("Fragile", "f").unwrap();
    let ops = vec![
        OperationRequest::new("inc", None),
        OperationRequest::new("break", None),
        OperationRequest::new("inc", None),
    ];
    let out = execute_entity_batch(&r, &entity, None, ops).unwrap();
    match &out.results[1] {
        OperationResult::Failed(f) => {
            assert_eq!(
                (f.error_type.as_str(), f.message.as_str()),
                ("PanicError", "entity broke at 2")
            )
        }
        other => panic!("{other:?}"),
    }
    // The panicking operation's increment was rolled back.
    assert_eq!(out.state, perdure_core::Payload::json(&2).ok());
}

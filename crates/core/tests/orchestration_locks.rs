//! Entity calls, signals and critical sections from orchestrations, with each rule violation.

use std::sync::Arc;

use perdure_core::orchestration::{LockError, OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events};
use perdure_core::{
    EntityContext, EntityId, FailureDetails, InstanceId, OrchestratorAction, Registry, Timestamp,
};

fn e(key: &str) -> EntityId {
    EntityId::new("Account", key).unwrap()
}

fn lock_err(r: Result<impl Sized, TaskError>) -> Result<String, String> {
    match r {
        Err(TaskError::Lock(l)) => Ok(format!("{l:?}")),
        Err(other) => Err(format!("other error {other}")),
        Ok(_) => Err("no error".into()),
    }
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_entity(
        "Account",
        |ctx: &mut EntityContext<i64>| -> Result<i64, FailureDetails> {
            match ctx.operation_name() {
                "add" => {
                    let n: i64 = ctx.input()?;
                    *ctx.state_or_default() += n;
                    Ok(*ctx.state_or_default())
                }
                "get" => Ok(ctx.state().copied().unwrap_or(0)),
                _ => Err(ctx.unknown_operation()),
            }
        },
    );
    r.add_orchestration(
        "Transfer",
        |ctx: OrchestrationContext, amount: i64| async move {
            let (a, b) = (e("a"), e("b"));
            let section = ctx.lock_entities(&[b.clone(), a.clone()]).await?;
            assert!(ctx.is_in_critical_section());
            let balance: i64 = ctx.call_entity(&a, "get", ()).await?;
            if balance < amount {
                return Ok::<_, TaskError>(false);
            }
            let _: i64 = ctx.call_entity(&a, "add", -amount).await?;
            let _: i64 = ctx.call_entity(&b, "add", amount).await?;
            section.release();
            assert!(!ctx.is_in_critical_section());
            Ok(true)
        },
    );
    r.add_orchestration("Violations", |ctx: OrchestrationContext, ()| async move {
        let section = ctx.lock_entities(&[e("a")]).await?;
        let mut found = Vec::new();
        found.push(lock_err(ctx.lock_entities(&[e("b")]).await));
        found.push(lock_err(ctx.call_entity::<i64>(&e("b"), "get", ()).await));
        found.push(lock_err(
            ctx.call_sub_orchestration::<()>("Child", ()).await,
        ));
        found.push(lock_err(ctx.signal_entity(&e("a"), "add", 1)));
        let first = ctx.call_entity::<i64>(&e("a"), "get", ());
        found.push(lock_err(ctx.call_entity::<i64>(&e("a"), "get", ()).await));
        let _ = first.await?;
        // Signalling an entity that is not locked is allowed.
        ctx.signal_entity(&e("c"), "add", 1)?;
        drop(section);
        found.push(lock_err(ctx.lock_entities(&[]).await));
        Ok::<_, TaskError>(found)
    });
    r.add_orchestration(
        "HoldsToTheEnd",
        |ctx: OrchestrationContext, ()| async move {
            let section = ctx.lock_entities(&[e("a"), e("b")]).await?;
            std::mem::forget(section);
            Ok::<_, TaskError>(())
        },
    );
    Arc::new(r)
}

#[test]
fn transfer_in_a_critical_section() {
    let mut t = OrchestrationTester::new(registry());
    t.with_entity_state(e("a"), &100);
    let run = t.run("Transfer", &30);
    assert!(run.output::<bool>().unwrap());
    let kinds: Vec<String> = run
        .actions
        .iter()
        .map(|a| match a {
            OrchestratorAction::LockEntities { entities, .. } => format!("lock {}", entities.len()),
            OrchestratorAction::CallEntity {
                entity, operation, ..
            } => format!("call {}.{operation}", entity.key()),
            OrchestratorAction::UnlockEntity { entity, .. } => format!("unlock {}", entity.key()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "lock 2",
            "call a.get",
            "call a.add",
            "call b.add",
            "unlock a",
            "unlock b"
        ]
    );
    let state = |k: &str| {
        run.entity_states
            .get(&e(k))
            .unwrap()
            .decode::<i64>()
            .unwrap()
    };
    assert_eq!((state("a"), state("b")), (70, 30));
}

#[test]
fn each_rule_violation_is_a_typed_error() {
    let run = OrchestrationTester::new(registry()).run("Violations", &());
    let found: Vec<Result<String, String>> = run.output().unwrap();
    let expected = [
        format!("{:?}", LockError::NestedCriticalSection),
        format!("{:?}", LockError::NotLocked { entity: e("b") }),
        format!("{:?}", LockError::SubOrchestrationInCriticalSection),
        format!("{:?}", LockError::SignalToLockedEntity { entity: e("a") }),
        format!("{:?}", LockError::ParallelCall { entity: e("a") }),
        format!("{:?}", LockError::EmptyLockSet),
    ];
    let got: Vec<String> = found.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(got, expected);
}

#[test]
fn locks_are_released_when_the_orchestration_completes() {
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("i").unwrap());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("HoldsToTheEnd", &())],
    );
    let cs = match &ep.actions[..] {
        [
            OrchestratorAction::LockEntities {
                critical_section_id,
                ..
            },
        ] => critical_section_id.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let ep = ex.execute(Timestamp(1), vec![events::lock_granted(&cs)]);
    assert!(matches!(ep.outcome, Outcome::Completed { .. }));
    let unlocked: Vec<&str> = ep
        .actions
        .iter()
        .filter_map(|a| match a {
            OrchestratorAction::UnlockEntity { entity, .. } => Some(entity.key()),
            _ => None,
        })
        .collect();
    assert_eq!(unlocked, ["a", "b"]);
}

#[test]
fn critical_sections_replay_without_mismatch() {
    let registry = registry();
    let mut t = OrchestrationTester::new(registry.clone());
    t.with_entity_state(e("a"), &100);
    let run = t.run("Transfer", &30);
    perdure_core::testing::replay_history(registry, InstanceId::new("test").unwrap(), &run.history)
        .expect("replays");
}

fn lock_then(
    registry: Arc<Registry>,
    orchestration: &str,
) -> (OrchestrationExecutor, perdure_core::replay::Episode) {
    let mut ex = OrchestrationExecutor::new(registry, InstanceId::new("i").unwrap());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started(orchestration, &())],
    );
    let cs = match &ep.actions[..] {
        [
            OrchestratorAction::LockEntities {
                critical_section_id,
                ..
            },
        ] => critical_section_id.clone(),
        other => panic!("unexpected {other:?}"),
    };
    let ep = ex.execute(Timestamp(1), vec![events::lock_granted(&cs)]);
    (ex, ep)
}

fn unlocked(actions: &[OrchestratorAction]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            OrchestratorAction::UnlockEntity { entity, .. } => Some(entity.key()),
            _ => None,
        })
        .collect()
}

fn ending_registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("PanicsInside", |ctx: OrchestrationContext, ()| async move {
        let _section = ctx.lock_entities(&[e("a"), e("b")]).await?;
        if ctx.is_in_critical_section() {
            panic!("broke inside the section");
        }
        Ok::<_, TaskError>(())
    });
    r.add_orchestration("FailsInside", |ctx: OrchestrationContext, ()| async move {
        let _section = ctx.lock_entities(&[e("a")]).await?;
        Err::<(), _>(FailureDetails::new("Nope", "gave up inside the section"))
    });
    r.add_orchestration("WaitsInside", |ctx: OrchestrationContext, ()| async move {
        let _section = ctx.lock_entities(&[e("a")]).await?;
        let v: i32 = ctx.wait_for_external_event("go").await?;
        Ok::<_, TaskError>(v)
    });
    Arc::new(r)
}

#[test]
fn locks_are_released_when_the_orchestration_panics_or_fails() {
    let (_, ep) = lock_then(ending_registry(), "PanicsInside");
    match &ep.outcome {
        Outcome::Failed { failure } => {
            assert_eq!(failure.error_type, "PanicError");
            assert!(
                failure.message.contains("broke inside the section"),
                "{failure}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(unlocked(&ep.actions), ["a", "b"]);
    let (_, ep) = lock_then(ending_registry(), "FailsInside");
    assert!(matches!(ep.outcome, Outcome::Failed { .. }));
    assert_eq!(unlocked(&ep.actions), ["a"]);
}

#[test]
fn locks_are_released_when_the_orchestration_is_terminated() {
    let (mut ex, ep) = lock_then(ending_registry(), "WaitsInside");
    assert_eq!(ep.outcome, Outcome::Running);
    let ep = ex.execute(Timestamp(2), vec![events::terminated(Some("stop"))]);
    assert!(matches!(ep.outcome, Outcome::Terminated { .. }));
    assert_eq!(unlocked(&ep.actions), ["a"]);
    // The recorded unlock replays: termination releases the same locks on replay.
    let mut ex2 = OrchestrationExecutor::new(ending_registry(), InstanceId::new("i").unwrap());
    let mut history = Vec::new();
    let ep0 = ex2.execute(
        Timestamp(0),
        vec![events::execution_started("WaitsInside", &())],
    );
    let cs = match &ep0.actions[..] {
        [
            OrchestratorAction::LockEntities {
                critical_section_id,
                ..
            },
        ] => critical_section_id.clone(),
        other => panic!("unexpected {other:?}"),
    };
    history.extend(ep0.history);
    history.extend(
        ex2.execute(Timestamp(1), vec![events::lock_granted(&cs)])
            .history,
    );
    history.extend(
        ex2.execute(Timestamp(2), vec![events::terminated(None)])
            .history,
    );
    assert!(history.iter().any(|e| e.name() == "EntityUnlockSent"));
    let loaded =
        OrchestrationExecutor::load(ending_registry(), InstanceId::new("i").unwrap(), &history)
            .unwrap();
    assert!(loaded.non_determinism().is_none());
    assert!(matches!(loaded.outcome(), Outcome::Terminated { .. }));
}

#[test]
fn locks_are_released_when_the_orchestration_fails_non_deterministically() {
    // Recorded: lock a, granted, then waiting for "go". Changed code calls an activity after
    // taking the lock: the instance fails and must not keep the entity locked.
    let (_, first) = {
        let mut ex = OrchestrationExecutor::new(ending_registry(), InstanceId::new("i").unwrap());
        let ep0 = ex.execute(
            Timestamp(0),
            vec![events::execution_started("WaitsInside", &())],
        );
        let cs = match &ep0.actions[..] {
            [
                OrchestratorAction::LockEntities {
                    critical_section_id,
                    ..
                },
            ] => critical_section_id.clone(),
            other => panic!("unexpected {other:?}"),
        };
        let ep1 = ex.execute(Timestamp(1), vec![events::lock_granted(&cs)]);
        let ep2 = ex.execute(Timestamp(2), vec![events::event_raised("go", &1)]);
        (ex, [ep0, ep1, ep2])
    };
    // Keep the first two episodes: the instance holds the lock and waits for "go".
    let history: Vec<_> = first[..2].iter().flat_map(|e| e.history.clone()).collect();
    let mut changed = Registry::new();
    changed.add_orchestration("WaitsInside", |ctx: OrchestrationContext, ()| async move {
        let _section = ctx.lock_entities(&[e("a")]).await?;
        let v: i32 = ctx.call_entity(&e("a"), "get", ()).await?;
        Ok::<_, TaskError>(v)
    });
    let mut ex =
        OrchestrationExecutor::load(Arc::new(changed), InstanceId::new("i").unwrap(), &history)
            .unwrap();
    assert!(ex.non_determinism().is_some());
    let ep = ex.execute(Timestamp(3), vec![events::event_raised("go", &1)]);
    match &ep.outcome {
        Outcome::Failed { failure } => assert_eq!(failure.error_type, "NonDeterminismError"),
        other => panic!("{other:?}"),
    }
    assert_eq!(unlocked(&ep.actions), ["a"]);
    // The failed execution's history, with its unlock, is still a readable history.
    let mut full = history.clone();
    full.extend(ep.history);
    assert!(full.iter().any(|e| e.name() == "EntityUnlockSent"));
    let mut changed_again = Registry::new();
    changed_again.add_orchestration("WaitsInside", |ctx: OrchestrationContext, ()| async move {
        let _section = ctx.lock_entities(&[e("a")]).await?;
        let v: i32 = ctx.call_entity(&e("a"), "get", ()).await?;
        Ok::<_, TaskError>(v)
    });
    let loaded = OrchestrationExecutor::load(
        Arc::new(changed_again),
        InstanceId::new("i").unwrap(),
        &full,
    )
    .unwrap();
    assert!(matches!(loaded.outcome(), Outcome::Failed { .. }));
}

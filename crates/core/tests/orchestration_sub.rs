//! Sub-orchestrations: results, failure propagation, ids, retries.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, SubOrchestrationOptions, TaskError};
use perdure_core::replay::OrchestrationExecutor;
use perdure_core::testing::{OrchestrationTester, events};
use perdure_core::{
    FailureDetails, InstanceId, OrchestratorAction, Registry, RetryPolicy, Timestamp,
};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("Parent", |ctx: OrchestrationContext, x: i32| async move {
        let y: i32 = ctx.call_sub_orchestration("Child", x).await?;
        Ok::<_, TaskError>(y)
    });
    r.add_orchestration("Child", |ctx: OrchestrationContext, x: i32| async move {
        let parent = ctx.parent().map(|p| p.instance_id.to_string());
        if parent.is_none() {
            return Err(FailureDetails::new("NoParent", "child without parent"));
        }
        let y: i32 = ctx.call_activity("Half", x).await?;
        Ok::<_, FailureDetails>(y)
    });
    r.add_activity("Half", |_ctx, x: i32| async move {
        if x % 2 == 1 {
            Err(FailureDetails::new("OddNumber", format!("{x} is odd")))
        } else {
            Ok(x / 2)
        }
    });
    r.add_orchestration("WithId", |ctx: OrchestrationContext, ()| async move {
        let opts = SubOrchestrationOptions {
            instance_id: Some(InstanceId::new("child-7").unwrap()),
            version: Some("2".into()),
            retry: None,
        };
        let y: i32 = ctx
            .call_sub_orchestration_with_options("Child", 4, opts)
            .await?;
        Ok::<_, TaskError>(y)
    });
    r.add_orchestration("Retrying", |ctx: OrchestrationContext, ()| async move {
        let opts = SubOrchestrationOptions {
            retry: Some(RetryPolicy::new(3, Duration::from_secs(1))),
            ..Default::default()
        };
        let y: i32 = ctx
            .call_sub_orchestration_with_options("Shaky", (), opts)
            .await?;
        Ok::<_, TaskError>(y)
    });
    Arc::new(r)
}

#[test]
fn child_result_returns_to_parent() {
    let run = OrchestrationTester::new(registry()).run("Parent", &8);
    assert_eq!(run.output::<i32>().unwrap(), 4);
}

#[test]
fn child_failure_propagates_with_its_chain() {
    let run = OrchestrationTester::new(registry()).run("Parent", &3);
    let failure = run.output::<i32>().unwrap_err();
    assert_eq!(failure.error_type, "TaskFailedError");
    assert!(failure.message.contains("sub-orchestration 'Child'"));
    let child = failure.inner.as_deref().unwrap();
    assert_eq!(child.error_type, "TaskFailedError");
    assert!(child.message.contains("activity 'Half'"));
    assert!(failure.is_caused_by("OddNumber"));
    assert_eq!(
        child.inner.as_deref(),
        Some(&FailureDetails::new("OddNumber", "3 is odd"))
    );
}

#[test]
fn a_recorded_child_failure_reaches_the_parent_unchanged() {
    let chain = FailureDetails::new("ChildFailed", "child gave up").with_inner(
        FailureDetails::new("Timeout", "db").with_inner(FailureDetails {
            details: Some("stack".into()),
            ..FailureDetails::new("Io", "reset")
        }),
    );
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("p3").unwrap());
    ex.execute(Timestamp(0), vec![events::execution_started("Parent", &2)]);
    let ep = ex.execute(
        Timestamp(1),
        vec![events::sub_orchestration_failed(0, chain.clone())],
    );
    let perdure_core::Outcome::Failed { failure } = ep.outcome else {
        panic!("{:?}", ep.outcome)
    };
    assert_eq!(failure.error_type, "TaskFailedError");
    assert!(
        failure
            .message
            .contains("sub-orchestration 'Child' (task 0)"),
        "{failure}"
    );
    assert_eq!(failure.inner.as_deref(), Some(&chain));
}

#[test]
fn default_and_explicit_child_ids() {
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("p1").unwrap());
    let ep = ex.execute(Timestamp(0), vec![events::execution_started("Parent", &2)]);
    match &ep.actions[..] {
        [
            OrchestratorAction::CreateSubOrchestration {
                instance_id, name, ..
            },
        ] => {
            assert_eq!(instance_id.as_str(), "p1:0000");
            assert_eq!(name, "Child");
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("p2").unwrap());
    let ep = ex.execute(Timestamp(0), vec![events::execution_started("WithId", &())]);
    match &ep.actions[..] {
        [
            OrchestratorAction::CreateSubOrchestration {
                instance_id,
                version,
                ..
            },
        ] => {
            assert_eq!(instance_id.as_str(), "child-7");
            assert_eq!(version.as_deref(), Some("2"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn sub_orchestration_retry_reuses_the_child_id() {
    let mut t = OrchestrationTester::new(registry());
    let mut n = 0;
    t.mock_sub_orchestration("Shaky", move |()| {
        n += 1;
        if n < 3 {
            Err(FailureDetails::new("Flaky", "no"))
        } else {
            Ok(n)
        }
    });
    let run = t.run("Retrying", &());
    assert_eq!(run.output::<i32>().unwrap(), 3);
    let ids: Vec<String> = run
        .actions
        .iter()
        .filter_map(|a| match a {
            OrchestratorAction::CreateSubOrchestration { instance_id, .. } => {
                Some(instance_id.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec!["test:0000"; 3]);
}

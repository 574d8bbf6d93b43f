//! The remaining context operations: ids, time, guids, randomness, replay-safe logging,
//! custom status, events to other instances, versions; and combinations of them.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{LogLevel, OrchestrationContext, TaskError, when_all};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events};
use perdure_core::{
    EventKind, ExecutionId, HistoryEvent, InstanceId, OrchestratorAction, ParentInstance, Payload,
    Registry, Timestamp,
};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("Ids", |ctx: OrchestrationContext, ()| async move {
        let g1 = ctx.new_guid();
        let r1 = ctx.random_u64();
        ctx.log_info(format!("first guid {g1}"));
        let _: i32 = ctx.call_activity("A", ()).await?;
        let g2 = ctx.new_guid();
        let f = ctx.random_f64();
        ctx.log(LogLevel::Debug, "after A");
        ctx.set_custom_status(&serde_json::json!({ "step": 2 }));
        Ok::<_, TaskError>((g1, g2, r1, f, ctx.is_replaying()))
    });
    r.add_orchestration("Info", |ctx: OrchestrationContext, ()| async move {
        Ok::<_, String>((
            ctx.instance_id().to_string(),
            ctx.name().to_string(),
            ctx.version().map(str::to_string),
            ctx.parent().map(|p| p.instance_id.to_string()),
            ctx.execution_id().to_string(),
        ))
    });
    r.add_orchestration_version("Info", "2", |ctx: OrchestrationContext, ()| async move {
        Ok::<_, String>((
            "v2".to_string(),
            ctx.name().to_string(),
            ctx.version().map(str::to_string),
            None::<String>,
            String::new(),
        ))
    });
    r.add_orchestration(
        "Notify",
        |ctx: OrchestrationContext, target: String| async move {
            let target = InstanceId::new(target).map_err(|e| e.to_string())?;
            ctx.send_event(&target, "Ping", 42)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        },
    );
    r.add_orchestration("Combined", |ctx: OrchestrationContext, n: u32| async move {
        // Fan out, wait for an event, sleep, then a sub-orchestration, with status updates.
        let results = when_all((0..n).map(|i| ctx.call_activity::<u32>("Double", i))).await;
        let sum: u32 = results
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .sum();
        ctx.set_custom_status(&"waiting");
        let bonus: u32 = ctx.wait_for_external_event("Bonus").await?;
        ctx.create_timer_after(Duration::from_secs(60)).await;
        let tripled: u32 = ctx.call_sub_orchestration("Triple", sum + bonus).await?;
        ctx.set_custom_status(&"done");
        Ok::<_, TaskError>(tripled)
    });
    r.add_orchestration("Triple", |_ctx: OrchestrationContext, x: u32| async move {
        Ok::<_, String>(x * 3)
    });
    r.add_activity(
        "Double",
        |_ctx, x: u32| async move { Ok::<_, String>(x * 2) },
    );
    Arc::new(r)
}

type IdsOut = (String, String, u64, f64, bool);

#[test]
fn guids_and_randomness_are_deterministic_and_logs_are_replay_safe() {
    let registry = registry();
    let id = InstanceId::new("ids-1").unwrap();
    let mut ex = OrchestrationExecutor::new(registry.clone(), id.clone());
    let ep1 = ex.execute(Timestamp(100), vec![events::execution_started("Ids", &())]);
    assert_eq!(ep1.logs.len(), 1);
    assert!(ep1.logs[0].message.starts_with("first guid "));
    let ep2 = ex.execute(Timestamp(200), vec![events::task_completed(0, &1)]);
    // Only the line logged in this episode; the first is not logged again.
    assert_eq!(ep2.logs.len(), 1);
    assert_eq!(ep2.logs[0].level, LogLevel::Debug);
    assert_eq!(
        ep2.custom_status,
        Payload::json(&serde_json::json!({ "step": 2 })).ok()
    );
    let Outcome::Completed { output } = &ep2.outcome else {
        panic!("{:?}", ep2.outcome)
    };
    let (g1, g2, r1, f, replaying): IdsOut = output.as_ref().unwrap().decode().unwrap();
    assert_ne!(g1, g2);
    assert_eq!(g1.len(), 36);
    assert_eq!(&g1[14..15], "5", "version 5 UUID");
    assert!((0.0..1.0).contains(&f));
    assert!(!replaying);

    // Replaying the first episode then running the second gives the same values and logs
    // only the new line.
    let mut again =
        OrchestrationExecutor::load(registry.clone(), id.clone(), &ep1.history).unwrap();
    let ep2b = again.execute(Timestamp(200), vec![events::task_completed(0, &1)]);
    assert_eq!(ep2b.outcome, ep2.outcome);
    assert_eq!(ep2b.logs, ep2.logs);

    // Another instance gets other values.
    let mut other = OrchestrationExecutor::new(registry, InstanceId::new("ids-2").unwrap());
    other.execute(Timestamp(100), vec![events::execution_started("Ids", &())]);
    let Outcome::Completed { output } = other
        .execute(Timestamp(200), vec![events::task_completed(0, &1)])
        .outcome
    else {
        panic!()
    };
    let (o1, _, or1, _, _): IdsOut = output.unwrap().decode().unwrap();
    assert_ne!((o1, or1), (g1, r1));
}

#[test]
fn instance_information_and_versions() {
    let registry = registry();
    let mut ex = OrchestrationExecutor::new(registry.clone(), InstanceId::new("child").unwrap());
    let started = HistoryEvent::new(
        Timestamp(1),
        EventKind::ExecutionStarted {
            name: "Info".into(),
            version: None,
            input: None,
            execution_id: ExecutionId("exec-9".into()),
            parent: Some(ParentInstance {
                name: "P".into(),
                instance_id: InstanceId::new("parent").unwrap(),
                execution_id: ExecutionId("x".into()),
                task_scheduled_id: 3,
            }),
            scheduled_start: None,
        },
    );
    let Outcome::Completed { output } = ex.execute(Timestamp(1), vec![started]).outcome else {
        panic!()
    };
    let info: (String, String, Option<String>, Option<String>, String) =
        output.unwrap().decode().unwrap();
    assert_eq!(
        info,
        (
            "child".into(),
            "Info".into(),
            None,
            Some("parent".into()),
            "exec-9".into()
        )
    );

    let mut ex = OrchestrationExecutor::new(registry, InstanceId::new("v").unwrap());
    let mut start = events::execution_started("Info", &());
    if let EventKind::ExecutionStarted { version, .. } = &mut start.kind {
        *version = Some("2".into());
    }
    let Outcome::Completed { output } = ex.execute(Timestamp(1), vec![start]).outcome else {
        panic!()
    };
    let info: (String, String, Option<String>, Option<String>, String) =
        output.unwrap().decode().unwrap();
    assert_eq!((info.0.as_str(), info.2.as_deref()), ("v2", Some("2")));
}

#[test]
fn send_event_is_an_action() {
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("n").unwrap());
    let ep = ex.execute(
        Timestamp(1),
        vec![events::execution_started("Notify", &"other")],
    );
    assert!(
        matches!(&ep.actions[..], [OrchestratorAction::SendEvent { instance_id, name, .. }] if instance_id.as_str() == "other" && name == "Ping")
    );
    assert!(
        ep.history
            .iter()
            .any(|e| e.name() == "EventSent" && e.event_id == 0)
    );
    assert!(matches!(ep.outcome, Outcome::Completed { .. }));
}

#[test]
fn combined_operations() {
    let mut t = OrchestrationTester::new(registry());
    t.raise_event_after(Duration::from_secs(5), "Bonus", &10u32);
    let run = t.run("Combined", &4u32);
    // (0+2+4+6 + 10) * 3
    assert_eq!(run.output::<u32>().unwrap(), 66);
    assert_eq!(run.custom_status::<String>().as_deref(), Some("done"));
    assert_eq!(
        run.end_time.as_millis() - t.start_time().as_millis(),
        65_000
    );
}

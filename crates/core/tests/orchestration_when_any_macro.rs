//! `when_any!`: a typed race of 2..=N durable tasks whose value is the winning branch's
//! expression; history order decides, branch order breaks ties, losers are dropped.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events, replay_history};
use perdure_core::{InstanceId, OrchestratorAction, Registry, Timestamp, when_any};

const HOUR: Duration = Duration::from_secs(3600);

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_activity(
        "Work",
        |_ctx, x: i32| async move { Ok::<_, String>(x * 10) },
    );
    r.add_orchestration("Two", |ctx: OrchestrationContext, ()| async move {
        let out = when_any! {
            n = ctx.call_activity::<i32>("Work", 4) => format!("work {}", n?),
            () = ctx.create_timer_after(HOUR) => "timed out".to_string(),
        };
        Ok::<_, TaskError>(out)
    });
    r.add_orchestration("Three", |ctx: OrchestrationContext, ()| async move {
        let out = when_any! {
            approved = ctx.wait_for_external_event::<bool>("Approval") => {
                if approved? { "approved" } else { "rejected" }
            }
            reason = ctx.wait_for_external_event::<String>("Cancel") => {
                ctx.log_info(format!("cancelled: {}", reason?));
                "cancelled"
            }
            () = ctx.create_timer_after(HOUR) => "timed out"
        };
        // The losing waits left their queues: a later "Approval" comes to this wait.
        let later = when_any! {
            approved = ctx.wait_for_external_event::<bool>("Approval") => Some(approved?),
            () = ctx.create_timer_after(2 * HOUR) => None,
        };
        Ok::<_, TaskError>((out, later))
    });
    r.add_orchestration("Six", |ctx: OrchestrationContext, ()| async move {
        // Six branches of five output types; timers of 6h..3h, an event, a 2h timer.
        let out: (usize, String) = when_any! {
            () = ctx.create_timer_after(6 * HOUR) => (0, "6h".into()),
            () = ctx.create_timer_after(5 * HOUR) => (1, "5h".into()),
            n = ctx.call_sub_orchestration::<i32>("Slow", ()) => (2, format!("sub {}", n?)),
            (a, b) = async {
                ctx.create_timer_after(3 * HOUR).await;
                (1u8, 'x')
            } => (3, format!("{a}{b}")),
            s = ctx.wait_for_external_event::<String>("Go") => (4, s?),
            () = ctx.create_timer_after(2 * HOUR) => (5, "2h".into()),
        };
        Ok::<_, TaskError>(out)
    });
    r.add_orchestration("Slow", |ctx: OrchestrationContext, ()| async move {
        ctx.create_timer_after(4 * HOUR).await;
        Ok::<_, TaskError>(4)
    });
    r.add_orchestration("Ties", |ctx: OrchestrationContext, ()| async move {
        // Both events arrive (Y first) before the race starts: branch order breaks the tie.
        ctx.create_timer_after(HOUR).await;
        let out = when_any! {
            x = ctx.wait_for_external_event::<i32>("X") => ("X", x?),
            y = ctx.wait_for_external_event::<i32>("Y") => ("Y", y?),
        };
        Ok::<_, TaskError>(out)
    });
    r.add_orchestration("KeepsLoser", |ctx: OrchestrationContext, ()| async move {
        let mut work = ctx.call_activity::<i32>("Work", 1);
        let early = when_any! {
            n = &mut work => Some(n?),
            () = ctx.create_timer_after(Duration::ZERO) => None,
        };
        let n = match early {
            Some(n) => n,
            None => work.await?,
        };
        Ok::<_, TaskError>(n)
    });
    r.add_orchestration("Returns", |ctx: OrchestrationContext, ()| async move {
        let n = when_any! {
            n = ctx.call_activity::<i32>("Work", 1) => n?,
            () = ctx.create_timer_after(HOUR) => return Ok("early return".to_string()),
        };
        Ok::<_, TaskError>(format!("got {n}"))
    });
    Arc::new(r)
}

fn id() -> InstanceId {
    InstanceId::new("test").unwrap()
}

fn run(
    name: &str,
    events: &[(Duration, &str, serde_json::Value)],
) -> perdure_core::testing::TestRun {
    let mut tester = OrchestrationTester::new(registry());
    for (after, event, data) in events {
        tester.raise_event_after(*after, event, data);
    }
    let run = tester.run(name, &());
    replay_history(registry(), id(), &run.history).expect("replays");
    run
}

#[test]
fn two_branches() {
    assert_eq!(run("Two", &[]).output::<String>().unwrap(), "work 40");
}

#[test]
fn two_branches_first_in_history_order_wins() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    let first = ex.execute(Timestamp(0), vec![events::execution_started("Two", &())]);
    assert!(matches!(
        &first.actions[..],
        [
            OrchestratorAction::ScheduleTask { id: 0, .. },
            OrchestratorAction::CreateTimer { id: 1, .. }
        ]
    ));
    // The timer's event comes first in history, the activity's right after, in one episode.
    let ep = ex.execute(
        Timestamp(3_600_000),
        vec![
            events::timer_fired(1, Timestamp(3_600_000)),
            events::task_completed(0, &40),
        ],
    );
    assert!(
        matches!(&ep.outcome, Outcome::Completed { output: Some(p) } if p.decode::<String>().unwrap() == "timed out")
    );
    assert!(ep.logs.is_empty(), "{:?}", ep.logs);
}

#[test]
fn three_branches() {
    let s = |v: &str| serde_json::Value::from(v);
    let approved = run(
        "Three",
        &[(Duration::from_secs(60), "Approval", true.into())],
    );
    assert_eq!(
        approved.output::<(String, Option<bool>)>().unwrap(),
        ("approved".into(), None)
    );
    let cancelled = run(
        "Three",
        &[
            (Duration::from_secs(60), "Cancel", s("changed my mind")),
            (Duration::from_secs(120), "Approval", false.into()),
        ],
    );
    assert_eq!(
        cancelled.output::<(String, Option<bool>)>().unwrap(),
        ("cancelled".into(), Some(false))
    );
    assert!(
        cancelled
            .logs
            .iter()
            .any(|l| l.message == "cancelled: changed my mind")
    );
    let timed_out = run("Three", &[(2 * HOUR, "Approval", true.into())]);
    assert_eq!(
        timed_out.output::<(String, Option<bool>)>().unwrap(),
        ("timed out".into(), Some(true))
    );
}

#[test]
fn six_branches() {
    // The tester runs a sub-orchestration to its end at once, so branch 2 wins here; the
    // executor test below makes each branch win in turn.
    let run = run("Six", &[(HOUR, "Go", "now".into())]);
    assert_eq!(
        run.output::<(usize, String)>().unwrap(),
        (2, "sub 4".to_string())
    );
}

#[test]
fn six_branches_each_can_win() {
    // Drive the executor directly: deliver one branch's completion first.
    let actions = {
        let mut ex = OrchestrationExecutor::new(registry(), id());
        ex.execute(Timestamp(0), vec![events::execution_started("Six", &())])
            .actions
    };
    // Timers 0 and 1, sub-orchestration 2, timer 3 (the last branch's); the async block
    // schedules its timer (4) only when the race first polls it, after every branch's task
    // was evaluated. The event wait takes no sequence number.
    assert!(
        matches!(
            &actions[..],
            [
                OrchestratorAction::CreateTimer { id: 0, .. },
                OrchestratorAction::CreateTimer { id: 1, .. },
                OrchestratorAction::CreateSubOrchestration { id: 2, .. },
                OrchestratorAction::CreateTimer {
                    id: 3,
                    fire_at: Timestamp(7_200_000)
                },
                OrchestratorAction::CreateTimer {
                    id: 4,
                    fire_at: Timestamp(10_800_000)
                },
            ]
        ),
        "{actions:?}"
    );
    let t = Timestamp(1);
    let wins: [(perdure_core::HistoryEvent, (usize, &str)); 6] = [
        (events::timer_fired(0, t), (0, "6h")),
        (events::timer_fired(1, t), (1, "5h")),
        (events::sub_orchestration_completed(2, &4), (2, "sub 4")),
        (events::timer_fired(4, t), (3, "1x")),
        (events::event_raised("Go", &"go"), (4, "go")),
        (events::timer_fired(3, t), (5, "2h")),
    ];
    for (event, expected) in wins {
        let mut ex = OrchestrationExecutor::new(registry(), id());
        ex.execute(Timestamp(0), vec![events::execution_started("Six", &())]);
        let ep = ex.execute(t, vec![event]);
        match &ep.outcome {
            Outcome::Completed { output: Some(p) } => {
                let (i, s): (usize, String) = p.decode().unwrap();
                assert_eq!((i, s.as_str()), expected);
            }
            other => panic!("{expected:?}: {other:?}"),
        }
    }
}

#[test]
fn ties_go_to_the_first_branch() {
    let run = run(
        "Ties",
        &[
            (Duration::from_secs(60), "Y", 2.into()),
            (Duration::from_secs(120), "X", 1.into()),
        ],
    );
    assert_eq!(run.output::<(String, i32)>().unwrap(), ("X".into(), 1));
}

#[test]
fn a_loser_passed_by_reference_is_kept() {
    let run = run("KeepsLoser", &[]);
    assert_eq!(run.output::<i32>().unwrap(), 10);
}

#[test]
fn a_branch_may_return_from_the_orchestrator() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    ex.execute(
        Timestamp(0),
        vec![events::execution_started("Returns", &())],
    );
    let ep = ex.execute(
        Timestamp(3_600_000),
        vec![events::timer_fired(1, Timestamp(3_600_000))],
    );
    assert!(
        matches!(&ep.outcome, Outcome::Completed { output: Some(p) } if p.decode::<String>().unwrap() == "early return")
    );
    assert_eq!(run("Returns", &[]).output::<String>().unwrap(), "got 10");
}

//! An orchestrator that awaits something no durable task can bring (a runtime timer, a
//! channel, `std::future::pending`) fails with `NonDurableAwaitError` as soon as nothing can
//! wake it, and that failure replays; legitimate patterns never trip the check.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use futures::{FutureExt, join, select_biased};
use perdure_core::orchestration::{
    Either, OrchestrationContext, TaskError, TaskFuture, when_all, when_any, when_any2,
};
use perdure_core::replay::{NON_DURABLE_AWAIT_ERROR, OrchestrationExecutor, Outcome};
use perdure_core::testing::{
    HistoryBuilder, NonDeterminismReport, OrchestrationTester, events, replay_history,
};
use perdure_core::{
    EntityContext, EntityId, FailureDetails, HistoryEvent, InstanceId, OrchestratorAction,
    Registry, RetryPolicy, Timestamp,
};

/// Polls its task once, keeps it, and never polls it again nor wakes anyone: the kind of
/// hand-written future the engine cannot drive.
struct PollsOnce<F> {
    task: F,
    polled: bool,
}

impl<F: Future + Unpin> Future for PollsOnce<F> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.polled {
            self.polled = true;
            let _ = Pin::new(&mut self.task).poll(cx);
        }
        Poll::Pending
    }
}

/// A future woken from outside the engine (as a runtime timer or a network call would be).
#[derive(Clone, Default)]
struct Outside(Arc<Mutex<Option<Waker>>>);

impl Outside {
    fn wake(&self) {
        if let Some(w) = self.0.lock().unwrap().take() {
            w.wake();
        }
    }
}

impl Future for Outside {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *self.0.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Wakes itself once before finishing (like `yield_now`): woken by the code, not the engine.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn account(key: &str) -> EntityId {
    EntityId::new("Account", key).unwrap()
}

fn registry(outside: Outside) -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_activity("Work", |_ctx, x: i32| async move { Ok::<_, String>(x + 1) });
    r.add_entity(
        "Account",
        |ctx: &mut EntityContext<i64>| -> Result<i64, FailureDetails> {
            let n: i64 = ctx.input().unwrap_or(0);
            *ctx.state_or_default() += n;
            Ok(*ctx.state_or_default())
        },
    );

    // Broken: each of these waits for something no durable task brings.
    r.add_orchestration("Pending", |_ctx: OrchestrationContext, ()| async move {
        std::future::pending::<()>().await;
        Ok::<_, TaskError>(())
    });
    r.add_orchestration(
        "ScheduledThenPending",
        |ctx: OrchestrationContext, ()| async move {
            let work = ctx.call_activity::<i32>("Work", 1);
            std::future::pending::<()>().await;
            work.await
        },
    );
    r.add_orchestration("PollsOnce", |ctx: OrchestrationContext, ()| async move {
        PollsOnce {
            task: ctx.call_activity::<i32>("Work", 1),
            polled: false,
        }
        .await;
        Ok::<_, TaskError>(())
    });
    r.add_orchestration(
        "JoinedWithPending",
        |ctx: OrchestrationContext, ()| async move {
            let (work, ()) = join!(
                ctx.call_activity::<i32>("Work", 1),
                std::future::pending::<()>()
            );
            work
        },
    );
    r.add_orchestration(
        "PendingInCriticalSection",
        |ctx: OrchestrationContext, ()| async move {
            let _section = ctx.lock_entities(&[account("a")]).await?;
            let _: i64 = ctx.call_entity(&account("a"), "add", 1).await?;
            std::future::pending::<()>().await;
            Ok::<_, TaskError>(())
        },
    );
    r.add_orchestration("AwaitedTwice", |ctx: OrchestrationContext, ()| async move {
        let mut work = ctx.call_activity::<i32>("Work", 1);
        let first = (&mut work).await?;
        // A completed task never completes again.
        let second = (&mut work).await?;
        Ok::<_, TaskError>(first + second)
    });
    r.add_orchestration("Outside", move |ctx: OrchestrationContext, ()| {
        let outside = outside.clone();
        async move {
            let (work, ()) = join!(ctx.call_activity::<i32>("Work", 1), outside);
            work
        }
    });

    // Legitimate: none of these may trip the check.
    r.add_orchestration("FanOut", |ctx: OrchestrationContext, n: i32| async move {
        let all = when_all((0..n).map(|i| ctx.call_activity::<i32>("Work", i))).await;
        all.into_iter().sum::<Result<i32, TaskError>>()
    });
    r.add_orchestration("WhenAnyTimer", |ctx: OrchestrationContext, ()| async move {
        let work: TaskFuture<i32> =
            Box::pin(ctx.call_activity::<i32>("Work", 1).map(|r| r.unwrap_or(-1)));
        let timer = ctx.create_timer_after(Duration::from_secs(60));
        let timeout: TaskFuture<i32> = Box::pin(async move {
            timer.await;
            0
        });
        let (winner, value) = when_any(vec![timeout, work]).await;
        Ok::<_, TaskError>(winner as i32 * 100 + value)
    });
    r.add_orchestration("LateEvent", |ctx: OrchestrationContext, ()| async move {
        let approval = ctx.wait_for_external_event::<bool>("Approval");
        let timeout = ctx.create_timer_after(Duration::from_secs(7 * 24 * 3600));
        Ok::<_, TaskError>(match when_any2(approval, timeout).await {
            Either::Left(approved) => approved?,
            Either::Right(()) => false,
        })
    });
    r.add_orchestration("NeverEvent", |ctx: OrchestrationContext, ()| async move {
        ctx.wait_for_external_event::<bool>("Never").await
    });
    r.add_orchestration("Entities", |ctx: OrchestrationContext, ()| async move {
        ctx.signal_entity(&account("s"), "add", 5)?;
        let a: i64 = ctx.call_entity(&account("a"), "add", 2).await?;
        let section = ctx.lock_entities(&[account("b"), account("c")]).await?;
        let (b, c) = join!(
            ctx.call_entity::<i64>(&account("b"), "add", 3),
            ctx.call_entity::<i64>(&account("c"), "add", 4),
        );
        section.release();
        Ok::<_, TaskError>(a + b? + c?)
    });
    r.add_orchestration("Parent", |ctx: OrchestrationContext, ()| async move {
        let x: i32 = ctx.call_sub_orchestration("FanOut", 3).await?;
        let y: i32 = ctx.call_sub_orchestration("FanOut", 2).await?;
        Ok::<_, TaskError>(x + y)
    });
    r.add_orchestration("Eternal", |ctx: OrchestrationContext, n: u32| async move {
        ctx.create_timer_after(Duration::from_secs(60)).await;
        if n < 3 {
            ctx.continue_as_new(n + 1, false);
        }
        Ok::<_, TaskError>(n)
    });
    r.add_orchestration("Retry", |ctx: OrchestrationContext, ()| async move {
        let policy = RetryPolicy::new(5, Duration::from_secs(1));
        ctx.call_activity_with_retry::<u32>("Flaky", policy, ())
            .await
    });
    r.add_orchestration(
        "PolledOnceAndDropped",
        |ctx: OrchestrationContext, ()| async move {
            let mut timer = ctx.create_timer_after(Duration::from_secs(3600));
            assert!(futures::poll!(&mut timer).is_pending());
            drop(timer);
            ctx.call_activity::<i32>("Work", 1).await
        },
    );
    r.add_orchestration("KeptLoser", |ctx: OrchestrationContext, ()| async move {
        let mut timer = ctx.create_timer_after(Duration::from_secs(60));
        let work = ctx.call_activity::<i32>("Work", 1);
        let first = match when_any2(&mut timer, work).await {
            Either::Left(()) => -1,
            Either::Right(r) => r?,
        };
        timer.await;
        Ok::<_, TaskError>(first)
    });
    r.add_orchestration("Channel", |ctx: OrchestrationContext, ()| async move {
        // A channel between two branches of the orchestrator is woken by its own code.
        let (tx, rx) = oneshot::channel::<i32>();
        let ((), received) = join!(
            async {
                let v = ctx.call_activity::<i32>("Work", 1).await.unwrap_or(-1);
                let _ = tx.send(v);
            },
            rx,
        );
        Ok::<_, TaskError>(received.unwrap_or(-2))
    });
    r.add_orchestration("Nested", |ctx: OrchestrationContext, ()| async move {
        let inner = async {
            let a = async { ctx.call_activity::<i32>("Work", 1).await };
            let b = async {
                ctx.create_timer_after(Duration::from_secs(5)).await;
                ctx.call_activity::<i32>("Work", 2).await
            };
            let (a, b) = join!(a, b);
            Ok::<_, TaskError>(a? + b?)
        };
        YieldOnce(false).await;
        let mut late = ctx.wait_for_external_event::<i32>("Late").fuse();
        let mut inner = Box::pin(inner).fuse();
        let out = select_biased! {
            r = inner => r?,
            r = late => r?,
        };
        Ok::<_, TaskError>(out)
    });
    r.add_orchestration("Long", |ctx: OrchestrationContext, n: i32| async move {
        let mut x = 0;
        for _ in 0..n {
            x = ctx.call_activity::<i32>("Work", x).await?;
        }
        Ok::<_, TaskError>(x)
    });
    Arc::new(r)
}

fn id() -> InstanceId {
    InstanceId::new("test").unwrap()
}

fn non_durable_failure(outcome: &Outcome) -> &FailureDetails {
    match outcome {
        Outcome::Failed { failure } if failure.error_type == NON_DURABLE_AWAIT_ERROR => failure,
        other => panic!("expected a NonDurableAwaitError, got {other:?}"),
    }
}

/// The recorded history replays without mismatch, to the same failure.
fn replays_to_the_same_end(registry: &Arc<Registry>, history: &[HistoryEvent], end: &Outcome) {
    replay_history(registry.clone(), id(), history).expect("replays");
    let loaded = OrchestrationExecutor::load(registry.clone(), id(), history).unwrap();
    assert!(loaded.non_determinism().is_none());
    assert_eq!(&loaded.outcome(), end);
}

#[test]
fn awaiting_a_future_that_never_completes_fails_at_once() {
    let registry = registry(Outside::default());
    let run = OrchestrationTester::new(registry.clone()).run("Pending", &());
    let failure = non_durable_failure(&run.outcome);
    assert!(failure.message.contains("not a durable task"), "{failure}");
    assert!(
        failure.message.contains("belongs in an activity"),
        "{failure}"
    );
    assert_eq!(run.episodes, 1);
    replays_to_the_same_end(&registry, &run.history, &run.outcome);
}

#[test]
fn a_scheduled_task_that_is_not_awaited_is_named() {
    let registry = registry(Outside::default());
    let mut ex = OrchestrationExecutor::new(registry.clone(), id());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("ScheduledThenPending", &())],
    );
    // The work was scheduled in the failing episode: its action is still recorded.
    assert!(matches!(
        &ep.actions[..],
        [OrchestratorAction::ScheduleTask { id: 0, .. }]
    ));
    let failure = non_durable_failure(&ep.outcome);
    assert!(
        failure.message.contains("activity 'Work' (task 0)"),
        "{failure}"
    );
    replays_to_the_same_end(&registry, &ep.history, &ep.outcome);
}

#[test]
fn a_hand_written_future_that_never_wakes_fails_when_the_work_is_done() {
    let registry = registry(Outside::default());
    let mut ex = OrchestrationExecutor::new(registry.clone(), id());
    let first = ex.execute(
        Timestamp(0),
        vec![events::execution_started("PollsOnce", &())],
    );
    // While the activity runs, its completion can wake the code.
    assert_eq!(first.outcome, Outcome::Running);
    let second = ex.execute(Timestamp(1), vec![events::task_completed(0, &2)]);
    let failure = non_durable_failure(&second.outcome);
    assert!(
        failure
            .message
            .contains("activity 'Work' (task 0), completed"),
        "{failure}"
    );
    // Reloaded from the first episode, the instance fails the same way.
    let mut reloaded = OrchestrationExecutor::load(registry.clone(), id(), &first.history).unwrap();
    let again = reloaded.execute(Timestamp(1), vec![events::task_completed(0, &2)]);
    assert_eq!(again, second);
    let history: Vec<HistoryEvent> = [first.history, second.history].concat();
    replays_to_the_same_end(&registry, &history, &second.outcome);
}

#[test]
fn joining_a_durable_task_with_a_non_durable_future_fails_when_the_task_completes() {
    let registry = registry(Outside::default());
    let run = OrchestrationTester::new(registry.clone()).run("JoinedWithPending", &());
    non_durable_failure(&run.outcome);
    assert_eq!(run.episodes, 2);
    replays_to_the_same_end(&registry, &run.history, &run.outcome);
}

#[test]
fn awaiting_a_completed_task_again_fails() {
    let registry = registry(Outside::default());
    let run = OrchestrationTester::new(registry.clone()).run("AwaitedTwice", &());
    non_durable_failure(&run.outcome);
    replays_to_the_same_end(&registry, &run.history, &run.outcome);
}

#[test]
fn batching_does_not_change_the_failure() {
    let registry = registry(Outside::default());
    // The activity's completion in the same episode as the start.
    let mut ex = OrchestrationExecutor::new(registry.clone(), id());
    let one = ex.execute(
        Timestamp(0),
        vec![
            events::execution_started("PollsOnce", &()),
            events::task_completed(0, &2),
        ],
    );
    non_durable_failure(&one.outcome);
    assert!(matches!(
        &one.actions[..],
        [OrchestratorAction::ScheduleTask { id: 0, .. }]
    ));
    replays_to_the_same_end(&registry, &one.history, &one.outcome);
}

#[test]
fn locks_are_released_and_the_failure_replays() {
    let registry = registry(Outside::default());
    let run = OrchestrationTester::new(registry.clone()).run("PendingInCriticalSection", &());
    non_durable_failure(&run.outcome);
    let unlocked: Vec<&str> = run
        .actions
        .iter()
        .filter_map(|a| match a {
            OrchestratorAction::UnlockEntity { entity, .. } => Some(entity.key()),
            _ => None,
        })
        .collect();
    assert_eq!(unlocked, ["a"]);
    replays_to_the_same_end(&registry, &run.history, &run.outcome);
}

#[test]
fn a_history_recorded_stuck_but_running_is_a_mismatch() {
    // Instances left Running, waiting for nothing, by an engine without the check: replaying
    // them, the code fails where history says it kept running.
    let registry = registry(Outside::default());
    let at_start = HistoryBuilder::new(Timestamp(0))
        .started("Pending", &())
        .end()
        .build();
    let after_actions = HistoryBuilder::new(Timestamp(0))
        .started("ScheduledThenPending", &())
        .task_scheduled(0, "Work")
        .episode(Timestamp(1))
        .task_completed(0, &2)
        .end()
        .build();
    for history in [at_start, after_actions] {
        match replay_history(registry.clone(), id(), &history) {
            Err(NonDeterminismReport::NonDeterminism(nd)) => {
                assert_eq!(nd.expected, "the orchestration still running");
                assert!(nd.actual.contains(NON_DURABLE_AWAIT_ERROR), "{nd}");
            }
            other => panic!("{other:?}"),
        }
        let mut ex = OrchestrationExecutor::load(registry.clone(), id(), &history).unwrap();
        assert!(ex.non_determinism().is_some());
        match ex.execute(Timestamp(2), Vec::new()).outcome {
            Outcome::Failed { failure } => {
                assert_eq!(failure.error_type, "NonDeterminismError");
                assert!(
                    failure.message.contains(NON_DURABLE_AWAIT_ERROR),
                    "{failure}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_wake_from_outside_the_engine_is_a_warning_then_a_failure() {
    let outside = Outside::default();
    let registry = registry(outside.clone());
    let mut ex = OrchestrationExecutor::new(registry.clone(), id());
    let first = ex.execute(
        Timestamp(0),
        vec![events::execution_started("Outside", &())],
    );
    assert_eq!(first.outcome, Outcome::Running);
    // The future's "timer" fires between episodes: the engine cannot know when, so this is
    // only a warning (a failure would not replay).
    outside.wake();
    let second = ex.execute(Timestamp(1), Vec::new());
    assert_eq!(second.outcome, Outcome::Running);
    assert!(
        second
            .logs
            .iter()
            .any(|l| l.message.contains("woken between episodes")),
        "{:?}",
        second.logs
    );
    // Once the activity is done only the outside future is left: nothing durable can wake it.
    let third = ex.execute(Timestamp(2), vec![events::task_completed(0, &2)]);
    non_durable_failure(&third.outcome);
    let history: Vec<HistoryEvent> = [first.history, second.history, third.history].concat();
    replays_to_the_same_end(&registry, &history, &third.outcome);
}

#[test]
fn legitimate_patterns_do_not_trip_the_check() {
    let registry = registry(Outside::default());
    let cases: [(&str, serde_json::Value, serde_json::Value); 13] = [
        ("FanOut", 5.into(), 15.into()),
        ("WhenAnyTimer", ().into(), 102.into()),
        ("LateEvent", ().into(), true.into()),
        ("Entities", ().into(), 9.into()),
        ("Parent", ().into(), 9.into()),
        ("Eternal", 0.into(), 3.into()),
        ("Retry", ().into(), 3.into()),
        ("PolledOnceAndDropped", ().into(), 2.into()),
        ("KeptLoser", ().into(), 2.into()),
        ("Channel", ().into(), 2.into()),
        ("Nested", ().into(), 5.into()),
        ("Long", 300.into(), 300.into()),
        ("FanOut", 0.into(), 0.into()),
    ];
    for (name, input, output) in cases {
        let mut tester = OrchestrationTester::new(registry.clone());
        tester.raise_event_after(Duration::from_secs(6 * 24 * 3600), "Approval", &true);
        let mut attempts = 0u32;
        tester.mock_activity("Flaky", move |()| {
            attempts += 1;
            if attempts < 3 {
                Err(FailureDetails::new("NotYet", "not yet"))
            } else {
                Ok(attempts)
            }
        });
        let run = tester.run(name, &input);
        assert_eq!(
            run.output::<serde_json::Value>()
                .unwrap_or_else(|f| panic!("{name}: {f}")),
            output,
            "{name}"
        );
        replay_history(registry.clone(), id(), &run.history)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Waiting for an event that never comes is waiting for a durable task: still Running.
    let run = OrchestrationTester::new(registry).run("NeverEvent", &());
    assert_eq!(run.outcome, Outcome::Running);
}

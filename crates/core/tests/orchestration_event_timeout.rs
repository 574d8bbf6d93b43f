//! `wait_for_external_event_with_timeout` / `wait_for_external_event_or`: the event before the
//! timeout, the timeout first (`TaskError::Timeout`), the timer that fires into nothing after
//! the event won, and the replay of each history.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, TIMEOUT_ERROR, TaskError, TaskKind};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events, replay_history};
use perdure_core::{EventKind, HistoryEvent, InstanceId, OrchestratorAction, Registry, Timestamp};

const HOUR: Duration = Duration::from_secs(3600);

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    // Waits an hour for the approval; after a timeout, waits once more without one.
    r.add_orchestration("Approval", |ctx: OrchestrationContext, ()| async move {
        let first = ctx
            .wait_for_external_event_with_timeout::<String>("Approval", HOUR)
            .await;
        let answer = match first {
            Ok(answer) => answer,
            Err(TaskError::Timeout {
                kind: TaskKind::ExternalEvent,
                name,
                timeout,
            }) => {
                assert_eq!((name.as_str(), timeout), ("Approval", HOUR));
                let late: String = ctx.wait_for_external_event("Approval").await?;
                format!("late {late}")
            }
            Err(e) => return Err(e),
        };
        // Outlives the first wait's timer, which then fires into nothing.
        ctx.create_timer_after(2 * HOUR).await;
        Ok::<_, TaskError>(answer)
    });
    r.add_orchestration("Propagates", |ctx: OrchestrationContext, ()| async move {
        ctx.wait_for_external_event_with_timeout::<i32>("Never", HOUR)
            .await
    });
    r.add_orchestration("Default", |ctx: OrchestrationContext, ()| async move {
        ctx.wait_for_external_event_or("Votes", HOUR, 0u32).await
    });
    Arc::new(r)
}

fn id() -> InstanceId {
    InstanceId::new("test").unwrap()
}

fn timers_fired(history: &[HistoryEvent]) -> Vec<i64> {
    history
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TimerFired { timer_id, .. } => Some(timer_id),
            _ => None,
        })
        .collect()
}

#[test]
fn the_event_before_the_timeout_wins_and_the_timer_fires_into_nothing() {
    let mut tester = OrchestrationTester::new(registry());
    tester.raise_event_after(Duration::from_secs(60), "Approval", &"yes");
    let run = tester.run("Approval", &());
    assert_eq!(run.output::<String>().unwrap(), "yes");
    // Timer 0 (the timeout) fired after the event won; timer 1 ended the orchestration.
    assert_eq!(timers_fired(&run.history), [0, 1]);
    assert!(run.logs.is_empty(), "{:?}", run.logs);
    replay_history(registry(), id(), &run.history).expect("replays");
}

#[test]
fn the_timeout_first_is_a_timeout_error_and_a_late_event_waits_for_the_next_wait() {
    let mut tester = OrchestrationTester::new(registry());
    tester.raise_event_after(2 * HOUR, "Approval", &"yes");
    let run = tester.run("Approval", &());
    assert_eq!(run.output::<String>().unwrap(), "late yes");
    replay_history(registry(), id(), &run.history).expect("replays");
}

#[test]
fn a_propagated_timeout_fails_the_orchestration_with_timeout_error() {
    let run = OrchestrationTester::new(registry()).run("Propagates", &());
    let failure = run.output::<i32>().unwrap_err();
    assert_eq!(failure.error_type, TIMEOUT_ERROR);
    assert!(
        failure.message.contains("external event 'Never' timed out"),
        "{failure}"
    );
    replay_history(registry(), id(), &run.history).expect("replays");
}

#[test]
fn the_default_replaces_a_timeout() {
    let run = OrchestrationTester::new(registry()).run("Default", &());
    assert_eq!(run.output::<u32>().unwrap(), 0);
    let mut tester = OrchestrationTester::new(registry());
    tester.raise_event_after(Duration::from_secs(1), "Votes", &7);
    assert_eq!(tester.run("Default", &()).output::<u32>().unwrap(), 7);
}

/// Runs the episodes one by one, then checks that every prefix of the history, reloaded,
/// continues exactly as the live executor did.
fn run_and_reload(inputs: &[(u64, Vec<HistoryEvent>)]) -> Vec<perdure_core::Episode> {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    let episodes: Vec<_> = inputs
        .iter()
        .map(|(t, evs)| ex.execute(Timestamp(*t), evs.clone()))
        .collect();
    for k in 0..=episodes.len() {
        let prefix: Vec<HistoryEvent> = episodes[..k]
            .iter()
            .flat_map(|e| e.history.clone())
            .collect();
        let mut ex = OrchestrationExecutor::load(registry(), id(), &prefix).unwrap();
        assert!(ex.non_determinism().is_none());
        for (i, (t, evs)) in inputs.iter().enumerate().skip(k) {
            assert_eq!(
                ex.execute(Timestamp(*t), evs.clone()),
                episodes[i],
                "prefix {k}"
            );
        }
    }
    episodes
}

#[test]
fn both_histories_replay_episode_by_episode() {
    let hour = 3_600_000;
    let start = || vec![events::execution_started("Approval", &())];
    // The event first: the timeout timer (0) fires later, into nothing.
    let won = run_and_reload(&[
        (0, start()),
        (1_000, vec![events::event_raised("Approval", &"yes")]),
        (hour, vec![events::timer_fired(0, Timestamp(hour))]),
        (
            1_000 + 2 * hour,
            vec![events::timer_fired(1, Timestamp(1_000 + 2 * hour))],
        ),
    ]);
    assert!(matches!(
        &won[0].actions[..],
        [OrchestratorAction::CreateTimer { id: 0, fire_at }] if *fire_at == Timestamp(hour)
    ));
    assert_eq!(won[2].outcome, Outcome::Running);
    assert!(won[2].actions.is_empty() && won[2].logs.is_empty());
    assert!(
        matches!(&won[3].outcome, Outcome::Completed { output: Some(p) } if p.decode::<String>().unwrap() == "yes")
    );

    // The timeout first: the event that comes later goes to the second wait.
    let lost = run_and_reload(&[
        (0, start()),
        (hour, vec![events::timer_fired(0, Timestamp(hour))]),
        (hour + 5, vec![events::event_raised("Approval", &"yes")]),
        (
            3 * hour + 5,
            vec![events::timer_fired(1, Timestamp(3 * hour + 5))],
        ),
    ]);
    assert_eq!(lost[1].outcome, Outcome::Running);
    assert!(lost[1].actions.is_empty());
    assert!(
        matches!(&lost[3].outcome, Outcome::Completed { output: Some(p) } if p.decode::<String>().unwrap() == "late yes")
    );
}

#[test]
fn in_one_episode_history_order_decides() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    ex.execute(
        Timestamp(0),
        vec![events::execution_started("Approval", &())],
    );
    let ep = ex.execute(
        Timestamp(3_600_000),
        vec![
            events::timer_fired(0, Timestamp(3_600_000)),
            events::event_raised("Approval", &"yes"),
        ],
    );
    // The timer came first in history: a timeout; the event goes to the second wait, and the
    // orchestrator goes on to its last timer.
    assert!(matches!(
        &ep.actions[..],
        [OrchestratorAction::CreateTimer { id: 1, .. }]
    ));
    let done = ex.execute(
        Timestamp(3 * 3_600_000),
        vec![events::timer_fired(1, Timestamp(3 * 3_600_000))],
    );
    assert!(
        matches!(&done.outcome, Outcome::Completed { output: Some(p) } if p.decode::<String>().unwrap() == "late yes")
    );
}

#[test]
fn awaited_late_the_deadline_is_decided_in_history_order() {
    let mut r = Registry::new();
    r.add_orchestration("Late", |ctx: OrchestrationContext, ()| async move {
        let wait = ctx.wait_for_external_event_with_timeout::<String>("Approval", HOUR);
        ctx.call_activity::<()>("Slow", ()).await?;
        let first = wait.await;
        // The event that came after the deadline waits for the next wait of that name.
        let next = ctx.wait_for_external_event::<String>("Approval").await?;
        Ok::<_, TaskError>((first.map_err(|e| e.is_timeout()), next))
    });
    let r = Arc::new(r);
    let timer_then_event = vec![
        events::timer_fired(0, Timestamp(3_600_000)),
        events::event_raised("Approval", &"yes"),
        events::task_completed(1, &()),
    ];
    let mut ex = OrchestrationExecutor::new(r.clone(), id());
    let first = ex.execute(Timestamp(0), vec![events::execution_started("Late", &())]);
    assert_eq!(first.actions.len(), 2);
    let ep = ex.execute(Timestamp(2 * 3_600_000), timer_then_event);
    // The timer fired first in history: a timeout, though the wait was polled only after
    // both had arrived (Durable Functions attaches the race when the wait is made).
    assert!(
        matches!(&ep.outcome, Outcome::Completed { output: Some(p) }
            if p.decode::<(Result<String, bool>, String)>().unwrap() == (Err(true), "yes".to_string())),
        "{:?}",
        ep.outcome
    );
    // Replayed from its history, the instance decides the same way.
    let history: Vec<_> = first.history.iter().chain(&ep.history).cloned().collect();
    let reloaded = OrchestrationExecutor::load(r.clone(), id(), &history).unwrap();
    assert!(reloaded.non_determinism().is_none());

    // And the other order: the event first wins, the late timer fires into nothing.
    let mut ex = OrchestrationExecutor::new(r, id());
    ex.execute(Timestamp(0), vec![events::execution_started("Late", &())]);
    let ep = ex.execute(
        Timestamp(2 * 3_600_000),
        vec![
            events::event_raised("Approval", &"yes"),
            events::timer_fired(0, Timestamp(3_600_000)),
            events::task_completed(1, &()),
            events::event_raised("Approval", &"second"),
        ],
    );
    assert!(
        matches!(&ep.outcome, Outcome::Completed { output: Some(p) }
            if p.decode::<(Result<String, bool>, String)>().unwrap() == (Ok("yes".to_string()), "second".to_string())),
        "{:?}",
        ep.outcome
    );
}

#[test]
fn only_a_timer_fired_ends_a_wait_at_its_deadline() {
    let mut r = Registry::new();
    r.add_orchestration("Wait", |ctx: OrchestrationContext, ()| async move {
        ctx.wait_for_external_event_with_timeout::<String>("E", HOUR)
            .await
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    ex.execute(Timestamp(0), vec![events::execution_started("Wait", &())]);
    // A misdirected TaskCompleted for the deadline timer's sequence number is ignored.
    let ep = ex.execute(Timestamp(1_000), vec![events::task_completed(0, &"dup")]);
    assert_eq!(ep.outcome, Outcome::Running, "{:?}", ep.outcome);
    let ep = ex.execute(Timestamp(2_000), vec![events::event_raised("E", &"real")]);
    assert!(
        matches!(&ep.outcome, Outcome::Completed { output: Some(p) } if p.decode::<String>().unwrap() == "real"),
        "{:?}",
        ep.outcome
    );
}

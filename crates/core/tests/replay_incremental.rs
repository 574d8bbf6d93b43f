//! The executor keeps the live orchestrator between episodes: an active instance is never
//! replayed from scratch, and an episode polls the orchestrator once per event that woke it,
//! however long the history already is.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::events;
use perdure_core::{InstanceId, Registry, Timestamp};

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_mut().poll(cx)
    }
}

struct Counters {
    starts: Arc<AtomicUsize>,
    polls: Arc<AtomicUsize>,
}

fn registry() -> (Arc<Registry>, Counters) {
    let starts = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let (s, p) = (starts.clone(), polls.clone());
    let mut r = Registry::new();
    r.add_orchestration("Chain", move |ctx: OrchestrationContext, n: i64| {
        s.fetch_add(1, Ordering::SeqCst);
        CountPolls {
            inner: Box::pin(async move {
                let mut acc = 0i64;
                for i in 0..n {
                    acc += ctx.call_activity::<i64>("Step", i).await?;
                }
                Ok::<_, TaskError>(acc)
            }),
            polls: p.clone(),
        }
    });
    (Arc::new(r), Counters { starts, polls })
}

#[test]
fn a_live_instance_is_not_replayed_and_each_episode_polls_once() {
    let (registry, counters) = registry();
    let id = InstanceId::new("inc").unwrap();
    let mut ex = OrchestrationExecutor::new(registry.clone(), id.clone());
    let mut history = Vec::new();
    let ep = ex.execute(Timestamp(0), vec![events::execution_started("Chain", &200)]);
    history.extend(ep.history);
    for i in 0..200i64 {
        let polls_before = counters.polls.load(Ordering::SeqCst);
        let ep = ex.execute(Timestamp(1 + i as u64), vec![events::task_completed(i, &i)]);
        // One new event, one poll: the cost does not grow with the history.
        assert_eq!(counters.polls.load(Ordering::SeqCst) - polls_before, 1);
        assert!(
            ep.history.len() <= 5,
            "episode {i}: {} events",
            ep.history.len()
        );
        history.extend(ep.history);
    }
    let total: i64 = (0..200).sum();
    assert_eq!(
        ex.outcome(),
        Outcome::Completed {
            output: Some(perdure_core::Payload::json(&total).unwrap())
        }
    );
    // The orchestrator function ran once for the whole life of the instance.
    assert_eq!(counters.starts.load(Ordering::SeqCst), 1);
    assert_eq!(counters.polls.load(Ordering::SeqCst), 201);

    // Reactivation (after passivation or a crash) replays the history once, then is live.
    let cut = history
        .iter()
        .rposition(|e| e.name() == "TaskScheduled")
        .unwrap();
    let prefix: Vec<_> = history[..=cut + 1].to_vec(); // up to that episode's end
    assert_eq!(prefix.last().unwrap().name(), "OrchestratorCompleted");
    let mut loaded = OrchestrationExecutor::load(registry, id, &prefix).unwrap();
    assert_eq!(counters.starts.load(Ordering::SeqCst), 2);
    let polls_before = counters.polls.load(Ordering::SeqCst);
    let ep = loaded.execute(Timestamp(500), vec![events::task_completed(199, &199)]);
    assert!(matches!(ep.outcome, Outcome::Completed { .. }));
    assert_eq!(counters.polls.load(Ordering::SeqCst) - polls_before, 1);
    assert_eq!(counters.starts.load(Ordering::SeqCst), 2);
}

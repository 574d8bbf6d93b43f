//! `when_all` / `when_any` over durable tasks: deterministic, and O(1) amortized work per
//! completion (only the task that completed is polled again), so a fan-out of 10,000 tasks is
//! linear.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesUnordered, StreamExt};

struct Indexed<F> {
    index: usize,
    fut: F,
}

impl<F: Future + Unpin> Future for Indexed<F> {
    type Output = (usize, F::Output);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        Pin::new(&mut self.fut).poll(cx).map(|out| (index, out))
    }
}

/// The future of [`when_all`].
#[must_use = "futures do nothing unless awaited"]
pub struct WhenAll<F: Future> {
    pending: FuturesUnordered<Indexed<F>>,
    results: Vec<Option<F::Output>>,
    remaining: usize,
}

impl<F: Future> std::fmt::Debug for WhenAll<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhenAll")
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Waits for all tasks and returns their outputs in input order. Tasks must be `Unpin`
/// (durable tasks are; box an `async` block with `Box::pin`).
///
/// ```
/// use perdure_core::orchestration::{OrchestrationContext, when_all};
/// async fn fan_out(ctx: OrchestrationContext, n: u32) -> Result<u32, perdure_core::FailureDetails> {
///     let tasks = (0..n).map(|i| ctx.call_activity::<u32>("Square", i));
///     let mut sum = 0;
///     for r in when_all(tasks).await {
///         sum += r?;
///     }
///     Ok(sum)
/// }
/// # let _ = fan_out;
/// ```
pub fn when_all<F>(tasks: impl IntoIterator<Item = F>) -> WhenAll<F>
where
    F: Future + Unpin,
{
    let pending: FuturesUnordered<Indexed<F>> = tasks
        .into_iter()
        .enumerate()
        .map(|(index, fut)| Indexed { index, fut })
        .collect();
    let n = pending.len();
    WhenAll {
        pending,
        results: (0..n).map(|_| None).collect(),
        remaining: n,
    }
}

// The results are never pinned, so `WhenAll` may move.
impl<F: Future> Unpin for WhenAll<F> {}

impl<F: Future + Unpin> Future for WhenAll<F> {
    type Output = Vec<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        while this.remaining > 0 {
            match this.pending.poll_next_unpin(cx) {
                Poll::Ready(Some((index, out))) => {
                    if let Some(slot) = this.results.get_mut(index) {
                        *slot = Some(out);
                    }
                    this.remaining -= 1;
                }
                Poll::Ready(None) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(
            std::mem::take(&mut this.results)
                .into_iter()
                .flatten()
                .collect(),
        )
    }
}

/// The future of [`when_any`].
#[must_use = "futures do nothing unless awaited"]
pub struct WhenAny<F> {
    pending: FuturesUnordered<Indexed<F>>,
}

impl<F> std::fmt::Debug for WhenAny<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhenAny")
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Waits for the first task to complete and returns its index and output. When several are
/// already complete, the lowest index wins (deterministic). The other tasks are dropped; pass
/// `&mut task` to keep them. With no tasks, it never completes.
///
/// ```
/// use std::time::Duration;
/// use perdure_core::orchestration::{OrchestrationContext, when_any};
/// async fn approval(ctx: OrchestrationContext, _: ()) -> Result<bool, perdure_core::FailureDetails> {
///     let mut approved = ctx.wait_for_external_event::<bool>("Approval");
///     let timeout = ctx.create_timer_after(Duration::from_secs(3600));
///     let (winner, _) = when_any(vec![
///         Box::pin(async move { approved.await.ok() }) as perdure_core::orchestration::TaskFuture<Option<bool>>,
///         Box::pin(async move { timeout.await; None }),
///     ]).await;
///     Ok(winner == 0)
/// }
/// # let _ = approval;
/// ```
pub fn when_any<F>(tasks: impl IntoIterator<Item = F>) -> WhenAny<F>
where
    F: Future + Unpin,
{
    WhenAny {
        pending: tasks
            .into_iter()
            .enumerate()
            .map(|(index, fut)| Indexed { index, fut })
            .collect(),
    }
}

impl<F: Future + Unpin> Future for WhenAny<F> {
    type Output = (usize, F::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.pending.poll_next_unpin(cx) {
            Poll::Ready(Some(winner)) => Poll::Ready(winner),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// The future of [`when_any2`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct WhenAny2<A, B> {
    a: A,
    b: B,
}

/// Waits for the first of two tasks of different types; the first one wins when both are
/// complete (deterministic). The loser is not dropped: pass `&mut task` to await it later.
///
/// ```
/// use std::time::Duration;
/// use futures::future::Either;
/// use perdure_core::orchestration::{OrchestrationContext, when_any2};
/// async fn approval(ctx: OrchestrationContext, _: ()) -> Result<&'static str, perdure_core::TaskError> {
///     let approved = ctx.wait_for_external_event::<bool>("Approval");
///     let timeout = ctx.create_timer_after(Duration::from_secs(3600));
///     Ok(match when_any2(approved, timeout).await {
///         Either::Left(approved) => if approved? { "approved" } else { "rejected" },
///         Either::Right(()) => "timed out",
///     })
/// }
/// # let _ = approval;
/// ```
pub fn when_any2<A, B>(a: A, b: B) -> WhenAny2<A, B>
where
    A: Future + Unpin,
    B: Future + Unpin,
{
    WhenAny2 { a, b }
}

impl<A: Future + Unpin, B: Future + Unpin> Future for WhenAny2<A, B> {
    type Output = futures::future::Either<A::Output, B::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(v) = Pin::new(&mut self.a).poll(cx) {
            return Poll::Ready(futures::future::Either::Left(v));
        }
        Pin::new(&mut self.b)
            .poll(cx)
            .map(futures::future::Either::Right)
    }
}

/// Waits for the first of several durable tasks and evaluates that branch's expression with
/// its output: a typed `when_any` in the spirit of `tokio::select!`, for orchestrators.
///
/// ```text
/// when_any! {
///     <pattern> = <task> => <expression>,
///     ...
/// }
/// ```
///
/// Every `<task>` is evaluated first, in branch order, so the scheduling calls take their
/// sequence numbers in that order; then they race. A task is any future (a
/// [`DurableTask`](crate::DurableTask), a [`TaskFuture`](crate::orchestration::TaskFuture), an
/// `async` block over durable tasks, `&mut task` to keep a task); it need not be `Unpin`.
/// The branch whose task completes first in history order wins; when several are already
/// complete at the poll (for example when the macro is reached after their events arrived),
/// the first branch in order wins, as with [`when_any`](crate::orchestration::when_any) and
/// [`when_any2`](crate::orchestration::when_any2). The losers are dropped before the winner's
/// expression runs, as Durable Functions leaves them: a loser's later completion is ignored,
/// and a losing event wait leaves its queue (the event is buffered for the next wait). Pass
/// `&mut task` to keep a loser and await it later.
///
/// The winner's output is matched against its irrefutable `<pattern>`, and the macro's value
/// is `<expression>`'s (all branches have one type). The expressions run in the orchestrator's
/// own `async` body, so `?`, `return` and `.await` work in them. A comma after a branch is
/// optional when its expression is a block. Unlike `tokio::select!` there is no random
/// choice, no `else` and no precondition: the choice must replay.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use perdure_core::{OrchestrationContext, Registry, TaskError, when_any};
/// use perdure_core::testing::OrchestrationTester;
///
/// async fn approval(ctx: OrchestrationContext, _: ()) -> Result<String, TaskError> {
///     let outcome = when_any! {
///         approved = ctx.wait_for_external_event::<bool>("Approval") => {
///             if approved? { "approved" } else { "rejected" }
///         }
///         reason = ctx.wait_for_external_event::<String>("Cancel") => {
///             ctx.log_info(format!("cancelled: {}", reason?));
///             "cancelled"
///         }
///         () = ctx.create_timer_after(Duration::from_secs(3600)) => "timed out",
///     };
///     Ok(outcome.to_string())
/// }
///
/// let mut registry = Registry::new();
/// registry.add_orchestration("Approval", approval);
/// let registry = Arc::new(registry);
///
/// let mut tester = OrchestrationTester::new(registry.clone());
/// tester.raise_event_after(Duration::from_secs(60), "Approval", &true);
/// assert_eq!(tester.run("Approval", &()).output::<String>().unwrap(), "approved");
///
/// let run = OrchestrationTester::new(registry).run("Approval", &());
/// assert_eq!(run.output::<String>().unwrap(), "timed out");
/// ```
#[macro_export]
macro_rules! when_any {
    ($($branches:tt)+) => {
        $crate::__when_any!(@parse [] $($branches)+)
    };
}

/// The rules behind [`when_any!`]: parse the branches one at a time, then race them with
/// nested `when_any2` and match the nested `Either`. Every piece is carried as raw tokens so
/// that nothing is parsed twice.
#[doc(hidden)]
#[macro_export]
macro_rules! __when_any {
    (@parse [$($done:tt)*] $p:pat = $f:expr => $b:block , $($rest:tt)*) => {
        $crate::__when_any!(@parse [$($done)* [($p) ($f) ($b)]] $($rest)*)
    };
    (@parse [$($done:tt)*] $p:pat = $f:expr => $b:block $($rest:tt)*) => {
        $crate::__when_any!(@parse [$($done)* [($p) ($f) ($b)]] $($rest)*)
    };
    (@parse [$($done:tt)*] $p:pat = $f:expr => $b:expr , $($rest:tt)*) => {
        $crate::__when_any!(@parse [$($done)* [($p) ($f) ($b)]] $($rest)*)
    };
    (@parse [$($done:tt)*] $p:pat = $f:expr => $b:expr) => {
        $crate::__when_any!(@parse [$($done)* [($p) ($f) ($b)]])
    };
    (@parse [$([($($p:tt)*) ($($f:tt)*) ($($b:tt)*)])+]) => {{
        // A statement of its own: the losers (temporaries of the race) are dropped at its end,
        // before the winner's expression runs.
        let __when_any_output = $crate::__when_any!(@race $(($($f)*))+).await;
        $crate::__when_any!(@arms __when_any_output; $([($($p)*) ($($b)*)])+)
    }};
    (@race ($($f:tt)*)) => {
        ::core::pin::pin!($($f)*)
    };
    (@race ($($f:tt)*) $(($($rest:tt)*))+) => {
        $crate::orchestration::when_any2(
            ::core::pin::pin!($($f)*),
            $crate::__when_any!(@race $(($($rest)*))+),
        )
    };
    (@arms $out:ident; [($($p:tt)*) ($($b:tt)*)]) => {
        match $out {
            $($p)* => $($b)*,
        }
    };
    (@arms $out:ident; [($($p:tt)*) ($($b:tt)*)] $($rest:tt)+) => {
        match $out {
            $crate::orchestration::Either::Left($($p)*) => $($b)*,
            $crate::orchestration::Either::Right(__when_any_rest) => {
                $crate::__when_any!(@arms __when_any_rest; $($rest)+)
            }
        }
    };
}

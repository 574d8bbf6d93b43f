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

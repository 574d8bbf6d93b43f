//! The order in which pipelined statements reach the server.
//!
//! A tokio-postgres request is sent when its future is first polled, and the server runs
//! requests in the order they were sent. `futures::join!` polls its futures in order, so
//! futures joined together are sent in that order, but only up to their first `.await`: a
//! future that goes on after an answer (`BEGIN`, then the writes and `COMMIT`) may get that
//! answer at once, on its first poll (the connection task runs on another worker thread),
//! and then send its continuation before the futures after it were polled at all. That
//! happened: a group's writes and `COMMIT` reached the server before the check that should
//! have guarded them, which then ran after the commit and failed; the group was reported as
//! conflicting although its writes had committed. So each request gets its own future,
//! polled once in the order the server must see them ([`start`]), and nothing is sent from
//! a continuation.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A request's future polled once: its request is on the connection (behind those started
/// before it), or it already failed.
pub(super) struct Started<F: Future> {
    future: Pin<Box<F>>,
    output: Option<F::Output>,
}

/// Polls `future` once, which sends its request; [`Started::finish`] awaits the answer.
pub(super) async fn start<F: Future>(future: F) -> Started<F> {
    let mut future = Box::pin(future);
    let output = std::future::poll_fn(|cx| {
        Poll::Ready(match future.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await;
    Started { future, output }
}

impl<F: Future> Started<F> {
    /// Its output, if it was ready on its first poll.
    pub(super) fn done(&self) -> Option<&F::Output> {
        self.output.as_ref()
    }

    /// Its output.
    pub(super) async fn finish(self) -> F::Output {
        match self.output {
            Some(out) => out,
            None => self.future.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::start;

    type Log = Arc<Mutex<Vec<&'static str>>>;

    /// A future that records its first poll ("sent") and is then ready at once, as a
    /// request whose answer is already there.
    async fn sent(log: Log, name: &'static str) -> &'static str {
        log.lock().unwrap().push(name);
        name
    }

    /// A future that records its first poll and is ready on a later poll, as a request
    /// whose answer comes later.
    async fn answered_later(log: Log, name: &'static str) -> &'static str {
        log.lock().unwrap().push(name);
        tokio::task::yield_now().await;
        name
    }

    #[tokio::test]
    async fn started_requests_are_sent_in_order_whenever_they_are_answered() {
        let log = Log::default();
        let begin = start(sent(log.clone(), "begin")).await;
        let check = start(answered_later(log.clone(), "check")).await;
        let commit = start(sent(log.clone(), "commit")).await;
        assert_eq!(*log.lock().unwrap(), ["begin", "check", "commit"]);
        assert_eq!(begin.done(), Some(&"begin"), "answered on its first poll");
        assert_eq!(check.done(), None, "not answered yet");
        let (b, c, k) = futures::join!(commit.finish(), check.finish(), begin.finish());
        assert_eq!((b, c, k), ("commit", "check", "begin"));
        assert_eq!(
            log.lock().unwrap().len(),
            3,
            "finishing sends nothing again"
        );
    }

    /// What went wrong once: the continuation of a future answered at once is sent before
    /// the futures joined after it, so requests go out one per future's first poll only.
    #[tokio::test]
    async fn a_plain_join_sends_the_continuation_first() {
        let log = Log::default();
        let l = log.clone();
        let begin_then_commit = async move {
            sent(l.clone(), "begin").await;
            sent(l, "commit").await
        };
        futures::join!(begin_then_commit, sent(log.clone(), "check"));
        assert_eq!(*log.lock().unwrap(), ["begin", "commit", "check"]);
    }
}

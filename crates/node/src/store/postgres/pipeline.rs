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
//! conflicting although its writes had committed. [`then`] keeps the order.

use std::future::Future;

/// Runs `first` and `second` together, then `after` once `first` is done and `go_on` accepts
/// its output (else `after` is dropped unpolled: nothing of it is sent). `second` is first
/// polled before `after`, even when `first` is done on its first poll, so the server gets
/// `first`'s request, then `second`'s, then `after`'s.
pub(super) async fn then<A, B, C>(
    first: A,
    go_on: impl FnOnce(&A::Output) -> bool,
    second: B,
    after: C,
) -> (A::Output, B::Output, Option<C::Output>)
where
    A: Future,
    B: Future,
    C: Future,
{
    let (done, first_done) = tokio::sync::oneshot::channel();
    let first = async move {
        let out = first.await;
        let _ = done.send(go_on(&out));
        out
    };
    // Polled after `second` in every pass of `join!`: the first pass sends `second`'s
    // request, whatever `first` did.
    let after = async move {
        match first_done.await {
            Ok(true) => Some(after.await),
            _ => None,
        }
    };
    futures::join!(first, second, after)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::then;

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
    async fn the_second_request_goes_before_the_continuation_when_the_first_is_answered_at_once() {
        let log = Log::default();
        let (a, b, c) = then(
            sent(log.clone(), "begin"),
            |_| true,
            answered_later(log.clone(), "check"),
            sent(log.clone(), "commit"),
        )
        .await;
        assert_eq!((a, b, c), ("begin", "check", Some("commit")));
        assert_eq!(*log.lock().unwrap(), ["begin", "check", "commit"]);
    }

    #[tokio::test]
    async fn the_same_order_when_the_first_is_answered_later() {
        let log = Log::default();
        let (_, _, c) = then(
            answered_later(log.clone(), "begin"),
            |_| true,
            sent(log.clone(), "check"),
            sent(log.clone(), "commit"),
        )
        .await;
        assert_eq!(c, Some("commit"));
        assert_eq!(*log.lock().unwrap(), ["begin", "check", "commit"]);
    }

    #[tokio::test]
    async fn nothing_of_the_continuation_is_sent_when_the_first_fails() {
        let log = Log::default();
        let (_, _, c) = then(
            sent(log.clone(), "begin"),
            |_| false,
            sent(log.clone(), "check"),
            sent(log.clone(), "commit"),
        )
        .await;
        assert_eq!(c, None);
        assert_eq!(*log.lock().unwrap(), ["begin", "check"]);
    }

    #[tokio::test]
    async fn nothing_of_the_continuation_is_sent_when_the_first_fails_later() {
        let log = Log::default();
        let (_, _, c) = then(
            answered_later(log.clone(), "begin"),
            |_| false,
            answered_later(log.clone(), "check"),
            sent(log.clone(), "commit"),
        )
        .await;
        assert_eq!(c, None);
        assert_eq!(*log.lock().unwrap(), ["begin", "check"]);
    }

    /// What went wrong without [`then`]: the continuation of a future answered at once is
    /// sent before the futures joined after it.
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

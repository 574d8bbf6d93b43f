//! Large orchestrations (issue 16): episodes whose history and effects exceed one store
//! transaction commit in stages (`runtime/staged.rs`), on every store.

mod common;

use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;

use perdure_core::Payload;

every_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fan_out_committed_in_stages_completes_exactly_once(ts) {
        // 50 items per transaction: the fan-out's first episode (1,000 history events and
        // 1,000 tasks) commits in about 40 transactions.
        let mut opts = common::options();
        opts.staged_commit_items = NonZeroUsize::new(50).unwrap();
        let node = common::start_with_options(
            ts.store.clone(),
            perdure_node::sample::sample_registry(),
            opts,
        )
        .await;
        let id = common::start(&node, "FanOutFanIn", "staged-1", Some(Payload::json(&1000u64).unwrap())).await;
        common::check_fan_out(&node, &id, 1000).await;
        // The first episode (1,000 scheduled) was staged; the results arrive in episodes of
        // up to 1,000 events, some of which may be staged too.
        assert!(node.metrics().staged_episodes.load(Ordering::Relaxed) >= 1);
        assert_eq!(common::staged_keys(&ts.store).await, 0, "the write-out removed every staged key");
        // A second instance after the first: staging leaves nothing behind that a later
        // episode of another instance would see.
        let id = common::start(&node, "FanOutFanIn", "staged-2", Some(Payload::json(&120u64).unwrap())).await;
        common::check_fan_out(&node, &id, 120).await;
        node.shutdown().await;
    }
}

every_store! {
    except [memory = "the issue asks for the embedded store and PostgreSQL; the memory store runs one transaction at a time"]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fan_out_of_100000_activities_completes(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let id = common::start(&node, "FanOutFanIn", "fan-100k", Some(Payload::json(&100_000u64).unwrap())).await;
        common::check_fan_out(&node, &id, 100_000).await;
        assert!(node.metrics().staged_episodes.load(Ordering::Relaxed) >= 1);
        assert_eq!(common::staged_keys(&ts.store).await, 0);
        node.shutdown().await;
    }
}

//! Typed calls from `perdure-client` over HTTP against the node binary: a start by handle,
//! entity signals and state through the proxy written by `#[entity]`, and the errors.

use std::time::Duration;

use perdure_client::{ClientError, DurableClient, StartOptions};
use perdure_node::sample::Counter;
use perdure_node::sample::chaining::hello_sequence;
use perdure_tests::NodeProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_starts_and_entity_proxies_over_http() {
    let node = NodeProcess::spawn_test_app().unwrap();
    let client = DurableClient::http([node.base()]).unwrap();

    let id = client
        .schedule_new(hello_sequence, (), StartOptions::with_id("typed-hello"))
        .await
        .unwrap();
    let done = client
        .wait_for_instance_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    let out: Vec<String> = done.read_output().unwrap().unwrap();
    assert_eq!(out, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);

    let counter = client.entity::<Counter>("typed");
    for n in [4, 6, 32] {
        counter.signal().add(n).await.unwrap();
    }
    // Signals are one-way: read until all three were applied (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = counter.state().await.unwrap().map_or(0, |c| c.0);
        if value == 42 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter stuck at {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter.id().unwrap().name(), "counter");
    counter.signal().delete().await.unwrap();

    let bad = client.entity::<Counter>("a/b").signal().add(1).await;
    assert!(matches!(bad, Err(ClientError::Management(_))), "{bad:?}");
    // (`client.schedule_new(say_hello, ..)` with an activity does not compile.)
    node.terminate().unwrap();
}

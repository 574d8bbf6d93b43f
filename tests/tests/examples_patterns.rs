//! The pattern examples of `crates/node/examples/` run and give each pattern's result. Each
//! file is compiled here as a module (its `main` is unused) and its `demo` is called.

#![allow(dead_code)]
// Each example has its own `mod common`, so the file is loaded once per example.
#![allow(clippy::duplicate_mod)]

#[path = "../../crates/node/examples/aggregator.rs"]
mod aggregator;
#[path = "../../crates/node/examples/chaining.rs"]
mod chaining;
#[path = "../../crates/node/examples/fan_out_fan_in.rs"]
mod fan_out_fan_in;
#[path = "../../crates/node/examples/human_interaction.rs"]
mod human_interaction;
#[path = "../../crates/node/examples/monitor.rs"]
mod monitor;

#[tokio::test]
async fn chaining_greets_three_cities_in_order() {
    let out = chaining::demo().await.unwrap();
    assert_eq!(out, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
}

#[tokio::test]
async fn fan_out_fan_in_sums_the_squares() {
    let n = 50u64;
    assert_eq!(
        fan_out_fan_in::demo(n).await.unwrap(),
        n * (n + 1) * (2 * n + 1) / 6
    );
}

#[tokio::test(start_paused = true)]
async fn monitor_checks_on_a_timer_then_finishes() {
    assert_eq!(
        monitor::demo(10, 3).await.unwrap(),
        "finished after 3 checks"
    );
}

#[tokio::test]
async fn human_interaction_takes_the_decision() {
    assert_eq!(
        human_interaction::demo(Some(true)).await.unwrap(),
        "approved"
    );
    assert_eq!(
        human_interaction::demo(Some(false)).await.unwrap(),
        "rejected"
    );
}

#[tokio::test(start_paused = true)]
async fn human_interaction_times_out_without_a_decision() {
    assert_eq!(human_interaction::demo(None).await.unwrap(), "timed out");
}

#[tokio::test]
async fn aggregator_sums_the_signals() {
    assert_eq!(aggregator::demo(&[5, 10, -3, 7]).await.unwrap(), 19);
}

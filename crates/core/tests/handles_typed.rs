//! The attribute macros and typed handles: calls checked by type, registration by handle,
//! entities whose operations are methods, and their proxies.

use std::sync::Arc;

use perdure_core::entity::{EntityAction, OperationRequest, OperationResult, execute_entity_batch};
use perdure_core::orchestration::SubOrchestrationOptions;
use perdure_core::testing::OrchestrationTester;
use perdure_core::{
    ActivityContext, DurableFunction, EntityContext, EntityId, EntityInterface, FailureDetails,
    InstanceId, OrchestrationContext, Payload, Registry, RetryPolicy, TaskError, activity, entity,
    orchestration,
};
use serde::{Deserialize, Serialize};

/// Greets a city.
#[activity(name = "SayHello")]
async fn say_hello(ctx: ActivityContext, city: String) -> Result<String, String> {
    let _ = ctx;
    Ok(format!("Hello {city}!"))
}

#[activity]
async fn no_input() -> Result<u32, String> {
    Ok(7)
}

#[activity]
async fn flaky(attempt_marker: u32) -> Result<u32, String> {
    Err(format!("always fails ({attempt_marker})"))
}

#[orchestration(name = "HelloSequence")]
async fn hello_sequence(ctx: OrchestrationContext) -> Result<Vec<String>, TaskError> {
    let mut out = Vec::new();
    for city in ["Tokyo", "Seattle", "London"] {
        out.push(ctx.call(say_hello, city).await?);
    }
    out.push(ctx.call(no_input, ()).await?.to_string());
    Ok(out)
}

#[orchestration]
async fn parent(ctx: OrchestrationContext, n: u32) -> Result<(Vec<String>, u32), TaskError> {
    let child = ctx.call(hello_sequence, ()).await?;
    let named = ctx
        .call_with_options(
            doubled,
            SubOrchestrationOptions {
                instance_id: Some(InstanceId::new("named-child").unwrap()),
                ..Default::default()
            },
            n,
        )
        .await?;
    Ok((child, named))
}

#[orchestration(version = "2")]
async fn doubled(_ctx: OrchestrationContext, n: u32) -> Result<u32, TaskError> {
    Ok(n * 2)
}

#[orchestration]
async fn retried(ctx: OrchestrationContext) -> Result<u32, TaskError> {
    let policy = RetryPolicy::new(3, std::time::Duration::from_secs(1));
    ctx.call_with_retry(flaky, policy, 1u32).await
}

/// A `let` may shadow a handle's name, inside the function itself and at a call site.
#[activity]
async fn total(items: Vec<u32>) -> Result<u32, String> {
    let total: u32 = items.iter().sum();
    Ok(total)
}

#[orchestration]
async fn shadows(ctx: OrchestrationContext) -> Result<u32, TaskError> {
    let total = ctx.call(total, vec![1, 2, 3]).await?;
    Ok(total * 2)
}

#[test]
fn a_let_may_shadow_a_handle() {
    let mut r = Registry::new();
    r.register(total).register(shadows);
    let run = OrchestrationTester::new(Arc::new(r)).run("shadows", &());
    assert_eq!(run.output::<u32>().unwrap(), 12);
}

#[test]
fn handles_carry_name_kind_and_types() {
    assert_eq!(SayHelloActivity::NAME, "SayHello");
    assert_eq!(HelloSequenceOrchestration::NAME, "HelloSequence");
    assert_eq!(DoubledOrchestration::NAME, "doubled");
    assert_eq!(DoubledOrchestration::VERSION, Some("2"));
    assert_eq!(<ParentOrchestration as DurableFunction>::VERSION, None);
    assert_eq!(say_hello(), SayHelloActivity);
    let mut r = Registry::new();
    r.register(say_hello)
        .register(hello_sequence)
        .register(doubled);
    assert_eq!(r.activity_names(), ["SayHello"]);
    assert_eq!(r.orchestration_names(), ["HelloSequence", "doubled"]);
    assert_eq!(r.orchestration_versions("doubled"), [Some("2".to_string())]);
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.register(say_hello)
        .register(no_input)
        .register(flaky)
        .register(hello_sequence)
        .register(parent)
        .register(doubled)
        .register(retried)
        .register_entity::<Counter>()
        .register(uses_counter);
    Arc::new(r)
}

#[test]
fn typed_calls_run_activities_and_sub_orchestrations() {
    let mut t = OrchestrationTester::new(registry());
    let run = t.run("HelloSequence", &());
    assert_eq!(
        run.output::<Vec<String>>().unwrap(),
        ["Hello Tokyo!", "Hello Seattle!", "Hello London!", "7"]
    );
    // The function itself stays callable (for unit tests of an activity).
    let out = futures::executor::block_on(NoInputActivity::run()).unwrap();
    assert_eq!(out, 7);

    let mut t = OrchestrationTester::new(registry());
    let run = t.run("parent", &21u32);
    let (child, named) = run.output::<(Vec<String>, u32)>().unwrap();
    assert_eq!(child.len(), 4);
    assert_eq!(named, 42);
}

#[test]
fn typed_retry_retries_then_fails_with_the_activity_failure() {
    let mut attempts = 0;
    let mut t = OrchestrationTester::new(registry());
    t.mock_activity("flaky", move |n: u32| -> Result<u32, FailureDetails> {
        attempts += 1;
        if attempts < 3 {
            Err(FailureDetails::new("Flaky", format!("attempt {attempts}")))
        } else {
            Ok(n + 100)
        }
    });
    assert_eq!(t.run("retried", &()).output::<u32>().unwrap(), 101);

    let mut t = OrchestrationTester::new(registry());
    let failure = t.run("retried", &()).output::<u32>().unwrap_err();
    assert!(failure.to_string().contains("always fails"), "{failure}");
}

/// A counter whose operations are its public methods.
#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    value: i64,
    log: Vec<String>,
}

#[entity]
impl Counter {
    pub fn add(&mut self, n: i64) {
        self.value += n;
    }

    pub fn get(&self) -> i64 {
        self.helper()
    }

    pub fn add_labeled(&mut self, n: i64, label: String) -> i64 {
        self.value += n;
        self.log.push(label);
        self.value
    }

    pub fn checked_sub(&mut self, n: i64) -> Result<i64, String> {
        if n > self.value {
            return Err(format!("cannot take {n} from {}", self.value));
        }
        self.value -= n;
        Ok(self.value)
    }

    pub fn notify(
        &mut self,
        ctx: &mut EntityContext<Self>,
        target: String,
    ) -> Result<(), FailureDetails> {
        let other = EntityId::new("Counter", target)
            .map_err(|e| FailureDetails::new("BadId", e.to_string()))?;
        ctx.signal_entity(&other, "add", self.value)
    }

    /// An `async` operation: awaits (here a future that yields once) before it changes the
    /// state, with the context at hand.
    pub async fn add_later(
        &mut self,
        ctx: &mut EntityContext<Self>,
        n: i64,
    ) -> Result<i64, String> {
        YieldOnce(false).await;
        if ctx.operation_name() != "add_later" {
            return Err("wrong context".into());
        }
        self.value += n;
        Ok(self.value)
    }

    pub async fn peek_later(&self) -> i64 {
        YieldOnce(false).await;
        self.value
    }

    pub async fn fail_later(&mut self) -> Result<(), String> {
        self.value += 1000;
        YieldOnce(false).await;
        Err("failed after a change".into())
    }

    pub async fn panic_later(&mut self) {
        self.value += 1000;
        YieldOnce(false).await;
        panic!("entity exploded while awaiting");
    }

    pub fn reset_and_forget(&mut self, ctx: &mut EntityContext<Self>) {
        self.value = 99;
        ctx.delete_state();
    }

    /// Not an operation: private.
    fn helper(&self) -> i64 {
        self.value
    }
}

/// A future that is pending once (waking itself), then ready: an `await` that really
/// suspends.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

#[test]
fn async_operations_await_and_roll_back_like_the_others() {
    let mut r = Registry::new();
    r.register_entity::<Counter>();
    let id = EntityId::new("counter", "a1").unwrap();
    let ops = || {
        vec![
            op("add", 2),
            op("add_later", 5),
            OperationRequest::new("fail_later", None),
            OperationRequest::new("panic_later", None),
            OperationRequest::new("peek_later", None),
        ]
    };
    // The node's path (a future) and the blocking one give the same batch.
    let out = futures::executor::block_on(perdure_core::entity::execute_entity_batch_async(
        &r,
        &id,
        None,
        ops(),
    ))
    .unwrap();
    assert_eq!(out, execute_entity_batch(&r, &id, None, ops()).unwrap());
    assert_eq!(
        out.results[1],
        OperationResult::Completed(Some(Payload::json(&7).unwrap()))
    );
    assert!(
        matches!(&out.results[2], OperationResult::Failed(f) if f.message.contains("failed after a change"))
    );
    assert!(matches!(&out.results[3], OperationResult::Failed(f) if f.error_type == "PanicError"));
    assert_eq!(
        out.results[4],
        OperationResult::Completed(Some(Payload::json(&7).unwrap()))
    );
    assert_eq!(
        state(&out.state).value,
        7,
        "the failed and panicked operations rolled back"
    );
}

fn op<T: Serialize>(name: &str, input: T) -> OperationRequest {
    OperationRequest::new(name, Some(Payload::json(&input).unwrap()))
}

fn state(p: &Option<Payload>) -> Counter {
    serde_json::from_str(p.as_ref().unwrap().as_json_str().unwrap()).unwrap()
}

#[test]
fn entity_methods_are_operations() {
    assert_eq!(Counter::NAME, "Counter");
    let mut r = Registry::new();
    r.register_entity::<Counter>();
    let id = EntityId::new("counter", "c1").unwrap();
    let out = execute_entity_batch(
        &r,
        &id,
        None,
        vec![
            OperationRequest::new("get", None),
            op("add", 5),
            op("ADD", 2),
            op("add_labeled", (3, "x")),
            op("checked_sub", 100),
            op("checked_sub", 4),
            OperationRequest::new("helper", None),
            op("notify", "c2"),
            op("add", "not a number"),
        ],
    )
    .unwrap();
    assert_eq!(
        out.results[0],
        OperationResult::Completed(Some(Payload::json(&0).unwrap()))
    );
    assert_eq!(out.results[1], OperationResult::Completed(None));
    assert_eq!(
        out.results[3],
        OperationResult::Completed(Some(Payload::json(&10).unwrap()))
    );
    assert!(
        matches!(&out.results[4], OperationResult::Failed(f) if f.message.contains("cannot take 100 from 10"))
    );
    assert_eq!(
        out.results[5],
        OperationResult::Completed(Some(Payload::json(&6).unwrap()))
    );
    assert!(
        matches!(&out.results[6], OperationResult::Failed(f) if f.error_type == "UnknownOperation")
    );
    assert!(
        matches!(&out.results[8], OperationResult::Failed(f) if f.error_type == "PayloadDecodeError")
    );
    let s = state(&out.state);
    assert_eq!((s.value, s.log), (6, vec!["x".to_string()]));
    assert!(
        matches!(&out.actions[..], [EntityAction::SignalEntity { operation, entity, .. }] if operation == "add" && entity.key() == "c2")
    );
}

#[test]
fn a_read_of_a_missing_entity_creates_nothing_and_delete_is_implicit() {
    let mut r = Registry::new();
    r.register_entity::<Counter>();
    let id = EntityId::new("counter", "c1").unwrap();
    let out =
        execute_entity_batch(&r, &id, None, vec![OperationRequest::new("get", None)]).unwrap();
    assert_eq!(
        out.state, None,
        "reading a missing entity does not create it"
    );

    let existing = Some(
        Payload::json(&Counter {
            value: 3,
            log: vec![],
        })
        .unwrap(),
    );
    let out = execute_entity_batch(
        &r,
        &id,
        existing.clone(),
        vec![OperationRequest::new("delete", None)],
    )
    .unwrap();
    assert_eq!(out.state, None);
    let out = execute_entity_batch(
        &r,
        &id,
        existing,
        vec![OperationRequest::new("reset_and_forget", None)],
    )
    .unwrap();
    assert_eq!(
        out.state, None,
        "a method that deletes its state through the context wins"
    );
}

#[orchestration]
async fn uses_counter(ctx: OrchestrationContext, key: String) -> Result<i64, TaskError> {
    let counter = ctx.entity::<Counter>(key.clone());
    counter.signal().add(5)?;
    let after = counter.add_labeled(1, "call".to_string()).await?;
    let bad = ctx.entity::<Counter>("bad/key").get().await;
    assert!(matches!(bad, Err(TaskError::Encode { .. })), "{bad:?}");
    Ok(after + counter.get().await?)
}

#[test]
fn the_tester_runs_synchronous_entities_inside_another_executor() {
    // A synchronous entity's batch is answered at the first poll: no nested executor.
    let output = futures::executor::block_on(async {
        let mut t = OrchestrationTester::new(registry());
        t.run("uses_counter", &"nested").output::<i64>().unwrap()
    });
    assert_eq!(output, 12);
}

#[test]
fn proxies_call_and_signal_entities_from_an_orchestration() {
    let mut t = OrchestrationTester::new(registry());
    t.with_entity_state(
        EntityId::new("counter", "k").unwrap(),
        &Counter {
            value: 10,
            log: vec![],
        },
    );
    let run = t.run("uses_counter", &"k");
    // The signal (+5) is delivered before the call (+1 = 16), then get reads 16.
    assert_eq!(run.output::<i64>().unwrap(), 32);
}

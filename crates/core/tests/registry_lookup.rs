//! The registry: names, versions, unknown names, error conversions, activities.

use std::sync::Arc;

use perdure_core::activity::ActivityContext;
use perdure_core::registry::{Registry, RegistryError, execute_activity};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::events;
use perdure_core::{FailureDetails, InstanceId, OrchestrationContext, Payload, Timestamp};

#[derive(Debug, thiserror::Error)]
#[error("my error: {0}")]
struct MyError(String, #[source] std::io::Error);

fn registry() -> Registry {
    let mut r = Registry::new();
    r.add_orchestration("B", |_ctx: OrchestrationContext, ()| async {
        Ok::<_, String>(1)
    })
    .add_orchestration(
        "A",
        |_ctx: OrchestrationContext, x: Option<i32>| async move { Ok::<_, String>(x) },
    )
    .add_orchestration_version("V", "1", |_ctx: OrchestrationContext, ()| async {
        Ok::<_, String>("one")
    })
    .add_orchestration_version("V", "2", |_ctx: OrchestrationContext, ()| async {
        Ok::<_, String>("two")
    })
    .add_orchestration("MyErr", |_ctx: OrchestrationContext, ()| async {
        Err::<(), _>(MyError("bad".into(), std::io::Error::other("disk")))
    })
    .add_activity("Echo", |ctx: ActivityContext, s: String| async move {
        Ok::<_, FailureDetails>(format!("{s}@{}#{}", ctx.task_id(), ctx.attempt()))
    })
    .add_activity("Panics", |_ctx: ActivityContext, ()| async move {
        if true {
            panic!("activity exploded");
        }
        Ok::<(), String>(())
    });
    r
}

#[test]
fn names_are_sorted_and_unknown_names_are_errors() {
    let r = registry();
    assert_eq!(r.orchestration_names(), ["A", "B", "MyErr", "V"]);
    assert_eq!(r.activity_names(), ["Echo", "Panics"]);
    assert_eq!(
        r.orchestration_versions("V"),
        [Some("1".to_string()), Some("2".to_string())]
    );
    assert!(r.activity("Nope").is_none());
    assert!(r.entity("Nope").is_none());
    let err = r.orchestration("Nope", None).err().unwrap();
    assert_eq!(
        err,
        RegistryError::UnknownOrchestration {
            name: "Nope".into(),
            version: None
        }
    );
    assert_eq!(err.to_failure_details().error_type, "OrchestrationNotFound");
    assert!(r.orchestration("V", Some("3")).is_err());
    assert!(matches!(
        r.try_activity("Nope"),
        Err(RegistryError::UnknownActivity { .. })
    ));
}

fn run(r: &Arc<Registry>, name: &str, version: Option<&str>, input: Option<Payload>) -> Outcome {
    let mut ex = OrchestrationExecutor::new(r.clone(), InstanceId::new("x").unwrap());
    let mut start = events::execution_started(name, &());
    if let perdure_core::EventKind::ExecutionStarted {
        version: v,
        input: i,
        ..
    } = &mut start.kind
    {
        *v = version.map(str::to_string);
        *i = input;
    }
    ex.execute(Timestamp(0), vec![start]).outcome
}

#[test]
fn versions_and_missing_input() {
    let r = Arc::new(registry());
    let out = |o: Outcome| match o {
        Outcome::Completed { output } => output.map(|p| p.as_json_str().unwrap().to_string()),
        other => panic!("{other:?}"),
    };
    assert_eq!(out(run(&r, "V", Some("1"), None)), Some("\"one\"".into()));
    // Without a version, the greatest registered version runs.
    assert_eq!(out(run(&r, "V", None, None)), Some("\"two\"".into()));
    // A missing input is null: Option<T> gets None (and null output is None).
    assert_eq!(out(run(&r, "A", None, None)), None);
    assert_eq!(
        out(run(&r, "A", None, Payload::json(&5).ok())),
        Some("5".into())
    );
}

#[test]
fn std_errors_keep_their_type_and_source_chain() {
    let r = Arc::new(registry());
    let Outcome::Failed { failure } = run(&r, "MyErr", None, None) else {
        panic!()
    };
    assert_eq!(failure.error_type, "MyError");
    assert_eq!(failure.message, "my error: bad");
    assert_eq!(failure.inner.unwrap().message, "disk");
}

#[test]
fn activities_run_and_their_panics_and_bad_inputs_become_failures() {
    let r = registry();
    let ctx = |name: &str| ActivityContext::new(InstanceId::new("i").unwrap(), name, 7, 2);
    let echo = r.activity("Echo").unwrap();
    let out = futures::executor::block_on(execute_activity(
        &echo,
        ctx("Echo"),
        Payload::json(&"hi").ok(),
    ));
    assert_eq!(out.unwrap(), Payload::json(&"hi@7#2").ok());
    let bad =
        futures::executor::block_on(execute_activity(&echo, ctx("Echo"), Payload::json(&5).ok()));
    let failure = bad.unwrap_err();
    assert_eq!(failure.error_type, "PayloadDecodeError");
    assert!(failure.message.contains("activity 'Echo' (task 7)"));
    let panics = r.activity("Panics").unwrap();
    let failure =
        futures::executor::block_on(execute_activity(&panics, ctx("Panics"), None)).unwrap_err();
    assert_eq!(
        (failure.error_type.as_str(), failure.message.as_str()),
        ("PanicError", "activity exploded")
    );
}

#[test]
fn shared_types_are_send_and_sync_where_the_node_needs_it() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    fn clone_send<T: Clone + Send>() {}
    send_sync::<Registry>();
    send_sync::<Arc<Registry>>();
    send::<OrchestrationExecutor>();
    clone_send::<OrchestrationContext>();
    send::<perdure_core::replay::Episode>();
    send_sync::<perdure_core::registry::ActivityFn>();
    send_sync::<perdure_core::registry::EntityFn>();
}

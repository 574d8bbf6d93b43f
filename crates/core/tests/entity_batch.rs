//! Entity batches: order, rollback of failed operations, panics, deletion, actions.

use perdure_core::entity::{
    Entity, EntityAction, EntityContext, OperationRequest, OperationResult, execute_entity_batch,
};
use perdure_core::{EntityId, FailureDetails, Payload, Registry};
use serde::{Deserialize, Serialize};

fn id() -> EntityId {
    EntityId::new("Counter", "c").unwrap()
}

fn op<T: Serialize>(name: &str, input: T) -> OperationRequest {
    OperationRequest::new(name, Some(Payload::json(&input).unwrap()))
}

fn json<T: Serialize>(v: T) -> Option<Payload> {
    Some(Payload::json(&v).unwrap())
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.add_entity(
        "Counter",
        |ctx: &mut EntityContext<i64>| -> Result<Option<i64>, FailureDetails> {
            match ctx.operation_name() {
                "add" => {
                    let n: i64 = ctx.input()?;
                    *ctx.state_or_default() += n;
                    Ok(None)
                }
                "add_then_fail" => {
                    *ctx.state_or_default() += 1000;
                    ctx.signal_entity(&EntityId::new("Other", "o").unwrap(), "never", ())?;
                    Err(FailureDetails::new("Nope", "rolled back"))
                }
                "add_then_panic" => {
                    *ctx.state_or_default() += 1000;
                    panic!("entity exploded");
                }
                "get" => Ok(Some(ctx.state().copied().unwrap_or(0))),
                "delete" => {
                    ctx.delete_state();
                    Ok(None)
                }
                "notify" => {
                    ctx.signal_entity(&EntityId::new("Other", "o").unwrap(), "ping", 1)?;
                    let started = ctx.start_orchestration("Audit", ctx.state().copied())?;
                    Ok(Some(started.as_str().len() as i64))
                }
                _ => Err(ctx.unknown_operation()),
            }
        },
    );
    r
}

#[test]
fn operations_apply_in_order_and_failures_roll_back_only_themselves() {
    let r = registry();
    let ops = vec![
        op("add", 5),
        op("add_then_fail", ()),
        op("add_then_panic", ()),
        op("add", "not a number"),
        op("add", 2),
        OperationRequest::new("get", None),
        OperationRequest::new("missing", None),
    ];
    let out = execute_entity_batch(&r, &id(), None, ops).unwrap();
    assert_eq!(out.results[0], OperationResult::Completed(None));
    assert!(matches!(&out.results[1], OperationResult::Failed(f) if f.error_type == "Nope"));
    assert!(
        matches!(&out.results[2], OperationResult::Failed(f) if f.error_type == "PanicError" && f.message.contains("entity exploded"))
    );
    assert!(
        matches!(&out.results[3], OperationResult::Failed(f) if f.error_type == "PayloadDecodeError" && f.message.contains("@counter@c"))
    );
    assert_eq!(out.results[5], OperationResult::Completed(json(7)));
    assert!(
        matches!(&out.results[6], OperationResult::Failed(f) if f.error_type == "UnknownOperation")
    );
    assert_eq!(out.state, json(7));
    assert!(
        out.actions.is_empty(),
        "actions of failed operations are rolled back"
    );
}

#[test]
fn delete_and_recreate() {
    let r = registry();
    let out = execute_entity_batch(
        &r,
        &id(),
        json(3),
        vec![OperationRequest::new("delete", None)],
    )
    .unwrap();
    assert_eq!(out.state, None);
    let out = execute_entity_batch(
        &r,
        &id(),
        json(3),
        vec![OperationRequest::new("delete", None), op("add", 1)],
    )
    .unwrap();
    assert_eq!(out.state, json(1));
}

#[test]
fn actions_and_deterministic_orchestration_ids() {
    let r = registry();
    let batch = || vec![OperationRequest::new("notify", None).with_request_id("msg-1")];
    let a = execute_entity_batch(&r, &id(), json(3), batch()).unwrap();
    let b = execute_entity_batch(&r, &id(), json(3), batch()).unwrap();
    assert_eq!(a, b, "same batch, same ids");
    assert!(
        matches!(&a.actions[0], EntityAction::SignalEntity { operation, .. } if operation == "ping")
    );
    let EntityAction::StartOrchestration {
        name,
        instance_id,
        input,
        ..
    } = &a.actions[1]
    else {
        panic!("expected a start");
    };
    assert_eq!(name, "Audit");
    assert_eq!(input, &json(3));
    let other = execute_entity_batch(
        &r,
        &id(),
        json(3),
        vec![OperationRequest::new("notify", None).with_request_id("msg-2")],
    )
    .unwrap();
    let EntityAction::StartOrchestration {
        instance_id: other_id,
        ..
    } = &other.actions[1]
    else {
        panic!()
    };
    assert_ne!(instance_id, other_id);
}

#[test]
fn unknown_entity_and_bad_state_are_errors_not_panics() {
    let r = registry();
    let err =
        execute_entity_batch(&r, &EntityId::new("Nope", "k").unwrap(), None, vec![]).unwrap_err();
    assert_eq!(err.name, "nope");
    let bad = Payload::json(&"not a number").unwrap();
    let out = execute_entity_batch(&r, &id(), Some(bad.clone()), vec![op("add", 1)]).unwrap();
    assert!(
        matches!(&out.results[0], OperationResult::Failed(f) if f.error_type == "PayloadDecodeError")
    );
    assert_eq!(out.state, Some(bad), "state is kept");
}

#[derive(Default, Serialize, Deserialize)]
struct Cart {
    items: Vec<String>,
}

impl Entity for Cart {
    fn dispatch(ctx: &mut EntityContext<Self>) -> Result<Option<Payload>, FailureDetails> {
        match ctx.operation_name() {
            "add" => {
                let item: String = ctx.input()?;
                ctx.state_or_default().items.push(item);
                Ok(None)
            }
            "count" => {
                let n = ctx.state().map_or(0, |c| c.items.len());
                ctx.output(&n)
            }
            _ => Err(ctx.unknown_operation()),
        }
    }
}

#[test]
fn trait_form() {
    let mut r = Registry::new();
    r.add_entity_type::<Cart>("Cart");
    assert_eq!(r.entity_names(), vec!["cart".to_string()]);
    let cart = EntityId::new("cart", "1").unwrap();
    let out = execute_entity_batch(
        &r,
        &cart,
        None,
        vec![
            op("add", "apple"),
            op("add", "pear"),
            OperationRequest::new("count", None),
        ],
    )
    .unwrap();
    assert_eq!(out.results[2], OperationResult::Completed(json(2)));
}

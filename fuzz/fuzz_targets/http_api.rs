//! The HTTP API end to end through its router: paths (percent-decoded ids, entity names),
//! query parameters (date-times, statuses, durations, booleans, page sizes), the continuation
//! token header and JSON bodies. The management API behind it is a stub that answers at once
//! and checks continuation tokens as the node does, so every input is a handful of parses.
//!
//! Input: one byte choosing the method, the request target (path and query) up to `\n`, the
//! `x-ms-continuation-token` header up to the next `\n`, then the body.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, header};
use futures::future::{BoxFuture, FutureExt, ready};
use libfuzzer_sys::fuzz_target;
use perdure_core::management::*;
use perdure_core::{
    EntityId, ExecutionId, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp,
};
use perdure_node::http::{HttpOptions, router};
use perdure_node::state::entities::valid_after;
use perdure_node::state::instances::{decode_token, valid_continuation};
use tower::ServiceExt;

struct Stub;

fn now<'a, T: Send + 'a>(v: ManagementResult<T>) -> BoxFuture<'a, ManagementResult<T>> {
    ready(v).boxed()
}

fn state(id: InstanceId) -> InstanceState {
    InstanceState {
        instance_id: id,
        name: "Hello".into(),
        version: None,
        execution_id: ExecutionId("e".into()),
        runtime_status: OrchestrationStatus::Running,
        input: Some(Payload::json(&1).expect("json")),
        output: None,
        custom_status: None,
        failure: None,
        created_at: Timestamp(0),
        last_updated_at: Timestamp(0),
        parent_instance_id: None,
    }
}

impl ManagementApi for Stub {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        now(Ok(req.instance_id.unwrap_or_else(|| {
            InstanceId::new("new").expect("a valid id")
        })))
    }
    fn get_instance(
        &self,
        id: InstanceId,
        _: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        now(Ok(Some(state(id))))
    }
    fn get_history(
        &self,
        _: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>> {
        now(Ok(Some(Vec::new())))
    }
    fn wait_for_completion(
        &self,
        id: InstanceId,
        _: std::time::Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        now(Ok(Some(state(id))))
    }
    fn query_instances(&self, q: InstanceQuery) -> BoxFuture<'_, ManagementResult<InstancePage>> {
        if !valid_continuation(&q) {
            return now(Err(ManagementError::BadRequest("token".into())));
        }
        now(Ok(InstancePage {
            instances: vec![state(InstanceId::new("a").expect("a valid id"))],
            continuation: q.continuation,
        }))
    }
    fn count_instances(
        &self,
        _: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>> {
        now(Ok(BTreeMap::new()))
    }
    fn raise_event(
        &self,
        _: InstanceId,
        _: String,
        _: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        now(Ok(()))
    }
    fn terminate(
        &self,
        _: InstanceId,
        _: Option<String>,
        _: bool,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        now(Ok(()))
    }
    fn suspend(&self, _: InstanceId, _: Option<String>) -> BoxFuture<'_, ManagementResult<()>> {
        now(Ok(()))
    }
    fn resume(&self, _: InstanceId, _: Option<String>) -> BoxFuture<'_, ManagementResult<()>> {
        now(Ok(()))
    }
    fn rewind(&self, _: InstanceId, _: Option<String>) -> BoxFuture<'_, ManagementResult<()>> {
        now(Ok(()))
    }
    fn restart(&self, id: InstanceId, _: bool) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        now(Ok(id))
    }
    fn purge_instance(&self, _: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        now(Ok(PurgeResult {
            deleted: 1,
            complete: true,
        }))
    }
    fn purge_instances(&self, _: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        now(Ok(PurgeResult {
            deleted: 1,
            complete: true,
        }))
    }
    fn signal_entity(
        &self,
        _: EntityId,
        _: String,
        _: Option<Payload>,
        _: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        now(Ok(()))
    }
    fn get_entity(&self, id: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        now(Ok(Some(EntityState {
            id,
            state: None,
            last_modified: Timestamp(0),
            locked_by: None,
            backlog: 0,
        })))
    }
    fn query_entities(&self, q: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        if let Some(t) = q.continuation.as_deref() {
            let name = q.name.as_deref();
            match decode_token(t) {
                Some(k) if valid_after(name, q.key_prefix.as_deref(), &k) => {}
                _ => return now(Err(ManagementError::BadRequest("token".into()))),
            }
        }
        now(Ok(EntityPage {
            entities: Vec::new(),
            continuation: q.continuation,
        }))
    }
    fn clean_entity_storage(
        &self,
        _: bool,
        _: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        now(Ok(CleanEntityStorageResult::default()))
    }
    fn registered_names(&self, _: FunctionKind) -> Vec<String> {
        vec!["Hello".into()]
    }
}

fn app() -> &'static (tokio::runtime::Runtime, Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let opts = HttpOptions {
            max_payload_bytes: 64 * 1024,
            max_wait: std::time::Duration::ZERO,
            ..HttpOptions::default()
        };
        (rt, router(Arc::new(Stub), opts))
    })
}

const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::DELETE, Method::PUT];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let target = parts.next().unwrap_or_default();
    let token = parts.next();
    let body = parts.next().unwrap_or_default().to_vec();
    let mut req = Request::builder()
        .method(METHODS[usize::from(m) % METHODS.len()].clone())
        .uri(target)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(Ok(v)) = token.map(HeaderValue::from_bytes) {
        req = req.header("x-ms-continuation-token", v);
    }
    let Ok(req) = req.body(Body::from(body)) else {
        return;
    };
    let (rt, app) = app();
    let resp = rt
        .block_on(app.clone().oneshot(req))
        .expect("the router is infallible");
    // The stub never fails, so a 5xx can only come from the HTTP layer itself.
    assert!(
        !resp.status().is_server_error(),
        "{} for {:?}",
        resp.status(),
        String::from_utf8_lossy(target)
    );
});

//! An in-memory `ManagementApi` for testing the HTTP shapes without a runtime.
//!
//! `Hello` completes at once with its input as output, `Fails` fails at once, `Approval` keeps
//! running until terminated. Entities: `counter` with `add` (number input) and `reset`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use perdure_core::management::*;
use perdure_core::{
    EntityId, EventKind, ExecutionId, FailureDetails, HistoryEvent, InstanceId,
    OrchestrationStatus, Payload, Timestamp,
};

#[derive(Default)]
pub(crate) struct FakeApi {
    instances: Mutex<BTreeMap<InstanceId, InstanceState>>,
    events: Mutex<Vec<(InstanceId, String, Option<Payload>)>>,
    entities: Mutex<BTreeMap<EntityId, EntityState>>,
    next: AtomicU64,
    clock: AtomicU64,
}

fn ok<'a, T: Send + 'a>(v: ManagementResult<T>) -> BoxFuture<'a, ManagementResult<T>> {
    futures::future::ready(v).boxed()
}

impl FakeApi {
    pub(crate) fn raised(&self) -> Vec<(InstanceId, String, Option<Payload>)> {
        self.events.lock().unwrap().clone()
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + self.clock.fetch_add(1, Ordering::SeqCst))
    }

    fn with_instance<T>(
        &self,
        id: &InstanceId,
        f: impl FnOnce(&mut InstanceState) -> ManagementResult<T>,
    ) -> ManagementResult<T> {
        let mut map = self.instances.lock().unwrap();
        match map.get_mut(id) {
            Some(st) => f(st),
            None => Err(ManagementError::NotFound(id.to_string())),
        }
    }

    fn do_start(&self, req: StartRequest) -> ManagementResult<InstanceId> {
        if !["Hello", "Approval", "Fails"].contains(&req.name.as_str()) {
            return Err(ManagementError::UnknownName {
                kind: FunctionKind::Orchestration,
                name: req.name,
                registered: self.registered_names(FunctionKind::Orchestration),
            });
        }
        let id = match req.instance_id {
            Some(id) => id,
            None => InstanceId::new(format!("gen-{}", self.next.fetch_add(1, Ordering::SeqCst)))
                .map_err(|e| ManagementError::Internal(e.to_string()))?,
        };
        let mut map = self.instances.lock().unwrap();
        if let Some(old) = map.get(&id)
            && !old.runtime_status.is_terminal()
        {
            return Err(ManagementError::AlreadyExists {
                instance_id: id,
                status: old.runtime_status,
            });
        }
        let now = self.now();
        let (status, output, failure) = match req.name.as_str() {
            "Hello" => (OrchestrationStatus::Completed, req.input.clone(), None),
            "Fails" => (
                OrchestrationStatus::Failed,
                None,
                Some(FailureDetails::new("Boom", "it failed")),
            ),
            _ => (OrchestrationStatus::Running, None, None),
        };
        map.insert(
            id.clone(),
            InstanceState {
                instance_id: id.clone(),
                name: req.name,
                version: req.version,
                execution_id: ExecutionId("e1".into()),
                runtime_status: status,
                input: req.input,
                output,
                custom_status: None,
                failure,
                created_at: now,
                last_updated_at: now,
                parent_instance_id: None,
            },
        );
        Ok(id)
    }

    fn matches(q: &InstanceQuery, st: &InstanceState) -> bool {
        (q.statuses.is_empty() || q.statuses.contains(&st.runtime_status))
            && q.instance_id_prefix
                .as_ref()
                .is_none_or(|p| st.instance_id.as_str().starts_with(p.as_str()))
            && q.name.as_ref().is_none_or(|n| *n == st.name)
            && q.created_from.is_none_or(|t| st.created_at >= t)
            && q.created_to.is_none_or(|t| st.created_at <= t)
    }
}

impl ManagementApi for FakeApi {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        ok(self.do_start(req))
    }

    fn get_instance(
        &self,
        id: InstanceId,
        with_payloads: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        let mut st = self.instances.lock().unwrap().get(&id).cloned();
        if let (Some(s), false) = (st.as_mut(), with_payloads) {
            s.input = None;
            s.output = None;
        }
        ok(Ok(st))
    }

    fn get_history(
        &self,
        id: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>> {
        let st = self.instances.lock().unwrap().get(&id).cloned();
        ok(Ok(st.map(|s| {
            vec![HistoryEvent::new(
                s.created_at,
                EventKind::ExecutionStarted {
                    name: s.name,
                    version: None,
                    input: s.input,
                    execution_id: s.execution_id,
                    parent: None,
                    scheduled_start: None,
                },
            )]
        })))
    }

    fn wait_for_completion(
        &self,
        id: InstanceId,
        _timeout: Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        self.get_instance(id, true)
    }

    fn query_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<InstancePage>> {
        let map = self.instances.lock().unwrap();
        let size = if query.page_size == 0 {
            100
        } else {
            query.page_size as usize
        };
        let after = query.continuation.clone();
        let mut items: Vec<InstanceState> = map
            .values()
            .filter(|s| {
                after
                    .as_ref()
                    .is_none_or(|a| s.instance_id.as_str() > a.as_str())
            })
            .filter(|s| Self::matches(&query, s))
            .take(size + 1)
            .cloned()
            .collect();
        let continuation = if items.len() > size {
            items.truncate(size);
            items.last().map(|s| s.instance_id.to_string())
        } else {
            None
        };
        ok(Ok(InstancePage {
            instances: items,
            continuation,
        }))
    }

    fn count_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>> {
        let mut out = BTreeMap::new();
        for s in self.instances.lock().unwrap().values() {
            if Self::matches(&query, s) {
                *out.entry(s.runtime_status).or_insert(0) += 1;
            }
        }
        ok(Ok(out))
    }

    fn raise_event(
        &self,
        id: InstanceId,
        name: String,
        data: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        let r = self.with_instance(&id, |st| {
            if st.runtime_status.is_terminal() {
                return Err(ManagementError::InvalidState {
                    instance_id: st.instance_id.clone(),
                    status: st.runtime_status,
                    operation: "raise an event".into(),
                });
            }
            Ok(())
        });
        if r.is_ok() {
            self.events.lock().unwrap().push((id, name, data));
        }
        ok(r)
    }

    fn terminate(
        &self,
        id: InstanceId,
        reason: Option<String>,
        _recursive: bool,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        ok(self.with_instance(&id, |st| {
            if st.runtime_status.is_terminal() {
                return Err(ManagementError::InvalidState {
                    instance_id: st.instance_id.clone(),
                    status: st.runtime_status,
                    operation: "terminate".into(),
                });
            }
            st.runtime_status = OrchestrationStatus::Terminated;
            st.output = reason.map(|r| Payload::json(&r).unwrap());
            Ok(())
        }))
    }

    fn suspend(
        &self,
        id: InstanceId,
        _reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        ok(self.with_instance(&id, |st| {
            if st.runtime_status.is_terminal() {
                return Err(ManagementError::InvalidState {
                    instance_id: st.instance_id.clone(),
                    status: st.runtime_status,
                    operation: "suspend".into(),
                });
            }
            st.runtime_status = OrchestrationStatus::Suspended;
            Ok(())
        }))
    }

    fn resume(
        &self,
        id: InstanceId,
        _reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        ok(self.with_instance(&id, |st| {
            if st.runtime_status.is_terminal() {
                return Err(ManagementError::InvalidState {
                    instance_id: st.instance_id.clone(),
                    status: st.runtime_status,
                    operation: "resume".into(),
                });
            }
            st.runtime_status = OrchestrationStatus::Running;
            Ok(())
        }))
    }

    fn rewind(
        &self,
        id: InstanceId,
        _reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        ok(self.with_instance(&id, |st| {
            if st.runtime_status != OrchestrationStatus::Failed {
                return Err(ManagementError::InvalidState {
                    instance_id: st.instance_id.clone(),
                    status: st.runtime_status,
                    operation: "rewind".into(),
                });
            }
            st.runtime_status = OrchestrationStatus::Running;
            st.failure = None;
            Ok(())
        }))
    }

    fn restart(
        &self,
        id: InstanceId,
        new_instance_id: bool,
    ) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        let old = self.instances.lock().unwrap().get(&id).cloned();
        let Some(old) = old else {
            return ok(Err(ManagementError::NotFound(id.to_string())));
        };
        let mut req = StartRequest::new(old.name);
        req.input = old.input;
        if !new_instance_id {
            req.instance_id = Some(id);
        }
        ok(self.do_start(req))
    }

    fn purge_instance(&self, id: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        let mut map = self.instances.lock().unwrap();
        let r = match map.get(&id) {
            None => Ok(PurgeResult {
                deleted: 0,
                complete: true,
            }),
            Some(s) if !s.runtime_status.is_terminal() => Err(ManagementError::InvalidState {
                instance_id: id.clone(),
                status: s.runtime_status,
                operation: "purge".into(),
            }),
            Some(_) => {
                map.remove(&id);
                Ok(PurgeResult {
                    deleted: 1,
                    complete: true,
                })
            }
        };
        ok(r)
    }

    fn purge_instances(&self, filter: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        let mut map = self.instances.lock().unwrap();
        let q = InstanceQuery {
            created_from: filter.created_from,
            created_to: filter.created_to,
            statuses: filter.statuses.clone(),
            ..Default::default()
        };
        let victims: Vec<InstanceId> = map
            .values()
            .filter(|s| s.runtime_status.is_terminal() && Self::matches(&q, s))
            .map(|s| s.instance_id.clone())
            .take(101)
            .collect();
        let complete = victims.len() <= 100;
        let mut deleted = 0;
        for v in victims.into_iter().take(100) {
            map.remove(&v);
            deleted += 1;
        }
        ok(Ok(PurgeResult { deleted, complete }))
    }

    fn signal_entity(
        &self,
        entity: EntityId,
        operation: String,
        input: Option<Payload>,
        _scheduled_time: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        if entity.name() != "counter" {
            return ok(Err(ManagementError::UnknownName {
                kind: FunctionKind::Entity,
                name: entity.name().to_string(),
                registered: vec!["counter".into()],
            }));
        }
        let now = self.now();
        let mut map = self.entities.lock().unwrap();
        let e = map.entry(entity.clone()).or_insert(EntityState {
            id: entity,
            state: None,
            last_modified: now,
            locked_by: None,
            backlog: 0,
        });
        let cur: i64 = e.state.as_ref().map(|p| p.decode().unwrap()).unwrap_or(0);
        let next = match operation.as_str() {
            "add" => cur + input.map(|p| p.decode::<i64>().unwrap_or(0)).unwrap_or(0),
            "reset" => 0,
            other => return ok(Err(ManagementError::BadRequest(format!("no op {other}")))),
        };
        e.state = Some(Payload::json(&next).unwrap());
        e.last_modified = now;
        ok(Ok(()))
    }

    fn get_entity(&self, entity: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        ok(Ok(self.entities.lock().unwrap().get(&entity).cloned()))
    }

    fn query_entities(&self, query: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        let map = self.entities.lock().unwrap();
        let entities = map
            .values()
            .filter(|e| query.name.as_ref().is_none_or(|n| e.id.name() == n))
            .map(|e| {
                let mut e = e.clone();
                if !query.fetch_state {
                    e.state = None;
                }
                e
            })
            .collect();
        ok(Ok(EntityPage {
            entities,
            continuation: None,
        }))
    }

    fn clean_entity_storage(
        &self,
        _remove_empty: bool,
        _release_orphaned_locks: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        ok(Ok(CleanEntityStorageResult {
            empty_entities_removed: 2,
            orphaned_locks_released: 1,
        }))
    }

    fn registered_names(&self, kind: FunctionKind) -> Vec<String> {
        match kind {
            FunctionKind::Orchestration => vec!["Approval".into(), "Fails".into(), "Hello".into()],
            FunctionKind::Activity => vec!["SayHello".into()],
            FunctionKind::Entity => vec!["counter".into()],
        }
    }
}

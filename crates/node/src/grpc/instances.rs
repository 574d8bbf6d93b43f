//! The orchestration client RPCs over [`ManagementApi`].

use std::time::Duration;

use perdure_core::OrchestrationStatus;
use perdure_core::management::{
    IdReusePolicy, InstanceQuery, InstanceState, ManagementApi, ManagementError, PurgeFilter,
    PurgeResult, StartRequest,
};
use tonic::Status;

use super::convert::{
    instance_id, opt_timestamp, payload_from_proto, state_to_proto, status_from_proto,
};
use super::error::status;
use super::proto;
use super::workers::{ItemKind, WorkerHub, when_served};

/// `StartInstance`. The protocol's id-reuse policy lists the statuses an existing instance may
/// have to be replaced; Perdure checks the existing instance against that list itself and
/// then starts with the matching [`IdReusePolicy`] (without a policy: Perdure's default,
/// replace a finished instance, refuse a live one).
///
/// Without `may_replace` (a key below the admin's), an existing instance is never replaced:
/// that drops its history, as a purge does.
pub(crate) async fn start(
    api: &dyn ManagementApi,
    r: proto::CreateInstanceRequest,
    workers: Option<&WorkerHub>,
    may_replace: bool,
    trace_parent: Option<String>,
) -> Result<proto::CreateInstanceResponse, Status> {
    if r.name.is_empty() {
        return Err(Status::invalid_argument(
            "name: an orchestration name is required",
        ));
    }
    let id = if r.instance_id.is_empty() {
        None
    } else {
        Some(instance_id(&r.instance_id)?)
    };
    let mut reuse_policy = IdReusePolicy::default();
    if let (Some(policy), Some(id)) = (&r.orchestration_id_reuse_policy, &id) {
        let replaceable = policy
            .replaceable_status
            .iter()
            .map(|s| status_from_proto(*s))
            .collect::<Result<Vec<_>, _>>()?;
        reuse_policy = match api.get_instance(id.clone(), false).await.map_err(status)? {
            None => IdReusePolicy::RejectExisting,
            Some(existing) if replaceable.contains(&Some(existing.runtime_status)) => {
                if existing.runtime_status.is_terminal() {
                    IdReusePolicy::ReplaceFinished
                } else {
                    IdReusePolicy::TerminateExisting
                }
            }
            Some(existing) => {
                return Err(status(ManagementError::AlreadyExists {
                    instance_id: id.clone(),
                    status: existing.runtime_status,
                }));
            }
        };
    }
    if !may_replace {
        reuse_policy = IdReusePolicy::RejectExisting;
    }
    let req = StartRequest {
        name: r.name,
        version: r.version.filter(|v| !v.is_empty()),
        instance_id: id,
        input: payload_from_proto(r.input, "input")?,
        scheduled_start: opt_timestamp(
            r.scheduled_start_timestamp.as_ref(),
            "scheduledStartTimestamp",
        )?,
        reuse_policy,
        trace_parent,
    };
    let name = req.name.clone();
    let id = when_served(workers, ItemKind::Orchestration, &name, || {
        api.start(req.clone())
    })
    .await
    .map_err(|e| {
        if !may_replace && e.code() == tonic::Code::AlreadyExists {
            Status::permission_denied(format!(
                "{}: replacing an existing instance drops its history, as a purge does, which \
                 needs the admin role",
                e.message()
            ))
        } else {
            e
        }
    })?;
    Ok(proto::CreateInstanceResponse {
        instance_id: id.as_str().to_string(),
    })
}

/// The answer of `GetInstance` and the waits: `exists = false` for an unknown id (what the
/// SDKs expect, rather than `NOT_FOUND`).
fn instance_response(s: Option<InstanceState>, with_payloads: bool) -> proto::GetInstanceResponse {
    match s {
        None => proto::GetInstanceResponse {
            exists: false,
            orchestration_state: None,
        },
        Some(mut s) => {
            if !with_payloads {
                s.input = None;
                s.output = None;
            }
            proto::GetInstanceResponse {
                exists: true,
                orchestration_state: Some(state_to_proto(&s)),
            }
        }
    }
}

/// `GetInstance`.
pub(crate) async fn get(
    api: &dyn ManagementApi,
    r: proto::GetInstanceRequest,
) -> Result<proto::GetInstanceResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    let s = api
        .get_instance(id, r.get_inputs_and_outputs)
        .await
        .map_err(status)?;
    Ok(instance_response(s, r.get_inputs_and_outputs))
}

/// `WaitForInstanceCompletion`: the node's own completion wait (woken by the commit that
/// finishes the instance), bounded by the call's deadline when it has one (`timeout`);
/// without a deadline it waits until the instance finishes or the node shuts down.
pub(crate) async fn wait_for_completion(
    api: &dyn ManagementApi,
    r: proto::GetInstanceRequest,
    timeout: Option<Duration>,
) -> Result<proto::GetInstanceResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    let s = api
        .wait_for_completion(id.clone(), timeout.unwrap_or(Duration::MAX))
        .await
        .map_err(status)?;
    match s {
        Some(s) if !s.runtime_status.is_terminal() => Err(Status::deadline_exceeded(format!(
            "instance {id} is still {} at the call's deadline",
            s.runtime_status
        ))),
        s => Ok(instance_response(s, r.get_inputs_and_outputs)),
    }
}

/// First and longest pause between the reads of `WaitForInstanceStart`.
const START_RECHECK: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));

/// `WaitForInstanceStart`: answers as soon as the instance is no longer pending. The
/// management contract has no notification for a start (only for completion), so this reads
/// again with a doubling pause (20 ms up to 1 s), until the call's deadline.
pub(crate) async fn wait_for_start(
    api: &dyn ManagementApi,
    r: proto::GetInstanceRequest,
    timeout: Option<Duration>,
) -> Result<proto::GetInstanceResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
    let mut pause = START_RECHECK.0;
    loop {
        let s = api
            .get_instance(id.clone(), r.get_inputs_and_outputs)
            .await
            .map_err(status)?;
        match &s {
            Some(st) if st.runtime_status == OrchestrationStatus::Pending => {}
            _ => return Ok(instance_response(s, r.get_inputs_and_outputs)),
        }
        let wake = tokio::time::Instant::now() + pause;
        if deadline.is_some_and(|d| wake >= d) {
            return Err(Status::deadline_exceeded(format!(
                "instance {id} is still pending at the call's deadline"
            )));
        }
        tokio::time::sleep_until(wake).await;
        pause = (pause * 2).min(START_RECHECK.1);
    }
}

/// `RaiseEvent`.
pub(crate) async fn raise_event(
    api: &dyn ManagementApi,
    r: proto::RaiseEventRequest,
) -> Result<proto::RaiseEventResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    if r.name.is_empty() {
        return Err(Status::invalid_argument("name: an event name is required"));
    }
    let data = payload_from_proto(r.input, "input")?;
    api.raise_event(id, r.name, data).await.map_err(status)?;
    Ok(proto::RaiseEventResponse {})
}

/// `TerminateInstance`: the protocol's `output` becomes Perdure's termination reason, a
/// text that is the terminated instance's output as a JSON string. An output that is a JSON
/// string is unwrapped first, so that it reads back unchanged; other JSON (an object, a
/// number) reads back as a JSON string holding its text.
pub(crate) async fn terminate(
    api: &dyn ManagementApi,
    r: proto::TerminateRequest,
) -> Result<proto::TerminateResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    let reason = r
        .output
        .map(|o| serde_json::from_str::<String>(&o).unwrap_or(o));
    api.terminate(id, reason, r.recursive)
        .await
        .map_err(status)?;
    Ok(proto::TerminateResponse {})
}

/// `SuspendInstance`.
pub(crate) async fn suspend(
    api: &dyn ManagementApi,
    r: proto::SuspendRequest,
) -> Result<proto::SuspendResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    api.suspend(id, r.reason).await.map_err(status)?;
    Ok(proto::SuspendResponse {})
}

/// `ResumeInstance`.
pub(crate) async fn resume(
    api: &dyn ManagementApi,
    r: proto::ResumeRequest,
) -> Result<proto::ResumeResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    api.resume(id, r.reason).await.map_err(status)?;
    Ok(proto::ResumeResponse {})
}

/// `RewindInstance`.
pub(crate) async fn rewind(
    api: &dyn ManagementApi,
    r: proto::RewindInstanceRequest,
) -> Result<proto::RewindInstanceResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    api.rewind(id, r.reason).await.map_err(status)?;
    Ok(proto::RewindInstanceResponse {})
}

/// `RestartInstance`.
pub(crate) async fn restart(
    api: &dyn ManagementApi,
    r: proto::RestartInstanceRequest,
    may_replace: bool,
) -> Result<proto::RestartInstanceResponse, Status> {
    let id = instance_id(&r.instance_id)?;
    if !r.restart_with_new_instance_id && !may_replace {
        return Err(Status::permission_denied(format!(
            "restarting {id} under the same id drops its history, as a purge does, which needs \
             the admin role"
        )));
    }
    let new_id = api
        .restart(id, r.restart_with_new_instance_id)
        .await
        .map_err(status)?;
    Ok(proto::RestartInstanceResponse {
        instance_id: new_id.as_str().to_string(),
    })
}

/// Statuses of a filter: `Ok(None)` when the filter names only statuses no Perdure instance
/// has (CANCELED), so that nothing matches.
fn statuses(list: &[i32]) -> Result<Option<Vec<OrchestrationStatus>>, Status> {
    let mapped = list
        .iter()
        .map(|s| status_from_proto(*s))
        .collect::<Result<Vec<_>, _>>()?;
    let known: Vec<OrchestrationStatus> = mapped.iter().flatten().copied().collect();
    Ok((known.is_empty() == list.is_empty()).then_some(known))
}

/// `QueryInstances`: Perdure's instance query; the continuation token is Perdure's own, passed
/// through unchanged. Task hub names are ignored (a node serves one task hub).
pub(crate) async fn query(
    api: &dyn ManagementApi,
    r: proto::QueryInstancesRequest,
) -> Result<proto::QueryInstancesResponse, Status> {
    let q = r.query.unwrap_or_default();
    let Some(statuses) = statuses(&q.runtime_status)? else {
        return Ok(proto::QueryInstancesResponse::default());
    };
    let page_size = u32::try_from(q.max_instance_count).map_err(|_| {
        Status::invalid_argument(format!(
            "maxInstanceCount: {} is negative",
            q.max_instance_count
        ))
    })?;
    let query = InstanceQuery {
        created_from: opt_timestamp(q.created_time_from.as_ref(), "createdTimeFrom")?,
        created_to: opt_timestamp(q.created_time_to.as_ref(), "createdTimeTo")?,
        statuses,
        instance_id_prefix: q.instance_id_prefix.filter(|p| !p.is_empty()),
        name: None,
        page_size,
        continuation: q.continuation_token.filter(|t| !t.is_empty()),
        fetch_payloads: q.fetch_inputs_and_outputs,
    };
    let page = api.query_instances(query).await.map_err(status)?;
    Ok(proto::QueryInstancesResponse {
        orchestration_state: page.instances.iter().map(state_to_proto).collect(),
        continuation_token: page.continuation,
    })
}

fn purged(r: PurgeResult) -> proto::PurgeInstancesResponse {
    proto::PurgeInstancesResponse {
        deleted_instance_count: i32::try_from(r.deleted).unwrap_or(i32::MAX),
        is_complete: Some(r.complete),
    }
}

/// Purges one instance; an unknown id purges nothing (as in the other Durable Task
/// backends), a live instance is refused with `FAILED_PRECONDITION`.
async fn purge_one(api: &dyn ManagementApi, id: &str) -> Result<PurgeResult, Status> {
    let id = instance_id(id)?;
    match api.purge_instance(id).await {
        Ok(r) => Ok(r),
        Err(ManagementError::NotFound(_)) => Ok(PurgeResult {
            deleted: 0,
            complete: true,
        }),
        Err(e) => Err(status(e)),
    }
}

/// `PurgeInstances`: by id, by a batch of ids, or by filter (one bounded batch per call;
/// `isComplete = false` asks the caller to call again). `recursive` is not applied: Perdure
/// purges the named instances only.
pub(crate) async fn purge(
    api: &dyn ManagementApi,
    r: proto::PurgeInstancesRequest,
) -> Result<proto::PurgeInstancesResponse, Status> {
    use proto::purge_instances_request::Request;
    match r.request {
        None => Err(Status::invalid_argument(
            "PurgeInstances needs an instanceId, a purgeInstanceFilter or an instanceBatch",
        )),
        Some(Request::InstanceId(id)) => Ok(purged(purge_one(api, &id).await?)),
        Some(Request::InstanceBatch(batch)) => {
            let mut total = PurgeResult {
                deleted: 0,
                complete: true,
            };
            for id in &batch.instance_ids {
                total.deleted += purge_one(api, id).await?.deleted;
            }
            Ok(purged(total))
        }
        Some(Request::PurgeInstanceFilter(f)) => {
            let Some(statuses) = statuses(&f.runtime_status)? else {
                return Ok(purged(PurgeResult {
                    deleted: 0,
                    complete: true,
                }));
            };
            if let Some(s) = statuses.iter().find(|s| !s.is_terminal()) {
                return Err(Status::invalid_argument(format!(
                    "runtimeStatus: only finished instances can be purged, not {s}"
                )));
            }
            let filter = PurgeFilter {
                created_from: opt_timestamp(f.created_time_from.as_ref(), "createdTimeFrom")?,
                created_to: opt_timestamp(f.created_time_to.as_ref(), "createdTimeTo")?,
                statuses,
            };
            Ok(purged(api.purge_instances(filter).await.map_err(status)?))
        }
    }
}

/// `ListInstanceIds`: the ids of finished instances (completed, failed or terminated; the
/// request's statuses narrow that), completed within the optional time range. Pages follow
/// Perdure's instance query order, not completion time; `lastInstanceKey` is Perdure's
/// continuation token. A page may hold fewer ids than asked (the completion-time filter
/// applies after the query), but its key always leads on.
pub(crate) async fn list_ids(
    api: &dyn ManagementApi,
    r: proto::ListInstanceIdsRequest,
) -> Result<proto::ListInstanceIdsResponse, Status> {
    let Some(mut statuses) = statuses(&r.runtime_status)? else {
        return Ok(proto::ListInstanceIdsResponse::default());
    };
    if statuses.is_empty() {
        statuses = OrchestrationStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
    } else if let Some(s) = statuses.iter().find(|s| !s.is_terminal()) {
        return Err(Status::invalid_argument(format!(
            "runtimeStatus: only finished instances are listed, not {s}"
        )));
    }
    let from = opt_timestamp(r.completed_time_from.as_ref(), "completedTimeFrom")?;
    let to = opt_timestamp(r.completed_time_to.as_ref(), "completedTimeTo")?;
    let page_size = u32::try_from(r.page_size)
        .map_err(|_| Status::invalid_argument(format!("pageSize: {} is negative", r.page_size)))?;
    let query = InstanceQuery {
        statuses,
        page_size,
        continuation: r.last_instance_key.filter(|t| !t.is_empty()),
        ..InstanceQuery::default()
    };
    let page = api.query_instances(query).await.map_err(status)?;
    Ok(proto::ListInstanceIdsResponse {
        instance_ids: page
            .instances
            .iter()
            .filter(|s| from.is_none_or(|f| s.last_updated_at >= f))
            .filter(|s| to.is_none_or(|t| s.last_updated_at <= t))
            .map(|s| s.instance_id.as_str().to_string())
            .collect(),
        last_instance_key: page.continuation,
    })
}

/// Events per `HistoryChunk` of `StreamInstanceHistory`.
const HISTORY_CHUNK_EVENTS: usize = 500;

/// `StreamInstanceHistory`: the current execution's history, in chunks. An execution id that
/// is not the current execution's is `NOT_FOUND` (Perdure keeps the current execution's
/// history only).
pub(crate) async fn history(
    api: &dyn ManagementApi,
    r: proto::StreamInstanceHistoryRequest,
) -> Result<Vec<proto::HistoryChunk>, Status> {
    let id = instance_id(&r.instance_id)?;
    let events = api
        .get_history(id.clone())
        .await
        .map_err(status)?
        .ok_or_else(|| Status::not_found(format!("no instance '{id}'")))?;
    if let Some(wanted) = r.execution_id.as_deref().filter(|e| !e.is_empty()) {
        let current = events.iter().find_map(|e| match &e.kind {
            perdure_core::EventKind::ExecutionStarted { execution_id, .. } => {
                Some(execution_id.0.as_str())
            }
            _ => None,
        });
        if current != Some(wanted) {
            return Err(Status::not_found(format!(
                "instance '{id}' has no execution '{wanted}' (its current execution is {}); \
                 Perdure keeps the current execution's history only",
                current.unwrap_or("not started")
            )));
        }
    }
    let chunks = events
        .chunks(HISTORY_CHUNK_EVENTS)
        .map(|c| proto::HistoryChunk {
            events: c
                .iter()
                .map(|e| super::history::event_to_proto(&id, e))
                .collect(),
        })
        .collect();
    Ok(chunks)
}

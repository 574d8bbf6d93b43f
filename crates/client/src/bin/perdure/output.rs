//! How the CLI shows things: aligned tables and key/value blocks for people, JSON for scripts.

use perdure_client::Payload;
use perdure_core::iso8601;
use perdure_core::management::InstanceState;
use serde_json::{Value, json};

pub(crate) fn payload_text(p: Option<&Payload>) -> String {
    match p {
        None => String::new(),
        Some(p) => p
            .as_json_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("<{} bytes>", p.len())),
    }
}

pub(crate) fn payload_json(p: Option<&Payload>) -> Value {
    p.and_then(|p| p.as_json_str())
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null)
}

pub(crate) fn state_json(s: &InstanceState) -> Value {
    json!({
        "instanceId": s.instance_id.as_str(),
        "name": s.name,
        "runtimeStatus": s.runtime_status.as_str(),
        "input": payload_json(s.input.as_ref()),
        "output": payload_json(s.output.as_ref()),
        "customStatus": payload_json(s.custom_status.as_ref()),
        "failure": s.failure.as_ref().map(|f| f.to_string()),
        "createdTime": iso8601::format(s.created_at),
        "lastUpdatedTime": iso8601::format(s.last_updated_at),
    })
}

/// Prints rows as an aligned table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count().min(60));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let c: String = if c.chars().count() > 60 {
                c.chars().take(59).chain(['…']).collect()
            } else {
                c.clone()
            };
            if i + 1 == cells.len() {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub(crate) fn print_state(s: &InstanceState) {
    let rows = [
        ("instance", s.instance_id.to_string()),
        ("name", s.name.clone()),
        ("status", s.runtime_status.to_string()),
        ("created", iso8601::format(s.created_at)),
        ("updated", iso8601::format(s.last_updated_at)),
        ("input", payload_text(s.input.as_ref())),
        ("output", payload_text(s.output.as_ref())),
        ("custom status", payload_text(s.custom_status.as_ref())),
        (
            "failure",
            s.failure
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default(),
        ),
    ];
    for (k, v) in rows {
        if !v.is_empty() {
            println!("{k:<14} {v}");
        }
    }
}

pub(crate) fn event_detail(kind: &perdure_core::EventKind) -> String {
    use perdure_core::EventKind as K;
    let p = |p: &Option<Payload>| payload_text(p.as_ref());
    match kind {
        K::ExecutionStarted { name, input, .. } => format!("{name} input={}", p(input)),
        K::ExecutionCompleted {
            status,
            result,
            failure,
        } => match failure {
            Some(f) => format!("{status}: {f}"),
            None => format!("{status} output={}", p(result)),
        },
        K::TaskScheduled { name, input, .. } => format!("{name} input={}", p(input)),
        K::TaskCompleted {
            task_scheduled_id,
            result,
        } => format!("#{task_scheduled_id} result={}", p(result)),
        K::TaskFailed {
            task_scheduled_id,
            failure,
        } => format!("#{task_scheduled_id} {failure}"),
        K::TimerCreated { fire_at } => format!("fires {}", iso8601::format(*fire_at)),
        K::TimerFired { timer_id, .. } => format!("#{timer_id}"),
        K::EventRaised { name, input } => format!("{name} data={}", p(input)),
        K::SubOrchestrationInstanceCreated {
            name, instance_id, ..
        } => format!("{name} as {instance_id}"),
        K::ExecutionTerminated { reason }
        | K::ExecutionSuspended { reason }
        | K::ExecutionResumed { reason } => reason.clone().unwrap_or_default(),
        K::EntityOperationSignaled {
            entity, operation, ..
        }
        | K::EntityOperationCalled {
            entity, operation, ..
        } => format!("{entity} {operation}"),
        _ => String::new(),
    }
}

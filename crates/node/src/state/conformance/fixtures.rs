//! Records and messages the state-layer cases write.

use perdure_core::{
    Encoding, EventKind, ExecutionId, HistoryEvent, InstanceId, OrchestrationStatus, Payload,
    Timestamp,
};

use crate::state::records::{ActivityTask, InboxMessage, InstanceRecord, MessageBody, Target};

/// Over the chunk size: values holding it are stored in chunks.
pub(super) const LARGE: usize = 200_000;

/// An instance id the cases use (a valid literal).
pub(super) fn instance(id: &str) -> InstanceId {
    InstanceId::new(id).unwrap_or_else(|e| panic!("instance id {id:?}: {e}"))
}

/// Opaque bytes of `len` bytes.
pub(super) fn payload(len: usize) -> Payload {
    Payload {
        encoding: Encoding::Binary,
        data: (0..len).map(|i| (i % 251) as u8).collect(),
    }
}

/// An EventRaised event named `e<n>`, with `data` bytes of input.
pub(super) fn event(n: u64, data: usize) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(n),
        EventKind::EventRaised {
            name: format!("e{n}"),
            input: (data > 0).then(|| payload(data)),
        },
    )
}

/// Message `n` to instance `id` (an EventRaised named `e<n>`).
pub(super) fn message(id: &str, n: u64, data: usize) -> InboxMessage {
    InboxMessage {
        target: Target::Instance(instance(id)),
        body: MessageBody::Event {
            execution_id: None,
            event: event(n, data),
        },
    }
}

/// The `n` of a message made by [`message`].
pub(super) fn number(msg: &InboxMessage) -> u64 {
    match &msg.body {
        MessageBody::Event { event, .. } => match &event.kind {
            EventKind::EventRaised { name, .. } => name
                .strip_prefix('e')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a case message: {name}")),
            other => panic!("not a case message: {other:?}"),
        },
        other => panic!("not a case message: {other:?}"),
    }
}

/// A finished instance's record.
pub(super) fn record(id: &str) -> InstanceRecord {
    InstanceRecord {
        instance_id: instance(id),
        name: "Conformance".into(),
        version: None,
        execution_id: ExecutionId("x1".into()),
        status: OrchestrationStatus::Completed,
        input: Some(payload(16)),
        output: None,
        custom_status: None,
        failure: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(2),
        parent: None,
        history_len: 0,
        original_input: None,
    }
}

/// Activity task `seq` of instance `id`, first attempt, leased until `lease_until`.
pub(super) fn task(id: &str, seq: i64, data: usize, lease_until: Timestamp) -> ActivityTask {
    ActivityTask {
        instance_id: instance(id),
        execution_id: ExecutionId("x1".into()),
        seq,
        name: "Work".into(),
        version: None,
        input: (data > 0).then(|| payload(data)),
        attempt: 1,
        lease_until,
    }
}

//! [`HistoryBuilder`]: a history written by hand, episode by episode.

use serde::Serialize;

use crate::{EventKind, HistoryEvent, OrchestrationStatus, Timestamp};

/// Builds a history event by event. Action events get the sequence number given;
/// `episode(t)` closes the current episode (OrchestratorCompleted) and opens the next
/// (OrchestratorStarted at `t`).
///
/// ```
/// use perdure_core::testing::HistoryBuilder;
/// use perdure_core::Timestamp;
/// let h = HistoryBuilder::new(Timestamp(0))
///     .started("Chain", &1)
///     .task_scheduled(0, "Step")
///     .episode(Timestamp(10))
///     .task_completed(0, &2)
///     .completed(&2)
///     .build();
/// assert_eq!(h.len(), 8);
/// ```
#[derive(Clone, Debug)]
pub struct HistoryBuilder {
    events: Vec<HistoryEvent>,
    now: Timestamp,
}

impl HistoryBuilder {
    /// A history whose first episode starts at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            events: vec![HistoryEvent::new(start, EventKind::OrchestratorStarted)],
            now: start,
        }
    }

    /// Appends any event (its timestamp is set to the current episode's time).
    pub fn event(mut self, mut event: HistoryEvent) -> Self {
        event.timestamp = self.now;
        self.events.push(event);
        self
    }

    fn action(mut self, event_id: i64, kind: EventKind) -> Self {
        self.events.push(HistoryEvent {
            event_id,
            timestamp: self.now,
            kind,
        });
        self
    }

    /// ExecutionStarted of `name` with a JSON input.
    pub fn started<T: Serialize + ?Sized>(self, name: &str, input: &T) -> Self {
        self.event(super::events::execution_started(name, input))
    }

    /// TaskScheduled with sequence number `seq`.
    pub fn task_scheduled(self, seq: i64, name: &str) -> Self {
        self.action(
            seq,
            EventKind::TaskScheduled {
                name: name.to_string(),
                version: None,
                input: None,
            },
        )
    }

    /// TimerCreated with sequence number `seq`.
    pub fn timer_created(self, seq: i64, fire_at: Timestamp) -> Self {
        self.action(seq, EventKind::TimerCreated { fire_at })
    }

    /// TaskCompleted for `seq`.
    pub fn task_completed<T: Serialize + ?Sized>(self, seq: i64, result: &T) -> Self {
        self.event(super::events::task_completed(seq, result))
    }

    /// TimerFired for `seq`.
    pub fn timer_fired(self, seq: i64, fire_at: Timestamp) -> Self {
        self.event(super::events::timer_fired(seq, fire_at))
    }

    /// EventRaised.
    pub fn event_raised<T: Serialize + ?Sized>(self, name: &str, data: &T) -> Self {
        self.event(super::events::event_raised(name, data))
    }

    /// ExecutionCompleted(Completed) with a JSON output, then OrchestratorCompleted.
    pub fn completed<T: Serialize + ?Sized>(self, output: &T) -> Self {
        let result = crate::orchestration::task::encode_payload(output)
            .ok()
            .flatten();
        self.event(HistoryEvent::new(
            Timestamp(0),
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Completed,
                result,
                failure: None,
            },
        ))
        .end()
    }

    /// Closes the current episode and starts the next at `t`.
    pub fn episode(self, t: Timestamp) -> Self {
        let mut b = self.end();
        b.now = t;
        b.events
            .push(HistoryEvent::new(t, EventKind::OrchestratorStarted));
        b
    }

    /// Appends OrchestratorCompleted.
    pub fn end(mut self) -> Self {
        self.events.push(HistoryEvent::new(
            self.now,
            EventKind::OrchestratorCompleted,
        ));
        self
    }

    /// The events.
    pub fn build(self) -> Vec<HistoryEvent> {
        self.events
    }
}

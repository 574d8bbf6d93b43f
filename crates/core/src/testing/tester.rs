//! [`OrchestrationTester`]: run an orchestration on virtual time with mocked effects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::activity::ActivityContext;
use crate::entity::{EntityAction, OperationRequest, OperationResult, execute_entity_batch};
use crate::orchestration::LogRecord;
use crate::orchestration::task::{decode_payload, encode_payload};
use crate::registry::{Registry, execute_activity};
use crate::replay::{OrchestrationExecutor, Outcome};
use crate::{
    EntityId, EventKind, ExecutionId, FailureDetails, HistoryEvent, InstanceId, OrchestratorAction,
    ParentInstance, Payload, Timestamp,
};

type Mock = Box<dyn FnMut(Option<Payload>) -> Result<Option<Payload>, FailureDetails> + Send>;

fn typed_mock<I, O, F>(mut f: F) -> Mock
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnMut(I) -> Result<O, FailureDetails> + Send + 'static,
{
    Box::new(move |input: Option<Payload>| {
        let input: I = decode_payload(input.as_ref())
            .map_err(|m| FailureDetails::new("PayloadDecodeError", m))?;
        let out = f(input)?;
        encode_payload(&out).map_err(|m| FailureDetails::new("PayloadEncodeError", m))
    })
}

/// The result of [`OrchestrationTester::run`].
#[derive(Clone, Debug)]
pub struct TestRun {
    /// How the (last) execution ended; `Running` if it waits for something that never comes.
    pub outcome: Outcome,
    /// The history of the last execution.
    pub history: Vec<HistoryEvent>,
    /// Histories of earlier executions (ended by continue-as-new), oldest first.
    pub previous_histories: Vec<Vec<HistoryEvent>>,
    /// Every action of every episode, in order.
    pub actions: Vec<OrchestratorAction>,
    /// The last custom status.
    pub custom_status: Option<Payload>,
    /// Logged lines.
    pub logs: Vec<LogRecord>,
    /// Episodes run.
    pub episodes: usize,
    /// The virtual time when the run ended.
    pub end_time: Timestamp,
    /// Entity states after the run (entities run by the tester).
    pub entity_states: BTreeMap<EntityId, Payload>,
}

impl TestRun {
    /// The output, decoded; the failure if the orchestration failed.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, FailureDetails> {
        match &self.outcome {
            Outcome::Completed { output } => decode_payload(output.as_ref())
                .map_err(|m| FailureDetails::new("PayloadDecodeError", m)),
            Outcome::Failed { failure } => Err(failure.clone()),
            other => Err(FailureDetails::new(
                "NotCompleted",
                format!("the orchestration did not complete: {other:?}"),
            )),
        }
    }

    /// The custom status, decoded.
    pub fn custom_status<T: DeserializeOwned>(&self) -> Option<T> {
        self.custom_status.as_ref().and_then(|p| p.decode().ok())
    }
}

/// Runs orchestrations without a node: activities, sub-orchestrations and entity operations
/// are answered by mocks, or else by the registered functions (activities run to completion
/// on the calling thread); timers fire by skipping virtual time to the next due timer; locks
/// are granted at once.
///
/// ```
/// use std::sync::Arc;
/// use perdure_core::{registry::Registry, orchestration::OrchestrationContext, testing::OrchestrationTester};
/// let mut registry = Registry::new();
/// registry.add_orchestration("Greet", |ctx: OrchestrationContext, name: String| async move {
///     ctx.create_timer_after(std::time::Duration::from_secs(60)).await;
///     let s: String = ctx.call_activity("Hello", name).await?;
///     Ok::<_, perdure_core::TaskError>(s)
/// });
/// let mut tester = OrchestrationTester::new(Arc::new(registry));
/// tester.mock_activity("Hello", |name: String| Ok(format!("Hello {name}")));
/// let run = tester.run("Greet", &"Ada");
/// assert_eq!(run.output::<String>().unwrap(), "Hello Ada");
/// assert_eq!(run.end_time.as_millis() - tester.start_time().as_millis(), 60_000);
/// ```
pub struct OrchestrationTester {
    registry: Arc<Registry>,
    instance_id: InstanceId,
    start: Timestamp,
    activities: BTreeMap<String, Mock>,
    sub_orchestrations: BTreeMap<String, Mock>,
    entity_operations: BTreeMap<(String, String), Mock>,
    raised: Vec<(Timestamp, String, Option<Payload>)>,
    entity_states: BTreeMap<EntityId, Payload>,
    max_episodes: usize,
    max_executions: usize,
}

impl std::fmt::Debug for OrchestrationTester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestrationTester")
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl OrchestrationTester {
    /// A tester over a registry; instance id `"test"`, start time 2024-01-01T00:00:00Z.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            instance_id: InstanceId::new_unchecked("test"),
            start: Timestamp(1_704_067_200_000),
            activities: BTreeMap::new(),
            sub_orchestrations: BTreeMap::new(),
            entity_operations: BTreeMap::new(),
            raised: Vec::new(),
            entity_states: BTreeMap::new(),
            max_episodes: 1_000_000,
            max_executions: 100,
        }
    }

    /// Sets the instance id.
    pub fn with_instance_id(&mut self, id: InstanceId) -> &mut Self {
        self.instance_id = id;
        self
    }

    /// Sets the virtual start time.
    pub fn with_start_time(&mut self, t: Timestamp) -> &mut Self {
        self.start = t;
        self
    }

    /// The virtual start time.
    pub fn start_time(&self) -> Timestamp {
        self.start
    }

    /// Answers activity `name` with `f` instead of the registered activity.
    pub fn mock_activity<I, O, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnMut(I) -> Result<O, FailureDetails> + Send + 'static,
    {
        self.activities.insert(name.to_string(), typed_mock(f));
        self
    }

    /// Answers sub-orchestration `name` with `f` instead of running it.
    pub fn mock_sub_orchestration<I, O, F>(&mut self, name: &str, f: F) -> &mut Self
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnMut(I) -> Result<O, FailureDetails> + Send + 'static,
    {
        self.sub_orchestrations
            .insert(name.to_string(), typed_mock(f));
        self
    }

    /// Answers operation `operation` of entities named `entity` with `f`.
    pub fn mock_entity_operation<I, O, F>(
        &mut self,
        entity: &str,
        operation: &str,
        f: F,
    ) -> &mut Self
    where
        I: DeserializeOwned,
        O: Serialize,
        F: FnMut(I) -> Result<O, FailureDetails> + Send + 'static,
    {
        self.entity_operations.insert(
            (entity.to_lowercase(), operation.to_string()),
            typed_mock(f),
        );
        self
    }

    /// Raises an external event `after` the start (virtual time).
    pub fn raise_event_after<T: Serialize + ?Sized>(
        &mut self,
        after: Duration,
        name: &str,
        data: &T,
    ) -> &mut Self {
        let input = encode_payload(data).ok().flatten();
        self.raised
            .push((self.start.add(after), name.to_string(), input));
        self
    }

    /// Sets an entity's state before the run.
    pub fn with_entity_state<T: Serialize + ?Sized>(
        &mut self,
        id: EntityId,
        state: &T,
    ) -> &mut Self {
        if let Ok(p) = Payload::json(state) {
            self.entity_states.insert(id, p);
        }
        self
    }

    /// Runs orchestration `name` with `input` until it ends or waits for nothing that can
    /// come.
    pub fn run<T: Serialize + ?Sized>(&mut self, name: &str, input: &T) -> TestRun {
        let input = encode_payload(input).ok().flatten();
        let id = self.instance_id.clone();
        let start = self.start;
        self.run_instance(id, name.to_string(), input, None, start)
    }

    fn run_instance(
        &mut self,
        id: InstanceId,
        name: String,
        input: Option<Payload>,
        parent: Option<ParentInstance>,
        start: Timestamp,
    ) -> TestRun {
        let mut raised: Vec<(Timestamp, String, Option<Payload>)> = if parent.is_none() {
            self.raised.clone()
        } else {
            Vec::new()
        };
        raised.sort_by_key(|(t, _, _)| *t);
        let mut raised: VecDeque<_> = raised.into();
        let mut now = start;
        let mut execution = 1usize;
        let started = |input: Option<Payload>, execution: usize, now: Timestamp| {
            HistoryEvent::new(
                now,
                EventKind::ExecutionStarted {
                    name: name.clone(),
                    version: None,
                    input,
                    execution_id: ExecutionId(format!("e{execution}")),
                    parent: parent.clone(),
                    scheduled_start: None,
                },
            )
        };
        let mut ex = OrchestrationExecutor::new(self.registry.clone(), id.clone());
        let mut inbox = vec![started(input, execution, now)];
        let mut timers: BTreeMap<(Timestamp, i64), ()> = BTreeMap::new();
        let mut run = TestRun {
            outcome: Outcome::Running,
            history: Vec::new(),
            previous_histories: Vec::new(),
            actions: Vec::new(),
            custom_status: None,
            logs: Vec::new(),
            episodes: 0,
            end_time: now,
            entity_states: BTreeMap::new(),
        };
        loop {
            let mut episode = ex.execute(now, std::mem::take(&mut inbox));
            run.episodes += 1;
            run.history.append(&mut episode.history);
            run.custom_status = episode.custom_status;
            run.logs.append(&mut episode.logs);
            for action in &episode.actions {
                self.perform(&id, action, now, &mut inbox, &mut timers);
            }
            run.actions.append(&mut episode.actions);
            match episode.outcome {
                Outcome::Running => {}
                Outcome::ContinuedAsNew {
                    input,
                    carried_events,
                } if execution < self.max_executions => {
                    execution += 1;
                    ex = OrchestrationExecutor::new(self.registry.clone(), id.clone());
                    timers.clear();
                    inbox = vec![started(input, execution, now)];
                    inbox.extend(carried_events);
                    run.previous_histories
                        .push(std::mem::take(&mut run.history));
                    continue;
                }
                outcome => {
                    run.outcome = outcome;
                    break;
                }
            }
            if run.episodes >= self.max_episodes {
                break;
            }
            if inbox.is_empty() {
                let next_timer = timers.keys().next().map(|(t, _)| *t);
                let next_event = raised.front().map(|(t, _, _)| *t);
                let next = match (next_timer, next_event) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => break,
                };
                now = now.max(next);
                while let Some(&(fire_at, seq)) = timers.keys().next() {
                    if fire_at > now {
                        break;
                    }
                    timers.remove(&(fire_at, seq));
                    inbox.push(HistoryEvent::new(
                        now,
                        EventKind::TimerFired {
                            timer_id: seq,
                            fire_at,
                        },
                    ));
                }
            }
            while raised.front().is_some_and(|(t, _, _)| *t <= now) {
                if let Some((_, name, input)) = raised.pop_front() {
                    inbox.push(HistoryEvent::new(
                        now,
                        EventKind::EventRaised { name, input },
                    ));
                }
            }
        }
        run.end_time = now;
        run.entity_states = self.entity_states.clone();
        run
    }

    fn perform(
        &mut self,
        id: &InstanceId,
        action: &OrchestratorAction,
        now: Timestamp,
        inbox: &mut Vec<HistoryEvent>,
        timers: &mut BTreeMap<(Timestamp, i64), ()>,
    ) {
        let event = |kind| HistoryEvent::new(now, kind);
        match action {
            OrchestratorAction::ScheduleTask {
                id: seq,
                name,
                input,
                ..
            } => {
                let result = match self.activities.get_mut(name) {
                    Some(mock) => mock(input.clone()),
                    None => match self.registry.activity(name) {
                        Some(f) => futures::executor::block_on(execute_activity(
                            &f,
                            ActivityContext::new(id.clone(), name.clone(), *seq, 1),
                            input.clone(),
                        )),
                        None => Err(FailureDetails::new(
                            "ActivityNotFound",
                            format!("no activity named '{name}' is registered"),
                        )),
                    },
                };
                inbox.push(event(match result {
                    Ok(result) => EventKind::TaskCompleted {
                        task_scheduled_id: *seq,
                        result,
                    },
                    Err(failure) => EventKind::TaskFailed {
                        task_scheduled_id: *seq,
                        failure,
                    },
                }));
            }
            OrchestratorAction::CreateTimer { id: seq, fire_at } => {
                timers.insert((*fire_at, *seq), ());
            }
            OrchestratorAction::CreateSubOrchestration {
                id: seq,
                name,
                instance_id,
                input,
                ..
            } => {
                let result = match self.sub_orchestrations.get_mut(name) {
                    Some(mock) => mock(input.clone()),
                    None => {
                        let parent = ParentInstance {
                            name: String::new(),
                            instance_id: id.clone(),
                            execution_id: ExecutionId(String::new()),
                            task_scheduled_id: *seq,
                        };
                        let child = self.run_instance(
                            instance_id.clone(),
                            name.clone(),
                            input.clone(),
                            Some(parent),
                            now,
                        );
                        match child.outcome {
                            Outcome::Completed { output } => Ok(output),
                            Outcome::Failed { failure } => Err(failure),
                            other => Err(FailureDetails::new(
                                "SubOrchestrationNotCompleted",
                                format!("{other:?}"),
                            )),
                        }
                    }
                };
                inbox.push(event(match result {
                    Ok(result) => EventKind::SubOrchestrationInstanceCompleted {
                        task_scheduled_id: *seq,
                        result,
                    },
                    Err(failure) => EventKind::SubOrchestrationInstanceFailed {
                        task_scheduled_id: *seq,
                        failure,
                    },
                }));
            }
            OrchestratorAction::SendEvent {
                instance_id,
                name,
                input,
                ..
            } => {
                if instance_id == id {
                    inbox.push(event(EventKind::EventRaised {
                        name: name.clone(),
                        input: input.clone(),
                    }));
                }
            }
            OrchestratorAction::SignalEntity {
                entity,
                operation,
                input,
                ..
            } => {
                let _ = self.run_entity(entity, operation, input.clone());
            }
            OrchestratorAction::CallEntity {
                id: seq,
                entity,
                operation,
                input,
            } => {
                let kind = match self.run_entity(entity, operation, input.clone()) {
                    Ok(result) => EventKind::EntityOperationCompleted {
                        task_scheduled_id: *seq,
                        result,
                    },
                    Err(failure) => EventKind::EntityOperationFailed {
                        task_scheduled_id: *seq,
                        failure,
                    },
                };
                inbox.push(event(kind));
            }
            OrchestratorAction::LockEntities {
                critical_section_id,
                ..
            } => inbox.push(event(EventKind::EntityLockGranted {
                critical_section_id: critical_section_id.clone(),
            })),
            OrchestratorAction::UnlockEntity { .. } => {}
        }
    }

    /// Runs one entity operation (mock or registered), then the signals it sends.
    fn run_entity(
        &mut self,
        entity: &EntityId,
        operation: &str,
        input: Option<Payload>,
    ) -> Result<Option<Payload>, FailureDetails> {
        let mut queue = VecDeque::from([(entity.clone(), operation.to_string(), input)]);
        let mut first = None;
        let mut steps = 0;
        while let Some((entity, operation, input)) = queue.pop_front() {
            steps += 1;
            if steps > 10_000 {
                break;
            }
            let key = (entity.name().to_string(), operation.clone());
            let result = if let Some(mock) = self.entity_operations.get_mut(&key) {
                mock(input)
            } else {
                let state = self.entity_states.get(&entity).cloned();
                match execute_entity_batch(
                    &self.registry,
                    &entity,
                    state,
                    vec![OperationRequest::new(operation, input)],
                ) {
                    Err(e) => Err(FailureDetails::new("EntityNotFound", e.to_string())),
                    Ok(out) => {
                        match out.state {
                            Some(s) => self.entity_states.insert(entity.clone(), s),
                            None => self.entity_states.remove(&entity),
                        };
                        for action in out.actions {
                            if let EntityAction::SignalEntity {
                                entity,
                                operation,
                                input,
                                ..
                            } = action
                            {
                                queue.push_back((entity, operation, input));
                            }
                        }
                        match out.results.into_iter().next() {
                            Some(OperationResult::Completed(p)) => Ok(p),
                            Some(OperationResult::Failed(f)) => Err(f),
                            None => Ok(None),
                        }
                    }
                }
            };
            if first.is_none() {
                first = Some(result);
            }
        }
        first.unwrap_or(Ok(None))
    }
}

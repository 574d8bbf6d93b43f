//! The activity pool: a ractor `factory` of `max_concurrent_activities` stateless worker
//! actors behind the factory's shared queue (`QueuerRouting`: a job goes to the first idle
//! worker; the others wait in the queue, unbounded, as the tasks are already durable). A task
//! is durably queued by the episode that scheduled it; the pool runs it at once, without
//! re-reading the store. When this node owns the orchestration's partition (always, on a
//! single node), the result goes to the partition actor in memory and the episode that
//! records it removes the task in the same transaction; otherwise (the partition moved to
//! another node while the activity ran) the result commits to the orchestration's inbox
//! together with the task's removal, and the new owner records it. Either way a task is removed
//! exactly when its result is durable, and recovery re-runs tasks left in the queue (at least
//! once).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use perdure_core::{EventKind, HistoryEvent};
use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::QueuerRouting;
use ractor::factory::{
    DiscardSettings, Factory, FactoryArguments, FactoryMessage, Job, Worker, WorkerId,
    worker_builder,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, SpawnErr};
use tracing::Instrument;

use super::outbox::Outbox;
use super::{Shared, TaskItem};
use crate::state::records::{MessageBody, Target};
use crate::state::{leases, queues};
use crate::store::transact;

/// One job of the pool: a durably queued task and the span it runs in.
struct ActivityJob {
    item: TaskItem,
    span: tracing::Span,
}

// Local only (see `ActorMsg`).
impl ractor::Message for ActivityJob {}

type PoolMsg = FactoryMessage<(), ActivityJob>;

/// Runs activity tasks with bounded concurrency on a ractor factory.
#[derive(Debug, Clone)]
pub struct ActivityPool {
    shared: Weak<Shared>,
    factory: Arc<FactoryHandle>,
}

/// Stops the factory (and its workers) when the last pool handle is dropped, i.e. when the
/// node's shared state goes away (running activities hold it, so they finish first).
#[derive(Debug)]
struct FactoryHandle(ActorRef<PoolMsg>);

impl Drop for FactoryHandle {
    fn drop(&mut self) {
        self.0.stop(None);
    }
}

/// A worker of the pool: runs one activity at a time.
struct ActivityWorker {
    shared: Weak<Shared>,
}

impl Worker for ActivityWorker {
    type Key = ();
    type Message = ActivityJob;
    type Arguments = ();
    type State = ();

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<PoolMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<PoolMsg>,
        job: Job<(), ActivityJob>,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        shared
            .metrics
            .activity_queue_depth
            .fetch_sub(1, Ordering::Relaxed);
        let ActivityJob { item, span } = job.msg;
        if shared.opts.traces {
            parent_span(&shared, &item.2, &span).await;
        }
        run(shared, item).instrument(span).await;
        Ok(())
    }
}

impl ActivityPool {
    /// Starts a pool running at most `concurrency` activities at once (one worker each).
    pub async fn start(shared: Weak<Shared>, concurrency: usize) -> Result<Self, SpawnErr> {
        let workers = shared.clone();
        let args = FactoryArguments::builder()
            .worker_builder(Box::new(worker_builder(move |_wid| {
                (
                    ActivityWorker {
                        shared: workers.clone(),
                    },
                    (),
                )
            })))
            .num_initial_workers(concurrency.max(1))
            .router(QueuerRouting::default())
            .queue(DefaultQueue::default())
            .discard_settings(DiscardSettings::None)
            .build();
        let factory = Factory::<(), ActivityJob, (), ActivityWorker, _, _>::default();
        let (factory, _) = Actor::spawn(None, factory, args).await?;
        Ok(Self {
            shared,
            factory: Arc::new(FactoryHandle(factory)),
        })
    }

    /// Hands a durably queued task to a worker.
    pub(crate) fn submit(
        &self,
        partition: u32,
        key: Vec<u8>,
        task: crate::state::records::ActivityTask,
    ) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        // No contextual parent: the OpenTelemetry parent is set explicitly (`parent_span`).
        let span = tracing::info_span!(
            parent: None,
            "activity",
            otel.name = tracing::field::Empty,
            name = %task.name,
            instance = %task.instance_id,
            execution_id = %task.execution_id,
            partition,
            seq = task.seq,
            attempt = task.attempt,
        );
        if shared.opts.traces {
            span.record("otel.name", format!("activity {}", task.name));
        }
        shared
            .metrics
            .activity_queue_depth
            .fetch_add(1, Ordering::Relaxed);
        let job = Job::new(
            (),
            ActivityJob {
                item: (partition, key, task),
                span,
            },
        );
        if self.factory.0.cast(FactoryMessage::Dispatch(job)).is_err() {
            // The pool is stopping (the node shuts down): the task stays queued and the next
            // start runs it again.
            shared
                .metrics
                .activity_queue_depth
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Makes the orchestration span of the task's execution the parent of its span, from the
/// instance's stored trace context (read here, so that a task recovered after a restart or
/// on another node joins the same trace). Without a context, or if the read fails, the span
/// has no parent.
async fn parent_span(
    shared: &Arc<Shared>,
    task: &crate::state::records::ActivityTask,
    span: &tracing::Span,
) {
    let id = task.instance_id.clone();
    let read = transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let id = id.clone();
        Box::pin(async move { crate::state::traces::resolve_instance(tx, &id).await })
    })
    .await;
    match read {
        Ok(Some(tp)) => {
            let own = crate::telemetry::orchestration_span_id(
                task.instance_id.as_str(),
                task.execution_id.0.as_str(),
            );
            crate::telemetry::set_parent(span, &tp.with_span(own));
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "trace context not read"),
    }
}

async fn run(shared: Arc<Shared>, (partition, key, task): TaskItem) {
    let started = std::time::Instant::now();
    let mut work = shared.exec.run_activity(
        &task.instance_id,
        &task.name,
        task.seq,
        task.attempt,
        task.input.clone(),
    );
    // The lease: if the task is still running when it expires, another attempt starts (at
    // least once); whichever result is recorded first wins, the other is dropped because its
    // task is gone.
    let lease = tokio::time::sleep(shared.opts.activity_lease);
    tokio::pin!(lease);
    let result = tokio::select! {
        r = &mut work => r,
        _ = &mut lease => {
            redeliver(&shared, partition, &key, &task).await;
            work.await
        }
    };
    shared.metrics.activity_latency.observe(started.elapsed());
    shared.metrics.activities.fetch_add(1, Ordering::Relaxed);
    if result.is_err() {
        shared
            .metrics
            .activity_failures
            .fetch_add(1, Ordering::Relaxed);
    }
    let limit = shared.opts.max_payload_bytes.get();
    let result = match result {
        Ok(Some(p)) if p.len() > limit => Err(perdure_core::FailureDetails::new(
            "PayloadTooLarge",
            format!(
                "activity '{}' returned {} bytes; the limit is {limit} bytes",
                task.name,
                p.len()
            ),
        )),
        other => other,
    };
    let kind = match result {
        Ok(result) => EventKind::TaskCompleted {
            task_scheduled_id: task.seq,
            result,
        },
        Err(failure) => EventKind::TaskFailed {
            task_scheduled_id: task.seq,
            failure,
        },
    };
    if shared.holds(partition) {
        // The instance's partition is owned here: hand the result to its actor in memory.
        // The episode that records it also removes the task (its key is the message key),
        // in one transaction; if the node dies first, or the partition moves before the
        // episode, the next owner runs the task again (at least once). An actor that stopped
        // meanwhile refuses the message: the result then goes through the store below.
        let msg = crate::state::records::InboxMessage {
            target: Target::Instance(task.instance_id.clone()),
            body: MessageBody::Event {
                execution_id: Some(task.execution_id.clone()),
                event: HistoryEvent::new(shared.clock.now(), kind.clone()),
            },
        };
        let key = key.clone();
        if shared
            .try_local(partition, super::PartitionMsg::Deliver(vec![(key, msg)]))
            .is_ok()
        {
            return;
        }
    }
    let key = Arc::new(key);
    let task = Arc::new(task);
    let kind = Arc::new(kind);
    let sh = shared.clone();
    let committed = transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (sh, key, task, kind) = (sh.clone(), key.clone(), task.clone(), kind.clone());
        Box::pin(async move {
            // No lease check: the partition moved away (or was never here), and its new
            // owner takes the result from the inbox. The task record is the guard: the
            // result that removes it first is the one recorded (exactly once), whichever
            // node ran the attempt.
            let mut out = Outbox::default();
            if !queues::consume(tx, &key).await? {
                // Already reported (a redelivered task finished twice).
                return Ok(out);
            }
            let ev = HistoryEvent::new(sh.clock.now(), (*kind).clone());
            out.send(
                tx,
                &sh,
                Target::Instance(task.instance_id.clone()),
                MessageBody::Event {
                    execution_id: Some(task.execution_id.clone()),
                    event: ev,
                },
            )?;
            Ok(out)
        })
    })
    .await;
    match committed {
        Ok(out) => {
            shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
            shared.dispatch(out);
        }
        Err(e) => {
            // The task stays queued; recovery (or the next owner) runs it again.
            tracing::warn!(error = %e, "activity result not committed");
        }
    }
}

/// Starts another attempt of a task whose lease expired, if it is still queued and its
/// lease in the store has expired too: its attempt count and lease are raised in the store
/// first (`queues::redeliver`).
async fn redeliver(
    shared: &Arc<Shared>,
    partition: u32,
    key: &[u8],
    task: &crate::state::records::ActivityTask,
) {
    tracing::warn!(name = %task.name, instance = %task.instance_id, seq = task.seq, "activity lease expired; running it again");
    let epoch = shared.epoch(partition);
    let key = Arc::new(key.to_vec());
    let now = shared.clock.now();
    let lease = shared.opts.activity_lease;
    let k = key.clone();
    let again = transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let k = k.clone();
        Box::pin(async move {
            leases::check(tx, partition, epoch).await?;
            queues::redeliver(tx, partition, &k, now, lease).await
        })
    })
    .await;
    match again {
        Ok(queues::Redelivery::Again(t)) => {
            if let Some(pool) = shared.activities.get() {
                pool.submit(partition, (*key).clone(), t);
            }
        }
        Ok(queues::Redelivery::Gone | queues::Redelivery::Leased(_)) => {}
        Err(e) => tracing::warn!(error = %e, "activity lease not renewed"),
    }
}

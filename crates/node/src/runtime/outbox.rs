//! Messages written in a transaction, delivered to their partitions' actors once it commits.

use perdure_core::Timestamp;

use crate::state::queues;
use crate::state::records::{ActivityTask, InboxMessage, InstanceRecord, MessageBody, Target};
use crate::store::{StoreError, Transaction};

use super::Shared;

/// Everything a committed transaction asks to be delivered in memory.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Inbox messages: (partition, key, message).
    pub(crate) messages: Vec<(u32, Vec<u8>, InboxMessage)>,
    /// Timers: (partition, key, due, message).
    pub(crate) timers: Vec<(u32, Vec<u8>, Timestamp, InboxMessage)>,
    /// Activity tasks: (partition, key, task).
    pub(crate) tasks: Vec<(u32, Vec<u8>, ActivityTask)>,
    /// The instance record as written, when the actor must take it instead of its plan's
    /// (see `instance::write`).
    pub(crate) record: Option<Box<InstanceRecord>>,
}

impl Outbox {
    /// Writes a message to its target's inbox.
    pub(crate) fn send(
        &mut self,
        tx: &mut dyn Transaction,
        shared: &Shared,
        target: Target,
        body: MessageBody,
    ) -> Result<(), StoreError> {
        let p = shared.partition_of(&target);
        let msg = InboxMessage { target, body };
        let key = queues::send(tx, &shared.ids, p, shared.clock.now(), &msg)?;
        self.messages.push((p, key, msg));
        Ok(())
    }

    /// Writes a message to be delivered at `due` (immediately if `due` has passed).
    pub(crate) fn send_at(
        &mut self,
        tx: &mut dyn Transaction,
        shared: &Shared,
        target: Target,
        due: Timestamp,
        body: MessageBody,
    ) -> Result<(), StoreError> {
        let p = shared.partition_of(&target);
        let msg = InboxMessage { target, body };
        let key = queues::add_timer(tx, &shared.ids, p, due, &msg)?;
        self.timers.push((p, key, due, msg));
        Ok(())
    }

    /// Queues an activity task in the partition's work queue.
    pub(crate) fn task(
        &mut self,
        tx: &mut dyn Transaction,
        partition: u32,
        task: ActivityTask,
    ) -> Result<(), StoreError> {
        let key = queues::put_task(tx, partition, &task)?;
        self.tasks.push((partition, key, task));
        Ok(())
    }
}

//! Entity operations of `ManagementApi` for [`NodeHandle`]: signals (through the batched
//! intake), state reads, paged queries and storage cleaning.

use std::sync::Arc;

use futures::future::BoxFuture;
use perdure_core::management::{
    CleanEntityStorageResult, EntityPage, EntityQuery, EntityState, FunctionKind, ManagementError,
    ManagementResult,
};
use perdure_core::{EntityId, Payload, Timestamp};

use super::NodeHandle;
use super::intake::IntakeError;
use super::management::{bad_continuation, source_chain};
use crate::runtime::outbox::Outbox;
use crate::state::entities;
use crate::state::instances::{decode_token, encode_token};
use crate::state::records::{EntityLock, EntityOperationMsg, MessageBody, Target};

/// Entity records read per transaction while cleaning entity storage.
const CLEAN_PAGE: usize = 500;

impl NodeHandle {
    pub(super) fn signal_entity_op(
        &self,
        entity: EntityId,
        operation: String,
        input: Option<Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(async move {
            self.check_name(FunctionKind::Entity, entity.name())?;
            self.check_payload(input.as_ref())?;
            let target = Target::Entity(entity);
            self.admit(self.shared().partition_of(&target))?;
            let body = MessageBody::EntityOperation(EntityOperationMsg {
                operation,
                input,
                caller: None,
                critical_section_id: None,
                sender: None,
            });
            match self.intake().send(target, scheduled_time, body).await {
                Ok(()) => Ok(()),
                Err(IntakeError::Full) => Err(ManagementError::Overloaded(
                    "the signal queue is full; retry later".into(),
                )),
                Err(IntakeError::Closed) => {
                    Err(ManagementError::Unavailable("the node is stopping".into()))
                }
                Err(IntakeError::Store(e)) => Err(
                    if let crate::store::StoreError::LimitExceeded { size, limit, .. } = *e {
                        ManagementError::PayloadTooLarge { size, limit }
                    } else if e.is_retryable() {
                        ManagementError::Unavailable(e.to_string())
                    } else {
                        ManagementError::Internal(format!("{e}: {}", source_chain(e.as_ref())))
                    },
                ),
            }
        })
    }

    pub(super) fn get_entity_op(
        &self,
        entity: EntityId,
    ) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        Box::pin(async move {
            let id = entity.clone();
            let rec = self
                .read(move |tx| {
                    let id = id.clone();
                    Box::pin(async move { entities::load(tx, &id).await })
                })
                .await?;
            let Some(r) = rec else {
                return Ok(None);
            };
            let backlog = self.shared().backlog(Target::Entity(entity.clone())).await;
            Ok(Some(EntityState {
                id: entity,
                state: r.state,
                last_modified: r.last_modified,
                locked_by: r.lock.map(|l| l.critical_section_id),
                backlog,
            }))
        })
    }

    pub(super) fn query_entities_op(
        &self,
        query: EntityQuery,
    ) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        Box::pin(async move {
            let page = match query.page_size {
                0 => 100,
                n => (n as usize).min(1000),
            };
            let name = query.name.as_ref().map(|n| n.to_lowercase());
            let after = match query.continuation.as_deref() {
                None => None,
                Some(t) => match decode_token(t) {
                    Some(k)
                        if entities::valid_after(
                            name.as_deref(),
                            query.key_prefix.as_deref(),
                            &k,
                        ) =>
                    {
                        Some(k)
                    }
                    _ => return Err(bad_continuation(t)),
                },
            };
            let q = Arc::new((query, name, after));
            let q2 = q.clone();
            let rows = self
                .read(move |tx| {
                    let q = q2.clone();
                    Box::pin(async move {
                        let (query, name, after) = &*q;
                        entities::scan(
                            tx,
                            name.as_deref(),
                            query.key_prefix.as_deref(),
                            after.as_deref(),
                            page,
                        )
                        .await
                    })
                })
                .await?;
            let continuation = if rows.len() >= page {
                rows.last().map(|(k, _, _)| encode_token(k))
            } else {
                None
            };
            let q = &q.0;
            let sh = self.shared();
            // One question per entity to its partition actor, asked all at once.
            let entities = futures::future::join_all(
                rows.into_iter()
                    .filter(|(_, _, r)| {
                        q.last_modified_from.is_none_or(|t| r.last_modified >= t)
                            && q.last_modified_to.is_none_or(|t| r.last_modified <= t)
                    })
                    .map(|(_, id, r)| {
                        let sh = &sh;
                        async move {
                            let backlog = sh.backlog(Target::Entity(id.clone())).await;
                            EntityState {
                                id,
                                state: if q.fetch_state { r.state } else { None },
                                last_modified: r.last_modified,
                                locked_by: r.lock.map(|l| l.critical_section_id),
                                backlog,
                            }
                        }
                    }),
            )
            .await;
            Ok(EntityPage {
                entities,
                continuation,
            })
        })
    }

    pub(super) fn clean_entity_storage_op(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        Box::pin(async move {
            let mut result = CleanEntityStorageResult::default();
            if !remove_empty && !release_orphaned_locks {
                return Ok(result);
            }
            let mut after: Option<Vec<u8>> = None;
            loop {
                let a = after.clone();
                let rows = self
                    .read(move |tx| {
                        let a = a.clone();
                        Box::pin(async move {
                            entities::scan(tx, None, None, a.as_deref(), CLEAN_PAGE).await
                        })
                    })
                    .await?;
                let n = rows.len();
                after = rows.last().map(|(k, _, _)| k.clone());
                for (_, id, r) in rows {
                    let (released, removed) = match r.lock {
                        Some(lock) if release_orphaned_locks => {
                            (self.release_if_orphaned(id, lock).await?, false)
                        }
                        None if remove_empty && r.state.is_none() => {
                            (false, self.remove_if_empty(id).await?)
                        }
                        _ => (false, false),
                    };
                    result.orphaned_locks_released += u64::from(released);
                    result.empty_entities_removed += u64::from(removed);
                }
                if n < CLEAN_PAGE {
                    return Ok(result);
                }
            }
        })
    }

    /// Releases a lock whose holder has finished or is gone: an Unlock from the holder goes
    /// through the entity's inbox, so its actor releases the lock and then runs the
    /// operations that waited behind it.
    async fn release_if_orphaned(&self, id: EntityId, lock: EntityLock) -> ManagementResult<bool> {
        let holder = self.load_record(&lock.holder).await?;
        if holder.is_some_and(|h| !h.status.is_terminal()) {
            return Ok(false);
        }
        let body = Arc::new(MessageBody::Unlock {
            critical_section_id: lock.critical_section_id,
            holder: lock.holder,
        });
        self.run(move |tx, sh| {
            let (id, body) = (id.clone(), body.clone());
            Box::pin(async move {
                let mut out = Outbox::default();
                out.send(tx, &sh, Target::Entity(id), (*body).clone())?;
                Ok(Ok(((), out)))
            })
        })
        .await?;
        Ok(true)
    }

    /// Removes the record of an entity that has neither state nor lock. The runtime never
    /// writes one (`state::entities::save` removes it instead), so this only repairs records
    /// left by other writers; the check is repeated inside the transaction, so a batch that
    /// gave the entity state meanwhile keeps it.
    async fn remove_if_empty(&self, id: EntityId) -> ManagementResult<bool> {
        self.run(move |tx, _| {
            let id = id.clone();
            Box::pin(async move {
                let empty = entities::load(tx, &id)
                    .await?
                    .is_some_and(|r| r.state.is_none() && r.lock.is_none());
                if empty {
                    entities::remove(tx, &id);
                }
                Ok(Ok((empty, Outbox::default())))
            })
        })
        .await
    }
}

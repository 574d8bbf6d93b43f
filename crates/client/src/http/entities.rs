//! Entity routes of the HTTP transport.

use std::time::Duration;

use perdure_core::management::{CleanEntityStorageResult, EntityPage, EntityQuery, EntityState};
use perdure_core::{EntityId, Payload, Timestamp};
use reqwest::{Method, StatusCode};

use super::{HttpTransport, body, enc, query, time};
use crate::error::ClientResult;
use crate::wire::EntityWire;

impl HttpTransport {
    /// Signals an entity.
    pub async fn signal_entity(
        &self,
        entity: &EntityId,
        operation: &str,
        input: Option<&Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> ClientResult<()> {
        let path = format!(
            "/entities/{}/{}{}",
            enc(entity.name()),
            enc(entity.key()),
            query(&[
                ("op", Some(operation.to_string())),
                ("scheduledTime", time(scheduled_time)),
            ])
        );
        self.post_op(Some(&entity.to_string()), path, body(input))
            .await
            .map(drop)
    }

    /// An entity (with its state).
    pub async fn get_entity(&self, entity: &EntityId) -> ClientResult<Option<EntityState>> {
        let path = format!(
            "/entities/{}/{}?metadata=true",
            enc(entity.name()),
            enc(entity.key())
        );
        let route = entity.to_string();
        let a = self
            .send(Some(&route), Method::GET, &path, None, None, Duration::ZERO)
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let a = Self::expect(a, &[StatusCode::OK])?;
        let w: EntityWire = Self::decode(&a)?;
        w.into_state().map(Some)
    }

    /// One page of entities.
    pub async fn query_entities(&self, q: &EntityQuery) -> ClientResult<EntityPage> {
        let mut path = match &q.name {
            Some(n) => format!("/entities/{}", enc(n)),
            None => "/entities".to_string(),
        };
        path.push_str(&query(&[
            ("keyPrefix", q.key_prefix.clone()),
            ("lastOperationTimeFrom", time(q.last_modified_from)),
            ("lastOperationTimeTo", time(q.last_modified_to)),
            ("top", (q.page_size > 0).then(|| q.page_size.to_string())),
            ("fetchState", Some(q.fetch_state.to_string())),
        ]));
        let a = self
            .send(
                None,
                Method::GET,
                &path,
                None,
                q.continuation.as_deref().map(|c| (super::CONTINUATION, c)),
                Duration::ZERO,
            )
            .await?;
        let a = Self::expect(a, &[StatusCode::OK])?;
        let wires: Vec<EntityWire> = Self::decode(&a)?;
        let entities = wires
            .into_iter()
            .map(EntityWire::into_state)
            .collect::<ClientResult<Vec<_>>>()?;
        Ok(EntityPage {
            entities,
            continuation: a.continuation,
        })
    }

    /// Removes empty entities and releases orphaned locks.
    pub async fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> ClientResult<CleanEntityStorageResult> {
        let path = format!(
            "/maintenance/cleanEntityStorage?removeEmptyEntities={remove_empty}&releaseOrphanedLocks={release_orphaned_locks}"
        );
        let a = self.post_op(None, path, None).await?;
        // Durable Functions' field names; the aliases read the names earlier nodes answered.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct W {
            #[serde(alias = "emptyEntitiesRemoved")]
            number_of_empty_entities_removed: u64,
            #[serde(alias = "orphanedLocksReleased")]
            number_of_orphaned_locks_removed: u64,
        }
        let w: W = Self::decode(&a)?;
        Ok(CleanEntityStorageResult {
            empty_entities_removed: w.number_of_empty_entities_removed,
            orphaned_locks_released: w.number_of_orphaned_locks_removed,
        })
    }
}

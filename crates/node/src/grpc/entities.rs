//! The entity client RPCs over [`ManagementApi`]. Entity ids are `@name@key`.

use perdure_core::management::{EntityQuery, ManagementApi};
use tonic::Status;

use super::convert::{entity_id, entity_to_proto, opt_timestamp, payload_from_proto};
use super::error::status;
use super::proto;
use super::workers::{ItemKind, WorkerHub, when_served};

/// `SignalEntity` (the request id is not used for deduplication).
pub(crate) async fn signal(
    api: &dyn ManagementApi,
    r: proto::SignalEntityRequest,
    workers: Option<&WorkerHub>,
) -> Result<proto::SignalEntityResponse, Status> {
    let id = entity_id(&r.instance_id)?;
    if r.name.is_empty() {
        return Err(Status::invalid_argument(
            "name: an operation name is required",
        ));
    }
    let input = payload_from_proto(r.input, "input")?;
    let at = opt_timestamp(r.scheduled_time.as_ref(), "scheduledTime")?;
    let name = id.name().to_string();
    when_served(workers, ItemKind::Entity, &name, || {
        api.signal_entity(id.clone(), r.name.clone(), input.clone(), at)
    })
    .await?;
    Ok(proto::SignalEntityResponse {})
}

/// `GetEntity`: `exists = false` for an entity that has no state.
pub(crate) async fn get(
    api: &dyn ManagementApi,
    r: proto::GetEntityRequest,
) -> Result<proto::GetEntityResponse, Status> {
    let id = entity_id(&r.instance_id)?;
    let e = api.get_entity(id).await.map_err(status)?;
    Ok(proto::GetEntityResponse {
        exists: e.is_some(),
        entity: e.as_ref().map(|e| entity_to_proto(e, r.include_state)),
    })
}

/// How `instanceIdStartsWith` narrows a query: an exact entity name and a key prefix when it
/// names a whole entity name (`@counter@k`), otherwise a prefix of the `@name@key` text that
/// the results are filtered by.
fn split_prefix(prefix: &str) -> (Option<String>, Option<String>, Option<String>) {
    if prefix.is_empty() {
        return (None, None, None);
    }
    let Some(rest) = prefix.strip_prefix('@') else {
        // Ids without the leading `@`: the SDKs add it; a bare name is taken as a name prefix.
        return (None, None, Some(format!("@{}", prefix.to_lowercase())));
    };
    match rest.split_once('@') {
        Some((name, key)) => (
            Some(name.to_lowercase()),
            (!key.is_empty()).then(|| key.to_string()),
            None,
        ),
        None if rest.is_empty() => (None, None, None),
        None => (None, None, Some(format!("@{}", rest.to_lowercase()))),
    }
}

/// `QueryEntities`: Perdure's entity query and continuation token. Transient entities (no
/// state) are not listed whatever `includeTransient` says.
pub(crate) async fn query(
    api: &dyn ManagementApi,
    r: proto::QueryEntitiesRequest,
) -> Result<proto::QueryEntitiesResponse, Status> {
    let q = r.query.unwrap_or_default();
    let (name, key_prefix, text_prefix) =
        split_prefix(q.instance_id_starts_with.as_deref().unwrap_or(""));
    let page_size = match q.page_size {
        None => 0,
        Some(n) => u32::try_from(n)
            .map_err(|_| Status::invalid_argument(format!("pageSize: {n} is negative")))?,
    };
    let query = EntityQuery {
        name,
        key_prefix,
        last_modified_from: opt_timestamp(q.last_modified_from.as_ref(), "lastModifiedFrom")?,
        last_modified_to: opt_timestamp(q.last_modified_to.as_ref(), "lastModifiedTo")?,
        page_size,
        continuation: q.continuation_token.filter(|t| !t.is_empty()),
        fetch_state: q.include_state,
    };
    let page = api.query_entities(query).await.map_err(status)?;
    Ok(proto::QueryEntitiesResponse {
        entities: page
            .entities
            .iter()
            .filter(|e| {
                text_prefix
                    .as_deref()
                    .is_none_or(|p| e.id.to_string().starts_with(p))
            })
            .map(|e| entity_to_proto(e, q.include_state))
            .collect(),
        continuation_token: page.continuation,
    })
}

/// `CleanEntityStorage`: one pass over the whole store (no continuation token).
pub(crate) async fn clean(
    api: &dyn ManagementApi,
    r: proto::CleanEntityStorageRequest,
) -> Result<proto::CleanEntityStorageResponse, Status> {
    let c = api
        .clean_entity_storage(r.remove_empty_entities, r.release_orphaned_locks)
        .await
        .map_err(status)?;
    Ok(proto::CleanEntityStorageResponse {
        continuation_token: None,
        empty_entities_removed: i32::try_from(c.empty_entities_removed).unwrap_or(i32::MAX),
        orphaned_locks_released: i32::try_from(c.orphaned_locks_released).unwrap_or(i32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::split_prefix;

    #[test]
    fn prefixes_split_into_name_and_key() {
        assert_eq!(
            split_prefix("@Counter@c"),
            (Some("counter".into()), Some("c".into()), None)
        );
        assert_eq!(
            split_prefix("@counter@"),
            (Some("counter".into()), None, None)
        );
        assert_eq!(split_prefix(""), (None, None, None));
        assert_eq!(split_prefix("@"), (None, None, None));
        assert_eq!(split_prefix("@cou"), (None, None, Some("@cou".into())));
    }
}

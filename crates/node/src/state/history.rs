//! History: the events of an instance's current execution, one key per event.

use perdure_core::{HistoryEvent, InstanceId};

use super::keys::Key;
use super::{clear_prefix, decode_value, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction};

fn prefix(id: &InstanceId) -> Key {
    Key::new().str(space::HISTORY).str(id.as_str())
}

/// Appends events at sequence numbers `first_seq..`.
pub fn append(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    first_seq: u64,
    events: &[HistoryEvent],
) -> Result<(), StoreError> {
    for (i, e) in events.iter().enumerate() {
        let k = prefix(id).uint(first_seq + i as u64);
        put(tx, k.as_bytes(), e)?;
    }
    Ok(())
}

/// Loads `limit` events (all when `None`) from sequence number `from`.
pub async fn load_page(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    from: u64,
    limit: Option<usize>,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let begin = prefix(id).uint(from).into_bytes();
    let end = crate::store::prefix_end(prefix(id).as_bytes());
    let rows = tx
        .get_range(
            &KeyRange::new(begin, end),
            RangeOptions {
                limit,
                reverse: false,
            },
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        out.push(decode_value(tx, &k, &v).await?);
    }
    Ok(out)
}

/// Loads the whole history of the current execution.
pub async fn load(
    tx: &mut dyn Transaction,
    id: &InstanceId,
) -> Result<Vec<HistoryEvent>, StoreError> {
    load_page(tx, id, 0, None).await
}

/// Removes the whole history (continue-as-new cuts it; purge removes it).
pub fn cut(tx: &mut dyn Transaction, id: &InstanceId) {
    clear_prefix(tx, prefix(id).as_bytes());
}

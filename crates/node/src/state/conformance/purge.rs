//! Incremental purge: bounded work per transaction, resumable, and it removes all of an
//! instance and nothing else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use perdure_core::{EntityId, Timestamp};

use super::fixtures::{LARGE, event, instance, message, payload, record, task};
use super::{read_all, ro};
use crate::state::keys::{Elem, Key};
use crate::state::purge::{self, Progress};
use crate::state::queues::{self, MessageIds};
use crate::state::records::EntityRecord;
use crate::state::{entities, history, init_partitions, instances, leases};
use crate::store::{KeyValue, Store, StoreError, transact};

/// The purged instance's partition; "ab" (an id that "a" prefixes) shares it.
const PARTITION: u32 = 2;
/// The batch size of these cases (the node uses 500).
const BATCH: usize = 4;
/// History events of the purged instance: nearly three batches.
const EVENTS: u64 = 11;

/// Writes an instance: record, `events` history events (the last one large, so chunked),
/// `messages` inbox messages and two timers addressed to it (one large), and `tasks`
/// activity tasks (one large).
async fn write_instance(
    store: &dyn Store,
    ids: &Arc<MessageIds>,
    id: &'static str,
    events: u64,
    messages: u64,
    tasks: i64,
) -> Result<(), StoreError> {
    let ids = ids.clone();
    transact(store, &ro(), move |tx| {
        let ids = ids.clone();
        Box::pin(async move {
            let mut rec = record(id);
            rec.history_len = events;
            instances::save(tx, None, &rec)?;
            for seq in 0..events {
                let data = if seq + 1 == events { LARGE } else { 8 };
                history::append(tx, &instance(id), seq, &[event(seq, data)])?;
            }
            for n in 0..messages {
                queues::send(tx, &ids, PARTITION, Timestamp(n), &message(id, n, 8))?;
            }
            queues::add_timer(tx, &ids, PARTITION, Timestamp(90), &message(id, 90, 8))?;
            queues::add_timer(tx, &ids, PARTITION, Timestamp(91), &message(id, 91, LARGE))?;
            for seq in 0..tasks {
                let data = if seq == 0 { LARGE } else { 8 };
                queues::put_task(tx, PARTITION, &task(id, seq, data, Timestamp(5)))?;
            }
            Ok(())
        })
    })
    .await
}

/// Keys that belong to no instance: metadata, a lease, an entity, and raw keys around the
/// state keyspaces.
async fn write_unrelated(store: &dyn Store) -> Result<(), StoreError> {
    transact(store, &ro(), |tx| {
        Box::pin(async move {
            init_partitions(tx, 64).await?;
            leases::acquire(tx, PARTITION, "node", Timestamp(1), Duration::from_secs(30)).await?;
            let entity = EntityId::new("counter", "a").unwrap_or_else(|e| panic!("{e}"));
            let state = EntityRecord {
                state: Some(payload(LARGE)),
                last_modified: Timestamp(3),
                lock: None,
            };
            entities::save(tx, &entity, &state)?;
            tx.set(b"\x01raw", b"1")?;
            tx.set(b"\xFEraw", b"2")
        })
    })
    .await
}

/// The store before and after instance "a" was written, with another instance ("ab") and
/// unrelated keys around it.
struct Fixture {
    without_a: Vec<KeyValue>,
    with_a: Vec<KeyValue>,
}

async fn fixture(store: &dyn Store) -> Result<Fixture, StoreError> {
    let ids = Arc::new(MessageIds::new(4));
    write_unrelated(store).await?;
    write_instance(store, &ids, "ab", 3, 2, 2).await?;
    let without_a = read_all(store).await?;
    write_instance(store, &ids, "a", EVENTS, 5, 5).await?;
    let with_a = read_all(store).await?;
    let before: BTreeSet<&KeyValue> = without_a.iter().collect();
    assert!(
        before.iter().all(|kv| with_a.contains(kv)),
        "writing \"a\" changed nothing else"
    );
    let a_keys = with_a.len() - without_a.len();
    assert!(a_keys > 40, "\"a\" has {a_keys} keys, with chunks");
    Ok(Fixture { without_a, with_a })
}

/// Runs one purge step of "a" in one transaction: `None` if there is no record to purge.
async fn step(store: &dyn Store) -> Result<Option<Progress>, StoreError> {
    transact(store, &ro(), |tx| {
        Box::pin(async move {
            let Some(rec) = instances::load(tx, &instance("a")).await? else {
                return Ok(None);
            };
            purge::step(tx, &rec, PARTITION, BATCH).await.map(Some)
        })
    })
    .await
}

/// The keyspace of a key (its first element), `"?"` for a raw key.
fn space(key: &[u8]) -> String {
    match Key::decode(key).ok().and_then(|e| e.into_iter().next()) {
        Some(Elem::Str(s)) => s,
        _ => "?".into(),
    }
}

/// Checks that a step only removed keys (nothing written or changed) and at most a batch of
/// each kind; returns how many keys it removed.
fn check_step(before: &[KeyValue], after: &[KeyValue]) -> usize {
    let after_set: BTreeSet<&KeyValue> = after.iter().collect();
    let before_set: BTreeSet<&KeyValue> = before.iter().collect();
    assert!(
        after_set.is_subset(&before_set),
        "a purge step only removes keys"
    );
    let removed: Vec<String> = before_set
        .difference(&after_set)
        .map(|(k, _)| space(k))
        .collect();
    for kind in [&["q", "t"][..], &["y"], &["h"], &["a"]] {
        let n = removed
            .iter()
            .filter(|s| kind.contains(&s.as_str()))
            .count();
        assert!(
            n <= BATCH,
            "a step removed {n} keys of {kind:?} (batch {BATCH})"
        );
    }
    removed.len()
}

/// Purges "a" (whose history is nearly three batches) step by step: every step removes at
/// most a batch of each kind, and at the end the store equals its snapshot without "a":
/// every key of "a" is gone and every other key is unchanged.
pub async fn purge_removes_the_instance_and_nothing_else(
    store: Arc<dyn Store>,
) -> Result<(), StoreError> {
    let f = fixture(&*store).await?;
    let mut before = f.with_a.clone();
    let mut steps = 0;
    loop {
        let progress = step(&*store).await?;
        steps += 1;
        let after = read_all(&*store).await?;
        assert!(
            check_step(&before, &after) > 0,
            "step {steps} made progress"
        );
        before = after;
        match progress {
            Some(Progress::More) => {}
            Some(Progress::Done) => break,
            None => panic!("the record vanished before the last step"),
        }
    }
    assert!(
        steps >= EVENTS.div_ceil(BATCH as u64),
        "the history alone takes several transactions ({steps} steps)"
    );
    assert_eq!(
        read_all(&*store).await?,
        f.without_a,
        "exactly the keys of \"a\" are gone"
    );
    assert_eq!(step(&*store).await?, None, "nothing left to purge");
    Ok(())
}

/// A purge that stops after one committed step (and one step that never commits) leaves the
/// record in place; purging again from the start finishes it, with the same result.
pub async fn purge_resumes_after_a_stop(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let f = fixture(&*store).await?;
    assert_eq!(step(&*store).await?, Some(Progress::More));
    // A second step that never commits (the process stops mid-transaction).
    {
        let mut tx = store.begin().await?;
        let rec = instances::load(tx.as_mut(), &instance("a")).await?;
        let rec = rec.unwrap_or_else(|| panic!("the record stays until the last step"));
        purge::step(tx.as_mut(), &rec, PARTITION, BATCH).await?;
    }
    let stopped = read_all(&*store).await?;
    check_step(&f.with_a, &stopped);
    assert!(stopped.len() < f.with_a.len() && stopped.len() > f.without_a.len());
    let record_key = instances::record_key(&instance("a"));
    assert!(
        stopped.iter().any(|(k, _)| *k == record_key),
        "the record is kept until the end, so the purge can resume"
    );
    let mut steps = 0;
    while step(&*store).await? == Some(Progress::More) {
        steps += 1;
        assert!(steps < 100, "the purge ends");
    }
    assert_eq!(read_all(&*store).await?, f.without_a);
    Ok(())
}

//! History batches: one key per appended batch, read back whole and in order, with the
//! keys of older layouts and executions read or skipped as `state::history` promises.

use std::sync::Arc;

use perdure_core::HistoryEvent;

use super::fixtures::{LARGE, event, instance};
use super::ro;
use crate::state::keys::Key;
use crate::state::{history, put, space};
use crate::store::{KeyRange, RangeOptions, Store, StoreError, Transaction, transact};

/// Runs `f` in one transaction of its own.
async fn run<T: Send + 'static>(
    store: &dyn Store,
    f: impl for<'t> Fn(&'t mut dyn Transaction) -> futures::future::BoxFuture<'t, Result<T, StoreError>>
    + Send
    + Sync
    + 'static,
) -> Result<T, StoreError> {
    let f = Arc::new(f);
    transact(store, &ro(), move |tx| {
        let f = f.clone();
        Box::pin(async move { f(tx).await })
    })
    .await
}

/// Events `from..to`, each with its number as timestamp (event 7 is large: chunked).
fn events(from: u64, to: u64) -> Vec<HistoryEvent> {
    (from..to)
        .map(|n| event(n, if n == 7 { LARGE } else { 8 }))
        .collect()
}

fn numbers(events: &[HistoryEvent]) -> Vec<u64> {
    events.iter().map(|e| e.timestamp.0).collect()
}

/// Appends `batches` (each `from..to`) to the history of `id`.
async fn append(
    store: &dyn Store,
    id: &'static str,
    batches: &[(u64, u64)],
) -> Result<(), StoreError> {
    let batches = batches.to_vec();
    run(store, move |tx| {
        let batches = batches.clone();
        Box::pin(async move {
            for (from, to) in batches {
                history::append(tx, &instance(id), from, &events(from, to))?;
            }
            Ok(())
        })
    })
    .await
}

async fn load(store: &dyn Store, id: &'static str, len: u64) -> Result<Vec<u64>, StoreError> {
    run(store, move |tx| {
        Box::pin(async move { Ok(numbers(&history::load(tx, &instance(id), len).await?)) })
    })
    .await
}

async fn page(
    store: &dyn Store,
    id: &'static str,
    from: u64,
    len: u64,
    min: usize,
) -> Result<Vec<u64>, StoreError> {
    run(store, move |tx| {
        Box::pin(async move {
            Ok(numbers(
                &history::load_page(tx, &instance(id), from, len, min).await?,
            ))
        })
    })
    .await
}

/// Batches of any size (one chunked) read back whole, in order, up to the length asked; a
/// page starts at a length the history had and ends on a batch boundary; batches at and
/// past the length (an episode being staged) are not read.
pub async fn history_batches_read_back_in_order(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let store = &*store;
    append(store, "h", &[(0, 3), (3, 4), (4, 10)]).await?;
    append(store, "h", &[(10, 12)]).await?;
    // Staged past the length: not part of the history yet.
    append(store, "h", &[(12, 20)]).await?;
    assert_eq!(load(store, "h", 12).await?, (0..12).collect::<Vec<_>>());
    assert_eq!(load(store, "h", 20).await?, (0..20).collect::<Vec<_>>());
    assert_eq!(load(store, "h", 0).await?, Vec::<u64>::new());
    assert_eq!(page(store, "h", 3, 12, 1).await?, vec![3]);
    assert_eq!(
        page(store, "h", 3, 12, 2).await?,
        (3..10).collect::<Vec<_>>()
    );
    assert_eq!(page(store, "h", 10, 12, 100).await?, vec![10, 11]);
    // A length inside a batch: the stored history disagrees with the record.
    assert!(matches!(
        load(store, "h", 5).await,
        Err(StoreError::Corrupt { .. })
    ));
    // An instance id that "h" prefixes keeps its own history.
    append(store, "hh", &[(0, 2)]).await?;
    assert_eq!(load(store, "h", 12).await?.len(), 12);
    assert_eq!(load(store, "hh", 2).await?, vec![0, 1]);
    // More batches than one range read returns.
    let many: Vec<(u64, u64)> = (0..300).map(|n| (n, n + 1)).collect();
    append(store, "m", &many).await?;
    assert_eq!(load(store, "m", 300).await?, (0..300).collect::<Vec<_>>());
    assert_eq!(
        page(store, "m", 100, 300, 150).await?,
        (100..250).collect::<Vec<_>>()
    );
    Ok(())
}

/// One event per key (the layout before batches) reads as before, and a history that
/// continued in batches after it reads whole.
pub async fn history_single_event_keys_still_read(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let store = &*store;
    run(store, |tx| {
        Box::pin(async move {
            for n in 0..9 {
                let key = Key::new().str(space::HISTORY).str("old").uint(n);
                put(tx, key.as_bytes(), &events(n, n + 1)[0])?;
            }
            Ok(())
        })
    })
    .await?;
    assert_eq!(load(store, "old", 9).await?, (0..9).collect::<Vec<_>>());
    append(store, "old", &[(9, 13)]).await?;
    assert_eq!(load(store, "old", 13).await?, (0..13).collect::<Vec<_>>());
    assert_eq!(
        page(store, "old", 8, 13, 2).await?,
        (8..13).collect::<Vec<_>>()
    );
    Ok(())
}

/// Keys left by an older execution or an unpublished staged attempt, inside the span of
/// the current history, are skipped; a missing event is an error, not a shorter history.
pub async fn history_leftovers_are_skipped(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let store = &*store;
    // An older execution: 0..2, 2..9, 9..12. A new one staged over it: 0..5 and 5..8 (the
    // first replaces the old 0..2), then its publish cuts what follows its events.
    append(store, "x", &[(0, 2), (2, 9), (9, 12)]).await?;
    append(store, "x", &[(0, 5), (5, 8)]).await?;
    run(store, |tx| {
        Box::pin(async move {
            history::cut_from(tx, &instance("x"), 8);
            Ok(())
        })
    })
    .await?;
    assert_eq!(load(store, "x", 8).await?, (0..8).collect::<Vec<_>>());
    // The old 2..9 is still stored; the next episode appends at 8 and reads past it.
    append(store, "x", &[(8, 10)]).await?;
    assert_eq!(load(store, "x", 10).await?, (0..10).collect::<Vec<_>>());
    // A gap below the length, or keys that end below it, is corrupt data, not a shorter
    // history.
    append(store, "gap", &[(0, 3), (5, 6)]).await?;
    assert!(matches!(
        load(store, "gap", 6).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        load(store, "gap", 7).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(page(store, "gap", 0, 4, 1).await, Ok(v) if v == [0, 1, 2]));
    assert!(matches!(
        page(store, "x", 8, 11, 100).await,
        Err(StoreError::Corrupt { .. })
    ));
    // No history at all (removed whole, the record still there): empty, as before batches.
    assert_eq!(load(store, "none", 5).await?, Vec::<u64>::new());
    // Purge clears the leftovers with the rest, a few sequence numbers per transaction.
    let mut steps = 0;
    while run(store, |tx| {
        Box::pin(async move { history::purge_batch(tx, &instance("x"), 2).await })
    })
    .await?
    {
        steps += 1;
        assert!(steps < 20, "purge does not end");
    }
    assert_eq!(history_keys(store, "x").await?, 0);
    assert!(
        history_keys(store, "gap").await? > 0,
        "another instance's history stays"
    );
    Ok(())
}

/// The history keys of `id` (batches and single events; not their chunks).
async fn history_keys(store: &dyn Store, id: &'static str) -> Result<usize, StoreError> {
    run(store, move |tx| {
        Box::pin(async move {
            let prefix = Key::new().str(space::HISTORY).str(id);
            let rows = tx
                .get_range(
                    &KeyRange::prefix(prefix.as_bytes()),
                    RangeOptions::default(),
                )
                .await?;
            Ok(rows.len())
        })
    })
    .await
}

/// An append that encodes to more than a batch's bytes is stored as several batches, each
/// of which decodes (one value of the whole could commit and never decode again), and reads
/// back as one history.
pub async fn history_large_appends_split_into_batches(
    store: Arc<dyn Store>,
) -> Result<(), StoreError> {
    let store = &*store;
    // Twelve events of about 200 kB: 2.4 MB in one transaction.
    run(store, |tx| {
        Box::pin(async move {
            let big: Vec<HistoryEvent> = (0..12).map(|n| event(n, LARGE)).collect();
            history::append(tx, &instance("big"), 0, &big)
        })
    })
    .await?;
    assert_eq!(load(store, "big", 12).await?, (0..12).collect::<Vec<_>>());
    let keys = history_keys(store, "big").await?;
    assert!(
        (3..12).contains(&keys),
        "12 events of 200 kB in {keys} keys"
    );
    // Small events stay one batch.
    append(store, "small", &[(0, 7)]).await?;
    assert_eq!(history_keys(store, "small").await?, 1);
    Ok(())
}

//! Fencing: a writer whose partition epoch has been superseded cannot commit partition
//! writes.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::Timestamp;

use super::fixtures::{event, instance, message};
use super::{read_all, ro};
use crate::state::keys::Key;
use crate::state::queues::{self, MessageIds};
use crate::state::{history, leases};
use crate::store::{KeyValue, Store, StoreError, Transaction, transact};

const PARTITION: u32 = 3;
const LEASE: Duration = Duration::from_secs(30);

async fn acquire(
    store: &dyn Store,
    owner: &str,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let owner = owner.to_string();
    transact(store, &ro(), move |tx| {
        let owner = owner.clone();
        Box::pin(async move { leases::acquire(tx, PARTITION, &owner, now, LEASE).await })
    })
    .await
}

/// The writes of one partition step: a message into the partition's inbox and a history
/// event, after checking that `epoch` still holds the partition.
async fn partition_step(
    tx: &mut dyn Transaction,
    ids: &MessageIds,
    epoch: u64,
) -> Result<(), StoreError> {
    leases::check(tx, PARTITION, epoch).await?;
    queues::send(tx, ids, PARTITION, Timestamp(5), &message("x", 1, 0))?;
    history::append(tx, &instance("x"), 0, &[event(1, 0)])
}

async fn fenced_step(
    store: &dyn Store,
    ids: &Arc<MessageIds>,
    epoch: u64,
) -> Result<(), StoreError> {
    let ids = ids.clone();
    transact(store, &ro(), move |tx| {
        let ids = ids.clone();
        Box::pin(async move { partition_step(tx, &ids, epoch).await })
    })
    .await
}

fn assert_fenced(r: Result<(), StoreError>, held: u64, current: u64) {
    assert!(
        matches!(
            r,
            Err(StoreError::Fenced { partition: PARTITION, held: h, current: c })
                if h == held && c == current
        ),
        "expected Fenced at epoch {current} for a writer of epoch {held}: {r:?}"
    );
}

/// Acquisitions raise the epoch; a holder's step commits, a deposed holder's step fails with
/// the typed `Fenced` error and writes nothing; renewing a deposed lease is fenced too.
pub async fn fencing_rejects_a_deposed_epoch(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let now = Timestamp(1_000);
    let ids = Arc::new(MessageIds::new(1));
    assert_eq!(acquire(&*store, "a", now).await?, Some(1));
    assert_eq!(
        acquire(&*store, "b", now).await?,
        None,
        "another owner waits for the lease to expire"
    );
    fenced_step(&*store, &ids, 1).await?;
    let before = read_all(&*store).await?;
    let expired = Timestamp(now.0 + 31_000);
    assert_eq!(acquire(&*store, "b", expired).await?, Some(2));
    assert_fenced(fenced_step(&*store, &ids, 1).await, 1, 2);
    let renew = transact(&*store, &ro(), move |tx| {
        Box::pin(leases::renew(tx, PARTITION, 1, expired, LEASE))
    })
    .await;
    assert_fenced(renew, 1, 2);
    let after = read_all(&*store).await?;
    let lease_key = leases::lease_key(PARTITION);
    let since_key = leases::since_key(PARTITION);
    let others = |rows: &[(Vec<u8>, Vec<u8>)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        rows.iter()
            .filter(|(k, _)| *k != lease_key && *k != since_key)
            .cloned()
            .collect()
    };
    assert_eq!(
        others(&after),
        others(&before),
        "the deposed writer wrote nothing"
    );
    // The same owner (a restarted node) takes its partition back at once, deposing epoch 2.
    assert_eq!(acquire(&*store, "b", expired).await?, Some(3));
    assert_fenced(fenced_step(&*store, &ids, 2).await, 2, 3);
    fenced_step(&*store, &ids, 3).await
}

/// Unrelated keys on both sides of the lease record, so that the partition's keys are far
/// from it: no backend can make the race below fail by chance (PostgreSQL locks whole index
/// pages for serializable reads).
async fn write_padding(store: &dyn Store) -> Result<(), StoreError> {
    for chunk in 0..4u32 {
        let mut tx = store.begin().await?;
        for i in 0..500u32 {
            let n = chunk * 500 + i;
            tx.set(
                &Key::new().str("k").uint(u64::from(n)).into_bytes(),
                &[7; 100],
            )?;
            tx.set(
                &Key::new().str("n").uint(u64::from(n)).into_bytes(),
                &[7; 100],
            )?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Writer A checks epoch 1 and buffers partition writes. Meanwhile a new owner acquires
/// epoch 2 and commits, then reads the partition's inbox as its recovery does. A's commit
/// fails with a conflict, and its rerun with the typed `Fenced` error; none of A's writes is
/// in the store.
///
/// On FoundationDB and the embedded store A's commit conflicts with the acquisition alone
/// (A read the lease record it overwrote). PostgreSQL's serializable isolation may instead
/// order a deposed writer that touched nothing the new owner has read before the
/// acquisition, and commit it; it aborts A once the new owner has read the partition state
/// A writes, which the new owner does before acting on it (`docs/storage.md`, "Fencing").
pub async fn fencing_race_fails_the_deposed_commit(
    store: Arc<dyn Store>,
) -> Result<(), StoreError> {
    let now = Timestamp(1_000);
    let ids = Arc::new(MessageIds::new(1));
    write_padding(&*store).await?;
    let padding = read_all(&*store).await?;
    assert_eq!(acquire(&*store, "a", now).await?, Some(1));
    let mut a = store.begin().await?;
    partition_step(a.as_mut(), &ids, 1).await?;
    let expired = Timestamp(now.0 + 31_000);
    assert_eq!(acquire(&*store, "b", expired).await?, Some(2));
    let recovered = transact(&*store, &ro(), |tx| {
        Box::pin(async move { queues::read_inbox(tx, PARTITION, None, 100).await })
    })
    .await?;
    assert!(recovered.is_empty(), "A has not committed");
    let commit = a.commit().await;
    assert!(
        matches!(commit, Err(StoreError::Conflict)),
        "the deposed writer's commit must conflict: {commit:?}"
    );
    assert_fenced(fenced_step(&*store, &ids, 1).await, 1, 2);
    let lease_key = leases::lease_key(PARTITION);
    let since_key = leases::since_key(PARTITION);
    let rows: Vec<KeyValue> = read_all(&*store)
        .await?
        .into_iter()
        .filter(|(k, _)| *k != lease_key && *k != since_key)
        .collect();
    assert_eq!(rows, padding, "none of the deposed writer's writes");
    let mut tx = store.begin().await?;
    let lease = leases::read(tx.as_mut(), PARTITION).await?;
    assert_eq!(
        lease.map(|l| (l.epoch, l.owner)),
        Some((2, "b".to_string()))
    );
    Ok(())
}

//! Random transactions checked against an ordered map.

use std::sync::Arc;

use super::read_all;
use crate::store::{KeyRange, RangeOptions, Store, StoreError};

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    /// A short key over a tiny alphabet, so operations overlap a lot.
    fn key(&mut self) -> Vec<u8> {
        const ALPHABET: [u8; 4] = [0x00, b'a', b'b', 0xFE];
        let len = 1 + self.below(3) as usize;
        (0..len)
            .map(|_| {
                ALPHABET
                    .get(self.below(4) as usize)
                    .copied()
                    .unwrap_or(b'a')
            })
            .collect()
    }

    fn range(&mut self) -> KeyRange {
        let (a, b) = (self.key(), self.key());
        if self.below(8) == 0 {
            KeyRange::prefix(&a)
        } else {
            KeyRange::new(a, b) // sometimes inverted or empty: must read nothing
        }
    }
}

/// Random single-threaded transactions (sets, clears, range clears, point and range reads
/// with random limits and directions, commit or drop) give the same results as a plain
/// ordered map. Exercises read-your-writes merging against stored data.
pub async fn random_transactions_match_a_model(store: Arc<dyn Store>) -> Result<(), StoreError> {
    use std::collections::BTreeMap;
    let mut rng = Rng(0x5EED_0F9E_4D00_u64);
    let mut committed: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for round in 0..150u32 {
        let mut model = committed.clone();
        let mut tx = store.begin().await?;
        for op in 0..(1 + rng.below(24)) {
            let at = format!("round {round} op {op}");
            match rng.below(10) {
                0..=2 => {
                    let (k, v) = (rng.key(), round.to_be_bytes().to_vec());
                    tx.set(&k, &v)?;
                    model.insert(k, v);
                }
                3 => {
                    let k = rng.key();
                    tx.clear(&k);
                    model.remove(&k);
                }
                4 => {
                    let r = rng.range();
                    tx.clear_range(&r);
                    if r.begin < r.end {
                        model.retain(|k, _| !r.contains(k));
                    }
                }
                5 => {
                    let k = rng.key();
                    assert_eq!(tx.get(&k).await?, model.get(&k).cloned(), "get at {at}");
                }
                _ => {
                    let r = rng.range();
                    let limit = match rng.below(3) {
                        0 => None,
                        _ => Some(rng.below(6) as usize),
                    };
                    let reverse = rng.below(2) == 0;
                    let got = tx.get_range(&r, RangeOptions { limit, reverse }).await?;
                    let want: Vec<(Vec<u8>, Vec<u8>)> = if r.begin < r.end {
                        let inside = model.range(r.begin.clone()..r.end.clone());
                        let take = limit.unwrap_or(usize::MAX);
                        if reverse {
                            inside
                                .rev()
                                .take(take)
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        } else {
                            inside
                                .take(take)
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        }
                    } else {
                        Vec::new()
                    };
                    assert_eq!(
                        got, want,
                        "get_range {r:?} limit {limit:?} reverse {reverse} at {at}"
                    );
                }
            }
        }
        if rng.below(4) == 0 {
            drop(tx);
        } else {
            tx.commit().await?;
            committed = model;
        }
    }
    let all = read_all(&*store).await?;
    let want: Vec<(Vec<u8>, Vec<u8>)> = committed.into_iter().collect();
    assert_eq!(all, want, "final contents");
    Ok(())
}

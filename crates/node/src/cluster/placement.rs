//! Desired placement: rendezvous (highest-random-weight) hashing of partitions over live
//! nodes. Pure: no I/O, no clock, no randomness; the same inputs give the same answer in
//! every process (the hash is FNV-1a over the node name mixed with the partition number
//! by the SplitMix64 finalizer, never std's seeded `RandomState`).
//!
//! Rendezvous hashing moves only what must move: when a node joins, it takes exactly the
//! partitions for which it has the highest weight (about `P / N`); when a node leaves, only
//! its partitions move, each to the node with the next-highest weight. Its balance is that of
//! a random assignment (the count per node varies by about `sqrt(P / N)`).
//!
//! ```
//! use perdure_node::cluster::placement::{owner_of, placement};
//! let nodes = ["a", "b", "c"];
//! let table = placement(&nodes, 16);
//! assert_eq!(table.len(), 16);
//! assert_eq!(table[5], owner_of(&nodes, 5));
//! assert_eq!(placement::<&str>(&[], 4), vec![None; 4]);
//! ```

/// The weight of `partition` on the node named `node`.
pub fn weight(node: &str, partition: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h ^ mix(u64::from(partition).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// SplitMix64's finalizer: every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The index in `nodes` of the desired owner of `partition` (the highest weight; ties, which
/// need two equal 64-bit hashes, go to the smaller name). `None` when `nodes` is empty.
pub fn owner_index<S: AsRef<str>>(nodes: &[S], partition: u32) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            let (a, b) = (a.as_ref(), b.as_ref());
            weight(a, partition)
                .cmp(&weight(b, partition))
                .then_with(|| b.cmp(a))
        })
        .map(|(i, _)| i)
}

/// The desired owner of `partition` among `nodes`.
pub fn owner_of<S: AsRef<str>>(nodes: &[S], partition: u32) -> Option<&str> {
    owner_index(nodes, partition).and_then(|i| nodes.get(i).map(AsRef::as_ref))
}

/// The desired owner of every partition `0..partitions`.
pub fn placement<S: AsRef<str>>(nodes: &[S], partitions: u32) -> Vec<Option<&str>> {
    (0..partitions).map(|p| owner_of(nodes, p)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn counts(table: &[Option<&str>]) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for o in table.iter().flatten() {
            *c.entry((*o).to_string()).or_insert(0) += 1;
        }
        c
    }

    /// 100 nodes, 1,024 partitions: every node gets a share close to the mean, a join moves
    /// about 1/N of the partitions (all of them to the new node) and a leave moves exactly the
    /// leaving node's partitions; nothing else moves.
    #[test]
    fn hundred_nodes_balance_and_minimal_moves() {
        const P: u32 = 1024;
        let nodes: Vec<String> = (0..100).map(|i| format!("node-{i:03}")).collect();
        let before = placement(&nodes, P);
        assert!(before.iter().all(Option::is_some));
        let c = counts(&before);
        assert_eq!(c.len(), 100, "every node owns partitions");
        let (min, max) = (
            *c.values().min().unwrap_or(&0),
            *c.values().max().unwrap_or(&0),
        );
        println!("100 nodes, {P} partitions: min {min}, max {max} per node");
        // Mean 10.24; a random assignment spreads by sqrt(10.24) = 3.2 per node, so 100 nodes
        // span about 5 sigma. This input (deterministic) gives min 4, max 19.
        assert!(max - min <= 16, "balance: min {min}, max {max}");
        assert!(min >= 3 && max <= 20, "balance: min {min}, max {max}");

        // One join.
        let mut joined = nodes.clone();
        joined.push("node-new".to_string());
        let after = placement(&joined, P);
        let moved: Vec<u32> = (0..P)
            .filter(|p| before[*p as usize] != after[*p as usize])
            .collect();
        for p in &moved {
            assert_eq!(
                after[*p as usize],
                Some("node-new"),
                "partition {p} moved elsewhere"
            );
        }
        let frac = moved.len() as f64 / f64::from(P);
        println!("join moved {} of {P}", moved.len());
        assert!(
            (0.5 / 101.0..=2.0 / 101.0).contains(&frac),
            "join moved {} of {P}",
            moved.len()
        );

        // One leave.
        let leaver = "node-042";
        let left: Vec<String> = nodes.iter().filter(|n| *n != leaver).cloned().collect();
        let after = placement(&left, P);
        let moved: Vec<u32> = (0..P)
            .filter(|p| before[*p as usize] != after[*p as usize])
            .collect();
        for p in &moved {
            assert_eq!(
                before[*p as usize],
                Some(leaver),
                "partition {p} moved needlessly"
            );
        }
        assert_eq!(moved.len(), c.get(leaver).copied().unwrap_or(0));
        assert!(!moved.is_empty());
        println!("leave moved {} of {P}", moved.len());
        let frac = moved.len() as f64 / f64::from(P);
        assert!(
            (0.5 / 100.0..=2.0 / 100.0).contains(&frac),
            "leave moved {}",
            moved.len()
        );
    }

    #[test]
    fn order_of_nodes_does_not_matter_and_is_stable() {
        let a = ["x", "y", "z", "w"];
        let b = ["w", "z", "y", "x"];
        assert_eq!(placement(&a, 64), placement(&b, 64));
        // Fixed values: the hash must not change between builds or processes.
        assert_eq!(weight("node-1", 0), weight("node-1", 0));
        assert_ne!(weight("node-1", 0), weight("node-1", 1));
        assert_ne!(weight("node-1", 0), weight("node-2", 0));
        assert_eq!(
            weight("", 0),
            mix(0xcbf2_9ce4_8422_2325 ^ mix(0x9e37_79b9_7f4a_7c15))
        );
    }

    #[test]
    fn two_nodes_split_about_half() {
        let table = placement(&["node-a", "node-b"], 64);
        let c = counts(&table);
        let a = c.get("node-a").copied().unwrap_or(0);
        assert!((20..=44).contains(&a), "node-a owns {a} of 64");
    }
}

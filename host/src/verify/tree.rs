//! The verifier's own RFC 6962 Merkle tree over a chain's leaves
//! (docs/chain-format.md §3), kept as its frontier while the records
//! stream by, written from the RFC rather than shared with the host's
//! checkpointer. Seqs with no stored record (a declared gap, or records
//! that are missing) count as the gap leaf, so a tree position is always a
//! seq; a run of them is added in O(log² n), however long it is.

use sha2::{Digest, Sha256};

use super::record::{Hash, leaf_hash};

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([1u8]).chain_update(left).chain_update(right).finalize().into()
}

/// The leaf of a seq without a record: the RFC 6962 leaf of the empty
/// string, which no record (a JSON object) can have.
pub fn gap_leaf() -> Hash {
    leaf_hash(b"")
}

/// The frontier of a tree: the roots of its perfect subtrees, largest first.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    size: u64,
    /// (height, hash), heights strictly decreasing.
    nodes: Vec<(u32, Hash)>,
    /// Roots of perfect subtrees of gap leaves, by height.
    gap_subtrees: Vec<Hash>,
}

impl Tree {
    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf.
    pub fn push(&mut self, leaf: Hash) {
        self.push_subtree(0, leaf);
    }

    /// Appends `count` gap leaves.
    pub fn push_gap(&mut self, count: u64) {
        let mut remaining = count;
        while remaining > 0 {
            let aligned = if self.size == 0 { 63 } else { self.size.trailing_zeros() };
            let height = aligned.min(63 - remaining.leading_zeros());
            let subtree = self.gap_subtree(height);
            self.push_subtree(height, subtree);
            remaining -= 1 << height;
        }
    }

    fn gap_subtree(&mut self, height: u32) -> Hash {
        if self.gap_subtrees.is_empty() {
            self.gap_subtrees.push(gap_leaf());
        }
        while self.gap_subtrees.len() <= height as usize {
            let below = *self.gap_subtrees.last().expect("not empty");
            self.gap_subtrees.push(node_hash(&below, &below));
        }
        self.gap_subtrees[height as usize]
    }

    /// Appends a perfect subtree of `2^height` leaves; `size` must be a
    /// multiple of that.
    fn push_subtree(&mut self, height: u32, hash: Hash) {
        let (mut height, mut hash) = (height, hash);
        self.size += 1 << height;
        while let Some(&(h, left)) = self.nodes.last() {
            if h != height {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&left, &hash);
            height += 1;
        }
        self.nodes.push((height, hash));
    }

    /// The Merkle tree hash (`SHA-256("")` for no leaves).
    pub fn root(&self) -> Hash {
        let Some(((_, last), rest)) = self.nodes.split_last() else {
            return Sha256::digest([]).into();
        };
        rest.iter().rev().fold(*last, |right, (_, left)| node_hash(left, &right))
    }
}

/// The perfect subtree ranges of a tree of `size` leaves, largest first:
/// what each node of its frontier covers.
pub fn frontier_ranges(size: u64) -> Vec<std::ops::Range<u64>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for bit in (0..64).rev() {
        if size & (1 << bit) != 0 {
            ranges.push(start..start + (1 << bit));
            start += 1 << bit;
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = n.next_power_of_two() / 2;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn agrees_with_the_recursive_definition_and_the_hosts_tree() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let mut tree = Tree::default();
        assert_eq!(tree.root(), mth(&[]));
        for n in 1..=leaves.len() {
            tree.push(leaves[n - 1]);
            assert_eq!(tree.root(), mth(&leaves[..n]), "size {n}");
            assert_eq!(tree.root(), audit_format::hash::merkle_root(&leaves[..n]));
        }
    }

    #[test]
    fn gap_runs_equal_gap_leaves_one_by_one() {
        for (before, run) in [(0, 1), (0, 13), (3, 1), (3, 29), (8, 8), (5, 1000), (1, 0)] {
            let mut fast = Tree::default();
            let mut slow = Tree::default();
            for i in 0..before {
                fast.push(leaf_hash(&[i as u8]));
                slow.push(leaf_hash(&[i as u8]));
            }
            fast.push_gap(run);
            (0..run).for_each(|_| slow.push(gap_leaf()));
            fast.push(leaf_hash(b"after"));
            slow.push(leaf_hash(b"after"));
            assert_eq!((fast.size(), fast.root()), (slow.size(), slow.root()), "{before} then {run}");
        }
        let mut huge = Tree::default();
        huge.push_gap(u64::MAX >> 2);
        assert_eq!(huge.size(), u64::MAX >> 2);
    }

    #[test]
    fn ranges_follow_the_set_bits() {
        assert_eq!(frontier_ranges(6), vec![0..4, 4..6]);
        assert_eq!(frontier_ranges(0), vec![]);
        assert_eq!(frontier_ranges(7), vec![0..4, 4..6, 6..7]);
    }
}

//! The RFC 6962 Merkle tree of a chain, kept as its compact range
//! (frontier): the roots of the perfect subtrees that make up `[0, size)`,
//! one per set bit of `size`, largest first.
//!
//! A chain's store extends the frontier with every leaf it appends and
//! persists it with each checkpoint, so that recovery replays only the
//! leaves after the last checkpoint instead of the whole chain. The tree
//! hash is docs/chain-format.md §3; `audit_format::hash::merkle_root` is
//! the recursive definition this must agree with.

use audit_format::hash::{Hash, leaf_hash, node_hash};
use sha2::{Digest, Sha256};

/// The compact range `[0, size)` of an RFC 6962 Merkle tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Perfect subtree roots, largest (leftmost) first; one per set bit of `size`.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Rebuilds a frontier from a persisted size and nodes.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, String> {
        if nodes.len() != size.count_ones() as usize {
            return Err(format!(
                "a frontier of size {size} has {} nodes (one per set bit), not {}",
                size.count_ones(),
                nodes.len()
            ));
        }
        Ok(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtree roots, largest first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash (amortised O(1)).
    pub fn push(&mut self, leaf: Hash) {
        // Each trailing one bit of the old size is a subtree of the same
        // height as the one being carried: merge them, as binary addition.
        let mut node = leaf;
        let mut carry = self.size;
        while carry & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit of size");
            node = node_hash(&left, &node);
            carry >>= 1;
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// Appends `count` gap leaves (the leaves of the seqs a declared gap
    /// skips, docs/chain-format.md §3) in O(log² count).
    pub fn push_gap(&mut self, count: u64) {
        let mut subtrees = vec![leaf_hash(b"")];
        let mut remaining = count;
        while remaining > 0 {
            let aligned = if self.size == 0 { 63 } else { self.size.trailing_zeros() };
            let height = aligned.min(63 - remaining.leading_zeros());
            while subtrees.len() <= height as usize {
                let below = *subtrees.last().expect("not empty");
                subtrees.push(node_hash(&below, &below));
            }
            // A perfect subtree of 2^height leaves joins like one leaf at that height.
            let mut node = subtrees[height as usize];
            let mut carry = self.size >> height;
            while carry & 1 == 1 {
                let left = self.nodes.pop().expect("one node per set bit of size");
                node = node_hash(&left, &node);
                carry >>= 1;
            }
            self.nodes.push(node);
            self.size += 1 << height;
            remaining -= 1 << height;
        }
    }

    /// The Merkle tree hash of the leaves (`SHA-256("")` when empty).
    pub fn root(&self) -> Hash {
        let Some((last, rest)) = self.nodes.split_last() else {
            return Sha256::digest([]).into();
        };
        rest.iter().rev().fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_format::hash::merkle_root;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("record {i}").as_bytes())).collect()
    }

    #[test]
    fn root_matches_the_recursive_definition() {
        let all = leaves(300);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), merkle_root(&[]));
        for n in 1..=all.len() {
            frontier.push(all[n - 1]);
            assert_eq!(frontier.size(), n as u64);
            assert_eq!(frontier.nodes().len(), n.count_ones() as usize);
            assert_eq!(frontier.root(), merkle_root(&all[..n]), "size {n}");
        }
    }

    #[test]
    fn resumes_from_its_parts() {
        let all = leaves(300);
        for split in [0, 1, 2, 3, 7, 8, 64, 100, 255, 256, 299] {
            let mut first = Frontier::new();
            all[..split].iter().for_each(|l| first.push(*l));
            let mut resumed = Frontier::from_parts(first.size(), first.nodes().to_vec()).unwrap();
            all[split..].iter().for_each(|l| resumed.push(*l));
            assert_eq!(resumed.root(), merkle_root(&all), "split at {split}");
        }
    }

    #[test]
    fn gap_runs_equal_gap_leaves_one_by_one() {
        for (before, run) in [(0, 1), (0, 13), (3, 1), (3, 29), (8, 8), (5, 1000)] {
            let (mut fast, mut slow) = (Frontier::new(), Frontier::new());
            for leaf in leaves(before) {
                fast.push(leaf);
                slow.push(leaf);
            }
            fast.push_gap(run);
            (0..run).for_each(|_| slow.push(leaf_hash(b"")));
            assert_eq!(fast, slow, "{before} then {run}");
        }
    }

    #[test]
    fn refuses_parts_that_do_not_fit_the_size() {
        let error = Frontier::from_parts(6, vec![[0; 32]]).unwrap_err();
        assert!(error.contains("size 6 has 2 nodes"), "{error}");
        assert!(Frontier::from_parts(0, vec![]).is_ok());
    }
}

//! Checking a proof offline: its checkpoints' signatures under trusted
//! keys, and the hashes by the verification algorithms of RFC 9162
//! §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), written from the RFC.
//! Shares nothing with [`super::make`] but the document types.

use audit_format::Hash;
use audit_format::hash::node_hash;

use super::{Consistency, FORMAT, Inclusion, Proof};
use crate::checkpoint::{Checkpoint, SignedNote};
use crate::verify::jcs::Members;
use crate::verify::record::parse_hash;
use crate::verify::{ChainName, TrustedKey};

/// What a valid proof proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    /// The record (chain, seq) is in the tree of the signed checkpoint.
    Inclusion {
        /// The chain id.
        chain_id: String,
        /// The record's seq.
        seq: u64,
        /// The checkpoint's origin.
        origin: String,
        /// Its size.
        tree_size: u64,
        /// Who signed it.
        signers: Vec<String>,
    },
    /// The older signed tree is a prefix of the newer one.
    Consistency {
        /// The checkpoints' origin.
        origin: String,
        /// The older size.
        old_size: u64,
        /// The newer size.
        new_size: u64,
        /// Who signed the newer one.
        signers: Vec<String>,
    },
}

/// Why a proof does not hold (exit 1), with what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// A signed checkpoint that verified.
struct Signed {
    checkpoint: Checkpoint,
    signers: Vec<String>,
}

/// Parses `note` and checks that a key trusted for `chain_id` at its size signed it.
fn signed(note: &str, chain_id: &str, keys: &[TrustedKey], what: &str) -> Result<Signed, Invalid> {
    let parsed = SignedNote::parse(note).map_err(|e| invalid(format!("{what}: {e}")))?;
    let checkpoint = Checkpoint::parse(&parsed.text).map_err(|e| invalid(format!("{what}: {e}")))?;
    if !checkpoint.origin.contains(&format!("/{chain_id}/")) {
        return Err(invalid(format!("{what}: origin {:?} is not that of chain {chain_id:?}", checkpoint.origin)));
    }
    let chain = ChainName { id: chain_id, origin: Some(&checkpoint.origin) };
    let mut signers = Vec::new();
    for signature in &parsed.signatures {
        for key in keys.iter().filter(|k| k.covers(&chain, checkpoint.size)) {
            match key.key.check(&parsed.text, signature) {
                Some(true) if !signers.contains(&signature.name) => signers.push(signature.name.clone()),
                Some(false) => {
                    return Err(invalid(format!(
                        "{what}: the signature of trusted key {} does not verify",
                        signature.name
                    )));
                }
                _ => {}
            }
        }
    }
    if signers.is_empty() {
        return Err(invalid(format!("{what}: no key trusted for this chain at size {} signed it", checkpoint.size)));
    }
    Ok(Signed { checkpoint, signers })
}

fn hashes(path: &[String], what: &str) -> Result<Vec<Hash>, Invalid> {
    path.iter()
        .enumerate()
        .map(|(i, h)| parse_hash(h).ok_or_else(|| invalid(format!("{what}[{i}] is not 64 lowercase hex digits"))))
        .collect()
}

/// Checks `proof` against the trusted `keys`.
pub fn verify(proof: &Proof, keys: &[TrustedKey]) -> Result<Proven, Invalid> {
    match proof {
        Proof::Inclusion(p) => inclusion(p, keys),
        Proof::Consistency(p) => consistency(p, keys),
    }
}

fn inclusion(p: &Inclusion, keys: &[TrustedKey]) -> Result<Proven, Invalid> {
    if p.format != FORMAT {
        return Err(invalid(format!("proof format {} is not {FORMAT}", p.format)));
    }
    let Signed { checkpoint, signers } = signed(&p.checkpoint, &p.chain_id, keys, "checkpoint")?;
    if checkpoint.size != p.tree_size {
        return Err(invalid(format!("tree_size {} is not the checkpoint's size {}", p.tree_size, checkpoint.size)));
    }
    let record = crate::verify::record::parse(p.record.as_bytes(), &mut Members::default())
        .map_err(|e| invalid(format!("record: {e}")))?;
    if record.chain_id != p.chain_id || record.seq != p.leaf_index {
        return Err(invalid(format!(
            "the record is {}#{}, not {}#{}",
            record.chain_id, record.seq, p.chain_id, p.leaf_index
        )));
    }
    let path = hashes(&p.audit_path, "audit_path")?;
    let root = root_from_inclusion_path(p.leaf_index, p.tree_size, record.leaf, &path).ok_or_else(|| {
        invalid(format!("the audit path does not fit leaf {} of a tree of {}", p.leaf_index, p.tree_size))
    })?;
    if root != checkpoint.root {
        return Err(invalid("the audit path does not lead to the checkpoint's root"));
    }
    Ok(Proven::Inclusion {
        chain_id: p.chain_id.clone(),
        seq: p.leaf_index,
        origin: checkpoint.origin,
        tree_size: p.tree_size,
        signers,
    })
}

fn consistency(p: &Consistency, keys: &[TrustedKey]) -> Result<Proven, Invalid> {
    if p.format != FORMAT {
        return Err(invalid(format!("proof format {} is not {FORMAT}", p.format)));
    }
    let old = signed(&p.old_checkpoint, &p.chain_id, keys, "old_checkpoint")?;
    let new = signed(&p.new_checkpoint, &p.chain_id, keys, "new_checkpoint")?;
    if old.checkpoint.origin != new.checkpoint.origin {
        return Err(invalid(format!(
            "the checkpoints are of two logs: {:?} and {:?}",
            old.checkpoint.origin, new.checkpoint.origin
        )));
    }
    if (old.checkpoint.size, new.checkpoint.size) != (p.old_size, p.new_size) {
        return Err(invalid(format!(
            "the sizes {}..{} are not the checkpoints' {}..{}",
            p.old_size, p.new_size, old.checkpoint.size, new.checkpoint.size
        )));
    }
    let path = hashes(&p.consistency_path, "consistency_path")?;
    let holds = match (p.old_size, p.new_size) {
        (m, n) if m > n => false,
        (0, _) => path.is_empty(),
        (m, n) if m == n => path.is_empty() && old.checkpoint.root == new.checkpoint.root,
        (m, n) => consistent(m, n, old.checkpoint.root, new.checkpoint.root, &path),
    };
    if !holds {
        return Err(invalid(format!("the consistency path does not prove {}..{}", p.old_size, p.new_size)));
    }
    Ok(Proven::Consistency {
        origin: new.checkpoint.origin,
        old_size: p.old_size,
        new_size: p.new_size,
        signers: new.signers,
    })
}

/// RFC 9162 §2.1.3.2: the root an audit path leads to from `leaf` at
/// `index` in a tree of `size`, or `None` if the path does not fit.
pub fn root_from_inclusion_path(index: u64, size: u64, leaf: Hash, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, leaf);
    for p in path {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

/// RFC 9162 §2.1.4.2 for 0 < `first` < `second`.
pub fn consistent(first: u64, second: u64, first_hash: Hash, second_hash: Hash, path: &[Hash]) -> bool {
    if path.is_empty() {
        return false;
    }
    let mut path = path.to_vec();
    if first.is_power_of_two() {
        path.insert(0, first_hash);
    }
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == first_hash && sr == second_hash && snode == 0
}

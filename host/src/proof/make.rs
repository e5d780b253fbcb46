//! Making proofs from a chain directory: the checkpoints from
//! `checkpoints.jsonl`, the record from its segment, the hashes from the
//! tiles (RFC 9162 §2.1.3.1 PATH and §2.1.4.1 SUBPROOF, each subtree hash
//! read from the level of the tiles that holds it).

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use audit_format::Hash;
use audit_format::hash::to_hex;

use super::{Consistency, FORMAT, Inclusion, Proof};
use crate::store::tiles::{TileError, TileReader, largest_power_of_two_below};
use crate::store::{CheckpointEntry, CheckpointReader, StoreError};
use crate::verify::jcs::Members;

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    /// The chain directory or one of its files could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tiles lack a hash the proof needs.
    #[error(transparent)]
    Tiles(#[from] TileError),
    /// What was asked for does not exist in the chain.
    #[error("{0}")]
    NotFound(String),
}

/// The directory of chain `chain_id` in `store` (or `store` itself, when it
/// is that chain's directory).
pub fn chain_dir(store: &Path, chain_id: &str) -> Result<PathBuf, ProveError> {
    if crate::store::chain_id(store).is_ok_and(|id| id == chain_id) {
        return Ok(store.to_path_buf());
    }
    let dir = store.join(crate::store::ChainStore::chain_dir_name(chain_id));
    match crate::store::chain_id(&dir) {
        Ok(id) if id == chain_id => Ok(dir),
        Ok(id) => Err(ProveError::NotFound(format!("{} holds chain {id:?}, not {chain_id:?}", dir.display()))),
        Err(e) => Err(ProveError::NotFound(format!("{} has no chain {chain_id:?}: {e}", store.display()))),
    }
}

/// The chain's checkpoints, in file order.
pub fn checkpoints(chain_dir: &Path) -> Result<Vec<CheckpointEntry>, ProveError> {
    let (entries, _) = CheckpointReader::new(chain_dir, 0).read(u64::MAX)?;
    Ok(entries)
}

/// The checkpoint of exactly `size`, or (`None`) the newest one covering
/// more than `above`.
fn pick(entries: &[CheckpointEntry], size: Option<u64>, above: u64) -> Result<&CheckpointEntry, ProveError> {
    match size {
        Some(size) => entries
            .iter()
            .rev()
            .find(|e| e.size == size)
            .ok_or_else(|| ProveError::NotFound(format!("the chain has no checkpoint of size {size}"))),
        None => entries.iter().filter(|e| e.size > above).max_by_key(|e| e.size).ok_or_else(|| {
            ProveError::NotFound(format!("no checkpoint covers seq {above} yet (the newest covers fewer records)"))
        }),
    }
}

/// The exact line of the record at `seq`.
fn read_record(chain_dir: &Path, seq: u64) -> Result<Vec<u8>, ProveError> {
    let segment = crate::store::segment_of(chain_dir, seq)?
        .ok_or_else(|| ProveError::NotFound(format!("no segment holds seq {seq}")))?;
    let io = |source| ProveError::Io { path: segment.1.clone(), source };
    let file = std::fs::File::open(&segment.1).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    for _ in segment.0..=seq {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Err(ProveError::NotFound(format!("seq {seq} is past the end of {}", segment.1.display())));
        }
    }
    if line.pop() != Some(b'\n') {
        return Err(ProveError::NotFound(format!("seq {seq} is a torn line of {}", segment.1.display())));
    }
    Ok(line)
}

fn hex_all(hashes: Vec<Hash>) -> Vec<String> {
    hashes.iter().map(to_hex).collect()
}

/// RFC 9162 §2.1.3.1: the audit path of leaf `m` in the tree of leaves
/// `start..end`.
pub fn audit_path(tiles: &TileReader, m: u64, start: u64, end: u64) -> Result<Vec<Hash>, TileError> {
    if end - start == 1 {
        return Ok(Vec::new());
    }
    let k = largest_power_of_two_below(end - start);
    let mut path;
    if m < start + k {
        path = audit_path(tiles, m, start, start + k)?;
        path.push(tiles.subtree_hash(start + k, end)?);
    } else {
        path = audit_path(tiles, m, start + k, end)?;
        path.push(tiles.subtree_hash(start, start + k)?);
    }
    Ok(path)
}

/// RFC 9162 §2.1.4.1: SUBPROOF(m, D[start:end], complete).
fn subproof(tiles: &TileReader, m: u64, start: u64, end: u64, complete: bool) -> Result<Vec<Hash>, TileError> {
    let n = end - start;
    if m == n {
        return Ok(if complete { Vec::new() } else { vec![tiles.subtree_hash(start, end)?] });
    }
    let k = largest_power_of_two_below(n);
    let mut proof;
    if m <= k {
        proof = subproof(tiles, m, start, start + k, complete)?;
        proof.push(tiles.subtree_hash(start + k, end)?);
    } else {
        proof = subproof(tiles, m - k, start + k, end, false)?;
        proof.push(tiles.subtree_hash(start, start + k)?);
    }
    Ok(proof)
}

/// The consistency path from a tree of `old` leaves to one of `new`
/// (empty when `old` is 0 or equals `new`).
pub fn consistency_path(tiles: &TileReader, old: u64, new: u64) -> Result<Vec<Hash>, TileError> {
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    subproof(tiles, old, 0, new, true)
}

/// Proves that the record at `seq` of the chain in `chain_dir` is in the
/// tree of its checkpoint of `size` (by default the newest covering it).
pub fn inclusion(chain_dir: &Path, seq: u64, size: Option<u64>) -> Result<Proof, ProveError> {
    let entries = checkpoints(chain_dir)?;
    let checkpoint = pick(&entries, size, seq)?;
    if seq >= checkpoint.size {
        return Err(ProveError::NotFound(format!(
            "the checkpoint of size {} does not cover seq {seq}",
            checkpoint.size
        )));
    }
    let record = read_record(chain_dir, seq)?;
    inclusion_of(&TileReader::open(chain_dir), checkpoint.size, &checkpoint.note, seq, &record)
}

/// The inclusion proof of `record`, read as the line of `seq`, in the tree
/// of the checkpoint `note` of `size` (which covers `seq`), from the chain's
/// `tiles`.
pub fn inclusion_of(tiles: &TileReader, size: u64, note: &str, seq: u64, record: &[u8]) -> Result<Proof, ProveError> {
    let parsed = crate::verify::record::parse(record, &mut Members::default())
        .map_err(|e| ProveError::NotFound(format!("seq {seq} is not a readable record: {e}")))?;
    if tiles.subtree_hash(seq, seq + 1)? != parsed.leaf {
        return Err(ProveError::NotFound(format!(
            "the record on the line of seq {seq} is not the tree's leaf {seq} (a seq a declared gap gave up, or a damaged store: run verify)"
        )));
    }
    Ok(Proof::Inclusion(Inclusion {
        format: FORMAT,
        chain_id: parsed.chain_id.to_string(),
        leaf_index: seq,
        tree_size: size,
        record: String::from_utf8_lossy(record).into_owned(),
        audit_path: hex_all(audit_path(tiles, seq, 0, size)?),
        checkpoint: note.to_owned(),
    }))
}

/// Proves that the chain's checkpoint of `old` extends to the one of `new`
/// (by default its newest).
pub fn consistency(chain_dir: &Path, chain_id: &str, old: u64, new: Option<u64>) -> Result<Proof, ProveError> {
    let entries = checkpoints(chain_dir)?;
    let old_checkpoint = pick(&entries, Some(old), 0)?;
    let new_checkpoint = match new {
        Some(size) => pick(&entries, Some(size), 0)?,
        None => entries.iter().max_by_key(|e| e.size).expect("the old one is there"),
    };
    if new_checkpoint.size < old {
        return Err(ProveError::NotFound(format!("the newer size {} is below {old}", new_checkpoint.size)));
    }
    let tiles = TileReader::open(chain_dir);
    Ok(Proof::Consistency(Consistency {
        format: FORMAT,
        chain_id: chain_id.to_owned(),
        old_size: old,
        new_size: new_checkpoint.size,
        consistency_path: hex_all(consistency_path(&tiles, old, new_checkpoint.size)?),
        old_checkpoint: old_checkpoint.note.clone(),
        new_checkpoint: new_checkpoint.note.clone(),
    }))
}

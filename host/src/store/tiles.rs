//! The chain's Merkle tree, kept as hash tiles beside the segments, so that
//! inclusion and consistency proofs (RFC 9162 §2.1.3–2.1.4) are read from
//! stored tree state instead of rehashing the chain.
//!
//! Layout (`tiles/` in the chain directory), in the terms of C2SP
//! tlog-tiles with tile height 8: `level-<L>.hashes` holds, for level `L`,
//! the hashes of the complete subtrees of `256^L` leaves, in order, 32 bytes
//! each; level 0 holds the leaf hashes. Tile `N` of level `L` is bytes
//! `N·256·32 .. (N+1)·256·32` of its level file (a partial tile, the bytes
//! up to the end), so the files can be served as C2SP tiles by byte range.
//! About 32.1 bytes per record.
//!
//! The files are written after each append without an fsync of their own
//! and fsync'd before each checkpoint is written: everything a checkpoint
//! covers is durable. At open they are cut back to the newest checkpoint's
//! size and the records after it are replayed into them (as into the
//! frontier), so a crash can lose nothing a proof needs.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use audit_format::Hash;
use audit_format::hash::{merkle_root, node_hash};

use super::error::{StoreError, io};

/// Entries per tile: 2^8.
pub const TILE_WIDTH: u64 = 256;
/// The directory of the tile files in a chain directory.
pub const DIR: &str = "tiles";
/// Levels kept: 256^8 = 2^64 leaves.
const LEVELS: usize = 8;

/// The file of `level`'s hashes.
pub fn level_path(chain_dir: &Path, level: usize) -> PathBuf {
    chain_dir.join(DIR).join(format!("level-{level}.hashes"))
}

/// Appends leaves to the tile files of one chain (owned by its store).
pub struct TileWriter {
    files: Vec<(PathBuf, File)>,
    /// Entries written, per level.
    written: Vec<u64>,
    /// Entries fsync'd, per level.
    synced: Vec<u64>,
    /// The entries of each level's incomplete tile.
    open_tile: Vec<Vec<Hash>>,
    /// Bytes not yet written, per level.
    pending: Vec<Vec<u8>>,
    /// Leaves pushed.
    size: u64,
}

impl TileWriter {
    /// Opens the tile files of `chain_dir` and cuts them back to `size`
    /// leaves (the newest checkpoint's: what was fsync'd). Files holding
    /// fewer (lost, or from an older version) start over: the caller
    /// replays the leaves from [`TileWriter::size`] on.
    pub fn open(chain_dir: &Path, size: u64) -> Result<Self, StoreError> {
        let dir = chain_dir.join(DIR);
        super::durable::create_dir(&dir)?;
        let mut files = Vec::with_capacity(LEVELS);
        let mut lengths = Vec::with_capacity(LEVELS);
        for level in 0..LEVELS {
            let path = level_path(chain_dir, level);
            let access = super::FileAccess::of_dir(&dir);
            let file = access.options().read(true).write(true).create(true).truncate(false).open(&path);
            let file = file.map_err(io("open", &path))?;
            access.fix(&file).map_err(io("chmod", &path))?;
            let len = file.metadata().map_err(io("stat", &path))?.len();
            lengths.push(len / 32);
            files.push((path, file));
        }
        // The tiles hold `size` leaves if level 0 has them all.
        let keep = if lengths[0] >= size { size } else { 0 };
        let mut writer = TileWriter {
            files,
            written: vec![0; LEVELS],
            synced: vec![0; LEVELS],
            open_tile: vec![Vec::new(); LEVELS],
            pending: vec![Vec::new(); LEVELS],
            size: keep,
        };
        for level in 0..LEVELS {
            let entries = keep / TILE_WIDTH.pow(level as u32);
            let (path, file) = &writer.files[level];
            file.set_len(entries * 32).map_err(io("truncate", path))?;
            writer.written[level] = entries;
            writer.synced[level] = entries;
            let open = entries % TILE_WIDTH;
            let mut bytes = vec![0u8; (open * 32) as usize];
            file.read_exact_at(&mut bytes, (entries - open) * 32).map_err(io("read", path))?;
            writer.open_tile[level] = bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
        }
        Ok(writer)
    }

    /// Leaves in the tiles.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds the next leaf (written by the next [`TileWriter::write`]).
    pub fn push(&mut self, leaf: Hash) {
        self.size += 1;
        let mut hash = leaf;
        for level in 0..LEVELS {
            self.pending[level].extend_from_slice(&hash);
            self.open_tile[level].push(hash);
            if (self.open_tile[level].len() as u64) < TILE_WIDTH {
                return;
            }
            hash = merkle_root(&self.open_tile[level]);
            self.open_tile[level].clear();
        }
    }

    /// Writes what was pushed since the last call (no fsync).
    pub fn write(&mut self) -> Result<(), StoreError> {
        for level in 0..LEVELS {
            if self.pending[level].is_empty() {
                continue;
            }
            let (path, file) = &self.files[level];
            file.write_all_at(&self.pending[level], self.written[level] * 32).map_err(io("write", path))?;
            self.written[level] += self.pending[level].len() as u64 / 32;
            self.pending[level].clear();
        }
        Ok(())
    }

    /// Writes and fsyncs everything pushed: done before a checkpoint that
    /// covers it is written.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.write()?;
        for (level, (path, file)) in self.files.iter().enumerate() {
            if self.synced[level] < self.written[level] {
                file.sync_data().map_err(io("fsync", path))?;
                self.synced[level] = self.written[level];
            }
        }
        Ok(())
    }
}

/// Why a hash could not be read from the tiles.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// A tile file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tiles do not hold the subtree asked for.
    #[error("the tiles hold no hash of leaves {start}..{end} (level {level} has {entries} entries)")]
    Missing {
        /// First leaf.
        start: u64,
        /// One past the last leaf.
        end: u64,
        /// The level read.
        level: usize,
        /// Entries it has.
        entries: u64,
    },
}

/// Reads subtree hashes from a chain's tile files (for proofs).
pub struct TileReader {
    files: Vec<(PathBuf, Option<File>)>,
}

impl TileReader {
    /// The tiles of the chain in `chain_dir`.
    pub fn open(chain_dir: &Path) -> Self {
        let files = (0..LEVELS)
            .map(|level| {
                let path = level_path(chain_dir, level);
                let file = File::open(&path).ok();
                (path, file)
            })
            .collect();
        TileReader { files }
    }

    /// `count` entries of `level` from `first`: level `L` holds the hashes of
    /// the complete subtrees of `256^L` leaves, in order.
    pub fn entries(&self, level: usize, first: u64, count: u64) -> Result<Vec<Hash>, TileError> {
        let (path, file) = &self.files[level];
        let missing = |entries| TileError::Missing {
            start: first * TILE_WIDTH.pow(level as u32),
            end: (first + count) * TILE_WIDTH.pow(level as u32),
            level,
            entries,
        };
        let Some(file) = file else { return Err(missing(0)) };
        let mut bytes = vec![0u8; (count * 32) as usize];
        match file.read_exact_at(&mut bytes, first * 32) {
            Ok(()) => Ok(bytes.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(missing(file.metadata().map_or(0, |m| m.len() / 32)))
            }
            Err(source) => Err(TileError::Io { path: path.clone(), source }),
        }
    }

    /// The Merkle tree hash of leaves `start..end` (RFC 9162 MTH of that
    /// range): a perfect, aligned subtree is read from one level (at most
    /// 128 entries hashed); any other range is split at its largest power
    /// of two, as the MTH definition does.
    pub fn subtree_hash(&self, start: u64, end: u64) -> Result<Hash, TileError> {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let height = n.trailing_zeros();
            let level = (height / 8) as usize;
            let width = TILE_WIDTH.pow(level as u32);
            let entries = self.entries(level, start / width, n / width)?;
            return Ok(merkle_root(&entries));
        }
        let k = largest_power_of_two_below(n);
        Ok(node_hash(&self.subtree_hash(start, start + k)?, &self.subtree_hash(start + k, end)?))
    }
}

/// The largest power of two smaller than `n` (n ≥ 2).
pub fn largest_power_of_two_below(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        audit_format::hash::leaf_hash(&i.to_le_bytes())
    }

    #[test]
    fn subtree_hashes_from_tiles_are_the_merkle_tree_hashes_of_the_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash> = (0..70_000).map(leaf).collect();
        let mut writer = TileWriter::open(dir.path(), 0).unwrap();
        for (i, l) in leaves.iter().enumerate() {
            writer.push(*l);
            if i % 1000 == 0 {
                writer.write().unwrap();
            }
        }
        writer.sync().unwrap();
        assert_eq!(std::fs::metadata(level_path(dir.path(), 0)).unwrap().len(), 70_000 * 32);
        assert_eq!(std::fs::metadata(level_path(dir.path(), 1)).unwrap().len(), (70_000 / 256) * 32);
        assert_eq!(std::fs::metadata(level_path(dir.path(), 2)).unwrap().len(), 32);
        let reader = TileReader::open(dir.path());
        for (start, end) in [(0, 1), (0, 70_000), (65_536, 70_000), (0, 65_536), (5, 300), (256, 512), (69_999, 70_000)]
        {
            assert_eq!(
                reader.subtree_hash(start, end).unwrap(),
                merkle_root(&leaves[start as usize..end as usize]),
                "{start}..{end}"
            );
        }
        assert!(matches!(reader.subtree_hash(0, 70_001), Err(TileError::Missing { .. })));
    }

    #[test]
    fn reopening_cuts_the_tiles_back_to_the_durable_size_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash> = (0..1000).map(leaf).collect();
        let mut writer = TileWriter::open(dir.path(), 0).unwrap();
        leaves.iter().for_each(|l| writer.push(*l));
        writer.sync().unwrap();
        drop(writer);
        // Reopened at the checkpoint of 600: the rest is replayed.
        let mut writer = TileWriter::open(dir.path(), 600).unwrap();
        assert_eq!(writer.size(), 600);
        leaves[600..].iter().for_each(|l| writer.push(*l));
        writer.sync().unwrap();
        let reader = TileReader::open(dir.path());
        assert_eq!(reader.subtree_hash(0, 1000).unwrap(), merkle_root(&leaves));
        // Tiles shorter than the checkpoint (lost) start over from nothing.
        std::fs::write(level_path(dir.path(), 0), [0u8; 64]).unwrap();
        assert_eq!(TileWriter::open(dir.path(), 600).unwrap().size(), 0);
    }
}

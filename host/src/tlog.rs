//! Each chain as a C2SP tlog-tiles log (c2sp.org/tlog-tiles) in static
//! files, for any web server or object store to host: `<chain>/checkpoint`
//! (the newest signed checkpoint), the hash tiles `tile/<L>/<N>[.p/<W>]` and
//! the entry bundles `tile/entries/<N>[.p/<W>]` whose entries are the stored
//! record bytes. Tile height 8; partial tiles for every checkpointed size
//! whose tile is still partial at the newest one (full tiles replace them).
//! A tlog-tiles client rebuilds and checks a checkpoint from these files
//! alone, with no otel-audit code.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use audit_format::Hash;
use audit_format::hash::leaf_hash;

use crate::store::tiles::{TILE_WIDTH, TileError, TileReader};
use crate::store::{ChainStore, CheckpointEntry, CheckpointReader, StoreError};

/// Why a chain could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store's chain directories could not be listed.
    #[error(transparent)]
    Scan(#[from] crate::verify::VerifyError),
    /// The chain directory or its checkpoints could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tiles lack hashes the newest checkpoint covers.
    #[error(transparent)]
    Tiles(#[from] TileError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing to export, or the store does not hold what its newest
    /// checkpoint covers.
    #[error("chain {chain}: {reason}")]
    Chain {
        /// Chain id.
        chain: String,
        /// What is wrong.
        reason: String,
    },
}

/// What was written for one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Chain id.
    pub chain_id: String,
    /// The log's directory (`<out>/<chain dir name>`).
    pub dir: PathBuf,
    /// Entries in the newest checkpoint's tree.
    pub size: u64,
    /// Hash tiles written (full and partial).
    pub tiles: usize,
    /// Entry bundles written (full and partial).
    pub bundles: usize,
}

/// `<N>` of a tile path: zero-padded 3-digit elements, all but the last
/// prefixed with `x` (1234067 is `x001/x234/067`).
pub fn index_path(index: u64) -> String {
    let mut groups = Vec::new();
    let mut n = index;
    loop {
        groups.push(n % 1000);
        n /= 1000;
        if n == 0 {
            break;
        }
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g:03}") } else { format!("{g:03}") })
        .collect::<Vec<_>>()
        .join("/")
}

/// The path of tile `index` of `level` (`None`: entry bundle) with `width`
/// entries, relative to the log's prefix.
pub fn tile_path(level: Option<usize>, index: u64, width: u64) -> String {
    let level = level.map_or("entries".to_owned(), |l| l.to_string());
    let partial = if width < TILE_WIDTH { format!(".p/{width}") } else { String::new() };
    format!("tile/{level}/{}{partial}", index_path(index))
}

/// The tiles of one level of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelTiles {
    /// The level (0: leaf hashes).
    pub level: usize,
    /// Full tiles: indexes `0..full`.
    pub full: u64,
    /// The partial tile after them, if any: its width (1..=255).
    pub partial: Option<u64>,
}

/// The tiles of a tree of `size` entries, level by level
/// (c2sp.org/tlog-tiles: level `l` has `floor(size / 256^l)` hashes).
pub fn tiles_for(size: u64) -> Vec<LevelTiles> {
    let mut levels = Vec::new();
    let mut hashes = size;
    while hashes > 0 {
        let width = hashes % TILE_WIDTH;
        levels.push(LevelTiles {
            level: levels.len(),
            full: hashes / TILE_WIDTH,
            partial: (width > 0).then_some(width),
        });
        hashes /= TILE_WIDTH;
    }
    levels
}

/// Where a chain's log goes under an export directory: its origin without
/// the origin prefix, `<chain id>/<nonce>`. So with the store's `origin`
/// set to the public URL prefix the directory is served at
/// (`audit.example.com/logs`), every log's URL is its origin, as
/// c2sp.org/tlog-tiles asks (`https://audit.example.com/logs/<chain id>/<nonce>/checkpoint`).
pub fn origin_path(origin: &str, chain_id: &str) -> String {
    let marker = format!("/{chain_id}/");
    let path = origin.find(&marker).map(|at| &origin[at + 1..]);
    // Only plain names: never a path that leaves the export directory.
    let plain = |p: &&str| p.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\\'));
    match path.filter(plain) {
        Some(path) => path.to_owned(),
        None => ChainStore::chain_dir_name(chain_id),
    }
}

/// Exports every chain of `store` (or the one `chain` names) under `out`,
/// each at [`origin_path`].
pub fn export(store: &Path, out: &Path, chain: Option<&str>) -> Result<Vec<Exported>, ExportError> {
    let dirs = crate::verify::chain_dirs(store)?;
    let mut exported = Vec::new();
    for dir in dirs {
        let chain_id = crate::store::chain_id(&dir)?;
        if chain.is_some_and(|wanted| wanted != chain_id) {
            continue;
        }
        let log = out.join(origin_path(&crate::store::chain_origin(&dir)?, &chain_id));
        exported.push(export_chain(&dir, &chain_id, &log)?);
    }
    if let Some(wanted) = chain
        && exported.is_empty()
    {
        return Err(ExportError::Chain { chain: wanted.to_owned(), reason: format!("not in {}", store.display()) });
    }
    Ok(exported)
}

/// One chain's log at its newest checkpoint, written under `log`.
fn export_chain(chain_dir: &Path, chain_id: &str, log: &Path) -> Result<Exported, ExportError> {
    let failed = |reason: String| ExportError::Chain { chain: chain_id.to_owned(), reason };
    let (checkpoints, _) = CheckpointReader::new(chain_dir, 0).read(u64::MAX)?;
    let newest = checkpoints.iter().max_by_key(|c| c.size).ok_or_else(|| failed("no signed checkpoint yet".into()))?;
    let size = newest.size;
    let sizes: BTreeSet<u64> = checkpoints.iter().map(|c| c.size).filter(|s| *s <= size).collect();
    let tiles = TileReader::open(chain_dir);
    let mut written = Exported { chain_id: chain_id.to_owned(), dir: log.to_path_buf(), size, tiles: 0, bundles: 0 };

    // Hash tiles: the full ones, then the partial ones of each checkpointed
    // size whose tile is still partial at `size`.
    for LevelTiles { level, full, .. } in tiles_for(size) {
        for index in 0..full {
            let hashes = tiles.entries(level, index * TILE_WIDTH, TILE_WIDTH)?;
            write(log, &tile_path(Some(level), index, TILE_WIDTH), &hashes.concat())?;
            written.tiles += 1;
        }
        for (index, width) in partial_tiles(&sizes, level, full) {
            let hashes = tiles.entries(level, index * TILE_WIDTH, width)?;
            write(log, &tile_path(Some(level), index, width), &hashes.concat())?;
            written.tiles += 1;
        }
    }

    // Entry bundles: the records, each checked against its leaf hash (the
    // leaves of one bundle in memory at a time).
    let mut leaves = Vec::new();
    let mut bundle: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut seq = 0u64;
    let partials = partial_tiles(&sizes, 0, size / TILE_WIDTH);
    'segments: for (_, path) in crate::store::segments(chain_dir)? {
        let io = |source| ExportError::Io { path: path.clone(), source };
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?);
        let mut line = Vec::new();
        while seq < size {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                continue 'segments;
            }
            if line.pop() != Some(b'\n') {
                return Err(failed(format!("seq {seq} is a torn line of {}", path.display())));
            }
            if ends.is_empty() {
                leaves = tiles.entries(0, seq, (size - seq).min(TILE_WIDTH))?;
            }
            push_entry(&mut bundle, seq, &line, &leaves[ends.len()]).map_err(failed)?;
            ends.push(bundle.len());
            seq += 1;
            if ends.len() as u64 == TILE_WIDTH {
                write(log, &tile_path(None, seq / TILE_WIDTH - 1, TILE_WIDTH), &bundle)?;
                written.bundles += 1;
                bundle.clear();
                ends.clear();
            }
        }
        break;
    }
    if seq < size {
        return Err(failed(format!("the segments hold {seq} records, the newest checkpoint covers {size}")));
    }
    for (index, width) in partials {
        write(log, &tile_path(None, index, width), &bundle[..ends[width as usize - 1]])?;
        written.bundles += 1;
    }
    write(log, "checkpoint", cosigned_note(chain_dir, newest)?.as_bytes())?;
    Ok(written)
}

/// The checkpoint's signed note with the cosignatures the chain's witnesses
/// gave it (`cosignatures-<key id>.jsonl`, docs/store-format.md §6) as
/// further signature lines (c2sp.org/tlog-cosignature).
pub fn cosigned_note(chain_dir: &Path, checkpoint: &CheckpointEntry) -> Result<String, ExportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    let mut note = checkpoint.note.clone();
    let root = audit_format::hash::to_hex(&checkpoint.root);
    let mut files: Vec<PathBuf> = std::fs::read_dir(chain_dir)
        .map_err(io(chain_dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("cosignatures-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(io(&file))?;
        // The newest line for this checkpoint; lines that do not parse (a
        // torn last line) are skipped: verify reports them.
        let line = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<crate::witness::submit::CosignatureLine>(l).ok())
            .find(|l| l.size == checkpoint.size && l.root == root);
        if let Some(line) = line {
            note.push_str(&line.cosignature);
            note.push('\n');
        }
    }
    Ok(note)
}

/// Appends `record` (at `seq`, whose leaf hash in the tiles is `leaf`) to an
/// entry bundle: a big-endian uint16 length, then the bytes.
fn push_entry(bundle: &mut Vec<u8>, seq: u64, record: &[u8], leaf: &Hash) -> Result<(), String> {
    if leaf_hash(record) != *leaf {
        return Err(format!("the record at seq {seq} does not hash to its leaf in the tiles"));
    }
    let Ok(length) = u16::try_from(record.len()) else {
        return Err(format!(
            "the record at seq {seq} is {} bytes: a tlog-tiles entry holds at most 65,535",
            record.len()
        ));
    };
    bundle.extend_from_slice(&length.to_be_bytes());
    bundle.extend_from_slice(record);
    Ok(())
}

/// One resource of a chain's log, as `serve` answers it: the newest
/// checkpoint (`checkpoint`), or a hash tile or entry bundle
/// (`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`) that the newest
/// checkpoint covers. `None`: no such resource (yet).
pub fn resource(chain_dir: &Path, path: &str) -> Result<Option<Vec<u8>>, ExportError> {
    let chain_id = crate::store::chain_id(chain_dir)?;
    let failed = |reason: String| ExportError::Chain { chain: chain_id.clone(), reason };
    let (checkpoints, _) = CheckpointReader::new(chain_dir, 0).read(u64::MAX)?;
    let Some(newest) = checkpoints.iter().max_by_key(|c| c.size) else { return Ok(None) };
    if path == "checkpoint" {
        return Ok(Some(cosigned_note(chain_dir, newest)?.into_bytes()));
    }
    let Some((level, index, width)) = parse_tile_path(path) else { return Ok(None) };
    // Hashes at this level under the newest checkpoint: tile `index` of
    // `width` must lie within them.
    let hashes = newest.size / TILE_WIDTH.pow(level.unwrap_or(0) as u32);
    if (index * TILE_WIDTH).saturating_add(width) > hashes {
        return Ok(None);
    }
    let tiles = TileReader::open(chain_dir);
    let first = index * TILE_WIDTH;
    let Some(level) = level else {
        let leaves = tiles.entries(0, first, width)?;
        let mut bundle = Vec::new();
        for (i, record) in read_records(chain_dir, first, width)?.iter().enumerate() {
            push_entry(&mut bundle, first + i as u64, record, &leaves[i]).map_err(failed)?;
        }
        return Ok(Some(bundle));
    };
    Ok(Some(tiles.entries(level, first, width)?.concat()))
}

/// `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]` in its one
/// canonical spelling: (level, `None` for entries; index; width).
fn parse_tile_path(path: &str) -> Option<(Option<usize>, u64, u64)> {
    let rest = path.strip_prefix("tile/")?;
    let (level, rest) = rest.split_once('/')?;
    let level = match level {
        "entries" => None,
        l => Some(l.parse::<usize>().ok().filter(|l| *l <= 63 && l.to_string() == level)?),
    };
    let (index, width) = match rest.split_once(".p/") {
        Some((index, width)) => {
            (index, width.parse::<u64>().ok().filter(|w| (1..TILE_WIDTH).contains(w) && w.to_string() == width)?)
        }
        None => (rest, TILE_WIDTH),
    };
    let mut n = 0u64;
    let elements: Vec<&str> = index.split('/').collect();
    for (i, element) in elements.iter().enumerate() {
        let digits = if i + 1 < elements.len() { element.strip_prefix('x')? } else { element };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(digits.parse::<u64>().ok()?)?;
    }
    (index_path(n) == index).then_some((level, n, width))
}

/// `count` records of the chain from seq `first`, as stored: from the
/// segment that holds `first` on.
fn read_records(chain_dir: &Path, first: u64, count: u64) -> Result<Vec<Vec<u8>>, ExportError> {
    let segments = crate::store::segments(chain_dir)?;
    let from = segments.iter().rposition(|(start, _)| *start <= first).unwrap_or(0);
    let mut records = Vec::new();
    for (start, path) in &segments[from..] {
        let io = |source| ExportError::Io { path: path.clone(), source };
        let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let mut at = *start;
        let mut line = Vec::new();
        while (records.len() as u64) < count {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 || line.pop() != Some(b'\n') {
                break;
            }
            if at >= first {
                records.push(std::mem::take(&mut line));
            }
            at += 1;
        }
        if records.len() as u64 == count {
            return Ok(records);
        }
    }
    let chain = crate::store::chain_id(chain_dir)?;
    Err(ExportError::Chain { chain, reason: format!("the segments do not hold seqs {first}..{}", first + count) })
}

/// The partial tiles of `level` that the checkpointed `sizes` need and
/// that are still partial at the newest size (whose level has `full` full
/// tiles): `(index, width)`.
fn partial_tiles(sizes: &BTreeSet<u64>, level: usize, full: u64) -> BTreeSet<(u64, u64)> {
    sizes
        .iter()
        .filter_map(|s| {
            let hashes = s / TILE_WIDTH.pow(level as u32);
            let (index, width) = (hashes / TILE_WIDTH, hashes % TILE_WIDTH);
            (width > 0 && index == full).then_some((index, width))
        })
        .collect()
}

fn write(log: &Path, relative: &str, bytes: &[u8]) -> Result<(), ExportError> {
    let path = log.join(relative);
    let io = |source| ExportError::Io { path: path.clone(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&path, bytes).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_carries_the_cosignatures_of_its_size_and_root() {
        let dir = tempfile::tempdir().unwrap();
        let note = "origin\n7\nroot=\n\n\u{2014} log AAAA\n".to_owned();
        let checkpoint = CheckpointEntry { size: 7, root: [7; 32], time_unix_nano: 0, frontier: vec![], note };
        let line = |size: u64, root: &[u8; 32], by: &str| {
            format!(
                "{{\"size\":{size},\"root\":\"{}\",\"cosignature\":\"\u{2014} {by} BBBB\"}}\n",
                audit_format::hash::to_hex(root)
            )
        };
        let a = format!("{}{}{}", line(5, &[5; 32], "a"), line(7, &[7; 32], "a"), "{\"torn");
        std::fs::write(dir.path().join("cosignatures-aa.jsonl"), a).unwrap();
        // Another root at the same size (another history) is not this checkpoint's.
        std::fs::write(dir.path().join("cosignatures-bb.jsonl"), line(7, &[8; 32], "b")).unwrap();
        assert_eq!(
            cosigned_note(dir.path(), &checkpoint).unwrap(),
            "origin\n7\nroot=\n\n\u{2014} log AAAA\n\u{2014} a BBBB\n"
        );
    }

    #[test]
    fn tile_paths_follow_the_spec() {
        // c2sp.org/tlog-tiles: "index 1234067 will be encoded as x001/x234/067".
        assert_eq!(index_path(1_234_067), "x001/x234/067");
    }

    #[test]
    fn a_log_is_exported_at_its_origin_path() {
        let origin = "audit.example.com/logs/host-1/traces/audit/0/5f0c2a91d3b84e17";
        assert_eq!(origin_path(origin, "host-1/traces/audit/0"), "host-1/traces/audit/0/5f0c2a91d3b84e17");
        assert_eq!(origin_path("otel-audit/h/logs/a/1/ab", "h/logs/a/1"), "h/logs/a/1/ab");
        // A path that would leave the directory, or no chain id in the origin: the chain's directory name.
        assert_eq!(origin_path("x/../../etc/ab", ".."), "__");
        assert_eq!(origin_path("x/a/../ab", "a/.."), "a_..");
        assert_eq!(origin_path("elsewhere/ab", "h/traces/audit/0"), "h_traces_audit_0");
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(999), "999");
        assert_eq!(index_path(1000), "x001/000");
        assert_eq!(tile_path(Some(0), 1_234_067, 256), "tile/0/x001/x234/067");
        assert_eq!(tile_path(Some(2), 0, 1), "tile/2/000.p/1");
        assert_eq!(tile_path(None, 5, 112), "tile/entries/005.p/112");
    }

    #[test]
    fn the_tiles_of_a_tree_are_the_specs() {
        // "a tree of size 70,000 will be represented by 273 full level 0
        // tiles, one partial level 0 tile of width 112, one full level 1
        // tile, one partial level 1 tile of width 17, and one partial level
        // 2 tile of width 1. [...] a tree of size 256 will be represented by
        // a full level 0 tile and a partial level 1 tile of width 1."
        let tiles = |level, full, partial| LevelTiles { level, full, partial };
        assert_eq!(tiles_for(70_000), vec![tiles(0, 273, Some(112)), tiles(1, 1, Some(17)), tiles(2, 0, Some(1))]);
        assert_eq!(tiles_for(256), vec![tiles(0, 1, None), tiles(1, 0, Some(1))]);
        assert_eq!(tiles_for(0), vec![]);
    }

    #[test]
    fn partial_tiles_are_those_of_checkpointed_sizes_still_partial() {
        let sizes: BTreeSet<u64> = [100, 256, 300, 612].into_iter().collect();
        // Level 0 at 612: two full tiles; 612 needs 002.p/100 and 300 needs
        // 001.p/44, but tile 1 is full at 612.
        assert_eq!(partial_tiles(&sizes, 0, 612 / 256), [(2, 100)].into_iter().collect());
        // Level 1: 256 and 300 give width 1, 612 width 2, 100 nothing.
        assert_eq!(partial_tiles(&sizes, 1, 0), [(0, 1), (0, 2)].into_iter().collect());
    }
}

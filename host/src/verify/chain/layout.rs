//! What a chain directory holds, found before the walk: `chain.json`, the
//! segment files in order, and the gap records that open a segment.

use std::path::Path;

use super::{GapStart, MAX_CHAIN_FILE, MAX_LINE, Segment};
use crate::verify::VerifyError;
use crate::verify::files::{self, FileError, Lines, Next};
use crate::verify::jcs::Members;
use crate::verify::record::{self, Kind, Record};

/// What `chain.json` says: the chain id and the chain's origin.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(in crate::verify) struct ChainFile {
    pub chain_id: String,
    pub origin: String,
    pub format: u32,
}

/// Reads `chain.json`: `{"chain_id":"<id>","origin":"<prefix>/<id>/<16 hex>","format":2}`, exactly.
pub(in crate::verify) fn read_chain_file(dir: &Path) -> Result<ChainFile, String> {
    let bytes = files::read_small(&dir.join("chain.json"), MAX_CHAIN_FILE).map_err(|e| e.to_string())?;
    let file: ChainFile = serde_json::from_slice(&bytes).map_err(|e| {
        match serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| v["format"].as_u64()) {
            Some(format) if format != 2 => format!("store format {format} is not 2"),
            _ => format!("not a chain file: {e}"),
        }
    })?;
    if serde_json::to_vec(&file).ok().as_deref() != Some(bytes.as_slice()) {
        return Err("not in the exact form the host writes".into());
    }
    if file.format != 2 {
        return Err(format!("store format {} is not 2", file.format));
    }
    if file.chain_id.is_empty() {
        return Err("the chain id is empty".into());
    }
    let well_formed = file
        .origin
        .rsplit_once('/')
        .and_then(|(rest, nonce)| Some((rest.strip_suffix(&format!("/{}", file.chain_id))?, nonce)))
        .is_some_and(|(prefix, nonce)| {
            !prefix.is_empty()
                && nonce.len() == 16
                && nonce.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if !well_formed {
        return Err(format!("origin {:?} is not <prefix>/{}/<16 hex digits>", file.origin, file.chain_id));
    }
    Ok(file)
}

/// Segment files and what they hold.
type Segments = (Vec<Segment>, Vec<(String, &'static str)>);

/// `seg-<20 digits>.jsonl` regular files, by first seq; and the entries so
/// named that are not regular files (a FIFO, a symlink, a directory, a
/// device), with what they are.
pub(super) fn list_segments(dir: &Path) -> Result<Segments, VerifyError> {
    let io = |source| VerifyError::Io { path: dir.to_path_buf(), source };
    let mut found = Vec::new();
    let mut odd = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(digits) = name.strip_prefix("seg-").and_then(|n| n.strip_suffix(".jsonl")) else { continue };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(first) = digits.parse::<u64>() else { continue };
        if let Some(what) = files::kind(entry.file_type().map_err(io)?) {
            odd.push((name, what));
            continue;
        }
        found.push((first, Segment { path: entry.path(), name }));
    }
    found.sort_by_key(|(first, _)| *first);
    odd.sort();
    Ok((found.into_iter().map(|(_, s)| s).collect(), odd))
}

/// Gap records that open a segment (where `otel-audit declare-gap` puts
/// them): the lines before them from their checkpoint on are superseded.
pub(super) fn find_gaps(segments: &[Segment]) -> Result<Vec<GapStart>, VerifyError> {
    let mut gaps = Vec::new();
    let mut members = Members::default();
    for (index, segment) in segments.iter().enumerate().skip(1) {
        let io = |source| VerifyError::Io { path: segment.path.clone(), source };
        let file = match files::open_regular(&segment.path) {
            Ok(file) => file,
            Err(FileError::Io(source)) => return Err(io(source)),
            // Reported when the walk reads it.
            Err(_) => continue,
        };
        let mut first = Vec::new();
        if Lines::new(file, MAX_LINE).next(&mut first).map_err(io)? != Next::Line {
            continue;
        }
        if let Ok(Record { seq, kind: Kind::Gap { checkpoint_size, .. }, .. }) = record::parse(&first, &mut members)
            && checkpoint_size <= seq
        {
            gaps.push(GapStart { segment: index, checkpoint_size });
        }
    }
    Ok(gaps)
}

//! With `--witness`: the cosignatures the host stored beside a chain
//! (`cosignatures-<key id>.jsonl`, one JSON line per cosignature) held
//! against the chain's verified checkpoints. Only cosignatures by the given
//! witness keys count; one by such a key that does not verify is an error.
//! The newest checkpoint with a quorum of them is the newest state
//! independent parties saw; records after it are a warning, and no such
//! checkpoint at all is an error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Options;
use crate::checkpoint::NoteSignature;
use crate::verify::VerifyError;
use crate::verify::checkpoints::{Entry, MAX_LINE};
use crate::verify::files::{self, FileError, Lines, Next};
use crate::verify::report::{ChainReport, Code, Position};
use crate::witness::submit::CosignatureLine;

/// Parses `— <name> <base64(key id || timestamp || signature)>`.
fn signature(line: &str) -> Option<NoteSignature> {
    let (name, data) = line.strip_prefix("\u{2014} ")?.split_once(' ')?;
    let blob = B64.decode(data).ok()?;
    let (id, signature) = blob.split_first_chunk::<4>()?;
    Some(NoteSignature { name: name.to_owned(), key_id: *id, signature: signature.to_vec() })
}

pub(super) fn check(
    dir: &Path,
    entries: &[Entry],
    options: &Options,
    report: &mut ChainReport,
) -> Result<(), VerifyError> {
    let verified: BTreeSet<(u64, u64)> = report.valid.iter().map(|(size, line, _)| (*size, *line)).collect();
    let checkpoints: Vec<&Entry> = entries.iter().filter(|e| e.valid && verified.contains(&(e.size, e.line))).collect();
    let mut cosigned: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for key in &options.witnesses {
        let name = format!("cosignatures-{}.jsonl", hex::encode(key.key_id()));
        let path = dir.join(&name);
        let io = |source| VerifyError::Io { path: path.clone(), source };
        let file = match files::open_regular(&path) {
            Ok(file) => file,
            Err(FileError::Missing) => continue,
            Err(FileError::Io(source)) => return Err(io(source)),
            Err(e) => {
                report.add(Code::Malformed, Position::Chain, format!("{name}: {e}"));
                continue;
            }
        };
        let mut lines = Lines::new(file, MAX_LINE);
        let mut raw = Vec::new();
        let mut number = 0u64;
        while lines.next(&mut raw).map_err(io)? == Next::Line {
            number += 1;
            let at = |size| Position::Checkpoint { size: Some(size), line: number };
            let parsed: Option<(CosignatureLine, NoteSignature)> = serde_json::from_slice::<CosignatureLine>(&raw)
                .ok()
                .and_then(|l| signature(&l.cosignature).map(|s| (l, s)));
            let Some((line, sig)) = parsed else {
                report.add(Code::Malformed, Position::Chain, format!("{name} line {number}: not a cosignature line"));
                continue;
            };
            let results: Vec<Result<u64, String>> =
                checkpoints.iter().filter(|e| e.size == line.size).filter_map(|e| key.check(&e.text, &sig)).collect();
            if results.iter().any(Result::is_ok) {
                cosigned.entry(line.size).or_default().insert(key.name().to_owned());
            } else if let Some(Err(why)) = results.into_iter().next() {
                report.add(Code::BadCosignature, at(line.size), format!("{why} ({name} line {number})"));
            }
            // A line by another key, or for no verified checkpoint of its size, does not count.
        }
    }
    let quorum = options.quorum.max(1);
    let newest = cosigned.iter().rev().find(|(_, by)| by.len() >= quorum);
    match newest {
        Some((size, by)) => {
            report.witnessed = Some((*size, by.iter().cloned().collect()));
            if report.records > *size {
                let detail = format!(
                    "{} record(s) after the newest checkpoint cosigned by {quorum} witness(es) (@{size}): no independent party has seen them yet",
                    report.records - size
                );
                report.add(Code::UnwitnessedTail, Position::Chain, detail);
            }
        }
        None => {
            let detail = format!(
                "no verified checkpoint carries valid cosignatures of {quorum} of the {} given witness(es)",
                options.witnesses.len()
            );
            report.add(Code::Unwitnessed, Position::Chain, detail);
        }
    }
    Ok(())
}

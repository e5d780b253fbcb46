//! `otel-audit evidence verify`: checks a bundle offline with the
//! checkpoint public keys, without the store. Every failure is a finding
//! with a reason an auditor can act on.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{FORMAT, Manifest, files, sha256_hex, signed_body};
use crate::checkpoint::SignedNote;
use crate::cosignature::WitnessKey;
use crate::proof::{Proof, check};
use crate::verify::TrustedKey;

/// One way a bundle fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `RECORD_ALTERED`, `RECORD_MISSING`, `RECORD_UNEXPECTED`,
    /// `RECORD_MOVED`, `PROOF_MISSING`, `PROOF_INVALID`,
    /// `CHECKPOINT_MISMATCH`, `WITNESS_QUORUM`, `WITNESS_INVALID`,
    /// `ANSWER_ALTERED`, `QUERY_ALTERED`, `MANIFEST_ALTERED`,
    /// `MANIFEST_UNSIGNED` or `UNREADABLE`.
    pub reason: &'static str,
    /// What, where.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// What a valid bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The manifest.
    pub manifest: Manifest,
    /// The trusted keys that signed the manifest.
    pub manifest_signers: Vec<String>,
}

/// Checks the bundle in `dir` against the trusted checkpoint `keys`: the
/// manifest's signature, the query and answer it names, every record
/// against its row's leaf and proof, every proof against its checkpoint,
/// and every checkpoint for valid cosignatures by at least `quorum` of
/// the `witnesses`.
pub fn check(
    dir: &Path,
    keys: &[TrustedKey],
    witnesses: &[WitnessKey],
    quorum: usize,
) -> Result<Checked, Vec<Finding>> {
    let mut findings = Vec::new();
    let mut found = |reason: &'static str, detail: String| findings.push(Finding { reason, detail });
    let read = |file: &str| std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"));

    let manifest_bytes = read(files::MANIFEST).map_err(|e| vec![finding("UNREADABLE", e)])?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| vec![finding("UNREADABLE", format!("{}: {e}", files::MANIFEST))])?;
    if manifest.format != FORMAT {
        return Err(vec![finding("UNREADABLE", format!("manifest format {} is not {FORMAT}", manifest.format))]);
    }
    let manifest_signers = match signature(&read(files::SIGNATURE), &manifest_bytes, keys) {
        Ok(signers) => signers,
        Err((reason, detail)) => {
            found(reason, detail);
            Vec::new()
        }
    };
    match read(files::QUERY) {
        Ok(query) if String::from_utf8_lossy(&query).trim_end() == manifest.query.trim_end() => {}
        Ok(_) => found("QUERY_ALTERED", format!("{} is not the manifest's query", files::QUERY)),
        Err(e) => found("UNREADABLE", e),
    }
    match read(files::ANSWER) {
        Ok(answer) if sha256_hex(&answer) == manifest.answer_sha256 => {}
        Ok(_) => found("ANSWER_ALTERED", format!("the SHA-256 of {} is not the manifest's", files::ANSWER)),
        Err(e) => found("UNREADABLE", e),
    }
    let checkpoints: HashMap<&str, String> = manifest
        .checkpoints
        .iter()
        .filter_map(|c| match read(&c.file) {
            Ok(note) => Some((c.chain.as_str(), String::from_utf8_lossy(&note).into_owned())),
            Err(e) => {
                found("UNREADABLE", e);
                None
            }
        })
        .collect();
    for (chain, note) in &checkpoints {
        if let Err((reason, detail)) = witnessed(note, witnesses, quorum) {
            found(reason, format!("chain {chain}: {detail}"));
        }
    }

    let records = match read(files::RECORDS) {
        Ok(bytes) => bytes,
        Err(e) => {
            found("UNREADABLE", e);
            Vec::new()
        }
    };
    let lines: Vec<&[u8]> = records.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let leaves: Vec<String> = lines.iter().map(|l| hex::encode(audit_format::hash::leaf_hash(l))).collect();
    let line_of: HashMap<&str, usize> = leaves.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let row_leaves: HashSet<&str> = manifest.rows.iter().map(|r| r.leaf.as_str()).collect();
    let mut altered_lines = HashSet::new();
    for (i, row) in manifest.rows.iter().enumerate() {
        let at = format!("row {} ({}#{})", i + 1, row.chain, row.seq);
        let line = match line_of.get(row.leaf.as_str()) {
            Some(&j) if j == i => j,
            Some(&j) => {
                found("RECORD_MOVED", format!("{at}: its record is on line {} of {}", j + 1, files::RECORDS));
                j
            }
            None if lines.len() == manifest.rows.len() && !row_leaves.contains(leaves[i].as_str()) => {
                altered_lines.insert(i);
                found(
                    "RECORD_ALTERED",
                    format!("{at}: line {} of {} is not the record of leaf {}", i + 1, files::RECORDS, row.leaf),
                );
                continue;
            }
            None => {
                found(
                    "RECORD_MISSING",
                    format!("{at}: no line of {} is the record of leaf {}", files::RECORDS, row.leaf),
                );
                continue;
            }
        };
        let proof = match read(&row.proof).map(|bytes| serde_json::from_slice::<Proof>(&bytes)) {
            Ok(Ok(proof)) => proof,
            Ok(Err(e)) => {
                found("PROOF_INVALID", format!("{at}: {} is not a proof document: {e}", row.proof));
                continue;
            }
            Err(e) => {
                found("PROOF_MISSING", format!("{at}: {e}"));
                continue;
            }
        };
        let Proof::Inclusion(inclusion) = &proof else {
            found("PROOF_INVALID", format!("{at}: {} is not an inclusion proof", row.proof));
            continue;
        };
        if inclusion.record.as_bytes() != lines[line] {
            found("PROOF_INVALID", format!("{at}: {} proves another record", row.proof));
            continue;
        }
        if checkpoints.get(row.chain.as_str()) != Some(&inclusion.checkpoint) {
            found(
                "CHECKPOINT_MISMATCH",
                format!("{at}: {} is against another checkpoint than the bundle's", row.proof),
            );
        }
        match check::verify(&proof, keys) {
            Ok(check::Proven::Inclusion { chain_id, seq, .. }) if chain_id == row.chain && seq == row.seq => {}
            Ok(_) => found("PROOF_INVALID", format!("{at}: {} proves another chain or seq", row.proof)),
            Err(e) => found("PROOF_INVALID", format!("{at}: {}: {e}", row.proof)),
        }
    }
    for (j, leaf) in leaves.iter().enumerate() {
        if !row_leaves.contains(leaf.as_str()) && !altered_lines.contains(&j) {
            found(
                "RECORD_UNEXPECTED",
                format!("line {} of {} is no row's record (leaf {leaf})", j + 1, files::RECORDS),
            );
        }
    }
    if findings.is_empty() { Ok(Checked { manifest, manifest_signers }) } else { Err(findings) }
}

/// Whether `quorum` of `witnesses` validly cosigned the checkpoint `note`.
fn witnessed(note: &str, witnesses: &[WitnessKey], quorum: usize) -> Result<(), (&'static str, String)> {
    if quorum == 0 {
        return Ok(());
    }
    let note = SignedNote::parse(note).map_err(|e| ("UNREADABLE", format!("its checkpoint: {e}")))?;
    let mut cosigned: Vec<&str> = Vec::new();
    for signature in &note.signatures {
        for witness in witnesses {
            match witness.check(&note.text, signature) {
                Some(Ok(_)) if !cosigned.contains(&witness.name()) => cosigned.push(witness.name()),
                Some(Err(e)) => return Err(("WITNESS_INVALID", e)),
                _ => {}
            }
        }
    }
    if cosigned.len() < quorum {
        return Err((
            "WITNESS_QUORUM",
            format!("{} of the {} witnesses cosigned its checkpoint, {quorum} needed", cosigned.len(), witnesses.len()),
        ));
    }
    Ok(())
}

fn finding(reason: &'static str, detail: String) -> Finding {
    Finding { reason, detail }
}

/// The trusted keys that signed `manifest.sig` over `manifest`.
fn signature(
    note: &Result<Vec<u8>, String>,
    manifest: &[u8],
    keys: &[TrustedKey],
) -> Result<Vec<String>, (&'static str, String)> {
    let note = note.as_ref().map_err(|e| ("MANIFEST_UNSIGNED", e.clone()))?;
    let note = SignedNote::parse(&String::from_utf8_lossy(note))
        .map_err(|e| ("MANIFEST_UNSIGNED", format!("{}: {e}", files::SIGNATURE)))?;
    if note.text != signed_body(manifest) {
        return Err((
            "MANIFEST_ALTERED",
            format!("{} is not the manifest {} signs", files::MANIFEST, files::SIGNATURE),
        ));
    }
    let trusted: Vec<_> = keys.iter().map(|k| k.key.clone()).collect();
    note.verify(&trusted).map_err(|e| ("MANIFEST_UNSIGNED", format!("{}: {e}", files::SIGNATURE)))
}

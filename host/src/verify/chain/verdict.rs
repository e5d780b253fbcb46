//! The walk's verdict once every line is read: checkpoints and anchors
//! held against the roots taken on the way, the unsealed tail, and the age
//! of the newest checkpoint.

use super::Walk;
use crate::verify::Anchor;
use crate::verify::checkpoints::Entry;
use crate::verify::report::{ChainReport, Code, Position, SeqRange};

impl Walk<'_> {
    pub(super) fn finish(mut self, entries: &[Entry], anchors: &[&Anchor], torn_bytes: u64) -> ChainReport {
        let stored = self.tree.size();
        let at_size = std::mem::take(&mut self.at_size);
        let root_at = |size: u64| at_size.get(&size).and_then(|a| a.root);
        let mut sealed: Option<&Entry> = None;
        for entry in entries.iter().filter(|e| e.valid) {
            let at = Position::Checkpoint { size: Some(entry.size), line: entry.line };
            if entry.size > stored {
                let detail = format!(
                    "covers {} records but the store holds {stored}: records were removed from the end",
                    entry.size
                );
                self.report.add(Code::Truncated, at, detail);
            } else if root_at(entry.size) != Some(entry.root) {
                let detail = format!(
                    "the signed root {} is not the root of the stored records 0..{} ({})",
                    hex::encode(entry.root),
                    entry.size.saturating_sub(1),
                    root_at(entry.size).map_or_else(|| "?".into(), hex::encode)
                );
                self.report.add(Code::RootMismatch, at, detail);
            } else {
                self.report.valid.push((entry.size, entry.line, entry.signers.clone()));
            }
            // What a trusted signature covers is sealed, whether or not the
            // records still match it (a mismatch is reported above).
            if sealed.is_none_or(|s| entry.size >= s.size) {
                sealed = Some(entry);
            }
        }
        for anchor in anchors {
            let size = anchor.checkpoint.size;
            let at = Position::Anchor { size, file: anchor.file.clone() };
            let covered = if size > stored {
                let detail = format!(
                    "the anchor covers {size} records but the store holds {stored}: records were removed from the end"
                );
                self.report.add(Code::Truncated, at, detail);
                false
            } else if root_at(size) != Some(anchor.checkpoint.root) {
                let detail = format!(
                    "the anchor's root {} is not the root of the stored records at size {size} ({})",
                    hex::encode(anchor.checkpoint.root),
                    root_at(size).map_or_else(|| "?".into(), hex::encode)
                );
                self.report.add(Code::AnchorMismatch, at, detail);
                false
            } else {
                true
            };
            self.report.anchors.push((size, covered));
        }

        // The tail: stored records after the last checkpoint that checked out.
        let sealed_size = sealed.map_or(0, |e| e.size);
        let at_sealed = at_size.get(&sealed_size).cloned().unwrap_or_default();
        let tail_records = if sealed_size > stored { 0 } else { self.records - at_sealed.records_before };
        let tail = &mut self.report.tail;
        tail.records = tail_records;
        tail.torn_bytes = torn_bytes;
        let first = at_sealed.first_after.clone();
        let last = self.last_received.map(|(seq, at)| (seq, String::from_utf8_lossy(&at).into_owned()));
        if let (Some((first_seq, first_at)), Some((last_seq, last_at))) = (first, last)
            && tail_records > 0
        {
            tail.seqs = Some(SeqRange { first: first_seq, last: last_seq });
            tail.received = Some((first_at, last_at));
        }
        let seqs = tail.seqs.map_or_else(String::new, |s| format!(", seq {}..{}", s.first, s.last));
        let schedule = sealed.and_then(|e| e.schedule);
        if let Some(shutdown) = sealed.filter(|e| e.shutdown && tail_records > 0) {
            let detail = format!(
                "{tail_records} record(s){seqs} follow the shutdown checkpoint @{} without a start checkpoint: a host signs one when it starts, before any record, so the host did not append them",
                shutdown.size
            );
            self.report.add(Code::RecordsAfterShutdown, Position::Chain, detail);
        } else if sealed.is_none() && self.records > 0 {
            let detail = format!(
                "{} record(s) and no valid checkpoint: every chain the host makes begins with a signed checkpoint at size 0 (checkpoints.jsonl was removed or replaced, or the chain was made up)",
                self.records
            );
            self.report.add(Code::UncoveredRecords, Position::Chain, detail);
        } else if let (Some(entry), Some(schedule)) = (sealed, schedule)
            && tail_records > schedule.records
        {
            let detail = format!(
                "{tail_records} record(s){seqs} after the newest valid checkpoint @{}, whose signed schedule leaves at most {} without a checkpoint: the checkpoints covering them were removed",
                entry.size, schedule.records
            );
            self.report.add(Code::UncoveredRecords, Position::Chain, detail);
        } else if tail_records > 0 || torn_bytes > 0 {
            let mut detail = match (&tail.seqs, &tail.received) {
                (Some(seqs), Some((from, to))) => format!(
                    "{tail_records} record(s), seq {}..{}, received {from} .. {to}, are not covered by a valid checkpoint{}",
                    seqs.first,
                    seqs.last,
                    if sealed.is_none() { " (there is none)" } else { "" }
                ),
                _ => "no record after the last valid checkpoint".to_owned(),
            };
            if torn_bytes > 0 {
                detail.push_str(&format!(
                    "; the last segment ends with a torn line of {torn_bytes} bytes (a write a crash cut short, never acknowledged)"
                ));
            }
            self.report.add(Code::UnsealedTail, Position::Chain, detail);
        }

        // Age of the newest valid checkpoint against the heartbeat.
        let newest = entries.iter().filter(|e| e.valid).max_by_key(|e| e.time_unix_nano);
        let signed_heartbeat = newest.and_then(|e| e.schedule).map(|s| s.heartbeat);
        let heartbeat = self.options.heartbeat.or(signed_heartbeat).unwrap_or(std::time::Duration::from_secs(60));
        let limit = heartbeat.saturating_mul(2);
        match newest {
            // Closed cleanly: the host signed its last checkpoint at
            // shutdown, and nothing was stored after it.
            Some(entry) if entry.shutdown && tail_records == 0 && entry.size == stored => {}
            Some(entry) => {
                let age =
                    std::time::Duration::from_nanos(self.options.now_unix_nano.saturating_sub(entry.time_unix_nano));
                if age > limit {
                    let detail = format!(
                        "the newest valid checkpoint (@{}, signed {}) is {} old; the host signs one at least every {} while it runs (stopped, or checkpoints removed?)",
                        entry.size,
                        entry.time,
                        humantime(age),
                        humantime(heartbeat)
                    );
                    self.report.add(Code::Stale, Position::Chain, detail);
                }
            }
            // Records without any checkpoint are UNCOVERED_RECORDS (above).
            None if self.records > 0 => {}
            None => self.report.add(
                Code::Stale,
                Position::Chain,
                "the chain has no record and no valid checkpoint: its host stopped before signing the genesis checkpoint, or its checkpoints were removed",
            ),
        }
        if let Some(entry) = entries.iter().filter(|e| e.valid).max_by_key(|e| (e.size, e.time_unix_nano)) {
            self.report.last_checkpoint = Some((entry.size, entry.time.clone(), entry.signers.clone()));
        }
        self.report.records = self.records;
        self.report.unchecked_mac_keys = self.unchecked.into_iter().collect();
        self.report
    }
}

/// `1h2m3s`.
fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

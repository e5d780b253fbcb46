//! The walk's per-line checks: each segment line read as a record
//! (canonical form, chain id, seq, `prev`, MAC, gaps), its leaf pushed into
//! the tree, breaks judged once the next record shows which side changed.

use hmac::Mac;

use super::{Break, GapStart, Place, Walk, ZERO};
use crate::verify::Bound;
use crate::verify::record::{self, Hash, Kind, LineError, Record};
use crate::verify::report::{Code, Position, SeqRange};

impl Walk<'_> {
    fn in_range(&self, seq: u64, received_at: &str) -> bool {
        let after = |bound: &Option<Bound>, above: bool| match bound {
            None => true,
            Some(Bound::Seq(n)) => {
                if above {
                    seq >= *n
                } else {
                    seq <= *n
                }
            }
            Some(Bound::Time(t)) => {
                if above {
                    received_at >= t.as_str()
                } else {
                    received_at <= t.as_str()
                }
            }
        };
        after(&self.options.from, true) && after(&self.options.to, false)
    }

    /// A finding on a record; outside the requested range it is only counted.
    pub(super) fn record_finding(&mut self, in_range: bool, code: Code, place: Place, detail: String) {
        if in_range {
            let position =
                Position::Record { seq: place.seq, file: self.files[place.segment].clone(), line: place.line };
            self.report.add(code, position, detail);
        } else {
            // Counted (and so in the exit status), not listed.
            self.report.count(code);
            self.report.outside_range += 1;
        }
    }

    /// The gap whose superseded lines segment `index` may hold.
    fn superseding_gap(&self, index: usize) -> Option<&GapStart> {
        self.gaps.iter().find(|g| g.segment > index)
    }

    pub(super) fn line(&mut self, bytes: &[u8], segment: usize, line: u64) {
        let expected = self.tree.size();
        if self.superseding_gap(segment).is_some_and(|g| expected >= g.checkpoint_size) {
            self.report.superseded_lines += 1;
            return;
        }
        let mut members = std::mem::take(&mut self.members);
        let parsed = record::parse(bytes, &mut members);
        match parsed {
            Ok(record) => self.record(&record, Place { seq: Some(record.seq), segment, line }),
            Err(error) => self.unreadable_line(bytes, error, segment, line),
        }
        self.members = members;
    }

    fn unreadable_line(&mut self, bytes: &[u8], error: LineError, segment: usize, line: u64) {
        let salvaged = record::salvage(bytes);
        let position = Place { seq: salvaged.map(|s| s.seq), segment, line };
        let (code, detail) = match error {
            LineError::NonCanonical(d) => (Code::NonCanonical, format!("not its own RFC 8785 form at {d}")),
            LineError::Malformed(d) => (Code::Malformed, d),
        };
        self.record_finding(true, code, position, detail);
        // A line whose place can still be read keeps the walk in step.
        match salvaged {
            Some(s) if s.seq == self.tree.size() => {
                let link_ok = match (s.seq, self.last_leaf) {
                    (0, _) => s.prev == ZERO,
                    (_, Some(leaf)) => s.prev == leaf,
                    (_, None) => true,
                };
                self.resolve_pending(Some(link_ok));
                self.push(s.leaf, position, true, true);
            }
            _ => self.unreadable += 1,
        }
    }

    fn record(&mut self, r: &Record<'_>, position: Place) {
        let in_range = self.in_range(r.seq, r.received_at);
        if r.chain_id != self.chain_id {
            let detail = format!("chain.id is {:?}: the record belongs to another chain", r.chain_id);
            self.record_finding(in_range, Code::Malformed, position, detail);
            self.unreadable += 1;
            return;
        }
        let expected = self.tree.size();
        if r.seq < expected {
            let detail = format!(
                "seq {} after seq {}: a record repeated or out of order (it is not counted)",
                r.seq,
                expected.wrapping_sub(1)
            );
            self.record_finding(in_range, Code::SeqDup, position, detail);
            return;
        }
        let mut flagged = false;
        if in_range {
            self.report.verified += 1;
            let seqs = self.report.verified_seqs.get_or_insert(SeqRange { first: r.seq, last: r.seq });
            seqs.last = r.seq;
        }
        if let (None, Kind::Item, Some((since, first_key))) = (&r.key_id, &r.kind, &self.keyed_since) {
            let detail = format!(
                "the chain is keyed since seq {since} (chain.key_id {first_key:?}) but this record has no chain.key_id and no mac: a MAC downgrade"
            );
            self.record_finding(in_range, Code::MissingMac, position, detail);
            flagged = true;
        }
        if let Some(key_id) = &r.key_id {
            if self.keyed_since.is_none() {
                self.keyed_since = Some((r.seq, key_id.to_string()));
            }
            match (&r.mac, self.macs.get(key_id.as_ref())) {
                (None, _) => {
                    let detail = format!("the chain is keyed (chain.key_id {key_id:?}) but the record has no mac");
                    self.record_finding(in_range, Code::MissingMac, position, detail);
                    flagged = true;
                }
                (Some(mac), Some(hmac)) => {
                    let mut hmac = hmac.clone();
                    hmac.update(&r.leaf);
                    if hmac.verify_slice(mac).is_err() {
                        let detail = format!("the mac is not HMAC-SHA256 of the leaf under key {key_id:?}");
                        self.record_finding(in_range, Code::BadMac, position, detail);
                        flagged = true;
                    }
                }
                (Some(_), None) if !self.macs.is_empty() => {
                    let given: Vec<&str> = self.macs.keys().map(String::as_str).collect();
                    let detail = format!(
                        "the mac is under key {key_id:?}, not among the --hmac-key ids given ({}): it cannot be checked",
                        given.join(", ")
                    );
                    self.record_finding(in_range, Code::BadMac, position, detail);
                    flagged = true;
                }
                (Some(_), None) => {
                    self.unchecked.insert(key_id.to_string());
                }
            }
        }
        match &r.kind {
            Kind::Gap { checkpoint_size, checkpoint_root, reason } => {
                self.resolve_pending(None);
                self.gap(r, *checkpoint_size, checkpoint_root, reason, position, in_range);
                self.push(r.leaf, position, true, in_range);
                self.last_received = Some((r.seq, stamp(r.received_at)));
                self.record_first_after(r.seq, r.received_at);
                return;
            }
            Kind::Item => {}
        }
        if r.seq > expected {
            self.resolve_pending(None);
            if self.unreadable < r.seq - expected {
                let detail = format!(
                    "seq {} follows seq {}: seqs {}..{} are missing",
                    r.seq,
                    expected.wrapping_sub(1),
                    expected,
                    r.seq - 1
                );
                self.record_finding(in_range, Code::SeqGap, position, detail);
            }
            self.push_gap(r.seq - expected);
        } else {
            let link_ok = match (expected, self.last_leaf) {
                (0, _) => r.prev == ZERO,
                (_, Some(leaf)) => r.prev == leaf,
                // The record before is missing: its leaf is unknown.
                (_, None) => true,
            };
            self.resolve_pending(Some(link_ok));
            if !link_ok {
                if r.prev == ZERO {
                    let detail = format!(
                        "chain.prev is all zeros at seq {}: the chain starts over without referencing its head",
                        r.seq
                    );
                    self.record_finding(in_range, Code::UnanchoredGenesis, position, detail);
                    flagged = true;
                } else if let (Some(leaf), Some(before)) = (self.last_leaf, self.last_place) {
                    self.pending = Some(Break {
                        seq: r.seq,
                        place: position,
                        in_range,
                        prev: r.prev,
                        before: (before, leaf, self.last_flagged, self.last_in_range),
                    });
                } else {
                    let detail = "chain.prev of the first record is not all zeros".to_owned();
                    self.record_finding(in_range, Code::LinkBroken, position, detail);
                    flagged = true;
                }
            }
        }
        self.push(r.leaf, position, flagged, in_range);
        self.last_received = Some((r.seq, stamp(r.received_at)));
        self.record_first_after(r.seq, r.received_at);
    }

    /// Judges the pending break at `seq` now that the link after it is
    /// known (`Some(ok)`) or will never be (`None`).
    pub(super) fn resolve_pending(&mut self, next_link_ok: Option<bool>) {
        let Some(b) = self.pending.take() else { return };
        let (before_position, before_leaf, before_flagged, before_in_range) = b.before;
        match next_link_ok {
            // The record after links to this one: this one is as written,
            // so the one before it changed since.
            Some(true) => {
                if !before_flagged {
                    let detail = format!(
                        "the record hashes to {}, but seq {} links to {}: it was changed after seq {} was written",
                        hex::encode(before_leaf),
                        b.seq,
                        hex::encode(b.prev),
                        b.seq
                    );
                    self.record_finding(before_in_range, Code::LeafMismatch, before_position, detail);
                }
            }
            _ => {
                let detail = format!(
                    "chain.prev {} is not the leaf of seq {} ({}){}",
                    hex::encode(b.prev),
                    b.seq - 1,
                    hex::encode(before_leaf),
                    if next_link_ok == Some(false) { "; the record after it does not link to it either" } else { "" }
                );
                self.record_finding(b.in_range, Code::LinkBroken, b.place, detail);
                // The break after this record is explained by this one.
                if next_link_ok == Some(false) {
                    self.last_flagged = true;
                }
            }
        }
    }

    fn gap(&mut self, r: &Record<'_>, size: u64, root: &Hash, reason: &str, position: Place, in_range: bool) {
        let expected = self.tree.size();
        let mut problems = Vec::new();
        if size == 0 {
            problems.push("it continues from no checkpoint (size 0)".to_owned());
        }
        if expected != size {
            problems.push(format!("the chain holds {expected} records before it, not the {size} it continues from"));
        }
        if size > r.seq {
            problems.push(format!("its checkpoint size {size} is past its own seq {}", r.seq));
        }
        match self.valid_checkpoints.get(&size) {
            Some(signed) if signed == root => {}
            Some(_) => problems.push(format!("the valid checkpoint @{size} has another root")),
            None => problems.push(format!("no valid checkpoint @{size}")),
        }
        if self.at_size.get(&size).and_then(|a| a.root).is_some_and(|computed| computed != *root) {
            problems.push(format!("the stored records do not hash to its root at size {size}"));
        }
        if expected == size && size > 0 && self.last_leaf != Some(r.prev) {
            problems.push(format!("chain.prev is not the leaf of seq {}", size - 1));
        }
        if problems.is_empty() {
            let detail =
                format!("seqs {size}..{} declared lost after checkpoint @{size}: {reason:?}", r.seq.saturating_sub(1));
            self.record_finding(in_range, Code::DeclaredGap, position, detail);
        } else {
            let detail = format!("a gap record that references no verified checkpointed head: {}", problems.join("; "));
            self.record_finding(in_range, Code::UnanchoredGenesis, position, detail);
        }
        if r.seq > expected {
            self.push_gap(r.seq - expected);
        }
    }

    fn push(&mut self, leaf: Hash, position: Place, flagged: bool, in_range: bool) {
        self.tree.push(leaf);
        self.records += 1;
        self.unreadable = 0;
        self.last_leaf = Some(leaf);
        self.last_place = Some(position);
        self.last_flagged = flagged;
        self.last_in_range = in_range;
        self.reached_size();
    }

    /// Adds gap leaves for `count` seqs without a record, stopping at each
    /// target size on the way.
    fn push_gap(&mut self, count: u64) {
        let end = self.tree.size() + count;
        while self.tree.size() < end {
            let stop = self.targets.get(self.next_target).copied().filter(|t| *t < end).unwrap_or(end);
            self.tree.push_gap(stop.max(self.tree.size() + 1) - self.tree.size());
            self.reached_size();
        }
        self.last_leaf = None;
        self.unreadable = 0;
    }

    /// Notes the root and counts at a target size the tree just reached.
    pub(super) fn reached_size(&mut self) {
        let size = self.tree.size();
        while let Some(&target) = self.targets.get(self.next_target) {
            if target > size {
                break;
            }
            self.next_target += 1;
            if target == size {
                let at = self.at_size.entry(size).or_default();
                at.root = Some(self.tree.root());
                at.records_before = self.records;
            }
        }
    }

    /// Notes the first stored record at or after each target size.
    fn record_first_after(&mut self, seq: u64, received_at: &str) {
        while let Some(&target) = self.targets.get(self.next_first_after) {
            if target > seq {
                break;
            }
            self.next_first_after += 1;
            self.at_size.entry(target).or_default().first_after = Some((seq, received_at.to_owned()));
        }
    }
}

/// A `received_at` (checked: 30 ASCII bytes) without an allocation.
fn stamp(received_at: &str) -> [u8; 30] {
    received_at.as_bytes().try_into().unwrap_or([b'?'; 30])
}

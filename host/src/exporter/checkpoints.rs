//! Signed checkpoints go downstream too, as OTLP log records, so a copy of
//! each lives outside the store: [`CheckpointFeed`] reads what one exporter
//! has not sent yet from the store, and [`checkpoint_log_record`] is the
//! record one checkpoint becomes.

use std::path::{Path, PathBuf};

use audit_format::hash::to_hex;
use audit_format::keys;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::store::{self, CheckpointEntry, CheckpointPos, CheckpointReader, CursorKind};

/// Attribute with the number of records a forwarded checkpoint covers.
const CHECKPOINT_SIZE: &str = "audit.checkpoint.size";
/// Attribute with the Merkle root (hex) of a forwarded checkpoint.
const CHECKPOINT_ROOT: &str = "audit.checkpoint.root";

/// The chain's signed checkpoints not yet sent by one exporter.
pub(super) struct CheckpointFeed {
    reader: CheckpointReader,
    dir: PathBuf,
    exporter_id: String,
    /// (checkpoints signed, exporter cursor) when the feed last found
    /// nothing to send: the file is read again only when either changes.
    idle_at: Option<(u64, u64)>,
    /// The last read error logged, so that a damaged file is reported once,
    /// not at every batch.
    reported: Option<String>,
}

/// Undelivered checkpoints as one logs request.
pub(super) struct PendingCheckpoints {
    /// The `ExportLogsServiceRequest`.
    pub payload: Bytes,
    /// The place in the checkpoints file after them.
    next: CheckpointPos,
}

impl CheckpointFeed {
    /// The feed of `exporter_id`, from its persisted checkpoint cursor.
    pub fn open(chain_dir: &Path, chain_id: &str, exporter_id: &str) -> Self {
        let delivered = match store::read_cursor(chain_dir, exporter_id, CursorKind::Checkpoints) {
            Ok(delivered) => delivered.unwrap_or(0),
            Err(error) => {
                tracing::warn!(chain = %chain_id, exporter = %exporter_id, %error, "cannot read the checkpoint cursor; forwarding every checkpoint again");
                0
            }
        };
        CheckpointFeed {
            reader: CheckpointReader::new(chain_dir, delivered),
            dir: chain_dir.to_owned(),
            exporter_id: exporter_id.to_owned(),
            idle_at: None,
            reported: None,
        }
    }

    /// The undelivered checkpoints covering at most `cursor` records. The
    /// file is read only when the chain signed something or the cursor moved.
    pub fn pending(&mut self, chain_id: &str, cursor: u64, signed: u64) -> Option<PendingCheckpoints> {
        if self.idle_at == Some((signed, cursor)) {
            return None;
        }
        let found = match self.reader.read(cursor) {
            Ok((entries, next)) if !entries.is_empty() => {
                Some(PendingCheckpoints { payload: checkpoints_request(chain_id, &entries), next })
            }
            Ok(_) => None,
            Err(error) => {
                let message = error.to_string();
                if self.reported.as_ref() != Some(&message) {
                    tracing::error!(chain = %chain_id, exporter = %self.exporter_id, %error, "cannot read the chain's checkpoints; those from here on are not forwarded (records still are)");
                    self.reported = Some(message);
                }
                None
            }
        };
        if found.is_none() {
            self.idle_at = Some((signed, cursor));
        }
        found
    }

    /// Moves past `pending` and persists the cursor.
    pub fn delivered(&mut self, pending: &PendingCheckpoints) {
        self.reader.seek(pending.next);
        self.reported = None;
        let written = store::write_cursor(&self.dir, &self.exporter_id, CursorKind::Checkpoints, pending.next.line);
        if let Err(error) = written {
            tracing::warn!(%error, "cannot persist the checkpoint cursor");
        }
    }
}

/// The logs request that forwards `entries` of chain `chain_id`.
fn checkpoints_request(chain_id: &str, entries: &[CheckpointEntry]) -> Bytes {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", "otel-audit")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope { name: "otel-audit.checkpoint".into(), ..Default::default() }),
                log_records: entries.iter().map(|entry| checkpoint_log_record(chain_id, entry)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}

/// A signed checkpoint as an OTLP log record: the note is the body, so a
/// downstream copy can be verified with the public key alone.
fn checkpoint_log_record(chain_id: &str, entry: &CheckpointEntry) -> LogRecord {
    let time = entry.time_unix_nano;
    LogRecord {
        time_unix_nano: time,
        observed_time_unix_nano: time,
        severity_number: SeverityNumber::Info as i32,
        severity_text: "INFO".into(),
        event_name: keys::CHECKPOINT.into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(entry.note.clone())) }),
        attributes: vec![
            string_attr(keys::SEQUENCE_STREAM_ID, chain_id),
            KeyValue {
                key: CHECKPOINT_SIZE.into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(i64::try_from(entry.size).unwrap_or_default())),
                }),
                ..Default::default()
            },
            string_attr(CHECKPOINT_ROOT, &to_hex(&entry.root)),
        ],
        ..Default::default()
    }
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChainStore, StoreOptions};
    use audit_format::hash::merkle_root;

    fn attr<'a>(record: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
        record.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_checkpoint_becomes_a_log_record_with_its_note() {
        let entry =
            CheckpointEntry { size: 12, root: [0xab; 32], time_unix_nano: 77, frontier: vec![], note: "note\n".into() };
        let record = checkpoint_log_record("c/1", &entry);
        assert_eq!(record.event_name, "audit.checkpoint");
        assert_eq!((record.time_unix_nano, record.observed_time_unix_nano), (77, 77));
        assert_eq!(record.body.unwrap().value, Some(any_value::Value::StringValue("note\n".into())));
        let record = checkpoint_log_record("c/1", &entry);
        assert_eq!(attr(&record, "audit.sequence.stream_id"), Some(&any_value::Value::StringValue("c/1".into())));
        assert_eq!(attr(&record, "audit.checkpoint.size"), Some(&any_value::Value::IntValue(12)));
        assert_eq!(attr(&record, "audit.checkpoint.root"), Some(&any_value::Value::StringValue("ab".repeat(32))));
    }

    fn records(pending: &PendingCheckpoints) -> Vec<LogRecord> {
        let request = ExportLogsServiceRequest::decode(pending.payload.clone()).unwrap();
        request.resource_logs.into_iter().flat_map(|r| r.scope_logs).flat_map(|s| s.log_records).collect()
    }

    #[test]
    fn the_feed_sends_each_checkpoint_once_and_reports_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut chain, _) = ChainStore::open(dir.path(), "c", StoreOptions::default()).unwrap();
        for note in ["first", "second"] {
            let entry = CheckpointEntry {
                size: 0,
                root: merkle_root(&[]),
                time_unix_nano: 1,
                frontier: vec![],
                note: note.into(),
            };
            chain.append_checkpoint(&entry).unwrap();
        }
        let mut feed = CheckpointFeed::open(dir.path(), "c", "otlp/x");
        let pending = feed.pending("c", 0, 2).expect("two checkpoints");
        let notes: Vec<_> = records(&pending).into_iter().map(|r| r.body.unwrap().value).collect();
        let note = |n: &str| Some(any_value::Value::StringValue(n.into()));
        assert_eq!(notes, [note("first"), note("second")]);
        // Not delivered yet: offered again.
        assert_eq!(feed.pending("c", 0, 2).map(|p| records(&p).len()), Some(2));
        feed.delivered(&pending);
        assert!(feed.pending("c", 0, 2).is_none());
        // A new feed starts after what was delivered.
        assert_eq!(store::read_cursor(dir.path(), "otlp/x", CursorKind::Checkpoints).unwrap(), Some(2));
        assert!(CheckpointFeed::open(dir.path(), "c", "otlp/x").pending("c", 0, 2).is_none());
        // A damaged line is reported, naming the file and line.
        let path = dir.path().join("checkpoints.jsonl");
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"not json\n");
        std::fs::write(&path, text).unwrap();
        assert!(feed.pending("c", 0, 3).is_none());
        let reported = feed.reported.clone().expect("the error is reported");
        assert!(reported.contains("checkpoints.jsonl, line 3: not a checkpoint line"), "{reported}");
    }
}

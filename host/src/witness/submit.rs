//! The host's side of the witness protocol: for each chain and configured
//! witness, a background task submits the chain's newest checkpoint with
//! the consistency proof from the size the witness cosigned last (made from
//! the chain's tiles), and appends each cosignature it gets to
//! `cosignatures-<witness key id>.jsonl` in the chain directory (fsync'd).
//! A witness that is down or refuses is retried with backoff and counted in
//! the metrics; ingestion never waits for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use audit_format::hash::to_hex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::request_body;
use crate::checkpoint::SignedNote;
use crate::cosignature::WitnessKey;
use crate::metrics::{ExporterLabels, Metrics};
use crate::pipeline::chain::Committed;
use crate::proof::make::consistency_path;
use crate::store::tiles::TileReader;
use crate::store::{CheckpointEntry, CheckpointReader};

/// One line of a chain's `cosignatures-<key id>.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignatureLine {
    /// The checkpoint's size.
    pub size: u64,
    /// Its root, lowercase hex.
    pub root: String,
    /// The witness's note signature line, without its newline.
    pub cosignature: String,
}

/// The file of a witness's cosignatures in a chain directory.
pub fn cosignatures_file(chain_dir: &std::path::Path, key: &WitnessKey) -> PathBuf {
    chain_dir.join(format!("cosignatures-{}.jsonl", hex::encode(key.key_id())))
}

/// Submits one chain's checkpoints to one witness until `shutdown`.
pub struct Submitter {
    /// Chain id, for logs and metrics.
    pub chain_id: String,
    /// The chain directory.
    pub chain_dir: PathBuf,
    /// The witness's submission prefix.
    pub url: String,
    /// The witness's key.
    pub key: WitnessKey,
    /// What the chain made durable (wakes the task on new checkpoints).
    pub committed: watch::Receiver<Committed>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Submitter {
    /// Runs until `shutdown`, or until the chain stopped and its last
    /// checkpoint was submitted.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let labels = ExporterLabels { chain: self.chain_id.clone(), exporter: format!("witness/{}", self.key.name()) };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
        let file = cosignatures_file(&self.chain_dir, &self.key);
        // What the witness cosigned last for this chain, as far as we know.
        let mut cosigned = last_cosigned(&file).await;
        let mut done: Option<String> = None;
        let mut backoff = Duration::from_millis(200);
        let mut chain_stopped = false;
        // Reads only the lines appended since the last look.
        let mut reader = CheckpointReader::new(&self.chain_dir, 0);
        let mut newest: Option<CheckpointEntry> = None;
        loop {
            let found;
            (reader, found) = read_new(reader, &self.chain_dir).await;
            if found.is_some() {
                newest = found;
            }
            let pending = newest.clone().filter(|c| done.as_deref() != Some(c.note.as_str()));
            let Some(checkpoint) = pending else {
                if chain_stopped {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = self.committed.changed() => chain_stopped = changed.is_err(),
                }
                continue;
            };
            match self.submit(&client, cosigned.unwrap_or(0), &checkpoint).await {
                Ok(Outcome::Cosigned(line)) => {
                    let record =
                        CosignatureLine { size: checkpoint.size, root: to_hex(&checkpoint.root), cosignature: line };
                    if let Err(error) = append(&file, &record).await {
                        tracing::error!(chain = %self.chain_id, %error, "cannot store a cosignature");
                    } else {
                        self.metrics.witness_cosignatures.get_or_create(&labels).inc();
                    }
                    cosigned = Some(checkpoint.size);
                    done = Some(checkpoint.note);
                    backoff = Duration::from_millis(200);
                    continue;
                }
                Ok(Outcome::WitnessAt(size)) => {
                    // The witness knows this log at another size: go on from there.
                    if cosigned == Some(size) {
                        tracing::warn!(chain = %self.chain_id, witness = %self.key.name(), size, "the witness refuses the same old size twice");
                    } else {
                        cosigned = Some(size);
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(chain = %self.chain_id, witness = %self.key.name(), size = checkpoint.size, %error, "witness submission failed; retrying");
                }
            }
            self.metrics.witness_failures.get_or_create(&labels).inc();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn submit(
        &self,
        client: &reqwest::Client,
        old: u64,
        checkpoint: &CheckpointEntry,
    ) -> Result<Outcome, String> {
        let dir = self.chain_dir.clone();
        let (old, new) = (old.min(checkpoint.size), checkpoint.size);
        let proof = tokio::task::spawn_blocking(move || consistency_path(&TileReader::open(&dir), old, new))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let response = client
            .post(format!("{}/add-checkpoint", self.url))
            .body(request_body(old, &proof, &checkpoint.note))
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| e.to_string())?;
        match status {
            200 => {
                let note = SignedNote::parse(&format!("{}{body}", checkpoint.note)).map_err(|e| e.to_string())?;
                let line = note
                    .signatures
                    .iter()
                    .find(|s| self.key.check(&note.text, s).is_some_and(|r| r.is_ok()))
                    .ok_or_else(|| "the witness answered no valid cosignature under its configured key".to_owned())?;
                let text = body
                    .lines()
                    .find(|l| l.starts_with(&format!("\u{2014} {} ", line.name)))
                    .ok_or("no cosignature line")?;
                Ok(Outcome::Cosigned(text.to_owned()))
            }
            409 => match body.trim().parse() {
                Ok(size) => Ok(Outcome::WitnessAt(size)),
                Err(_) => Err(format!("409 from the witness: {}", body.trim())),
            },
            _ => Err(format!("{status} from the witness: {}", body.trim())),
        }
    }
}

enum Outcome {
    Cosigned(String),
    WitnessAt(u64),
}

/// The newest of the checkpoints appended since `reader`'s place, and the
/// reader moved past them.
async fn read_new(
    mut reader: CheckpointReader,
    chain_dir: &std::path::Path,
) -> (CheckpointReader, Option<CheckpointEntry>) {
    let read = tokio::task::spawn_blocking(move || {
        let newest = match reader.read(u64::MAX) {
            Ok((entries, pos)) => {
                reader.seek(pos);
                entries.into_iter().next_back()
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the checkpoints to submit");
                None
            }
        };
        (reader, newest)
    })
    .await;
    // A read that panicked starts over from the first line.
    read.unwrap_or_else(|_| (CheckpointReader::new(chain_dir, 0), None))
}

async fn last_cosigned(file: &std::path::Path) -> Option<u64> {
    let file = file.to_owned();
    let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(file)).await.ok()?.ok()?;
    text.lines().filter_map(|l| serde_json::from_str::<CosignatureLine>(l).ok()).map(|l| l.size).max()
}

async fn append(file: &std::path::Path, line: &CosignatureLine) -> std::io::Result<()> {
    let file = file.to_owned();
    let mut bytes = serde_json::to_vec(line).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        // Beside the chain's files, with their mode.
        let access = crate::store::FileAccess::of_parent(&file);
        let mut out = access.options().create(true).append(true).open(&file)?;
        access.fix(&out)?;
        out.write_all(&bytes)?;
        out.sync_data()
    })
    .await
    .map_err(std::io::Error::other)?
}

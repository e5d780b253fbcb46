//! `otel-audit evidence`: runs a query on the records checkpoints cover
//! and writes its answer with an inclusion proof for every record behind
//! it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{AsArray as _, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, Ident, SelectItem, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{
    CheckpointRef, FORMAT, Manifest, Row, Signer, checkpoint_file, files, proof_file, sha256_hex, signed_body,
};
use crate::checkpoint::{SignedNote, SignerKey};
use crate::proof::Proof;
use crate::proof::make::{ProveError, checkpoints as checkpoints_of, inclusion_of};
use crate::sql::output::{Format, OutputError};
use crate::sql::{Scope, SqlError};
use crate::store::ChainStore;
use crate::store::tiles::TileReader;

/// The columns the query is given to find the record behind each row.
const TRACE_COLUMNS: [(&str, &str); 3] =
    [("chain", "__evidence_chain"), ("seq", "__evidence_seq"), ("record", "__evidence_record")];

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The query failed (the engine's message) or the store could not be read.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The query's rows are not records (an aggregate, `GROUP BY`, a join…).
    #[error(
        "evidence needs a query whose rows are records of one table (a SELECT … FROM audit_spans or audit_logs without aggregates, GROUP BY, DISTINCT or set operations): {0}"
    )]
    Shape(String),
    /// A proof could not be made.
    #[error(transparent)]
    Prove(#[from] ProveError),
    /// A chain's witnesses' cosignatures could not be read.
    #[error(transparent)]
    Cosignatures(#[from] crate::tlog::ExportError),
    /// The answer could not be encoded.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The manifest could not be signed.
    #[error("signing the manifest: {0}")]
    Sign(#[from] crate::checkpoint::CheckpointError),
    /// The output directory is not empty, or a file could not be written.
    #[error("{}: {reason}", path.display())]
    Out {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    /// Rows of the answer (each a proven record).
    pub rows: usize,
    /// The checkpoints the proofs are against.
    pub checkpoints: Vec<CheckpointRef>,
}

/// A query's answer with the record behind each row and its inclusion proof.
pub struct ProvenAnswer {
    /// The answer's columns (the query's own).
    pub schema: SchemaRef,
    /// The answer.
    pub answer: Vec<RecordBatch>,
    /// Per row: where its record is and its proof's path in a bundle.
    pub rows: Vec<Row>,
    /// Per row: the record, exactly as stored.
    pub records: Vec<String>,
    /// Per row: its inclusion proof.
    pub proofs: Vec<Proof>,
    /// The checkpoints the proofs are against, with their signed notes
    /// (cosignatures included).
    pub checkpoints: Vec<(CheckpointRef, String)>,
}

/// Runs `sql` on the records of the chains in `dirs` that checkpoints
/// cover, and proves the record behind each row against its chain's
/// newest checkpoint.
pub async fn prove_answer(dirs: &[PathBuf], sql: &str) -> Result<ProvenAnswer, EvidenceError> {
    let ctx = crate::sql::session_of(dirs, Scope::Sealed)?;
    // The query as given first: its own mistakes get the engine's message.
    let schema = std::sync::Arc::new(crate::sql::plan(&ctx, sql).await?.schema().as_arrow().clone());
    let traced = with_trace_columns(sql)?;
    let frame = crate::sql::plan(&ctx, &traced).await.map_err(|e| EvidenceError::Shape(e.to_string()))?;
    let batches = frame.collect().await.map_err(SqlError::from)?;
    let answer = answer_only(&batches, &schema);
    let traced_rows = trace(&batches);

    let mut by_chain: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (chain, _, _)) in traced_rows.iter().enumerate() {
        by_chain.entry(chain.as_str()).or_default().push(i);
    }
    let mut proven: Vec<Option<(Row, Proof)>> = vec![None; traced_rows.len()];
    let mut checkpoints = Vec::new();
    for (chain, indexes) in by_chain {
        let dir = dirs
            .iter()
            .find(|d| crate::store::chain_id(d).is_ok_and(|id| id == chain))
            .ok_or_else(|| ProveError::NotFound(format!("no directory holds chain {chain}")))?;
        let newest = checkpoints_of(dir)?
            .into_iter()
            .max_by_key(|c| c.size)
            .ok_or_else(|| ProveError::NotFound(format!("chain {chain} has no checkpoint")))?;
        let note = crate::tlog::cosigned_note(dir, &newest)?;
        let dir_name = ChainStore::chain_dir_name(chain);
        let tiles = TileReader::open(dir);
        for i in indexes {
            let (_, seq, record) = &traced_rows[i];
            let proof = inclusion_of(&tiles, newest.size, &note, *seq, record.as_bytes())?;
            let leaf = hex::encode(audit_format::hash::leaf_hash(record.as_bytes()));
            let row = Row { chain: chain.to_owned(), seq: *seq, leaf, proof: proof_file(&dir_name, *seq) };
            proven[i] = Some((row, proof));
        }
        let reference = CheckpointRef {
            chain: chain.to_owned(),
            file: checkpoint_file(&dir_name),
            size: newest.size,
            signers: signers(&note),
        };
        checkpoints.push((reference, note));
    }
    let (rows, proofs) = proven.into_iter().map(|p| p.expect("every row has a chain")).unzip();
    let records = traced_rows.into_iter().map(|(_, _, record)| record).collect();
    Ok(ProvenAnswer { schema, answer, rows, records, proofs, checkpoints })
}

/// Runs `sql` on the records of `store` that checkpoints cover and writes
/// the bundle to `out` (which must not exist or be empty), its manifest
/// signed by `signer`.
pub async fn make(store: &Path, sql: &str, out: &Path, signer: &SignerKey) -> Result<Made, EvidenceError> {
    empty_dir(out)?;
    let dirs = crate::verify::chain_dirs(store).map_err(SqlError::from)?;
    let proven = prove_answer(&dirs, sql).await?;
    let mut answer_json = Vec::new();
    crate::sql::output::write(Format::Json, &proven.schema, &proven.answer, &mut answer_json)?;
    let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
    for (row, proof) in proven.rows.iter().zip(&proven.proofs) {
        writes.push((row.proof.clone(), proof.to_json().into_bytes()));
    }
    for (reference, note) in &proven.checkpoints {
        writes.push((reference.file.clone(), note.clone().into_bytes()));
    }
    let records: String = proven.records.iter().map(|record| format!("{record}\n")).collect();
    let manifest = Manifest {
        format: FORMAT,
        query: sql.to_owned(),
        generated_at: now_rfc3339(),
        answer_sha256: sha256_hex(&answer_json),
        checkpoints: proven.checkpoints.into_iter().map(|(reference, _)| reference).collect(),
        rows: proven.rows,
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    let signature = signer.sign_note(&signed_body(&manifest_json))?;
    writes.push((files::QUERY.into(), format!("{}\n", sql.trim_end()).into_bytes()));
    writes.push((files::ANSWER.into(), answer_json));
    writes.push((files::RECORDS.into(), records.into_bytes()));
    writes.push((files::README.into(), readme(&manifest, signer).into_bytes()));
    writes.push((files::SIGNATURE.into(), signature.into_bytes()));
    writes.push((files::MANIFEST.into(), manifest_json));
    for (file, bytes) in writes {
        let path = out.join(&file);
        let fail = |e: std::io::Error| EvidenceError::Out { path: path.clone(), reason: e.to_string() };
        std::fs::create_dir_all(path.parent().expect("a bundle file has a directory")).map_err(fail)?;
        std::fs::write(&path, bytes).map_err(fail)?;
    }
    Ok(Made { rows: manifest.rows.len(), checkpoints: manifest.checkpoints })
}

/// `sql` with the chain, seq and record of each row as three more columns
/// of its (single, plain) SELECT.
fn with_trace_columns(sql: &str) -> Result<String, EvidenceError> {
    let shape = |reason: &str| EvidenceError::Shape(reason.to_owned());
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| EvidenceError::Shape(e.to_string()))?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return Err(shape("the input is not one SELECT statement"));
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(shape("the query is not a plain SELECT"));
    };
    if select.distinct.is_some() {
        return Err(shape("DISTINCT merges records"));
    }
    if !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty()) || select.having.is_some() {
        return Err(shape("GROUP BY merges records"));
    }
    for (column, alias) in TRACE_COLUMNS {
        select
            .projection
            .push(SelectItem::ExprWithAlias { expr: Expr::Identifier(Ident::new(column)), alias: Ident::new(alias) });
    }
    Ok(statements[0].to_string())
}

/// The batches without the trace columns (the last three).
fn answer_only(batches: &[RecordBatch], schema: &SchemaRef) -> Vec<RecordBatch> {
    let keep: Vec<usize> = (0..schema.fields().len()).collect();
    batches
        .iter()
        .map(|b| {
            let projected = b.project(&keep).expect("the answer's columns come first");
            RecordBatch::try_new(schema.clone(), projected.columns().to_vec()).expect("same columns as the query")
        })
        .collect()
}

/// Each row's chain, seq and record, from the trace columns.
fn trace(batches: &[RecordBatch]) -> Vec<(String, u64, String)> {
    let mut rows = Vec::new();
    for batch in batches {
        let n = batch.num_columns();
        let chains = batch.column(n - 3).as_string::<i32>();
        let seqs = batch.column(n - 2).as_primitive::<Int64Type>();
        let records = batch.column(n - 1).as_string::<i32>();
        for i in 0..batch.num_rows() {
            rows.push((chains.value(i).to_owned(), seqs.value(i) as u64, records.value(i).to_owned()));
        }
    }
    rows
}

/// The key names and ids of a signed note's signature lines.
fn signers(note: &str) -> Vec<Signer> {
    SignedNote::parse(note)
        .map(|n| n.signatures.iter().map(|s| Signer { name: s.name.clone(), key_id: hex::encode(s.key_id) }).collect())
        .unwrap_or_default()
}

fn empty_dir(out: &Path) -> Result<(), EvidenceError> {
    let fail = |reason: String| EvidenceError::Out { path: out.to_path_buf(), reason };
    match std::fs::read_dir(out) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(fail("exists and is not empty".into())),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(out).map_err(|e| fail(e.to_string()))
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

/// The bundle's README: what the auditor holds and how to check it.
fn readme(manifest: &Manifest, signer: &SignerKey) -> String {
    let checkpoints: String = manifest
        .checkpoints
        .iter()
        .map(|c| {
            let keys: Vec<String> = c.signers.iter().map(|s| format!("{} (key id {})", s.name, s.key_id)).collect();
            format!("- chain `{}`: checkpoint of {} records, signed by {}\n", c.chain, c.size, keys.join(", "))
        })
        .collect();
    let verifier = signer.verifier();
    format!(
        "# Audit evidence\n\n\
         Made {generated} by otel-audit from the records its checkpoints covered then.\n\n\
         The question, as SQL (`{query_file}`):\n\n```sql\n{query}\n```\n\n\
         The answer has {rows} row(s) (`{answer}`). Behind each row is one record of the audit trail, exactly \
         as stored (`{records}`, one per line, in the answer's order), and an RFC 9162 inclusion proof \
         (`{proofs}/`) that the record is in the tree a signed checkpoint (`{checkpoints_dir}/`) commits to:\n\n\
         {checkpoints}\n\
         `{manifest}` lists each row's chain, seq and leaf hash (SHA-256 of 0x00 and the record) and the \
         answer's SHA-256; `{signature}` is a signed note over the manifest's SHA-256 by the checkpoint key \
         {name} (key id {key_id}), so a row removed or added is caught too.\n\n\
         ## Check it\n\n\
         With the log's public key, obtained from its operator independently of this bundle:\n\n\
         ```\notel-audit evidence verify . --public-key {name}.pub\n```\n\n\
         It checks the manifest's signature, the answer's digest, every record against its leaf hash and \
         its proof, and every proof against a checkpoint signed by the key; it names each failure \
         (RECORD_ALTERED, RECORD_MISSING, RECORD_UNEXPECTED, PROOF_INVALID, ANSWER_ALTERED, MANIFEST_ALTERED, …). \
         Each proof is also a document `otel-audit verify-proof` checks on its own, and the formats \
         (otel-audit docs/proof-format.md, docs/chain-format.md, C2SP signed-note and tlog-checkpoint) are \
         open, so the check can be written without otel-audit.\n",
        generated = manifest.generated_at,
        query_file = files::QUERY,
        query = manifest.query.trim_end(),
        rows = manifest.rows.len(),
        answer = files::ANSWER,
        records = files::RECORDS,
        proofs = files::PROOFS,
        checkpoints_dir = files::CHECKPOINTS,
        manifest = files::MANIFEST,
        signature = files::SIGNATURE,
        name = verifier.name(),
        key_id = hex::encode(verifier.key_id()),
    )
}

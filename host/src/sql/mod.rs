//! SQL on the store with Apache DataFusion (`otel-audit sql`): each chain
//! directory is one partition of two tables, `audit_spans` and
//! `audit_logs` ([`rows::schema`]), read record by record from the
//! segments when a query runs, so a query sees what the store holds then.
//!
//! It reads a store that `serve` is writing: a segment's last line without
//! its newline (being written) is left for the next query. Every row says
//! whether the chain's newest checkpoint covers it (`sealed`);
//! [`Scope::Sealed`] leaves the rest out (what evidence can prove).

pub mod output;
pub mod rows;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SQLOptions;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, SessionContext};

pub use rows::Signal;

use crate::store::CheckpointReader;

/// Rows per batch a chain's scan hands the engine.
const BATCH_ROWS: usize = 8192;

/// Why a query could not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The store's chain directories could not be listed.
    #[error(transparent)]
    Store(#[from] crate::verify::VerifyError),
    /// The engine refused or failed the query (its own message, which
    /// already says what its causes say), or a stored line is not a record.
    #[error("{0}")]
    Query(DataFusionError),
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        SqlError::Query(e)
    }
}

/// Which records the tables hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every complete record in the segments.
    All,
    /// Only the records a checkpoint covers: what an inclusion proof can
    /// be made for.
    Sealed,
}

/// A DataFusion session over `store` (the `auditstore` directory, or one
/// chain's directory) with the tables `audit_spans` and `audit_logs`.
pub fn session(store: &Path, scope: Scope) -> Result<SessionContext, SqlError> {
    session_of(&crate::verify::chain_dirs(store)?, scope)
}

/// A DataFusion session over the chains in `dirs`.
pub fn session_of(dirs: &[PathBuf], scope: Scope) -> Result<SessionContext, SqlError> {
    let ctx = SessionContext::new();
    for signal in [Signal::Spans, Signal::Logs] {
        let schema = rows::schema(signal);
        let partitions = dirs
            .iter()
            .map(|dir| {
                Arc::new(ChainScan { dir: dir.clone(), signal, scope, schema: schema.clone() })
                    as Arc<dyn PartitionStream>
            })
            .collect();
        ctx.register_table(signal.table(), Arc::new(StreamingTable::try_new(schema, partitions)?))?;
    }
    Ok(ctx)
}

/// Plans one read-only statement (a query, `EXPLAIN`, `SHOW`/`DESCRIBE`):
/// no DDL, DML or `SET`.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame, SqlError> {
    let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    Ok(ctx.sql_with_options(sql, read_only).await?)
}

/// Runs one read-only statement on `ctx`: its schema and all its batches.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let frame = plan(ctx, sql).await?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    Ok((schema, frame.collect().await?))
}

/// One chain's records of one signal, read from its segments.
#[derive(Debug)]
struct ChainScan {
    dir: PathBuf,
    signal: Signal,
    scope: Scope,
    schema: SchemaRef,
}

impl PartitionStream for ChainScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let (dir, signal, only_sealed) = (self.dir.clone(), self.signal, self.scope == Scope::Sealed);
        builder.spawn_blocking(move || {
            scan_chain(&dir, signal, only_sealed, &mut |batch| tx.blocking_send(Ok(batch)).is_ok())
        });
        builder.build()
    }
}

/// Reads the records of `signal` in `dir`, handing `emit` a batch at a
/// time; stops early when `emit` returns false (the query is done).
fn scan_chain(
    dir: &Path,
    signal: Signal,
    only_sealed: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), DataFusionError> {
    let external = |message: String| DataFusionError::External(message.into());
    let (checkpoints, _) =
        CheckpointReader::new(dir, 0).read(u64::MAX).map_err(|e| external(format!("{}: {e}", dir.display())))?;
    let sealed_size = checkpoints.last().map_or(0, |c| c.size);
    let segments = crate::store::segments(dir).map_err(|e| external(format!("{}: {e}", dir.display())))?;
    let mut rows = rows::Rows::new(signal);
    for (_, path) in segments {
        let io = |e: std::io::Error| external(format!("{}: {e}", path.display()));
        let mut reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 || line.pop() != Some(b'\n') {
                break; // the end, or a line still being written
            }
            number += 1;
            rows.push(&line, sealed_size, only_sealed)
                .map_err(|e| external(format!("{} line {number}: not a record: {e}", path.display())))?;
            if rows.len() == BATCH_ROWS && !emit(rows.finish()) {
                return Ok(());
            }
        }
    }
    if !rows.is_empty() {
        emit(rows.finish());
    }
    Ok(())
}

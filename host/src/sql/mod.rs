//! SQL on the store with Apache DataFusion (`otel-audit sql`): two tables,
//! `audit_spans` and `audit_logs` ([`rows::schema`]), read record by record
//! from the segments when a query runs (a partition per segment, in
//! parallel; only the columns the query reads are built), so a query sees
//! what the store holds then.
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
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
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
        let table = AuditTable { signal, dirs: dirs.to_vec(), scope, schema: rows::schema(signal) };
        ctx.register_table(signal.table(), Arc::new(table))?;
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

/// A signal's table over chain directories: a partition per segment (read
/// in parallel), each building only the columns the query reads.
#[derive(Debug)]
struct AuditTable {
    signal: Signal,
    dirs: Vec<PathBuf>,
    scope: Scope,
    schema: SchemaRef,
}

#[async_trait::async_trait]
impl TableProvider for AuditTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let external = |message: String| DataFusionError::External(message.into());
        let projection = projection.cloned();
        let schema = rows::Rows::new(self.signal, projection.as_deref()).schema().clone();
        let mut partitions: Vec<Arc<dyn PartitionStream>> = Vec::new();
        for dir in &self.dirs {
            let (checkpoints, _) = CheckpointReader::new(dir, 0)
                .read(u64::MAX)
                .map_err(|e| external(format!("{}: {e}", dir.display())))?;
            let sealed_size = checkpoints.last().map_or(0, |c| c.size);
            let segments = crate::store::segments(dir).map_err(|e| external(format!("{}: {e}", dir.display())))?;
            for (_, path) in segments {
                partitions.push(Arc::new(SegmentScan {
                    path: Some(path),
                    signal: self.signal,
                    projection: projection.clone(),
                    sealed_size,
                    only_sealed: self.scope == Scope::Sealed,
                    schema: schema.clone(),
                }));
            }
        }
        if partitions.is_empty() {
            let (signal, projection, schema) = (self.signal, projection.clone(), schema.clone());
            let none = SegmentScan { path: None, signal, projection, sealed_size: 0, only_sealed: false, schema };
            partitions.push(Arc::new(none));
        }
        let exec = StreamingTableExec::try_new(schema, partitions, None, Vec::<LexOrdering>::new(), false, limit)?;
        Ok(Arc::new(exec))
    }
}

/// One segment's records of one signal (`path` none: an empty table).
#[derive(Debug)]
struct SegmentScan {
    path: Option<PathBuf>,
    signal: Signal,
    projection: Option<Vec<usize>>,
    sealed_size: u64,
    only_sealed: bool,
    schema: SchemaRef,
}

impl PartitionStream for SegmentScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        let Some(path) = self.path.clone() else { return builder.build() };
        let mut rows = rows::Rows::new(self.signal, self.projection.as_deref());
        let (sealed_size, only_sealed) = (self.sealed_size, self.only_sealed);
        builder.spawn_blocking(move || {
            scan_segment(&path, &mut rows, sealed_size, only_sealed, &mut |batch| tx.blocking_send(Ok(batch)).is_ok())
        });
        builder.build()
    }
}

/// Reads the records of a segment into `rows`, handing `emit` a batch at a
/// time; stops early when `emit` returns false (the query is done). A last
/// line without its newline (being written) is left for the next query.
fn scan_segment(
    path: &Path,
    rows: &mut rows::Rows,
    sealed_size: u64,
    only_sealed: bool,
    emit: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), DataFusionError> {
    let external = |message: String| DataFusionError::External(message.into());
    let io = |e: std::io::Error| external(format!("{}: {e}", path.display()));
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).map_err(io)?);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 || line.pop() != Some(b'\n') {
            break;
        }
        number += 1;
        rows.push(&line, sealed_size, only_sealed)
            .map_err(|e| external(format!("{} line {number}: not a record: {e}", path.display())))?;
        if rows.len() == BATCH_ROWS && !emit(rows.finish()) {
            return Ok(());
        }
    }
    if !rows.is_empty() {
        emit(rows.finish());
    }
    Ok(())
}

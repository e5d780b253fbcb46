//! A query's answer written as a table, CSV, JSON or Parquet.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How an answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table, for people.
    Table,
    /// CSV with a header; maps and lists as their text.
    Csv,
    /// A JSON array of objects, one per row (maps as objects).
    Json,
    /// Apache Parquet (binary: to a file or a pipe).
    Parquet,
}

/// Why an answer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Arrow could not encode the answer.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// Parquet could not encode the answer.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The destination failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Writes `batches` (of `schema`) to `out` as `format`.
pub fn write(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut (dyn Write + Send),
) -> Result<(), OutputError> {
    match format {
        Format::Table => {
            let table = datafusion::arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "{table}\n{rows} row(s)")?;
        }
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            if batches.is_empty() {
                writer.write(&RecordBatch::new_empty(flat_schema(schema)))?;
            }
            for batch in batches {
                writer.write(&flatten(batch)?)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            writeln!(out)?;
        }
        Format::Parquet => {
            let mut writer = parquet::arrow::ArrowWriter::try_new(&mut *out, schema.clone(), None)?;
            for batch in batches {
                writer.write(batch)?;
            }
            writer.close()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Whether a column is written as its text in CSV (nested types are not CSV).
fn nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Map(..)
            | DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
    )
}

fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if nested(f.data_type()) { Field::new(f.name(), DataType::Utf8, true) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `batch` with its nested columns as text (`{enduser.id: alice, …}`).
fn flatten(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let options = FormatOptions::default().with_null("");
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            if !nested(column.data_type()) {
                return Ok(column.clone());
            }
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray =
                (0..column.len()).map(|i| column.is_valid(i).then(|| formatter.value(i).to_string())).collect();
            Ok(Arc::new(text) as ArrayRef)
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(flat_schema(&batch.schema()), columns)
}

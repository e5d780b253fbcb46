//! The read API (`extensions.read_api`): what auditors and their tools
//! read, on a listener of its own (loopback by default) under its own
//! `tls` and read-only tokens, which may be neither a writer's nor the
//! admin endpoint's:
//!
//! - `GET /tiles/<chain dir>/…`: each chain as a C2SP tlog-tiles log
//!   (as on the admin endpoint, [`crate::admin::tiles_router`]);
//! - `GET /v1/chains`: the chains and their newest checkpoints;
//! - `GET /v1/records?actor=&action=&resource=&since=&until=&signal=&limit=`:
//!   the records checkpoints cover that match, each with its inclusion proof;
//! - `POST /v1/sql[?proofs=true]` with one `SELECT` as the body: its rows
//!   (over every stored record), or with `proofs=true` its rows with the
//!   record and inclusion proof behind each (over the records checkpoints
//!   cover; the query's rows must be records, as for `otel-audit evidence`).
//!
//! A query the engine refuses is a 400 with the engine's message.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::evidence::make::{EvidenceError, ProvenAnswer, prove_answer};
use crate::sql::output::Format;
use crate::sql::{Scope, SqlError};

/// The most rows one request answers.
pub const MAX_ROWS: usize = 10_000;

/// Queries run at once; more wait (each reads the segments it needs).
const CONCURRENT_QUERIES: usize = 2;

struct Api {
    chain_dirs: Vec<PathBuf>,
    queries: tokio::sync::Semaphore,
}

/// The read API over the chains in `chain_dirs` (the ones this server writes).
pub fn router(chain_dirs: Vec<PathBuf>) -> axum::Router {
    let api =
        Arc::new(Api { chain_dirs: chain_dirs.clone(), queries: tokio::sync::Semaphore::new(CONCURRENT_QUERIES) });
    axum::Router::new()
        .route("/v1/chains", axum::routing::get(chains))
        .route("/v1/records", axum::routing::get(records))
        .route("/v1/sql", axum::routing::post(sql))
        .with_state(api)
        .merge(crate::admin::tiles_router(chain_dirs))
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

fn failed(e: EvidenceError) -> Response {
    let status = match &e {
        EvidenceError::Sql(SqlError::Query(_)) | EvidenceError::Shape(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e)
}

async fn chains(State(api): State<Arc<Api>>) -> Response {
    let dirs = api.chain_dirs.clone();
    let listed = tokio::task::spawn_blocking(move || {
        dirs.iter()
            .map(|dir| {
                let id = crate::store::chain_id(dir).map_err(|e| e.to_string())?;
                let newest = crate::proof::make::checkpoints(dir).map_err(|e| e.to_string())?.into_iter().last();
                Ok(json!({
                    "chain": id,
                    "tiles": format!("/tiles/{}/", dir.file_name().unwrap_or_default().to_string_lossy()),
                    "checkpoint_size": newest.as_ref().map(|c| c.size),
                    "checkpoint": newest.map(|c| c.note),
                }))
            })
            .collect::<Result<Vec<Value>, String>>()
    })
    .await;
    match listed {
        Ok(Ok(chains)) => axum::Json(json!({ "chains": chains })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /v1/records`: the structured query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    /// `attributes['enduser.id']`.
    pub actor: Option<String>,
    /// `attributes['audit.action']`.
    pub action: Option<String>,
    /// Any of `audit.resource`, `audit.target`, `audit.target_user`.
    pub resource: Option<String>,
    /// From this time on (RFC 3339), by `timestamp`.
    pub since: Option<String>,
    /// Before this time (RFC 3339).
    pub until: Option<String>,
    /// `spans` (default) or `logs`.
    pub signal: Option<String>,
    /// At most this many, newest first (default and maximum [`MAX_ROWS`]).
    pub limit: Option<usize>,
}

/// A string as an SQL literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A time parameter as an SQL timestamp literal.
fn time_literal(key: &str, text: &str) -> Result<String, String> {
    let nanos = crate::clock::parse_rfc3339(text).map_err(|e| format!("{key}: {e}"))?;
    Ok(literal(&audit_format::rfc3339_nanos(nanos)))
}

impl RecordsQuery {
    /// The SQL it stands for.
    pub fn to_sql(&self) -> Result<String, String> {
        let table = match self.signal.as_deref() {
            None | Some("spans") => "audit_spans",
            Some("logs") => "audit_logs",
            Some(other) => return Err(format!("signal: `{other}` is not spans or logs")),
        };
        let mut conditions = Vec::new();
        if let Some(actor) = &self.actor {
            conditions.push(format!("attributes['enduser.id'] = {}", literal(actor)));
        }
        if let Some(action) = &self.action {
            conditions.push(format!("attributes['audit.action'] = {}", literal(action)));
        }
        if let Some(resource) = &self.resource {
            let value = literal(resource);
            conditions.push(format!(
                "(attributes['audit.resource'] = {value} OR attributes['audit.target'] = {value} OR \
                 attributes['audit.target_user'] = {value})"
            ));
        }
        if let Some(since) = &self.since {
            conditions.push(format!("timestamp >= {}", time_literal("since", since)?));
        }
        if let Some(until) = &self.until {
            conditions.push(format!("timestamp < {}", time_literal("until", until)?));
        }
        let limit = self.limit.unwrap_or(MAX_ROWS);
        if limit == 0 || limit > MAX_ROWS {
            return Err(format!("limit: {limit} is not 1..={MAX_ROWS}"));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        Ok(format!(
            "SELECT timestamp, received_at, chain, seq, name, attributes['enduser.id'] AS actor, \
             attributes['audit.action'] AS action, attributes['audit.result'] AS outcome \
             FROM {table} {filter} ORDER BY timestamp DESC, chain, seq LIMIT {limit}"
        ))
    }
}

async fn records(
    State(api): State<Arc<Api>>,
    query: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let sql = match query.to_sql() {
        Ok(sql) => sql,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    proven(&api, &sql).await
}

/// `?proofs=true` on `POST /v1/sql`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlOptions {
    #[serde(default)]
    proofs: bool,
}

async fn sql(
    State(api): State<Arc<Api>>,
    options: Result<Query<SqlOptions>, axum::extract::rejection::QueryRejection>,
    body: String,
) -> Response {
    let Query(options) = match options {
        Ok(options) => options,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if options.proofs {
        return proven(&api, &body).await;
    }
    let _permit = api.queries.acquire().await;
    let answer = async {
        let ctx = crate::sql::session_of(&api.chain_dirs, Scope::All)?;
        // One row past the maximum is enough to refuse: never more in memory.
        let frame = crate::sql::plan(&ctx, &body).await?.limit(0, Some(MAX_ROWS + 1))?;
        let schema = Arc::new(frame.schema().as_arrow().clone());
        Ok::<_, SqlError>((schema, frame.collect().await?))
    }
    .await;
    match answer {
        Ok((schema, batches)) => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            if rows > MAX_ROWS {
                return error(StatusCode::BAD_REQUEST, format!("more than {MAX_ROWS} rows; add a LIMIT"));
            }
            match rows_json(&schema, &batches) {
                Ok(rows) => axum::Json(json!({ "query": body, "rows": rows })).into_response(),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        Err(e) => failed(EvidenceError::Sql(e)),
    }
}

/// The rows of `sql` with the record and proof behind each.
async fn proven(api: &Api, sql: &str) -> Response {
    let _permit = api.queries.acquire().await;
    let answer = match prove_answer(&api.chain_dirs, sql).await {
        Ok(answer) => answer,
        Err(e) => return failed(e),
    };
    if answer.rows.len() > MAX_ROWS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{} rows: more than {MAX_ROWS}; add a LIMIT", answer.rows.len()),
        );
    }
    match proven_json(sql, answer) {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn rows_json(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<Value, String> {
    let mut bytes = Vec::new();
    crate::sql::output::write(Format::Json, schema, batches, &mut bytes).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// `{query, rows, records: [{chain, seq, leaf, record, proof}], checkpoints}`.
fn proven_json(sql: &str, answer: ProvenAnswer) -> Result<Value, String> {
    let rows = rows_json(&answer.schema, &answer.answer)?;
    let records: Vec<Value> = answer
        .rows
        .iter()
        .zip(&answer.records)
        .zip(&answer.proofs)
        .map(|((row, record), proof)| {
            json!({
                "chain": row.chain,
                "seq": row.seq,
                "leaf": row.leaf,
                "record": record,
                "proof": serde_json::to_value(proof).expect("a proof serializes"),
            })
        })
        .collect();
    let checkpoints: Vec<Value> = answer
        .checkpoints
        .iter()
        .map(|(reference, note)| {
            json!({ "chain": reference.chain, "size": reference.size, "signers": reference.signers, "checkpoint": note })
        })
        .collect();
    Ok(json!({ "query": sql, "rows": rows, "records": records, "checkpoints": checkpoints }))
}

//! The witness's HTTP interface (C2SP tlog-witness): `POST
//! /add-checkpoint` answers 200 with the cosignature line, or the
//! refusal's status with why (409 with the recorded size as
//! `text/x.tlog.size`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{Refusal, Witness};

/// The largest request body read: a checkpoint and 63 proof lines are a
/// few kilobytes.
const MAX_BODY: usize = 64 << 10;

/// Serves the witness on `listen` until SIGTERM or SIGINT.
pub async fn serve(witness: Arc<Witness>, listen: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, key = %witness.public_key(), "witness listening");
    let shutdown = tokio_util::sync::CancellationToken::new();
    axum::serve(listener, router(witness))
        .with_graceful_shutdown(async move { crate::serve::wait_for_signal(&shutdown).await })
        .await
}

/// The witness's routes.
pub fn router(witness: Arc<Witness>) -> axum::Router {
    axum::Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(witness)
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: String) -> Response {
    let now = crate::clock::now_unix_nano() / 1_000_000_000;
    let result = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body, now)).await;
    match result {
        Ok(Ok(line)) => (StatusCode::OK, line).into_response(),
        Ok(Err(Refusal::Conflict { size, other_root: false })) => {
            (StatusCode::CONFLICT, [(header::CONTENT_TYPE, "text/x.tlog.size")], format!("{size}\n")).into_response()
        }
        Ok(Err(refusal)) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("{refusal}\n")).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the witness failed: {e}\n")).into_response(),
    }
}

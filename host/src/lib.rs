//! otel-audit: the host that runs the audit processor component inline in
//! OTLP pipelines, and the library behind the `otel-audit` binary.
//!
//! The host talks to the component only through the WIT contract
//! (`wit/audit-processor.wit`, bound in [`runtime`]) and shares nothing with it
//! but the chain format crate `audit-format` (hashes, reserved keys,
//! `Signal`). The `audit-processor` crate is a dev-dependency only, for the
//! differential tests and native benches; [`verify`] is written from the
//! format documents and reuses none of the writer's record code.
//!
//! Data flow of `serve`: [`receiver`] (OTLP gRPC and HTTP) → [`pipeline`]
//! (routing, one chain worker per chain: group commit, policy changes,
//! checkpoints) → [`store`] (segments, checkpoints, hash tiles, outbox, cursors) →
//! [`exporter`] (forwarding from the outbox). [`serve`] wires them and owns
//! shutdown; [`reload`] hot-swaps policies behind the [`policytest`] gate
//! and records [`policy_event`]s; [`metrics`] exposes Prometheus metrics.
//!
//! Beside them: [`config`] reads and validates the YAML, [`preflight`]
//! checks a config before it serves (and for `validate`), [`otlp`] turns
//! payloads from files or the wire into what the component takes,
//! [`grpc_codec`] passes gRPC messages through untouched, [`secrets`] reads
//! the keys handed to the component, [`checkpoint`] signs and verifies
//! Merkle roots as C2SP signed notes over [`merkle`] trees, [`proof`] makes
//! inclusion and consistency proofs from the tiles and checks them offline,
//! [`admin`] is a
//! running server's admin endpoint and its client, [`keyfile`] writes
//! `keygen`'s key pair, [`outfile`] the outputs that appear whole or not at
//! all, [`clock`] reads and writes times, and [`loadgen`] makes
//! deterministic batches for load, benchmarks and tests.
#![deny(missing_docs)]

pub mod admin;
pub mod auth;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod cosignature;
pub mod evidence;
pub mod exporter;
pub mod grpc_codec;
pub mod keyfile;
pub mod listener;
pub mod loadgen;
pub mod merkle;
pub mod metrics;
pub mod otlp;
pub mod outfile;
pub mod pipeline;
pub mod policy_event;
pub mod policytest;
pub mod preflight;
pub mod proof;
pub mod read_api;
pub mod receiver;
pub mod reload;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod sql;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tlog;
pub mod tls;
pub mod verify;
pub mod witness;

//! otel-audit: the host that runs the audit processor component inline in
//! OTLP pipelines.
//!
//! This crate is the library behind the `otel-audit` binary: [`runtime`]
//! loads and runs the component with wasmtime, [`otlp`] turns payloads from
//! files or the wire into what the component takes, [`secrets`] reads
//! the keys the host hands to it, [`checkpoint`] signs and verifies Merkle
//! roots as C2SP signed notes, and [`loadgen`] makes deterministic
//! batches for load, benchmarks and differential tests, and [`policytest`]
//! runs policy unit tests against the component. It is not the processor itself; that is
//! the `audit-processor` crate, which the host also links natively to
//! verify chains and to compare against the wasm build.
//!
//! For the commands: [`preflight`] checks a config before it serves (and
//! for `validate`), [`admin`] is a running server's admin endpoint and its
//! client (`status`, `reload`), [`keyfile`] writes `keygen`'s key pair and
//! [`outfile`] the outputs that appear whole or not at all.
#![deny(missing_docs)]

pub mod admin;
pub mod checkpoint;
pub mod clock;
pub mod config;
pub mod exporter;
pub mod grpc_codec;
pub mod keyfile;
pub mod loadgen;
pub mod merkle;
pub mod metrics;
pub mod otlp;
pub mod outfile;
pub mod pipeline;
pub mod policy_event;
pub mod policytest;
pub mod preflight;
pub mod receiver;
pub mod reload;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod store;
pub mod verify;

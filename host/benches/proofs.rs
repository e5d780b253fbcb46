//! `make bench`: proof generation from the stored tree state (hash tiles)
//! at 10^4, 10^6 and 10^7 records, and what the tiles cost on disk.
//!
//! The chains are synthetic (the tiles of a chain of N leaves, written by
//! the host's own `TileWriter`, as `serve` writes them): proofs read only
//! the tiles, so the records themselves do not change the figures. For
//! each size: the tiles' bytes per record, the time to make an inclusion
//! proof of a random leaf and a consistency proof between two random sizes
//! (median of many), and the time to check one (the RFC 9162 algorithms).
//! Timed on a warm page cache.
//!
//! Knobs: `BENCH_PROOF_SIZES` (comma-separated, default
//! `10000,1000000,10000000`), `BENCH_PROOF_RUNS` (proofs per size, default 2000).

use std::time::Instant;

use audit_format::hash::{leaf_hash, merkle_root};
use otel_audit::proof::check::{consistent, root_from_inclusion_path};
use otel_audit::proof::make::{audit_path, consistency_path};
use otel_audit::store::tiles::{self, TileReader, TileWriter};

fn main() {
    let sizes: Vec<u64> = std::env::var("BENCH_PROOF_SIZES")
        .unwrap_or_else(|_| "10000,1000000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_PROOF_SIZES: numbers"))
        .collect();
    let runs: usize = std::env::var("BENCH_PROOF_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let commit = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output();
    let commit = commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    println!("proofs from hash tiles (commit {commit}; `cargo bench -p otel-audit --bench proofs`)");
    println!(
        "{:>12} {:>12} {:>10} {:>9} {:>14} {:>14} {:>12}",
        "records", "tiles MB", "B/record", "build s", "inclusion µs", "consistency µs", "check µs"
    );
    for size in sizes {
        let dir = tempfile::tempdir_in(&target).expect("a temporary directory under target/");
        let started = Instant::now();
        let mut writer = TileWriter::open(dir.path(), 0).expect("tiles");
        for i in 0..size {
            writer.push(leaf_hash(&i.to_le_bytes()));
            if i % 65_536 == 0 {
                writer.write().expect("tiles written");
            }
        }
        writer.sync().expect("tiles fsync'd");
        let build = started.elapsed().as_secs_f64();
        let bytes: u64 = (0..8)
            .filter_map(|level| std::fs::metadata(tiles::level_path(dir.path(), level)).ok())
            .map(|m| m.len())
            .sum();
        let reader = TileReader::open(dir.path());
        let root = reader.subtree_hash(0, size).expect("the root");
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |below: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % below
        };
        let mut inclusion = Vec::with_capacity(runs);
        let mut check = Vec::with_capacity(runs);
        for _ in 0..runs {
            let index = next(size);
            let started = Instant::now();
            let path = audit_path(&reader, index, 0, size).expect("a path");
            inclusion.push(started.elapsed().as_secs_f64());
            let started = Instant::now();
            let proven = root_from_inclusion_path(index, size, leaf_hash(&index.to_le_bytes()), &path);
            check.push(started.elapsed().as_secs_f64());
            assert_eq!(proven, Some(root), "the proof of leaf {index} holds");
        }
        let mut consistency = Vec::with_capacity(runs);
        for _ in 0..runs {
            let old = 1 + next(size - 1);
            let started = Instant::now();
            let path = consistency_path(&reader, old, size).expect("a path");
            consistency.push(started.elapsed().as_secs_f64());
            let old_root = reader.subtree_hash(0, old).expect("the old root");
            assert!(old == size || consistent(old, size, old_root, root, &path), "{old}..{size} holds");
        }
        if size <= 10_000 {
            // The tiles' root is the Merkle tree hash of the leaves.
            let leaves: Vec<_> = (0..size).map(|i| leaf_hash(&i.to_le_bytes())).collect();
            assert_eq!(root, merkle_root(&leaves));
        }
        println!(
            "{:>12} {:>12.1} {:>10.1} {:>9.1} {:>14.1} {:>14.1} {:>12.1}",
            size,
            bytes as f64 / 1e6,
            bytes as f64 / size as f64,
            build,
            median(&mut inclusion) * 1e6,
            median(&mut consistency) * 1e6,
            median(&mut check) * 1e6
        );
    }
    println!();
    println!("tiles MB: 10^6 bytes of tiles/ (32-byte hashes per level); build: writing them from the leaves.");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

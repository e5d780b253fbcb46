//! The command line's arguments (clap): one struct per command, with the
//! help each option shows. `main.rs` maps them to the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use otel_audit::otlp::{Encoding, Signal};

/// Where `make wasm` puts the component.
pub const DEFAULT_MODULE: &str = "target/wasm32-wasip2/wasm/audit_processor.wasm";

#[derive(Parser)]
#[command(name = "otel-audit", version, about = "Tamper-evident audit trail for OpenTelemetry")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run one OTLP batch through the processor component and write the
    /// kept OTLP and the canonical chained records.
    Process(ProcessArgs),
    /// Validate a policy by configuring the component with it.
    Check(CheckArgs),
    /// Run policy unit tests (*.test.yaml) against the component.
    Test(TestArgs),
    /// Write an Ed25519 checkpoint signing key pair (NAME.key, NAME.pub).
    Keygen(KeygenArgs),
    /// Serve OTLP: receive, filter, chain and durably store audit records,
    /// sign checkpoints and forward downstream (until SIGTERM/SIGINT).
    Serve(ConfigArgs),
    /// Validate a config like `otelcol validate`: every problem with its key
    /// path; also configures the component with each policy.
    Validate(ConfigArgs),
    /// Verify a store: every chain's records, links, MACs, signed
    /// checkpoints and anchors (exit 0 valid, 1 tampering found, 2 usage).
    Verify(VerifyArgs),
    /// Prove that a record is in a chain, or that one signed checkpoint
    /// extends another: a self-contained document for `verify-proof`.
    #[command(subcommand)]
    Prove(ProveCommand),
    /// Check a proof offline, without the store (exit 0 valid, 1 invalid, 2 usage).
    VerifyProof(VerifyProofArgs),
    /// Each chain as a C2SP tlog-tiles log in static files.
    #[command(subcommand)]
    Tiles(TilesCommand),
    /// Query the store with SQL (Apache DataFusion): tables `audit_spans`
    /// and `audit_logs`; an interactive prompt when no query is given.
    Sql(SqlArgs),
    /// Answer a query with evidence: its rows, the records behind them and
    /// an inclusion proof of each against a signed checkpoint, in a
    /// self-contained bundle; `evidence verify` checks one offline.
    Evidence(EvidenceCommand),
    /// Run a transparency log witness (C2SP tlog-witness): cosign the
    /// checkpoints signed by a --log-key that extend what it cosigned before.
    Witness(WitnessArgs),
    /// Let a chain that cannot recover continue: seal its segments and start
    /// a new one with a gap record that continues from the last checkpoint.
    DeclareGap(DeclareGapArgs),
    /// Show what serves each processor of a running `serve` (module and
    /// policy digests, since when, the last reload), from its admin endpoint.
    Status(AdminArgs),
    /// Hot-swap a running `serve`'s processors from their files now, like
    /// SIGHUP (exit 0 applied or unchanged, 1 rejected, 2 error).
    Reload(ReloadArgs),
}

#[derive(Args)]
pub struct AdminArgs {
    /// The server's admin endpoint (`extensions.admin.endpoint`).
    #[arg(long, default_value = "127.0.0.1:13134", env = "OTEL_AUDIT_ADMIN")]
    pub admin: String,
    /// A file holding a bearer token of `extensions.admin.auth` (or
    /// `read_auth`, for status only).
    #[arg(long, env = "OTEL_AUDIT_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA (PEM) of an admin endpoint that serves TLS (then https).
    #[arg(long, env = "OTEL_AUDIT_ADMIN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// `text` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
}

#[derive(Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Only this processor (e.g. `wasm/soc2`); default: all.
    #[arg(long)]
    pub processor: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The store directory (the `auditstore` directory, or one chain's directory).
    pub store: PathBuf,
    /// A trusted checkpoint verifier key (`keygen`'s NAME.pub); repeat for
    /// rotated keys. FILE@FROM[..UNTIL] trusts it only for checkpoint sizes
    /// FROM..UNTIL (UNTIL exclusive); FILE@CHAIN:FROM[..UNTIL] only for the
    /// chain of that id or origin (each chain has its own handover size).
    #[arg(long = "public-key", value_name = "FILE[@[CHAIN:]FROM[..UNTIL]]")]
    pub public_keys: Vec<String>,
    /// The HMAC key of record MACs, as ID=FILE (the key is the file's bytes).
    #[arg(long = "hmac-key", value_name = "ID=FILE")]
    pub hmac_keys: Vec<String>,
    /// A witness's cosignature verifier key (`keygen --witness`'s NAME.pub);
    /// repeat. The chains' newest checkpoints must carry a quorum of valid
    /// cosignatures by them.
    #[arg(long = "witness", value_name = "FILE")]
    pub witnesses: Vec<PathBuf>,
    /// How many of the --witness keys must have cosigned (default: all).
    #[arg(long)]
    pub quorum: Option<usize>,
    /// A checkpoint kept outside the store (the signed note, e.g. the body
    /// of an `audit.checkpoint` log record sent downstream); repeatable.
    #[arg(long = "anchor", value_name = "CHECKPOINT_FILE")]
    pub anchors: Vec<PathBuf>,
    /// Check records from this seq or received-at time (RFC 3339) on.
    #[arg(long)]
    pub from: Option<String>,
    /// Check records up to this seq or received-at time (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// A newest checkpoint older than twice this is STALE (default: the
    /// heartbeat its signed schedule names).
    #[arg(long)]
    pub heartbeat: Option<String>,
    /// Warnings (STALE, UNSEALED_TAIL, DECLARED_GAP) fail too.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: VerifyFormat,
    /// Also list each valid checkpoint and anchor.
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyFormat {
    /// One line per finding, then per-chain and overall summaries.
    Text,
    /// One JSON document for automation.
    Json,
}

#[derive(Subcommand)]
pub enum TilesCommand {
    /// Write every chain (or one) at its newest checkpoint as a tlog-tiles
    /// log: `<DIR>/<chain dir>/checkpoint`, `tile/<L>/<N>[.p/<W>]` and
    /// `tile/entries/<N>[.p/<W>]`, for any web server or object store.
    Export(TilesExportArgs),
}

#[derive(Args)]
pub struct TilesExportArgs {
    /// The store directory (or one chain's directory).
    pub store: PathBuf,
    /// Where the logs are written (one directory per chain).
    pub out: PathBuf,
    /// Only this chain id.
    #[arg(long)]
    pub chain: Option<String>,
}

#[derive(Args)]
pub struct SqlArgs {
    /// The store directory (or one chain's directory).
    pub store: PathBuf,
    /// The query; without it, read statements ending in `;` from standard input.
    pub query: Option<String>,
    /// How the answer is written.
    #[arg(long, value_enum, default_value = "table")]
    pub format: otel_audit::sql::output::Format,
    /// Write the answer to this file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only records a checkpoint covers (default: every complete record;
    /// the `sealed` column tells them apart).
    #[arg(long)]
    pub sealed_only: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvidenceCommand {
    #[command(subcommand)]
    pub verify: Option<EvidenceVerifyCommand>,
    /// The store directory (or one chain's directory).
    #[arg(required = true)]
    pub store: Option<PathBuf>,
    /// The query: a plain SELECT on `audit_spans` or `audit_logs` (as for
    /// `sql`), run on the records checkpoints cover.
    #[arg(long, required = true)]
    pub sql: Option<String>,
    /// The bundle's directory (created; must be empty if it exists).
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// The checkpoint signing key (`keygen`'s NAME.key) that signs the
    /// bundle's manifest, so no row can be removed or added unnoticed.
    #[arg(long, required = true)]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum EvidenceVerifyCommand {
    /// Check a bundle offline, without the store (exit 0 valid, 1 invalid,
    /// 2 usage): each failure is named (RECORD_ALTERED, RECORD_MISSING, …).
    Verify(EvidenceVerifyArgs),
}

#[derive(Args)]
pub struct EvidenceVerifyArgs {
    /// The bundle's directory.
    pub dir: PathBuf,
    /// A trusted checkpoint verifier key, as for `verify`.
    #[arg(long = "public-key", value_name = "FILE[@[CHAIN:]FROM[..UNTIL]]", required = true)]
    pub public_keys: Vec<String>,
    /// A witness's cosignature verifier key (`keygen --witness`'s NAME.pub);
    /// repeat. Every checkpoint of the bundle must carry a quorum of valid
    /// cosignatures by them.
    #[arg(long = "witness", value_name = "FILE")]
    pub witnesses: Vec<PathBuf>,
    /// How many of the --witness keys must have cosigned (default: all).
    #[arg(long)]
    pub quorum: Option<usize>,
}

#[derive(Subcommand)]
pub enum ProveCommand {
    /// The record at a seq is leaf `seq` of the tree of a signed checkpoint.
    Inclusion(ProveInclusionArgs),
    /// The tree of one signed checkpoint is a prefix of another's.
    Consistency(ProveConsistencyArgs),
}

#[derive(Args)]
pub struct ProveChain {
    /// The store directory (or one chain's directory).
    pub store: PathBuf,
    /// The chain id (`<instance_id>/<pipeline>/<shard>`).
    #[arg(long)]
    pub chain: String,
    /// Write the proof to this file (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProveInclusionArgs {
    #[command(flatten)]
    pub at: ProveChain,
    /// The record's seq.
    #[arg(long)]
    pub seq: u64,
    /// The size of the checkpoint to prove against (default: the newest).
    #[arg(long)]
    pub checkpoint: Option<u64>,
}

#[derive(Args)]
pub struct ProveConsistencyArgs {
    #[command(flatten)]
    pub at: ProveChain,
    /// The older checkpoint's size.
    #[arg(long)]
    pub from: u64,
    /// The newer checkpoint's size (default: the newest).
    #[arg(long)]
    pub to: Option<u64>,
}

#[derive(Args)]
pub struct VerifyProofArgs {
    /// The proof document (`otel-audit prove` output).
    pub proof: PathBuf,
    /// A trusted checkpoint verifier key, as for `verify`.
    #[arg(long = "public-key", value_name = "FILE[@[CHAIN:]FROM[..UNTIL]]", required = true)]
    pub public_keys: Vec<String>,
}

#[derive(Args)]
pub struct WitnessArgs {
    /// The witness's cosigning key (`otel-audit keygen --witness`).
    #[arg(long)]
    pub key: PathBuf,
    /// A log's checkpoint verifier key (`keygen`'s NAME.pub); repeat.
    #[arg(long = "log-key", required = true)]
    pub log_keys: Vec<PathBuf>,
    /// Follow only origins starting with this; repeat (default: any origin
    /// a log key signs).
    #[arg(long = "origin-prefix")]
    pub origin_prefixes: Vec<String>,
    /// Directory of the witness's durable state: per origin, the size and
    /// root it cosigned last.
    #[arg(long)]
    pub state: PathBuf,
    /// Address to listen on (HTTP; `POST /add-checkpoint`).
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub listen: String,
}

#[derive(Args)]
pub struct DeclareGapArgs {
    /// The chain's directory in the store (named in the error that stopped `serve`).
    pub chain_dir: PathBuf,
    /// Why (recorded in the gap record, signed with the next checkpoint).
    #[arg(long)]
    pub reason: String,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// The config (the Collector's YAML shape); default: the embedded
    /// collector-config/otel-audit.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Key name (the signer name in signed checkpoints); no '+' or spaces.
    #[arg(long)]
    pub name: String,
    /// A witness's cosigning key (C2SP tlog-cosignature, type 0x04) for
    /// `otel-audit witness`, instead of a checkpoint signing key.
    #[arg(long)]
    pub witness: bool,
    /// Directory for the key files (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ModuleArgs {
    /// The processor component (.wasm).
    #[arg(long, short, default_value = DEFAULT_MODULE)]
    pub module: PathBuf,
    /// The policy file (YAML).
    #[arg(long, short)]
    pub policy: PathBuf,
    /// A secret for the policy, as ID=FILE (the key is the file's bytes).
    #[arg(long = "secret", value_name = "ID=FILE")]
    pub secrets: Vec<String>,
    /// Directory for precompiled modules ("" disables the cache).
    #[arg(long, env = "OTEL_AUDIT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProcessArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
    /// Which OTLP signal the input holds.
    #[arg(long, value_enum)]
    pub signal: Signal,
    /// The OTLP export request to process.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Input encoding.
    #[arg(long, value_enum, default_value = "auto")]
    pub input_format: Encoding,
    /// Where to write the kept, enriched OTLP request.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Encoding of --out.
    #[arg(long, value_enum, default_value = "protobuf")]
    pub out_format: OutFormat,
    /// Where to write the canonical records, one per line ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub records: Option<PathBuf>,
    /// The chain the records extend.
    #[arg(long, default_value = "local")]
    pub chain_id: String,
    /// Sequence number of the first record.
    #[arg(long, default_value_t = 0)]
    pub seq: u64,
    /// Leaf hash (hex) of the record before the first; zeros at genesis.
    #[arg(long)]
    pub prev: Option<String>,
    /// Received-at time (RFC 3339); default now.
    #[arg(long)]
    pub received_at: Option<String>,
}

/// How `process` encodes the kept OTLP.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// Binary protobuf.
    Protobuf,
    /// OTLP/JSON.
    Json,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub module: ModuleArgs,
}

#[derive(Args)]
pub struct TestArgs {
    /// Test files, or directories searched for *.test.yaml.
    #[arg(default_value = "collector-config/policies")]
    pub paths: Vec<PathBuf>,
    /// The component (overrides each test file's `module:`).
    #[arg(long, short)]
    pub module: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Show which rules each test hit and which rules no test hit.
    #[arg(long)]
    pub coverage: bool,
    /// Fail when a policy has a rule no test exercised.
    #[arg(long)]
    pub fail_uncovered: bool,
    /// Directory for precompiled modules ("" disables the cache).
    #[arg(long, env = "OTEL_AUDIT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    /// PASS/FAIL lines and a final "N passed, N failed".
    Text,
    /// JUnit XML for CI systems.
    Junit,
}

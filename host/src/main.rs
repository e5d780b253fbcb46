//! The `otel-audit` command line: parses arguments, calls the library and
//! maps errors to exit codes (0 success, 1 input or policy rejected,
//! 2 usage, file or module error).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use audit_format::{ChainHead, Context};
use clap::Parser as _;
use otel_audit::admin::{self, ReloadAnswer, Verdict};
use otel_audit::otlp::{self, Signal};
use otel_audit::outfile::{write_atomically, write_together};
use otel_audit::runtime::{Limits, Runtime, RuntimeError};
use otel_audit::{checkpoint, clock, config, keyfile, policytest, preflight, secrets, serve};
use tokio_util::sync::CancellationToken;

mod cli;
use cli::*;

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { code: 2, error: e.into() }
    }
}

fn rejected(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: 1, error: error.into() }
}

/// Logs go to stderr, in colour only on a terminal; `OTEL_AUDIT_LOG` (an
/// env-filter) overrides `level`.
fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("OTEL_AUDIT_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Process(args) => process(args),
        Command::Check(args) => check(args),
        Command::Test(args) => test(args),
        Command::Keygen(args) => keygen(args),
        Command::Serve(args) => serve(args),
        Command::Validate(args) => validate(args),
        Command::Verify(args) => verify(args),
        Command::Prove(command) => prove(command),
        Command::VerifyProof(args) => verify_proof(args),
        Command::Tiles(TilesCommand::Export(args)) => tiles_export(args),
        Command::Sql(args) => sql(args),
        Command::Evidence(EvidenceCommand { verify: Some(EvidenceVerifyCommand::Verify(args)), .. }) => {
            evidence_verify(args)
        }
        Command::Evidence(args) => evidence(args),
        Command::Witness(args) => witness(args),
        Command::DeclareGap(args) => declare_gap(args),
        Command::Status(args) => status(args),
        Command::Reload(args) => reload(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

/// The config file given, or the embedded default.
fn load_config(path: &Option<PathBuf>) -> Result<config::Config, config::ConfigErrors> {
    match path {
        Some(path) => config::load(path),
        None => config::parse(config::DEFAULT_CONFIG, "collector-config/otel-audit.yaml (embedded)"),
    }
}

fn serve(args: ConfigArgs) -> Result<(), Failure> {
    let config = load_config(&args.config).map_err(|errors| rejected(anyhow::anyhow!("invalid config:\n{errors}")))?;
    init_logging(&config.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        serve::survive_file_size_limit();
        let server = serve::Server::start(config)?;
        server.run(CancellationToken::new()).await
    })?;
    Ok(())
}

/// Runs one request of the admin client to its end.
fn admin_call<T>(call: impl std::future::Future<Output = Result<T, admin::client::ClientError>>) -> Result<T, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(call)?)
}

/// The admin client the arguments describe.
fn admin_client(args: &AdminArgs) -> Result<admin::client::Client, Failure> {
    let credentials = admin::client::Credentials { token_file: args.token_file.clone(), ca_file: args.ca_file.clone() };
    Ok(admin::client::Client::new(&args.admin, &credentials)?)
}

fn status(args: AdminArgs) -> Result<(), Failure> {
    let status = admin_call(admin_client(&args)?.status())?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        OutputFormat::Text => print!("{}", status.to_text()),
    }
    Ok(())
}

fn reload(args: ReloadArgs) -> Result<(), Failure> {
    let reloaded = admin_call(admin_client(&args.admin)?.reload(args.processor.as_deref()))?;
    match (&reloaded.answer, args.admin.format) {
        (answer, OutputFormat::Json) => println!("{}", serde_json::to_string_pretty(answer)?),
        (ReloadAnswer::Error { error }, OutputFormat::Text) => {
            return Err(Failure { code: 2, error: anyhow::anyhow!("{error}") });
        }
        (ReloadAnswer::Reloads { reloads }, OutputFormat::Text) => print!("{}", admin::client::reloads_text(reloads)),
    }
    match reloaded.verdict() {
        Some(Verdict::Served) => Ok(()),
        Some(Verdict::Rejected) => {
            Err(rejected(anyhow::anyhow!("the candidate was rejected; the old module and policy keep serving")))
        }
        _ => Err(Failure { code: 2, error: anyhow::anyhow!("the admin endpoint answered {}", reloaded.status) }),
    }
}

fn verify(args: VerifyArgs) -> Result<(), Failure> {
    use otel_audit::verify::{self, Anchor, Bound, Options, TrustedKey};
    init_logging("warn");
    let keys = args.public_keys.iter().map(|k| TrustedKey::from_arg(k)).collect::<Result<Vec<_>, _>>()?;
    let anchors = args.anchors.iter().map(|a| Anchor::load(a, &keys)).collect::<Result<Vec<_>, _>>()?;
    let heartbeat = args
        .heartbeat
        .as_deref()
        .map(|h| config::parse_duration(h).map_err(|e| anyhow::anyhow!("--heartbeat {e}")))
        .transpose()?;
    let (witnesses, quorum) = witness_keys(&args.witnesses, args.quorum)?;
    let options = Options {
        keys,
        witnesses,
        quorum,
        hmac_keys: secrets::read_all(&args.hmac_keys)?,
        anchors,
        from: args.from.as_deref().map(Bound::parse).transpose()?,
        to: args.to.as_deref().map(Bound::parse).transpose()?,
        heartbeat,
        strict: args.strict,
        now_unix_nano: clock::now_unix_nano(),
    };
    // A progress bar only for a person watching a terminal.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let total = verify::chain_dirs(&args.store).map(|d| verify::segment_bytes(&d)).unwrap_or(0);
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "verifying {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut progress = |bytes: u64| {
        if let Some(bar) = &bar {
            bar.inc(bytes);
        }
    };
    let report = verify::verify(&args.store, &options, &mut progress)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match args.format {
        VerifyFormat::Text => print!("{}", report.to_text(args.verbose)),
        VerifyFormat::Json => print!("{}", report.to_json()),
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(Failure {
            code,
            error: anyhow::anyhow!(
                "{} error(s), {} warning(s){}",
                report.errors(),
                report.warnings(),
                if report.errors() == 0 { " (--strict)" } else { "" }
            ),
        }),
    }
}

fn prove(command: ProveCommand) -> Result<(), Failure> {
    use otel_audit::proof::make;
    init_logging("warn");
    let (at, proof) = match command {
        ProveCommand::Inclusion(args) => {
            let dir = make::chain_dir(&args.at.store, &args.at.chain)?;
            let proof = make::inclusion(&dir, args.seq, args.checkpoint)?;
            (args.at, proof)
        }
        ProveCommand::Consistency(args) => {
            let dir = make::chain_dir(&args.at.store, &args.at.chain)?;
            let proof = make::consistency(&dir, &args.at.chain, args.from, args.to)?;
            (args.at, proof)
        }
    };
    match &at.out {
        Some(path) => write_atomically(path, proof.to_json().as_bytes())?,
        None => print!("{}", proof.to_json()),
    }
    Ok(())
}

fn tiles_export(args: TilesExportArgs) -> Result<(), Failure> {
    init_logging("warn");
    for log in otel_audit::tlog::export(&args.store, &args.out, args.chain.as_deref())? {
        println!(
            "chain {}: {} entries at the newest checkpoint; {} hash tiles, {} entry bundles in {}",
            log.chain_id,
            log.size,
            log.tiles,
            log.bundles,
            log.dir.display()
        );
    }
    Ok(())
}

fn sql(args: SqlArgs) -> Result<(), Failure> {
    use otel_audit::sql::{self, Scope, output};
    init_logging("warn");
    let scope = if args.sealed_only { Scope::Sealed } else { Scope::All };
    let ctx = sql::session(&args.store, scope)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut out: Box<dyn Write + Send> = match &args.out {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?)
        }
        None if args.format == output::Format::Parquet && std::io::IsTerminal::is_terminal(&std::io::stdout()) => {
            return Err(anyhow::anyhow!("Parquet is binary: give --out FILE or redirect standard output").into());
        }
        None => Box::new(std::io::stdout()),
    };
    let Some(query) = args.query else {
        return sql_prompt(&runtime, &ctx, args.format, &mut *out);
    };
    let (schema, batches) = runtime.block_on(sql::query(&ctx, &query))?;
    output::write(args.format, &schema, &batches, &mut *out)?;
    Ok(())
}

/// Reads statements ending in `;` from standard input and answers each;
/// a statement that fails prints the engine's message and the prompt goes on.
fn sql_prompt(
    runtime: &tokio::runtime::Runtime,
    ctx: &datafusion::prelude::SessionContext,
    format: otel_audit::sql::output::Format,
    out: &mut (dyn Write + Send),
) -> Result<(), Failure> {
    use std::io::{BufRead as _, IsTerminal as _};
    let interactive = std::io::stdin().is_terminal();
    let prompt = |continued: bool| {
        if interactive {
            eprint!("{}", if continued { "         > " } else { "otel-audit> " });
        }
    };
    let mut statement = String::new();
    let mut failed = false;
    prompt(false);
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        statement.push_str(&line);
        statement.push('\n');
        if !line.trim_end().ends_with(';') {
            prompt(!statement.trim().is_empty());
            continue;
        }
        match runtime.block_on(otel_audit::sql::query(ctx, &statement)) {
            Ok((schema, batches)) => otel_audit::sql::output::write(format, &schema, &batches, out)?,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
        statement.clear();
        prompt(false);
    }
    if !statement.trim().is_empty() {
        eprintln!("error: the input ended inside a statement (end it with `;`)");
        failed = true;
    }
    if failed { Err(anyhow::anyhow!("a statement failed").into()) } else { Ok(()) }
}

fn evidence(args: EvidenceCommand) -> Result<(), Failure> {
    init_logging("warn");
    let (Some(store), Some(query), Some(out), Some(key)) = (args.store, args.sql, args.out, args.key) else {
        unreachable!("clap requires STORE, --sql, --out and --key");
    };
    let text = std::fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
    let signer = checkpoint::SignerKey::parse(&text).with_context(|| format!("--key {}", key.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let made = runtime.block_on(otel_audit::evidence::make::make(&store, &query, &out, &signer))?;
    println!("Evidence: {} row(s), each with its record and an inclusion proof, in {}", made.rows, out.display());
    for c in &made.checkpoints {
        let signers: Vec<&str> = c.signers.iter().map(|s| s.name.as_str()).collect();
        println!("  chain {}: checkpoint of {} records signed by {}", c.chain, c.size, signers.join(", "));
    }
    Ok(())
}

/// `--witness FILE...` and `--quorum N` (default: all of them).
fn witness_keys(
    files: &[PathBuf],
    quorum: Option<usize>,
) -> Result<(Vec<otel_audit::cosignature::WitnessKey>, usize), Failure> {
    let witnesses = files
        .iter()
        .map(|path| {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--witness: cannot read {}", path.display()))?;
            otel_audit::cosignature::WitnessKey::parse(text.trim())
                .with_context(|| format!("--witness {}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let quorum = quorum.unwrap_or(witnesses.len());
    if quorum > witnesses.len() || (quorum == 0 && !witnesses.is_empty()) {
        return Err(anyhow::anyhow!("--quorum {quorum}: between 1 and the {} --witness key(s)", witnesses.len()).into());
    }
    Ok((witnesses, quorum))
}

fn evidence_verify(args: EvidenceVerifyArgs) -> Result<(), Failure> {
    use otel_audit::verify::TrustedKey;
    init_logging("warn");
    let keys = args.public_keys.iter().map(|k| TrustedKey::from_arg(k)).collect::<Result<Vec<_>, _>>()?;
    let (witnesses, quorum) = witness_keys(&args.witnesses, args.quorum)?;
    match otel_audit::evidence::check::check(&args.dir, &keys, &witnesses, quorum) {
        Ok(checked) => {
            let m = &checked.manifest;
            println!(
                "Evidence VALID: {} row(s), each record proven in its chain; manifest signed by {}",
                m.rows.len(),
                checked.manifest_signers.join(", ")
            );
            for c in &m.checkpoints {
                let signers: Vec<&str> = c.signers.iter().map(|s| s.name.as_str()).collect();
                println!("  chain {}: checkpoint of {} records signed by {}", c.chain, c.size, signers.join(", "));
            }
            Ok(())
        }
        Err(findings) => {
            for finding in &findings {
                println!("{finding}");
            }
            println!("Evidence INVALID: {} finding(s)", findings.len());
            Err(rejected(anyhow::anyhow!("the evidence does not hold")))
        }
    }
}

fn verify_proof(args: VerifyProofArgs) -> Result<(), Failure> {
    use otel_audit::proof::{Proof, check};
    use otel_audit::verify::TrustedKey;
    init_logging("warn");
    let keys = args.public_keys.iter().map(|k| TrustedKey::from_arg(k)).collect::<Result<Vec<_>, _>>()?;
    let text = std::fs::read(&args.proof).with_context(|| format!("cannot read {}", args.proof.display()))?;
    let proof: Proof =
        serde_json::from_slice(&text).with_context(|| format!("{} is not a proof document", args.proof.display()))?;
    match check::verify(&proof, &keys) {
        Ok(check::Proven::Inclusion { chain_id, seq, origin, tree_size, signers }) => println!(
            "Proof VALID: record {chain_id}#{seq} is in the tree of {tree_size} records of {origin}, signed by {}",
            signers.join(", ")
        ),
        Ok(check::Proven::Consistency { origin, old_size, new_size, signers }) => println!(
            "Proof VALID: the tree of {old_size} records of {origin} is a prefix of its tree of {new_size}, signed by {}",
            signers.join(", ")
        ),
        Err(invalid) => {
            println!("Proof INVALID: {invalid}");
            return Err(Failure { code: 1, error: anyhow::anyhow!("the proof does not hold") });
        }
    }
    Ok(())
}

fn witness(args: WitnessArgs) -> Result<(), Failure> {
    use otel_audit::witness::{Witness, http};
    init_logging("info");
    let read = |path: &Path| std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()));
    let signer = otel_audit::cosignature::WitnessSigner::parse(&read(&args.key)?)
        .with_context(|| format!("--key {}", args.key.display()))?;
    let log_keys = args
        .log_keys
        .iter()
        .map(|path| {
            checkpoint::VerifierKey::parse(&read(path)?).with_context(|| format!("--log-key {}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let witness = Witness::new(signer, log_keys, args.origin_prefixes, &args.state)
        .with_context(|| format!("--state {}", args.state.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(http::serve(std::sync::Arc::new(witness), &args.listen))?;
    Ok(())
}

fn declare_gap(args: DeclareGapArgs) -> Result<(), Failure> {
    init_logging("warn");
    let gap = otel_audit::store::declare_gap(&args.chain_dir, &args.reason, clock::now_unix_nano())?;
    println!(
        "chain {}: declared seqs {}..{} lost after checkpoint @{}; the chain continues at seq {} in {}",
        gap.chain_id,
        gap.checkpoint_size,
        gap.seq.saturating_sub(1),
        gap.checkpoint_size,
        gap.seq + 1,
        gap.segment.display()
    );
    println!("`otel-audit serve` can start again; `otel-audit verify` reports the gap as DECLARED_GAP");
    Ok(())
}

fn validate(args: ConfigArgs) -> Result<(), Failure> {
    init_logging("warn");
    let name = args.config.as_ref().map_or("the embedded config".into(), |p| p.display().to_string());
    let (config, problems) = match load_config(&args.config) {
        Ok(config) => {
            let checked = preflight::check(&config, &runtime(&None)?);
            for processor in &checked.processors {
                let (policy, info) = (processor.policy.display(), &processor.info);
                println!("processor {}: policy {policy} ({}), {} rules", processor.id, info.digest, info.rules.len());
            }
            (config, checked.problems)
        }
        Err(errors) => return Err(invalid(&name, &errors.0)),
    };
    if !problems.is_empty() {
        return Err(invalid(&name, &problems));
    }
    let chains: u32 = config.pipelines.iter().map(|p| p.shards).sum();
    println!("{name} is valid: {} pipeline(s), {chains} chain(s)", config.pipelines.len());
    Ok(())
}

/// Prints every problem of the config `name`: it is invalid.
fn invalid(name: &str, problems: &[config::Problem]) -> Failure {
    for problem in problems {
        println!("error: {problem}");
    }
    rejected(anyhow::anyhow!("{name}: {} problem(s)", problems.len()))
}

/// The runtime with the module cache the user chose.
fn runtime(cache_dir: &Option<PathBuf>) -> Result<Runtime, Failure> {
    let cache_dir = match cache_dir {
        Some(dir) if dir.as_os_str().is_empty() => None,
        Some(dir) => Some(dir.clone()),
        None => Runtime::default_cache_dir(),
    };
    Ok(Runtime::new(Limits::default(), cache_dir)?)
}

/// Loads the module and configures a fresh instance with the policy.
fn configured(args: &ModuleArgs) -> Result<(otel_audit::runtime::Instance, otel_audit::runtime::PolicyInfo), Failure> {
    let policy = std::fs::read_to_string(&args.policy)
        .with_context(|| format!("cannot read policy {}", args.policy.display()))?;
    let secrets = secrets::read_all(&args.secrets)?;
    let module = runtime(&args.cache_dir)?.load(&args.module)?;
    let mut instance = module.instantiate()?;
    let info = instance.configure(&policy, &secrets).map_err(|e| match e {
        RuntimeError::Policy(message) => rejected(anyhow::anyhow!("policy {}: {message}", args.policy.display())),
        other => other.into(),
    })?;
    Ok((instance, info))
}

fn check(args: CheckArgs) -> Result<(), Failure> {
    init_logging("warn");
    let (_, info) = configured(&args.module)?;
    println!("policy {} is valid", args.module.policy.display());
    println!("  digest   {}", info.digest);
    if !info.pipeline.is_empty() {
        println!("  pipeline {}", info.pipeline);
    }
    if let Some(key_id) = &info.key_id {
        println!("  mac key  {key_id}");
    }
    println!("  rules    {}", info.rules.len());
    for rule in &info.rules {
        println!("    {:<40} {}", rule.id, rule.description);
    }
    Ok(())
}

fn test(args: TestArgs) -> Result<(), Failure> {
    init_logging("warn");
    let runtime = runtime(&args.cache_dir)?;
    let files = policytest::discover(&args.paths)?;
    if files.is_empty() {
        return Err(rejected(anyhow::anyhow!("no *.test.yaml files under {:?}", args.paths)));
    }
    let run = policytest::run_files(&runtime, &files, args.module.as_deref(), Path::new(DEFAULT_MODULE))?;
    let rendered = match args.format {
        ReportFormat::Text => policytest::render_text(&run.reports, &run.errors, args.coverage || args.fail_uncovered),
        ReportFormat::Junit => policytest::render_junit(&run.reports, &run.errors),
    };
    match &args.output {
        Some(path) => write_atomically(path, rendered.as_bytes())?,
        None => print!("{rendered}"),
    }
    if run.failed() > 0 {
        return Err(rejected(anyhow::anyhow!("{} policy test(s) failed", run.failed())));
    }
    let uncovered = run.uncovered();
    if args.fail_uncovered && !uncovered.is_empty() {
        return Err(rejected(anyhow::anyhow!("rules no test exercised: {}", uncovered.join(", "))));
    }
    Ok(())
}

fn keygen(args: KeygenArgs) -> Result<(), Failure> {
    init_logging("warn");
    let (files, public) = if args.witness {
        let signer = otel_audit::cosignature::WitnessSigner::generate(&args.name)?;
        (keyfile::write_witness(&args.out, &signer)?, signer.verifier().encode())
    } else {
        let signer = checkpoint::SignerKey::generate(&args.name)?;
        (keyfile::write(&args.out, &signer)?, signer.verifier().encode())
    };
    println!("signer key:   {} (keep it secret; mode 0600)", files.private.display());
    println!("verifier key: {}", files.public.display());
    println!("{public}");
    Ok(())
}

fn process(args: ProcessArgs) -> Result<(), Failure> {
    init_logging("warn");
    let input = std::fs::read(&args.input).with_context(|| format!("cannot read input {}", args.input.display()))?;
    let request = otlp::to_protobuf(args.signal, &input, args.input_format)
        .map_err(|e| rejected(anyhow::anyhow!("{}: {e}", args.input.display())))?;
    let prev = match &args.prev {
        None => audit_format::GENESIS_PREV,
        Some(text) => {
            let bytes = hex::decode(text).context("--prev must be hex")?;
            bytes
                .try_into()
                .map_err(|b: Vec<u8>| anyhow::anyhow!("--prev must be 32 bytes (64 hex digits), got {}", b.len()))?
        }
    };
    let received_at_unix_nano = match &args.received_at {
        Some(text) => clock::parse_rfc3339(text).map_err(|e| anyhow::anyhow!("--received-at {e}"))?,
        None => clock::now_unix_nano(),
    };
    let ctx = Context {
        received_at_unix_nano,
        head: ChainHead { chain_id: args.chain_id.clone(), seq: args.seq, prev },
        sender: None,
    };
    let (mut instance, info) = configured(&args.module)?;
    let result = match args.signal {
        Signal::Traces => instance.process_traces(&request, &ctx),
        Signal::Logs => instance.process_logs(&request, &ctx),
    };
    let output = result.map_err(|e| match e {
        RuntimeError::Process(e) => rejected(anyhow::anyhow!("{}: {e}", args.input.display())),
        other => other.into(),
    })?;

    let otlp_out = match (&args.out, args.out_format) {
        (None, _) => None,
        (Some(path), OutFormat::Json) => Some((path.as_path(), otlp::to_json(args.signal, &output.otlp)?)),
        (Some(path), OutFormat::Protobuf) => Some((path.as_path(), output.otlp.clone())),
    };
    let mut lines = Vec::with_capacity(output.records.iter().map(|r| r.len() + 1).sum());
    for record in &output.records {
        lines.extend_from_slice(record);
        lines.push(b'\n');
    }
    let records_to_stdout = args.records.as_deref() == Some(Path::new("-"));
    let records_out = args.records.as_deref().filter(|_| !records_to_stdout).map(|path| (path, lines.as_slice()));
    // Outputs appear only once the whole batch succeeded, and together.
    let files: Vec<(&Path, &[u8])> =
        otlp_out.iter().map(|(path, bytes)| (*path, bytes.as_slice())).chain(records_out).collect();
    write_together(&files)?;
    if records_to_stdout {
        std::io::stdout().write_all(&lines)?;
    }
    let s = &output.stats;
    eprintln!(
        "processed {} {}: kept {}, dropped {}, redacted {}, violations {}; policy {}; chain {} seq {}..{} head {}",
        s.received,
        match args.signal {
            Signal::Traces => "spans",
            Signal::Logs => "log records",
        },
        s.kept,
        s.dropped,
        s.redacted,
        s.violations,
        info.digest,
        output.head.chain_id,
        ctx.head.seq,
        output.head.seq,
        hex::encode(output.head.prev),
    );
    Ok(())
}

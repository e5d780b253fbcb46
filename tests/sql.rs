//! The auditor's question on a real trail: a store filled through `otel-audit
//! serve` by the OpenTelemetry Python SDK (tests/e2e/role_changes.py: role
//! changes over 200 days, failures, failed logins, an ordinary span the
//! policy drops), then asked with `otel-audit sql` (the seed query verbatim,
//! each output format, malformed and writing statements) and answered with
//! evidence (`otel-audit evidence`) that `evidence verify` accepts, and
//! rejects with a named reason once a record is altered, removed or added.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use support::copy_dir;
use support::server::{Setup, binary, free_port, python};

/// The query of the guide this project grew from, verbatim.
const SEED_QUERY: &str = "SELECT
    timestamp,
    attributes['enduser.id'] AS actor,
    attributes['audit.target_user'] AS target,
    attributes['audit.old_value'] AS previous_role,
    attributes['audit.new_value'] AS new_role,
    attributes['audit.result'] AS outcome
FROM audit_spans
WHERE attributes['audit.action'] = 'role_update'
    AND timestamp >= NOW() - INTERVAL '90 days'
ORDER BY timestamp DESC;";

const DAY_NS: i128 = 86_400 * 1_000_000_000;

/// A store the SDK filled through `serve`, stopped (its final checkpoints
/// cover every record), and the SDK's report of what it sent.
struct Trail {
    _tmp: tempfile::TempDir,
    setup: Setup,
    report: Value,
}

fn trail() -> &'static Trail {
    static TRAIL: OnceLock<Trail> = OnceLock::new();
    TRAIL.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let mut setup = Setup::new(tmp.path());
        setup.policy = tmp.path().join("soc2-audit.yaml");
        std::fs::copy(support::root().join("collector-config/policies/soc2-audit.yaml"), &setup.policy).unwrap();
        let admin = free_port();
        setup.admin = Some(admin);
        let server = setup.start();
        let report_path = tmp.path().join("role-changes.json");
        let out = Command::new(python())
            .arg(support::root().join("tests/e2e/role_changes.py"))
            .args(["--endpoint", &setup.grpc_uri(), "--out"])
            .arg(&report_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "role_changes.py: {}", String::from_utf8_lossy(&out.stderr));
        // A change to the audit configuration itself: the policy edited and
        // hot-swapped, which each chain records.
        let mut policy = std::fs::read_to_string(&setup.policy).unwrap();
        policy.push_str("# reviewed for the audit\n");
        std::fs::write(&setup.policy, policy).unwrap();
        let (code, answer) = support::admin::reload(admin, None);
        assert_eq!(code, 200, "reload: {answer}");
        assert!(server.stop().success());
        setup.assert_verifies();
        let report = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
        Trail { _tmp: tmp, setup, report }
    })
}

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn store() -> String {
    trail().setup.store.display().to_string()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `otel-audit sql STORE QUERY --format json`, parsed.
fn sql_json(query: &str) -> Vec<Value> {
    let out = run(&["sql", &store(), query, "--format", "json"]);
    assert!(out.status.success(), "sql: {}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn nanos(rfc3339: &str) -> i128 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap().unix_timestamp_nanos()
}

fn now_ns() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// What the seed query must return, from what the SDK sent: role updates
/// of the last 90 days, newest first, as (timestamp, actor, target,
/// previous role, new role, outcome).
fn expected_role_changes() -> Vec<(i128, String, String, String, String, String)> {
    let since = now_ns() - 90 * DAY_NS;
    let mut rows: Vec<_> = trail().report["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["attributes"]["audit.action"] == "role_update")
        .map(|s| {
            let a = &s["attributes"];
            let get = |k: &str| a[k].as_str().unwrap().to_owned();
            let start = s["start_time_unix_nano"].as_i64().unwrap() as i128;
            (
                start,
                get("user.id"),
                get("audit.target_user"),
                get("audit.old_value"),
                get("audit.new_value"),
                get("audit.result"),
            )
        })
        .filter(|row| row.0 >= since)
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    rows
}

fn role_change_rows(rows: &[Value]) -> Vec<(i128, String, String, String, String, String)> {
    rows.iter()
        .map(|r| {
            let get = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}")).to_owned();
            (
                nanos(&get("timestamp")),
                get("actor"),
                get("target"),
                get("previous_role"),
                get("new_role"),
                get("outcome"),
            )
        })
        .collect()
}

#[test]
fn the_seed_query_runs_verbatim_and_returns_exactly_the_role_changes_of_the_last_90_days() {
    let expected = expected_role_changes();
    // Five of the eight role updates are within 90 days, one of them failed.
    assert_eq!(expected.len(), 5, "{expected:?}");
    assert!(expected.iter().any(|r| r.5 == "failure"));
    assert_eq!(role_change_rows(&sql_json(SEED_QUERY)), expected);
}

#[test]
fn every_output_format_carries_the_same_answer() {
    let expected = expected_role_changes();
    let out = run(&["sql", &store(), SEED_QUERY]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| actor") && table.contains(&format!("{} row(s)", expected.len())), "{table}");
    assert!(table.contains("| alice"), "{table}");

    let out = run(&["sql", &store(), SEED_QUERY, "--format", "csv"]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "timestamp,actor,target,previous_role,new_role,outcome");
    assert_eq!(lines.len(), expected.len() + 1, "{csv}");
    let first = &expected[0];
    assert!(lines[1].ends_with(&format!(",{},{},{},{},{}", first.1, first.2, first.3, first.4, first.5)), "{csv}");

    // Maps are text in CSV.
    let out = run(&["sql", &store(), "SELECT attributes FROM audit_spans LIMIT 1", "--format", "csv"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("audit.action"), "{}", text(&out));

    let tmp = tempfile::tempdir().unwrap();
    let parquet = tmp.path().join("answer.parquet");
    let out = run(&["sql", &store(), SEED_QUERY, "--format", "parquet", "--out", parquet.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read(&parquet).unwrap();
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"), "not a Parquet file");
    let reader = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&parquet).unwrap()).unwrap();
    use parquet::file::reader::FileReader as _;
    assert_eq!(reader.metadata().file_metadata().num_rows() as usize, expected.len());
}

#[test]
fn the_tables_have_the_columns_auditors_ask_about() {
    // Failed logins, from the log records (time is the log's own).
    let rows = sql_json(
        "SELECT timestamp, attributes['enduser.id'] AS actor, body, severity_text, chain, seq, sealed \
         FROM audit_logs WHERE attributes['audit.action'] = 'login' AND attributes['audit.result'] = 'failure' \
         ORDER BY timestamp DESC",
    );
    let logs = trail().report["logs"].as_array().unwrap();
    assert_eq!(rows.len(), logs.len());
    let mut times: Vec<i128> = logs.iter().map(|l| l["time_unix_nano"].as_i64().unwrap() as i128).collect();
    times.sort_by_key(|t| std::cmp::Reverse(*t));
    assert_eq!(rows.iter().map(|r| nanos(r["timestamp"].as_str().unwrap())).collect::<Vec<_>>(), times);
    for row in &rows {
        assert_eq!(row["body"], "login failed");
        assert_eq!(row["severity_text"], "WARN");
        assert_eq!(row["sealed"], true, "the final checkpoint covers every record: {row}");
        assert!(row["chain"].as_str().unwrap().starts_with("test/logs/audit/"), "{row}");
    }
    // The typed originals, the resource, the scope, ids, leaf and received-at.
    let rows = sql_json(
        "SELECT attributes_typed, resource['service.name'] AS service, scope_name, trace_id, span_id, leaf, \
         received_at, start_time, end_time, name, record FROM audit_spans WHERE seq = 0",
    );
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let typed: Value = serde_json::from_str(row["attributes_typed"].as_str().unwrap()).unwrap();
    assert!(typed["audit.action"]["s"].is_string(), "{typed}");
    assert_eq!(row["service"], "accounts");
    assert_eq!(row["scope_name"], "accounts.audit");
    assert_eq!(row["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(row["span_id"].as_str().unwrap().len(), 16);
    let record = row["record"].as_str().unwrap();
    assert_eq!(row["leaf"], leaf_hex(record).as_str());
    let duration = nanos(row["end_time"].as_str().unwrap()) - nanos(row["start_time"].as_str().unwrap());
    assert_eq!(duration, 25_000_000);
    assert!(nanos(row["received_at"].as_str().unwrap()) > nanos(row["start_time"].as_str().unwrap()));
    // The span the policy dropped is not in the trail.
    assert!(sql_json("SELECT name FROM audit_spans WHERE name = 'GET /health'").is_empty());
}

#[test]
fn a_malformed_or_writing_statement_gets_the_engine_message_and_exit_2() {
    for (query, message) in [
        ("SELECT actor FROM audit_spans", "actor"),
        ("SELECT * FROM audit_span", "audit_span"),
        ("SELEKT 1", "SELEKT"),
        ("CREATE TABLE copy AS SELECT * FROM audit_spans", "DDL"),
        ("DROP TABLE audit_spans", "DDL"),
    ] {
        let out = run(&["sql", &store(), query]);
        assert_eq!(out.status.code(), Some(2), "{query}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message) && !stderr.contains("panicked"), "{query}: {stderr}");
        assert!(out.stdout.is_empty(), "{query}: nothing is answered");
    }
}

#[test]
fn the_prompt_answers_each_statement_and_goes_on_after_a_bad_one() {
    use std::io::Write as _;
    let mut child = Command::new(binary())
        .args(["sql", &store(), "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"SELECT count(*) AS n\n  FROM audit_spans;\nSELECT nonsense;\nSELECT count(*) AS m FROM audit_logs;\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // What the SDK sent (less the span the policy dropped) and, in each
    // chain, the record of the policy change.
    let spans = trail().report["spans"].as_array().unwrap().len() - 1 + 1;
    let logs = trail().report["logs"].as_array().unwrap().len() + 1;
    assert!(stdout.contains(&format!("n\n{spans}\n")) && stdout.contains(&format!("m\n{logs}\n")), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(2), "a failed statement fails the run");
}

// ------------------------------------------------------------- evidence

fn make_evidence(dir: &Path, query: &str) -> Output {
    let key = trail().setup.key.display().to_string();
    run(&["evidence", &store(), "--sql", query, "--out", dir.to_str().unwrap(), "--key", &key])
}

fn verify_evidence(dir: &Path) -> Output {
    let public = trail().setup.public_key().display().to_string();
    run(&["evidence", "verify", dir.to_str().unwrap(), "--public-key", &public])
}

/// A copy of `bundle` with `edit` applied to it; `evidence verify` must
/// fail on it naming `reason`.
fn assert_caught(bundle: &Path, name: &str, reason: &str, edit: impl FnOnce(&Path)) {
    let copy = bundle.parent().unwrap().join(name);
    copy_dir(bundle, &copy);
    edit(&copy);
    let out = verify_evidence(&copy);
    assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{reason}: ")) && stdout.contains("Evidence INVALID"), "{name}: {stdout}");
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect();
    edit(&mut lines);
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn evidence_for_the_seed_query_verifies_offline_and_every_alteration_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("evidence");
    let out = make_evidence(&bundle, SEED_QUERY);
    assert!(out.status.success(), "evidence: {}", text(&out));
    let expected = expected_role_changes();

    // The answer is the seed query's, the records are the rows', in order.
    let answer: Vec<Value> = serde_json::from_slice(&std::fs::read(bundle.join("answer.json")).unwrap()).unwrap();
    assert_eq!(role_change_rows(&answer), expected);
    let records = std::fs::read_to_string(bundle.join("records.jsonl")).unwrap();
    let actors: Vec<String> = records
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["span"]["attributes"]["enduser.id"]["s"].to_string())
        .collect();
    assert_eq!(actors, expected.iter().map(|r| format!("\"{}\"", r.1)).collect::<Vec<_>>());
    let readme = std::fs::read_to_string(bundle.join("README.md")).unwrap();
    assert!(readme.contains("role_update") && readme.contains("evidence verify"), "{readme}");

    let out = verify_evidence(&bundle);
    assert!(out.status.success(), "verify: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("Evidence VALID: {} row(s)", expected.len())));
    // Each proof is a document `verify-proof` checks on its own.
    let manifest: Value = serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let proof = bundle.join(manifest["rows"][0]["proof"].as_str().unwrap());
    let public = trail().setup.public_key().display().to_string();
    let out = run(&["verify-proof", proof.to_str().unwrap(), "--public-key", &public]);
    assert!(out.status.success(), "verify-proof: {}", text(&out));

    let records_file = |dir: &Path| dir.join("records.jsonl");
    assert_caught(&bundle, "altered", "RECORD_ALTERED", |dir| {
        edit_lines(&records_file(dir), |lines| {
            let altered = lines[1].replace("\"enduser.id\":{\"s\":\"", "\"enduser.id\":{\"s\":\"not-");
            assert_ne!(altered, lines[1]);
            lines[1] = altered;
        })
    });
    assert_caught(&bundle, "altered-in-proof-too", "PROOF_INVALID", |dir| {
        // Altered consistently in the record and its proof: the proof no longer leads to the root.
        let row = &manifest["rows"][0];
        let proof_path = dir.join(row["proof"].as_str().unwrap());
        let proof = std::fs::read_to_string(&proof_path).unwrap();
        let doc: Value = serde_json::from_str(&proof).unwrap();
        let record = doc["record"].as_str().unwrap();
        let forged = record.replace("\"s\":\"bob\"", "\"s\":\"mallory\"");
        assert_ne!(forged, record);
        let mut doc = doc.clone();
        doc["record"] = Value::String(forged.clone());
        std::fs::write(&proof_path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        let mut manifest = manifest.clone();
        manifest["rows"][0]["leaf"] = Value::String(leaf_hex(&forged));
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
        edit_lines(&records_file(dir), |lines| lines[0] = forged);
    });
    assert_caught(&bundle, "removed", "RECORD_MISSING", |dir| {
        edit_lines(&records_file(dir), |lines| {
            lines.remove(2);
        })
    });
    assert_caught(&bundle, "added", "RECORD_UNEXPECTED", |dir| {
        // A genuine record of the trail that is not in the answer (a role
        // change older than 90 days).
        let old = sql_json("SELECT record FROM audit_spans WHERE attributes['audit.target_user'] = 'grace'");
        let record = old[0]["record"].as_str().unwrap().to_owned();
        edit_lines(&records_file(dir), |lines| lines.push(record));
    });
    assert_caught(&bundle, "row-dropped", "MANIFEST_ALTERED", |dir| {
        let mut manifest = manifest.clone();
        manifest["rows"].as_array_mut().unwrap().remove(0);
        std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
        edit_lines(&records_file(dir), |lines| {
            lines.remove(0);
        });
    });
    assert_caught(&bundle, "answer-edited", "ANSWER_ALTERED", |dir| {
        let answer = std::fs::read_to_string(dir.join("answer.json")).unwrap();
        std::fs::write(dir.join("answer.json"), answer.replacen("failure", "success", 1)).unwrap();
    });
    assert_caught(&bundle, "proof-removed", "PROOF_MISSING", |dir| {
        std::fs::remove_file(dir.join(manifest["rows"][3]["proof"].as_str().unwrap())).unwrap();
    });
    // Another key signed nothing here.
    let (_, other) = support::server::keygen(tmp.path(), "someone-else");
    let out = run(&["evidence", "verify", bundle.to_str().unwrap(), "--public-key", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MANIFEST_UNSIGNED: "), "{}", text(&out));

    // Witnesses: a checkpoint nobody cosigned does not meet a quorum; once
    // a witness cosigns it (its line added to the checkpoint, as a chain
    // with witnesses carries it), it does, and a forged cosignature is named.
    let witness = otel_audit::cosignature::WitnessSigner::generate("witness.test/w1").unwrap();
    let witness_pub = tmp.path().join("w1.pub");
    std::fs::write(&witness_pub, witness.verifier().encode()).unwrap();
    let verify_witnessed = |dir: &Path| {
        let args = ["evidence", "verify", dir.to_str().unwrap(), "--public-key", &public];
        run(&[&args[..], &["--witness", witness_pub.to_str().unwrap()]].concat())
    };
    let out = verify_witnessed(&bundle);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WITNESS_QUORUM: "), "{}", text(&out));
    let cosign = |dir: &Path, forge: bool| {
        let checkpoint_file = dir.join(manifest["checkpoints"][0]["file"].as_str().unwrap());
        let note = std::fs::read_to_string(&checkpoint_file).unwrap();
        let text = otel_audit::checkpoint::SignedNote::parse(&note).unwrap().text;
        let mut line = witness.cosign(&text, 1_796_000_000);
        if forge {
            line = witness.cosign(&text.replacen('\n', "x\n", 1), 1_796_000_000);
        }
        let cosigned = format!("{note}{line}");
        std::fs::write(&checkpoint_file, &cosigned).unwrap();
        for row in manifest["rows"].as_array().unwrap() {
            let path = dir.join(row["proof"].as_str().unwrap());
            let mut proof: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            proof["checkpoint"] = Value::String(cosigned.clone());
            std::fs::write(&path, serde_json::to_vec_pretty(&proof).unwrap()).unwrap();
        }
    };
    let witnessed = tmp.path().join("witnessed");
    copy_dir(&bundle, &witnessed);
    cosign(&witnessed, false);
    let out = verify_witnessed(&witnessed);
    assert!(out.status.success(), "{}", text(&out));
    let forged = tmp.path().join("forged-cosignature");
    copy_dir(&bundle, &forged);
    cosign(&forged, true);
    let out = verify_witnessed(&forged);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WITNESS_INVALID: "), "{}", text(&out));
}

/// RFC 9162 leaf hash of a record, lowercase hex.
fn leaf_hex(record: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::new().chain_update([0u8]).chain_update(record.as_bytes()).finalize())
}

#[test]
fn evidence_refuses_a_query_whose_rows_are_not_records() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, query) in [
        "SELECT attributes['enduser.id'] AS actor, count(*) FROM audit_spans GROUP BY attributes['enduser.id']",
        "SELECT DISTINCT name FROM audit_spans",
        "SELECT name FROM audit_spans UNION ALL SELECT name FROM audit_logs",
    ]
    .into_iter()
    .enumerate()
    {
        let out = make_evidence(&tmp.path().join(format!("b{i}")), query);
        assert_eq!(out.status.code(), Some(2), "{query}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("rows are records"), "{query}: {}", text(&out));
    }
    // An engine error is the engine's.
    let out = make_evidence(&tmp.path().join("bad"), "SELECT nonsense FROM audit_spans");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"), "{}", text(&out));
}

// ------------------------------------------------ the auditors' guide, and DuckDB

/// The queries of docs/auditors.md: each ```sql block whose first line is
/// `-- <name>`, as (name, the query without that line).
fn guide_queries() -> Vec<(String, String)> {
    let guide = std::fs::read_to_string(support::root().join("docs/auditors.md")).unwrap();
    guide
        .split("```sql\n")
        .skip(1)
        .filter_map(|block| {
            let block = block.split("```").next().unwrap();
            let (first, rest) = block.split_once('\n')?;
            Some((first.strip_prefix("-- ")?.to_owned(), rest.trim_end().to_owned()))
        })
        .collect()
}

/// `query` in DuckDB over the store, through docs/duckdb/audit-views.sql.
fn duckdb_rows(query: &str) -> Vec<Value> {
    let out_file = trail()._tmp.path().join(format!("duckdb-{}.json", rand_name(query)));
    let out = Command::new(python())
        .arg(support::root().join("tests/e2e/duckdb_query.py"))
        .arg("--views")
        .arg(support::root().join("docs/duckdb/audit-views.sql"))
        .arg("--store")
        .arg(&trail().setup.store)
        .args(["--query", query, "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "duckdb: {}\n{query}", text(&out));
    std::fs::read_to_string(&out_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn rand_name(query: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(query.as_bytes())[..8])
}

/// A row as both engines agree on it: no NULL members, `timestamp` in
/// microseconds (DuckDB's precision; its text is `2026-11-18 11:06:40.001+00`).
fn comparable(row: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (key, value) in row.as_object().unwrap() {
        if value.is_null() {
            continue;
        }
        let value = match (key.as_str(), value.as_str()) {
            ("timestamp", Some(t)) => {
                let rfc3339 = if t.contains('T') { t.to_owned() } else { format!("{}:00", t.replacen(' ', "T", 1)) };
                Value::from((nanos(&rfc3339) / 1000) as i64)
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    Value::Object(out)
}

#[test]
fn every_question_of_the_auditors_guide_answers_the_same_in_otel_audit_and_duckdb() {
    let queries = guide_queries();
    let names: Vec<&str> = queries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["permission-changes", "admin-actions", "failed-logins", "audit-config-changes", "user-activity"]
    );
    assert_eq!(queries[0].1, SEED_QUERY, "the guide's first question is the seed query, verbatim");
    for (name, query) in &queries {
        let ours = sql_json(query);
        match name.as_str() {
            "permission-changes" => assert_eq!(role_change_rows(&ours), expected_role_changes()),
            "admin-actions" => {
                let actions: Vec<&str> = ours.iter().map(|r| r["action"].as_str().unwrap()).collect();
                assert_eq!(actions, ["config_change", "role_update"], "{ours:?}");
            }
            "failed-logins" => {
                assert_eq!(ours.len(), 4, "two spans and two log records within 90 days: {ours:?}");
                assert!(ours.iter().all(|r| r["actor"] == "mallory"), "{ours:?}");
                let sources: Vec<&str> = ours.iter().map(|r| r["source"].as_str().unwrap()).collect();
                assert_eq!(sources, ["log", "span", "log", "span"]);
            }
            "audit-config-changes" => {
                assert_eq!(ours.len(), 2, "one policy change per chain: {ours:?}");
                for row in &ours {
                    assert_eq!(row["name"], "audit.policy_change");
                    assert!(row["trigger"].is_string(), "{row}");
                    assert_ne!(row["old_policy"], row["new_policy"]);
                }
            }
            "user-activity" => {
                let actions: Vec<&str> = ours.iter().map(|r| r["action"].as_str().unwrap()).collect();
                assert_eq!(actions, ["role_update"; 4], "{ours:?}");
            }
            other => panic!("no expectation for {other}"),
        }
        let duck = duckdb_rows(query);
        assert_eq!(
            duck.iter().map(comparable).collect::<Vec<_>>(),
            ours.iter().map(comparable).collect::<Vec<_>>(),
            "{name}: DuckDB and otel-audit sql disagree"
        );
    }
}

// ------------------------------------------------------------- the read API

const AUDITOR_TOKEN: &str = "auditor-token-0123456789abcdef";
const WRITER_TOKEN: &str = "writer-token-0123456789abcdef";

/// A request on loopback: (status, body as JSON or text).
fn request(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn the_read_api_answers_with_proofs_on_its_own_listener_and_only_to_its_own_token() {
    let trail = trail();
    let tmp = tempfile::tempdir().unwrap();
    // The trail's store served again, now with a read API.
    let mut setup = Setup::new(tmp.path());
    setup.store = trail.setup.store.clone();
    setup.key = trail.setup.key.clone();
    setup.policy = trail.setup.policy.clone();
    let port = free_port();
    let token_file = |name: &str, token: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        format!("    filename: {}", path.display())
    };
    setup.extensions = vec![
        ("bearertokenauth/writers".into(), token_file("writers.token", WRITER_TOKEN)),
        ("bearertokenauth/auditors".into(), token_file("auditors.token", AUDITOR_TOKEN)),
        (
            "read_api".into(),
            format!("    endpoint: 127.0.0.1:{port}\n    auth: {{authenticator: bearertokenauth/auditors}}"),
        ),
    ];
    let writers = "        auth:\n          authenticator: bearertokenauth/writers\n".to_owned();
    setup.receiver_extra = [writers.clone(), writers];
    let server = setup.start();
    let keys = [otel_audit::verify::TrustedKey::from_arg(trail.setup.public_key().to_str().unwrap()).unwrap()];

    // No token, a wrong one, a writer's: refused, nothing returned.
    let since = time::OffsetDateTime::now_utc() - time::Duration::days(90);
    let since = since.format(&time::format_description::well_known::Rfc3339).unwrap();
    let records = format!("/v1/records?action=role_update&since={}", encode(&since));
    for token in [None, Some("not-a-token"), Some(WRITER_TOKEN)] {
        for (method, path) in [("GET", records.as_str()), ("POST", "/v1/sql"), ("GET", "/v1/chains")] {
            let (code, body) = request(port, method, path, token, SEED_QUERY);
            assert!(code == 401 || code == 403, "{method} {path} with {token:?}: {code} {body}");
            assert!(!body.to_string().contains("role_update"), "{body}");
        }
    }

    // The structured query: the role changes of the last 90 days, newest
    // first, each with a proof that holds.
    let (code, body) = request(port, "GET", &records, Some(AUDITOR_TOKEN), "");
    assert_eq!(code, 200, "{body}");
    let expected = expected_role_changes();
    let rows = body["rows"].as_array().unwrap();
    let actors: Vec<&str> = rows.iter().map(|r| r["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, expected.iter().map(|r| r.1.as_str()).collect::<Vec<_>>());
    let proven = body["records"].as_array().unwrap();
    assert_eq!(proven.len(), expected.len());
    for record in proven {
        let proof: otel_audit::proof::Proof = serde_json::from_value(record["proof"].clone()).unwrap();
        let checked = otel_audit::proof::check::verify(&proof, &keys);
        assert!(checked.is_ok(), "{checked:?}");
        assert_eq!(leaf_hex(record["record"].as_str().unwrap()), record["leaf"].as_str().unwrap());
    }

    // SQL: the seed query verbatim, then with proofs.
    let (code, body) = request(port, "POST", "/v1/sql", Some(AUDITOR_TOKEN), SEED_QUERY);
    assert_eq!(code, 200, "{body}");
    assert_eq!(role_change_rows(body["rows"].as_array().unwrap()), expected);
    let (code, body) = request(port, "POST", "/v1/sql?proofs=true", Some(AUDITOR_TOKEN), SEED_QUERY);
    assert_eq!(code, 200, "{body}");
    assert_eq!(role_change_rows(body["rows"].as_array().unwrap()), expected);
    assert_eq!(body["records"].as_array().unwrap().len(), expected.len());

    // Mistakes are the engine's message, a 400.
    let (code, body) = request(port, "POST", "/v1/sql", Some(AUDITOR_TOKEN), "SELECT nonsense FROM audit_spans");
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nonsense"), "{body}");
    let (code, body) = request(port, "GET", "/v1/records?since=yesterday", Some(AUDITOR_TOKEN), "");
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("since"), "{body}");

    // The chains and their tiles.
    let (code, body) = request(port, "GET", "/v1/chains", Some(AUDITOR_TOKEN), "");
    assert_eq!(code, 200, "{body}");
    let chains = body["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "{body}");
    let tiles = chains[0]["tiles"].as_str().unwrap();
    let (code, checkpoint) = request(port, "GET", &format!("{tiles}checkpoint"), Some(AUDITOR_TOKEN), "");
    assert_eq!(code, 200);
    let origin = |note: &str| note.lines().next().unwrap().to_owned();
    assert_eq!(origin(checkpoint.as_str().unwrap()), origin(chains[0]["checkpoint"].as_str().unwrap()));
    assert!(server.stop().success());
}

//! The policy test harness (`otel-audit test`) tested on itself: correct
//! files pass, wrong expectations fail with a useful diff, malformed files
//! are errors naming file, test and key, a policy that cannot configure is
//! a failure, coverage is reported, exit codes are as documented.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use otel_audit::policytest;

fn otel_audit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_otel-audit"))
        .args(args)
        .arg("--module")
        .arg(support::wasm_path())
        .env("OTEL_AUDIT_CACHE_DIR", support::cache_dir())
        .output()
        .expect("run otel-audit")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory holding the shipped policy and the given test files.
fn scratch(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("soc2-audit.yaml"), support::policy("soc2-audit.yaml")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().to_owned();
    (dir, path)
}

fn run(path: &Path) -> policytest::SuiteReport {
    let file = policytest::load(path).unwrap();
    policytest::run_suite(path, &file, support::module(), None).unwrap()
}

#[test]
fn shipped_policies_pass_with_every_rule_exercised() {
    let files = policytest::discover(&[support::root().join("collector-config/policies")]).unwrap();
    assert!(!files.is_empty(), "every shipped policy has tests");
    for path in files {
        let report = run(&path);
        for result in &report.results {
            assert!(result.passed(), "{}: {}: {:?}", path.display(), result.name, result.failures);
        }
        let missed: Vec<_> = report.unexercised().iter().map(|r| r.id.clone()).collect();
        assert!(missed.is_empty(), "{}: rules no test exercises: {missed:?}", path.display());
        assert!(!report.rules.is_empty());
    }
    let policies = std::fs::read_dir(support::root().join("collector-config/policies")).unwrap();
    for entry in policies {
        let path = entry.unwrap().path();
        let name = path.to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with(".test.yaml") {
            let tests = PathBuf::from(name.replace(".yaml", ".test.yaml"));
            assert!(tests.exists(), "{} has no {}", path.display(), tests.display());
        }
    }
}

#[test]
fn the_cli_reports_each_test_and_the_totals() {
    let out = otel_audit(&["test", support::root().join("collector-config/policies").to_str().unwrap(), "--coverage"]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    assert!(text.contains("  PASS  a role change is kept, enriched and stripped of credentials"), "{text}");
    assert!(text.contains("rules hit: filter.spans.include, attributes.actions[0], attributes.actions[1]"), "{text}");
    assert!(text.contains("coverage: 8/8 rules exercised"), "{text}");
    // The example beside it: a config change's audit.changed_by as its actor.
    assert!(text.contains("  PASS  a config change's audit.changed_by becomes its enduser.id, so nothing is flagged"));
    assert!(text.contains("coverage: 3/3 rules exercised"), "{text}");
    // soc2-audit-ottl.yaml runs soc2-audit.yaml's tests, and every one of
    // its conditions and statements is exercised.
    assert!(text.contains("coverage: 11/11 rules exercised"), "{text}");
    // The Collector-docs conformance examples, with the rules no input can hit named apart.
    assert!(text.contains("  PASS  every span of a localhost resource is dropped"), "{text}");
    assert!(text.contains("unreachable: filter.error_mode  (no condition of this example can fail"), "{text}");
    let files = policytest::discover(&[support::root().join("collector-config/policies")]).unwrap();
    let total: usize = files.iter().map(|f| policytest::load(f).unwrap().tests.len()).sum();
    assert!(total >= 18 + 54, "{total}");
    assert!(text.lines().last().unwrap().ends_with(&format!("{total} passed, 0 failed")), "{text}");
}

const WRONG: &str = r#"
policy: soc2-audit.yaml
tests:
  - name: right
    input:
      spans: [{name: a, attributes: {audit.action: x, enduser.id: u, audit.result: ok}}, {name: b}]
    expect: {kept: [a], dropped: [b]}
  - name: wrong kept and value
    input:
      spans: [{name: a, attributes: {audit.action: x, enduser.id: u, audit.result: ok}}, {name: b}]
    expect:
      kept: [b]
      attributes:
        - record: a
          equal: {audit.pipeline: other}
          matches: {audit.action: '^y'}
  - name: the policy is broken
    policy: broken.yaml
    input: {spans: [{name: a}]}
    expect: {kept: []}
  - name: expected configure error
    policy: broken.yaml
    expect: {configure_error: "unknown field `spanz`"}
"#;

#[test]
fn wrong_expectations_fail_with_what_was_expected_and_what_came_out() {
    let broken = "filter:\n  spanz: {}\n";
    let (_dir, root) = scratch(&[("wrong.test.yaml", WRONG), ("broken.yaml", broken)]);
    let report = run(&root.join("wrong.test.yaml"));
    let by_name = |n: &str| report.results.iter().find(|r| r.name == n).unwrap();
    assert!(by_name("right").passed());
    assert!(by_name("expected configure error").passed(), "{:?}", by_name("expected configure error").failures);
    let wrong = &by_name("wrong kept and value").failures;
    assert_eq!(wrong.len(), 3, "{wrong:?}");
    assert_eq!(wrong[0], "kept records differ\n  expected: [\"b\"]\n  got:      [\"a\"]");
    assert_eq!(wrong[1], "record \"a\": audit.pipeline\n  expected: \"other\"\n  got:      \"soc2-audit-trail\"");
    assert_eq!(wrong[2], "record \"a\": audit.action = \"x\" does not match /^y/");
    let broken = &by_name("the policy is broken").failures;
    assert!(broken.len() == 1 && broken[0].starts_with("the policy failed to configure: "), "{broken:?}");
    assert!(broken[0].contains("filter.spanz"), "{broken:?}");

    let out = otel_audit(&["test", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("  FAIL  wrong kept and value\n        kept records differ\n"), "{text}");
    assert!(text.lines().last().unwrap().ends_with("2 passed, 2 failed"), "{text}");

    let junit = otel_audit(&["test", root.to_str().unwrap(), "--format", "junit"]);
    assert_eq!(junit.status.code(), Some(1));
    let xml = stdout(&junit);
    assert!(xml.starts_with("<?xml") && xml.contains("tests=\"4\"") && xml.contains("failures=\"2\""), "{xml}");
    assert!(xml.contains("<failure message=\"kept records differ\">"), "{xml}");
}

#[test]
fn malformed_test_files_name_file_test_and_key() {
    let typo = "policy: soc2-audit.yaml\ntests:\n  - name: fine\n    input: {spans: [{name: a}]}\n    expect: {kept: []}\n  - name: typo\n    input: {spans: [{name: a}]}\n    expect: {kep: [a]}\n";
    let unknown_record =
        "policy: soc2-audit.yaml\ntests:\n  - name: who\n    input: {spans: [{name: a}]}\n    expect: {kept: [zzz]}\n";
    let (_dir, root) = scratch(&[("typo.test.yaml", typo), ("unknown.test.yaml", unknown_record)]);
    let err = policytest::load(&root.join("typo.test.yaml")).unwrap_err().to_string();
    assert!(err.contains("typo.test.yaml") && err.contains("test \"typo\" (tests[1].expect.kep)"), "{err}");
    assert!(err.contains("unknown field `kep`") && err.contains("(line 8)"), "{err}");

    let file = policytest::load(&root.join("unknown.test.yaml")).unwrap();
    let err =
        policytest::run_suite(&root.join("unknown.test.yaml"), &file, support::module(), None).unwrap_err().to_string();
    assert!(err.contains("test \"who\" (tests[0]).expect.kept: \"zzz\" names no input record"), "{err}");

    let (_dir2, root2) = scratch(&[(
        "empty.test.yaml",
        "policy: soc2-audit.yaml\ntests:\n  - name: vacuous\n    input: {spans: [{name: a}]}\n    expect: {}\n",
    )]);
    let err = policytest::load(&root2.join("empty.test.yaml")).unwrap_err().to_string();
    assert!(err.contains("test \"vacuous\" (tests[0].expect)") && err.contains("could never fail"), "{err}");

    for (name, expect, needle) in [
        ("any-error", "{configure_error: ''}", "would match any error"),
        ("mixed", "{configure_error: x, kept: [a]}", "cannot be combined"),
    ] {
        let text = format!(
            "policy: soc2-audit.yaml\ntests:\n  - name: {name}\n    input: {{spans: [{{name: a}}]}}\n    expect: {expect}\n"
        );
        let path = root2.join(format!("{name}.test.yaml"));
        std::fs::write(&path, text).unwrap();
        let err = policytest::load(&path).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }

    let out = otel_audit(&["test", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a malformed file fails the run");
    assert!(stdout(&out).contains("ERROR "), "{}", stdout(&out));
}

#[test]
fn attribute_expectations_fail_when_nothing_was_kept() {
    let vacuous = "policy: soc2-audit.yaml\ntests:\n  - name: dropped\n    input: {spans: [{name: a}]}\n    expect:\n      attributes: [{present: [enduser.id]}]\n";
    let (_dir, root) = scratch(&[("vacuous.test.yaml", vacuous)]);
    let report = run(&root.join("vacuous.test.yaml"));
    assert_eq!(report.results[0].failures, vec!["attributes[0]: no record was kept, so no attribute could be checked"]);
}

#[test]
fn uncovered_rules_are_listed_and_can_fail_the_run() {
    let partial = "policy: soc2-audit.yaml\ntests:\n  - name: only logs\n    input: {logs: [{name: l, attributes: {audit.action: x}}]}\n    expect: {kept: [l], violations: 1}\n";
    let (_dir, root) = scratch(&[("partial.test.yaml", partial)]);
    let report = run(&root.join("partial.test.yaml"));
    let missed: Vec<&str> = report.unexercised().iter().map(|r| r.id.as_str()).collect();
    assert!(missed.contains(&"filter.spans.include") && !missed.contains(&"filter.logs.include"), "{missed:?}");
    let out = otel_audit(&["test", root.to_str().unwrap(), "--coverage"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("not exercised: filter.spans.include"), "{}", stdout(&out));
    let gated = otel_audit(&["test", root.to_str().unwrap(), "--fail-uncovered"]);
    assert_eq!(gated.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gated.stderr).contains("rules no test exercised"));
}

#[test]
fn otlp_json_input_and_a_candidate_policy_for_the_swap_gate() {
    let json = format!(
        "policy: soc2-audit.yaml\ntests:\n  - name: fixture\n    input: {{otlp_json: {}, signal: traces}}\n    expect: {{kept: [user.role.update, payment.refund], dropped: [\"GET /healthz\"], records: 2}}\n",
        support::fixture("mixed-traces.json").display()
    );
    let (_dir, root) = scratch(&[("json.test.yaml", &json)]);
    let path = root.join("json.test.yaml");
    assert!(run(&path).results[0].passed(), "{:?}", run(&path).results[0].failures);
    // The hot-swap gate runs the same tests against a candidate policy text.
    let file = policytest::load(&path).unwrap();
    let keep_nothing = "filter:\n  spans:\n    include:\n      match_type: strict\n      span_names: [nothing]\n";
    let report = policytest::run_suite(&path, &file, support::module(), Some(keep_nothing)).unwrap();
    assert!(!report.results[0].passed(), "a candidate that drops audit records fails the gate");
}

const FIELDS_POLICY: &str = r#"
transform:
  trace_statements:
    - set(span.name, "renamed") where span.name == "a"
    - set(span.status.code, STATUS_CODE_ERROR) where span.name == "renamed"
    - set(resource.attributes["r"], "x")
    - set(scope.attributes["s"], 1)
  log_statements:
    - set(log.body, "replaced") where log.severity_number == SEVERITY_NUMBER_WARN
filter:
  traces:
    spanevent:
      - 'name == "noise"'
"#;

const FIELDS: &str = r#"
policy: fields.yaml
tests:
  - name: span fields, events and the resource and scope attributes
    input:
      spans:
        - name: a
          parent_span_id: "0102030405060708"
          trace_state: k=v
          attributes: {a: 1, b: 2}
          events: [{name: noise}, {name: kept, attributes: {e: true}}]
    expect:
      fields:
        - record: a
          equal: {name: renamed, status.code: 2, trace_state: k=v, parent_span_id: "0102030405060708", events: [kept]}
      attributes:
        - {record: a, keys: [a, b], count: 2}
        - {record: a, event: kept, equal: {e: true}}
        - {of: resource, keys: [r], equal: {r: x}}
        - {of: scope, equal: {s: 1}}
  - name: log bodies, typed, and a body that is absent
    input:
      logs:
        - {name: warn, severity: WARN, body: {m: 1}}
        - {name: info, severity: INFO}
    expect:
      fields:
        - {record: warn, equal: {body: replaced, severity_number: 13, severity_text: WARN}}
        - {record: info, absent: [body]}
  - name: wrong
    input:
      spans: [{name: a, events: [{name: kept, attributes: {e: true}}]}]
    expect:
      fields:
        - equal: {name: a, events: []}
      attributes:
        - {keys: [z], count: 3}
        - {event: nope, present: [e]}
        - {of: resource, equal: {r: y}}
"#;

#[test]
fn fields_events_and_resource_and_scope_attributes_are_checked() {
    let (_dir, root) = scratch(&[("fields.test.yaml", FIELDS), ("fields.yaml", FIELDS_POLICY)]);
    let report = run(&root.join("fields.test.yaml"));
    let by_name = |n: &str| &report.results.iter().find(|r| r.name == n).unwrap().failures;
    assert_eq!(by_name("span fields, events and the resource and scope attributes"), &Vec::<String>::new());
    assert_eq!(by_name("log bodies, typed, and a body that is absent"), &Vec::<String>::new());
    let wrong = by_name("wrong");
    let want = [
        "record \"a\": field name\n  expected: \"a\"\n  got:      \"renamed\"",
        "record \"a\": field events\n  expected: []\n  got:      [\"kept\"]",
        "record \"a\": keys\n  expected: [\"z\"]\n  got:      []",
        "record \"a\": expected 3 attributes, got 0: []",
        "record \"a\": has no event \"nope\"",
        "resource of record \"a\": r\n  expected: \"y\"\n  got:      \"x\"",
    ];
    for w in want {
        assert!(wrong.iter().any(|f| f == w), "missing {w:?} in {wrong:#?}");
    }
    assert_eq!(wrong.len(), want.len(), "{wrong:#?}");

    let unknown = FIELDS.replace("equal: {name: a, events: []}", "equal: {colour: red}");
    let (_dir2, root2) = scratch(&[("fields.test.yaml", &unknown), ("fields.yaml", FIELDS_POLICY)]);
    let path = root2.join("fields.test.yaml");
    let err = policytest::run_suite(&path, &policytest::load(&path).unwrap(), support::module(), None).unwrap_err();
    assert!(err.to_string().contains("unknown field \"colour\"; traces records have name, kind"), "{err}");
}

#[test]
fn unreachable_rules_are_listed_apart_and_may_not_be_hit() {
    let policy = "transform:\n  error_mode: ignore\n  trace_statements:\n    - set(span.attributes[\"x\"], Len(span.attributes[\"y\"]))\n";
    let tests = |why: &str, input: &str| {
        format!(
            "policy: p.yaml\nunreachable:\n  transform.error_mode: {why}\ntests:\n  - name: t\n    input: {{spans: [{{name: a, attributes: {input}}}]}}\n    expect: {{kept: [a]}}\n"
        )
    };
    // Len of a string cannot fail here: the error rule is declared unreachable.
    let (_dir, root) = scratch(&[("u.test.yaml", &tests("y is always a string", "{y: abc}")), ("p.yaml", policy)]);
    let report = run(&root.join("u.test.yaml"));
    assert!(report.unexercised().is_empty(), "{:?}", report.unexercised().iter().map(|r| &r.id).collect::<Vec<_>>());
    let out = otel_audit(&["test", root.join("u.test.yaml").to_str().unwrap(), "--fail-uncovered"]);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("coverage: 1/1 rules exercised, 1 declared unreachable"), "{}", stdout(&out));
    assert!(stdout(&out).contains("    unreachable: transform.error_mode  (y is always a string)"), "{}", stdout(&out));

    // A test that does hit it (Len of an int fails) makes the declaration false: an error of the file.
    let (_dir, root) = scratch(&[("u.test.yaml", &tests("y is always a string", "{y: 1}")), ("p.yaml", policy)]);
    let path = root.join("u.test.yaml");
    let err = policytest::run_suite(&path, &policytest::load(&path).unwrap(), support::module(), None).unwrap_err();
    assert!(err.to_string().contains("unreachable.transform.error_mode: declared unreachable, but the tests hit it"));

    // So is naming a rule the policy does not have, or giving no reason.
    let text = tests("x", "{y: abc}").replace("transform.error_mode", "transform.nope");
    let (_dir, root) = scratch(&[("u.test.yaml", &text), ("p.yaml", policy)]);
    let path = root.join("u.test.yaml");
    let err = policytest::run_suite(&path, &policytest::load(&path).unwrap(), support::module(), None).unwrap_err();
    assert!(err.to_string().contains("the policy has no such rule"), "{err}");
    let (_dir, root) = scratch(&[("u.test.yaml", &tests("''", "{y: abc}")), ("p.yaml", policy)]);
    let err = policytest::load(&root.join("u.test.yaml")).unwrap_err();
    assert!(err.to_string().contains("say why no input can hit the rule"), "{err}");
}

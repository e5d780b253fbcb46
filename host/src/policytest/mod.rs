//! Policy unit tests (`otel-audit test`): YAML test files beside policies,
//! run against the real component through the same runtime path the server
//! uses, so a filter that would silently drop what an auditor needs fails
//! here instead of in production.
//!
//! A test file names its policy (relative to itself) and holds named tests:
//! input records in a compact form (or an OTLP/JSON file), an optional
//! context, and expectations (kept/dropped records, attributes present,
//! absent, equal or matching on kept records, counts, or a configure error).
//! [`run_suite`] is the library entry point; the hot-swap gate calls it with
//! a candidate module and policy.

mod expect;
mod file;
mod input;
mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use crate::otlp::Signal;
use crate::runtime::{Module, Rule, Runtime, RuntimeError};

use expect::check;
use file::file_error;
pub use file::{
    AttributeExpect, AttributesOf, ContextSpec, EventSpec, Expect, FieldExpect, InputSpec, LogSpec, RecordRef,
    ScopeSpec, SpanSpec, StatusSpec, TestCase, TestFile, TestFileError, load,
};
use input::{build_input, context};
pub use report::{render_junit, render_text, totals};

/// The file name suffix test files are discovered by.
pub const TEST_FILE_SUFFIX: &str = ".test.yaml";

/// The outcome of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Each unmet expectation; empty when the test passed.
    pub failures: Vec<String>,
    /// Rule ids the test's batch hit.
    pub rules_hit: Vec<String>,
    /// Wall time.
    pub duration: Duration,
}

impl TestResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of one test file.
#[derive(Debug, Clone)]
pub struct SuiteReport {
    /// The test file.
    pub file: PathBuf,
    /// The policy it tests.
    pub policy: PathBuf,
    /// The policy's rules (from the last successful configure).
    pub rules: Vec<Rule>,
    /// Hits per rule summed over all tests.
    pub hits: Vec<u64>,
    /// Per test.
    pub results: Vec<TestResult>,
    /// Rules the file declares no input can hit, with the reason.
    pub unreachable: Vec<(String, String)>,
}

impl SuiteReport {
    /// Rules no test hit (but those the file declares unreachable).
    pub fn unexercised(&self) -> Vec<&Rule> {
        self.rules
            .iter()
            .zip(&self.hits)
            .filter(|(r, h)| **h == 0 && !self.unreachable.iter().any(|(id, _)| *id == r.id))
            .map(|(r, _)| r)
            .collect()
    }
}

/// Finds test files: files as given, directories searched (recursively)
/// for `*.test.yaml`, sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, TestFileError> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found)?;
        } else if path.exists() {
            found.push(path.clone());
        } else {
            return Err(file_error(path, "(path)", "no such file or directory"));
        }
    }
    found.sort();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), TestFileError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, "(directory)", e.to_string()))?;
    for entry in entries {
        let path = entry.map_err(|e| file_error(dir, "(directory)", e.to_string()))?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if path.to_string_lossy().ends_with(TEST_FILE_SUFFIX) {
            found.push(path);
        }
    }
    Ok(())
}

/// The outcome of running many test files.
#[derive(Debug, Default)]
pub struct Run {
    /// One per file that loaded.
    pub reports: Vec<SuiteReport>,
    /// Files that could not be used.
    pub errors: Vec<TestFileError>,
}

impl Run {
    /// Failed tests plus unusable files.
    pub fn failed(&self) -> usize {
        totals(&self.reports).1 + self.errors.len()
    }

    /// `policy: rule id` of every rule no test exercised.
    pub fn uncovered(&self) -> Vec<String> {
        self.reports
            .iter()
            .flat_map(|r| r.unexercised().into_iter().map(move |rule| format!("{}: {}", r.policy.display(), rule.id)))
            .collect()
    }
}

/// Loads and runs each test file on its component: `module` if given, else
/// the file's `module:` (relative to it), else `default_module`. Each
/// component is loaded once. A file that cannot be used is an error of the
/// run, not of the call; a component that does not load is.
pub fn run_files(
    runtime: &Runtime,
    files: &[PathBuf],
    module: Option<&Path>,
    default_module: &Path,
) -> Result<Run, RuntimeError> {
    let mut modules: HashMap<PathBuf, Module> = HashMap::new();
    let mut run = Run::default();
    for path in files {
        let file = match load(path) {
            Ok(file) => file,
            Err(e) => {
                run.errors.push(e);
                continue;
            }
        };
        let module_path = match (module, &file.module) {
            (Some(m), _) => m.to_owned(),
            (None, Some(m)) => path.parent().unwrap_or(Path::new(".")).join(m),
            (None, None) => default_module.to_owned(),
        };
        if !modules.contains_key(&module_path) {
            modules.insert(module_path.clone(), runtime.load(&module_path)?);
        }
        match run_suite(path, &file, &modules[&module_path], None) {
            Ok(report) => run.reports.push(report),
            Err(e) => run.errors.push(e),
        }
    }
    Ok(run)
}

/// Runs every test of a loaded file against `module`. `policy_text`
/// replaces the file's policy (the hot-swap gate tests a candidate this
/// way); tests naming their own policy keep it.
pub fn run_suite(
    path: &Path,
    file: &TestFile,
    module: &Module,
    policy_text: Option<&str>,
) -> Result<SuiteReport, TestFileError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let policy_path = base.join(&file.policy);
    let default_policy = match policy_text {
        Some(text) => text.to_owned(),
        None => std::fs::read_to_string(&policy_path)
            .map_err(|e| file_error(path, "policy", format!("cannot read {}: {e}", policy_path.display())))?,
    };
    let secrets: Vec<(String, Vec<u8>)> =
        file.secrets.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())).collect();
    let mut report = SuiteReport {
        file: path.to_owned(),
        policy: policy_path,
        rules: Vec::new(),
        hits: Vec::new(),
        results: Vec::new(),
        unreachable: file.unreachable.iter().map(|(id, why)| (id.clone(), why.clone())).collect(),
    };
    for (i, case) in file.tests.iter().enumerate() {
        let place = format!("test {:?} (tests[{i}])", case.name);
        let policy = match &case.policy {
            Some(own) => std::fs::read_to_string(base.join(own)).map_err(|e| {
                file_error(path, format!("{place}.policy"), format!("cannot read {}: {e}", own.display()))
            })?,
            None => default_policy.clone(),
        };
        let started = Instant::now();
        let run = run_case(path, &place, case, module, &policy, &secrets)?;
        let mut result = TestResult {
            name: case.name.clone(),
            failures: run.failures,
            rules_hit: Vec::new(),
            duration: started.elapsed(),
        };
        if let Some((rules, hits)) = run.coverage {
            // Coverage is of the file's policy; a test with its own policy
            // does not count towards it.
            if case.policy.is_none() {
                if report.rules.is_empty() {
                    report.hits = vec![0; rules.len()];
                    report.rules = rules.clone();
                }
                for (total, hit) in report.hits.iter_mut().zip(&hits) {
                    *total += hit;
                }
            }
            result.rules_hit = rules.iter().zip(&hits).filter(|(_, h)| **h > 0).map(|(r, _)| r.id.clone()).collect();
        }
        report.results.push(result);
    }
    // A rule declared unreachable must exist (in the file's own policy; a
    // candidate's rules may differ) and must not have been hit.
    if !report.rules.is_empty() {
        for (id, _) in &report.unreachable {
            match report.rules.iter().position(|r| r.id == *id) {
                None if policy_text.is_some() => {}
                None => {
                    return Err(file_error(
                        path,
                        format!("unreachable.{id}"),
                        "the policy has no such rule; its rules: ".to_owned()
                            + &report.rules.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "),
                    ));
                }
                Some(at) if report.hits[at] > 0 => {
                    return Err(file_error(
                        path,
                        format!("unreachable.{id}"),
                        format!("declared unreachable, but the tests hit it {} time(s)", report.hits[at]),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(report)
}

struct CaseRun {
    failures: Vec<String>,
    coverage: Option<(Vec<Rule>, Vec<u64>)>,
}

fn run_case(
    path: &Path,
    place: &str,
    case: &TestCase,
    module: &Module,
    policy: &str,
    secrets: &[(String, Vec<u8>)],
) -> Result<CaseRun, TestFileError> {
    let fail = |message: String| Ok(CaseRun { failures: vec![message], coverage: None });
    let mut instance = match module.instantiate() {
        Ok(instance) => instance,
        Err(e) => return fail(format!("cannot instantiate the component: {e}")),
    };
    let info = match (&case.expect.configure_error, instance.configure(policy, secrets)) {
        (Some(needle), Err(RuntimeError::Policy(message))) => {
            return if message.contains(needle.as_str()) {
                Ok(CaseRun { failures: Vec::new(), coverage: None })
            } else {
                fail(format!("expected a configure error containing {needle:?}\n  got: {message}"))
            };
        }
        (Some(needle), Ok(_)) => {
            return fail(format!("expected a configure error containing {needle:?}, but the policy configured"));
        }
        (_, Err(e)) => return fail(format!("the policy failed to configure: {e}")),
        (None, Ok(info)) => info,
    };
    let input = case
        .input
        .as_ref()
        .ok_or_else(|| file_error(path, format!("{place}.input"), "missing: what records does the test send?"))?;
    let batch = build_input(path, place, input)?;
    let ctx = context(path, place, &case.context)?;
    let result = match batch.signal {
        Signal::Traces => instance.process_traces(&batch.request, &ctx),
        Signal::Logs => instance.process_logs(&batch.request, &ctx),
    };
    let output = match result {
        Ok(output) => output,
        Err(e) => return fail(format!("the component refused the batch: {e}")),
    };
    let failures = check(path, place, &case.expect, &batch, &output)?;
    Ok(CaseRun { failures, coverage: Some((info.rules, output.stats.rule_hits)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{component, repo};

    /// A test file beside nothing, testing the shipped SOC 2 policy.
    fn suite(dir: &Path, tests: &str) -> PathBuf {
        let policy = repo().join("collector-config/policies/soc2-audit.yaml");
        let path = dir.join("soc2.test.yaml");
        std::fs::write(&path, format!("policy: {}\ntests:\n{tests}", policy.display())).unwrap();
        path
    }

    #[test]
    fn a_suite_runs_each_test_on_the_component_and_counts_rule_hits() {
        let dir = tempfile::tempdir().unwrap();
        let path = suite(
            dir.path(),
            r#"
  - name: role changes are kept, health checks dropped
    input:
      spans:
        - {name: role, attributes: {enduser.id: a, audit.action: role_update, audit.result: success}}
        - {name: GET /healthz}
    expect: {kept: [role], dropped: [GET /healthz], records: 1}
  - name: wrongly expects a health check kept
    input: {spans: [{name: GET /healthz}]}
    expect: {kept: [GET /healthz]}
"#,
        );
        let report = run_suite(&path, &load(&path).unwrap(), &component(), None).unwrap();
        assert_eq!(report.results.len(), 2);
        assert!(report.results[0].passed(), "{:?}", report.results[0].failures);
        assert!(!report.results[1].passed());
        let failure = &report.results[1].failures[0];
        assert!(failure.contains("GET /healthz") && failure.contains("kept"), "{failure}");
        assert_eq!(report.rules.len(), report.hits.len());
        assert!(report.hits.iter().any(|h| *h > 0), "the filter rule was hit");
        assert!(!report.unexercised().is_empty(), "two tests do not exercise every rule");
    }

    #[test]
    fn a_candidate_policy_replaces_the_files_own() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            suite(dir.path(), "  - name: any span is kept\n    input: {spans: [{name: x}]}\n    expect: {kept: [x]}\n");
        let file = load(&path).unwrap();
        assert!(!run_suite(&path, &file, &component(), None).unwrap().results[0].passed());
        let keep_all = "audit:\n  pipeline: everything\n";
        let report = run_suite(&path, &file, &component(), Some(keep_all)).unwrap();
        assert!(report.results[0].passed(), "{:?}", report.results[0].failures);
    }

    #[test]
    fn discovery_finds_test_files_in_directories_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["b.test.yaml", "sub/a.test.yaml", "policy.yaml", "notes.test.yml"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found = discover(&[dir.path().to_owned()]).unwrap();
        assert_eq!(found, [dir.path().join("b.test.yaml"), dir.path().join("sub/a.test.yaml")]);
        let missing = discover(&[dir.path().join("nope.test.yaml")]).unwrap_err();
        assert_eq!((missing.place.as_str(), missing.message.as_str()), ("(path)", "no such file or directory"));
    }
}

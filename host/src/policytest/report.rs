//! Rendering results: text for people (with coverage) and JUnit XML for CI.

use std::fmt::Write as _;

use super::SuiteReport;
use super::file::TestFileError;

/// Renders reports as text: a PASS/FAIL line per test, failures with what
/// was expected and what came out, with `coverage` the rules each test hit
/// and those no test hit, and the final `N passed, N failed` line.
pub fn render_text(reports: &[SuiteReport], errors: &[TestFileError], coverage: bool) -> String {
    let mut out = String::new();
    for report in reports {
        let _ = writeln!(out, "{} (policy {})", report.file.display(), report.policy.display());
        for result in &report.results {
            let verdict = if result.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  {verdict}  {}", result.name);
            for failure in &result.failures {
                for (n, line) in failure.lines().enumerate() {
                    let _ = writeln!(out, "        {}{line}", if n == 0 { "" } else { "  " });
                }
            }
            if coverage && !result.rules_hit.is_empty() {
                let _ = writeln!(out, "        rules hit: {}", result.rules_hit.join(", "));
            }
        }
        if coverage {
            let missed = report.unexercised();
            let unreachable = report.unreachable.len();
            let _ = writeln!(
                out,
                "  coverage: {}/{} rules exercised{}",
                report.rules.len() - missed.len() - unreachable,
                report.rules.len() - unreachable,
                if unreachable > 0 { format!(", {unreachable} declared unreachable") } else { String::new() }
            );
            for rule in missed {
                let _ = writeln!(out, "    not exercised: {}  ({})", rule.id, rule.description);
            }
            for (id, why) in &report.unreachable {
                let _ = writeln!(out, "    unreachable: {id}  ({why})");
            }
        }
    }
    for error in errors {
        let _ = writeln!(out, "ERROR {error}");
    }
    let (passed, failed) = totals(reports);
    let _ = writeln!(out, "{passed} passed, {} failed", failed + errors.len());
    out
}

/// Passed and failed test counts.
pub fn totals(reports: &[SuiteReport]) -> (usize, usize) {
    let all = reports.iter().flat_map(|r| &r.results);
    let passed = all.clone().filter(|r| r.passed()).count();
    (passed, all.count() - passed)
}

/// Renders reports as JUnit XML: a test suite per file, a test case per
/// test, a failure per failed test, an error per unusable file.
pub fn render_junit(reports: &[SuiteReport], errors: &[TestFileError]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase as JunitCase, TestCaseStatus, TestSuite};
    let mut junit = Report::new("otel-audit policy tests");
    for report in reports {
        let mut suite = TestSuite::new(report.file.display().to_string());
        for result in &report.results {
            let status = if result.passed() {
                TestCaseStatus::success()
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(
                    result.failures.first().cloned().unwrap_or_default().lines().next().unwrap_or_default().to_owned(),
                );
                status.set_description(result.failures.join("\n"));
                status
            };
            let mut case = JunitCase::new(result.name.clone(), status);
            case.set_classname(report.policy.display().to_string());
            case.set_time(result.duration);
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    for error in errors {
        let mut suite = TestSuite::new(error.file.display().to_string());
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(error.to_string());
        suite.add_test_case(JunitCase::new(error.place.clone(), status));
        junit.add_test_suite(suite);
    }
    junit.to_string().unwrap_or_else(|e| format!("<!-- cannot render JUnit XML: {e} -->\n"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::policytest::TestResult;
    use crate::runtime::Rule;

    fn report() -> SuiteReport {
        let result = |name: &str, failures: &[&str]| TestResult {
            name: name.into(),
            failures: failures.iter().map(|f| f.to_string()).collect(),
            rules_hit: vec!["filter.spans.include".into()],
            duration: Duration::from_millis(3),
        };
        let rule = |id: &str| Rule { id: id.into(), description: format!("{id} rule") };
        SuiteReport {
            file: PathBuf::from("p.test.yaml"),
            policy: PathBuf::from("p.yaml"),
            rules: vec![rule("filter.spans.include"), rule("redaction")],
            hits: vec![2, 0],
            results: vec![
                result("keeps audit spans", &[]),
                result("drops health checks", &["expected 0 chained records, got 1"]),
            ],
            unreachable: Vec::new(),
        }
    }

    #[test]
    fn text_shows_each_test_its_failures_coverage_and_totals() {
        let text = render_text(&[report()], &[], true);
        assert!(text.contains("PASS  keeps audit spans"), "{text}");
        assert!(
            text.contains("FAIL  drops health checks") && text.contains("expected 0 chained records, got 1"),
            "{text}"
        );
        assert!(text.contains("redaction"), "the rule no test hit is named:\n{text}");
        assert!(text.trim_end().ends_with("1 passed, 1 failed"), "{text}");
        assert_eq!(totals(&[report()]), (1, 1));
    }

    #[test]
    fn junit_has_a_case_per_test_and_per_unusable_file() {
        let error = TestFileError { file: "bad.test.yaml".into(), place: "tests[0]".into(), message: "broken".into() };
        let xml = render_junit(&[report()], &[error]);
        assert_eq!(xml.matches("<testcase").count(), 3, "{xml}");
        assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
        assert!(xml.contains("broken"), "{xml}");
    }
}

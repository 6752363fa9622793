//! The metric contract: what exists when, the text format, and docs/METRICS.md in step.

use super::*;
use crate::journal::{Entry, Event, Facts};
use crate::state::State;
use crate::testutil::{config, t};

const JOBS: &str = r#"
[job.db-daily]
type = "backup"
source = "db"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.files-daily]
type = "backup"
source = "files"
schedule = "0 3 * * *"
time_zone = "UTC"

[job.verify]
type = "verify"
repository = "main"
schedule = "0 4 * * *"
time_zone = "UTC"
restore_test = true
"#;

fn e(at: &str, event: Event) -> Entry {
    Entry { at: t(at), event }
}

fn started(at: &str, job: &str, scheduled: &str) -> Entry {
    e(
        at,
        Event::AttemptStarted {
            job: job.into(),
            scheduled: t(scheduled),
            attempt: 1,
        },
    )
}

fn finished(at: &str, job: &str, scheduled: &str, outcome: Outcome, facts: Facts) -> Vec<Entry> {
    vec![
        e(
            at,
            Event::AttemptFinished {
                job: job.into(),
                scheduled: t(scheduled),
                attempt: 1,
                outcome,
                transient: false,
                message: None,
                produced: None,
                facts: Box::new(facts),
            },
        ),
        e(
            at,
            Event::RunFinished {
                job: job.into(),
                scheduled: t(scheduled),
                outcome,
                peer: None,
            },
        ),
    ]
}

fn backup(bytes: u64, seconds: f64) -> Facts {
    Facts {
        logical_bytes: Some(bytes),
        added_bytes: Some(bytes / 4),
        stored_bytes: Some(bytes / 5),
        files: Some(10),
        seconds: Some(seconds),
        ..Facts::default()
    }
}

/// `name{labels} value` lines of `text` for metric `name`.
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .collect()
}

fn value(text: &str, name: &str, label: &str) -> Option<f64> {
    series(text, name)
        .into_iter()
        .find(|l| l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn loaded(at: &str) -> Entry {
    e(
        at,
        Event::ConfigLoaded {
            path: "/etc/arsip/arsip.toml".into(),
            sources: vec!["db".into(), "files".into()],
        },
    )
}

#[test]
fn a_source_that_never_succeeded_has_no_success_series_but_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), JOBS);
    let mut entries = vec![loaded("2026-12-01T00:00:00Z")];
    entries.push(started(
        "2026-12-01T02:00:00Z",
        "db-daily",
        "2026-12-01T02:00:00Z",
    ));
    entries.extend(finished(
        "2026-12-01T02:00:05Z",
        "db-daily",
        "2026-12-01T02:00:00Z",
        Outcome::Failed,
        Facts::default(),
    ));
    let s = State::new("d1".into(), t("2026-12-01T00:00:00Z"), &entries);
    let text = render(&c, &s, &Extra::default());
    let db = r#"source="db""#;
    assert_eq!(value(&text, "arsip_source_configured", db), Some(1.0));
    assert_eq!(
        value(&text, "arsip_source_configured_timestamp_seconds", db),
        Some(seconds(t("2026-12-01T00:00:00Z")))
    );
    assert!(
        series(&text, "arsip_source_backup_last_success_timestamp_seconds").is_empty(),
        "{text}"
    );
    assert_eq!(
        value(&text, "arsip_source_backup_last_run_ok", db),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "arsip_source_backup_consecutive_failures", db),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "arsip_source_backup_last_attempt_timestamp_seconds",
            db
        ),
        Some(seconds(t("2026-12-01T02:00:00Z")))
    );
    // `files` never ran: configured, and nothing about runs.
    let files = r#"source="files""#;
    assert_eq!(value(&text, "arsip_source_configured", files), Some(1.0));
    assert_eq!(value(&text, "arsip_source_backup_last_run_ok", files), None);
    assert_eq!(
        value(
            &text,
            "arsip_job_runs_total",
            r#"job="db-daily",result="failed""#
        ),
        Some(1.0)
    );
    // The job never handled its next run: it is due at 02:00 on the day the daemon started.
    assert_eq!(
        value(
            &text,
            "arsip_job_next_run_timestamp_seconds",
            r#"job="files-daily""#
        ),
        Some(seconds(t("2026-12-01T03:00:00Z")))
    );
    assert_eq!(
        value(
            &text,
            "arsip_job_next_run_timestamp_seconds",
            r#"job="db-daily""#
        ),
        Some(seconds(t("2026-12-02T02:00:00Z")))
    );
}

#[test]
fn a_failure_after_a_success_keeps_the_success_and_reports_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), JOBS);
    let mut entries = vec![loaded("2026-11-20T00:00:00Z")];
    // Ten days of backups of 100 MB in 60 s, then one of 200 MB in 200 s, then a failure.
    for d in 1..=11 {
        let day = format!("2026-11-{:02}", 20 + d - 1);
        let at = format!("{day}T02:00:00Z");
        let (bytes, secs) = if d == 11 {
            (200_000_000, 200.0)
        } else {
            (100_000_000, 60.0)
        };
        entries.push(started(&at, "db-daily", &at));
        entries.extend(finished(
            &format!("{day}T02:05:00Z"),
            "db-daily",
            &at,
            Outcome::Ok,
            backup(bytes, secs),
        ));
    }
    let s = State::new("d1".into(), t("2026-11-20T00:00:00Z"), &entries);
    let text = render(&c, &s, &Extra::default());
    let db = r#"source="db""#;
    assert_eq!(
        value(&text, "arsip_source_backup_size_ratio", db),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "arsip_source_backup_duration_ratio", db),
        Some(200.0 / 60.0)
    );
    assert_eq!(
        value(&text, "arsip_source_backup_last_logical_bytes", db),
        Some(2e8)
    );
    assert_eq!(
        value(&text, "arsip_source_backup_last_dedup_ratio", db),
        Some(4.0)
    );
    let success = seconds(t("2026-11-30T02:05:00Z"));
    assert_eq!(
        value(
            &text,
            "arsip_source_backup_last_success_timestamp_seconds",
            db
        ),
        Some(success)
    );

    entries.push(started(
        "2026-12-01T02:00:00Z",
        "db-daily",
        "2026-12-01T02:00:00Z",
    ));
    let running = State::new("d1".into(), t("2026-11-20T00:00:00Z"), &entries);
    let text = render(&c, &running, &Extra::default());
    assert_eq!(
        value(
            &text,
            "arsip_source_backup_running_since_timestamp_seconds",
            db
        ),
        Some(seconds(t("2026-12-01T02:00:00Z")))
    );
    assert!(series(&text, "arsip_job_running_since_timestamp_seconds").len() == 1);

    entries.extend(finished(
        "2026-12-01T02:01:00Z",
        "db-daily",
        "2026-12-01T02:00:00Z",
        Outcome::Failed,
        Facts::default(),
    ));
    let s = State::new("d1".into(), t("2026-11-20T00:00:00Z"), &entries);
    let text = render(&c, &s, &Extra::default());
    assert_eq!(
        value(&text, "arsip_source_backup_last_run_ok", db),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "arsip_source_backup_last_success_timestamp_seconds",
            db
        ),
        Some(success),
        "a failure moves no success"
    );
    assert!(series(&text, "arsip_source_backup_running_since_timestamp_seconds").is_empty());
    assert_eq!(
        value(&text, "arsip_job_last_run_ok", r#"job="db-daily""#),
        Some(0.0)
    );
}

#[test]
fn verification_and_restore_tests_are_reported_per_repository_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), JOBS);
    let mut entries = vec![loaded("2026-12-01T00:00:00Z")];
    entries.push(started(
        "2026-12-01T04:00:00Z",
        "verify",
        "2026-12-01T04:00:00Z",
    ));
    let facts = Facts {
        damaged_objects: Some(2),
        restore_tests: vec![crate::journal::RestoreTestFact {
            kind: "pg-physical".into(),
            ok: false,
            rto_seconds: 93.5,
        }],
        ..Facts::default()
    };
    entries.extend(finished(
        "2026-12-01T04:30:00Z",
        "verify",
        "2026-12-01T04:00:00Z",
        Outcome::Failed,
        facts,
    ));
    let s = State::new("d1".into(), t("2026-12-01T00:00:00Z"), &entries);
    let text = render(&c, &s, &Extra::default());
    assert_eq!(
        value(&text, "arsip_verify_last_status", r#"repo="main""#),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "arsip_repository_damaged_objects", r#"repo="main""#),
        Some(2.0)
    );
    let k = r#"repo="main",kind="pg-physical""#;
    assert_eq!(value(&text, "arsip_restore_test_last_ok", k), Some(0.0));
    assert_eq!(
        value(&text, "arsip_restore_test_rto_seconds", k),
        Some(93.5)
    );
}

#[test]
fn every_series_is_in_the_contract_with_help_and_type_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), JOBS);
    let s = State::new(
        "d1".into(),
        t("2026-12-01T00:00:00Z"),
        &[loaded("2026-12-01T00:00:00Z")],
    );
    let text = render(&c, &s, &Extra { auth_failures: 3 });
    let mut seen = std::collections::BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(seen.insert(name.to_string()), "TYPE twice for {name}");
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let name = l.split(['{', ' ']).next().unwrap();
        assert!(
            METRICS.iter().any(|m| m.name == name),
            "{name} is not in the contract"
        );
        assert!(seen.contains(name), "{name} before its TYPE");
    }
    assert_eq!(value(&text, "arsip_api_auth_failures_total", ""), Some(3.0));
    assert!(text.contains(&format!(
        r#"arsip_build_info{{version="{}",contract="1"}} 1"#,
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
}

#[test]
fn docs_metrics_md_carries_the_contract() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/METRICS.md"
    ))
    .unwrap();
    let table = contract_markdown();
    assert!(
        doc.contains(&table),
        "docs/METRICS.md is out of step with the contract; its table must read:\n{table}"
    );
    assert!(doc.contains(&format!("Contract version: {CONTRACT_VERSION}")));
}

#[test]
fn the_rules_file_names_only_metrics_of_the_contract() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/arsip-rules.yml"
    ))
    .unwrap();
    let mut named = std::collections::BTreeSet::new();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("arsip_") {
            named.insert(word.to_string());
        }
    }
    assert!(!named.is_empty());
    for n in &named {
        assert!(
            METRICS.iter().any(|m| m.name == n),
            "arsip-rules.yml names {n}, which arsip does not export"
        );
    }
}

fn promtool(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    let mut child = std::process::Command::new(arsip_testkit::promtool())
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn the_rules_pass_promtool_and_every_rule_is_tested_firing_and_clearing() {
    promtool(&["check", "rules", "arsip-rules.yml"], None);
    promtool(&["test", "rules", "arsip-rules.test.yml"], None);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    let rules = std::fs::read_to_string(format!("{dir}/arsip-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(format!("{dir}/arsip-rules.test.yml")).unwrap();
    let names: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(names.len() >= 13, "{names:?}");
    for name in names {
        // The evaluations of this rule: each `alertname:` line, then its `exp_alerts`.
        let lines: Vec<&str> = tests.lines().map(str::trim).collect();
        let (mut fires, mut clears) = (false, false);
        for (i, l) in lines.iter().enumerate() {
            if *l == format!("alertname: {name}") {
                match lines.get(i + 1) {
                    Some(&"exp_alerts: []") => clears = true,
                    Some(&"exp_alerts:") => fires = true,
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
        }
        assert!(
            fires && clears,
            "{name}: firing {fires}, clearing {clears} in arsip-rules.test.yml"
        );
    }
}

#[test]
fn the_rendered_metrics_pass_promtool_check_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), JOBS);
    let mut entries = vec![loaded("2026-12-01T00:00:00Z")];
    for d in 1..=5 {
        let at = format!("2026-12-0{d}T02:00:00Z");
        entries.push(started(&at, "db-daily", &at));
        entries.extend(finished(
            &at,
            "db-daily",
            &at,
            Outcome::Ok,
            backup(1000 * d, 1.0),
        ));
    }
    let s = State::new("d1".into(), t("2026-12-01T00:00:00Z"), &entries);
    let text = render(&c, &s, &Extra::default());
    let out = promtool(&["check", "metrics"], Some(&text));
    // Lint findings (e.g. a counter without _total) are printed even with exit 0.
    assert!(
        out.trim().is_empty(),
        "promtool check metrics: {out}\n{text}"
    );
}

//! The report from a made-up history: the 7-day rate counts failures and misses, the size
//! trend, storage since the last prune, and the monthly cost from the prices.

use super::*;
use crate::journal::{Entry, Facts};
use crate::testutil::{config, t};

const JOBS: &str = r#"
[repository.main.price]
per_gb_month = 0.02
per_1000_writes = 0.005
per_1000_reads = 0.0004
currency = "USD"

[job.db-daily]
type = "backup"
source = "db"
schedule = "0 2 * * *"
time_zone = "UTC"

[job.prune]
type = "prune"
repository = "main"
schedule = "0 5 * * 0"
time_zone = "UTC"
"#;

fn run(entries: &mut Vec<Entry>, job: &str, day: &str, outcome: Outcome, facts: Facts) {
    let at = t(&format!("{day}T02:00:00Z"));
    let end = t(&format!("{day}T02:10:00Z"));
    entries.extend(crate::testutil::run_entries(
        job, at, end, outcome, facts, None,
    ));
}

#[test]
fn the_report_counts_failures_against_the_rate_and_prices_the_storage() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), JOBS);
    let mut entries = Vec::new();
    let requests = arsip_ops::storage::metered::Usage {
        put: 2000,
        get: 10_000,
        ..Default::default()
    };
    for d in 1..=7 {
        let day = format!("2026-12-{d:02}");
        let outcome = if d == 5 { Outcome::Failed } else { Outcome::Ok };
        let facts = Facts {
            logical_bytes: Some(1_000_000_000 + d as u64 * 10_000_000),
            stored_bytes: Some(100_000_000),
            seconds: Some(60.0),
            requests: Some(requests),
            ..Facts::default()
        };
        run(
            &mut entries,
            "db-daily",
            &day,
            outcome,
            if d == 5 { Facts::default() } else { facts },
        );
    }
    let prune = Facts {
        repository_bytes: Some(50_000_000_000),
        ..Facts::default()
    };
    run(&mut entries, "prune", "2026-12-06", Outcome::Ok, prune);
    let s = State::new("d1".into(), t("2026-11-30T00:00:00Z"), &entries);
    let r = report(&c, &s, t("2026-12-07T12:00:00Z"));
    let db = r.sources.iter().find(|s| s.name == "db").unwrap();
    assert_eq!((db.ok_7d, db.runs_7d), (6, 7));
    assert_eq!(db.status, "ok");
    let trend = db.size_trend_bytes_per_day.unwrap();
    assert!((trend - 10_000_000.0).abs() < 1.0, "{trend}");
    // `files` has no job: never backed up, and listed first.
    assert_eq!(r.sources[0].name, "files");
    assert_eq!(r.sources[0].status, "never");
    let main = &r.repositories[0];
    // 50 GB at the prune plus the day-7 backup's 100 MB after it.
    assert_eq!(main.stored_bytes, Some(50_100_000_000));
    let cost = main.cost.as_ref().unwrap();
    assert!(
        (cost.storage_monthly - 50.1 * 0.02).abs() < 1e-9,
        "{cost:?}"
    );
    // Six measured backups: 12 000 writes and 60 000 reads.
    assert!(
        (cost.requests_monthly - (12.0 * 0.005 + 60.0 * 0.0004)).abs() < 1e-9,
        "{cost:?}"
    );
}

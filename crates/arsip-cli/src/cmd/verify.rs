//! `arsip verify [--rpo D] [--cycle D] [--row-drop PCT] [--restore-test] [--dbname CONN]`:
//! exit 0 when everything is good, 10 with warnings, 11 when something failed.

use anyhow::Result;
use arsip_ops::forget::parse_duration;
use arsip_ops::open::Access;
use arsip_ops::verify::{self, RestoreTest, Status, VerifyOptions, VerifyReport};

use crate::cli::VerifyArgs;
use crate::ctx::{human, Ctx, Render};
use crate::{exit, usage};

/// `1d2h`, `3h5m`, `4m10s`.
fn dur(secs: i64) -> String {
    let s = secs.max(0);
    if s >= 86_400 {
        format!("{}d{}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warnings => "WARN",
        Status::Failed => "FAIL",
    }
}

impl Render for VerifyReport {
    fn human(&self) -> String {
        let mut out = String::new();
        for s in &self.sources {
            out += &format!(
                "{:<4} {} {} on {} (writer {}): {} snapshot(s), newest {} stored {} ago (RPO {})\n",
                mark(s.status),
                s.kind,
                s.source,
                s.host,
                &s.writer[..8.min(s.writer.len())],
                s.snapshots,
                &s.newest[..8.min(s.newest.len())],
                dur(s.age_seconds),
                dur(s.rpo_seconds)
            );
            if let Some(w) = &s.wal {
                out += &format!(
                    "     WAL {}: newest {}{}\n",
                    w.namespace,
                    w.newest_segment.as_deref().unwrap_or("none"),
                    match (&w.server_segment, w.lag_segments) {
                        (Some(cur), Some(l)) => format!(", server at {cur} ({l} behind)"),
                        _ => w
                            .age_seconds
                            .map(|a| format!(", stored {} ago", dur(a)))
                            .unwrap_or_default(),
                    }
                );
            }
            for f in &s.findings {
                out += &format!("     {} {}: {}\n", mark(f.status), f.check, f.message);
            }
        }
        let i = &self.integrity;
        out += &format!(
            "{:<4} integrity: {} snapshot(s), {} pack(s); read slice {}/{} ({} pack(s), {})\n",
            mark(i.status),
            i.snapshots,
            i.packs,
            i.slice + 1,
            i.of,
            i.packs_read,
            human(i.bytes_read)
        );
        for p in &i.problems {
            out += &format!("     {p}\n");
        }
        for a in &i.affected_snapshots {
            out += &format!("     affected: {a}\n");
        }
        for t in &self.restore_tests {
            out += &format!(
                "{:<4} restore test {} {}: {:.1}s\n",
                if t.ok { "ok" } else { "FAIL" },
                t.kind,
                &t.snapshot[..8.min(t.snapshot.len())],
                t.rto_ms as f64 / 1000.0
            );
            for s in &t.steps {
                out += &format!(
                    "     {} {} ({:.1}s): {}\n",
                    if s.ok { "ok" } else { "FAIL" },
                    s.step,
                    s.ms as f64 / 1000.0,
                    s.detail
                );
            }
            if let Some(l) = &t.beside_logical_snapshot {
                out += &format!(
                    "     beside logical backup {}: {}\n",
                    &l[..8.min(l.len())],
                    t.beside_logical
                        .iter()
                        .map(|(table, logical, restored)| format!(
                            "{table} {logical}/{}",
                            restored
                                .map(|n| n.to_string())
                                .unwrap_or_else(|| "-".into())
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            for (table, want, got) in &t.row_mismatches {
                out += &format!(
                    "     {table}: recorded {want}, restored {}\n",
                    got.map(|n| n.to_string())
                        .unwrap_or_else(|| "nothing".into())
                );
            }
        }
        for f in &self.findings {
            out += &format!("{:<4} {}: {}\n", mark(f.status), f.check, f.message);
        }
        out += &format!("verify: {}", self.status.as_str());
        if let Some(r) = &self.record {
            out += &format!(" (recorded as {r})");
        }
        out
    }
}

pub async fn run(ctx: &Ctx<'_>, a: &VerifyArgs) -> Result<u8> {
    let mut rpo_by_kind = std::collections::BTreeMap::new();
    for kv in &a.rpo_kind {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage!("--rpo-kind {kv:?} is not KIND=DURATION"))?;
        rpo_by_kind.insert(k.to_string(), parse_duration(v)?);
    }
    if let Some(d) = &a.dbname {
        arsip_ops::pg::check_dbname(Some(d))?;
    }
    let mut opts = VerifyOptions {
        rpo: parse_duration(&a.rpo)?,
        rpo_by_kind,
        cycle: parse_duration(&a.cycle)?,
        history: a.history,
        row_drop: verify::parse_row_drop(&a.row_drop)?,
        dbname: a.dbname.clone(),
        restore_test: None,
        sql_checks: a
            .sql_checks
            .iter()
            .map(|sql| verify::SqlCheck {
                database: a.sql_check_db.clone(),
                sql: sql.clone(),
            })
            .collect(),
        settings: ctx.pg_settings(),
        record: !a.no_record,
        ..Default::default()
    };
    let repo = if a.restore_test {
        let (repo, credential) = super::pg::open_for_recovery(ctx).await?;
        opts.restore_test = Some(RestoreTest {
            arsip_exe: std::env::current_exe()?,
            repo_location: ctx.store_settings()?.location,
            credential,
            recovery_timeout: std::time::Duration::from_secs(3600),
        });
        repo
    } else {
        ctx.open_reading(Access::Full, "verify").await?
    };
    let report = verify::run(&repo, &opts).await?;
    ctx.emit(&report)?;
    Ok(match report.status {
        Status::Ok => exit::OK,
        Status::Warnings => exit::VERIFY_WARNINGS,
        Status::Failed => exit::VERIFY_FAILED,
    })
}

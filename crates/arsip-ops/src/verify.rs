//! `verify`: whether the backups can be trusted, per source (kind, source, host and writer,
//! as `forget` groups them), from the repository's own evidence:
//!
//! - **freshness**: the newest snapshot of each source is younger than its RPO, measured on
//!   the store's clock (`Snapshot.stored`); for physical sources, the WAL archive's newest
//!   segment against the server's current one when the server is reachable (`dbname`),
//!   else its age;
//! - **anomalies** against the same source's last [`VerifyOptions::history`] snapshots:
//!   logical size outside ±30 % of the median, duration above twice the median (and at
//!   least [`MIN_DURATION_EXCESS`] longer), and tables whose row count (logical backups'
//!   exact `row_counts`, physical backups' `row_estimates`) dropped by more than
//!   `row_drop` or that vanished since the previous snapshot;
//! - **integrity**: the repository's `check` plus a rotating read of the packs, so that
//!   one run a day reads every pack once per [`VerifyOptions::cycle`];
//! - a **restore test** (optional): the newest logical backup restored into a throwaway
//!   cluster with every table's row count compared exactly with the facts, and the newest
//!   physical backup restored through the restore plan into a throwaway cluster (no
//!   archiving), started, recovered to the end of the archive, and checked with
//!   `pg_amcheck`; each step timed (the measured RTO).
//!
//! Staleness, damage and a failed restore test fail; anomalies and WAL lag warn. The result
//! is stored as a verification record (FORMAT.md §19) and the audit log gets a `verify`
//! record.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arsip_pg::cluster::{make_base, Cluster, ClusterOptions};
use arsip_pg::physical::PhysicalFacts;
use arsip_pg::restore::{Credential, PhysicalRestore, Target, TargetAction};
use arsip_pg::PgSettings;
use arsip_repo::FullRepo;
use arsip_repo::Snapshot;
use arsip_repo::{CheckReport, ReadData};
use jiff::SignedDuration;
use serde::Serialize;

use crate::{Error, Result};

/// The default RPO: daily backups, with two hours of slack.
pub const DEFAULT_RPO: SignedDuration = SignedDuration::from_hours(26);
/// The default cycle in which the rotating read covers every pack once.
pub const DEFAULT_CYCLE: SignedDuration = SignedDuration::from_hours(30 * 24);
/// How many of a source's recent snapshots the anomaly checks compare against.
pub const DEFAULT_HISTORY: usize = 14;
/// The default row-drop threshold (a fraction).
pub const DEFAULT_ROW_DROP: f64 = 0.10;
/// Size anomaly: the newest logical size outside this fraction of the median.
pub const SIZE_TOLERANCE: f64 = 0.30;
/// Duration anomaly: above this factor of the median…
pub const DURATION_FACTOR: f64 = 2.0;
/// …and at least this much longer (a 2 s backup taking 5 s is not news).
pub const MIN_DURATION_EXCESS: SignedDuration = SignedDuration::from_secs(60);
/// Fewer earlier snapshots than this make no median for size and duration.
pub const MIN_HISTORY: usize = 3;
/// Physical backups' estimates (`n_live_tup`) of tables smaller than this are not compared:
/// for small tables they move by more than any threshold between two backups.
pub const MIN_ESTIMATED_ROWS: i64 = 1000;
/// WAL lag: more segments than this between the newest archived one and the server's
/// current one (the current one is never archived yet) warns.
pub const MAX_WAL_LAG_SEGMENTS: u64 = 2;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub rpo: SignedDuration,
    /// Per kind (`pg-physical`, `files`, …) RPOs that override `rpo`.
    pub rpo_by_kind: BTreeMap<String, SignedDuration>,
    pub cycle: SignedDuration,
    pub history: usize,
    /// A fraction (0.10 = 10 %).
    pub row_drop: f64,
    /// Size anomaly: the newest logical size this fraction away from the median.
    pub size_tolerance: f64,
    /// Duration anomaly: above this multiple of the median (and longer by at least a
    /// minute).
    pub duration_factor: f64,
    /// A server to measure the WAL archive's lag against (libpq connection string).
    pub dbname: Option<String>,
    pub restore_test: Option<RestoreTest>,
    /// Run in the cluster a physical restore test recovered, after `pg_amcheck`.
    pub sql_checks: Vec<SqlCheck>,
    pub settings: PgSettings,
    /// Store the verification record (and the audit record).
    pub record: bool,
}

/// A query the operator requires to hold in a restored cluster: it passes when it returns
/// exactly one row of one column that is true (`SELECT count(*) > 0 FROM vehicles`).
#[derive(Debug, Clone)]
pub struct SqlCheck {
    pub database: String,
    pub sql: String,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            rpo: DEFAULT_RPO,
            rpo_by_kind: BTreeMap::new(),
            cycle: DEFAULT_CYCLE,
            history: DEFAULT_HISTORY,
            row_drop: DEFAULT_ROW_DROP,
            size_tolerance: SIZE_TOLERANCE,
            duration_factor: DURATION_FACTOR,
            dbname: None,
            restore_test: None,
            sql_checks: Vec::new(),
            settings: PgSettings::default(),
            record: true,
        }
    }
}

/// What a physical restore test needs to run `restore_command` unattended: the same as
/// `arsip restore pg --physical`.
#[derive(Debug, Clone)]
pub struct RestoreTest {
    pub arsip_exe: PathBuf,
    pub repo_location: String,
    pub credential: Credential,
    /// How long recovery may take.
    pub recovery_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warnings,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warnings => "warnings",
            Status::Failed => "failed",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub status: Status,
    /// `freshness`, `size`, `duration`, `rows`, `wal`, `integrity`, `restore`.
    pub check: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    pub namespace: String,
    pub newest_segment: Option<String>,
    pub newest_stored: Option<jiff::Timestamp>,
    pub age_seconds: Option<i64>,
    /// The server's current segment, when it was reachable.
    pub server_segment: Option<String>,
    pub lag_segments: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub kind: String,
    pub source: String,
    pub host: String,
    pub writer: String,
    pub snapshots: usize,
    pub newest: String,
    pub newest_stored: Option<jiff::Timestamp>,
    pub age_seconds: i64,
    pub rpo_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalStatus>,
    pub status: Status,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    pub status: Status,
    pub snapshots: usize,
    pub packs: usize,
    /// The rotating read: slice `slice` of `of`.
    pub slice: u64,
    pub of: u64,
    pub packs_read: usize,
    pub bytes_read: u64,
    pub read_packs: Vec<String>,
    pub problems: Vec<String>,
    pub affected_snapshots: Vec<String>,
}

/// One timed step of a restore test.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    /// Elapsed milliseconds (integers: the report is stored as a signed document).
    pub ms: u64,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestReport {
    pub kind: String,
    pub snapshot: String,
    pub ok: bool,
    pub steps: Vec<Step>,
    /// Tables whose count differs: (table, recorded, restored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub row_mismatches: Vec<(String, i64, Option<i64>)>,
    /// Tables counted.
    pub tables: usize,
    /// Physical restore tests: the newest logical backup's tables counted in the restored
    /// cluster, beside the logical backup's counts (reported, not compared: the two backups
    /// were taken at different times): (table, logical count, restored count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub beside_logical: Vec<(String, i64, Option<i64>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beside_logical_snapshot: Option<String>,
    /// Milliseconds from the start of the restore until the last step ended.
    pub rto_ms: u64,
}

impl RestoreTestReport {
    fn new(snap: &Snapshot) -> RestoreTestReport {
        RestoreTestReport {
            kind: snap.manifest.kind.clone(),
            snapshot: snap.id.clone(),
            ok: false,
            steps: Vec::new(),
            row_mismatches: Vec::new(),
            tables: 0,
            beside_logical: Vec::new(),
            beside_logical_snapshot: None,
            rto_ms: 0,
        }
    }

    /// Done: ok when every step was, timed from `started`.
    fn finish(mut self, steps: Vec<Step>, started: Instant) -> RestoreTestReport {
        self.ok = steps.iter().all(|s| s.ok);
        self.steps = steps;
        self.rto_ms = started.elapsed().as_millis() as u64;
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub status: Status,
    pub time: jiff::Timestamp,
    pub sources: Vec<SourceReport>,
    pub integrity: Integrity,
    pub restore_tests: Vec<RestoreTestReport>,
    /// Findings not tied to one source.
    pub findings: Vec<Finding>,
    /// The verification record stored (FORMAT.md §19).
    pub record: Option<String>,
}

pub async fn run(repo: &FullRepo, opts: &VerifyOptions) -> Result<VerifyReport> {
    let r = verify(repo, opts).await;
    if r.is_err() && opts.record {
        crate::audit::record(repo, "verify", Default::default(), &r, |_, _| {}).await;
    }
    let mut r = r?;
    if opts.record {
        let value = serde_json::to_value(&r).unwrap_or_default();
        match repo.verification_put(r.status.as_str(), value).await {
            Ok(name) => r.record = Some(name),
            Err(e) => {
                tracing::warn!(error = %e, "could not store the verification record");
            }
        }
        let details = crate::audit::details([
            ("status", r.status.as_str().into()),
            ("sources", r.sources.len().into()),
            ("packs_read", r.integrity.packs_read.into()),
            (
                "record",
                r.record
                    .clone()
                    .map(serde_json::Value::from)
                    .unwrap_or_default(),
            ),
        ]);
        let event = arsip_repo::AuditEvent {
            op: "verify".into(),
            details,
            result: r.status.as_str().into(),
            message: None,
        };
        if let Err(e) = repo.audit_append(event).await {
            tracing::warn!(error = %e, "could not append to the audit log");
        }
    }
    Ok(r)
}

async fn verify(repo: &FullRepo, opts: &VerifyOptions) -> Result<VerifyReport> {
    let now = repo.now();
    let listing = repo.snapshot_listing().await?;
    let groups = crate::snapshots::by_source(listing.snapshots.iter().cloned());
    let wal = arsip_pg::walretention::show(repo).await?;
    let server = match &opts.dbname {
        Some(d) => Some(server_wal(d, &opts.settings).await),
        None => None,
    };
    let mut findings = Vec::new();
    if let Some(Err(e)) = &server {
        findings.push(Finding {
            status: Status::Warnings,
            check: "wal".into(),
            message: format!("the server could not be asked for its current WAL: {e}"),
        });
    }
    let server = server.and_then(|s| s.ok());

    let mut sources = Vec::new();
    for ((kind, source, host, writer), mut snaps) in groups {
        snaps.sort_by(|a, b| (stored(a), &a.id).cmp(&(stored(b), &b.id)));
        let rpo = opts.rpo_by_kind.get(&kind).copied().unwrap_or(opts.rpo);
        let newest = snaps.last().expect("a group has a snapshot").clone();
        let age = now.duration_since(stored(&newest));
        let mut f = Vec::new();
        if age > rpo {
            f.push(Finding {
                status: Status::Failed,
                check: "freshness".into(),
                message: format!(
                    "the newest backup ({}) is {} old, older than the RPO of {}",
                    newest.short_id(),
                    hours(age),
                    hours(rpo)
                ),
            });
        }
        let start = snaps.len().saturating_sub(opts.history + 1);
        let history = &snaps[start..snaps.len() - 1];
        anomalies_into(&newest, history, opts, &mut f);
        let wal_status = if kind == arsip_pg::physical::KIND {
            PhysicalFacts::of(&newest).ok().map(|pf| {
                let w = wal_status(&wal, &pf, now, server.as_ref());
                if let Some(lag) = w.lag_segments.filter(|l| *l > MAX_WAL_LAG_SEGMENTS) {
                    f.push(Finding {
                        status: Status::Warnings,
                        check: "wal".into(),
                        message: format!(
                            "the WAL archive is {lag} segment(s) behind the server ({} archived, \
                             {} current)",
                            w.newest_segment.as_deref().unwrap_or("none"),
                            w.server_segment.as_deref().unwrap_or("?")
                        ),
                    });
                }
                if w.lag_segments.is_none() {
                    match w.age_seconds {
                        Some(a) if a > rpo.as_secs() => f.push(Finding {
                            status: Status::Warnings,
                            check: "wal".into(),
                            message: format!(
                                "the newest archived WAL segment ({}) is {} old",
                                w.newest_segment.as_deref().unwrap_or("?"),
                                hours(SignedDuration::from_secs(a))
                            ),
                        }),
                        None => f.push(Finding {
                            status: Status::Warnings,
                            check: "wal".into(),
                            message: format!("no WAL is archived in {}", pf.namespace),
                        }),
                        _ => {}
                    }
                }
                w
            })
        } else {
            None
        };
        let status = f.iter().map(|x| x.status).max().unwrap_or(Status::Ok);
        sources.push(SourceReport {
            kind,
            source,
            host,
            writer,
            snapshots: snaps.len(),
            newest: newest.id.clone(),
            newest_stored: newest.stored,
            age_seconds: age.as_secs(),
            rpo_seconds: rpo.as_secs(),
            wal: wal_status,
            status,
            findings: f,
        });
    }
    for (name, why) in listing.damaged.iter() {
        findings.push(Finding {
            status: Status::Failed,
            check: "integrity".into(),
            message: format!("manifest {name} cannot be read: {why}"),
        });
    }

    let integrity = integrity(repo, opts, now).await?;

    let mut restore_tests = Vec::new();
    if let Some(rt) = &opts.restore_test {
        let newest_of = |kind: &str| {
            listing
                .snapshots
                .iter()
                .filter(|s| s.manifest.kind == kind)
                .max_by(|a, b| (stored(a), &a.id).cmp(&(stored(b), &b.id)))
                .cloned()
        };
        let logical = newest_of(arsip_pg::logical::KIND);
        if let Some(s) = &logical {
            restore_tests.push(restore_logical(repo, s, opts).await);
        }
        if let Some(s) = newest_of(arsip_pg::physical::KIND) {
            restore_tests.push(
                restore_physical(repo, &listing.snapshots, &s, logical.as_ref(), rt, opts).await,
            );
        }
        if restore_tests.is_empty() {
            findings.push(Finding {
                status: Status::Warnings,
                check: "restore".into(),
                message: "no PostgreSQL backup to restore".into(),
            });
        }
    }
    for t in &restore_tests {
        if !t.ok {
            let why: Vec<String> = t
                .steps
                .iter()
                .filter(|s| !s.ok)
                .map(|s| format!("{}: {}", s.step, s.detail))
                .collect();
            findings.push(Finding {
                status: Status::Failed,
                check: "restore".into(),
                message: format!(
                    "restore test of {} {} failed: {}",
                    t.kind,
                    &t.snapshot[..12.min(t.snapshot.len())],
                    if why.is_empty() {
                        "row counts differ".to_string()
                    } else {
                        why.join("; ")
                    }
                ),
            });
        }
    }
    let status = sources
        .iter()
        .map(|s| s.status)
        .chain(findings.iter().map(|f| f.status))
        .chain([integrity.status])
        .max()
        .unwrap_or(Status::Ok);
    Ok(VerifyReport {
        status,
        time: now,
        sources,
        integrity,
        restore_tests,
        findings,
        record: None,
    })
}

fn stored(s: &Snapshot) -> jiff::Timestamp {
    s.stored.unwrap_or_else(|| s.effective_time())
}

fn hours(d: SignedDuration) -> String {
    let s = d.as_secs();
    if s >= 86_400 {
        format!("{}d{}h", s / 86_400, (s % 86_400) / 3600)
    } else if s >= 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per table row counts a snapshot records: a logical backup's exact `row_counts`, a
/// physical backup's `row_estimates` as `database/schema.table`.
pub fn table_rows(s: &Snapshot) -> Option<BTreeMap<String, i64>> {
    let f = &s.manifest.facts;
    if let Some(serde_json::Value::Object(m)) = f.get("row_counts") {
        return Some(
            m.iter()
                .filter_map(|(k, v)| v.as_i64().map(|n| (k.clone(), n)))
                .collect(),
        );
    }
    if let Some(serde_json::Value::Object(dbs)) = f.get("row_estimates") {
        let mut out = BTreeMap::new();
        for (db, t) in dbs {
            if let serde_json::Value::Object(t) = t {
                for (k, v) in t {
                    if let Some(n) = v.as_i64() {
                        out.insert(format!("{db}/{k}"), n);
                    }
                }
            }
        }
        return Some(out);
    }
    None
}

/// The anomalies of `newest` against `history`, the same source's snapshots before it
/// (oldest first): size and duration against their medians, and per-table row counts that
/// drop or vanish since the previous one. A pure function of the snapshots: `verify` runs
/// it, and so does the daemon after each backup, so that an anomaly alerts the same day.
pub fn anomalies(newest: &Snapshot, history: &[Snapshot], opts: &VerifyOptions) -> Vec<Finding> {
    let mut f = Vec::new();
    anomalies_into(newest, history, opts, &mut f);
    f
}

fn anomalies_into(
    newest: &Snapshot,
    history: &[Snapshot],
    opts: &VerifyOptions,
    f: &mut Vec<Finding>,
) {
    let warn = |check: &str, message: String| Finding {
        status: Status::Warnings,
        check: check.into(),
        message,
    };
    if history.len() >= MIN_HISTORY {
        let med = median(
            history
                .iter()
                .map(|s| s.manifest.logical_bytes as f64)
                .collect(),
        );
        let size = newest.manifest.logical_bytes as f64;
        if med > 0.0 && (size - med).abs() > opts.size_tolerance * med {
            f.push(warn(
                "size",
                format!(
                    "{} bytes, {:+.0} % against the median {med:.0} of the last {}",
                    newest.manifest.logical_bytes,
                    (size / med - 1.0) * 100.0,
                    history.len()
                ),
            ));
        }
        let dur = |s: &Snapshot| s.manifest.end_time.duration_since(s.manifest.time);
        let med = median(history.iter().map(|s| dur(s).as_secs_f64()).collect());
        let d = dur(newest).as_secs_f64();
        if d > opts.duration_factor * med && d - med >= MIN_DURATION_EXCESS.as_secs_f64() {
            f.push(warn(
                "duration",
                format!(
                    "took {d:.0}s, more than {}× the median {med:.0}s of the last {}",
                    opts.duration_factor,
                    history.len()
                ),
            ));
        }
    }
    let Some(prev) = history.last() else {
        return;
    };
    let (Some(now_rows), Some(prev_rows)) = (table_rows(newest), table_rows(prev)) else {
        return;
    };
    // Estimates (`database/schema.table`) are judged per database first: a database the
    // backup could not read, or whose every table estimates zero rows (statistics reset by
    // a crash, failover or restore, or every row gone), is one finding, not one per table.
    let estimates = newest.manifest.facts.contains_key("row_estimates");
    let db_of = |t: &str| t.split_once('/').map(|(d, _)| d.to_string());
    let mut skip_dbs = std::collections::BTreeSet::new();
    if estimates {
        let mut sums: BTreeMap<String, (i64, Option<i64>)> = BTreeMap::new();
        for (t, &n) in &prev_rows {
            sums.entry(db_of(t).unwrap_or_default()).or_default().0 += n;
        }
        for (t, &n) in &now_rows {
            let e = sums.entry(db_of(t).unwrap_or_default()).or_default();
            e.1 = Some(e.1.unwrap_or(0) + n);
        }
        for (db, (before, after)) in sums {
            let message = match after {
                None => format!(
                    "database {db} was not read by this backup (unreachable, or dropped since \
                     the previous backup {} estimated {before} rows in it)",
                    prev.short_id()
                ),
                Some(0) if before >= MIN_ESTIMATED_ROWS => format!(
                    "every table of database {db} estimates 0 rows (the previous backup {} \
                     estimated {before}): its statistics were reset (a crash, failover or \
                     restore) or its rows are gone; compare with a logical backup's exact counts",
                    prev.short_id()
                ),
                _ => continue,
            };
            f.push(warn("rows", message));
            skip_dbs.insert(db);
        }
    }
    for (table, &before) in &prev_rows {
        if estimates && db_of(table).is_some_and(|d| skip_dbs.contains(&d)) {
            continue;
        }
        if estimates && before < MIN_ESTIMATED_ROWS && now_rows.contains_key(table) {
            continue;
        }
        match now_rows.get(table) {
            None => f.push(warn(
                "rows",
                format!(
                    "table {table} vanished since the previous backup {} ({before} rows)",
                    prev.short_id()
                ),
            )),
            Some(&after)
                if before > 0 && (before - after) as f64 > opts.row_drop * before as f64 =>
            {
                f.push(warn(
                    "rows",
                    format!(
                        "table {table} dropped from {before} to {after} rows ({:.0} %) since the \
                         previous backup {}",
                        (before - after) as f64 * 100.0 / before as f64,
                        prev.short_id()
                    ),
                ))
            }
            _ => {}
        }
    }
}

/// The server's current WAL segment and its namespace.
struct ServerWal {
    namespace: String,
    segment: String,
}

/// How far the WAL archive is behind the server (a `wal-check` job).
#[derive(Debug, Clone, Serialize)]
pub struct WalLag {
    /// `<system identifier>-<major version>`: the stream's namespace in the repository.
    pub namespace: String,
    pub server_segment: String,
    pub newest_archived: Option<String>,
    /// Segments the server has finished or is writing that the archive lacks (`None`: the
    /// archive holds none of this timeline's log files yet).
    pub lag_segments: Option<u64>,
}

impl WalLag {
    /// More than [`MAX_WAL_LAG_SEGMENTS`] behind, or nothing archived.
    pub fn behind(&self) -> bool {
        self.lag_segments.is_none_or(|l| l > MAX_WAL_LAG_SEGMENTS)
    }
}

/// Compare the server's current WAL segment with the newest one archived in the repository.
/// Agent credentials suffice: it lists names, it reads nothing sealed.
pub async fn wal_lag(
    repo: &arsip_repo::Repository,
    dbname: &str,
    settings: &PgSettings,
) -> Result<WalLag> {
    let server = server_wal(dbname, settings).await?;
    let names = repo.wal_list(&server.namespace).await?;
    let (tli, _) = segno(&server.segment).unwrap_or((0, 0));
    let newest = names
        .into_iter()
        .filter(|n| segno(n).is_some_and(|(t, _)| t == tli))
        .max();
    let lag = match (segno(&server.segment), newest.as_deref().and_then(segno)) {
        (Some((_, cur)), Some((_, have))) => Some(cur.saturating_sub(have)),
        _ => None,
    };
    Ok(WalLag {
        namespace: server.namespace,
        server_segment: server.segment,
        newest_archived: newest,
        lag_segments: lag,
    })
}

async fn server_wal(dbname: &str, settings: &PgSettings) -> Result<ServerWal> {
    let cfg = arsip_pg::conn::config(Some(dbname), &settings.libpq)?;
    let c = arsip_pg::conn::connect(&cfg).await?;
    let row = c
        .query_one(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text, \
             current_setting('server_version_num')::int / 10000, \
             pg_walfile_name(pg_current_wal_lsn())",
            &[],
        )
        .await
        .map_err(arsip_pg::PgError::from)?;
    let ns = format!("{}-{}", row.get::<_, String>(0), row.get::<_, i32>(1));
    let segment: String = row.get(2);
    c.close().await;
    Ok(ServerWal {
        namespace: ns,
        segment,
    })
}

fn segno(name: &str) -> Option<(u32, u64)> {
    if name.len() != 24 {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let hi = u64::from_str_radix(&name[8..16], 16).ok()?;
    let lo = u64::from_str_radix(&name[16..24], 16).ok()?;
    // 16 MiB segments: 256 per "log"; other sizes compare within one log file only.
    Some((tli, hi * 0x100 + lo))
}

fn wal_status(
    wal: &[arsip_pg::walretention::NamespaceShow],
    pf: &PhysicalFacts,
    now: jiff::Timestamp,
    server: Option<&ServerWal>,
) -> WalStatus {
    let ns = wal.iter().find(|n| n.namespace == pf.namespace);
    let newest = ns.and_then(|n| {
        n.runs
            .iter()
            .max_by(|a, b| (a.timeline, &a.last).cmp(&(b.timeline, &b.last)))
    });
    let newest_segment = newest.map(|r| r.last.clone());
    let newest_stored = newest.and_then(|r| r.last_stored);
    let server = server.filter(|s| s.namespace == pf.namespace);
    let lag = server.and_then(|s| {
        let (_, cur) = segno(&s.segment)?;
        let (_, have) = newest_segment.as_deref().and_then(segno).unwrap_or((0, 0));
        Some(cur.saturating_sub(have))
    });
    WalStatus {
        namespace: pf.namespace.clone(),
        newest_segment,
        newest_stored,
        age_seconds: newest_stored.map(|t| now.duration_since(t).as_secs()),
        server_segment: server.map(|s| s.segment.clone()),
        lag_segments: lag,
    }
}

async fn integrity(
    repo: &FullRepo,
    opts: &VerifyOptions,
    now: jiff::Timestamp,
) -> Result<Integrity> {
    let of = (opts.cycle.as_secs() / 86_400).max(1) as u64;
    let day = (now.as_second().max(0) / 86_400) as u64;
    let slice = day % of;
    let r: CheckReport = arsip_repo::check(repo.clone(), ReadData::Slice { slice, of }).await?;
    Ok(Integrity {
        status: if r.ok() { Status::Ok } else { Status::Failed },
        snapshots: r.snapshots,
        packs: r.packs,
        slice,
        of,
        packs_read: r.packs_read,
        bytes_read: r.bytes_read,
        read_packs: r.read_packs,
        problems: r
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.object, p.message))
            .collect(),
        affected_snapshots: r.affected_snapshots,
    })
}

/// Record a step's outcome.
fn step<T>(
    steps: &mut Vec<Step>,
    name: &str,
    t: Instant,
    r: &std::result::Result<T, String>,
    ok_detail: impl FnOnce(&T) -> String,
) -> bool {
    let (ok, detail) = match r {
        Ok(v) => (true, ok_detail(v)),
        Err(e) => (false, e.clone()),
    };
    steps.push(Step {
        step: name.into(),
        ms: t.elapsed().as_millis() as u64,
        ok,
        detail,
    });
    ok
}

async fn new_cluster(settings: &PgSettings) -> std::result::Result<Cluster, String> {
    let opts = ClusterOptions {
        settings: settings.clone(),
        ..Default::default()
    };
    let c = arsip_repo::blocking(move || Cluster::init(&opts))
        .await
        .map_err(|e| e.to_string())?;
    c.start_async().await.map_err(|e| e.to_string())?;
    Ok(c)
}

/// Count every table of `rows` in `db` of `c`: (table, count or the error).
async fn count_rows(
    c: &Cluster,
    db: &str,
    rows: &BTreeMap<String, i64>,
) -> BTreeMap<String, Option<i64>> {
    let mut out = BTreeMap::new();
    for table in rows.keys() {
        let q = match table.split_once('.') {
            Some((s, t)) => format!("SELECT count(*) FROM {}.{}", quote(s), quote(t)),
            None => format!("SELECT count(*) FROM {}", quote(table)),
        };
        let n = c
            .psql_async(db, &q)
            .await
            .ok()
            .and_then(|s| s.trim().parse().ok());
        out.insert(table.clone(), n);
    }
    out
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn compare(
    recorded: &BTreeMap<String, i64>,
    got: &BTreeMap<String, Option<i64>>,
) -> Vec<(String, i64, Option<i64>)> {
    recorded
        .iter()
        .filter_map(|(t, &want)| {
            let have = got.get(t).copied().flatten();
            (have != Some(want)).then(|| (t.clone(), want, have))
        })
        .collect()
}

async fn restore_logical(
    repo: &FullRepo,
    snap: &Snapshot,
    opts: &VerifyOptions,
) -> RestoreTestReport {
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut report = RestoreTestReport::new(snap);
    let t = Instant::now();
    let c = new_cluster(&opts.settings).await;
    let ok = step(&mut steps, "start a throwaway cluster", t, &c, |c| {
        format!("port {}", c.port)
    });
    if let (true, Ok(c)) = (ok, c) {
        let db = "arsip_verify";
        let t = Instant::now();
        let lr = arsip_pg::logical::LogicalRestore {
            dbname: Some(c.conninfo(db)),
            create: true,
            tables: Vec::new(),
            jobs: 1,
            globals: snap.manifest.facts.get("globals") == Some(&serde_json::Value::Bool(true)),
            settings: opts.settings.clone(),
        };
        let r = arsip_pg::logical::restore(repo.clone(), snap, &lr)
            .await
            .map_err(|e| e.to_string());
        let ok = step(&mut steps, "restore the dump", t, &r, |o| {
            format!("{} bytes of dump", o.bytes)
        });
        if ok {
            let t = Instant::now();
            let recorded = table_rows(snap).unwrap_or_default();
            let got = count_rows(&c, db, &recorded).await;
            report.tables = got.len();
            report.row_mismatches = compare(&recorded, &got);
            let r: std::result::Result<(), String> = if report.row_mismatches.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} table(s) differ from the recorded counts",
                    report.row_mismatches.len()
                ))
            };
            step(&mut steps, "compare row counts", t, &r, |_| {
                format!("{} table(s) as recorded", got.len())
            });
        }
    }
    report.finish(steps, started)
}

async fn restore_physical(
    repo: &FullRepo,
    snaps: &[Snapshot],
    snap: &Snapshot,
    logical: Option<&Snapshot>,
    rt: &RestoreTest,
    opts: &VerifyOptions,
) -> RestoreTestReport {
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut report = RestoreTestReport::new(snap);
    let physical: Vec<Snapshot> = snaps
        .iter()
        .filter(|s| s.manifest.kind == arsip_pg::physical::KIND)
        .cloned()
        .collect();
    let stanza = PhysicalFacts::of(snap)
        .map(|f| f.stanza)
        .unwrap_or_else(|_| "main".into());
    let t = Instant::now();
    let restored: std::result::Result<PathBuf, String> = async {
        let base = make_base(&opts.settings, "arsip-verify-").map_err(|e| e.to_string())?;
        let pr = PhysicalRestore {
            snapshot: Some(snap.id.clone()),
            to: base.join("data"),
            target: Target::End,
            target_action: TargetAction::Promote,
            start: false,
            no_archive: true,
            stanza,
            arsip_exe: rt.arsip_exe.clone(),
            repo_location: rt.repo_location.clone(),
            credential: Some(rt.credential.clone()),
            settings: opts.settings.clone(),
            ..Default::default()
        };
        let planned = crate::pg::plan_physical(repo, &physical, &pr)
            .await
            .map_err(|e| e.to_string());
        let planned = match planned {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base);
                return Err(e);
            }
        };
        match crate::pg::restore_physical(repo.clone(), &planned).await {
            Ok(_) => Ok(base),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&base);
                Err(e.to_string())
            }
        }
    }
    .await;
    let ok = step(&mut steps, "restore the base backup", t, &restored, |b| {
        b.display().to_string()
    });
    if let (true, Ok(base)) = (ok, restored) {
        let t = Instant::now();
        let adopt = ClusterOptions {
            settings: opts.settings.clone(),
            ..Default::default()
        };
        let cluster = async {
            let c = arsip_repo::blocking(move || Cluster::adopt(base, &adopt))
                .await
                .map_err(|e| e.to_string())?;
            c.start_async().await.map_err(|e| e.to_string())?;
            let reached = arsip_pg::restore::wait_for_recovery(
                &c.bin,
                &c.socket_dir.display().to_string(),
                c.port,
                "promote",
                rt.recovery_timeout,
                &c.data,
                &c.log_path(),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok::<_, String>((c, reached))
        }
        .await;
        let ok = step(
            &mut steps,
            "start and recover to the end of the archive",
            t,
            &cluster,
            |(_, r)| {
                format!(
                    "reached {} on timeline {}",
                    r.lsn.as_deref().unwrap_or("?"),
                    r.timeline.unwrap_or(0)
                )
            },
        );
        if let (true, Ok((c, _))) = (ok, cluster) {
            let t = Instant::now();
            let mut cmd = c.client("pg_amcheck");
            cmd.args([
                "--all",
                "--install-missing",
                "--heapallindexed",
                "--no-password",
            ]);
            let out = tokio::process::Command::from(cmd).output().await;
            let r = match out {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(format!(
                    "pg_amcheck exited with {}: {}{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout).trim(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(format!("cannot run pg_amcheck: {e}")),
            };
            step(&mut steps, "pg_amcheck (heap and indexes)", t, &r, |_| {
                "clean".into()
            });
            for check in &opts.sql_checks {
                let t = Instant::now();
                let r = match c.psql_async(&check.database, &check.sql).await {
                    Ok(out) if matches!(out.trim(), "t" | "true") => Ok(()),
                    Ok(out) => Err(format!(
                        "returned {:?}, not one row that is true",
                        out.trim()
                    )),
                    Err(e) => Err(e.to_string()),
                };
                let name = format!("SQL check in {}: {}", check.database, check.sql);
                step(&mut steps, &name, t, &r, |_| "true".into());
            }
            if let Some(rows) = table_rows(snap) {
                report.tables = rows.len();
            }
            // The latest logical facts beside what the restored cluster holds.
            let db = logical
                .and_then(|l| l.manifest.facts.get("database"))
                .and_then(|v| v.as_str());
            if let (Some(l), Some(db)) = (logical, db) {
                let rows = table_rows(l).unwrap_or_default();
                let got = count_rows(&c, db, &rows).await;
                report.beside_logical = rows
                    .iter()
                    .map(|(t, &n)| (t.clone(), n, got.get(t).copied().flatten()))
                    .collect();
                report.beside_logical_snapshot = Some(l.id.clone());
            }
        }
    }
    report.finish(steps, started)
}

/// Parse `--row-drop`: a percentage (`10`, `10%`) in [0, 100].
pub fn parse_row_drop(s: &str) -> Result<f64> {
    let pct: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| Error::usage(format!("row-drop {s:?} is not a percentage")))?;
    if !(0.0..=100.0).contains(&pct) {
        return Err(Error::usage(format!("row-drop {s:?} must be in [0, 100]")));
    }
    Ok(pct / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_segments() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(segno("000000010000000100000002"), Some((1, 0x102)));
        assert_eq!(parse_row_drop("10%").unwrap(), 0.1);
        assert!(parse_row_drop("x").is_err());
    }

    fn physical(id: &str, estimates: serde_json::Value) -> Snapshot {
        let manifest = serde_json::from_value(serde_json::json!({
            "version": 1, "kind": "pg-physical", "source": "h:/d",
            "host": "h", "tags": {}, "time": "2026-10-01T19:00:00Z",
            "end_time": "2026-10-01T19:01:00Z", "logical_bytes": 1, "added_bytes": 0,
            "stored_bytes": 0, "files": 1, "tree": [], "tree_bytes": 0,
            "facts": { "row_estimates": estimates },
        }))
        .unwrap();
        Snapshot {
            id: id.into(),
            writer: "00".into(),
            stored: None,
            manifest,
        }
    }

    /// Thresholds come from the options (the daemon's configuration), not constants.
    #[test]
    fn size_and_duration_thresholds_are_options() {
        let snap = |bytes: u64, secs: i64| {
            let mut s = physical(&"c".repeat(64), serde_json::json!({}));
            s.manifest.logical_bytes = bytes;
            s.manifest.end_time = s.manifest.time + SignedDuration::from_secs(secs);
            s
        };
        let history = [snap(100, 100), snap(100, 100), snap(100, 100)];
        let newest = snap(120, 250);
        let checks = |o: &VerifyOptions| -> Vec<String> {
            anomalies(&newest, &history, o)
                .into_iter()
                .map(|f| f.check)
                .collect()
        };
        assert_eq!(checks(&VerifyOptions::default()), ["duration"]);
        let strict = VerifyOptions {
            size_tolerance: 0.10,
            duration_factor: 3.0,
            ..Default::default()
        };
        assert_eq!(checks(&strict), ["size"]);
    }

    fn row_findings(prev: serde_json::Value, now: serde_json::Value) -> Vec<String> {
        let mut f = Vec::new();
        let (p, n) = (
            physical(&"a".repeat(64), prev),
            physical(&"b".repeat(64), now),
        );
        anomalies_into(&n, &[p], &VerifyOptions::default(), &mut f);
        f.into_iter().map(|f| f.message).collect()
    }

    /// Physical estimates: small tables are not compared, a large drop and a dropped table
    /// are; a database whose every table reads 0 (statistics reset, or all rows gone) or
    /// that the backup could not read is one finding, not one per table.
    #[test]
    fn estimates_are_judged_per_database_and_above_a_floor() {
        use serde_json::json;
        let prev = json!({
            "app": {"public.big": 100000, "public.small": 40, "public.gone": 10},
            "crm": {"public.leads": 5000, "public.notes": 3000},
            "ops": {"public.jobs": 2000},
        });
        let now = json!({
            "app": {"public.big": 50000, "public.small": 0},
            "crm": {"public.leads": 0, "public.notes": 0},
        });
        let f = row_findings(prev, now);
        assert_eq!(f.len(), 4, "{f:#?}");
        assert!(f
            .iter()
            .any(|m| m.contains("app/public.big dropped from 100000 to 50000")));
        assert!(f.iter().any(|m| m.contains("app/public.gone vanished")));
        assert!(f
            .iter()
            .any(|m| m.contains("every table of database crm estimates 0")));
        assert!(f.iter().any(|m| m.contains("database ops was not read")));
        let steady = json!({"app": {"public.big": 100000, "public.small": 40}});
        let wobble = json!({"app": {"public.big": 99000, "public.small": 3}});
        assert!(row_findings(steady, wobble).is_empty());
    }
}

//! Physical restores and point-in-time recovery.
//!
//! Before writing anything: pick the snapshot (explicit, or the newest whose stop point
//! precedes the target), refuse a non-empty target directory, a live `postmaster.pid`, and
//! PostgreSQL programs of another major version, and check that every WAL segment from the
//! backup's start to its stop (and, for an LSN target on the same timeline, to the target) is
//! in the repository. Then restore the files (owner kept, directory mode 0700, `pg_control`
//! last, every file fsynced), strip old recovery settings from `postgresql.auto.conf`, remove
//! `standby.signal`, and write the new recovery configuration: `restore_command` through
//! `arsip wal fetch`, the target, and `recovery.signal`. `--start` starts the cluster, waits
//! for recovery to end and reports the LSN and time it reached.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arsip_repo::snapshot::Snapshot;
use arsip_repo::Repository;
use serde_json::Value;

use crate::cluster::{as_postgres, check_output, tail};
use crate::control::{bin_major, parse_lsn, pg_bin_dir, SegName};
use crate::error::{PgError, Result};

#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Replay all available WAL.
    End,
    Time(jiff::Timestamp),
    Lsn(u64),
    Xid(String),
    Name(String),
    Immediate,
}

/// Parse a target time: RFC 3339, or PostgreSQL's `YYYY-MM-DD HH:MM:SS[.f][+TZ]`.
pub fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    let t = s.trim().replacen(' ', "T", 1);
    if let Ok(t) = t.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    // "+07" → "+07:00"
    let fixed = if t.len() > 3
        && (t.as_bytes()[t.len() - 3] == b'+' || t.as_bytes()[t.len() - 3] == b'-')
    {
        format!("{t}:00")
    } else {
        t
    };
    fixed.parse().ok()
}

impl Target {
    pub fn from_args(
        time: Option<&str>,
        lsn: Option<&str>,
        xid: Option<&str>,
        name: Option<&str>,
        target: Option<&str>,
    ) -> Result<Target> {
        let n = [
            time.is_some(),
            lsn.is_some(),
            xid.is_some(),
            name.is_some(),
            target.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n > 1 {
            return Err(PgError::refused(
                "give at most one recovery target",
                "choose one of --target-time, --target-lsn, --target-xid, --target-name, --target immediate",
            ));
        }
        Ok(if let Some(t) = time {
            Target::Time(parse_time(t).ok_or_else(|| {
                PgError::refused(
                    format!("--target-time {t:?} is not a time with a zone"),
                    "use RFC 3339, e.g. 2026-03-01T10:31:00+07:00",
                )
            })?)
        } else if let Some(l) = lsn {
            Target::Lsn(parse_lsn(l).ok_or_else(|| {
                PgError::refused(
                    format!("--target-lsn {l:?} is not an LSN"),
                    "e.g. 0/3000060",
                )
            })?)
        } else if let Some(x) = xid {
            Target::Xid(x.into())
        } else if let Some(n) = name {
            Target::Name(n.into())
        } else if let Some(t) = target {
            if t != "immediate" {
                return Err(PgError::refused(
                    format!("--target {t:?} is not supported"),
                    "the only value is `immediate`",
                ));
            }
            Target::Immediate
        } else {
            Target::End
        })
    }
}

#[derive(Debug, Clone)]
pub struct PhysicalRestore {
    pub snapshot: Option<String>,
    pub to: PathBuf,
    pub target: Target,
    pub target_timeline: Option<String>,
    pub target_action: String,
    pub exclusive: bool,
    pub start: bool,
    pub port: Option<u16>,
    pub no_archive: bool,
    /// Tablespaces restored somewhere other than their original location: (OID, directory).
    pub tablespace_map: Vec<(String, PathBuf)>,
    pub stanza: String,
    pub arsip_exe: PathBuf,
    pub repo_location: String,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhysicalRestoreOutcome {
    pub snapshot: String,
    pub to: String,
    pub files: u64,
    pub bytes: u64,
    pub restore_seconds: f64,
    pub wal_checked_to: String,
    /// Where each tablespace went: (OID, directory).
    pub tablespaces: Vec<(String, String)>,
    pub started: bool,
    pub reached_lsn: Option<String>,
    pub reached_time: Option<String>,
    pub timeline: Option<i32>,
    pub recovery_seconds: Option<f64>,
    /// From the start of the restore until the cluster accepts writes (with --start).
    pub rto_seconds: Option<f64>,
}

impl PhysicalRestoreOutcome {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "restored snapshot {} into {}: {} file(s), {} bytes in {:.1}s; archived WAL continuous to {}",
            &self.snapshot[..8.min(self.snapshot.len())],
            self.to,
            self.files,
            self.bytes,
            self.restore_seconds,
            self.wal_checked_to
        );
        for (oid, dir) in &self.tablespaces {
            s += &format!("\ntablespace {oid} restored into {dir}");
        }
        if self.started {
            s += &format!(
                "\nrecovery reached LSN {} (last transaction {}) on timeline {} in {:.1}s; RTO {:.1}s",
                self.reached_lsn.as_deref().unwrap_or("?"),
                self.reached_time.as_deref().unwrap_or("none replayed"),
                self.timeline.map_or("?".into(), |t| t.to_string()),
                self.recovery_seconds.unwrap_or(0.0),
                self.rto_seconds.unwrap_or(0.0)
            );
        } else {
            s += "\nstart it with pg_ctl (as the postgres user); recovery.signal is in place";
        }
        s
    }
}

fn fact<'a>(s: &'a Snapshot, k: &str) -> Option<&'a Value> {
    s.manifest.facts.get(k)
}
fn fact_str<'a>(s: &'a Snapshot, k: &str) -> Option<&'a str> {
    fact(s, k).and_then(|v| v.as_str())
}

/// The snapshot a restore uses.
/// The timeline a recovery follows and its ancestry (the lines of its `.history` file).
#[derive(Debug, Clone, Default)]
pub struct TimelineView {
    pub target: u32,
    pub ancestors: Vec<crate::control::HistoryEntry>,
}

impl TimelineView {
    /// Whether a backup taken on `tli` that stopped at `stop_lsn` lies on this history.
    pub fn contains(&self, tli: u32, stop_lsn: u64) -> bool {
        tli == self.target
            || self
                .ancestors
                .iter()
                .any(|e| e.parent == tli && stop_lsn <= e.switch_lsn)
    }
}

/// Work out the timeline recovery will follow: a number, or `latest` (default: the highest
/// timeline with a `.history` file in the namespace, else 1).
pub async fn timeline_view(
    repo: &Repository,
    ns: &str,
    target_timeline: Option<&str>,
) -> Result<Option<TimelineView>> {
    let tli = match target_timeline {
        Some("current") => return Ok(None),
        Some("latest") | None => repo
            .wal_list(ns)
            .await?
            .iter()
            .filter_map(|f| f.strip_suffix(".history"))
            .filter_map(|t| u32::from_str_radix(t, 16).ok())
            .max()
            .unwrap_or(1),
        Some(n) => n.parse().map_err(|_| {
            PgError::refused(
                format!("--target-timeline {n:?}"),
                "use a timeline number, `latest` or `current`",
            )
        })?,
    };
    let ancestors = if tli > 1 {
        match repo.wal_get(ns, &format!("{tli:08X}.history")).await? {
            Some(b) => crate::control::parse_history(&String::from_utf8_lossy(&b)),
            None => {
                return Err(PgError::refused(
                    format!("timeline {tli} has no history file in the repository"),
                    "`arsip wal list` shows the archived timelines",
                ))
            }
        }
    } else {
        Vec::new()
    };
    Ok(Some(TimelineView {
        target: tli,
        ancestors,
    }))
}

pub fn choose<'a>(
    snaps: &'a [Snapshot],
    explicit: Option<&str>,
    target: &Target,
    history: Option<&TimelineView>,
) -> Result<&'a Snapshot> {
    if let Some(spec) = explicit.filter(|s| *s != "latest") {
        return Ok(arsip_repo::snapshot::select(snaps, spec)?);
    }
    let on_history = |s: &Snapshot| {
        let tli = fact(s, "timeline").and_then(|v| v.as_u64()).unwrap_or(1) as u32;
        let stop = fact_str(s, "stop_lsn").and_then(parse_lsn).unwrap_or(0);
        history.is_none_or(|h| h.contains(tli, stop))
    };
    let mut cands: Vec<&Snapshot> = snaps.iter().filter(|s| on_history(s)).collect();
    cands.sort_by_key(|s| s.manifest.time);
    let pick =
        match target {
            Target::End | Target::Immediate => cands.last().copied(),
            _ if explicit == Some("latest") => cands.last().copied(),
            Target::Time(t) => cands
                .iter()
                .rev()
                .find(|s| {
                    fact_str(s, "stop_time")
                        .and_then(parse_time)
                        .is_some_and(|st| st < *t)
                })
                .copied(),
            Target::Lsn(l) => cands
                .iter()
                .rev()
                .find(|s| {
                    fact_str(s, "stop_lsn")
                        .and_then(parse_lsn)
                        .is_some_and(|st| st <= *l)
                })
                .copied(),
            Target::Xid(_) | Target::Name(_) => return Err(PgError::refused(
                "--target-xid and --target-name need an explicit SNAPSHOT",
                "pick a backup taken before the target from `arsip snapshots --kind pg-physical`",
            )),
        };
    pick.ok_or_else(|| {
        PgError::refused(
            "no physical backup ends before the recovery target",
            "`arsip snapshots --kind pg-physical` lists backups with their stop times (facts.stop_time)",
        )
    })
}

fn dir_is_empty(d: &Path) -> Result<bool> {
    match std::fs::read_dir(d) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e.into()),
    }
}

fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn plain_path(p: &Path, what: &str) -> Result<String> {
    let s = p.display().to_string();
    if s.chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '"' || c == '\\' || c == '%')
    {
        return Err(PgError::refused(
            format!("{what} {s:?} contains spaces, quotes or %"),
            "use a path without them (it goes into restore_command)",
        ));
    }
    Ok(s)
}

/// Last value of a setting across postgresql.conf and postgresql.auto.conf.
pub fn conf_value(pgdata: &Path, key: &str) -> Option<String> {
    let mut v = None;
    for f in ["postgresql.conf", "postgresql.auto.conf"] {
        let Ok(text) = std::fs::read_to_string(pgdata.join(f)) else {
            continue;
        };
        for l in text.lines() {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix(key) {
                let rest = rest.trim_start();
                if let Some(val) = rest.strip_prefix('=') {
                    let val = val.split('#').next().unwrap_or("").trim();
                    v = Some(val.trim_matches('\'').to_string());
                }
            }
        }
    }
    v
}

pub async fn restore(
    repo: Arc<Repository>,
    snaps: &[Snapshot],
    o: &PhysicalRestore,
) -> Result<PhysicalRestoreOutcome> {
    let t0 = Instant::now();
    if !["promote", "pause", "shutdown"].contains(&o.target_action.as_str()) {
        return Err(PgError::refused(
            format!("--target-action {:?}", o.target_action),
            "use promote, pause or shutdown",
        ));
    }
    // Backups of this stanza only (older snapshots without the fact are kept).
    let snaps: Vec<Snapshot> = snaps
        .iter()
        .filter(|s| fact_str(s, "stanza").is_none_or(|st| st == o.stanza))
        .cloned()
        .collect();
    let history = match snaps.iter().max_by_key(|s| s.manifest.time) {
        Some(newest) if o.snapshot.as_deref().is_none_or(|s| s == "latest") => {
            let ns = fact_str(newest, "namespace").unwrap_or_default();
            timeline_view(&repo, ns, o.target_timeline.as_deref()).await?
        }
        _ => None,
    };
    let snap = choose(&snaps, o.snapshot.as_deref(), &o.target, history.as_ref())?.clone();
    let key_file = o.key_file.as_ref().ok_or_else(|| {
        PgError::refused(
            "a physical restore needs a key file for its restore_command (the server runs `arsip wal fetch` unattended)",
            "create one with `arsip key add --keyfile --out FILE` and pass --key-file FILE (readable by the postgres user)",
        )
    })?;
    let key_file = key_file.canonicalize()?;
    if let Some((uid, gid)) = crate::cluster::postgres_owner() {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&key_file)?;
        let readable = (m.uid() == uid && m.mode() & 0o400 != 0)
            || (m.gid() == gid && m.mode() & 0o040 != 0)
            || m.mode() & 0o004 != 0;
        if !readable {
            return Err(PgError::refused(
                format!(
                    "the postgres OS user cannot read {}, so restore_command could not fetch WAL",
                    key_file.display()
                ),
                "give postgres its own copy (chown postgres, mode 0600) and pass that as --key-file",
            ));
        }
    }
    let exe = plain_path(&o.arsip_exe, "the arsip binary path")?;
    let key_s = plain_path(&key_file, "--key-file")?;
    let repo_s = o.repo_location.clone();
    if repo_s
        .chars()
        .any(|c| c.is_whitespace() || c == '\'' || c == '%')
    {
        return Err(PgError::refused(
            "the repository location contains spaces, quotes or %",
            "use a plain location",
        ));
    }
    // Refusals before writing anything.
    if o.to.join("postmaster.pid").exists() {
        return Err(PgError::refused(
            format!(
                "{} holds postmaster.pid: a server may be running there",
                o.to.display()
            ),
            "stop that server, or restore into another directory",
        ));
    }
    if !dir_is_empty(&o.to)? {
        return Err(PgError::refused(
            format!("{} is not empty", o.to.display()),
            "restore into a new or empty directory",
        ));
    }
    let tablespaces = tablespace_dirs(&snap, &o.to, &o.tablespace_map)?;
    let major = fact(&snap, "major").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    let bin = pg_bin_dir()?;
    let have = bin_major(&bin)?;
    if have != major {
        return Err(PgError::refused(
            format!(
                "the backup is PostgreSQL {major}, the programs in {} are {have}",
                bin.display()
            ),
            "set ARSIP_PG_BIN to the matching major version's bin directory",
        ));
    }
    let ns = fact_str(&snap, "namespace").unwrap_or_default().to_string();
    let seg_size = fact(&snap, "wal_segment_size")
        .and_then(|v| v.as_u64())
        .unwrap_or(16 << 20);
    let tli = fact(&snap, "timeline")
        .and_then(|v| v.as_u64())
        .unwrap_or(1) as u32;
    let start = fact_str(&snap, "start_wal").and_then(|n| SegName::parse(n, seg_size));
    let stop = fact_str(&snap, "stop_wal").and_then(|n| SegName::parse(n, seg_size));
    let (Some(start), Some(stop)) = (start, stop) else {
        return Err(PgError::refused(
            format!("snapshot {} lacks its WAL range facts", snap.short_id()),
            "is it a pg-physical snapshot?",
        ));
    };
    // WAL continuity, checked against the listing (one LIST, no reads), along the timeline
    // history recovery will follow: from the backup's start to its stop (and to an LSN
    // target) it is required; after that it is followed to the first gap and reported.
    let present: std::collections::HashSet<String> =
        repo.wal_list(&ns).await?.into_iter().collect();
    let view = match history {
        Some(h) => Some(h),
        None => timeline_view(&repo, &ns, o.target_timeline.as_deref()).await?,
    };
    // Timelines whose file for `segno` recovery may read, newest first: the one whose range
    // holds the segment and, for the segment holding a switch point, the parent (PostgreSQL
    // reads the newest that exists; the parent's copy serves up to the switch point).
    let tlis_for = |segno: u64| -> Vec<u32> {
        let mut out = Vec::new();
        match &view {
            Some(v) => {
                let owner = v
                    .ancestors
                    .iter()
                    .find(|e| segno < e.switch_lsn / seg_size)
                    .map_or(v.target, |e| e.parent);
                out.push(owner);
                for e in &v.ancestors {
                    if e.switch_lsn / seg_size == segno {
                        out.push(e.parent);
                    }
                }
            }
            None => out.push(tli),
        }
        if segno <= stop.segno && !out.contains(&tli) {
            out.push(tli);
        }
        out.sort_unstable_by(|a, b| b.cmp(a));
        out.dedup();
        out
    };
    let required_to = match o.target {
        Target::Lsn(l) if l / seg_size >= stop.segno => l / seg_size,
        _ => stop.segno,
    };
    let mut last_seg = None;
    let mut segno = start.segno;
    loop {
        let names: Vec<String> = tlis_for(segno)
            .into_iter()
            .map(|t| SegName { timeline: t, segno }.name(seg_size))
            .collect();
        match names.iter().find(|n| present.contains(*n)) {
            Some(n) => last_seg = Some(n.clone()),
            None if segno <= required_to => {
                return Err(PgError::refused(
                    format!(
                        "WAL is not continuous: {} (needed to reach the target from backup {}) is not in the repository",
                        names[0],
                        snap.short_id()
                    ),
                    "`arsip wal list` shows what is archived; pick an earlier target or another backup",
                ));
            }
            None => break,
        }
        segno += 1;
    }
    let wal_checked_to = last_seg.unwrap_or_default();

    // Write the files.
    std::fs::create_dir_all(&o.to)?;
    let reader = arsip_repo::read::Reader::open(repo.clone()).await?;
    let grafts: Vec<arsip_files::restore::Graft> = tablespaces
        .iter()
        .map(|(oid, dir)| arsip_files::restore::Graft {
            prefix: format!("pg_tblspc/{oid}"),
            dir: dir.clone(),
        })
        .collect();
    let r = arsip_files::restore::to_dir_grafted(&reader, &snap, &o.to, &grafts, &|_| {}).await?;
    let to = o.to.canonicalize()?;
    let pv = std::fs::metadata(to.join("PG_VERSION"))?;
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = unsafe { libc::geteuid() } == 0;
        for d in std::iter::once(&to).chain(tablespaces.iter().map(|(_, d)| d)) {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
            if root {
                chown_tree(d, pv.uid(), pv.gid())?;
            }
        }
    }
    link_tablespaces(&to, &tablespaces)?;
    crate::walarchive::clear_spool(&to);

    // Recovery configuration.
    let auto = to.join("postgresql.auto.conf");
    let old = std::fs::read_to_string(&auto).unwrap_or_default();
    let mut conf: String = old
        .lines()
        .filter(|l| {
            let k = l.trim_start();
            !(k.starts_with("recovery_")
                || k.starts_with("restore_command")
                || k.starts_with("primary_conninfo")
                || k.starts_with("primary_slot_name"))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    conf += &format!(
        "# written by arsip restore pg --physical (snapshot {})\n",
        snap.short_id()
    );
    conf += &format!(
        "restore_command = {}\n",
        conf_quote(&format!(
            "{exe} --repo {repo_s} --key-file {key_s} wal fetch --namespace {ns} %f %p"
        ))
    );
    match &o.target {
        Target::End => {}
        Target::Time(t) => {
            conf += &format!(
                "recovery_target_time = {}\n",
                conf_quote(&t.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string())
            )
        }
        Target::Lsn(l) => {
            conf += &format!(
                "recovery_target_lsn = {}\n",
                conf_quote(&crate::control::format_lsn(*l))
            )
        }
        Target::Xid(x) => conf += &format!("recovery_target_xid = {}\n", conf_quote(x)),
        Target::Name(n) => conf += &format!("recovery_target_name = {}\n", conf_quote(n)),
        Target::Immediate => conf += "recovery_target = 'immediate'\n",
    }
    if o.target != Target::End {
        conf += &format!(
            "recovery_target_action = {}\n",
            conf_quote(&o.target_action)
        );
        if o.exclusive {
            conf += "recovery_target_inclusive = off\n";
        }
    }
    if let Some(tl) = &o.target_timeline {
        conf += &format!("recovery_target_timeline = {}\n", conf_quote(tl));
    }
    if let Some(p) = o.port {
        conf += &format!("port = {p}\n");
    }
    if o.no_archive {
        conf += "archive_mode = off\n";
    }
    write_synced(&auto, conf.as_bytes())?;
    let _ = std::fs::remove_file(to.join("standby.signal"));
    write_synced(&to.join("recovery.signal"), b"")?;
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::MetadataExt;
        chown_tree(&to, pv.uid(), pv.gid())?;
    }
    std::fs::File::open(&to)?.sync_all()?;

    let mut out = PhysicalRestoreOutcome {
        snapshot: snap.id.clone(),
        to: to.display().to_string(),
        files: r.files,
        bytes: r.bytes,
        restore_seconds: t0.elapsed().as_secs_f64(),
        wal_checked_to,
        tablespaces: tablespaces
            .iter()
            .map(|(oid, d)| (oid.clone(), d.display().to_string()))
            .collect(),
        ..Default::default()
    };
    if o.start {
        let log_dir = to.join("log");
        std::fs::create_dir_all(&log_dir)?;
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&log_dir, Some(pv.uid()), Some(pv.gid()))?;
        }
        let log = log_dir.join("arsip-recovery.log");
        let t1 = Instant::now();
        check_output(
            "pg_ctl start",
            as_postgres(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&to)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "3600", "start"])
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .map_err(|e| {
            PgError::Tool(format!(
                "{e}\n--- recovery log (tail) ---\n{}",
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30)
            ))
        })?;
        let host = conf_value(&to, "unix_socket_directories")
            .map(|s| s.split(',').next().unwrap_or("").trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/var/run/postgresql".into());
        let port: u16 = o
            .port
            .or_else(|| conf_value(&to, "port").and_then(|p| p.parse().ok()))
            .unwrap_or(5432);
        let reached = wait_for_recovery(
            &host,
            port,
            &o.target_action,
            Duration::from_secs(24 * 3600),
            &to,
            &log,
        )
        .await?;
        out.started = true;
        out.reached_lsn = reached.lsn.clone();
        out.reached_time = reached.time.clone();
        out.timeline = reached.timeline;
        out.recovery_seconds = Some(t1.elapsed().as_secs_f64());
        out.rto_seconds = Some(t0.elapsed().as_secs_f64());
        if let (Target::Lsn(l), Some(r)) = (&o.target, reached.lsn.as_deref().and_then(parse_lsn)) {
            if r < *l {
                return Err(PgError::refused(
                    format!(
                        "recovery reached {} only, short of the target {}",
                        reached.lsn.unwrap(),
                        crate::control::format_lsn(*l)
                    ),
                    "WAL up to the target is missing from the repository",
                ));
            }
        }
    }
    Ok(out)
}

/// The tablespaces of a backup, from its `tablespace_map` fact in PostgreSQL's format: one
/// `<oid> <location>` line each, with `\`, CR and LF in the location escaped by a `\`.
pub fn parse_tablespace_map(text: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => line.extend(chars.next()),
            '\n' => lines.push(std::mem::take(&mut line)),
            c => line.push(c),
        }
    }
    lines.push(line);
    // An OID names a link under pg_tblspc: only digits, whatever the snapshot claims.
    lines
        .iter()
        .filter_map(|l| l.split_once(' '))
        .filter(|(oid, _)| !oid.is_empty() && oid.bytes().all(|b| b.is_ascii_digit()))
        .map(|(oid, loc)| (oid.to_string(), loc.to_string()))
        .collect()
}

/// [`parse_tablespace_map`]'s inverse.
pub fn format_tablespace_map(entries: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    for (oid, dir) in entries {
        out += oid;
        out.push(' ');
        for c in dir.to_string_lossy().chars() {
            if matches!(c, '\\' | '\r' | '\n') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// Where each of the backup's tablespaces is restored: its original location, or the
/// directory `--tablespace-map` gives. Checked before anything is written: every directory
/// must be absolute, outside the data directory, distinct, and absent or empty, so that a
/// restore next to the original cluster can never write into its tablespaces.
fn tablespace_dirs(
    snap: &Snapshot,
    to: &Path,
    remap: &[(String, PathBuf)],
) -> Result<Vec<(String, PathBuf)>> {
    let backup = fact_str(snap, "tablespace_map")
        .map(parse_tablespace_map)
        .unwrap_or_default();
    for (oid, _) in remap {
        if !backup.iter().any(|(o, _)| o == oid) {
            let have: Vec<&str> = backup.iter().map(|(o, _)| o.as_str()).collect();
            return Err(PgError::refused(
                format!(
                    "--tablespace-map {oid}: snapshot {} has no tablespace {oid}",
                    snap.short_id()
                ),
                if have.is_empty() {
                    "this backup has no tablespaces".to_string()
                } else {
                    format!("its tablespaces are {}", have.join(", "))
                },
            ));
        }
    }
    let to_abs = std::path::absolute(to)?;
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (oid, original) in backup {
        let dir = remap
            .iter()
            .find(|(o, _)| *o == oid)
            .map_or_else(|| PathBuf::from(&original), |(_, d)| d.clone());
        let hint = format!("--tablespace-map {oid}=DIR restores it into another, empty directory");
        if !dir.is_absolute() {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid}: {} is not an absolute path",
                    dir.display()
                ),
                hint,
            ));
        }
        if dir.starts_with(&to_abs) || to_abs.starts_with(&dir) {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid}: {} overlaps the data directory {}",
                    dir.display(),
                    to_abs.display()
                ),
                hint,
            ));
        }
        if out
            .iter()
            .any(|(_, d)| d.starts_with(&dir) || dir.starts_with(d))
        {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid}: {} overlaps another tablespace's directory",
                    dir.display()
                ),
                hint,
            ));
        }
        if !dir_is_empty(&dir)? {
            return Err(PgError::refused(
                format!(
                    "tablespace {oid} would be restored into {}, which is not empty{}",
                    dir.display(),
                    if remap.iter().any(|(o, _)| *o == oid) {
                        ""
                    } else {
                        " (its original location: the original cluster may still use it)"
                    }
                ),
                hint,
            ));
        }
        out.push((oid, dir));
    }
    Ok(out)
}

/// Point `pg_tblspc/<oid>` at each restored tablespace and write `tablespace_map` with the
/// same locations (PostgreSQL recreates the links from it when recovery starts).
fn link_tablespaces(to: &Path, tablespaces: &[(String, PathBuf)]) -> Result<()> {
    if tablespaces.is_empty() {
        return Ok(());
    }
    let links = to.join("pg_tblspc");
    std::fs::create_dir_all(&links)?;
    for (oid, dir) in tablespaces {
        std::os::unix::fs::symlink(dir, links.join(oid))?;
    }
    std::fs::File::open(&links)?.sync_all()?;
    write_synced(
        &to.join("tablespace_map"),
        format_tablespace_map(tablespaces).as_bytes(),
    )
}

fn write_synced(p: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(p)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

fn chown_tree(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
    let m = std::fs::symlink_metadata(p)?;
    if m.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct Reached {
    pub lsn: Option<String>,
    pub time: Option<String>,
    pub timeline: Option<i32>,
}

/// Wait until recovery has ended (promote), paused (pause), or the server stopped
/// (shutdown); then report the last replayed LSN and transaction time.
pub async fn wait_for_recovery(
    host: &str,
    port: u16,
    action: &str,
    timeout: Duration,
    pgdata: &Path,
    log: &Path,
) -> Result<Reached> {
    let mut cfg = tokio_postgres::Config::new();
    if host.starts_with('/') {
        cfg.host_path(host);
    } else {
        cfg.host(host);
    }
    cfg.port(port).user("postgres").dbname("postgres");
    let deadline = Instant::now() + timeout;
    let pid_file = Some(pgdata.join("postmaster.pid"));
    loop {
        if Instant::now() > deadline {
            return Err(PgError::Tool("recovery did not finish in time".into()));
        }
        if action == "shutdown" {
            if pid_file.as_ref().is_some_and(|p| !p.exists()) {
                return Ok(Reached::default());
            }
        } else if let Ok(c) = crate::conn::connect(&cfg).await {
            let r = c
                .query_one(
                    "SELECT pg_is_in_recovery(), \
                     CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END, \
                     pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text, \
                     (SELECT timeline_id FROM pg_control_checkpoint())",
                    &[],
                )
                .await;
            if let Ok(r) = r {
                let in_rec: bool = r.get(0);
                let pause: String = r.get(1);
                let done =
                    (action == "promote" && !in_rec) || (action == "pause" && pause == "paused");
                if done {
                    let mut reached = Reached {
                        lsn: r.get(2),
                        time: r.get(3),
                        timeline: r.get(4),
                    };
                    if action == "promote" {
                        // The checkpoint timeline lags promotion until the end-of-recovery
                        // checkpoint; ask the WAL insert position's file name instead.
                        if let Ok(t) = c
                            .query_one("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int", &[])
                            .await
                        {
                            reached.timeline = Some(t.get(0));
                        }
                    }
                    return Ok(reached);
                }
            }
        }
        if pid_file.as_ref().is_some_and(|p| !p.exists()) && action != "shutdown" {
            return Err(PgError::Tool(format!(
                "the server stopped during recovery (target not reached, or WAL unreadable)\n--- recovery log (tail) ---\n{}",
                tail(&std::fs::read_to_string(log).unwrap_or_default(), 30)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablespace_map_round_trips_escaped_locations() {
        let entries = vec![
            ("16384".to_string(), PathBuf::from("/srv/ts one")),
            (
                "16385".to_string(),
                PathBuf::from("/srv/odd\\name\nwith newline"),
            ),
        ];
        let text = format_tablespace_map(&entries);
        assert_eq!(
            text,
            "16384 /srv/ts one\n16385 /srv/odd\\\\name\\\nwith newline\n"
        );
        let parsed = parse_tablespace_map(&text);
        let want: Vec<(String, String)> = entries
            .iter()
            .map(|(o, d)| (o.clone(), d.display().to_string()))
            .collect();
        assert_eq!(parsed, want);
        // a snapshot cannot name a link outside pg_tblspc
        assert!(parse_tablespace_map("../../etc /x\nabc /y\n").is_empty());
    }
}

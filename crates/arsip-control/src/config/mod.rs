//! The configuration file (`--config`, default `/etc/arsip/arsip.toml`): repositories,
//! sources, scheduled jobs, alert routes and channels. [`load`] parses it, checks every rule
//! and returns either the resolved [`Config`], the only form the daemon sees, or every error
//! found, each with the file, line, column and key (docs/CONFIG.md).
//!
//! Secrets are never inline unless the file is private: a secret key `X` takes exactly one of
//! `X_file` (a file holding it), `X_env` (an environment variable) or `X` itself, and `X` is
//! accepted only when the configuration file is owned by the user arsip runs as and readable
//! by no one else. Secret files pass the same check. Nothing here reads a secret: the plan
//! names where each one comes from.

mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use jiff::SignedDuration;
use serde::Serialize;
use toml::Spanned;

use crate::schedule::{self, Schedule};
use raw::S;

/// Where the daemon reads its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/arsip/arsip.toml";
/// The only format version.
pub const VERSION: i64 = 1;

/// One thing wrong with the file, where it is, and what to do about it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    /// The key, as a dotted path (`job.pg-main-daily.schedule`); empty for a syntax error.
    pub key: String,
    pub message: String,
}

/// Every error of one file.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigErrors {
    pub path: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, e) in self.errors.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.path.display(), e.line, e.column)?;
            if !e.key.is_empty() {
                write!(f, "{}: ", e.key)?;
            }
            f.write_str(&e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where a secret comes from. It is read when used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Secret {
    /// Where it comes from, without the secret.
    pub fn describe(&self) -> String {
        match self {
            Secret::Inline(_) => "<inline>".into(),
            Secret::File(p) => format!("<file {}>", p.display()),
            Secret::Env(v) => format!("<env {v}>"),
        }
    }
}

impl Secret {
    /// The secret itself: a file's content without one trailing newline, an environment
    /// variable's value, or the inline value. The error names where it looked, never the value.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => {
                let mut s = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read the secret file {}: {e}", p.display()))?;
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                Ok(s)
            }
            Secret::Env(v) => std::env::var(v).map_err(|_| {
                format!(
                    "the environment variable {v} (a secret the configuration names) is not set"
                )
            }),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.describe())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub path: PathBuf,
    pub daemon: Daemon,
    pub api: Api,
    pub repositories: BTreeMap<String, Repository>,
    pub sources: BTreeMap<String, Source>,
    pub jobs: BTreeMap<String, Job>,
    pub alerts: Alerts,
    pub channels: BTreeMap<String, Channel>,
}

impl Config {
    /// What differs between `self` (in force) and `new` that only a restart can change:
    /// the state directory, where and how the API listens (address, TLS on or off, on or
    /// off at all), and the repositories (their handles are opened once). Empty: `new`
    /// can be put in force by a reload.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.daemon.state_dir != new.daemon.state_dir {
            out.push("daemon.state_dir");
        }
        if self.api.listen != new.api.listen {
            out.push("api.listen");
        }
        if self.api.tls.is_some() != new.api.tls.is_some() {
            out.push("api.tls_cert_file (TLS on or off)");
        }
        if self.api.tokens.is_empty() != new.api.tokens.is_empty() {
            out.push("api.tokens (the API on or off)");
        }
        let described = |c: &Config| serde_json::to_string(&c.repositories).ok();
        if described(self) != described(new) {
            out.push("repository.*");
        }
        out
    }

    /// Whether anything runs in repository `name` (a source backs up into it, a job works
    /// on it): else it is only a copy's destination, or unused.
    pub fn runs_in(&self, name: &str) -> bool {
        self.sources.values().any(|s| s.repository == name)
            || self.jobs.values().any(|j| j.repository == name)
    }

    /// A digest of what job `name` does: its definition and its source's, the same on every
    /// daemon given the same configuration. Claims carry it (FORMAT.md §20), so a peer that
    /// runs a job differently is noticed (`arsip_ha_config_mismatch`).
    pub fn job_digest(&self, name: &str) -> Option<String> {
        let job = self.jobs.get(name)?;
        let source = job.source.as_ref().and_then(|s| self.sources.get(s));
        let canonical = serde_json::to_vec(&(job, source)).ok()?;
        Some(blake3::hash(&canonical).to_hex()[..32].to_string())
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// A run missed while the daemon was down is made up once.
    Once,
    /// Missed runs are recorded as missed, not made up.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub time_zone: String,
    pub shutdown_grace: SignedDuration,
    pub catch_up: CatchUp,
    pub catch_up_within: SignedDuration,
    pub max_concurrent_jobs: usize,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Read,
    /// Also triggers and cancels jobs.
    Operator,
}

#[derive(Debug, Clone, Serialize)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub file: Secret,
}

#[derive(Debug, Clone, Serialize)]
pub struct Api {
    pub listen: std::net::SocketAddr,
    pub tls: Option<(PathBuf, Secret)>,
    pub tokens: Vec<Token>,
}

/// Retention rules are `arsip forget`'s; none given means the plan's default (30 days).
pub use arsip_ops::forget::Policy as Retention;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Price {
    pub per_gb_month: f64,
    pub per_1000_writes: f64,
    pub per_1000_reads: f64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Repository {
    pub location: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    /// How the repository opens: a password, a key file (full key) and/or an agent file.
    pub password: Option<Secret>,
    pub key_file: Option<Secret>,
    pub agent_file: Option<Secret>,
    pub quota: Option<u64>,
    pub key_rotation: Option<SignedDuration>,
    pub retention: Retention,
    pub pitr_window: SignedDuration,
    pub price: Option<Price>,
}

impl Repository {
    /// Full-key credentials (maintenance: forget, prune, verify need them).
    pub fn has_full_key(&self) -> bool {
        self.password.is_some() || self.key_file.is_some()
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    PgPhysical,
    PgLogical,
    Files,
}

impl SourceKind {
    const ALL: [(&'static str, SourceKind); 3] = [
        ("pg-physical", SourceKind::PgPhysical),
        ("pg-logical", SourceKind::PgLogical),
        ("files", SourceKind::Files),
    ];
}

#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub kind: SourceKind,
    pub repository: String,
    pub rpo: SignedDuration,
    pub rto: Option<SignedDuration>,
    pub stanza: Option<String>,
    pub dbname: Option<String>,
    pub pgdata: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
    /// The source's own rule, else its repository's.
    pub retention: Option<Retention>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Backup,
    WalCheck,
    Forget,
    Prune,
    Verify,
    /// `arsip copy` of the repository into another (`to`).
    Copy,
}

impl JobKind {
    const ALL: [(&'static str, JobKind); 6] = [
        ("backup", JobKind::Backup),
        ("wal-check", JobKind::WalCheck),
        ("forget", JobKind::Forget),
        ("prune", JobKind::Prune),
        ("verify", JobKind::Verify),
        ("copy", JobKind::Copy),
    ];

    /// Jobs of a source, else of a repository.
    fn of_source(self) -> bool {
        matches!(self, JobKind::Backup | JobKind::WalCheck)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlCheck {
    pub database: String,
    pub sql: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub kind: JobKind,
    /// The source a backup or WAL check is of.
    pub source: Option<String>,
    /// The repository it works on (a source's, for source jobs).
    pub repository: String,
    pub schedule: Schedule,
    pub retries: u32,
    pub retry_backoff: SignedDuration,
    pub timeout: Option<SignedDuration>,
    /// Verify: the read-data cycle, and whether it runs the restore tests.
    pub cycle: Option<SignedDuration>,
    pub restore_test: bool,
    pub sql_checks: Vec<SqlCheck>,
    /// Copy: the repository the copy goes to, and whether a run also follows every
    /// successful backup into the repository.
    pub to: Option<String>,
    pub after_backups: bool,
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Critical,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alerts {
    /// Channels each severity goes to.
    pub routes: BTreeMap<Severity, Vec<String>>,
    /// Size anomaly: more than this share away from the median (0.30: ±30 %).
    pub size_tolerance: f64,
    /// Duration anomaly: more than this multiple of the median.
    pub duration_factor: f64,
    /// Storage quota alert above this share of the quota.
    pub quota_ratio: f64,
    /// An alert still open is notified again this long after its last notification
    /// (none: once, and its resolve).
    pub repeat_after: Option<SignedDuration>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpTls {
    /// STARTTLS, required (submission, port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Channel {
    Webhook {
        url: Secret,
    },
    Slack {
        url: Secret,
    },
    Pagerduty {
        routing_key: Secret,
        /// The Events API v2 endpoint (tests point it at a local receiver).
        url: String,
    },
    Email {
        host: String,
        port: u16,
        tls: SmtpTls,
        ca_file: Option<PathBuf>,
        username: Option<String>,
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
    },
}

/// PagerDuty's Events API v2.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Read and check the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let fail = |message: String| ConfigErrors {
        path: path.to_path_buf(),
        errors: vec![ConfigError {
            line: 0,
            column: 0,
            key: String::new(),
            message,
        }],
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    // A FIFO or a device would block or never end; a pipe's owner says nothing of who wrote it.
    if !meta.is_file() {
        return Err(fail("the configuration is not a regular file".into()));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    parse(path, &text, FileAccess::of(&meta))
}

/// Who may read a file: its owner and whether others (group or world) may read it.
#[derive(Debug, Clone, Copy)]
pub struct FileAccess {
    pub owner_is_us: bool,
    pub private: bool,
}

impl FileAccess {
    /// Owned by the user arsip runs as and readable by no one else.
    fn ours_alone(&self) -> bool {
        self.owner_is_us && self.private
    }

    fn of(meta: &std::fs::Metadata) -> FileAccess {
        FileAccess {
            owner_is_us: meta.uid() == rustix::process::geteuid().as_raw(),
            private: meta.mode() & 0o077 == 0,
        }
    }
}

/// Check `text` as the file at `path` (whose access is `access`).
pub fn parse(path: &Path, text: &str, access: FileAccess) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        path,
        base: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        lines: std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        access,
        errors: Vec::new(),
    };
    let raw: raw::Raw = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            c.error(&span, "", redact_values(e.message().trim_end()));
            return Err(c.finish());
        }
    };
    let config = c.resolve(raw);
    if c.errors.is_empty() {
        Ok(config)
    } else {
        Err(c.finish())
    }
}

struct Checker<'a> {
    path: &'a Path,
    /// Relative paths in the file are relative to its directory.
    base: PathBuf,
    /// Byte offset of each line's start.
    lines: Vec<usize>,
    access: FileAccess,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, span: &Range<usize>, key: &str, message: String) {
        let line = self.lines.partition_point(|&s| s <= span.start);
        let column = span.start - self.lines[line.saturating_sub(1)] + 1;
        self.errors.push(ConfigError {
            line,
            column,
            key: key.to_string(),
            message,
        });
    }

    fn finish(&mut self) -> ConfigErrors {
        let mut errors = std::mem::take(&mut self.errors);
        errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors {
            path: self.path.to_path_buf(),
            errors,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }

    fn duration(&mut self, v: &S<String>, key: &str) -> Option<SignedDuration> {
        let v = v.as_ref()?;
        match arsip_ops::forget::parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.error(
                    &v.span(),
                    key,
                    format!(
                        "{:?} is not a duration (e.g. \"30d\", \"12h\", \"5m\", \"2d12h\")",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn count(&mut self, v: &S<i64>, key: &str, min: i64, max: i64) -> Option<i64> {
        let v = v.as_ref()?;
        let n = *v.get_ref();
        if n < min || n > max {
            self.error(&v.span(), key, format!("{n} is out of range ({min}–{max})"));
            return None;
        }
        Some(n)
    }

    fn name(&mut self, name: &str, span: &Range<usize>, key: &str) {
        if let Err(e) = arsip_ops::repo::check_name(name, "name") {
            self.error(span, key, e.to_string());
        }
    }

    fn one_of<T: Copy>(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        all: &[(&'static str, T)],
    ) -> Option<T> {
        let found = all.iter().find(|(n, _)| *n == v.get_ref()).map(|(_, t)| *t);
        if found.is_none() {
            let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
            self.error(
                &v.span(),
                key,
                format!("{:?} is not one of {}", v.get_ref(), names.join(", ")),
            );
        }
        found
    }

    /// A secret from `X`, `X_file` or `X_env`; `required` says whether one must be given.
    fn secret(
        &mut self,
        at: &Range<usize>,
        key: &str,
        inline: &S<String>,
        file: &S<String>,
        env: &S<String>,
        required: bool,
    ) -> Option<Secret> {
        let given = [inline, file, env].iter().filter(|v| v.is_some()).count();
        if given > 1 {
            self.error(
                at,
                key,
                "give exactly one of the value, its _file or its _env".into(),
            );
            return None;
        }
        let leaf = key.rsplit('.').next().unwrap_or(key).to_string();
        if let Some(v) = inline {
            if !self.access.ours_alone() {
                self.error(
                    &v.span(),
                    key,
                    format!(
                        "an inline secret in a configuration file that others can read or \
                         that another user owns; use {leaf}_file (or {leaf}_env), or make the \
                         file private (chmod 600) and owned by the user arsip runs as"
                    ),
                );
            }
            return Some(Secret::Inline(v.get_ref().clone()));
        }
        if let Some(v) = file {
            return Some(self.secret_file(v, &format!("{key}_file")));
        }
        if let Some(v) = env {
            let name = v.get_ref();
            let ok =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                self.error(
                    &v.span(),
                    &format!("{key}_env"),
                    format!("{name:?} is not an environment variable name"),
                );
                return None;
            }
            return Some(Secret::Env(name.clone()));
        }
        if required {
            self.error(
                at,
                key,
                format!("missing: give {leaf}_file (a file holding it) or {leaf}_env"),
            );
        }
        None
    }

    /// A secret that is always a file (`key_file`, a token's `file`). A file that cannot be
    /// used is an error here and still names the secret (so that no second error follows
    /// from its absence: the file fails to load either way).
    fn secret_file(&mut self, v: &Spanned<String>, key: &str) -> Secret {
        let p = self.path(v.get_ref());
        if let Some(problem) = secret_file_problem(&p) {
            self.error(&v.span(), key, problem);
        }
        Secret::File(p)
    }

    fn retention(&mut self, r: &Spanned<raw::Retention>, key: &str) -> Retention {
        let r = r.get_ref();
        let mut n = |v: &S<i64>, k: &str| {
            self.count(v, &format!("{key}.{k}"), 1, 1_000_000)
                .map(|n| n as usize)
        };
        let rules = Retention {
            keep_last: n(&r.keep_last, "keep_last"),
            keep_hourly: n(&r.keep_hourly, "keep_hourly"),
            keep_daily: n(&r.keep_daily, "keep_daily"),
            keep_weekly: n(&r.keep_weekly, "keep_weekly"),
            keep_monthly: n(&r.keep_monthly, "keep_monthly"),
            keep_yearly: n(&r.keep_yearly, "keep_yearly"),
            keep_within: None,
            keep_tags: r.keep_tags.clone(),
        };
        Retention {
            keep_within: self.duration(&r.keep_within, &format!("{key}.keep_within")),
            ..rules
        }
    }

    fn resolve(&mut self, raw: raw::Raw) -> Config {
        if *raw.version.get_ref() != VERSION {
            self.error(
                &raw.version.span(),
                "version",
                format!(
                    "version {} is not known; this arsip reads version {VERSION}",
                    raw.version.get_ref()
                ),
            );
        }
        let daemon = self.daemon(raw.daemon.as_ref());
        let api = self.api(raw.api.as_ref());
        let mut repositories = BTreeMap::new();
        for (name, r) in &raw.repository {
            let key = format!("repository.{name}");
            self.name(name, &r.span(), &key);
            repositories.insert(name.clone(), self.repository(r, &key));
        }
        let mut sources = BTreeMap::new();
        for (name, s) in &raw.source {
            let key = format!("source.{name}");
            self.name(name, &s.span(), &key);
            if let Some(s) = self.source(s, &key, &repositories) {
                sources.insert(name.clone(), s);
            }
        }
        let mut jobs = BTreeMap::new();
        for (name, j) in &raw.job {
            let key = format!("job.{name}");
            self.name(name, &j.span(), &key);
            if let Some(j) = self.job(j, &key, &daemon, &repositories, &sources) {
                jobs.insert(name.clone(), j);
            }
        }
        let mut channels = BTreeMap::new();
        for (name, ch) in &raw.channel {
            let key = format!("channel.{name}");
            self.name(name, &ch.span(), &key);
            if let Some(ch) = self.channel(ch, &key) {
                channels.insert(name.clone(), ch);
            }
        }
        let alerts = self.alerts(raw.alerts.as_ref(), &raw.channel);
        let config = Config {
            path: self.path.to_path_buf(),
            daemon,
            api,
            repositories,
            sources,
            jobs,
            alerts,
            channels,
        };
        // Only a copy's destination may go without credentials: a copy is made with
        // storage credentials alone.
        for (name, r) in &raw.repository {
            let opens = config
                .repositories
                .get(name)
                .is_some_and(|x| x.has_full_key() || x.agent_file.is_some());
            if !opens && config.runs_in(name) {
                self.error(
                    &r.span(),
                    &format!("repository.{name}"),
                    "no way to open it: give password_file (or password_env), key_file, or \
                     agent_file (only a copy's destination goes without)"
                        .into(),
                );
            }
        }
        config
    }

    fn daemon(&mut self, d: Option<&Spanned<raw::Daemon>>) -> Daemon {
        let mut out = Daemon {
            state_dir: PathBuf::from("/var/lib/arsip"),
            time_zone: "UTC".into(),
            shutdown_grace: SignedDuration::from_mins(5),
            catch_up: CatchUp::Once,
            catch_up_within: SignedDuration::from_hours(24),
            max_concurrent_jobs: 2,
        };
        let Some(d) = d else { return out };
        let d = d.get_ref();
        if let Some(p) = &d.state_dir {
            out.state_dir = self.path(p.get_ref());
        }
        if let Some(z) = &d.time_zone {
            match schedule::zone(z.get_ref()) {
                Ok(_) => out.time_zone = z.get_ref().clone(),
                Err(e) => self.error(&z.span(), "daemon.time_zone", e.0),
            }
        }
        if let Some(g) = self.duration(&d.shutdown_grace, "daemon.shutdown_grace") {
            out.shutdown_grace = g;
        }
        if let Some(c) = &d.catch_up {
            let all = [("once", CatchUp::Once), ("skip", CatchUp::Skip)];
            if let Some(c) = self.one_of(c, "daemon.catch_up", &all) {
                out.catch_up = c;
            }
        }
        if let Some(w) = self.duration(&d.catch_up_within, "daemon.catch_up_within") {
            out.catch_up_within = w;
        }
        if let Some(n) = self.count(&d.max_concurrent_jobs, "daemon.max_concurrent_jobs", 1, 64) {
            out.max_concurrent_jobs = n as usize;
        }
        out
    }

    fn api(&mut self, a: Option<&Spanned<raw::Api>>) -> Api {
        let mut out = Api {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            tls: None,
            tokens: Vec::new(),
        };
        let Some(a) = a else { return out };
        let a = a.get_ref();
        if let Some(l) = &a.listen {
            match l.get_ref().parse() {
                Ok(addr) => out.listen = addr,
                Err(_) => self.error(
                    &l.span(),
                    "api.listen",
                    format!(
                        "{:?} is not an address and port (e.g. \"127.0.0.1:{DEFAULT_PORT}\")",
                        l.get_ref()
                    ),
                ),
            }
        }
        match (&a.tls_cert_file, &a.tls_key_file) {
            (Some(c), Some(k)) => {
                let key = self.secret_file(k, "api.tls_key_file");
                out.tls = Some((self.path(c.get_ref()), key));
            }
            (Some(v), None) | (None, Some(v)) => self.error(
                &v.span(),
                "api",
                "TLS needs both tls_cert_file and tls_key_file".into(),
            ),
            (None, None) => {}
        }
        let mut names = std::collections::HashSet::new();
        for t in &a.tokens {
            let key = format!("api.tokens.{}", t.get_ref().name.get_ref().escape_debug());
            let t = t.get_ref();
            self.name(t.name.get_ref(), &t.name.span(), &key);
            if !names.insert(t.name.get_ref().clone()) {
                self.error(&t.name.span(), &key, "a second token of this name".into());
            }
            let roles = [("read", Role::Read), ("operator", Role::Operator)];
            let role = self.one_of(&t.role, &format!("{key}.role"), &roles);
            let file = self.secret_file(&t.file, &format!("{key}.file"));
            if let Some(role) = role {
                out.tokens.push(Token {
                    name: t.name.get_ref().clone(),
                    role,
                    file,
                });
            }
        }
        if !out.listen.ip().is_loopback() && out.tls.is_none() {
            let span = a.listen.as_ref().map(|l| l.span()).unwrap_or(0..0);
            self.error(
                &span,
                "api.listen",
                "listening beyond this host without TLS would send tokens in clear; set \
                 tls_cert_file and tls_key_file, or listen on 127.0.0.1"
                    .into(),
            );
        }
        out
    }

    fn repository(&mut self, r: &Spanned<raw::Repository>, key: &str) -> Repository {
        let at = r.span();
        let r = r.get_ref();
        let location = r.location.get_ref().clone();
        let s3 = location.starts_with("s3://");
        let known = ["s3://", "gs://", "az://", "/"];
        for (v, leaf) in [
            (Some(&r.location), "location"),
            (r.endpoint.as_ref(), "endpoint"),
        ] {
            if let Some(v) = v.filter(|v| has_userinfo(v.get_ref())) {
                self.error(
                    &v.span(),
                    &format!("{key}.{leaf}"),
                    "credentials in a URL; use access_key_id_file and secret_access_key_file"
                        .into(),
                );
            }
        }
        if !known.iter().any(|p| location.starts_with(p)) {
            let location = redact_userinfo(&location);
            self.error(
                &r.location.span(),
                &format!("{key}.location"),
                format!(
                    "{location:?} is not a repository location: an absolute directory, or \
                     s3://BUCKET/PREFIX, gs://…, az://…"
                ),
            );
        }
        let k = |leaf: &str| format!("{key}.{leaf}");
        let access_key_id = self.secret(
            &at,
            &k("access_key_id"),
            &r.access_key_id,
            &r.access_key_id_file,
            &r.access_key_id_env,
            false,
        );
        let secret_access_key = self.secret(
            &at,
            &k("secret_access_key"),
            &r.secret_access_key,
            &r.secret_access_key_file,
            &r.secret_access_key_env,
            false,
        );
        if !s3 {
            for (v, leaf) in [(&r.region, "region"), (&r.endpoint, "endpoint")] {
                if let Some(v) = v {
                    self.error(&v.span(), &k(leaf), "only for s3:// locations".into());
                }
            }
        }
        if access_key_id.is_some() != secret_access_key.is_some() {
            self.error(
                &at,
                key,
                "give both access_key_id and secret_access_key, or neither (then the \
                 environment's or the instance's credentials are used)"
                    .into(),
            );
        }
        let password = self.secret(
            &at,
            &k("password"),
            &r.password,
            &r.password_file,
            &r.password_env,
            false,
        );
        let key_file = r
            .key_file
            .as_ref()
            .map(|f| self.secret_file(f, &k("key_file")));
        let agent_file = r
            .agent_file
            .as_ref()
            .map(|f| self.secret_file(f, &k("agent_file")));
        let quota = r
            .quota
            .as_ref()
            .and_then(|q| match parse_bytes(q.get_ref()) {
                Some(n) => Some(n),
                None => {
                    self.error(
                        &q.span(),
                        &k("quota"),
                        format!(
                            "{:?} is not a size (e.g. \"2TiB\", \"500GiB\")",
                            q.get_ref()
                        ),
                    );
                    None
                }
            });
        let key_rotation = self.duration(&r.key_rotation, &k("key_rotation"));
        let retention = r
            .retention
            .as_ref()
            .map(|v| self.retention(v, &k("retention")))
            .unwrap_or_default();
        let pitr_window = self
            .duration(&r.pitr_window, &k("pitr_window"))
            .unwrap_or(arsip_ops::prune::Options::default().pitr_window);
        let price = r.price.as_ref().map(|p| {
            let p = p.get_ref();
            let mut f = |v: &S<f64>, leaf: &str| match v {
                Some(v) if *v.get_ref() < 0.0 || !v.get_ref().is_finite() => {
                    self.error(
                        &v.span(),
                        &k(&format!("price.{leaf}")),
                        "must be 0 or more".into(),
                    );
                    0.0
                }
                Some(v) => *v.get_ref(),
                None => 0.0,
            };
            Price {
                per_gb_month: f(&p.per_gb_month, "per_gb_month"),
                per_1000_writes: f(&p.per_1000_writes, "per_1000_writes"),
                per_1000_reads: f(&p.per_1000_reads, "per_1000_reads"),
                currency: p
                    .currency
                    .as_ref()
                    .map(|c| c.get_ref().clone())
                    .unwrap_or_else(|| "USD".into()),
            }
        });
        Repository {
            location,
            region: r.region.as_ref().map(|v| v.get_ref().clone()),
            endpoint: r.endpoint.as_ref().map(|v| v.get_ref().clone()),
            access_key_id,
            secret_access_key,
            password,
            key_file,
            agent_file,
            quota,
            key_rotation,
            retention,
            pitr_window,
            price,
        }
    }

    fn reference<'m, T>(
        &mut self,
        v: &Spanned<String>,
        key: &str,
        what: &str,
        known: &'m BTreeMap<String, T>,
    ) -> Option<&'m T> {
        let found = known.get(v.get_ref());
        if found.is_none() {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            self.error(
                &v.span(),
                key,
                format!(
                    "no [{what}.{}]; known: {}",
                    v.get_ref(),
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
        found
    }

    fn source(
        &mut self,
        s: &Spanned<raw::Source>,
        key: &str,
        repositories: &BTreeMap<String, Repository>,
    ) -> Option<Source> {
        let at = s.span();
        let s = s.get_ref();
        let k = |leaf: &str| format!("{key}.{leaf}");
        let kind = self.one_of(&s.kind, &k("kind"), &SourceKind::ALL);
        self.reference(&s.repository, &k("repository"), "repository", repositories);
        let rpo = self.duration(&s.rpo, &k("rpo"));
        if s.rpo.is_none() {
            self.error(
                &at,
                key,
                "missing rpo: how old the newest backup may get (e.g. \"24h\"); alerts and \
                 status measure against it"
                    .into(),
            );
        }
        let rto = self.duration(&s.rto, &k("rto"));
        let paths: Vec<PathBuf> = s
            .paths
            .as_ref()
            .map(|p| p.get_ref().iter().map(PathBuf::from).collect())
            .unwrap_or_default();
        let pg_only = [
            (&s.stanza, "stanza"),
            (&s.dbname, "dbname"),
            (&s.pgdata, "pgdata"),
        ];
        match kind {
            Some(SourceKind::Files) => {
                for (v, leaf) in pg_only {
                    if let Some(v) = v {
                        self.error(&v.span(), &k(leaf), "only for PostgreSQL sources".into());
                    }
                }
                if paths.is_empty() {
                    self.error(&at, key, "a files source needs paths".into());
                }
                for p in s.paths.iter().flat_map(|p| p.get_ref()) {
                    if !p.starts_with('/') {
                        let span = s.paths.as_ref().map(|p| p.span()).unwrap_or(at.clone());
                        self.error(&span, &k("paths"), format!("{p:?} is not an absolute path"));
                    }
                }
            }
            Some(SourceKind::PgLogical | SourceKind::PgPhysical) => {
                if let Some(p) = &s.paths {
                    self.error(&p.span(), &k("paths"), "only for files sources".into());
                }
                if s.dbname.is_none() {
                    self.error(
                        &at,
                        key,
                        "missing dbname: the connection (e.g. \"host=/var/run/postgresql \
                         dbname=app user=arsip\"); a password comes from PGPASSFILE, never \
                         from here"
                            .into(),
                    );
                }
                if let Some(d) = &s.dbname {
                    if has_password(d.get_ref()) {
                        self.error(
                            &d.span(),
                            &k("dbname"),
                            "a password in the connection string; use a PGPASSFILE".into(),
                        );
                    }
                }
                if let Some(st) = &s.stanza {
                    self.name(st.get_ref(), &st.span(), &k("stanza"));
                }
            }
            None => {}
        }
        let retention = s
            .retention
            .as_ref()
            .map(|r| self.retention(r, &k("retention")));
        Some(Source {
            kind: kind?,
            repository: s.repository.get_ref().clone(),
            rpo: rpo?,
            rto,
            stanza: s.stanza.as_ref().map(|v| v.get_ref().clone()),
            dbname: s.dbname.as_ref().map(|v| v.get_ref().clone()),
            pgdata: s.pgdata.as_ref().map(|v| PathBuf::from(v.get_ref())),
            paths,
            retention,
        })
    }

    fn job(
        &mut self,
        j: &Spanned<raw::Job>,
        key: &str,
        daemon: &Daemon,
        repositories: &BTreeMap<String, Repository>,
        sources: &BTreeMap<String, Source>,
    ) -> Option<Job> {
        let at = j.span();
        let j = j.get_ref();
        let k = |leaf: &str| format!("{key}.{leaf}");
        let kind = self.one_of(&j.kind, &k("type"), &JobKind::ALL)?;
        let zone = j
            .time_zone
            .as_ref()
            .map(|z| z.get_ref().clone())
            .unwrap_or_else(|| daemon.time_zone.clone());
        let schedule = match Schedule::parse(j.schedule.get_ref(), &zone) {
            Ok(s) => Some(s),
            Err(e) => {
                let (span, leaf) = match (&j.time_zone, e.0.starts_with("unknown time zone")) {
                    (Some(z), true) => (z.span(), "time_zone"),
                    _ => (j.schedule.span(), "schedule"),
                };
                self.error(&span, &k(leaf), e.0);
                None
            }
        };
        let (source, repository) = if kind.of_source() {
            if let Some(r) = &j.repository {
                self.error(
                    &r.span(),
                    &k("repository"),
                    "a source's job uses the source's repository; remove this".into(),
                );
            }
            let Some(s) = &j.source else {
                self.error(
                    &at,
                    key,
                    format!("a {} job needs a source", j.kind.get_ref()),
                );
                return None;
            };
            let src = self.reference(s, &k("source"), "source", sources)?;
            if kind == JobKind::WalCheck && src.kind != SourceKind::PgPhysical {
                self.error(
                    &s.span(),
                    &k("source"),
                    "a wal-check job needs a pg-physical source".into(),
                );
            }
            (Some(s.get_ref().clone()), src.repository.clone())
        } else {
            if let Some(s) = &j.source {
                self.error(
                    &s.span(),
                    &k("source"),
                    format!(
                        "a {} job works on a whole repository; give repository",
                        j.kind.get_ref()
                    ),
                );
            }
            let Some(r) = &j.repository else {
                self.error(
                    &at,
                    key,
                    format!("a {} job needs a repository", j.kind.get_ref()),
                );
                return None;
            };
            let repo = self.reference(r, &k("repository"), "repository", repositories)?;
            // A copy is made with storage credentials alone.
            if kind != JobKind::Copy && !repo.has_full_key() {
                self.error(
                    &r.span(),
                    &k("repository"),
                    format!(
                        "{} needs the repository's full key (password_file or key_file); an \
                         agent file only backs up",
                        j.kind.get_ref()
                    ),
                );
            }
            (None, r.get_ref().clone())
        };
        let verify_only = [
            (j.cycle.as_ref().map(|v| v.span()), "cycle"),
            (j.restore_test.as_ref().map(|v| v.span()), "restore_test"),
            (j.sql_checks.first().map(|v| v.span()), "sql_checks"),
        ];
        if kind != JobKind::Verify {
            for (span, leaf) in verify_only {
                if let Some(span) = span {
                    self.error(&span, &k(leaf), "only for verify jobs".into());
                }
            }
        }
        let copy_only = [
            (j.to.as_ref().map(|v| v.span()), "to"),
            (j.after_backups.as_ref().map(|v| v.span()), "after_backups"),
        ];
        if kind != JobKind::Copy {
            for (span, leaf) in copy_only {
                if let Some(span) = span {
                    self.error(&span, &k(leaf), "only for copy jobs".into());
                }
            }
        }
        let to = match (&j.to, kind) {
            (Some(t), JobKind::Copy) => {
                self.reference(t, &k("to"), "repository", repositories)?;
                if t.get_ref() == &repository {
                    self.error(
                        &t.span(),
                        &k("to"),
                        "a copy goes to another repository, not the one it copies".into(),
                    );
                }
                Some(t.get_ref().clone())
            }
            (None, JobKind::Copy) => {
                self.error(&at, key, "a copy job needs to = \"REPOSITORY\"".into());
                return None;
            }
            _ => None,
        };
        let after_backups = j.after_backups.as_ref().is_some_and(|v| *v.get_ref());
        let restore_test = j.restore_test.as_ref().is_some_and(|v| *v.get_ref());
        if !restore_test {
            if let Some(c) = j.sql_checks.first() {
                self.error(
                    &c.span(),
                    &k("sql_checks"),
                    "SQL checks run in the restore test; set restore_test = true".into(),
                );
            }
        }
        let retries = self.count(&j.retries, &k("retries"), 0, 100).unwrap_or(0) as u32;
        let retry_backoff = self
            .duration(&j.retry_backoff, &k("retry_backoff"))
            .unwrap_or(SignedDuration::from_mins(2));
        let timeout = self.duration(&j.timeout, &k("timeout"));
        // Job claims let an attempt run for at most its timeout (FORMAT.md §20.4 relies on
        // no attempt outliving a day).
        if let (Some(t), Some(v)) = (timeout, &j.timeout) {
            if t > SignedDuration::from_hours(24) || t < SignedDuration::from_secs(60) {
                self.error(
                    &v.span(),
                    &k("timeout"),
                    format!("{:?} is out of range (1m–24h)", v.get_ref()),
                );
            }
        }
        let cycle = self.duration(&j.cycle, &k("cycle"));
        let sql_checks = j
            .sql_checks
            .iter()
            .map(|c| SqlCheck {
                database: c
                    .get_ref()
                    .database
                    .as_ref()
                    .map(|d| d.get_ref().clone())
                    .unwrap_or_else(|| "postgres".into()),
                sql: c.get_ref().sql.get_ref().clone(),
            })
            .collect();
        Some(Job {
            kind,
            source,
            repository,
            schedule: schedule?,
            retries,
            retry_backoff,
            timeout,
            cycle,
            restore_test,
            sql_checks,
            to,
            after_backups,
        })
    }

    fn channel(&mut self, ch: &Spanned<raw::Channel>, key: &str) -> Option<Channel> {
        let at = ch.span();
        let c = ch.get_ref();
        let k = |leaf: &str| format!("{key}.{leaf}");
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Webhook,
            Slack,
            Pagerduty,
            Email,
        }
        let kinds = [
            ("webhook", Kind::Webhook),
            ("slack", Kind::Slack),
            ("pagerduty", Kind::Pagerduty),
            ("email", Kind::Email),
        ];
        let kind = self.one_of(&c.kind, &k("type"), &kinds)?;
        // Every key the table gives; those that are not the type's are refused.
        let span = |v: &S<String>| v.as_ref().map(|v| v.span());
        let given = [
            ("url", span(&c.url)),
            ("url_file", span(&c.url_file)),
            ("url_env", span(&c.url_env)),
            ("routing_key", span(&c.routing_key)),
            ("routing_key_file", span(&c.routing_key_file)),
            ("routing_key_env", span(&c.routing_key_env)),
            ("host", span(&c.host)),
            ("port", c.port.as_ref().map(|v| v.span())),
            ("tls", span(&c.tls)),
            ("ca_file", span(&c.ca_file)),
            ("username", span(&c.username)),
            ("password", span(&c.password)),
            ("password_file", span(&c.password_file)),
            ("password_env", span(&c.password_env)),
            ("from", span(&c.from)),
            ("to", c.to.as_ref().map(|v| v.span())),
        ];
        let allowed: &[&str] = match kind {
            Kind::Webhook | Kind::Slack => &["url", "url_file", "url_env"],
            // A PagerDuty channel may name its endpoint (not a secret; tests use it).
            Kind::Pagerduty => &["routing_key", "routing_key_file", "routing_key_env", "url"],
            Kind::Email => &[
                "host",
                "port",
                "tls",
                "ca_file",
                "username",
                "password",
                "password_file",
                "password_env",
                "from",
                "to",
            ],
        };
        for (leaf, span) in given {
            if let Some(span) = span.filter(|_| !allowed.contains(&leaf)) {
                self.error(
                    &span,
                    &k(leaf),
                    format!("not a key of a {} channel", c.kind.get_ref()),
                );
            }
        }
        match kind {
            Kind::Webhook | Kind::Slack => {
                let url = self.secret(&at, &k("url"), &c.url, &c.url_file, &c.url_env, true)?;
                Some(if kind == Kind::Webhook {
                    Channel::Webhook { url }
                } else {
                    Channel::Slack { url }
                })
            }
            Kind::Pagerduty => {
                let routing_key = self.secret(
                    &at,
                    &k("routing_key"),
                    &c.routing_key,
                    &c.routing_key_file,
                    &c.routing_key_env,
                    true,
                )?;
                if let Some(u) = c.url.as_ref().filter(|u| has_userinfo(u.get_ref())) {
                    self.error(
                        &u.span(),
                        &k("url"),
                        "credentials in a URL; the routing key is the secret (routing_key_file)"
                            .into(),
                    );
                }
                Some(Channel::Pagerduty {
                    routing_key,
                    url: c
                        .url
                        .as_ref()
                        .map(|u| u.get_ref().clone())
                        .unwrap_or_else(|| PAGERDUTY_EVENTS_URL.into()),
                })
            }
            Kind::Email => {
                let Some(host) = &c.host else {
                    self.error(&at, key, "an email channel needs host".into());
                    return None;
                };
                let tls = match &c.tls {
                    Some(t) => {
                        let all = [("starttls", SmtpTls::Starttls), ("tls", SmtpTls::Tls)];
                        self.one_of(t, &k("tls"), &all)?
                    }
                    None => SmtpTls::Starttls,
                };
                let default_port = if tls == SmtpTls::Tls { 465 } else { 587 };
                let port = self
                    .count(&c.port, &k("port"), 1, 65535)
                    .unwrap_or(default_port);
                let password = self.secret(
                    &at,
                    &k("password"),
                    &c.password,
                    &c.password_file,
                    &c.password_env,
                    false,
                );
                let Some(from) = &c.from else {
                    self.error(&at, key, "an email channel needs from".into());
                    return None;
                };
                let to: Vec<String> =
                    c.to.as_ref()
                        .map(|t| t.get_ref().clone())
                        .unwrap_or_default();
                if to.is_empty() {
                    self.error(&at, key, "an email channel needs to = [\"…\"]".into());
                }
                for a in std::iter::once(from.get_ref()).chain(&to) {
                    if !a.contains('@') {
                        let span = c.to.as_ref().map(|t| t.span()).unwrap_or(from.span());
                        self.error(&span, key, format!("{a:?} is not an email address"));
                    }
                }
                Some(Channel::Email {
                    host: host.get_ref().clone(),
                    port: port as u16,
                    tls,
                    ca_file: c.ca_file.as_ref().map(|f| self.path(f.get_ref())),
                    username: c.username.as_ref().map(|u| u.get_ref().clone()),
                    password,
                    from: from.get_ref().clone(),
                    to,
                })
            }
        }
    }

    fn alerts(
        &mut self,
        a: Option<&Spanned<raw::Alerts>>,
        channels: &BTreeMap<String, Spanned<raw::Channel>>,
    ) -> Alerts {
        let mut out = Alerts {
            routes: BTreeMap::new(),
            size_tolerance: 0.30,
            duration_factor: 2.0,
            quota_ratio: 0.90,
            repeat_after: None,
        };
        let Some(a) = a else { return out };
        let a = a.get_ref();
        out.repeat_after = self.duration(&a.repeat_after, "alerts.repeat_after");
        if let Some(v) = &a.repeat_after {
            if out
                .repeat_after
                .is_some_and(|d| d < SignedDuration::from_mins(5))
            {
                self.error(
                    &v.span(),
                    "alerts.repeat_after",
                    "repeat an open alert at most every 5 minutes (\"5m\" or more)".into(),
                );
            }
        }
        let severities = [
            ("critical", Severity::Critical),
            ("warning", Severity::Warning),
        ];
        for (sev, names) in &a.routes {
            let key = format!("alerts.routes.{sev}");
            let Some(&(_, s)) = severities.iter().find(|(n, _)| n == sev) else {
                self.error(
                    &names.span(),
                    &key,
                    "severities are critical and warning".into(),
                );
                continue;
            };
            for n in names.get_ref() {
                if !channels.contains_key(n) {
                    let known: Vec<&str> = channels.keys().map(String::as_str).collect();
                    self.error(
                        &names.span(),
                        &key,
                        format!("no [channel.{n}]; known: {}", known.join(", ")),
                    );
                }
            }
            out.routes.insert(s, names.get_ref().clone());
        }
        if let Some(r) = &a.rule {
            let r = r.get_ref();
            let mut share = |v: &Spanned<f64>, key: &str, lo: f64, hi: f64| {
                let x = *v.get_ref();
                if !(lo..=hi).contains(&x) {
                    self.error(&v.span(), key, format!("{x} is out of range ({lo}–{hi})"));
                }
                x
            };
            if let Some(t) = &r.size_anomaly {
                out.size_tolerance = share(
                    &t.get_ref().tolerance,
                    "alerts.rule.SizeAnomaly.tolerance",
                    0.01,
                    10.0,
                );
            }
            if let Some(f) = &r.duration_anomaly {
                out.duration_factor = share(
                    &f.get_ref().factor,
                    "alerts.rule.DurationAnomaly.factor",
                    1.0,
                    100.0,
                );
            }
            if let Some(q) = &r.quota_high {
                out.quota_ratio =
                    share(&q.get_ref().ratio, "alerts.rule.QuotaHigh.ratio", 0.01, 1.0);
            }
        }
        out
    }
}

/// The API's port unless `api.listen` says otherwise.
pub const DEFAULT_PORT: u16 = 9851;

/// Why a secret file cannot be used, if it cannot: it must exist and be readable by its owner,
/// the user arsip runs as, only (systemd credentials, under `$CREDENTIALS_DIRECTORY`, are
/// exempt: systemd owns them).
fn secret_file_problem(p: &Path) -> Option<String> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", p.display())),
    };
    if !meta.is_file() {
        return Some(format!("{} is not a file", p.display()));
    }
    // Both resolved: `creds/../x` and links out of the directory are not exempt.
    let systemd = std::env::var_os("CREDENTIALS_DIRECTORY")
        .filter(|d| !d.is_empty())
        .and_then(|d| std::fs::canonicalize(d).ok())
        .is_some_and(|d| std::fs::canonicalize(p).is_ok_and(|p| p.starts_with(d)));
    let access = FileAccess::of(&meta);
    if !systemd && !access.ours_alone() {
        return Some(format!(
            "{} must be owned by the user arsip runs as and readable by no one else (chmod \
             600; its mode is {:o})",
            p.display(),
            meta.mode() & 0o777
        ));
    }
    None
}

/// Whether a libpq connection string carries a password: the `password` keyword (spaces
/// around `=` allowed, any case) or a URI with a password in its user part.
fn has_password(conn: &str) -> bool {
    let squeezed: String = conn
        .to_ascii_lowercase()
        .split('=')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("=");
    squeezed
        .split_whitespace()
        .any(|w| w.starts_with("password="))
        || squeezed.contains("?password=")
        || squeezed.contains("&password=")
        || has_userinfo(conn)
}

/// `scheme://user:secret@…`.
fn has_userinfo(s: &str) -> bool {
    s.split_once("://").is_some_and(|(_, rest)| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
    })
}

/// `s` with the user part of a URL's authority replaced by `***`.
fn redact_userinfo(s: &str) -> String {
    match s.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
                None => s.to_string(),
            }
        }
        None => s.to_string(),
    }
}

/// A parser message without the values it quotes (`invalid type: integer `8675309123``
/// may be a secret typed without quotes); key names it quotes stay.
fn redact_values(msg: &str) -> String {
    if !(msg.starts_with("invalid type") || msg.starts_with("invalid value")) {
        return msg.to_string();
    }
    let mut out = String::new();
    for (n, part) in msg.split('`').enumerate() {
        if n % 2 == 1 {
            out.push_str("`…`");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A size: a number with an optional unit (`K`, `M`, `G`, `T`, `P` with `B`, `iB` or
/// nothing; all binary).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests;

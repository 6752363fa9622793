//! The daemon's HTTP API (JSON under `/api/v1`), `/metrics` and `/health`, read from the
//! daemon's state ([`crate::state`]): no request lists a repository.
//!
//! - **Every request is authenticated** with `Authorization: Bearer <token>`; tokens come
//!   from files (`api.tokens`), only their blake3 hashes are kept, and comparing hashes is
//!   constant-time. `read` tokens may GET; `operator` tokens may also trigger. A missing or
//!   unknown token is 401, a read token on a mutating call 403; both are counted
//!   (`arsip_api_auth_failures_total`) and never audited (anyone can make them).
//! - **Every authenticated mutating call is audited** in the repository's hash-chained log
//!   (op `api.trigger`, with the token's name and role and the caller's address, never the
//!   token), refused ones included, and journaled.
//! - **The listener** is the daemon's own accept loop: TLS (rustls on ring, TLS 1.2+) when
//!   `api.tls_cert_file` and `api.tls_key_file` are set, the handshake in each connection's
//!   own task with a 10 s limit (a slow client holds up nobody); connections are drained on
//!   shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State as Axum};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use std::collections::BTreeMap;

use arsip_ops::repo::clock::Clock;
use arsip_ops::repo::Repository;

use crate::config::{Config, Role};
use crate::metrics;
use crate::state::{RunRecord, Shared, SourceState};

/// What the API asks of the daemon's loop (the only writer of its state).
#[derive(Debug)]
pub enum Command {
    Trigger {
        job: String,
        by: String,
        reply: oneshot::Sender<Result<Timestamp, TriggerRefused>>,
    },
    /// Cancel the job's run (the one scheduled `scheduled`, when given).
    Cancel {
        job: String,
        by: String,
        scheduled: Option<Timestamp>,
        reply: oneshot::Sender<Result<Timestamp, CancelRefused>>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelRefused {
    #[error("no such job")]
    NoSuchJob,
    #[error("the job has no run pending or running")]
    Idle,
    #[error("the job's run is the one scheduled {0}")]
    OtherRun(Timestamp),
    #[error("the run is running at daemon {0}")]
    AtPeer(String),
    #[error("the daemon is stopping")]
    Stopping,
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TriggerRefused {
    #[error("no such job")]
    NoSuchJob,
    #[error("a run is pending or running (scheduled {0})")]
    Busy(Timestamp),
    #[error("the daemon is stopping")]
    Stopping,
    #[error("{0}")]
    Failed(String),
}

/// A token as the API keeps it: never the token itself.
#[derive(Clone)]
struct Token {
    hash: blake3::Hash,
    name: String,
    role: Role,
}

/// The shortest token accepted (`arsip token generate` makes 64 characters).
pub const MIN_TOKEN_LEN: usize = 32;

/// Write a new API token (256 random bits, hex) into `path`, created with mode 0600; an
/// existing file is kept unless `replace`. The token is never printed.
pub fn write_new_token(path: &std::path::Path, replace: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let token = zeroize::Zeroizing::new(crate::random_hex(32)?.to_string() + "\n");
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let tmp = path.with_extension("new");
    if !replace && path.exists() {
        return Err(format!(
            "{} exists; pass --force to replace the token in it (clients using it stop working)",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(token.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

/// The tokens of `config.api`, read from their files.
pub fn load_tokens(config: &Config) -> Result<Vec<(String, Role, blake3::Hash)>, String> {
    let mut out = Vec::new();
    for t in &config.api.tokens {
        let value = zeroize::Zeroizing::new(t.file.read()?);
        let value = value.trim();
        if value.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "api.tokens.{}: the token in {} is shorter than {MIN_TOKEN_LEN} characters; make one with `arsip token generate`",
                t.name,
                t.file.describe()
            ));
        }
        out.push((t.name.clone(), t.role, blake3::hash(value.as_bytes())));
    }
    Ok(out)
}

/// What every handler shares.
#[derive(Clone)]
pub struct Api {
    /// The configuration and tokens in force: replaced whole when the daemon reloads.
    live: Arc<std::sync::RwLock<Live>>,
    state: Shared,
    commands: mpsc::Sender<Command>,
    auth_failures: Arc<AtomicU64>,
    /// Where mutating calls are audited: the handles the daemon claims runs with.
    repos: Arc<BTreeMap<String, Arc<Repository>>>,
    clock: Arc<dyn Clock>,
    /// Dashboard sessions, by the hash of their cookie.
    sessions: Arc<Sessions>,
    /// Served over TLS: session cookies are `Secure`.
    tls: bool,
    /// Snapshots and audit records, listed after runs end (never per request).
    caches: crate::cache::Caches,
}

struct Live {
    config: Arc<Config>,
    tokens: Arc<Vec<Token>>,
}

fn tokens_of(tokens: Vec<(String, Role, blake3::Hash)>) -> Arc<Vec<Token>> {
    Arc::new(
        tokens
            .into_iter()
            .map(|(name, role, hash)| Token { hash, name, role })
            .collect(),
    )
}

/// The TLS configuration in force, replaced when the daemon reloads (new connections
/// handshake with the new certificate).
pub type Tls = Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>;

/// The dashboard's session cookie, and how long a session lasts.
pub const SESSION_COOKIE: &str = "arsip_session";
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Dashboard sessions held at once.
pub const MAX_SESSIONS: usize = 1000;

type Sessions =
    std::sync::Mutex<std::collections::HashMap<blake3::Hash, (Caller, std::time::Instant)>>;

/// Who called, once authenticated.
#[derive(Clone, Debug)]
struct Caller {
    name: String,
    role: Role,
}

#[derive(Clone, Copy, Debug)]
struct Remote(SocketAddr);

impl Api {
    pub fn new(
        config: Arc<Config>,
        state: Shared,
        commands: mpsc::Sender<Command>,
        tokens: Vec<(String, Role, blake3::Hash)>,
        repos: BTreeMap<String, Arc<Repository>>,
        clock: Arc<dyn Clock>,
    ) -> Api {
        Api {
            live: Arc::new(std::sync::RwLock::new(Live {
                config,
                tokens: tokens_of(tokens),
            })),
            state,
            commands,
            auth_failures: Arc::new(AtomicU64::new(0)),
            repos: Arc::new(repos),
            clock,
            sessions: Arc::new(Default::default()),
            tls: false,
            caches: Default::default(),
        }
    }

    /// The configuration in force.
    fn config(&self) -> Arc<Config> {
        self.live
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .config
            .clone()
    }

    /// Put a reloaded configuration and its tokens in force. Dashboard sessions of tokens
    /// that are gone, or whose role changed, end.
    pub fn reload(&self, config: Arc<Config>, tokens: Vec<(String, Role, blake3::Hash)>) {
        let tokens = tokens_of(tokens);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (c, _)| tokens.iter().any(|t| t.name == c.name && t.role == c.role));
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Live { config, tokens };
    }

    /// Serve snapshots and audit records from `caches`.
    pub fn with_caches(mut self, caches: crate::cache::Caches) -> Api {
        self.caches = caches;
        self
    }

    /// Served over TLS (session cookies get `Secure`).
    pub fn with_tls(mut self, tls: bool) -> Api {
        self.tls = tls;
        self
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics_text))
            .route("/api/v1/status", get(status))
            .route("/api/v1/alerts", get(alerts))
            .route("/api/v1/snapshots", get(snapshots))
            .route("/api/v1/audit", get(audit))
            .route("/api/v1/verifications", get(verifications))
            .route("/api/v1/sources", get(sources))
            .route("/api/v1/sources/{source}", get(source))
            .route("/api/v1/jobs", get(jobs))
            .route("/api/v1/jobs/{job}", get(job))
            .route("/api/v1/jobs/{job}/runs", get(runs))
            .route("/api/v1/jobs/{job}/trigger", post(trigger))
            .route("/api/v1/jobs/{job}/cancel", post(cancel))
            .route("/", get(page_overview))
            .route("/source/{source}", get(page_source))
            .route("/alerts", get(page_alerts))
            .route("/storage", get(page_storage))
            .route("/verify", get(page_verify))
            .route("/login", get(login_form).post(login))
            .route("/static/arsip.css", get(css))
            .route("/static/favicon.svg", get(favicon))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(self.clone(), authenticate))
            .with_state(self.clone())
    }
}

fn error(status: StatusCode, class: &str, message: impl Into<String>, hint: &str) -> Response {
    let mut body = json!({ "error": message.into(), "class": class });
    if !hint.is_empty() {
        body["hint"] = json!(hint);
    }
    (status, Json(body)).into_response()
}

/// The token `presented` names, if any: every token is compared (blake3::Hash's equality is
/// constant-time).
fn token_of(api: &Api, presented: &str) -> Option<Token> {
    let h = blake3::hash(presented.trim().as_bytes());
    let mut hit = None;
    let tokens = api
        .live
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .tokens
        .clone();
    for t in tokens.iter() {
        if t.hash == h {
            hit = Some(t.clone());
        }
    }
    hit
}

/// The dashboard session a request's cookie names, if live.
fn session_of(api: &Api, req: &Request) -> Option<Caller> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    let id = cookies
        .split(';')
        .find_map(|c| c.trim().strip_prefix(&format!("{SESSION_COOKIE}=")))?;
    let mut sessions = api.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let now = std::time::Instant::now();
    sessions.retain(|_, (_, until)| *until > now);
    sessions
        .get(&blake3::hash(id.as_bytes()))
        .map(|(c, _)| c.clone())
}

/// Pages of the dashboard (HTML): an unauthenticated browser is sent to the login page.
fn is_page(path: &str) -> bool {
    !(path.starts_with("/api/") || path == "/metrics" || path == "/health")
}

async fn authenticate(Axum(api): Axum<Api>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // The login page, the stylesheet and the icon are open: nothing in them is the site's.
    if path == "/login" || path.starts_with("/static/") {
        return next.run(req).await;
    }
    let mutating = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let caller = match &bearer {
        Some(b) => token_of(&api, b).map(|t| Caller {
            name: t.name,
            role: t.role,
        }),
        // A session cookie reads; it never changes anything (no CSRF to defend against).
        None if !mutating => session_of(&api, &req),
        None => None,
    };
    let Some(caller) = caller else {
        api.auth_failures.fetch_add(1, Ordering::Relaxed);
        if bearer.is_none() && !mutating && is_page(&path) {
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/login")],
                "sign in at /login",
            )
                .into_response();
        }
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is needed",
            "send Authorization: Bearer <token> with a token from api.tokens",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    if mutating && caller.role != Role::Operator {
        api.auth_failures.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {:?} is read-only", caller.name),
            "use an operator token",
        );
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
        "see docs/API.md",
    )
}

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, crate::dashboard::CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

async fn page_overview(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    html(crate::dashboard::overview(
        &api.config(),
        &s,
        api.clock.now(),
    ))
}

async fn page_source(Axum(api): Axum<Api>, Path(name): Path<String>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    match crate::dashboard::source(&api.config(), &s, &name, api.clock.now()) {
        Some(p) => html(p),
        None => (
            StatusCode::NOT_FOUND,
            html(format!("no source {}", crate::dashboard::esc(&name))),
        )
            .into_response(),
    }
}

async fn page_alerts(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    html(crate::dashboard::alerts(&api.config(), &s, api.clock.now()))
}

async fn page_storage(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    html(crate::dashboard::storage(
        &api.config(),
        &s,
        api.clock.now(),
    ))
}

async fn page_verify(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    html(crate::dashboard::verify(&api.config(), &s, api.clock.now()))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        crate::dashboard::CSS,
    )
        .into_response()
}

async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        crate::dashboard::FAVICON,
    )
        .into_response()
}

async fn login_form() -> Response {
    html(crate::dashboard::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Trade a token for a session cookie (HttpOnly, SameSite=Strict, Secure under TLS, 12 h).
async fn login(Axum(api): Axum<Api>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    let form = zeroize::Zeroizing::new(form.token);
    let Some(t) = token_of(&api, &form) else {
        api.auth_failures.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            html(crate::dashboard::login(Some(
                "That is not one of this daemon's tokens.",
            ))),
        )
            .into_response();
    };
    let id = match crate::random_hex(32) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "failed", e, ""),
    };
    let mut sessions = api.sessions.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: past the cap, the session that ends soonest goes.
    if sessions.len() >= MAX_SESSIONS {
        let soonest = sessions
            .iter()
            .min_by_key(|(_, (_, until))| *until)
            .map(|(k, _)| *k);
        if let Some(k) = soonest {
            sessions.remove(&k);
        }
    }
    sessions.insert(
        blake3::hash(id.as_bytes()),
        (
            Caller {
                name: t.name,
                role: Role::Read,
            },
            std::time::Instant::now() + SESSION_TTL,
        ),
    );
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        id.as_str(),
        SESSION_TTL.as_secs(),
        if api.tls { "; Secure" } else { "" }
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
        "signed in",
    )
        .into_response()
}

async fn health(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    Json(json!({
        "status": if s.stopping { "stopping" } else { "ok" },
        "daemon": s.daemon,
        "started": s.started,
    }))
    .into_response()
}

async fn metrics_text(Axum(api): Axum<Api>) -> Response {
    let extra = metrics::Extra {
        auth_failures: api.auth_failures.load(Ordering::Relaxed),
    };
    let text = {
        let s = api.state.read().unwrap_or_else(|p| p.into_inner());
        metrics::render(&api.config(), &s, &extra)
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(Serialize)]
struct SourceView {
    name: String,
    kind: &'static str,
    repository: String,
    rpo_seconds: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    rto_seconds: Option<i64>,
    /// `ok`, `failed` (the last run failed), `stale` (no success within the RPO),
    /// `never` (no success yet), `running`.
    status: &'static str,
    /// The newest success is younger than the RPO.
    rpo_ok: bool,
    #[serde(flatten)]
    state: SourceState,
}

fn source_view(
    config: &Config,
    state: &crate::state::State,
    name: &str,
    now: Timestamp,
) -> Option<SourceView> {
    let s = config.sources.get(name)?;
    let st = state.source(config, name);
    let (status, rpo_ok) = crate::status::word(&st, s.rpo, now);
    Some(SourceView {
        name: name.to_string(),
        kind: metrics::kind_name(s.kind),
        repository: s.repository.clone(),
        rpo_seconds: s.rpo.as_secs(),
        rto_seconds: s.rto.map(|d| d.as_secs()),
        status,
        rpo_ok,
        state: st,
    })
}

async fn status(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    Json(crate::status::report(&api.config(), &s, api.clock.now())).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    source: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

/// Snapshots of every listed repository, newest first (`source`, `kind`, `limit`).
async fn snapshots(Axum(api): Axum<Api>, Query(q): Query<ListQuery>) -> Response {
    let caches = api.caches.read().unwrap_or_else(|p| p.into_inner());
    let mut all: Vec<serde_json::Value> = Vec::new();
    for (repo, c) in caches.iter() {
        for s in &c.snapshots {
            if q.source.as_ref().is_some_and(|x| x != &s.source)
                || q.kind.as_ref().is_some_and(|x| x != &s.kind)
            {
                continue;
            }
            let mut v = json!(s);
            v["repository"] = json!(repo);
            all.push(v);
        }
    }
    all.sort_by(|a, b| b["time"].as_str().cmp(&a["time"].as_str()));
    all.truncate(q.limit.unwrap_or(200));
    Json(json!({
        "snapshots": all,
        "listed": caches.iter().map(|(r, c)| (r.clone(), json!({ "at": c.listed, "error": c.error }))).collect::<BTreeMap<_, _>>(),
    }))
    .into_response()
}

/// Each listed repository's audit log, newest first (`limit` per repository, default 100),
/// and whether its chain verified.
async fn audit(Axum(api): Axum<Api>, Query(q): Query<ListQuery>) -> Response {
    let caches = api.caches.read().unwrap_or_else(|p| p.into_inner());
    let out: BTreeMap<&String, serde_json::Value> = caches
        .iter()
        .map(|(r, c)| {
            let records: Vec<_> = c.audit.iter().rev().take(q.limit.unwrap_or(100)).collect();
            (
                r,
                json!({ "verified": c.audit_ok, "listed": c.listed, "records": records }),
            )
        })
        .collect();
    Json(out).into_response()
}

/// The verify jobs' runs, newest first, with their findings and restore tests.
async fn verifications(Axum(api): Axum<Api>, Query(q): Query<ListQuery>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    let mut runs: Vec<serde_json::Value> = Vec::new();
    let config = api.config();
    for (job, def) in &config.jobs {
        if def.kind != crate::config::JobKind::Verify {
            continue;
        }
        for r in s.jobs.get(job).into_iter().flat_map(|j| j.history.iter()) {
            let mut v = json!(r);
            v["job"] = json!(job);
            v["repository"] = json!(def.repository);
            runs.push(v);
        }
    }
    runs.sort_by(|a, b| b["finished"].as_str().cmp(&a["finished"].as_str()));
    runs.truncate(q.limit.unwrap_or(100));
    Json(runs).into_response()
}

/// Open alerts, and cleared ones whose resolve is still owed somewhere.
async fn alerts(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    Json(json!({
        "open": s.alerts.open.values().collect::<Vec<_>>(),
        "resolving": s.alerts.resolving.values().collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn sources(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    let now = api.clock.now();
    let config = api.config();
    let all: Vec<SourceView> = config
        .sources
        .keys()
        .filter_map(|n| source_view(&config, &s, n, now))
        .collect();
    Json(all).into_response()
}

async fn source(Axum(api): Axum<Api>, Path(name): Path<String>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    match source_view(&api.config(), &s, &name, api.clock.now()) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no source {name:?}"),
            "",
        ),
    }
}

#[derive(Serialize)]
struct JobView {
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    target: String,
    schedule: String,
    time_zone: String,
    next_run: Option<Timestamp>,
    running: Option<crate::state::Running>,
    last_run: Option<RunRecord>,
    last_success: Option<RunRecord>,
    consecutive_failures: u32,
    runs_total: std::collections::BTreeMap<String, u64>,
}

fn job_view(config: &Config, state: &crate::state::State, name: &str) -> Option<JobView> {
    let def = config.jobs.get(name)?;
    let j = state.jobs.get(name).cloned().unwrap_or_default();
    Some(JobView {
        name: name.to_string(),
        kind: metrics::job_type(def.kind),
        target: def.source.clone().unwrap_or_else(|| def.repository.clone()),
        schedule: def.schedule.expr().to_string(),
        time_zone: def.schedule.zone_name().to_string(),
        next_run: metrics::next_due(config, state, name),
        running: j.running,
        last_run: j.last_run,
        last_success: j.last_success,
        consecutive_failures: j.consecutive_failures,
        runs_total: j.runs_total,
    })
}

async fn jobs(Axum(api): Axum<Api>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    let config = api.config();
    let all: Vec<JobView> = config
        .jobs
        .keys()
        .filter_map(|n| job_view(&config, &s, n))
        .collect();
    Json(all).into_response()
}

async fn job(Axum(api): Axum<Api>, Path(name): Path<String>) -> Response {
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    match job_view(&api.config(), &s, &name) {
        Some(v) => Json(v).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {name:?}"),
            "",
        ),
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
    before: Option<Timestamp>,
}

/// A job's runs, newest first (`limit`, default 50; `before`: scheduled before this time).
async fn runs(
    Axum(api): Axum<Api>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Response {
    if !api.config().jobs.contains_key(&name) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {name:?}"),
            "",
        );
    }
    let s = api.state.read().unwrap_or_else(|p| p.into_inner());
    let limit = q.limit.unwrap_or(50).min(crate::state::HISTORY);
    let runs: Vec<&RunRecord> = s
        .jobs
        .get(&name)
        .into_iter()
        .flat_map(|j| j.history.iter().rev())
        .filter(|r| q.before.is_none_or(|b| r.scheduled < b))
        .take(limit)
        .collect();
    Json(runs).into_response()
}

async fn trigger(
    Axum(api): Axum<Api>,
    Path(name): Path<String>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<Remote>>,
) -> Response {
    let by = caller.name.clone();
    let job = name.clone();
    let result = ask(
        &api,
        |reply| Command::Trigger { job, by, reply },
        TriggerRefused::Stopping,
    )
    .await;
    audit_call(&api, "api.trigger", &name, &caller, remote, &result).await;
    match result {
        Ok(t) => accepted(&name, t),
        Err(TriggerRefused::NoSuchJob) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {name:?}"),
            "",
        ),
        Err(TriggerRefused::Busy(t)) => error(
            StatusCode::CONFLICT,
            "busy",
            format!("job {name:?} has a run pending or running (scheduled {t})"),
            "wait for it to end (GET /api/v1/jobs/{job})",
        ),
        Err(TriggerRefused::Stopping) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the daemon is stopping",
            "trigger the job on a running daemon",
        ),
        Err(TriggerRefused::Failed(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, "failed", m, ""),
    }
}

#[derive(Deserialize)]
struct CancelQuery {
    /// Cancel only this run (its scheduled time), not whatever runs when the call arrives.
    scheduled: Option<Timestamp>,
}

async fn cancel(
    Axum(api): Axum<Api>,
    Path(name): Path<String>,
    Query(q): Query<CancelQuery>,
    Extension(caller): Extension<Caller>,
    remote: Option<Extension<Remote>>,
) -> Response {
    let by = caller.name.clone();
    let job = name.clone();
    let result = ask(
        &api,
        |reply| Command::Cancel {
            job,
            by,
            scheduled: q.scheduled,
            reply,
        },
        CancelRefused::Stopping,
    )
    .await;
    audit_call(&api, "api.cancel", &name, &caller, remote, &result).await;
    match result {
        Ok(t) => accepted(&name, t),
        Err(CancelRefused::NoSuchJob) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no job {name:?}"),
            "",
        ),
        Err(CancelRefused::Idle) => error(
            StatusCode::CONFLICT,
            "idle",
            format!("job {name:?} has no run pending or running"),
            "",
        ),
        Err(CancelRefused::OtherRun(t)) => error(
            StatusCode::CONFLICT,
            "other_run",
            format!("job {name:?} is at its run scheduled {t}, not the one asked for"),
            "look at the job (GET /api/v1/jobs/{job}) and cancel with its run's time",
        ),
        Err(CancelRefused::AtPeer(daemon)) => error(
            StatusCode::CONFLICT,
            "at_peer",
            format!("job {name:?}'s run is running at daemon {daemon}, not here"),
            "cancel it through that daemon's API",
        ),
        Err(CancelRefused::Stopping) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the daemon is stopping; its running jobs stop with it",
            "",
        ),
        Err(CancelRefused::Failed(m)) => error(StatusCode::INTERNAL_SERVER_ERROR, "failed", m, ""),
    }
}

/// Send the daemon's loop a command and wait for its answer; `stopping` when the loop no
/// longer takes commands.
async fn ask<E>(
    api: &Api,
    command: impl FnOnce(oneshot::Sender<Result<Timestamp, E>>) -> Command,
    stopping: E,
) -> Result<Timestamp, E> {
    let (tx, rx) = oneshot::channel();
    if api.commands.send(command(tx)).await.is_err() {
        return Err(stopping);
    }
    rx.await.unwrap_or(Err(stopping))
}

/// `202 {job, scheduled}`: the run a trigger or cancel is about.
fn accepted(job: &str, scheduled: Timestamp) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({ "job": job, "scheduled": scheduled })),
    )
        .into_response()
}

/// Record a mutating call about job `name` in the job's repository's audit log: who
/// (the token's name and role, never the token), from where, and what came of it. An
/// unknown job has no repository: only a log line says it was refused.
async fn audit_call<E: std::fmt::Display>(
    api: &Api,
    op: &str,
    name: &str,
    caller: &Caller,
    remote: Option<Extension<Remote>>,
    result: &Result<Timestamp, E>,
) {
    let Some(repo) = api
        .config()
        .jobs
        .get(name)
        .and_then(|j| api.repos.get(&j.repository).cloned())
    else {
        tracing::info!(job = %name, token = %caller.name, op, "api: call about an unknown job refused");
        return;
    };
    let mut details = arsip_ops::audit::details([
        ("job", json!(name)),
        ("token", json!(caller.name)),
        (
            "role",
            json!(match caller.role {
                Role::Read => "read",
                Role::Operator => "operator",
            }),
        ),
    ]);
    if let Some(Extension(Remote(a))) = remote {
        details.insert("remote".into(), json!(a.to_string()));
    }
    let (outcome, message) = match result {
        Ok(t) => {
            details.insert("run".into(), json!(t));
            ("ok".to_string(), None)
        }
        Err(e) => ("refused".to_string(), Some(e.to_string())),
    };
    let event = arsip_ops::audit::AuditEvent {
        op: op.into(),
        details,
        result: outcome,
        message,
    };
    if let Err(e) = repo.audit_append(event).await {
        tracing::warn!(job = %name, op, error = %e, "api: could not append the call to the audit log");
    }
}

// ---- the listener ---------------------------------------------------------------------

/// A TLS acceptor for `cert` (PEM chain) and `key` (PEM private key).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("api.tls_cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "api.tls_cert_file {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| format!("api.tls_key_file: no private key in it ({e})"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("api TLS: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serve `router` on `listener` (through `tls` when given) until `stop` completes, then
/// drain open connections for up to `drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Tls>,
    router: Router,
    stop: impl std::future::Future<Output = ()>,
    drain: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut stop => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "api: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = router.clone().layer(Extension(Remote(remote)));
        let watcher = graceful.watcher();
        let tls = tls
            .as_ref()
            .map(|t| t.read().unwrap_or_else(|p| p.into_inner()).clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, app, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => connection(s, app, watcher).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "api: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%remote, "api: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("api: connections still open after the drain period; closing them");
    }
}

async fn connection<IO>(io: IO, app: Router, watcher: hyper_util::server::graceful::Watcher)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(error = %e, "api: connection ended with an error");
    }
}

#[cfg(test)]
mod tests;

//! `arsip serve` end to end: daemons started as users start them, their clock moved by the
//! test (`ARSIP_TEST_CLOCK_FILE`, test-hooks builds only). A scheduled backup is made at its
//! time with its job's tags and the daemon stops cleanly on SIGTERM; two daemons on one S3
//! repository make one snapshot per occurrence; a daemon killed (`kill -9`) mid-backup is
//! taken over by the other; a daemon stopped (SIGSTOP) past its claim's lifetime commits
//! nothing when it resumes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Arsip;

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`wait_for`] a condition on daemon journals; a timeout shows them.
fn wait_journals(what: &str, states: &[&Path], mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(180);
    while !f() {
        if Instant::now() >= end {
            let all: Vec<String> = states
                .iter()
                .map(|s| format!("== {}\n{}", s.display(), journal(s)))
                .collect();
            panic!("timed out waiting for {what}\n{}", all.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn journal(state: &Path) -> String {
    let Ok(dir) = std::fs::read_dir(state.join("journal")) else {
        return String::new();
    };
    dir.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect()
}

/// The journal's run_finished entries of `scheduled`: (outcome, the peer that ran it).
fn finished(state: &Path, scheduled: &str) -> Vec<(String, Option<String>)> {
    journal(state)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "run_finished" && e["scheduled"] == scheduled)
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_string(),
                e["peer"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// Days (`YYYY-MM-DD`) from a month after today on: a daemon's test clock must run ahead of
/// the store's (real) clock, as the tests move it on by days, whatever day they run on.
#[allow(clippy::disallowed_methods)] // the real clock is the point
fn days(n: usize) -> Vec<String> {
    let first = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        + jiff::Span::new().days(30);
    (0..n)
        .map(|i| (first + jiff::Span::new().days(i as i64)).to_string())
        .collect()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), sig).unwrap();
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < end, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A site: one repository, the `config` source (a directory), a daily backup at 02:00
/// Jakarta time, and the clock file every daemon reads.
struct Site {
    dir: PathBuf,
    a: Arsip,
    clock: PathBuf,
    data: PathBuf,
    /// Claims' lifetime (seconds): short, so that takeovers happen within a test.
    ttl: &'static str,
}

impl Site {
    fn new(dir: &Path, s3: bool) -> Site {
        let a = if s3 {
            Arsip::s3(dir)
        } else {
            Arsip::local(dir)
        };
        a.ok(&["init"]);
        let password = dir.join("password");
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("app.env"), "JWT_SECRET=not-in-any-log\n").unwrap();
        let clock = dir.join("clock");
        Site {
            dir: dir.into(),
            a,
            clock,
            data,
            ttl: "3",
        }
    }

    /// Move every daemon's clock (atomically: a daemon never reads a half-written file).
    fn set_clock(&self, t: &str) {
        let tmp = self.clock.with_extension("new");
        std::fs::write(&tmp, format!("{t}\n")).unwrap();
        std::fs::rename(&tmp, &self.clock).unwrap();
    }

    /// The configuration of daemon `name` (its own state directory).
    fn config(&self, name: &str, extra: &str) -> (PathBuf, PathBuf) {
        let state = self.dir.join(format!("state-{name}"));
        let mut s3 = String::new();
        if let Some(endpoint) = self.a.env.iter().find(|(k, _)| k == "ARSIP_S3_ENDPOINT") {
            let key = self.dir.join("s3-key");
            std::fs::write(&key, "testing\n").unwrap();
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            s3 = format!(
                "endpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id_file = \"{k}\"\nsecret_access_key_file = \"{k}\"\n",
                endpoint.1,
                k = key.display()
            );
        }
        let path = self.dir.join(format!("arsip-{name}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"version = 1
[daemon]
state_dir = "{state}"
shutdown_grace = "10s"

[repository.main]
location = "{repo}"
password_file = "{password}"
{s3}
[source.config]
kind = "files"
repository = "main"
paths = ["{data}"]
rpo = "24h"

[job.config-daily]
type = "backup"
source = "config"
schedule = "0 2 * * *"
time_zone = "Asia/Jakarta"
retries = 2
retry_backoff = "1m"
{extra}
"#,
                state = state.display(),
                repo = self.a.repo,
                password = self.dir.join("password").display(),
                data = self.data.display(),
            ),
        )
        .unwrap();
        (path, state)
    }

    fn serve(&self, name: &str) -> (Child, PathBuf) {
        self.serve_with(name, "")
    }

    /// A daemon whose configuration has `extra` at its end.
    fn serve_with(&self, name: &str, extra: &str) -> (Child, PathBuf) {
        let (config, state) = self.config(name, extra);
        let started = journal(&state).matches("config_loaded").count();
        let child = self
            .a
            .with_env("ARSIP_TEST_CLOCK_FILE", self.clock.to_str().unwrap())
            .with_env("ARSIP_TEST_SESSION_TTL", self.ttl)
            .with_env("ARSIP_LOG", "info")
            .cmd(&["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the daemon to start", Duration::from_secs(60), || {
            journal(&state).matches("config_loaded").count() > started
        });
        (child, state)
    }

    /// A read token's file (`prometheus` in [`api_section`]) and an operator's (`oncall`),
    /// made by `arsip token generate`.
    fn token_files(&self) -> (PathBuf, PathBuf) {
        let (read, operator) = (self.dir.join("read.token"), self.dir.join("oncall.token"));
        for f in [&read, &operator] {
            self.a.ok(&["token", "generate", f.to_str().unwrap()]);
        }
        (read, operator)
    }

    fn snapshots_of(&self, scheduled: &str) -> usize {
        let s = self.a.json(&["snapshots"]);
        s.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["tags"]["arsip.scheduled"] == scheduled)
            .count()
    }
}

#[test]
fn serve_runs_a_scheduled_backup_at_its_time_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    let day = &days(1)[0];
    let at = format!("{day}T19:00:00Z");
    site.set_clock(&format!("{day}T18:59:00Z")); // 01:59 in Jakarta
    let (mut child, state) = site.serve("a");
    assert!(
        site.a.json(&["snapshots"]).as_array().unwrap().is_empty(),
        "nothing before its time"
    );
    site.set_clock(&format!("{day}T19:00:01Z"));
    wait_for("the scheduled run", Duration::from_secs(120), || {
        !finished(&state, &at).is_empty()
    });
    let snaps = site.a.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["tags"]["arsip.job"], "config-daily");
    assert_eq!(finished(&state, &at), [("ok".to_string(), None)]);
    signal(&child, rustix::process::Signal::TERM);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(
        !err.contains("not-in-any-log"),
        "a secret in the log: {err}"
    );
    assert!(
        !err.contains("correct horse"),
        "the password in the log: {err}"
    );
}

/// High availability on the S3 server: two daemons with the same jobs make one snapshot per
/// occurrence over three days; then one is killed mid-backup and the other takes the run
/// over once the claim lapses; then one is stopped past its claim's lifetime and commits
/// nothing when it resumes.
#[test]
fn two_daemons_on_one_s3_repository_run_each_occurrence_once() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), true);
    let days = days(5);
    site.set_clock(&format!("{}T18:00:00Z", days[0]));
    let (mut a, state_a) = site.serve("a");
    let (mut b, state_b) = site.serve("b");
    for day in &days[..3] {
        let at = format!("{day}T19:00:00Z");
        site.set_clock(&format!("{day}T19:00:01Z"));
        wait_for(
            &format!("both daemons to finish {at}"),
            Duration::from_secs(120),
            || !finished(&state_a, &at).is_empty() && !finished(&state_b, &at).is_empty(),
        );
        let (fa, fb) = (finished(&state_a, &at), finished(&state_b, &at));
        assert_eq!(
            (fa[0].0.as_str(), fb[0].0.as_str()),
            ("ok", "ok"),
            "{fa:?} {fb:?}"
        );
        assert!(
            fa[0].1.is_some() != fb[0].1.is_some(),
            "exactly one daemon ran {at}: {fa:?} {fb:?}"
        );
        assert_eq!(site.snapshots_of(&at), 1, "{at}");
    }
    // Day 4: a big file makes the backup take a while; B is stopped first, so A runs it,
    // and A is killed in the middle.
    signal(&b, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut b, Duration::from_secs(30)).success());
    std::fs::write(
        site.data.join("big.bin"),
        arsip_testkit::sample_data(96 << 20, 7),
    )
    .unwrap();
    let day4 = &format!("{}T19:00:00Z", days[3]);
    site.set_clock(&format!("{}T19:00:01Z", days[3]));
    wait_for("A to start day 4", Duration::from_secs(60), || {
        journal(&state_a).contains(&format!(
            r#""kind":"attempt_started","job":"config-daily","scheduled":"{day4}""#
        ))
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(&a, rustix::process::Signal::KILL);
    let _ = a.wait();
    assert!(
        finished(&state_a, day4).is_empty(),
        "A was killed before it finished"
    );
    // B comes back (still within the catch-up window), waits for A's claim to lapse on the
    // store's clock, and takes the run over.
    let (mut b, state_b) = site.serve("b");
    wait_journals("B to take day 4 over", &[&state_a, &state_b], || {
        !finished(&state_b, day4).is_empty()
    });
    // `warnings`: the day's backup is 96 MiB larger than the median, a size anomaly.
    assert_eq!(finished(&state_b, day4), [("warnings".to_string(), None)]);
    assert!(journal(&state_b).contains("size: "), "the anomaly is named");
    assert_eq!(site.snapshots_of(day4), 1);
    // Day 5: A (restarted) runs it and is stopped mid-backup past its claim's lifetime; B
    // takes over and commits; A, resumed, must not commit a second snapshot.
    signal(&b, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut b, Duration::from_secs(30)).success());
    let (mut a, state_a) = site.serve("a");
    // New data again, so that this backup takes a while too.
    std::fs::write(
        site.data.join("big.bin"),
        arsip_testkit::sample_data(96 << 20, 8),
    )
    .unwrap();
    let day5 = &format!("{}T19:00:00Z", days[4]);
    site.set_clock(&format!("{}T19:00:01Z", days[4]));
    wait_journals("A to start day 5", &[&state_a, &state_b], || {
        journal(&state_a).contains(&format!(
            r#""kind":"attempt_started","job":"config-daily","scheduled":"{day5}""#
        ))
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(&a, rustix::process::Signal::STOP);
    let (mut b, state_b) = site.serve("b");
    wait_journals("B to take day 5 over", &[&state_a, &state_b], || {
        !finished(&state_b, day5).is_empty()
    });
    let f = finished(&state_b, day5);
    assert!(
        matches!(f[0].0.as_str(), "ok" | "warnings") && f[0].1.is_none(),
        "{f:?}"
    );
    signal(&a, rustix::process::Signal::CONT);
    // A's attempt fails at its commit (its claim is no longer held) and is retried after
    // the backoff; the retry finds B's result. Both need A's clock to move on.
    wait_journals("A's attempt to be refused", &[&state_a, &state_b], || {
        journal(&state_a).contains("no longer held")
    });
    site.set_clock(&format!("{}T19:10:00Z", days[4]));
    wait_journals("A to give day 5 up", &[&state_a, &state_b], || {
        !finished(&state_a, day5).is_empty()
    });
    let f = finished(&state_a, day5);
    assert!(f[0].1.is_some(), "A records B's run: {f:?}");
    assert_eq!(
        site.snapshots_of(day5),
        1,
        "the resumed daemon committed a second snapshot"
    );
    for c in [&mut a, &mut b] {
        signal(c, rustix::process::Signal::TERM);
        assert!(wait_exit(c, Duration::from_secs(30)).success());
    }
}

/// The HTTP API of a running daemon: every request needs a token, `/metrics` tells "never
/// succeeded" from "succeeded" without touching the repository, a read token cannot trigger,
/// an operator's trigger runs the job once (claimed like a scheduled run) and is audited
/// with the token's name, never the token.
#[test]
fn the_api_serves_metrics_and_an_operator_triggers_an_audited_backup() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    let (read, operator) = site.token_files();
    for f in [&read, &operator] {
        let mode = std::fs::metadata(f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = site.a.run(&["token", "generate", read.to_str().unwrap()]);
    assert!(!again.status.success(), "an existing token file is kept");
    let (read_token, operator_token) = (token(&read), token(&operator));
    let day = &days(1)[0];
    site.set_clock(&format!("{day}T10:00:00Z"));
    let (mut child, state) = site.serve_with("a", &api_section(&read, &operator));
    let http = Http::of(&state);
    let base = http.base.as_str();
    let get = |path: &str, token: Option<&str>| http.get(path, token);
    let post = |path: &str, token: &str| http.post(path, token);
    assert_eq!(get("/metrics", None).0, 401);
    let (status, text) = get("/metrics", Some(&read_token));
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"arsip_source_configured{repo="main",source="config",kind="files"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("arsip_source_backup_last_success_timestamp_seconds"),
        "{text}"
    );
    // `arsip status` finds the daemon through its configuration: never backed up, exit 1.
    let config_file = dir.path().join("arsip-a.toml");
    let cfg = config_file.to_str().unwrap();
    let out = site.a.run(&["status", "--config", cfg, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sources"][0]["status"], "never", "{report}");
    let trigger = "/api/v1/jobs/config-daily/trigger";
    assert_eq!(post(trigger, &read_token).0, 403);
    let (status, body) = post(trigger, &operator_token);
    assert_eq!(status, 202, "{body}");
    let scheduled = format!("{day}T10:00:00Z");
    assert!(body.contains(&scheduled), "{body}");
    wait_for("the triggered run", Duration::from_secs(120), || {
        !finished(&state, &scheduled).is_empty()
    });
    assert_eq!(finished(&state, &scheduled), [("ok".to_string(), None)]);
    assert_eq!(site.snapshots_of(&scheduled), 1);
    let (_, text) = get("/metrics", Some(&read_token));
    assert!(
        text.contains(r#"arsip_source_backup_last_run_ok{repo="main",source="config"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"arsip_source_backup_last_success_timestamp_seconds{repo="main",source="config"}"#
        ),
        "{text}"
    );
    let human = site.a.ok(&["status", "--config", cfg]);
    assert!(
        human.contains("config") && human.contains(" OK "),
        "{human}"
    );
    let report = site.a.json(&[
        "status",
        "--daemon",
        base,
        "--token-file",
        read.to_str().unwrap(),
    ]);
    assert_eq!(report["sources"][0]["status"], "ok", "{report}");
    assert_eq!(report["sources"][0]["ok_7d"], 1);
    // Without the daemon: the same from the repository's job claims and snapshots.
    let report = site
        .a
        .json(&["status", "--config", cfg, "--from-repository"]);
    let src = &report["sources"][0];
    assert_eq!(
        (src["status"].as_str(), src["ok_7d"].as_u64()),
        (Some("ok"), Some(1)),
        "{report}"
    );
    assert!(
        src["last_backup"]["logical_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    let (_, runs) = get("/api/v1/jobs/config-daily/runs", Some(&read_token));
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs[0]["triggered_by"], "oncall", "{runs}");
    assert!(
        runs[0]["facts"]["logical_bytes"].as_u64().unwrap() > 0,
        "{runs}"
    );
    // The API's listings of the repository, refreshed after the run (not per request).
    wait_for(
        "the API's snapshot listing",
        Duration::from_secs(60),
        || {
            let (_, body) = get("/api/v1/snapshots?source=", Some(&read_token));
            body.contains(&scheduled)
        },
    );
    let (_, body) = get("/api/v1/snapshots", Some(&read_token));
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["snapshots"][0]["tags"]["arsip.scheduled"],
        scheduled.as_str(),
        "{listed}"
    );
    let (_, body) = get("/api/v1/audit", Some(&read_token));
    let audit: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(audit["main"]["verified"], true, "{audit}");
    assert!(body.contains("api.trigger"), "{body}");
    // The audit log has the trigger, with the token's name and never its value.
    let audit = site.a.json(&["audit"]);
    let text = audit.to_string();
    assert!(
        text.contains("api.trigger") && text.contains("oncall"),
        "{text}"
    );
    for secret in [&read_token, &operator_token] {
        assert!(!text.contains(secret.as_str()), "a token in the audit log");
        assert!(
            !journal(&state).contains(secret.as_str()),
            "a token in the journal"
        );
    }
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    for secret in [&read_token, &operator_token] {
        assert!(!err.contains(secret.as_str()), "a token in the log");
    }
}

/// A token file's token.
fn token(f: &Path) -> String {
    std::fs::read_to_string(f).unwrap().trim().to_string()
}

/// The `[api]` section of a daemon on a free port with a read token (`prometheus`) and an
/// operator token (`oncall`) in these files.
fn api_section(read: &Path, operator: &Path) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntokens = [{{ name = \"prometheus\", role = \"read\", file = \"{}\" }}, {{ name = \"oncall\", role = \"operator\", file = \"{}\" }}]\n",
        read.display(),
        operator.display()
    )
}

/// A client of a daemon's API, found through its state directory.
struct Http {
    base: String,
    rt: tokio::runtime::Runtime,
    c: reqwest::Client,
}

impl Http {
    fn of(state: &Path) -> Http {
        Http::with(state, reqwest::Client::new())
    }

    /// Over TLS, trusting only the certificate authority in `ca`.
    fn trusting(state: &Path, ca: &Path) -> Http {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let c = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            // Every request handshakes anew: the certificate served now is what counts.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Http::with(state, c)
    }

    fn with(state: &Path, c: reqwest::Client) -> Http {
        // The daemon writes the address once it listens, a moment after its journal's
        // first entry (what `Site::serve` waits for).
        let file = state.join("api-address");
        wait_for("the API's address", Duration::from_secs(60), || {
            file.exists()
        });
        let base = std::fs::read_to_string(&file).unwrap();
        Http {
            base: base.trim().to_string(),
            rt: tokio::runtime::Runtime::new().unwrap(),
            c,
        }
    }

    /// Whether a request over this client's TLS trust gets an answer at all.
    fn reaches(&self) -> bool {
        let r = self.c.get(format!("{}/health", self.base));
        self.rt.block_on(async { r.send().await.is_ok() })
    }

    /// A gauge's value in `/metrics` (its full series, labels included, as `series`).
    fn metric(&self, token: &str, series: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics", Some(token));
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn send(&self, r: reqwest::RequestBuilder) -> (u16, String) {
        self.rt.block_on(async {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut r = self.c.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        self.send(r)
    }

    fn post(&self, path: &str, token: &str) -> (u16, String) {
        self.send(
            self.c
                .post(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
    }
}

/// An operator cancels a backup that hangs (its PostgreSQL server accepts connections and
/// never answers): the attempt stops at once, the run ends `cancelled` with no retry though
/// retries are configured, its claim's result in the repository is final, and the call is
/// audited; a cancel of a job with nothing running, or of another run, is refused.
#[test]
fn an_operator_cancels_a_hung_backup_and_no_retry_follows() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    let (read, operator) = site.token_files();
    // A server that takes connections (the kernel completes them into the backlog) and
    // never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let day = &days(1)[0];
    site.set_clock(&format!("{day}T10:00:00Z"));
    let extra = format!(
        r#"
[source.hung]
kind = "pg-logical"
repository = "main"
dbname = "host=127.0.0.1 port={port} user=app dbname=app"
rpo = "24h"

[job.hung-daily]
type = "backup"
source = "hung"
schedule = "0 2 * * *"
time_zone = "Asia/Jakarta"
retries = 3
retry_backoff = "1m"

{api}"#,
        api = api_section(&read, &operator)
    );
    let (mut child, state) = site.serve_with("a", &extra);
    let http = Http::of(&state);
    let (read_token, operator_token) = (token(&read), token(&operator));
    let cancel = "/api/v1/jobs/hung-daily/cancel";
    let (status, body) = http.post(cancel, &operator_token);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("\"idle\""), "{body}");
    let (status, body) = http.post("/api/v1/jobs/hung-daily/trigger", &operator_token);
    assert_eq!(status, 202, "{body}");
    let scheduled = format!("{day}T10:00:00Z");
    wait_for("the attempt to start", Duration::from_secs(60), || {
        journal(&state).contains("attempt_started")
    });
    assert_eq!(http.post(cancel, &read_token).0, 403);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !journal(&state).contains("attempt_finished"),
        "the backup hangs"
    );
    let (status, body) = http.post(
        &format!("{cancel}?scheduled={day}T09:00:00Z"),
        &operator_token,
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("other_run"), "{body}");
    let started = Instant::now();
    let (status, body) = http.post(&format!("{cancel}?scheduled={scheduled}"), &operator_token);
    assert_eq!(status, 202, "{body}");
    wait_for("the cancelled run", Duration::from_secs(30), || {
        !finished(&state, &scheduled).is_empty()
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the attempt was not stopped"
    );
    assert_eq!(
        finished(&state, &scheduled),
        [("cancelled".to_string(), None)]
    );
    assert!(journal(&state).contains("cancelled by oncall"));
    // Past the backoff: no retry came.
    site.set_clock(&format!("{day}T10:05:00Z"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(journal(&state).matches("attempt_started").count(), 1);
    let (_, metrics) = http.get("/metrics", Some(&read_token));
    assert!(
        metrics.contains(r#"arsip_job_runs_total{job="hung-daily",result="cancelled"} 1"#),
        "{metrics}"
    );
    let audit = site.a.json(&["audit"]).to_string();
    assert!(
        audit.contains("api.cancel") && audit.contains("oncall"),
        "{audit}"
    );
    assert!(!audit.contains(operator_token.as_str()));
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    drop(silent);
}

/// SIGHUP: a new job, a rotated token and a renewed TLS certificate are put in force without
/// a restart (and the new job runs at its time); a file that does not parse, or a change
/// only a restart can make (the repository), is refused with the reason in the log, the
/// configuration before stays in force, and `arsip_config_reload_failed` says so.
#[test]
fn sighup_reloads_the_configuration_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    let (read, operator) = site.token_files();
    let (old_ca, cert, key) = arsip_testkit::tls_certificates(dir.path());
    let renewed = dir.path().join("renewed");
    std::fs::create_dir(&renewed).unwrap();
    let (new_ca, new_cert, new_key) = arsip_testkit::tls_certificates(&renewed);
    let api = format!(
        "{}tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        api_section(&read, &operator),
        cert.display(),
        key.display()
    );
    let day = &days(1)[0];
    site.set_clock(&format!("{day}T10:00:00Z"));
    let (mut child, state) = site.serve_with("a", &api);
    let old = Http::trusting(&state, &old_ca);
    let renewed_client = Http::trusting(&state, &new_ca);
    let old_read = token(&read);
    assert_eq!(old.get("/api/v1/jobs", Some(&old_read)).0, 200);
    assert!(!renewed_client.reaches(), "not yet the renewed certificate");
    let hup = |child: &Child| signal(child, rustix::process::Signal::HUP);
    let reloaded = |n: usize| {
        wait_for("the reload", Duration::from_secs(30), || {
            journal(&state).matches("config_loaded").count() == n
        })
    };
    // A new job (17:30 in Jakarta is 10:30 UTC), a rotated read token, a renewed certificate.
    let new_job = format!(
        "{api}\n[job.config-evening]\ntype = \"backup\"\nsource = \"config\"\nschedule = \"30 17 * * *\"\ntime_zone = \"Asia/Jakarta\"\n"
    );
    let (config, _) = site.config("a", &new_job);
    std::fs::remove_file(&read).unwrap();
    site.a.ok(&["token", "generate", read.to_str().unwrap()]);
    let new_read = token(&read);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    hup(&child);
    reloaded(2);
    let http = renewed_client;
    assert!(http.reaches(), "the renewed certificate is served");
    assert!(!old.reaches(), "the old certificate is gone");
    let (status, jobs) = http.get("/api/v1/jobs", Some(&new_read));
    assert_eq!(status, 200);
    assert!(jobs.contains("config-evening"), "{jobs}");
    assert_eq!(
        http.get("/api/v1/jobs", Some(&old_read)).0,
        401,
        "the old token is gone"
    );
    assert_eq!(
        http.metric(&new_read, "arsip_config_reload_failed"),
        Some(0.0)
    );
    // The new job runs at its time.
    let evening = format!("{day}T10:30:00Z");
    site.set_clock(&format!("{day}T10:30:02Z"));
    wait_for("the new job's run", Duration::from_secs(120), || {
        !finished(&state, &evening).is_empty()
    });
    assert_eq!(finished(&state, &evening), [("ok".to_string(), None)]);
    // A file that does not parse: refused, the configuration before stays.
    std::fs::write(&config, "version = 1\n[daemon\n").unwrap();
    hup(&child);
    wait_for("the refusal", Duration::from_secs(30), || {
        http.metric(&new_read, "arsip_config_reload_failed") == Some(1.0)
    });
    assert!(http
        .get("/api/v1/jobs", Some(&new_read))
        .1
        .contains("config-evening"));
    // A change only a restart can make: refused too, saying so.
    let moved = new_job.replace(
        "[api]",
        "[repository.other]\nlocation = \"/nonexistent\"\npassword_env = \"X\"\n\n[api]",
    );
    site.config("a", &moved);
    hup(&child);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        http.metric(&new_read, "arsip_config_reload_failed"),
        Some(1.0)
    );
    // Back to a good file: in force again.
    site.config("a", &new_job);
    hup(&child);
    reloaded(3);
    wait_for("the recovery", Duration::from_secs(30), || {
        http.metric(&new_read, "arsip_config_reload_failed") == Some(0.0)
    });
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("restart arsip serve to apply"), "{err}");
    assert!(err.contains("repository.*"), "{err}");
    for secret in [&old_read, &new_read] {
        assert!(!err.contains(secret.as_str()), "a token in the log");
    }
}

/// A receiver on 127.0.0.1 for the webhook, Slack and PagerDuty channels: it records every
/// request (path, JSON body) and answers 500 to the first `fail_webhook` webhook requests.
struct Receiver {
    base: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start(fail_webhook: usize) -> Receiver {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let rt = tokio::runtime::Runtime::new().unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failures = std::sync::Arc::new(AtomicUsize::new(fail_webhook));
        let record = got.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let (record, failures) = (record.clone(), failures.clone());
                async move {
                    let path = uri.path().to_string();
                    if path == "/webhook"
                        && failures
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok()
                    {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    record.lock().unwrap().push((path, v));
                    axum::http::StatusCode::ACCEPTED
                }
            });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { base, got, _rt: rt }
    }

    /// The bodies posted to `path` about ArsipBackupFailed (the day's clock jump may also
    /// open, and then resolve, ArsipBackupNeverSucceeded for a moment: it holds then).
    fn bodies(&self, path: &str) -> Vec<serde_json::Value> {
        self.about(path, "ArsipBackupFailed")
    }

    /// The bodies posted to `path` that name `rule`.
    fn about(&self, path: &str, rule: &str) -> Vec<serde_json::Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .filter(|(p, v)| p == path && v.to_string().contains(rule))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// An injected size anomaly and a corrupted pack: each raises its alert at a local
/// receiver once (ArsipBackupSizeAnomaly when a backup is five times its usual size,
/// ArsipBackupCorrupted when the daily verification reads a damaged pack), and each resolves
/// once the next run finds things well again (a backup of the usual size; the pack's bytes
/// put back, as from a copy, and verified).
#[test]
fn a_size_anomaly_and_a_corrupted_pack_alert_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    std::fs::write(
        site.data.join("app.db"),
        arsip_testkit::sample_data(1 << 20, 3),
    )
    .unwrap();
    let rx = Receiver::start(0);
    let hook = dir.path().join("hook-url");
    std::fs::write(&hook, format!("{}/webhook\n", rx.base)).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        r#"
[job.verify]
type = "verify"
repository = "main"
schedule = "30 2 * * *"
time_zone = "Asia/Jakarta"
cycle = "1d"

[alerts]
routes = {{ critical = ["hook"], warning = ["hook"] }}

[channel.hook]
type = "webhook"
url_file = "{hook}"
"#,
        hook = hook.display()
    );
    let days = days(7);
    site.set_clock(&format!("{}T18:59:00Z", days[0]));
    let (mut child, state) = site.serve_with("a", &extra);
    let statuses = |rule: &str| -> Vec<String> {
        rx.about("/webhook", rule)
            .iter()
            .filter(|v| v["rule"] == rule)
            .map(|v| v["status"].as_str().unwrap().to_string())
            .collect()
    };
    let run_day = |day: &str| {
        for (job, at) in [("config-daily", "19:00:00"), ("verify", "19:30:00")] {
            let t = format!("{day}T{at}Z");
            site.set_clock(&format!("{day}T{at}Z").replace(":00Z", ":01Z"));
            wait_journals(&format!("{job} at {t}"), &[&state], || {
                !finished(&state, &t).is_empty()
            });
        }
    };
    let pack = || -> PathBuf {
        // The largest pack holds app.db's chunks.
        let mut packs = Vec::new();
        let mut stack = vec![PathBuf::from(&site.a.repo).join("data")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    packs.push((std::fs::metadata(&p).unwrap().len(), p));
                }
            }
        }
        packs.into_iter().max().unwrap().1
    };
    for day in &days[..4] {
        run_day(day);
    }
    assert!(statuses("ArsipBackupSizeAnomaly").is_empty());
    // Day 5: five times the usual size.
    std::fs::write(
        site.data.join("dump.bin"),
        arsip_testkit::sample_data(4 << 20, 4),
    )
    .unwrap();
    run_day(&days[4]);
    wait_for(
        "the size anomaly at the receiver",
        Duration::from_secs(30),
        || statuses("ArsipBackupSizeAnomaly") == ["firing"],
    );
    // Day 6: the usual size again; a pack is damaged before the verification reads it.
    std::fs::remove_file(site.data.join("dump.bin")).unwrap();
    let damaged = pack();
    let good = std::fs::read(&damaged).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&damaged, &bad).unwrap();
    run_day(&days[5]);
    wait_for(
        "the corruption at the receiver",
        Duration::from_secs(30),
        || {
            statuses("ArsipBackupCorrupted") == ["firing"]
                && statuses("ArsipBackupSizeAnomaly") == ["firing", "resolved"]
        },
    );
    let corrupted = &rx.about("/webhook", "ArsipBackupCorrupted")[0];
    assert_eq!(corrupted["severity"], "critical", "{corrupted}");
    // Day 7: the pack's bytes are put back (as from a copy); the verification is clean.
    std::fs::write(&damaged, &good).unwrap();
    run_day(&days[6]);
    wait_for("the corruption's resolve", Duration::from_secs(30), || {
        statuses("ArsipBackupCorrupted") == ["firing", "resolved"]
    });
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    // Each once: no repeat while open, one resolve.
    assert_eq!(statuses("ArsipBackupSizeAnomaly"), ["firing", "resolved"]);
    assert_eq!(statuses("ArsipBackupCorrupted"), ["firing", "resolved"]);
}

/// The daemon's own alerts: a failed backup opens ArsipBackupFailed, notified once to each
/// channel (the webhook retried through two 500s), and the next good backup resolves it
/// everywhere (PagerDuty with the same dedup key). No secret reaches a receiver.
#[test]
fn a_failed_backup_alerts_every_channel_once_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    let rx = Receiver::start(2);
    let secret = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    };
    let hook = secret("hook-url", &format!("{}/webhook", rx.base));
    let slack = secret("slack-url", &format!("{}/slack", rx.base));
    let pd_key = secret("pd-key", "routing-key-not-in-any-log");
    let broken = dir.path().join("broken");
    let extra = format!(
        r#"
[source.broken]
kind = "files"
repository = "main"
paths = ["{broken}"]
rpo = "24h"

[job.broken-daily]
type = "backup"
source = "broken"
schedule = "0 2 * * *"
time_zone = "Asia/Jakarta"
retries = 0

[alerts]
routes = {{ critical = ["hook", "pd", "slack"], warning = ["hook"] }}

[channel.hook]
type = "webhook"
url_file = "{hook}"

[channel.slack]
type = "slack"
url_file = "{slack}"

[channel.pd]
type = "pagerduty"
routing_key_file = "{pd_key}"
url = "{base}/pd"
"#,
        broken = broken.display(),
        base = rx.base,
    );
    let days = days(2);
    site.set_clock(&format!("{}T18:59:00Z", days[0]));
    let (mut child, state) = site.serve_with("a", &extra);
    site.set_clock(&format!("{}T19:00:01Z", days[0]));
    let day1 = format!("{}T19:00:00Z", days[0]);
    wait_journals("the broken backup to fail", &[&state], || {
        journal(&state).contains(&format!(
            r#""job":"broken-daily","scheduled":"{day1}","outcome":"failed""#
        ))
    });
    wait_journals("a notification at every channel", &[&state], || {
        !rx.bodies("/pd").is_empty()
            && !rx.bodies("/slack").is_empty()
            && !rx.bodies("/webhook").is_empty()
    });
    let pd = rx.bodies("/pd");
    assert_eq!(pd[0]["event_action"], "trigger", "{pd:?}");
    assert_eq!(pd[0]["dedup_key"], "arsip:main:ArsipBackupFailed:broken");
    assert_eq!(pd[0]["payload"]["severity"], "critical");
    assert_eq!(pd[0]["routing_key"], "routing-key-not-in-any-log");
    let hook_body = &rx.bodies("/webhook")[0];
    assert_eq!(hook_body["status"], "firing");
    assert_eq!(hook_body["rule"], "ArsipBackupFailed");
    assert!(rx.bodies("/slack")[0]["text"]
        .as_str()
        .unwrap()
        .contains("ArsipBackupFailed"));
    let j = journal(&state);
    assert!(
        j.contains(r#""channel":"hook","status":"firing","result":"failed""#),
        "the 500s are journaled"
    );
    // The next day's run succeeds: the alert resolves at every channel, once.
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("f"), "x").unwrap();
    site.set_clock(&format!("{}T19:00:01Z", days[1]));
    wait_journals("the resolves", &[&state], || {
        rx.bodies("/pd").len() >= 2
            && rx.bodies("/slack").len() >= 2
            && rx.bodies("/webhook").len() >= 2
    });
    // Stopped, the daemon sends nothing more: what the receiver has is final.
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let pd = rx.bodies("/pd");
    assert_eq!(pd.len(), 2, "one trigger and one resolve: {pd:?}");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], "arsip:main:ArsipBackupFailed:broken");
    assert_eq!(rx.bodies("/webhook").len(), 2);
    assert_eq!(rx.bodies("/webhook")[1]["status"], "resolved");
    assert_eq!(rx.bodies("/slack").len(), 2);
    assert!(rx.bodies("/slack")[1]["text"]
        .as_str()
        .unwrap()
        .contains("RESOLVED"));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        !err.contains("routing-key-not-in-any-log") && !err.contains("/webhook"),
        "a secret in the log: {err}"
    );
    assert!(!journal(&state).contains("routing-key-not-in-any-log"));
}

/// The dashboard in headless Chromium against a daemon with real history (four days of a
/// good source that grew on the last day, a source that always fails): every page loads
/// with no error, no failed request and no CSP violation, and holds its elements; the
/// screenshots go to `$ARSIP_SCREENSHOTS_DIR` when set (`scripts/screenshots` refreshes
/// docs/screenshots/ with them).
#[test]
fn the_dashboard_loads_every_page_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new(dir.path(), false);
    let token_file = dir.path().join("read.token");
    site.a
        .ok(&["token", "generate", token_file.to_str().unwrap()]);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let extra = format!(
        r#"
[source.tenant-media]
kind = "files"
repository = "main"
paths = ["{broken}"]
rpo = "24h"

[job.tenant-media-daily]
type = "backup"
source = "tenant-media"
schedule = "30 2 * * *"
time_zone = "Asia/Jakarta"
retries = 0

[api]
listen = "127.0.0.1:0"
tokens = [{{ name = "oncall", role = "read", file = "{token}" }}]
"#,
        broken = dir.path().join("missing").display(),
        token = token_file.display(),
    );
    let days = days(4);
    site.set_clock(&format!("{}T18:59:00Z", days[0]));
    let (mut child, state) = site.serve_with("a", &extra);
    for (i, day) in days.iter().enumerate() {
        if i == 3 {
            std::fs::write(
                site.data.join("grown.bin"),
                arsip_testkit::sample_data(256 << 10, 3),
            )
            .unwrap();
        }
        site.set_clock(&format!("{day}T19:40:00Z"));
        wait_journals(&format!("day {day}"), &[&state], || {
            finished(&state, &format!("{day}T19:00:00Z")).len() == 1
                && finished(&state, &format!("{day}T19:30:00Z")).len() == 1
        });
    }
    let base = std::fs::read_to_string(state.join("api-address")).unwrap();
    let base = base.trim();
    let shots = std::env::var_os("ARSIP_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = arsip_testkit::browser::Browser::launch(&dir.path().join("chromium"));
    let auth = serde_json::json!({ "Authorization": format!("Bearer {token}") });
    let pages: [(&str, &[&str], &str); 7] = [
        (
            "/",
            &[
                "summary",
                "alerts",
                "sources",
                "source-config",
                "source-tenant-media",
            ],
            "overview",
        ),
        (
            "/source/config",
            &["source-summary", "chart", "runs"],
            "source",
        ),
        (
            "/source/tenant-media",
            &["source-summary", "runs"],
            "source-failed",
        ),
        ("/alerts", &["alerts", "deliveries"], "alerts"),
        ("/storage", &["storage", "chart"], "storage"),
        ("/verify", &["no-verify"], "verify"),
        ("/login", &[], "login"),
    ];
    let mut problems = Vec::new();
    for (path, expect, name) in pages {
        let headers = if path == "/login" {
            serde_json::json!({})
        } else {
            auth.clone()
        };
        let shot = shots.join(format!("{name}.png"));
        let r = browser.check(&format!("{base}{path}"), headers, expect, Some(&shot));
        problems.extend(r.problems);
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 1000,
            "{name}: no screenshot"
        );
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // A page that does not exist is caught as broken (the check can fail).
    let r = browser.check(&format!("{base}/source/nope"), auth.clone(), &[], None);
    assert!(!r.problems.is_empty(), "a 404 must be reported");
    drop(browser);
    // The overview says what is wrong: the failing source first, the anomaly alerted.
    let html = String::from_utf8(
        std::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("{base}/"),
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let failed = html.find("data-test=\"source-tenant-media\"").unwrap();
    let ok = html.find("data-test=\"source-config\"").unwrap();
    assert!(failed < ok, "the failing source comes first");
    assert!(
        html.contains("ArsipBackupFailed") && html.contains("ArsipBackupSizeAnomaly"),
        "{html}"
    );
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

/// HA through a physical PostgreSQL backup on the S3 server: two daemons, the one running
/// the base backup is killed (`kill -9`) midway, the other takes the run over once the claim
/// lapses and makes one snapshot, and the scheduled verification restores that snapshot into
/// a throwaway cluster, replays the archived WAL and finds every row.
#[test]
fn a_physical_backup_killed_midway_is_taken_over_and_restores() {
    use arsip_pg::cluster::{chown_postgres, Cluster, ClusterOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::new(dir.path(), true);
    if let Some(bin) = std::env::var_os("ARSIP_PG_BIN") {
        site.a = site.a.with_env("ARSIP_PG_BIN", bin.to_str().unwrap());
    }
    // archive_command runs as the server's user: an agent key it alone can read.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let keys = dir.path().join("pg-keys");
    std::fs::create_dir(&keys).unwrap();
    let agent = keys.join("agent.key");
    site.a.ok(&[
        "key",
        "add",
        "--agent",
        "--label",
        "db",
        "--out",
        agent.to_str().unwrap(),
    ]);
    chown_postgres(&keys).unwrap();
    let s3: Vec<String> = site
        .a
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("ARSIP_S3_") || k.starts_with("AWS_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let archive = format!(
        "env {} {} --repo {} --key-file {} wal push %p",
        s3.join(" "),
        common::EXE,
        site.a.repo,
        agent.display()
    );
    let cluster = Cluster::init(&ClusterOptions {
        archive_command: Some(archive),
        data_checksums: true,
        conf: vec![],
        settings: arsip_pg::PgSettings::from_vars(std::env::vars_os()),
    })
    .unwrap();
    cluster.start().unwrap();
    // About 100 MB: the base backup takes a while.
    cluster
        .psql(
            "postgres",
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v \
             FROM generate_series(1, 1000000) g",
        )
        .unwrap();
    // Verification judges freshness against the store's (real) clock: the test clock runs
    // with it here, the backup at the next minutes, the verification ten minutes later.
    #[allow(clippy::disallowed_methods)]
    let now = jiff::Timestamp::now();
    let t0 = jiff::Timestamp::from_second((now.as_second() / 60 + 2) * 60).unwrap();
    let t1 = t0 + jiff::SignedDuration::from_mins(10);
    let cron = |t: jiff::Timestamp| {
        let z = t.to_zoned(jiff::tz::TimeZone::UTC);
        format!("{} {} * * *", z.minute(), z.hour())
    };
    let extra = format!(
        r#"
[source.db]
kind = "pg-physical"
repository = "main"
dbname = "{dbname}"
pgdata = "{pgdata}"
stanza = "main"
rpo = "24h"

[job.db-daily]
type = "backup"
source = "db"
schedule = "{backup}"
time_zone = "UTC"
retries = 2
retry_backoff = "1m"

[job.verify]
type = "verify"
repository = "main"
schedule = "{verify}"
time_zone = "UTC"
restore_test = true
sql_checks = [{{ database = "postgres", sql = "SELECT count(*) = 1000000 FROM big" }}]
"#,
        dbname = cluster.conninfo("postgres"),
        pgdata = cluster.data.display(),
        backup = cron(t0),
        verify = cron(t1),
    );
    site.set_clock(&(t0 - jiff::SignedDuration::from_secs(30)).to_string());
    let (mut a, state_a) = site.serve_with("a", &extra);
    site.set_clock(&(t0 + jiff::SignedDuration::from_secs(1)).to_string());
    let at = t0.to_string();
    wait_for("A to start the backup", Duration::from_secs(60), || {
        journal(&state_a).contains(&format!(
            r#""kind":"attempt_started","job":"db-daily","scheduled":"{at}""#
        ))
    });
    std::thread::sleep(Duration::from_millis(500));
    signal(&a, rustix::process::Signal::KILL);
    let _ = a.wait();
    assert!(
        finished(&state_a, &at).is_empty(),
        "A was killed before it finished"
    );
    let (mut b, state_b) = site.serve_with("b", &extra);
    wait_journals("B to take the backup over", &[&state_a, &state_b], || {
        !finished(&state_b, &at).is_empty()
    });
    let f = finished(&state_b, &at);
    assert!(
        matches!(f[0].0.as_str(), "ok" | "warnings") && f[0].1.is_none(),
        "{f:?}"
    );
    let snaps = site.a.json(&["snapshots"]);
    let of_run: Vec<&serde_json::Value> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["tags"]["arsip.job"] == "db-daily" && s["tags"]["arsip.scheduled"] == at)
        .collect();
    assert_eq!(of_run.len(), 1, "{snaps}");
    assert_eq!(of_run[0]["kind"], "pg-physical");
    // B made the backup itself: A died before its commit, not after.
    assert!(
        !journal(&state_b).contains("adopted snapshot"),
        "A committed before it was killed; the test needs a slower backup"
    );
    site.set_clock(&(t1 + jiff::SignedDuration::from_secs(1)).to_string());
    let verify = t1.to_string();
    wait_journals("the verification", &[&state_b], || {
        !finished(&state_b, &verify).is_empty()
    });
    let j = journal(&state_b);
    let v = j
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["kind"] == "attempt_finished" && e["job"] == "verify")
        .unwrap_or_else(|| panic!("{j}"));
    let physical = v["facts"]["restore_tests"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "pg-physical"))
        .unwrap_or_else(|| panic!("no physical restore test: {v}"));
    assert_eq!(physical["ok"], true, "{v}");
    signal(&b, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut b, Duration::from_secs(60)).success());
}

/// Two daemons on one repository page once: the failed run's alert comes from the daemon
/// that ran it, the condition (never backed up within the RPO) from the alert leader.
#[test]
fn two_daemons_send_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::new(dir.path(), false);
    // No takeover is wanted here: a lease that lapses on a loaded machine hands the
    // leadership over, and the new leader re-sends what it has no record of sending (at
    // least once, on failover).
    site.ttl = "30";
    let rx = Receiver::start(0);
    let key = dir.path().join("pd-key");
    std::fs::write(&key, "rk\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        r#"
[source.broken]
kind = "files"
repository = "main"
paths = ["{broken}"]
rpo = "24h"

[job.broken-daily]
type = "backup"
source = "broken"
schedule = "0 2 * * *"
time_zone = "Asia/Jakarta"
retries = 0

[alerts]
routes = {{ critical = ["pd"], warning = ["pd"] }}

[channel.pd]
type = "pagerduty"
routing_key_file = "{key}"
url = "{base}/pd"
"#,
        broken = dir.path().join("missing").display(),
        key = key.display(),
        base = rx.base,
    );
    let days = days(2);
    site.set_clock(&format!("{}T18:59:00Z", days[0]));
    let (mut a, state_a) = site.serve_with("a", &extra);
    let (mut b, state_b) = site.serve_with("b", &extra);
    let failed = format!(
        r#""job":"broken-daily","scheduled":"{}T19:00:00Z","outcome":"failed""#,
        days[0]
    );
    site.set_clock(&format!("{}T19:00:01Z", days[0]));
    let config_ok = format!(
        r#""job":"config-daily","scheduled":"{}T19:00:00Z","outcome":"ok""#,
        days[0]
    );
    wait_journals(
        "both to see the day's runs end",
        &[&state_a, &state_b],
        || {
            let (ja, jb) = (journal(&state_a), journal(&state_b));
            ja.contains(&failed)
                && jb.contains(&failed)
                && ja.contains(&config_ok)
                && jb.contains(&config_ok)
        },
    );
    // A day later: never backed up for longer than the RPO (a condition alert).
    site.set_clock(&format!("{}T20:00:00Z", days[1]));
    let all = |rx: &Receiver| -> Vec<serde_json::Value> {
        rx.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    };
    wait_journals("both alerts sent", &[&state_a, &state_b], || {
        let got = all(&rx)
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        got.contains("ArsipBackupFailed:broken") && got.contains("ArsipBackupNeverSucceeded:broken")
    });
    // Both daemons have opened both alerts (so each decided whether to send them); once
    // both are stopped, nothing more can arrive: then count.
    wait_journals(
        "both daemons to open both alerts",
        &[&state_a, &state_b],
        || {
            [&state_a, &state_b].iter().all(|s| {
                let j = journal(s);
                j.contains(r#""rule":"ArsipBackupFailed""#)
                    && j.contains(r#""rule":"ArsipBackupNeverSucceeded""#)
            })
        },
    );
    for c in [&mut a, &mut b] {
        signal(c, rustix::process::Signal::TERM);
        assert!(wait_exit(c, Duration::from_secs(30)).success());
    }
    let mut triggers: std::collections::BTreeMap<String, usize> = Default::default();
    for v in all(&rx) {
        if v["event_action"] == "trigger" {
            *triggers
                .entry(v["dedup_key"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    assert!(
        triggers.values().all(|n| *n == 1),
        "each alert once: {triggers:?}\n== a\n{}\n== b\n{}",
        journal(&state_a),
        journal(&state_b)
    );
    assert!(
        triggers.contains_key("arsip:main:ArsipBackupNeverSucceeded:broken"),
        "{triggers:?}"
    );
}

/// The daemon backs up a real PostgreSQL database on its schedule, then verifies the
/// repository with a restore test: the logical backup restored into a scratch database, its
/// row counts compared, the configured SQL check run there.
#[test]
fn the_daemon_backs_up_postgres_and_its_restore_test_passes() {
    use arsip_pg::cluster::{Cluster, ClusterOptions};
    let cluster = Cluster::init(&ClusterOptions {
        settings: arsip_pg::PgSettings::from_vars(std::env::vars_os()),
        ..Default::default()
    })
    .unwrap();
    cluster.start().unwrap();
    cluster.psql("postgres", "CREATE DATABASE app").unwrap();
    cluster
        .psql(
            "app",
            "CREATE TABLE tenants (id int PRIMARY KEY, name text); \
             INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(1, 500) g",
        )
        .unwrap();
    // Verification judges freshness against the store's times: here the test clock runs
    // with the real one (minutes ahead at most), the jobs at the next minutes.
    #[allow(clippy::disallowed_methods)]
    let now = jiff::Timestamp::now();
    let t0 = jiff::Timestamp::from_second((now.as_second() / 60 + 2) * 60).unwrap();
    let t1 = t0 + jiff::SignedDuration::from_mins(1);
    let cron = |t: jiff::Timestamp| {
        let z = t.to_zoned(jiff::tz::TimeZone::UTC);
        format!("{} {} * * *", z.minute(), z.hour())
    };
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::new(dir.path(), false);
    if let Some(bin) = std::env::var_os("ARSIP_PG_BIN") {
        site.a = site.a.with_env("ARSIP_PG_BIN", bin.to_str().unwrap());
    }
    let extra = format!(
        r#"
[source.app-db]
kind = "pg-logical"
repository = "main"
dbname = "{dbname}"
rpo = "26h"

[job.app-db-daily]
type = "backup"
source = "app-db"
schedule = "{backup_cron}"
time_zone = "UTC"

[job.verify-restore]
type = "verify"
repository = "main"
schedule = "{verify_cron}"
time_zone = "UTC"
restore_test = true
sql_checks = [{{ database = "app", sql = "SELECT count(*) = 500 FROM tenants" }}]
"#,
        dbname = cluster.conninfo("app"),
        backup_cron = cron(t0),
        verify_cron = cron(t1),
    );
    site.set_clock(&(t0 - jiff::SignedDuration::from_secs(30)).to_string());
    let (mut child, state) = site.serve_with("a", &extra);
    site.set_clock(&(t1 + jiff::SignedDuration::from_secs(20)).to_string());
    let backup = t0.to_string();
    let verify = t1.to_string();
    wait_journals("the backup and the verification", &[&state], || {
        finished(&state, &verify).len() == 1
    });
    let j = journal(&state);
    let line = |job: &str, at: &str| {
        j.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["kind"] == "attempt_finished" && e["job"] == job && e["scheduled"] == at)
            .unwrap_or_else(|| panic!("no attempt of {job}: {j}"))
    };
    let b = line("app-db-daily", &backup);
    assert_eq!(b["outcome"], "ok", "{b}");
    assert!(b["facts"]["logical_bytes"].as_u64().unwrap() > 0, "{b}");
    let v = line("verify-restore", &verify);
    assert!(
        matches!(v["outcome"].as_str(), Some("ok" | "warnings")),
        "{v}"
    );
    let tests = v["facts"]["restore_tests"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    let logical = tests
        .iter()
        .find(|t| t["kind"] == "pg-logical")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(logical["ok"], true, "{v}");
    assert!(logical["rto_seconds"].as_f64().unwrap() > 0.0);
    let snaps = site.a.json(&["snapshots"]);
    assert!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "pg-logical" && s["tags"]["arsip.job"] == "app-db-daily"),
        "{snaps}"
    );
    signal(&child, rustix::process::Signal::TERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

//! `arsip serve` end to end: the daemon started as users start it, its clock moved by the
//! test (`ARSIP_TEST_CLOCK_FILE`, test-hooks builds only), a scheduled backup made at its
//! time with its job's tags, and a clean stop on SIGTERM.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Arsip;

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
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

#[test]
fn serve_runs_a_scheduled_backup_at_its_time_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arsip::local(dir.path());
    a.ok(&["init"]);
    let password = dir.path().join("password");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("app.env"), "JWT_SECRET=not-in-any-log\n").unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("arsip.toml");
    std::fs::write(
        &config,
        format!(
            r#"version = 1
[daemon]
state_dir = "{state}"
shutdown_grace = "10s"

[repository.main]
location = "{repo}"
password_file = "{password}"

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
"#,
            state = state.display(),
            repo = a.repo,
            password = password.display(),
            data = data.display(),
        ),
    )
    .unwrap();
    // 01:59 in Jakarta: a minute before the job.
    let clock = dir.path().join("clock");
    std::fs::write(&clock, "2026-11-30T18:59:00Z\n").unwrap();
    let mut child = a
        .with_env("ARSIP_TEST_CLOCK_FILE", clock.to_str().unwrap())
        .with_env("ARSIP_LOG", "info")
        .cmd(&["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the daemon to start", Duration::from_secs(60), || {
        journal(&state).contains("config_loaded")
    });
    assert!(
        a.json(&["snapshots"]).as_array().unwrap().is_empty(),
        "nothing before its time"
    );
    std::fs::write(&clock, "2026-11-30T19:00:01Z\n").unwrap();
    wait_for("the scheduled run", Duration::from_secs(120), || {
        journal(&state).contains("run_finished")
    });
    let snaps = a.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let tags = &snaps[0]["tags"];
    assert_eq!(tags["arsip.job"], "config-daily", "{tags}");
    assert_eq!(tags["arsip.scheduled"], "2026-11-30T19:00:00Z", "{tags}");
    let j = journal(&state);
    assert!(j.contains(r#""kind":"run_finished","job":"config-daily","scheduled":"2026-11-30T19:00:00Z","outcome":"ok""#), "{j}");
    // SIGTERM: a clean stop, exit 0.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
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

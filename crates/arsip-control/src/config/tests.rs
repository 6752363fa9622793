//! The shipped example resolves; every rule refuses with the key and the line it names.

use std::os::unix::fs::PermissionsExt;

use super::*;

const PRIVATE: FileAccess = FileAccess {
    owner_is_us: true,
    private: true,
};
const SHARED: FileAccess = FileAccess {
    owner_is_us: true,
    private: false,
};

/// The example with every `/etc/arsip/` path moved into `dir`, where each secret file
/// exists with mode 0600.
fn example_in(dir: &Path) -> String {
    let text = include_str!("../../../../deploy/arsip.toml");
    let root = dir.join("etc");
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("\"/etc/arsip/") {
            let p = &rest[at + 1..];
            let end = p.find('"').unwrap();
            let path = root.join(&p["/etc/arsip/".len()..end]);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "s3cr3t\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            rest = &p[end..];
        }
    }
    text.replace("\"/etc/arsip/", &format!("\"{}/", root.display()))
}

fn check(text: &str, access: FileAccess) -> Result<Config, ConfigErrors> {
    parse(Path::new("/etc/arsip/arsip.toml"), text, access)
}

#[test]
fn the_shipped_example_resolves_to_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let c = check(&example_in(dir.path()), SHARED).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.daemon.time_zone, "Asia/Jakarta");
    assert_eq!(c.repositories["main"].quota, Some(2 << 40));
    assert_eq!(
        c.repositories["main"]
            .retention
            .clone()
            .or_default()
            .keep_within,
        Some(SignedDuration::from_hours(30 * 24))
    );
    assert_eq!(c.sources.len(), 3);
    assert_eq!(c.jobs.len(), 9);
    let copy = &c.jobs["copy-sin"];
    assert_eq!(
        (copy.kind, copy.to.as_deref(), copy.after_backups),
        (JobKind::Copy, Some("sin"), true)
    );
    assert!(
        !c.runs_in("sin"),
        "a destination only: the daemon does not open it"
    );
    let daily = &c.jobs["pg-main-daily"];
    assert_eq!(
        (daily.kind, daily.repository.as_str(), daily.retries),
        (JobKind::Backup, "main", 3)
    );
    // 02:00 in Jakarta is 19:00 UTC the day before.
    let next = daily
        .schedule
        .next_after("2026-12-01T12:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(next.timestamp().to_string(), "2026-12-01T19:00:00Z");
    assert!(c.jobs["restore-weekly"].restore_test);
    assert_eq!(
        c.alerts.routes[&Severity::Critical],
        ["pagerduty", "slack", "email"]
    );
    // The plan names where each secret comes from and never holds one.
    let plan = crate::Plan::new(&c, "2026-12-01T12:00:00Z".parse().unwrap(), 3);
    let json = serde_json::to_string(&plan).unwrap();
    assert!(!json.contains("s3cr3t"), "{json}");
    assert!(json.contains("<file "), "{json}");
    assert!(plan.unscheduled_sources.is_empty());
}

/// A minimal valid file, to which each case adds one mistake.
const BASE: &str = r#"version = 1
[repository.main]
location = "/var/backups/arsip"
password_env = "ARSIP_PASSWORD"

[source.app]
kind = "pg-logical"
repository = "main"
dbname = "dbname=app"
rpo = "24h"

[job.app-daily]
type = "backup"
source = "app"
schedule = "0 2 * * *"
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    match check(text, PRIVATE) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.errors,
    }
}

#[test]
fn the_base_is_valid() {
    let c = check(BASE, SHARED).unwrap();
    assert_eq!(c.daemon.time_zone, "UTC");
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:9851");
}

#[test]
fn each_mistake_names_its_key_and_line() {
    // (what is appended or replaced, the key, its line, words of the message)
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        (
            "schedule = \"0 2 * * *\"",
            "schedule = \"0 2 * *\"",
            "job.app-daily.schedule",
            15,
            "has 4 field(s)",
        ),
        (
            "schedule = \"0 2 * * *\"",
            "schedule = \"0 2 * * *\"\ntime_zone = \"Mars/Olympus\"",
            "job.app-daily.time_zone",
            16,
            "unknown time zone",
        ),
        (
            "source = \"app\"",
            "source = \"ap\"",
            "job.app-daily.source",
            14,
            "no [source.ap]; known: app",
        ),
        (
            "repository = \"main\"\ndbname",
            "repository = \"mian\"\ndbname",
            "source.app.repository",
            8,
            "no [repository.mian]; known: main",
        ),
        (
            "rpo = \"24h\"",
            "rpo = \"a day\"",
            "source.app.rpo",
            10,
            "not a duration",
        ),
        ("rpo = \"24h\"\n", "", "source.app", 6, "missing rpo"),
        (
            "schedule = \"0 2 * * *\"",
            "schedule = \"0 2 * * *\"\ntimeout = \"2d\"",
            "job.app-daily.timeout",
            16,
            "out of range (1m–24h)",
        ),
        (
            "kind = \"pg-logical\"",
            "kind = \"mysql\"",
            "source.app.kind",
            7,
            "not one of pg-physical, pg-logical, files",
        ),
        (
            "type = \"backup\"",
            "type = \"prune\"",
            "job.app-daily.source",
            14,
            "works on a whole repository",
        ),
        (
            "dbname = \"dbname=app\"",
            "dbname = \"dbname=app password=hunter2\"",
            "source.app.dbname",
            9,
            "PGPASSFILE",
        ),
        (
            "password_env = \"ARSIP_PASSWORD\"",
            "password_env = \"ARSIP PASSWORD\"",
            "repository.main.password_env",
            4,
            "not an environment variable name",
        ),
        (
            "password_env = \"ARSIP_PASSWORD\"",
            "password_env = \"ARSIP_PASSWORD\"\npassword_file = \"/nonexistent/pw\"",
            "repository.main.password",
            2,
            "exactly one of",
        ),
        (
            "password_env = \"ARSIP_PASSWORD\"",
            "password_file = \"/nonexistent/pw\"",
            "repository.main.password_file",
            4,
            "No such file",
        ),
        (
            "location = \"/var/backups/arsip\"",
            "location = \"var/backups\"",
            "repository.main.location",
            3,
            "not a repository location",
        ),
        (
            "[job.app-daily]",
            "[job.\"app daily\"]",
            "job.app daily",
            12,
            "not a valid name",
        ),
    ];
    for (from, to, key, line, words) in cases {
        assert!(BASE.contains(from), "{from}");
        let text = BASE.replacen(from, to, 1);
        let errs = errors(&text);
        let found = errs
            .iter()
            .find(|e| e.key == *key)
            .unwrap_or_else(|| panic!("no error for {key} in {errs:?}\n{text}"));
        assert_eq!(found.line, *line, "{found:?}\n{text}");
        assert!(found.message.contains(words), "{found:?}");
    }
}

#[test]
fn unknown_keys_and_syntax_errors_point_at_their_line() {
    let text = BASE.replace("rpo = \"24h\"", "rpo = \"24h\"\nrpoo = \"1h\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, 11, "{errs:?}");
    assert!(errs[0].message.contains("rpoo"), "{errs:?}");
    let errs = errors(&BASE.replace("version = 1", "version = 1\n[daemon\n"));
    assert_eq!(errs[0].line, 2, "{errs:?}");
    let errs = errors(&BASE.replace("version = 1", "version = 2"));
    assert!(
        errs[0].message.contains("version 2 is not known"),
        "{errs:?}"
    );
}

#[test]
fn every_error_is_reported_at_once_with_the_file_name() {
    let text = BASE
        .replace("rpo = \"24h\"", "rpo = \"soon\"")
        .replace("0 2 * * *", "0 25 * * *");
    let e = check(&text, PRIVATE).unwrap_err();
    assert!(e.errors.len() >= 2, "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with("/etc/arsip/arsip.toml:10:7: source.app.rpo: "),
        "{shown}"
    );
}

#[test]
fn inline_secrets_only_in_a_private_file() {
    let text = BASE.replace(
        "password_env = \"ARSIP_PASSWORD\"",
        "password = \"correct horse\"",
    );
    let e = check(&text, SHARED).unwrap_err();
    assert_eq!(e.errors[0].key, "repository.main.password", "{e}");
    assert!(e.errors[0].message.contains("password_file"), "{e}");
    assert!(!e.to_string().contains("correct horse"), "{e}");
    let not_ours = FileAccess {
        owner_is_us: false,
        private: true,
    };
    assert!(check(&text, not_ours).is_err());
    let c = check(&text, PRIVATE).unwrap();
    let shown = format!("{:?} {}", c, serde_json::to_string(&c).unwrap());
    assert!(!shown.contains("correct horse"), "{shown}");
}

#[test]
fn secret_files_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = BASE.replace(
        "password_env = \"ARSIP_PASSWORD\"",
        &format!("password_file = \"{}\"", pw.display()),
    );
    let e = check(&text, PRIVATE).unwrap_err();
    assert!(e.errors[0].message.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    check(&text, PRIVATE).unwrap();
}

#[test]
fn jobs_and_channels_check_what_they_need() {
    // Maintenance needs the full key; an agent file only backs up.
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    std::fs::write(&agent, "x").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = BASE.replace(
        "password_env = \"ARSIP_PASSWORD\"",
        &format!("agent_file = \"{}\"", agent.display()),
    )
        + "[job.prune]\ntype = \"prune\"\nrepository = \"main\"\nschedule = \"0 5 * * 0\"\n";
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.key == "job.prune.repository" && e.message.contains("full key")),
        "{errs:?}"
    );
    let text = format!(
        "{BASE}[channel.ops]\ntype = \"slack\"\nurl_env = \"SLACK_URL\"\nhost = \"x\"\n\
         [alerts]\nroutes = {{ critical = [\"ops\", \"pager\"] }}\n"
    );
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.key == "channel.ops.host" && e.message.contains("slack channel")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.key == "alerts.routes.critical" && e.message.contains("no [channel.pager]")),
        "{errs:?}"
    );
    let text = format!("{BASE}[api]\nlisten = \"0.0.0.0:9851\"\n");
    let errs = errors(&text);
    assert!(errs[0].message.contains("without TLS"), "{errs:?}");
}

#[test]
fn sizes() {
    assert_eq!(parse_bytes("2TiB"), Some(2 << 40));
    assert_eq!(parse_bytes("500 GB"), Some(500 << 30));
    assert_eq!(parse_bytes("17"), Some(17));
    assert_eq!(parse_bytes("1 XB"), None);
    assert_eq!(parse_bytes("GiB"), None);
}

#[test]
fn secrets_read_without_their_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s");
    std::fs::write(&f, "abc\n").unwrap();
    assert_eq!(Secret::File(f.clone()).read().unwrap(), "abc");
    std::fs::write(&f, "abc\n\n").unwrap();
    assert_eq!(Secret::File(f).read().unwrap(), "abc\n");
    let e = Secret::Env("ARSIP_TEST_SURELY_UNSET".into())
        .read()
        .unwrap_err();
    assert!(e.contains("ARSIP_TEST_SURELY_UNSET"), "{e}");
}

#[test]
fn secrets_in_connection_strings_urls_and_parser_messages_are_refused_unshown() {
    for dbname in [
        "host=x user=a password = hunter2",
        "host=x PASSWORD=hunter2",
        "postgresql://arsip:hunter2@db/app",
        "postgresql://db/app?sslmode=require&password=hunter2",
    ] {
        let text = BASE.replace("dbname = \"dbname=app\"", &format!("dbname = {dbname:?}"));
        let e = check(&text, PRIVATE).unwrap_err();
        assert!(e.to_string().contains("PGPASSFILE"), "{dbname}: {e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    let text = BASE.replace(
        "location = \"/var/backups/arsip\"",
        "location = \"https://user:hunter2@host/repo\"",
    );
    let e = check(&text, PRIVATE).unwrap_err().to_string();
    assert!(e.contains("credentials in a URL"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let text = BASE.replace("password_env = \"ARSIP_PASSWORD\"", "password = 8675309123");
    let e = check(&text, PRIVATE).unwrap_err().to_string();
    assert!(!e.contains("8675309123"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn token_names_are_names() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t");
    std::fs::write(&f, "x").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "{BASE}[api]\ntokens = [{{ name = \"a\\nb\", role = \"read\", file = {:?} }}]\n",
        f.display().to_string()
    );
    let e = check(&text, PRIVATE).unwrap_err().to_string();
    assert!(e.contains("not a valid name"), "{e}");
    assert_eq!(e.lines().count(), 1, "one error, one line: {e}");
}

#[test]
fn a_reload_may_change_jobs_and_alerts_but_not_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let text = example_in(dir.path());
    let old = check(&text, PRIVATE).unwrap();
    let mut new = old.clone();
    let (name, job) = new
        .jobs
        .iter()
        .next()
        .map(|(n, j)| (n.clone(), j.clone()))
        .unwrap();
    new.jobs.insert(format!("{name}-copy"), job);
    new.alerts.repeat_after = Some(SignedDuration::from_hours(4));
    assert!(old.restart_needed(&new).is_empty());
    new.daemon.state_dir = dir.path().join("elsewhere");
    new.api.listen = "127.0.0.1:1".parse().unwrap();
    let r = new.repositories.values_mut().next().unwrap();
    r.location = "/elsewhere".into();
    assert_eq!(
        old.restart_needed(&new),
        ["daemon.state_dir", "api.listen", "repository.*"]
    );
    // The digest of a job follows its definition and its source's.
    let mut changed = old.clone();
    assert_eq!(old.job_digest(&name), changed.job_digest(&name));
    changed.jobs.get_mut(&name).unwrap().retries += 1;
    assert_ne!(old.job_digest(&name), changed.job_digest(&name));
    let mut changed = old.clone();
    if let Some(s) = old.jobs[&name].source.clone() {
        changed.sources.get_mut(&s).unwrap().rpo = SignedDuration::from_hours(1);
        assert_ne!(old.job_digest(&name), changed.job_digest(&name));
    }
}

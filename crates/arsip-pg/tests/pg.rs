//! Integration tests of arsip's PostgreSQL paths against real, throwaway clusters.
//!
//! Guide: every test builds its own [`Env`] (a repository owned by the `postgres` OS user, a
//! full key file and a write-only agent file) and its own cluster(s) with
//! `arsip_pg::cluster::Cluster`, archiving through the real `arsip` binary. Requirements,
//! which make the tests FAIL (never skip) when absent: PostgreSQL server programs
//! (`ARSIP_PG_BIN`, or /usr/lib/postgresql/N/bin) and the arsip binary (`ARSIP_BIN`, or
//! `target/debug/arsip`: run `cargo build -p arsip-cli` first).
//!
//! Modules: `wal` (push/fetch contracts and exit codes), `logical` (pg_dump/pg_restore),
//! `physical` (base backups, PITR, timelines, crash tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arsip_pg::cluster::{chown_postgres, make_base, Cluster, ClusterOptions};

pub fn arsip_bin() -> PathBuf {
    let p = std::env::var_os("ARSIP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/arsip"));
    assert!(
        p.exists(),
        "arsip binary not found at {}: run `cargo build -p arsip-cli` (or set ARSIP_BIN)",
        p.display()
    );
    p.canonicalize().unwrap()
}

/// A repository for one test, owned by postgres so that archive_command can write to it.
pub struct Env {
    pub base: PathBuf,
    pub repo: PathBuf,
    pub key: PathBuf,
    pub agent: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let base = make_base("arsip-pgtest-").unwrap();
        let repo = base.join("repo");
        let key = base.join("full.key");
        let agent = base.join("agent.key");
        let e = Env {
            base,
            repo,
            key,
            agent,
        };
        let o = e
            .cmd()
            .env_remove("ARSIP_KEY_FILE")
            .args(["init", "--key-file-out"])
            .arg(&e.key)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "init: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = e
            .cmd()
            .args(["key", "add", "--agent", "--label", "db-host", "--out"])
            .arg(&e.agent)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "agent: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        chown_postgres(&e.base).unwrap();
        e
    }

    /// `arsip` with this repository and the full key file.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(arsip_bin());
        c.env("ARSIP_REPO", &self.repo)
            .env("ARSIP_KEY_FILE", &self.key)
            .env("ARSIP_PASSWORD", "test-password")
            .env("ARSIP_TEST_WEAK_KDF", "1")
            .env("ARSIP_CACHE_DIR", self.base.join("cache"))
            .env_remove("ARSIP_STANZA");
        c
    }

    pub fn archive_command(&self) -> String {
        format!(
            "{} --repo {} --key-file {} wal push %p",
            arsip_bin().display(),
            self.repo.display(),
            self.agent.display()
        )
    }

    pub fn cluster(&self) -> Cluster {
        let c = Cluster::init(&ClusterOptions {
            archive_command: Some(self.archive_command()),
            data_checksums: true,
            conf: vec!["archive_timeout = 0".into()],
        })
        .unwrap();
        c.start().unwrap();
        c
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::env::var_os("ARSIP_KEEP_CLUSTERS").is_none() {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }
}

pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}): {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Switch WAL and wait until the archiver has stored the file it closed.
pub fn switch_and_archive(c: &Cluster) -> String {
    let seg = c
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .unwrap();
    wait_archived(c, &seg);
    seg
}

pub fn wait_archived(c: &Cluster, seg: &str) {
    let t = Instant::now();
    loop {
        let last = c
            .psql(
                "postgres",
                "SELECT coalesce(last_archived_wal,'') || ' ' || failed_count || ' ' || coalesce(last_failed_wal,'') FROM pg_stat_archiver",
            )
            .unwrap();
        let done = last.split(' ').next().unwrap_or("");
        if !done.is_empty() && done >= seg {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{seg} not archived in 60 s: archiver says {last}\n{}",
            arsip_pg::cluster::tail(&c.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

mod wal {
    use super::*;

    #[test]
    fn push_fetch_and_exit_codes() {
        let env = Env::new();
        let c = env.cluster();
        c.psql(
            "postgres",
            "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1,10000) g",
        )
        .unwrap();
        let seg = switch_and_archive(&c);
        let id = arsip_pg::control::ClusterId::read(&c.data).unwrap();
        let ns = id.namespace();
        let listed = ok(env
            .cmd()
            .args(["wal", "list", "--namespace", &ns])
            .output()
            .unwrap());
        assert!(listed.contains(&seg), "{listed}");

        // fetch with the full key: same bytes as pg_wal holds
        let out = env.base.join("fetched");
        ok(env
            .cmd()
            .args(["wal", "fetch", "--prefetch", "0", "--namespace", &ns, &seg])
            .arg(&out)
            .output()
            .unwrap());
        let orig = std::fs::read(c.data.join("pg_wal").join(&seg)).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), orig);

        // missing: exactly 1
        let o = env
            .cmd()
            .args([
                "wal",
                "fetch",
                "--namespace",
                &ns,
                "00000001000000FF000000FF",
            ])
            .arg(env.base.join("nope"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = env
            .cmd()
            .args(["wal", "fetch", "--namespace", &ns, "00000009.history"])
            .arg(env.base.join("nope"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));

        // agents cannot read WAL: a failure that is not "missing"
        let o = env
            .cmd()
            .env("ARSIP_KEY_FILE", &env.agent)
            .args(["wal", "fetch", "--namespace", &ns, &seg])
            .arg(env.base.join("x"))
            .output()
            .unwrap();
        assert!(o.status.code().unwrap() >= 126, "{:?}", o.status);

        // transient storage failures on every read: bounded retries, then ≥ 126
        let o = env
            .cmd()
            .env("ARSIP_TEST_FAULTS", "get:wal/:transient")
            .args(["wal", "fetch", "--prefetch", "0", "--namespace", &ns, &seg])
            .arg(env.base.join("y"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(200),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );

        // re-push of the same file (a retried archive_command) succeeds; different content
        // under the same name fails loudly
        let copy = env.base.join(&seg);
        std::fs::write(&copy, &orig).unwrap();
        ok(env
            .cmd()
            .env("ARSIP_KEY_FILE", &env.agent)
            .args(["wal", "push", "--pgdata"])
            .arg(&c.data)
            .arg(&copy)
            .output()
            .unwrap());
        let mut changed = orig.clone();
        changed[1000] ^= 0xff;
        std::fs::write(&copy, &changed).unwrap();
        let o = env
            .cmd()
            .env("ARSIP_KEY_FILE", &env.agent)
            .args(["wal", "push", "--pgdata"])
            .arg(&c.data)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("DIFFERENT content"));

        // a damaged object: authentication failure, ≥ 126 (201)
        let obj = env.repo.join("wal").join(&ns).join(&seg);
        let mut bytes = std::fs::read(&obj).unwrap();
        let n = bytes.len() / 2;
        bytes[n] ^= 1;
        std::fs::remove_file(&obj).unwrap();
        std::fs::write(&obj, &bytes).unwrap();
        let o = env
            .cmd()
            .args(["wal", "fetch", "--prefetch", "0", "--namespace", &ns, &seg])
            .arg(env.base.join("z"))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(201),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    #[test]
    fn another_cluster_under_the_same_stanza_is_refused() {
        let env = Env::new();
        let a = env.cluster();
        switch_and_archive(&a);
        let b = Cluster::init(&ClusterOptions::default()).unwrap();
        let f = b.data.join("PG_VERSION");
        let o = env
            .cmd()
            .env("ARSIP_KEY_FILE", &env.agent)
            .args(["wal", "push", "--pgdata"])
            .arg(&b.data)
            .arg(&f)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("stanza"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // under its own stanza it archives into its own namespace
        ok(env
            .cmd()
            .env("ARSIP_KEY_FILE", &env.agent)
            .args(["wal", "push", "--stanza", "other", "--pgdata"])
            .arg(&b.data)
            .arg(&f)
            .output()
            .unwrap());
    }
}

//! Integration tests of arsip's PostgreSQL paths against real, throwaway clusters.
//!
//! Guide: every test builds its own [`Env`] (a repository owned by the `postgres` OS user, a
//! full key file and a write-only agent file) and its own cluster(s) with
//! `arsip_pg::cluster::Cluster`, archiving through the real `arsip` binary. Requirements,
//! which make the tests FAIL (never skip) when absent: PostgreSQL server programs
//! (`ARSIP_PG_BIN`, or /usr/lib/postgresql/N/bin) and the arsip binary (`ARSIP_BIN`, or
//! `target/debug/arsip`: run `cargo build -p arsip-cli --features test-hooks` first, or
//! `scripts/test -p arsip-pg`, which does; without the feature the binary ignores the
//! `ARSIP_TEST_*` hooks these tests use).
//!
//! Modules: `wal` (push/fetch contracts and exit codes), `logical` (pg_dump/pg_restore),
//! `physical` (base backups, PITR, timelines, crash tests).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use arsip_pg::cluster::{chown_postgres, make_base, Cluster, ClusterOptions};
use arsip_pg::PgSettings;

/// The harness's PostgreSQL settings, from its own environment (`ARSIP_PG_BIN`,
/// `ARSIP_PG_TMP`, `ARSIP_KEEP_CLUSTERS`, …), as the CLI resolves them.
pub fn pg_settings() -> PgSettings {
    PgSettings::from_vars(std::env::vars_os())
}

/// Cluster options with nothing but the harness's settings.
pub fn harness_opts() -> ClusterOptions {
    ClusterOptions {
        settings: pg_settings(),
        ..Default::default()
    }
}

pub fn arsip_bin() -> PathBuf {
    let p = std::env::var_os("ARSIP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/arsip"));
    assert!(
        p.exists(),
        "arsip binary not found at {}: run `cargo build -p arsip-cli --features test-hooks` (or set ARSIP_BIN)",
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
    #[allow(clippy::new_without_default)]
    pub fn new() -> Env {
        let base = make_base(&pg_settings(), "arsip-pgtest-").unwrap();
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

    /// `arsip --json backup pg --physical --fast` of cluster `c`, ready to run.
    pub fn physical_backup(&self, c: &Cluster) -> Command {
        let mut bk = self.cmd();
        bk.envs(c.env())
            .arg("--json")
            .args(["backup", "pg", "--physical", "--fast", "--pgdata"])
            .arg(&c.data);
        bk
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
            settings: pg_settings(),
        })
        .unwrap();
        c.start().unwrap();
        c
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !pg_settings().keep_clusters {
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

    /// Fetching a segment prefetches the next ones into pg_wal/arsip-prefetch; the next
    /// fetch is served from there and the spool is emptied as recovery moves on. History
    /// files are never prefetched.
    #[test]
    fn prefetch_spool() {
        let env = Env::new();
        let c = env.cluster();
        let mut segs = Vec::new();
        for _ in 0..3 {
            c.psql(
                "postgres",
                "CREATE TABLE IF NOT EXISTS p (x int); INSERT INTO p VALUES (1)",
            )
            .unwrap();
            segs.push(switch_and_archive(&c));
        }
        let ns = arsip_pg::control::ClusterId::read(&c.data)
            .unwrap()
            .namespace();
        // a data directory of our own for the spool (the fetcher only needs pg_wal/)
        let pgdata = env.base.join("fake-pgdata");
        std::fs::create_dir_all(pgdata.join("pg_wal")).unwrap();
        let spool = pgdata.join(arsip_pg::walarchive::PREFETCH_DIR);
        let fetch = |name: &str| {
            env.cmd()
                .args([
                    "wal",
                    "fetch",
                    "--prefetch",
                    "2",
                    "--namespace",
                    &ns,
                    "--pgdata",
                ])
                .arg(&pgdata)
                .arg(name)
                .arg(pgdata.join("pg_wal/RECOVERYXLOG"))
                .output()
                .unwrap()
        };
        ok(fetch(&segs[0]));
        assert!(spool.join(&segs[1]).exists() && spool.join(&segs[2]).exists());
        let orig1 = std::fs::read(c.data.join("pg_wal").join(&segs[1])).unwrap();
        ok(fetch(&segs[1]));
        assert_eq!(
            std::fs::read(pgdata.join("pg_wal/RECOVERYXLOG")).unwrap(),
            orig1
        );
        assert!(
            !spool.join(&segs[1]).exists(),
            "served from the spool and removed"
        );
        let o = fetch("00000002.history");
        assert_eq!(o.status.code(), Some(1));
        let left: Vec<_> = std::fs::read_dir(&spool)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.iter()
                .all(|n| !n.to_string_lossy().contains("history")),
            "{left:?}"
        );
    }

    #[test]
    fn another_cluster_under_the_same_stanza_is_refused() {
        let env = Env::new();
        let a = env.cluster();
        switch_and_archive(&a);
        let b = Cluster::init(&harness_opts()).unwrap();
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

fn json_out(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

mod logical {
    use super::*;

    const SCHEMA: &str = "
        CREATE TABLE tenants (id serial PRIMARY KEY, name text NOT NULL);
        CREATE TABLE vehicles (id bigserial PRIMARY KEY, tenant_id int NOT NULL REFERENCES tenants(id),
            vin text NOT NULL, attrs jsonb);
        CREATE INDEX vehicles_tenant ON vehicles (tenant_id);
        CREATE TABLE leads (id bigserial PRIMARY KEY, tenant_id int NOT NULL, email text,
            created timestamptz DEFAULT now(), touched int DEFAULT 0);
        CREATE INDEX leads_email ON leads (email);
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN NEW.touched := NEW.touched + 1; RETURN NEW; END $$;
        CREATE TRIGGER leads_touch BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION touch();
        INSERT INTO tenants (name) SELECT 'tenant ' || g FROM generate_series(1, 10) g;
        INSERT INTO vehicles (tenant_id, vin, attrs) SELECT 1 + g % 10, md5(g::text),
            jsonb_build_object('km', g * 7) FROM generate_series(1, 5000) g;
        INSERT INTO leads (tenant_id, email) SELECT 1 + g % 10, 'l' || g || '@example.id'
            FROM generate_series(1, 3000) g;";

    #[test]
    fn dump_restore_whole_and_one_table() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE DATABASE app").unwrap();
        c.psql("app", SCHEMA).unwrap();

        // a password inside the URL is refused before anything runs
        let o = env
            .cmd()
            .args([
                "backup",
                "pg",
                "--logical",
                "--dbname",
                "postgresql://postgres:s3cret@localhost/app",
            ])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("refusing a password") && !err.contains("s3cret"),
            "{err}"
        );

        let b = json_out(
            env.cmd()
                .arg("--json")
                .args(["backup", "pg", "--logical", "--all", "--dbname"])
                .arg(c.conninfo("app"))
                .output()
                .unwrap(),
        );
        let id = b["id"].as_str().unwrap().to_string();
        let snaps = json_out(
            env.cmd()
                .args(["--json", "snapshots", "--kind", "pg-logical"])
                .output()
                .unwrap(),
        );
        let facts = &snaps[0]["facts"];
        assert_eq!(facts["row_counts"]["public.vehicles"], 5000);
        assert_eq!(facts["row_counts"]["public.leads"], 3000);
        assert!(facts["database_size"].as_i64().unwrap() > 0);
        assert!(facts["server_version"].as_str().unwrap().starts_with("15"));

        // whole database into a new one (--create), streamed
        ok(env
            .cmd()
            .args([
                "restore",
                "pg",
                "--logical",
                &id[..8],
                "--create",
                "--dbname",
            ])
            .arg(c.conninfo("app_copy"))
            .output()
            .unwrap());
        assert_eq!(
            c.psql("app_copy", "SELECT count(*) FROM vehicles").unwrap(),
            "5000"
        );
        assert_eq!(
            c.psql(
                "app_copy",
                "SELECT md5(string_agg(vin, ',' ORDER BY id)) FROM vehicles"
            )
            .unwrap(),
            c.psql(
                "app",
                "SELECT md5(string_agg(vin, ',' ORDER BY id)) FROM vehicles"
            )
            .unwrap()
        );

        // globals: a role made before the backup comes back with --globals
        c.psql("postgres", "DROP DATABASE app_copy").unwrap();
        c.psql("postgres", "CREATE ROLE dealer_app LOGIN").unwrap();
        let b2 = json_out(
            env.cmd()
                .arg("--json")
                .args(["backup", "pg", "--logical", "--all", "--dbname"])
                .arg(c.conninfo("app"))
                .output()
                .unwrap(),
        );
        c.psql("postgres", "DROP ROLE dealer_app").unwrap();
        ok(env
            .cmd()
            .args([
                "restore",
                "pg",
                "--logical",
                &b2["id"].as_str().unwrap()[..12],
                "--globals",
                "--create",
                "--dbname",
            ])
            .arg(c.conninfo("app_copy"))
            .output()
            .unwrap());
        assert_eq!(
            c.psql(
                "postgres",
                "SELECT count(*) FROM pg_roles WHERE rolname = 'dealer_app'"
            )
            .unwrap(),
            "1"
        );

        // one table, with its index, trigger and sequence, in parallel mode
        c.psql("postgres", "CREATE DATABASE one").unwrap();
        ok(env
            .cmd()
            .args([
                "restore",
                "pg",
                "--logical",
                "latest",
                "--table",
                "public.leads",
                "--jobs",
                "2",
                "--dbname",
            ])
            .arg(c.conninfo("one"))
            .output()
            .unwrap());
        assert_eq!(c.psql("one", "SELECT count(*) FROM leads").unwrap(), "3000");
        assert_eq!(
            c.psql("one", "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'leads'").unwrap(),
            "leads_email,leads_pkey"
        );
        assert_eq!(
            c.psql(
                "one",
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'leads_touch'"
            )
            .unwrap(),
            "1"
        );
        assert_eq!(
            c.psql(
                "one",
                "SELECT count(*) FROM pg_tables WHERE tablename = 'vehicles'"
            )
            .unwrap(),
            "0"
        );
    }

    #[test]
    fn failed_dump_commits_nothing() {
        let env = Env::new();
        let c = env.cluster();
        // no such database: pg_dump (or the connection) fails, no snapshot appears
        let o = env
            .cmd()
            .args(["backup", "pg", "--logical", "--dbname"])
            .arg(c.conninfo("does_not_exist"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        let snaps = json_out(env.cmd().args(["--json", "snapshots"]).output().unwrap());
        assert_eq!(snaps.as_array().unwrap().len(), 0);
    }

    /// A SQL identifier, always quoted.
    fn qi(s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }

    /// A SQL string literal.
    fn ql(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    /// A libpq conninfo value (for `dbname=` in `Cluster::conninfo` / `psql`).
    fn cv(s: &str) -> String {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }

    /// What `--create` must reproduce of database `db`, comparable across clusters: owner,
    /// ACL (sorted), connection limit, encoding and locale, comment, and every
    /// `ALTER DATABASE … SET` / `ALTER ROLE … IN DATABASE … SET` (as role=settings).
    /// Empty when the database does not exist.
    fn db_props(c: &Cluster, db: &str) -> String {
        c.psql(
            "postgres",
            &format!(
                "SELECT pg_get_userbyid(d.datdba) \
                 || ' | acl ' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a), 'default') \
                 || ' | limit ' || d.datconnlimit || ' | ' || pg_encoding_to_char(d.encoding) \
                 || ' ' || d.datcollate || ' ' || d.datctype || ' ' || d.datlocprovider::text \
                 || ' | comment ' || coalesce(shobj_description(d.oid, 'pg_database'), '') \
                 || ' | settings ' || coalesce((SELECT string_agg(coalesce(r.rolname, '*') || '=' \
                    || array_to_string(s.setconfig, ';'), ' ' ORDER BY r.rolname NULLS FIRST) \
                    FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole \
                    WHERE s.setdatabase = d.oid), '') \
                 FROM pg_database d WHERE d.datname = {}",
                ql(db)
            ),
        )
        .unwrap()
    }

    fn plain_cluster() -> Cluster {
        let c = Cluster::init(&harness_opts()).unwrap();
        c.start().unwrap();
        c
    }

    fn fails(o: Output) -> String {
        assert!(
            !o.status.success(),
            "expected a failure, got success:\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `--create` reproduces owner, database ACL, `ALTER DATABASE … SET`, per-role settings,
    /// connection limit and comment, for a family of hostile database and role names, both
    /// into a fresh cluster under the same name (roles from `--globals`) and beside the
    /// original under a new name. Without the roles it refuses before creating anything, and
    /// a restore that fails after creating the database drops it again.
    #[test]
    fn create_reproduces_database_properties() {
        let env = Env::new();
        let a = env.cluster();
        // (database, owner)
        let dbs = [
            ("app", "app_owner"),
            ("Tenant's \"DB\" 1; x", "Owner O'Brien"),
            ("select", "we\"ird \\ role"),
            ("ünï cödé", "ÖWNER"),
        ];
        let reader = "Read Only \"R\"";
        a.psql(
            "postgres",
            &format!(
                "CREATE ROLE {}; CREATE ROLE plain_reader; CREATE ROLE table_owner",
                qi(reader)
            ),
        )
        .unwrap();
        let mut ids = Vec::new();
        for (i, (db, owner)) in dbs.iter().enumerate() {
            let (d, o) = (qi(db), qi(owner));
            a.psql("postgres", &format!("CREATE ROLE {o}")).unwrap();
            a.psql("postgres", &format!("CREATE DATABASE {d} OWNER {o}"))
                .unwrap();
            a.psql(
                "postgres",
                &format!(
                    "REVOKE ALL ON DATABASE {d} FROM PUBLIC;
                     GRANT CONNECT ON DATABASE {d} TO plain_reader;
                     GRANT CONNECT, TEMP ON DATABASE {d} TO {r} WITH GRANT OPTION;
                     ALTER DATABASE {d} SET work_mem = '7MB';
                     ALTER DATABASE {d} SET search_path = 'a', 'b c';
                     ALTER ROLE {r} IN DATABASE {d} SET statement_timeout = '5s';
                     ALTER ROLE plain_reader IN DATABASE {d} SET work_mem = '3MB';
                     ALTER DATABASE {d} CONNECTION LIMIT {limit};
                     COMMENT ON DATABASE {d} IS {comment}",
                    r = qi(reader),
                    limit = 7 + i,
                    comment = ql(&format!("it's {db} ; \"x\"")),
                ),
            )
            .unwrap();
            a.psql(
                &cv(db),
                "CREATE TABLE public.t (id int PRIMARY KEY, v text);
                 INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(1, 100) g;
                 CREATE TABLE public.owned (x int); ALTER TABLE public.owned OWNER TO table_owner",
            )
            .unwrap();
            if i == 0 {
                // would break the restore's own sessions if applied before the content
                a.psql(
                    "postgres",
                    &format!("ALTER DATABASE {d} SET default_transaction_read_only = on"),
                )
                .unwrap();
            }
            let b = json_out(
                env.cmd()
                    .arg("--json")
                    .args(["backup", "pg", "--logical", "--all", "--dbname"])
                    .arg(a.conninfo(&cv(db)))
                    .output()
                    .unwrap(),
            );
            ids.push(b["id"].as_str().unwrap().to_string());
        }

        // A fresh cluster without the roles: refused before anything is created.
        let b = plain_cluster();
        let o = env
            .cmd()
            .args([
                "restore",
                "pg",
                "--logical",
                &ids[1],
                "--create",
                "--dbname",
            ])
            .arg(b.conninfo(&cv(dbs[1].0)))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(8), "refused: exit 8");
        let err = fails(o);
        assert!(
            err.contains("\"Owner O'Brien\" (the owner)") && err.contains("--globals"),
            "{err}"
        );
        assert_eq!(db_props(&b, dbs[1].0), "");

        // The database-level roles exist but one owning a table does not: pg_restore fails
        // half-way and the database it created is dropped again.
        let c = plain_cluster();
        c.psql(
            "postgres",
            &format!(
                "CREATE ROLE {}; CREATE ROLE {}; CREATE ROLE plain_reader",
                qi(dbs[2].1),
                qi(reader)
            ),
        )
        .unwrap();
        let err = fails(
            env.cmd()
                .args([
                    "restore",
                    "pg",
                    "--logical",
                    &ids[2],
                    "--create",
                    "--dbname",
                ])
                .arg(c.conninfo(&cv(dbs[2].0)))
                .output()
                .unwrap(),
        );
        assert!(
            err.contains("table_owner") && err.contains("dropped again"),
            "{err}"
        );
        assert_eq!(db_props(&c, dbs[2].0), "");

        for (i, (db, _)) in dbs.iter().enumerate() {
            let want = db_props(&a, db);
            assert!(
                want.contains("7MB") && want.contains("statement_timeout=5s"),
                "{want}"
            );
            // same name, fresh cluster, roles from the snapshot's globals
            ok(env
                .cmd()
                .args([
                    "restore",
                    "pg",
                    "--logical",
                    &ids[i],
                    "--globals",
                    "--create",
                ])
                .arg("--dbname")
                .arg(b.conninfo(&cv(db)))
                .output()
                .unwrap());
            assert_eq!(db_props(&b, db), want, "fresh cluster, {db:?}");
            assert_eq!(
                b.psql(&cv(db), "SELECT count(*) FROM public.t").unwrap(),
                "100"
            );
            // a new name beside the original
            let copy = format!("{db} copy");
            ok(env
                .cmd()
                .args([
                    "restore",
                    "pg",
                    "--logical",
                    &ids[i],
                    "--create",
                    "--dbname",
                ])
                .arg(a.conninfo(&cv(&copy)))
                .output()
                .unwrap());
            assert_eq!(db_props(&a, &copy), want, "renamed copy of {db:?}");
            assert_eq!(
                a.psql(
                    &cv(&copy),
                    "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'owned'"
                )
                .unwrap(),
                "table_owner"
            );
        }
    }

    /// Relations, functions and their ACLs in `db`: what a failed restore must leave alone.
    fn fingerprint(c: &Cluster, db: &str) -> String {
        c.psql(
            db,
            "SELECT coalesce(string_agg(x, ' ' ORDER BY x), '') FROM ( \
               SELECT c.relkind::text || ':' || n.nspname || '.' || c.relname || ':' || coalesce(c.relacl::text, '') AS x \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               UNION ALL SELECT 'f:' || p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
               WHERE n.nspname = 'public') s",
        )
        .unwrap()
    }

    /// Table, sequence and column ACLs of `tables` in `db`, sorted.
    fn table_acls(c: &Cluster, db: &str, tables: &[&str]) -> String {
        let list = tables.iter().map(|t| ql(t)).collect::<Vec<_>>().join(",");
        c.psql(
            db,
            &format!(
                "SELECT coalesce(string_agg(x, ' ' ORDER BY x), '') FROM ( \
                   SELECT c.relname || ':' || coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(c.relacl) a), '-') AS x \
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = 'public' AND (c.relname IN ({list}) \
                     OR c.oid IN (SELECT d.objid FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid \
                                  WHERE d.classid = 'pg_class'::regclass AND t.relname IN ({list}) AND d.deptype = 'a')) \
                   UNION ALL SELECT c.relname || '.' || a.attname || ':' || a.attacl::text \
                   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                   WHERE a.attacl IS NOT NULL AND c.relname IN ({list})) s"
            ),
        )
        .unwrap()
    }

    /// `--table` keeps the GRANTs of the table, its columns and its sequences (hostile
    /// names included); an unknown table is an error that names it and its near matches and
    /// leaves the target untouched; a restore that fails half-way leaves nothing behind.
    #[test]
    fn table_restore_keeps_grants_and_is_all_or_nothing() {
        let env = Env::new();
        let c = env.cluster();
        let odd = "Odd \"Leads\" 2";
        let weird = "we \"ird";
        c.psql("postgres", "CREATE DATABASE app").unwrap();
        c.psql(
            "postgres",
            &format!("CREATE ROLE reader; CREATE ROLE {}", qi(weird)),
        )
        .unwrap();
        c.psql("app", SCHEMA).unwrap();
        c.psql(
            "app",
            &format!(
                "GRANT SELECT ON leads TO reader;
                 GRANT UPDATE (email), INSERT ON leads TO {w} WITH GRANT OPTION;
                 GRANT USAGE ON SEQUENCE leads_id_seq TO reader;
                 COMMENT ON TABLE leads IS 'the leads';
                 CREATE TABLE leads_archive (id bigserial PRIMARY KEY, note text);
                 CREATE TABLE public.{o} (id serial PRIMARY KEY, {col} text);
                 INSERT INTO public.{o} ({col}) VALUES ('a'), ('b');
                 GRANT SELECT ON public.{o} TO reader;
                 GRANT UPDATE ({col}) ON public.{o} TO {w};
                 GRANT SELECT ON SEQUENCE public.{s} TO {w}",
                w = qi(weird),
                o = qi(odd),
                col = qi("Col \"1\""),
                s = qi(&format!("{odd}_id_seq")),
            ),
        )
        .unwrap();
        let id = json_out(
            env.cmd()
                .arg("--json")
                .args(["backup", "pg", "--logical", "--dbname"])
                .arg(c.conninfo("app"))
                .output()
                .unwrap(),
        )["id"]
            .as_str()
            .unwrap()
            .to_string();
        let restore = |db: &str, extra: &[&str]| {
            env.cmd()
                .args(["restore", "pg", "--logical", &id[..8]])
                .args(extra)
                .arg("--dbname")
                .arg(c.conninfo(db))
                .output()
                .unwrap()
        };

        // GRANTs kept
        c.psql("postgres", "CREATE DATABASE one").unwrap();
        let t = format!("public.{odd}");
        ok(restore("one", &["--table", "public.leads", "--table", &t]));
        let want = table_acls(&c, "app", &["leads", odd]);
        assert!(
            want.contains("reader=r/postgres")
                && want.contains("email:")
                && want.contains("leads_id_seq:"),
            "{want}"
        );
        assert_eq!(table_acls(&c, "one", &["leads", odd]), want);
        assert_eq!(c.psql("one", "SELECT count(*) FROM leads").unwrap(), "3000");
        // leads_archive_id_seq looks like one of leads' sequences by name, but is not
        assert_eq!(
            c.psql(
                "one",
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'leads_archive%'"
            )
            .unwrap(),
            "0"
        );
        assert_eq!(
            c.psql("one", "SELECT obj_description('leads'::regclass)")
                .unwrap(),
            "the leads"
        );

        // unknown tables: refused, named, near matches listed, target untouched
        c.psql("postgres", "CREATE DATABASE two").unwrap();
        c.psql(
            "two",
            "CREATE TABLE marker (x int); GRANT SELECT ON marker TO reader",
        )
        .unwrap();
        let before = fingerprint(&c, "two");
        for tables in [
            &["public.leadz"][..],
            &["public.leads", "public.nope"],
            &["app.leads"],
            &["public.Leads"],
        ] {
            let args: Vec<&str> = tables.iter().flat_map(|t| ["--table", *t]).collect();
            let o = restore("two", &args);
            assert_eq!(o.status.code(), Some(8), "refused: exit 8");
            let err = fails(o);
            let bad = tables.last().unwrap();
            assert!(err.contains(&format!("no table {bad}")), "{err}");
            if *bad != "public.nope" {
                assert!(err.contains("did you mean public.leads"), "{err}");
            }
            assert_eq!(fingerprint(&c, "two"), before, "{tables:?}");
        }
        // not SCHEMA.TABLE: a usage error
        let o = restore("two", &["--table", "leads"]);
        assert_eq!(o.status.code(), Some(2));
        assert!(fails(o).contains("not SCHEMA.TABLE"));
        // … and with --create, the database is not created
        let err = fails(restore("fresh", &["--create", "--table", "public.nope"]));
        assert!(err.contains("no table public.nope"), "{err}");
        assert_eq!(
            c.psql(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'fresh'"
            )
            .unwrap(),
            "0"
        );

        // fails half-way (an index name taken by another table, after the data is loaded):
        // nothing of the restore remains, with or without --jobs
        c.psql("postgres", "CREATE DATABASE three").unwrap();
        c.psql(
            "three",
            "CREATE TABLE other (x text); CREATE INDEX leads_email ON other (x)",
        )
        .unwrap();
        let before = fingerprint(&c, "three");
        for extra in [&[][..], &["--jobs", "2"]] {
            let mut args = vec!["--table", "public.leads"];
            args.extend_from_slice(extra);
            let err = fails(restore("three", &args));
            assert!(err.contains("leads_email"), "{err}");
            assert_eq!(fingerprint(&c, "three"), before);
        }
        // the same conflict in the trigger function (created before the table)
        c.psql("postgres", "CREATE DATABASE four").unwrap();
        c.psql("four", "CREATE TABLE leads (x int)").unwrap();
        let before = fingerprint(&c, "four");
        fails(restore("four", &["--table", "public.leads"]));
        assert_eq!(fingerprint(&c, "four"), before);
    }
}

/// SHA of pgbench_accounts: what a restore to a moment must reproduce exactly.
pub fn accounts_sum(c: &Cluster, db: &str) -> String {
    c.psql(
        db,
        "SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts",
    )
    .unwrap()
}

pub fn pgbench(c: &Cluster, args: &[&str]) {
    let o = c.client("pgbench").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "pgbench: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Move the mtime of every regular file under `dir` back by `age`.
pub fn backdate_files(dir: &Path, age: Duration) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                // a file the server removed meanwhile is fine to miss
                if let Ok(f) = std::fs::File::options().write(true).open(e.path()) {
                    let was = f.metadata().unwrap().modified().unwrap();
                    f.set_modified(was - age).unwrap();
                }
            }
        }
    }
}

/// Restore `snapshot` (or the automatic choice) to `target_time` into a fresh harness
/// directory, start it, wait for promotion.
pub fn restore_to(env: &Env, extra: &[&str]) -> Cluster {
    restore_to_with(env, extra, &[])
}

/// [`restore_to`] with extra environment for the restore command.
pub fn restore_to_with(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Cluster {
    let base = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
    let o = env
        .cmd()
        .envs(vars.iter().copied())
        .args(["restore", "pg", "--physical", "--to"])
        .arg(base.join("data"))
        .args(extra)
        .output()
        .unwrap();
    ok(o);
    start_restored(base)
}

/// Adopt a data directory restored into `base/data`, start it, and wait until it is promoted.
pub fn start_restored(base: PathBuf) -> Cluster {
    let c = Cluster::adopt(base, &harness_opts()).unwrap();
    c.start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(arsip_pg::restore::wait_for_recovery(
        &c.bin,
        &c.socket_dir.display().to_string(),
        c.port,
        "promote",
        Duration::from_secs(300),
        &c.data,
        &c.log_path(),
    ))
    .map_err(|e| format!("{e}\n{}", arsip_pg::cluster::tail(&c.log(), 30)))
    .unwrap();
    c
}

mod physical {
    use super::*;

    #[test]
    fn pitr_while_pgbench_runs_and_timelines() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "2", "-q", "postgres"]);
        let b = json_out(env.physical_backup(&c).output().unwrap());
        assert!(b["files"].as_u64().unwrap() > 100);

        // moments: after each burst of writes, record time and checksum
        let mut moments = Vec::new();
        for _ in 0..3 {
            pgbench(&c, &["-n", "-c", "2", "-t", "200", "postgres"]);
            let t = c.psql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')").unwrap();
            moments.push((t, accounts_sum(&c, "postgres")));
            std::thread::sleep(Duration::from_millis(300));
        }
        pgbench(&c, &["-n", "-c", "2", "-t", "200", "postgres"]);
        let final_sum = accounts_sum(&c, "postgres");
        switch_and_archive(&c);

        // both restores are declared the new primary (and archive their timelines), the
        // second one restored from the original history (timeline 1)
        for (t, sum) in &moments[..2] {
            let r = restore_to(
                &env,
                &[
                    "--target-time",
                    t,
                    "--promote-as-primary",
                    "--target-timeline",
                    "1",
                ],
            );
            assert_eq!(&accounts_sum(&r, "postgres"), sum, "restore to {t}");
            switch_and_archive(&r);
        }
        // the two restores promoted to timelines 2 and 3; a later restore of the original
        // history still replays to the end of timeline 1
        let r = restore_to(&env, &["--target-timeline", "1"]);
        assert_eq!(accounts_sum(&r, "postgres"), final_sum);
        let history = ok(env.cmd().args(["wal", "list"]).output().unwrap());
        assert!(
            history.contains("00000002.history") && history.contains("00000003.history"),
            "{history}"
        );
    }

    /// WAL retention follows the backups: after the older backup is forgotten, prune removes
    /// the WAL only it needed, keeps what the newer backup and the window need, and a
    /// point-in-time restore from the newer backup still replays to the end. `wal show`
    /// names the recoverable window before and after.
    #[test]
    fn prune_removes_the_wal_only_forgotten_backups_needed() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "1", "-q", "postgres"]);
        json_out(env.physical_backup(&c).output().unwrap());
        for _ in 0..3 {
            pgbench(&c, &["-n", "-c", "2", "-t", "100", "postgres"]);
            switch_and_archive(&c);
        }
        json_out(env.physical_backup(&c).output().unwrap());
        pgbench(&c, &["-n", "-c", "2", "-t", "100", "postgres"]);
        let final_sum = accounts_sum(&c, "postgres");
        switch_and_archive(&c);
        let files = |env: &Env| -> Vec<String> {
            let v = json_out(env.cmd().args(["wal", "list", "--json"]).output().unwrap());
            v.as_object()
                .unwrap()
                .values()
                .flat_map(|f| f.as_array().unwrap().iter())
                .map(|f| f.as_str().unwrap().to_string())
                .collect()
        };
        let before = files(&env);
        let show = json_out(env.cmd().args(["wal", "show", "--json"]).output().unwrap());
        assert_eq!(show[0]["physical_backups"], 2, "{show}");
        assert!(show[0]["gaps"].as_array().unwrap().is_empty(), "{show}");

        ok(env
            .cmd()
            .args(["forget", "--keep-last", "1"])
            .output()
            .unwrap());
        std::thread::sleep(Duration::from_secs(2));
        let p = json_out(
            env.cmd()
                .args(["prune", "--pitr-window", "1s", "--json"])
                .output()
                .unwrap(),
        );
        let removed = p["wal"]["removed_files"].as_u64().unwrap();
        assert!(removed >= 3, "the first backup's WAL goes: {p}");
        let after = files(&env);
        assert_eq!(after.len() as u64 + removed, before.len() as u64);
        assert!(after
            .iter()
            .any(|f| f.ends_with(".history") || f.len() == 24));
        let show = json_out(env.cmd().args(["wal", "show", "--json"]).output().unwrap());
        assert_eq!(show[0]["physical_backups"], 1, "{show}");
        assert!(show[0]["recoverable_to"].is_string(), "{show}");

        let r = restore_to(&env, &[]);
        assert_eq!(accounts_sum(&r, "postgres"), final_sum);
        // The audit trail has the backups, the forget, the prune and the restore.
        let log = json_out(env.cmd().args(["audit", "--json"]).output().unwrap());
        let ops: Vec<&str> = log["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["op"].as_str().unwrap())
            .collect();
        for op in ["backup", "forget", "prune", "restore"] {
            assert!(ops.contains(&op), "{op} in {ops:?}");
        }
    }

    /// A second backup reuses the chunks of files unchanged since the first (without reading
    /// them) and still restores exactly.
    #[test]
    fn second_backup_reuses_unchanged_files() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "2", "-q", "postgres"]);
        c.psql("postgres", "CHECKPOINT").unwrap();
        // Files are reused only if older than the previous backup's start minus one second
        // (a file changed within that second may change again unseen). On a fast machine the
        // cluster is created and backed up within one second, so age the files first instead
        // of hoping the machine is slow.
        backdate_files(&c.data, Duration::from_secs(60));
        let backup = || json_out(env.physical_backup(&c).output().unwrap());
        backup();
        pgbench(&c, &["-n", "-t", "100", "postgres"]);
        let second = backup();
        let snaps = json_out(
            env.cmd()
                .args(["--json", "snapshots", "--kind", "pg-physical"])
                .output()
                .unwrap(),
        );
        let facts = &snaps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == second["id"])
            .unwrap()["facts"];
        let reused = facts["reused_files"].as_u64().unwrap();
        assert!(reused > 100, "reused {reused} files: {facts}");
        // pgbench rewrote pgbench_accounts, so most bytes are read again; catalogs are not
        assert!(facts["reused_bytes"].as_u64().unwrap() > 1 << 20, "{facts}");
        let sum = accounts_sum(&c, "postgres");
        switch_and_archive(&c);
        let r = restore_to(
            &env,
            &[second["id"].as_str().unwrap(), "--target", "immediate"],
        );
        // immediate: consistent at the end of the second backup, before nothing else ran
        assert_eq!(accounts_sum(&r, "postgres"), sum);
        let r2 = restore_to(&env, &["--no-archive"]);
        assert_eq!(accounts_sum(&r2, "postgres"), sum);
    }

    /// A tablespace is backed up through its link, restored into the directory
    /// `--tablespace-map` gives (its original location is in use and refused), linked from
    /// `pg_tblspc`, and replayed into by recovery.
    #[test]
    fn tablespace_restored_into_another_directory() {
        let env = Env::new();
        let c = env.cluster();
        let ts = env.base.join("ts-original");
        std::fs::create_dir(&ts).unwrap();
        chown_postgres(&ts).unwrap();
        // CREATE TABLESPACE refuses to run inside a multi-statement string
        for sql in [
            format!("CREATE TABLESPACE t1 LOCATION '{}'", ts.display()),
            "CREATE TABLE big (id int PRIMARY KEY USING INDEX TABLESPACE t1, v text) TABLESPACE t1"
                .into(),
            "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g".into(),
        ] {
            c.psql("postgres", &sql).unwrap();
        }
        let oid = c
            .psql(
                "postgres",
                "SELECT oid FROM pg_tablespace WHERE spcname = 't1'",
            )
            .unwrap();
        ok(env.physical_backup(&c).output().unwrap());
        // after the backup: replayed from WAL into the restored tablespace
        c.psql(
            "postgres",
            "INSERT INTO big SELECT g, md5(g::text) FROM generate_series(20001, 25000) g",
        )
        .unwrap();
        let want = c
            .psql("postgres", "SELECT count(*) || ' ' || sum(id) FROM big")
            .unwrap();
        switch_and_archive(&c);

        let restore = |to: &Path, extra: &[&str]| {
            env.cmd()
                .args(["restore", "pg", "--physical", "--to"])
                .arg(to)
                .args(extra)
                .output()
                .unwrap()
        };
        let scratch = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
        // the original location holds the running cluster's tablespace
        let o = restore(&scratch.join("data"), &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("original location") && err.contains("--tablespace-map"),
            "{err}"
        );
        // an OID the backup does not have
        let o = restore(&scratch.join("data"), &["--tablespace-map", "1=/tmp/x"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains(&format!("its tablespaces are {oid}")), "{err}");
        assert!(!scratch.join("data").exists(), "refusals write nothing");
        let _ = std::fs::remove_dir_all(&scratch);

        let moved = env.base.join("ts-restored");
        let map = format!("{oid}={}", moved.display());
        let r = restore_to(&env, &["--tablespace-map", &map, "--no-archive"]);
        assert_eq!(
            r.psql("postgres", "SELECT count(*) || ' ' || sum(id) FROM big")
                .unwrap(),
            want
        );
        assert_eq!(
            r.psql("postgres", &format!("SELECT pg_tablespace_location({oid})"))
                .unwrap(),
            moved.display().to_string()
        );
        assert_eq!(
            std::fs::read_link(r.data.join("pg_tblspc").join(&oid)).unwrap(),
            moved
        );
        // the index in the tablespace works, and the original cluster is untouched
        assert_eq!(
            r.psql(
                "postgres",
                "SET enable_seqscan = off; SELECT v FROM big WHERE id = 24999"
            )
            .unwrap(),
            c.psql("postgres", "SELECT md5('24999')").unwrap()
        );
        assert_eq!(
            c.psql("postgres", "SELECT count(*) || ' ' || sum(id) FROM big")
                .unwrap(),
            want
        );
    }

    #[test]
    fn refusals_before_writing() {
        let env = Env::new();
        let c = env.cluster();
        ok(env.physical_backup(&c).output().unwrap());
        // non-empty target
        let d = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
        std::fs::write(d.join("x"), b"x").unwrap();
        let o = env
            .cmd()
            .args(["restore", "pg", "--physical", "--to"])
            .arg(&d)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
        // a target before every backup
        let o = env
            .cmd()
            .args([
                "restore",
                "pg",
                "--physical",
                "--target-time",
                "2001-01-01T00:00:00Z",
                "--to",
            ])
            .arg(d.join("sub"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("no physical backup ends before"));
        let _ = std::fs::remove_dir_all(&d);
    }
}

mod timelines {
    use super::*;

    /// A scratch restore (--no-archive, now the default) leaves no trace in the WAL
    /// namespace; a restore declared the new primary then takes timeline 2, keeps archiving
    /// on it, and a later restore of the same base backup follows timeline 2 to the restored
    /// cluster's newest commit.
    #[test]
    fn scratch_then_real_restore_then_follow_the_new_timeline() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "1", "-q", "postgres"]);
        ok(env.physical_backup(&c).output().unwrap());
        pgbench(&c, &["-n", "-t", "100", "postgres"]);
        let original = accounts_sum(&c, "postgres");
        switch_and_archive(&c);
        drop(c);

        let scratch = restore_to(&env, &["--no-archive"]);
        assert_eq!(accounts_sum(&scratch, "postgres"), original);
        scratch
            .psql(
                "postgres",
                "UPDATE pgbench_accounts SET abalance = -1 WHERE aid < 10",
            )
            .unwrap();
        scratch.psql("postgres", "SELECT pg_switch_wal()").unwrap();
        drop(scratch);
        let listed = ok(env.cmd().args(["wal", "list"]).output().unwrap());
        assert!(
            !listed.contains(".history"),
            "a scratch restore archived: {listed}"
        );

        let real = restore_to(&env, &["--promote-as-primary"]);
        assert_eq!(accounts_sum(&real, "postgres"), original);
        pgbench(&real, &["-n", "-t", "50", "postgres"]);
        let after = accounts_sum(&real, "postgres");
        let seg = switch_and_archive(&real);
        assert!(seg.starts_with("00000002"), "{seg}");
        drop(real);

        let again = restore_to(&env, &[]);
        assert_eq!(accounts_sum(&again, "postgres"), after);
        let tl = again
            .psql(
                "postgres",
                "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            )
            .unwrap();
        assert_eq!(tl, "00000003");
    }
}

mod crash {
    use super::*;

    /// `kill -9` of `wal push` at many moments: afterwards the segment is either absent or
    /// complete and authentic, never partial, and a retried push succeeds.
    #[test]
    fn kill_9_during_wal_push_loses_nothing() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "1", "-q", "postgres"]);
        let seg = switch_and_archive(&c);
        let orig = std::fs::read(c.data.join("pg_wal").join(&seg)).unwrap();
        let ns = arsip_pg::control::ClusterId::read(&c.data)
            .unwrap()
            .namespace();
        let mut absent = 0;
        for (i, delay_ms) in [0u64, 2, 5, 10, 20, 40, 80, 160].iter().enumerate() {
            // a segment name on a timeline nobody uses, so every round is a first push
            let name = format!("{:08X}{}", 0x100 + i, &seg[8..]);
            let path = env.base.join(&name);
            std::fs::write(&path, &orig).unwrap();
            let mut child = env
                .cmd()
                .env("ARSIP_KEY_FILE", &env.agent)
                .args(["wal", "push", "--pgdata"])
                .arg(&c.data)
                .arg(&path)
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(*delay_ms));
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            let out = env.base.join(format!("{name}.fetched"));
            let o = env
                .cmd()
                .args(["wal", "fetch", "--prefetch", "0", "--namespace", &ns, &name])
                .arg(&out)
                .output()
                .unwrap();
            match o.status.code() {
                Some(0) => assert_eq!(std::fs::read(&out).unwrap(), orig, "round {i}"),
                Some(1) => absent += 1,
                other => panic!(
                    "round {i}: fetch after kill -9 exited {other:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
            }
            // PostgreSQL retries: the retry must succeed whatever the kill left behind
            ok(env
                .cmd()
                .env("ARSIP_KEY_FILE", &env.agent)
                .args(["wal", "push", "--pgdata"])
                .arg(&c.data)
                .arg(&path)
                .output()
                .unwrap());
            let _ = std::fs::remove_file(&out);
            ok(env
                .cmd()
                .args(["wal", "fetch", "--prefetch", "0", "--namespace", &ns, &name])
                .arg(&out)
                .output()
                .unwrap());
            assert_eq!(std::fs::read(&out).unwrap(), orig);
        }
        assert!(
            absent > 0,
            "no kill landed before the object was stored; the test proves nothing"
        );
    }

    /// A storage failure while fetching WAL stops recovery (exit ≥ 126) instead of ending it
    /// early and promoting without the data.
    #[test]
    fn storage_errors_during_fetch_stop_recovery() {
        let env = Env::new();
        let c = env.cluster();
        ok(env.physical_backup(&c).output().unwrap());
        c.psql("postgres", "CREATE TABLE after_backup AS SELECT 1 AS x")
            .unwrap();
        switch_and_archive(&c);
        let base = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
        ok(env
            .cmd()
            .args(["restore", "pg", "--physical", "--no-archive", "--to"])
            .arg(base.join("data"))
            .output()
            .unwrap());
        // every WAL read now fails as a transient storage error
        let auto = base.join("data/postgresql.auto.conf");
        let conf = std::fs::read_to_string(&auto).unwrap();
        let conf = conf.replace(
            "restore_command = '",
            "restore_command = 'env ARSIP_TEST_FAULTS=get:wal/:transient ",
        );
        std::fs::write(&auto, conf).unwrap();
        let r = Cluster::adopt(base, &harness_opts()).unwrap();
        let _ = r.start();
        let t = Instant::now();
        while r.data.join("postmaster.pid").exists() && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = r.log();
        assert!(
            !r.data.join("postmaster.pid").exists(),
            "server still running:\n{log}"
        );
        assert!(
            !log.contains("selected new timeline"),
            "recovery ended and promoted:\n{log}"
        );
        assert!(
            log.contains("exit code 200") || log.contains("status 200"),
            "{log}"
        );
    }

    /// `kill -9` during a base backup leaves no snapshot and no backup in progress on the
    /// server; the next backup succeeds and restores.
    #[test]
    fn kill_9_during_base_backup() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "5", "-q", "postgres"]);
        let mut killed_before_commit = false;
        for delay in [200u64, 600] {
            let mut child = env
                .physical_backup(&c)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay));
            let _ = child.kill(); // SIGKILL
            let st = child.wait().unwrap();
            let snaps = json_out(env.cmd().args(["--json", "snapshots"]).output().unwrap());
            if st.code().is_none() {
                killed_before_commit |= snaps.as_array().unwrap().is_empty();
            }
        }
        assert!(killed_before_commit, "no kill landed during the backup");
        // the server ended the non-exclusive backup with the session
        std::thread::sleep(Duration::from_millis(300));
        ok(env.physical_backup(&c).output().unwrap());
        let before = accounts_sum(&c, "postgres");
        switch_and_archive(&c);
        let r = restore_to(&env, &["--no-archive"]);
        assert_eq!(accounts_sum(&r, "postgres"), before);
    }
}

mod quickstart {
    use super::*;

    #[test]
    fn quickstart_restores_what_was_lost() {
        let o = Command::new(arsip_bin())
            .args(["--json", "quickstart", "--tenants", "10"])
            .env(
                "ARSIP_CACHE_DIR",
                std::env::temp_dir().join("arsip-qs-cache"),
            )
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
        assert_eq!(r["ok"], true, "{r:#}");
        assert!(r["rto_seconds"].as_f64().unwrap() > 0.0);
        assert!(r["rpo_seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(r["verified"].as_object().unwrap().len(), 4);
    }
}

/// Point-in-time recovery that never lands on another history (issue 10 §6): drills that do
/// not capture later restores, timeline choice, gaps, unreachable targets, target syntax,
/// password-only restores, and the PITR matrix. Kept apart from the other modules.
mod pitr {
    use super::*;

    /// `arsip restore pg --physical --to <fresh dir>/data EXTRA…`, not started; the directory
    /// it was asked to create is returned with the output.
    pub fn restore_cmd(env: &Env, extra: &[&str]) -> (Output, PathBuf) {
        let base = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
        let to = base.join("data");
        let o = env
            .cmd()
            .env_remove("TZ")
            .args(["restore", "pg", "--physical", "--to"])
            .arg(&to)
            .args(extra)
            .output()
            .unwrap();
        (o, to)
    }

    fn stderr(o: &Output) -> String {
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Exactly what a restore to a moment must reproduce: row count and a digest of table m.
    pub fn state(c: &Cluster) -> String {
        c.psql(
            "postgres",
            "SELECT count(*) || ':' || coalesce(md5(string_agg(k || '=' || v, ',' ORDER BY k)), '-') FROM m",
        )
        .unwrap()
    }

    /// What was recorded right after one committed batch of writes.
    #[derive(Debug, Clone)]
    pub struct Moment {
        /// `clock_timestamp()` as psql prints it in UTC (`… +00`).
        pub time: String,
        pub lsn: String,
        pub xid: String,
        pub name: String,
        pub state: String,
    }

    /// One transaction of `n` rows tagged `tag`, then its xid, a restore point named `tag`,
    /// the time and the LSN after it, and the table's state.
    pub fn step(c: &Cluster, tag: &str, n: u32) -> Moment {
        let xid = c
            .psql(
                "postgres",
                &format!(
                    "WITH ins AS (INSERT INTO m SELECT (SELECT coalesce(max(k), 0) FROM m) + g, '{tag}' \
                     FROM generate_series(1, {n}) g RETURNING 1) \
                     SELECT txid_current() FROM (SELECT count(*) FROM ins) s"
                ),
            )
            .unwrap();
        c.psql(
            "postgres",
            &format!("SELECT pg_create_restore_point('{tag}')"),
        )
        .unwrap();
        let lsn = c
            .psql("postgres", "SELECT pg_current_wal_insert_lsn()")
            .unwrap();
        let time = c
            .psql(
                "postgres",
                "SET timezone = 'UTC'; SELECT clock_timestamp()::text",
            )
            .unwrap();
        Moment {
            time,
            lsn,
            xid,
            name: tag.to_string(),
            state: state(c),
        }
    }

    fn timeline(c: &Cluster) -> String {
        c.psql(
            "postgres",
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
        )
        .unwrap()
    }

    /// A new primary whose first segment (the one holding its switch point) is not archived
    /// yet, followed by a later default restore: recovery never reads the old primary's
    /// copy of that segment, which holds what the old primary wrote after the switch point.
    /// Today's recovery fell back to it and replayed those rows as the new primary's
    /// history, with exit 0 (found by an adversarial run).
    #[test]
    fn the_old_primarys_copy_of_a_switch_segment_is_never_replayed() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        ok(env.physical_backup(&c).output().unwrap());
        switch_and_archive(&c);
        let m1 = step(&c, "kept", 100);
        std::thread::sleep(Duration::from_millis(50));
        step(&c, "undone", 100);
        switch_and_archive(&c);
        drop(c);
        // the repair: a PITR to m1 declared the new primary (timeline 2 branches inside the
        // segment that holds the "undone" rows), stopped before it archived that segment
        let p = restore_to(&env, &["--target-time", &m1.time, "--promote-as-primary"]);
        assert_eq!(state(&p), m1.state);
        drop(p);
        let wal = env.repo.join("wal");
        for ns in std::fs::read_dir(&wal).unwrap() {
            for f in std::fs::read_dir(ns.unwrap().path()).unwrap() {
                let f = f.unwrap();
                let n = f.file_name().to_string_lossy().into_owned();
                if n.starts_with("00000002") && !n.ends_with(".history") {
                    std::fs::remove_file(f.path()).unwrap();
                }
            }
        }
        let r = restore_to(&env, &[]);
        assert_eq!(
            r.psql("postgres", "SELECT count(*) FROM m WHERE v = 'undone'")
                .unwrap(),
            "0",
            "rows the repair undid came back from the old primary's copy of the switch segment"
        );
    }

    /// The failure of the report: a drill restore (started as the docs show) promoted to a
    /// new timeline and archived it into the source's namespace; the source kept writing and
    /// took a newer backup; the next default restore followed the drill's timeline, ignored
    /// the newer backup and lost every later transaction and table, with exit 0.
    #[test]
    fn drill_restore_does_not_capture_later_restores() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "1", "-q", "postgres"]);
        ok(env.physical_backup(&c).output().unwrap());
        pgbench(&c, &["-n", "-t", "50", "postgres"]);
        switch_and_archive(&c);

        // the drill: a default restore, started, queried, written to, switched
        let drill = restore_to(&env, &[]);
        drill
            .psql("postgres", "CREATE TABLE drill_only AS SELECT 1 AS x")
            .unwrap();
        let seg = drill
            .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
            .unwrap();
        if drill.psql("postgres", "SHOW archive_mode").unwrap() == "on" {
            wait_archived(&drill, &seg);
        }
        drop(drill);

        // the source goes on: more transactions, a table created later, a newer backup
        pgbench(&c, &["-n", "-t", "200", "postgres"]);
        c.psql("postgres", "CREATE TABLE later AS SELECT 42 AS answer")
            .unwrap();
        ok(env.physical_backup(&c).output().unwrap());
        pgbench(&c, &["-n", "-t", "100", "postgres"]);
        let want = accounts_sum(&c, "postgres");
        let want_tx = c
            .psql("postgres", "SELECT count(*) FROM pgbench_history")
            .unwrap();
        switch_and_archive(&c);

        let r = restore_to(&env, &[]);
        assert_eq!(
            r.psql("postgres", "SELECT count(*) FROM pgbench_history")
                .unwrap(),
            want_tx,
            "transactions lost"
        );
        assert_eq!(accounts_sum(&r, "postgres"), want);
        assert_eq!(
            r.psql("postgres", "SELECT answer FROM later").unwrap(),
            "42"
        );
        assert!(r
            .psql("postgres", "SELECT to_regclass('drill_only') IS NULL")
            .unwrap()
            .starts_with('t'));
        let listed = ok(env.cmd().args(["wal", "list"]).output().unwrap());
        assert!(
            !listed.contains(".history"),
            "the drill archived its timeline into the source's namespace:\n{listed}"
        );
    }

    /// A gap in the archive followed by later WAL on the same timeline: a restore to the end
    /// or to a time is refused before anything is written, naming the first missing segment;
    /// `--allow-gap` accepts it and recovery ends at the gap.
    #[test]
    fn gap_in_the_archive_is_refused_before_writing() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        ok(env.physical_backup(&c).output().unwrap());
        let m1 = step(&c, "one", 100);
        switch_and_archive(&c);
        step(&c, "two", 100);
        let missing = switch_and_archive(&c);
        let m3 = step(&c, "three", 100);
        switch_and_archive(&c);
        let ns = arsip_pg::control::ClusterId::read(&c.data)
            .unwrap()
            .namespace();
        std::fs::remove_file(env.repo.join("wal").join(&ns).join(&missing)).unwrap();

        for extra in [vec![], vec!["--target-time", m3.time.as_str()]] {
            let (o, to) = restore_cmd(&env, &extra);
            let err = stderr(&o);
            assert!(
                !o.status.success(),
                "{extra:?}: restored over the gap: {err}"
            );
            assert!(err.contains(&missing), "{extra:?}: gap not named: {err}");
            assert!(err.contains("--allow-gap"), "{err}");
            assert!(!to.exists(), "{extra:?}: a refusal wrote {}", to.display());
        }
        let r = restore_to(&env, &["--allow-gap"]);
        assert_eq!(state(&r), m1.state, "recovery ends at the gap");
    }

    /// Targets that cannot be reached are refused before writing (unparsable input: exit 2);
    /// what only the server can tell is reported with PostgreSQL's own reason.
    #[test]
    fn unreachable_targets() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        let before = step(&c, "before_backup", 10);
        let b = json_out(env.physical_backup(&c).output().unwrap());
        let after = step(&c, "after", 10);
        switch_and_archive(&c);
        let id = b["id"].as_str().unwrap();

        // refused before writing
        for (extra, says) in [
            (vec!["--target-time", "2999-01-01 00:00:00+00"], "future"),
            (vec!["--target-lsn", "0/1000000"], "before"),
            (vec![id, "--target-lsn", before.lsn.as_str()], "before"),
        ] {
            let (o, to) = restore_cmd(&env, &extra);
            let err = stderr(&o);
            assert!(!o.status.success(), "{extra:?}: {err}");
            assert!(err.contains(says), "{extra:?}: {err}");
            assert!(!to.exists(), "{extra:?} wrote {}", to.display());
        }
        // unparsable input is a usage error
        for extra in [
            vec![id, "--target-xid", "abc"],
            vec![id, "--target-xid", "-5"],
            vec!["--target-time", "yesterday-ish"],
            vec!["--target-lsn", "12345"],
            vec!["--target-time", "2026-03-01 10:31:00"],
        ] {
            let (o, to) = restore_cmd(&env, &extra);
            assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
            assert!(!to.exists());
        }
        // a port of its own: the restored cluster shares the source's socket directory
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
                .to_string()
        };
        // a restore point older than the backup: only the server can tell
        let p1 = port();
        let (o, _) = restore_cmd(
            &env,
            &[id, "--target-name", &before.name, "--start", "--port", &p1],
        );
        let err = stderr(&o);
        assert!(!o.status.success());
        assert!(
            err.contains("recovery ended before configured recovery target was reached"),
            "{err}"
        );
        assert!(!err.contains("client programs"), "{err}");
        // --target-action shutdown reports where it stopped
        let (o, to) = restore_cmd(
            &env,
            &[
                id,
                "--target-xid",
                after.xid.as_str(),
                "--target-action",
                "shutdown",
                "--start",
                "--port",
                &port(),
                "--json",
            ],
        );
        let out: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
        let lsn = out["reached_lsn"].as_str().unwrap_or_default();
        assert!(
            arsip_pg::control::parse_lsn(lsn).is_some(),
            "shutdown reported no LSN: {out:#}"
        );
        assert!(!to.join("postmaster.pid").exists());
    }

    /// Target times in the forms psql prints and PostgreSQL accepts, zone names included.
    #[test]
    fn target_time_as_psql_prints_it_or_with_a_zone_name() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        ok(env.physical_backup(&c).output().unwrap());
        let m1 = step(&c, "one", 10);
        let jakarta = c
            .psql(
                "postgres",
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'Asia/Jakarta', 'YYYY-MM-DD HH24:MI:SS.US') || ' Asia/Jakarta'",
            )
            .unwrap();
        let m2 = step(&c, "two", 10);
        step(&c, "three", 10);
        switch_and_archive(&c);
        let r = restore_to(&env, &["--target-time", &m1.time]);
        assert_eq!(state(&r), m1.state, "{}", m1.time);
        drop(r);
        let r = restore_to(&env, &["--target-time", &jakarta]);
        assert_eq!(state(&r), m1.state, "{jakarta}");
        drop(r);
        // no zone: TZ says which
        let local = m2.time.trim_end_matches("+00").to_string();
        let r = restore_to_with(&env, &["--target-time", &local], &[("TZ", "UTC")]);
        assert_eq!(state(&r), m2.state, "{local}");
    }

    /// A physical restore with the password the repository was opened with (a password
    /// file, no key file): recovery fetches WAL unattended, and the short-lived recovery key
    /// is gone once recovery has ended.
    #[test]
    fn password_file_restore_replays_wal() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        ok(env.physical_backup(&c).output().unwrap());
        let m1 = step(&c, "after_backup", 500);
        switch_and_archive(&c);
        let pw = env.base.join("password");
        std::fs::write(&pw, "test-password\n").unwrap();
        let base = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
        let to = base.join("data");
        let o = env
            .cmd()
            .env_remove("ARSIP_KEY_FILE")
            .env_remove("ARSIP_PASSWORD")
            .env("ARSIP_PASSWORD_FILE", &pw)
            .args(["restore", "pg", "--physical", "--to"])
            .arg(&to)
            .output()
            .unwrap();
        ok(o);
        let auto = std::fs::read_to_string(to.join("postgresql.auto.conf")).unwrap();
        assert!(!auto.contains("test-password"), "{auto}");
        let r = start_restored(base);
        assert_eq!(state(&r), m1.state);
        // recovery_end_command removed the key (it runs before promotion completes)
        let t = Instant::now();
        while to.join("arsip-recovery.key").exists() && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!to.join("arsip-recovery.key").exists());
    }

    /// A server whose DateStyle is not ISO (`SQL, DMY` prints "02/12/2026 00:37:33 UTC"):
    /// the backup's times are still recorded in a form restores read, so a time target finds
    /// the backup (today: the fact could not be parsed and the backup was silently skipped).
    #[test]
    fn backup_times_are_readable_whatever_the_servers_datestyle() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "ALTER SYSTEM SET datestyle = 'SQL, DMY'")
            .unwrap();
        c.psql("postgres", "SELECT pg_reload_conf()").unwrap();
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        let b = json_out(env.physical_backup(&c).output().unwrap());
        let id = b["id"].as_str().unwrap().to_string();
        // (the test's own psql reads moments in ISO form)
        c.psql("postgres", "ALTER SYSTEM RESET datestyle").unwrap();
        c.psql("postgres", "SELECT pg_reload_conf()").unwrap();
        let m1 = step(&c, "after", 10);
        std::thread::sleep(Duration::from_millis(50));
        step(&c, "later", 10);
        switch_and_archive(&c);
        let r = restore_to(&env, &["--target-time", &m1.time]);
        assert_eq!(state(&r), m1.state);
        let snaps = json_out(
            env.cmd()
                .args(["snapshots", "--json", "--kind", "pg-physical"])
                .output()
                .unwrap(),
        );
        let facts = &snaps.as_array().unwrap()[0]["facts"];
        let stop = facts["stop_time"].as_str().unwrap();
        assert!(stop.starts_with("20"), "{id}: stop_time {stop:?}");
    }

    /// The reuse cache cannot be written: the backup still succeeds and says so, naming the
    /// path (a silent failure turns every later incremental into a full read).
    #[test]
    fn reuse_cache_write_failure_is_reported() {
        let env = Env::new();
        let c = env.cluster();
        // a file where the cache's directory must be: even root cannot create it
        let cache = env.base.join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join("pg-physical"), b"not a directory").unwrap();
        let o = env.physical_backup(&c).output().unwrap();
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("pg-physical") && err.contains("cache"),
            "no warning about the reuse cache: {err}"
        );
    }

    /// `restore_to` that also returns what the restore printed on stderr (its warnings).
    fn restore_warned(env: &Env, extra: &[&str]) -> (Cluster, String) {
        let (o, to) = restore_cmd(env, extra);
        let err = stderr(&o);
        ok(o);
        let c = start_restored(to.parent().unwrap().to_path_buf());
        (c, err)
    }

    /// The PITR matrix (issue 10 §7), pairwise rather than the full product. One history is
    /// built: the source S on timeline 1 (backup B1, moments a0..a4), a restore R1 declared
    /// the new primary at a1's time (timeline 2, backup B2, moments b1..b3) while S goes on
    /// writing (a4: WAL on timeline 1 past the switch), a drill D in between (never
    /// archived), a second primary R2 from B2 at restore point b3 (timeline 3, moments
    /// c1..c3) and then a gap: c2's segment is deleted from the archive. Every restore is
    /// compared exactly with the state recorded at its moment.
    ///
    /// | restore | target | timeline followed | how chosen | expected |
    /// |---|---|---|---|---|
    /// | R1 | time (psql's `+00` form) | 1 | default | a1 |
    /// | D (drill) | LSN | 2 | default (newest backup B2) | b2 |
    /// | R2 | name | 2 | explicit B2 | b3 |
    /// | V1 | end | 3 | default | refused: gap (c2's segment) |
    /// | V2 | end, --dry-run --json | 3 | default | plan: gap, warnings; nothing written |
    /// | V3 | end, --allow-gap | 3 | default | c1 (ends at the gap) |
    /// | V4 | LSN before the gap | 3 | default | c1 |
    /// | V5 | time after the gap | 3 | default | refused: gap |
    /// | V6 | LSN | 1 | --target-timeline 1 | a3, warns of newer B2 |
    /// | V7 | end | 1 | --target-timeline 1 | a4 |
    /// | V8 | immediate | 1 | explicit B1 (own timeline) | a0 |
    /// | V9 | xid | 1 | explicit B1 (own timeline) | a2 |
    /// | V10 | time (zone name) | 2 | --target-timeline 2 | b2 |
    /// | V11 | immediate | 2 | explicit B2 | b1 |
    /// | V12 | xid | 3 | explicit B2, --target-timeline 3 | c1 |
    /// | V13 | name | 1 | explicit B1 | a3 |
    #[test]
    fn pitr_matrix() {
        let env = Env::new();
        let s = env.cluster();
        s.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();
        let a0 = step(&s, "a0", 50);
        let b1 = json_out(env.physical_backup(&s).output().unwrap())["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut a = Vec::new();
        for tag in ["a1", "a2", "a3"] {
            a.push(step(&s, tag, 50));
            switch_and_archive(&s);
        }

        // R1: the new primary, restored to a1's time
        let r1 = restore_to(&env, &["--target-time", &a[0].time, "--promote-as-primary"]);
        assert_eq!(state(&r1), a[0].state, "R1");
        assert_eq!(timeline(&r1), "00000002");
        // the old primary goes on writing (an unfenced failover)
        let a4 = step(&s, "a4", 50);
        switch_and_archive(&s);
        drop(s);
        let mut b = Vec::new();
        b.push(step(&r1, "b1", 50));
        switch_and_archive(&r1);
        let b2 = json_out(env.physical_backup(&r1).output().unwrap())["id"]
            .as_str()
            .unwrap()
            .to_string();
        // b2's time as psql prints it in Jakarta, with the zone's name
        b.push(step(&r1, "b2", 50));
        let b2_jakarta = r1
            .psql(
                "postgres",
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'Asia/Jakarta', 'YYYY-MM-DD HH24:MI:SS.US') || ' Asia/Jakarta'",
            )
            .unwrap();
        switch_and_archive(&r1);
        b.push(step(&r1, "b3", 50));
        switch_and_archive(&r1);
        drop(r1);

        // D: a drill between the primaries: default choice, LSN target; it promotes to
        // timeline 3 locally, writes, and leaves nothing in the archive
        let d = restore_to(&env, &["--target-lsn", &b[1].lsn]);
        assert_eq!(state(&d), b[1].state, "D");
        step(&d, "drill", 10);
        d.psql("postgres", "SELECT pg_switch_wal()").unwrap();
        drop(d);
        let listed = ok(env.cmd().args(["wal", "list"]).output().unwrap());
        assert!(!listed.contains("00000003.history"), "{listed}");

        // R2: the next primary, from B2 at restore point b3
        let r2 = restore_to(&env, &[&b2, "--target-name", "b3", "--promote-as-primary"]);
        assert_eq!(state(&r2), b[2].state, "R2");
        assert_eq!(timeline(&r2), "00000003");
        let mut c = Vec::new();
        let mut segs = Vec::new();
        for tag in ["c1", "c2", "c3"] {
            c.push(step(&r2, tag, 50));
            segs.push(switch_and_archive(&r2));
        }
        drop(r2);
        let ns = json_out(env.cmd().args(["--json", "wal", "list"]).output().unwrap())
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap()
            .clone();
        std::fs::remove_file(env.repo.join("wal").join(&ns).join(&segs[1])).unwrap();

        // V1: the end of timeline 3 has a gap
        let (o, to) = restore_cmd(&env, &[]);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(&segs[1]), "V1: {err}");
        assert!(!to.exists());
        // V2: the plan says why, and what else is archived
        let (o, to) = restore_cmd(&env, &["--dry-run", "--json", "--allow-gap"]);
        let err = stderr(&o);
        let plan: serde_json::Value = serde_json::from_str(&ok(o)).unwrap();
        assert_eq!(plan["timeline"]["follow"], 3, "{plan:#}");
        assert_eq!(plan["snapshot"], b2.as_str());
        assert_eq!(plan["wal"]["gap"]["first_missing"], segs[1].as_str());
        let warnings = plan["warnings"].to_string();
        assert!(warnings.contains("timeline 1 continues"), "{warnings}");
        assert!(
            err.contains("WARNING") && err.contains("timeline 1 continues"),
            "{err}"
        );
        assert!(!to.exists(), "a dry run wrote {}", to.display());
        // V3: accepted, recovery ends at the gap
        let r = restore_to(&env, &["--allow-gap"]);
        assert_eq!(state(&r), c[0].state, "V3");
        drop(r);
        // V4: an LSN before the gap needs no permission
        let r = restore_to(&env, &["--target-lsn", &c[0].lsn]);
        assert_eq!(state(&r), c[0].state, "V4");
        drop(r);
        // V5: a time after the gap is refused
        let (o, to) = restore_cmd(&env, &["--target-time", &c[2].time]);
        assert!(!o.status.success() && stderr(&o).contains(&segs[1]), "V5");
        assert!(!to.exists());
        // V6, V7: the original history, followed explicitly
        let (r, err) = restore_warned(&env, &["--target-timeline", "1", "--target-lsn", &a[2].lsn]);
        assert_eq!(state(&r), a[2].state, "V6");
        assert!(err.contains(&b2[..8]) && err.contains("newer"), "V6: {err}");
        drop(r);
        let r = restore_to(&env, &["--target-timeline", "1"]);
        assert_eq!(state(&r), a4.state, "V7");
        drop(r);
        // V8, V9, V13: an explicit B1 follows its own timeline
        let r = restore_to(&env, &[&b1, "--target", "immediate"]);
        assert_eq!(state(&r), a0.state, "V8");
        drop(r);
        let r = restore_to(&env, &[&b1, "--target-xid", &a[1].xid]);
        assert_eq!(state(&r), a[1].state, "V9");
        drop(r);
        let r = restore_to(&env, &[&b1, "--target-name", "a3"]);
        assert_eq!(state(&r), a[2].state, "V13");
        drop(r);
        // V10: timeline 2 to a time given with a zone name
        let r = restore_to(
            &env,
            &["--target-timeline", "2", "--target-time", &b2_jakarta],
        );
        assert_eq!(state(&r), b[1].state, "V10 {b2_jakarta}");
        drop(r);
        // V11, V12: B2 to its end, and to timeline 3's c1 by xid
        let r = restore_to(&env, &[&b2, "--target", "immediate"]);
        assert_eq!(state(&r), b[0].state, "V11");
        drop(r);
        let r = restore_to(
            &env,
            &[&b2, "--target-timeline", "3", "--target-xid", &c[0].xid],
        );
        assert_eq!(state(&r), c[0].state, "V12");
    }
}

/// `arsip verify`: healthy repositories pass (restore tests included); a table that lost
/// rows between two logical backups warns naming it; a source older than its RPO fails; a
/// corrupted pack fails the integrity check and the physical restore test.
mod verify {
    use super::*;

    /// `arsip --json verify ARGS` (with `env_vars`): exit code and report.
    fn verify(env: &Env, env_vars: &[(&str, &str)], args: &[&str]) -> (i32, serde_json::Value) {
        let o = env
            .cmd()
            .envs(env_vars.iter().copied())
            .args(["--json", "verify"])
            .args(args)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "verify printed no report ({e}, {}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o.status.code().unwrap(), v)
    }

    fn messages(v: &serde_json::Value) -> Vec<String> {
        let mut out: Vec<String> = v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["findings"].as_array().unwrap().iter())
            .chain(v["findings"].as_array().unwrap().iter())
            .map(|f| format!("{} {}: {}", f["status"], f["check"], f["message"]))
            .collect();
        out.extend(
            v["integrity"]["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.to_string()),
        );
        out
    }

    #[test]
    fn verify_logical_row_drop_and_stale_source() {
        let env = Env::new();
        let c = env.cluster();
        c.psql("postgres", "CREATE DATABASE app").unwrap();
        c.psql(
            "app",
            "CREATE TABLE orders (id int PRIMARY KEY); \
             INSERT INTO orders SELECT generate_series(1, 1000); \
             CREATE TABLE notes (id int); INSERT INTO notes SELECT generate_series(1, 10); \
             CREATE TABLE empty (id int)",
        )
        .unwrap();
        let backup = || {
            json_out(
                env.cmd()
                    .arg("--json")
                    .args(["backup", "pg", "--logical", "--dbname"])
                    .arg(c.conninfo("app"))
                    .output()
                    .unwrap(),
            )
        };
        backup();

        // healthy: every check passes, the restore test counts every table as recorded
        let (code, v) = verify(&env, &[], &["--restore-test", "--cycle", "1d"]);
        assert_eq!(code, 0, "{v:#}");
        assert_eq!(v["status"], "ok");
        let t = &v["restore_tests"][0];
        assert_eq!(t["kind"], "pg-logical", "{v:#}");
        assert_eq!(t["ok"], true, "{v:#}");
        assert_eq!(t["tables"], 3, "{v:#}");
        assert!(t["steps"].as_array().unwrap().len() >= 3, "{v:#}");
        assert!(v["integrity"]["packs_read"].as_u64().unwrap() >= 1, "{v:#}");
        let record = v["record"].as_str().unwrap().to_string();
        assert!(record.starts_with("verify/"), "{record}");
        assert!(env.repo.join(&record).exists(), "{record}");

        // (a) rows deleted and a table dropped between two backups: warnings naming them
        c.psql("app", "DELETE FROM orders WHERE id > 100; DROP TABLE notes")
            .unwrap();
        backup();
        let (code, v) = verify(&env, &[], &[]);
        assert_eq!(code, 10, "{v:#}");
        assert_eq!(v["status"], "warnings");
        let m = messages(&v).join("\n");
        assert!(
            m.contains("table public.orders dropped from 1000 to 100 rows"),
            "{m}"
        );
        assert!(m.contains("table public.notes vanished"), "{m}");
        assert!(!m.contains("public.empty"), "{m}");

        // (c) the clock past the RPO: the source fails freshness
        use arsip_repo::clock::Clock;
        let later = (arsip_repo::clock::SystemClock.now() + jiff::SignedDuration::from_hours(30))
            .to_string();
        let (code, v) = verify(&env, &[("ARSIP_TEST_NOW", &later)], &[]);
        assert_eq!(code, 11, "{v:#}");
        assert_eq!(v["sources"][0]["status"], "failed", "{v:#}");
        let m = messages(&v).join("\n");
        assert!(
            m.contains("freshness") && m.contains("older than the RPO"),
            "{m}"
        );
        // a longer RPO for the kind accepts it again (the row drop still warns)
        let (code, v) = verify(
            &env,
            &[("ARSIP_TEST_NOW", &later)],
            &["--rpo-kind", "pg-logical=2d"],
        );
        assert_eq!(code, 10, "{v:#}");

        // every run left a verify record in the audit trail, anchored head included
        let log = json_out(env.cmd().args(["audit", "--json"]).output().unwrap());
        let verifies: Vec<&serde_json::Value> = log["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["op"] == "verify")
            .collect();
        assert_eq!(verifies.len(), 4, "{log:#}");
        assert_eq!(verifies[0]["result"], "ok");
        assert_eq!(verifies[1]["result"], "warnings");
        assert_eq!(verifies[2]["result"], "failed");
        assert!(
            log["check"]["problems"].as_array().unwrap().is_empty(),
            "{log:#}"
        );
    }

    #[test]
    fn verify_physical_restore_test_and_corrupted_pack() {
        let env = Env::new();
        let c = env.cluster();
        pgbench(&c, &["-i", "-s", "1", "-q", "postgres"]);
        json_out(
            env.cmd()
                .arg("--json")
                .args(["backup", "pg", "--logical", "--dbname"])
                .arg(c.conninfo("postgres"))
                .output()
                .unwrap(),
        );
        json_out(env.physical_backup(&c).output().unwrap());
        let snaps = json_out(
            env.cmd()
                .args(["--json", "snapshots", "--kind", "pg-physical"])
                .output()
                .unwrap(),
        );
        let est = &snaps[0]["facts"]["row_estimates"]["postgres"];
        assert!(
            est["public.pgbench_accounts"].as_i64().unwrap() > 0,
            "row estimates recorded: {snaps:#}"
        );
        pgbench(&c, &["-n", "-c", "2", "-t", "100", "postgres"]);
        switch_and_archive(&c);

        // healthy, measured against the live server, with a restore test
        let (code, v) = verify(
            &env,
            &[],
            &[
                "--restore-test",
                "--cycle",
                "1d",
                "--dbname",
                &c.conninfo("postgres"),
                "--sql-check",
                "SELECT count(*) = 100000 FROM pgbench_accounts",
            ],
        );
        assert_eq!(code, 0, "{v:#}");
        let wal = &v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "pg-physical")
            .unwrap()["wal"];
        assert!(wal["lag_segments"].as_u64().unwrap() <= 2, "{v:#}");
        assert_eq!(v["restore_tests"][0]["kind"], "pg-logical", "{v:#}");
        assert_eq!(v["restore_tests"][0]["ok"], true, "{v:#}");
        let t = &v["restore_tests"][1];
        assert_eq!(t["kind"], "pg-physical", "{v:#}");
        assert_eq!(t["ok"], true, "{v:#}");
        // the logical backup's counts beside the restored physical cluster's
        let beside = t["beside_logical"].as_array().unwrap();
        assert!(
            beside.contains(&serde_json::json!([
                "public.pgbench_accounts",
                100000,
                100000
            ])),
            "{v:#}"
        );
        let steps: Vec<&str> = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps.len(), 4, "{v:#}");
        assert!(steps[2].starts_with("pg_amcheck"), "{steps:?}");
        assert!(steps[3].starts_with("SQL check in postgres"), "{steps:?}");
        assert!(t["rto_ms"].as_u64().unwrap() > 0, "{v:#}");

        // (c) a configured SQL check that does not hold fails the restore test
        let (code, v) = verify(
            &env,
            &[],
            &[
                "--restore-test",
                "--cycle",
                "100000d",
                "--sql-check",
                "SELECT count(*) > 100000 FROM pgbench_accounts",
            ],
        );
        assert_eq!(code, 11, "{v:#}");
        let t = &v["restore_tests"][1];
        assert_eq!(t["ok"], false, "{v:#}");
        let failed: Vec<&serde_json::Value> = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["ok"] == false)
            .collect();
        assert_eq!(failed.len(), 1, "{v:#}");
        assert!(
            failed[0]["detail"].as_str().unwrap().contains("\"f\""),
            "{v:#}"
        );

        // (b) overwrite bytes in the middle of every pack: the read fails integrity
        let mut packs = Vec::new();
        for d in std::fs::read_dir(env.repo.join("data")).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                packs.push(f.unwrap().path());
            }
        }
        assert!(!packs.is_empty());
        for p in &packs {
            let mut b = std::fs::read(p).unwrap();
            let mid = b.len() / 2;
            for x in &mut b[mid..mid + 64] {
                *x ^= 0xff;
            }
            std::fs::write(p, b).unwrap();
        }
        let (code, v) = verify(&env, &[], &["--cycle", "1d"]);
        assert_eq!(code, 11, "{v:#}");
        assert_eq!(v["integrity"]["status"], "failed", "{v:#}");
        assert!(
            !v["integrity"]["problems"].as_array().unwrap().is_empty(),
            "{v:#}"
        );

        // (d) the restore test fails on the damaged backup, even when today's slice reads
        // no pack
        let (code, v) = verify(&env, &[], &["--restore-test", "--cycle", "100000d"]);
        assert_eq!(code, 11, "{v:#}");
        let t = &v["restore_tests"][1];
        assert_eq!(t["kind"], "pg-physical", "{v:#}");
        assert_eq!(t["ok"], false, "{v:#}");
        let m = messages(&v).join("\n");
        assert!(m.contains("restore test of pg-physical"), "{m}");
    }
}

/// The plan's month, compressed: daily physical and logical backups of a cluster under
/// churn with WAL archived, on a clock injected day by day (the process's `ARSIP_TEST_NOW`
/// and the local store's `ARSIP_TEST_STORE_NOW`, for the archiver too, through a file its
/// `archive_command` reads), with `forget` and `prune` after every day while pgbench writes
/// and the archiver pushes. Then every retained snapshot restores to exactly what it held,
/// and point-in-time restores to random moments inside the PITR window reproduce them
/// exactly.
mod month {
    use super::pitr::{state, step, Moment};
    use super::*;

    const DAYS: i64 = 12;
    const KEEP_DAYS: i64 = 7;
    const WINDOW_DAYS: i64 = 3;

    struct Day {
        /// The injected time of the day's backups.
        now: jiff::Timestamp,
        /// The tables as the day's backups hold them.
        at_backup: (String, String),
        /// A moment after the day's backups.
        later: Moment,
        later_accounts: String,
    }

    #[test]
    fn a_month_of_backups_forget_prune_then_restore_everything_retained() {
        let env = Env::new();
        let now_file = env.base.join("now");
        let start: jiff::Timestamp = "2026-10-01T19:00:00Z".parse().unwrap(); // 02:00 WIB
        std::fs::write(&now_file, start.to_string()).unwrap();
        let archive = format!(
            "ARSIP_TEST_NOW=\"$(cat {f})\" ARSIP_TEST_STORE_NOW=\"$(cat {f})\" {cmd}",
            f = now_file.display(),
            cmd = env.archive_command()
        );
        let c = Cluster::init(&ClusterOptions {
            archive_command: Some(archive),
            data_checksums: true,
            conf: vec!["archive_timeout = 0".into()],
            settings: pg_settings(),
        })
        .unwrap();
        c.start().unwrap();
        pgbench(&c, &["-i", "-s", "1", "-q", "postgres"]);
        c.psql("postgres", "CREATE TABLE m (k int PRIMARY KEY, v text)")
            .unwrap();

        let mut days: Vec<Day> = Vec::new();
        let mut wal_removed = 0;
        for d in 0..DAYS {
            let now = start + jiff::SignedDuration::from_hours(24 * d);
            std::fs::write(&now_file, now.to_string()).unwrap();
            let at = |cmd: &mut Command| {
                cmd.env("ARSIP_TEST_NOW", now.to_string())
                    .env("ARSIP_TEST_STORE_NOW", now.to_string());
            };
            // The day's churn, then its backups.
            pgbench(&c, &["-n", "-c", "2", "-t", "50", "postgres"]);
            step(&c, &format!("day{d}"), 20);
            let at_backup = (state(&c), accounts_sum(&c, "postgres"));
            let mut bk = env.physical_backup(&c);
            at(&mut bk);
            json_out(bk.output().unwrap());
            let mut lb = env.cmd();
            at(&mut lb);
            json_out(
                lb.args(["--json", "backup", "pg", "--logical", "--dbname"])
                    .arg(c.conninfo("postgres"))
                    .output()
                    .unwrap(),
            );
            let later = step(&c, &format!("day{d}-later"), 5);
            let later_accounts = accounts_sum(&c, "postgres");
            switch_and_archive(&c);
            days.push(Day {
                now,
                at_backup,
                later,
                later_accounts,
            });

            // Retention and prune while pgbench writes and the archiver pushes (its writes
            // go to a table no restore below compares).
            let mut churn = c
                .client("pgbench")
                .args(["-n", "-c", "1", "-T", "2", "-f", "-", "postgres"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                let mut stdin = churn.stdin.take().unwrap();
                stdin
                    .write_all(
                        b"CREATE TABLE IF NOT EXISTS noise (n bigint);\n\
                          INSERT INTO noise SELECT generate_series(1, 200);\n\
                          SELECT pg_switch_wal();\n",
                    )
                    .unwrap();
            }
            let mut fg = env.cmd();
            at(&mut fg);
            ok(fg
                .args(["forget", "--keep-within", &format!("{KEEP_DAYS}d")])
                .output()
                .unwrap());
            let mut pr = env.cmd();
            at(&mut pr);
            let p = json_out(
                pr.args([
                    "prune",
                    "--json",
                    "--pitr-window",
                    &format!("{WINDOW_DAYS}d"),
                ])
                .output()
                .unwrap(),
            );
            wal_removed += p["wal"]["removed_files"].as_u64().unwrap_or(0);
            assert!(churn.wait().unwrap().success(), "pgbench beside prune");
        }
        // Everything pgbench and the day's moments wrote is archived.
        switch_and_archive(&c);
        let last = days.last().unwrap().now;
        let at_end = |cmd: &mut Command| {
            cmd.env("ARSIP_TEST_NOW", last.to_string())
                .env("ARSIP_TEST_STORE_NOW", last.to_string());
        };
        assert!(
            wal_removed > 0,
            "prune removed the WAL no retained backup needs"
        );

        // Exactly the days inside the retention stay, of each kind.
        let opens = last - jiff::SignedDuration::from_hours(24 * KEEP_DAYS);
        let kept: Vec<&Day> = days.iter().filter(|d| d.now >= opens).collect();
        for kind in ["pg-physical", "pg-logical"] {
            let mut ls = env.cmd();
            at_end(&mut ls);
            let snaps = json_out(
                ls.args(["--json", "snapshots", "--kind", kind])
                    .output()
                    .unwrap(),
            );
            let stored: Vec<jiff::Timestamp> = snaps
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["stored"].as_str().unwrap().parse().unwrap())
                .collect();
            let want: Vec<jiff::Timestamp> = kept.iter().map(|d| d.now).collect();
            assert_eq!(stored, want, "{kind}: the retained days");
            for (s, day) in snaps.as_array().unwrap().iter().zip(&kept) {
                let id = s["id"].as_str().unwrap();
                if kind == "pg-physical" {
                    // Consistent at the end of the backup: what it held.
                    let mut r = env.cmd();
                    at_end(&mut r);
                    let base = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
                    ok(
                        r.args(["restore", "pg", "--physical", id, "--target", "immediate"])
                            .arg("--to")
                            .arg(base.join("data"))
                            .output()
                            .unwrap(),
                    );
                    let rc = start_restored(base);
                    assert_eq!(
                        (state(&rc), accounts_sum(&rc, "postgres")),
                        day.at_backup,
                        "physical backup of {}",
                        day.now
                    );
                } else {
                    let db = format!("day_{}", day.now.as_second());
                    let mut r = env.cmd();
                    at_end(&mut r);
                    ok(
                        r.args(["restore", "pg", "--logical", id, "--create", "--dbname"])
                            .arg(c.conninfo(&db))
                            .output()
                            .unwrap(),
                    );
                    let got = (
                        c.psql(
                            &db,
                            "SELECT count(*) || ':' || coalesce(md5(string_agg(k || '=' || v, ',' ORDER BY k)), '-') FROM m",
                        )
                        .unwrap(),
                        accounts_sum(&c, &db),
                    );
                    assert_eq!(got, day.at_backup, "logical backup of {}", day.now);
                    c.psql("postgres", &format!("DROP DATABASE {db}")).unwrap();
                }
            }
        }

        // Point-in-time restores to moments inside the window, picked at random: the
        // restore chooses the backup and replays the archive to exactly that moment.
        let window_opens = last - jiff::SignedDuration::from_hours(24 * WINDOW_DAYS);
        let inside: Vec<&Day> = days.iter().filter(|d| d.now > window_opens).collect();
        assert!(inside.len() >= 2);
        let seed: usize = rand::random();
        eprintln!("PITR picks from seed {seed}");
        let mut picks: Vec<&Day> = vec![
            inside[seed % inside.len()],
            inside[(seed / 7 + 1) % inside.len()],
        ];
        picks.dedup_by_key(|d| d.now);
        for day in picks {
            eprintln!("PITR to {} (day of {})", day.later.time, day.now);
            // On the real clock: the moments are the server's (real) times.
            let mut r = env.cmd();
            let base = make_base(&pg_settings(), "arsip-pgrestore-").unwrap();
            ok(r.args([
                "restore",
                "pg",
                "--physical",
                "--target-time",
                &day.later.time,
            ])
            .arg("--to")
            .arg(base.join("data"))
            .output()
            .unwrap());
            let rc = start_restored(base);
            assert_eq!(
                (state(&rc), accounts_sum(&rc, "postgres")),
                (day.later.state.clone(), day.later_accounts.clone()),
                "PITR to {}",
                day.later.time
            );
        }

        // The archive has no gap where the window needs WAL, and the repository is sound.
        let mut ws = env.cmd();
        at_end(&mut ws);
        let show = json_out(ws.args(["wal", "show", "--json"]).output().unwrap());
        assert!(show[0]["recoverable_to"].is_string(), "{show}");
        let mut ck = env.cmd();
        at_end(&mut ck);
        ok(ck.args(["check", "--read-data"]).output().unwrap());
    }
}

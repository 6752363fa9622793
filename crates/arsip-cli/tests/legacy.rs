//! `arsip import legacy-dump` against the real thing: a throwaway PostgreSQL cluster, files
//! made by the plan's own pipeline (`pg_dump -Fc -Z9 | gzip | openssl enc -aes-256-cbc
//! -salt -k KEY`, with the real openssl in each key-derivation era), imported, listed, and
//! restored with `arsip restore pg --logical` into new databases whose content is compared
//! exactly with the source at each file's time; then every refusal: wrong key, truncated
//! files, a dump cut short inside, non-dumps, a bad name, an open key file, and duplicates.
//!
//! Needs PostgreSQL's programs (`ARSIP_PG_BIN`, or /usr/lib/postgresql/N/bin), `openssl`
//! and `gzip`; it fails (never skips) without them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use arsip_pg::cluster::{Cluster, ClusterOptions};
use arsip_pg::PgSettings;
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_arsip");
const KEY: &str = "s3cr3t-Legacy-Key";

const SCHEMA: &str = r#"
    CREATE TABLE tenants (id serial PRIMARY KEY, name text NOT NULL);
    CREATE TABLE vehicles (id bigserial PRIMARY KEY, tenant_id int NOT NULL REFERENCES tenants(id),
        vin text NOT NULL, notes text, photo bytea, attrs jsonb);
    CREATE INDEX vehicles_tenant ON vehicles (tenant_id);
    CREATE SCHEMA "Dealer Ops";
    CREATE TABLE "Dealer Ops"."Odd ""Leads""" (id int PRIMARY KEY, email text);
    CREATE TABLE empty_one (id int);
    INSERT INTO tenants (name) SELECT 'tenant ' || g FROM generate_series(1, 12) g;
    INSERT INTO vehicles (tenant_id, vin, notes, photo, attrs)
        SELECT 1 + g % 12, md5(g::text), E'line one\nline\ttwo \\ back ' || g,
               decode(md5(g::text), 'hex'), jsonb_build_object('km', g * 7)
        FROM generate_series(1, 4000) g;
    INSERT INTO "Dealer Ops"."Odd ""Leads""" SELECT g, 'l' || g || '@example.id'
        FROM generate_series(1, 700) g;
"#;

/// Per table: row count and an md5 of every row in key order.
const SIGNATURE: &str = r#"
    SELECT (SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY id)) FROM tenants t)
    || ' ' || (SELECT count(*) || ':' || md5(string_agg(v::text, '|' ORDER BY id)) FROM vehicles v)
    || ' ' || (SELECT count(*) || ':' || coalesce(md5(string_agg(l::text, '|' ORDER BY id)), '')
               FROM "Dealer Ops"."Odd ""Leads""" l)
    || ' ' || (SELECT count(*) FROM empty_one)
"#;

fn settings() -> PgSettings {
    PgSettings::from_vars(std::env::vars_os())
}

struct Env {
    dir: tempfile::TempDir,
    cluster: Cluster,
}

impl Env {
    fn new() -> Env {
        let cluster = Cluster::init(&ClusterOptions {
            settings: settings(),
            ..Default::default()
        })
        .unwrap();
        cluster.start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let e = Env { dir, cluster };
        let o = e
            .arsip()
            .env_remove("ARSIP_KEY_FILE")
            .args(["init", "--key-file-out"])
            .arg(e.dir.path().join("full.key"))
            .output()
            .unwrap();
        ok(&o);
        e
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `arsip` with the repository, its key file and the cluster's libpq environment; no
    /// legacy key unless the caller sets one.
    fn arsip(&self) -> Command {
        let mut c = Command::new(EXE);
        c.env("ARSIP_REPO", self.path("repo"))
            .env("ARSIP_KEY_FILE", self.path("full.key"))
            .env("ARSIP_PASSWORD", "repo-password")
            .env("ARSIP_TEST_WEAK_KDF", "1")
            .env("ARSIP_CACHE_DIR", self.path("cache"))
            .env_remove("ARSIP_LEGACY_KEY")
            .env_remove("ARSIP_LEGACY_KEY_FILE")
            .env_remove("TZ")
            .stdin(Stdio::null());
        for (k, v) in self.cluster.env() {
            c.env(k, v);
        }
        c
    }

    /// `arsip --json import legacy-dump --time-zone Asia/Jakarta FILES` with the key file.
    fn import(&self, files: &[&Path]) -> (Output, Value) {
        let o = self
            .arsip()
            .args([
                "--json",
                "import",
                "legacy-dump",
                "--time-zone",
                "Asia/Jakarta",
            ])
            .arg("--legacy-key-file")
            .arg(self.path("legacy.key"))
            .args(files)
            .output()
            .unwrap();
        no_key_in(&o);
        let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "import printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        (o, v)
    }

    /// Run the plan's pipeline in a shell, with the cluster's environment, writing `out`.
    fn pipeline(&self, out: &Path, producer: &str, openssl_opts: &str) {
        let bin = self.cluster.bin.display().to_string();
        let script = format!(
            "set -o pipefail; {producer} | gzip | openssl enc -aes-256-cbc -salt {openssl_opts} -k \"$LEGACY_KEY\" > '{}'",
            out.display()
        )
        .replace("PG_DUMP", &format!("{bin}/pg_dump"));
        let mut c = Command::new("bash");
        c.arg("-c").arg(script).env("LEGACY_KEY", KEY);
        for (k, v) in self.cluster.env() {
            c.env(k, v);
        }
        ok(&c.output().unwrap());
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        self.cluster.psql(db, sql).unwrap()
    }

    fn snapshots(&self) -> Vec<Value> {
        let o = self
            .arsip()
            .args(["--json", "snapshots", "--kind", "pg-logical"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&ok(&o)).unwrap();
        v.as_array()
            .cloned()
            .or_else(|| v["snapshots"].as_array().cloned())
            .unwrap_or_default()
    }
}

fn ok(o: &Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "command failed ({}): {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o.stdout.clone()
}

/// The legacy key never appears in anything arsip prints.
fn no_key_in(o: &Output) {
    for s in [&o.stdout, &o.stderr] {
        assert!(
            !String::from_utf8_lossy(s).contains(KEY),
            "the legacy key leaked: {}",
            String::from_utf8_lossy(s)
        );
    }
}

fn file_entry<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in {v}"))
}

#[test]
fn legacy_dumps_import_restore_and_refusals() {
    let env = Env::new();
    let key_file = env.path("legacy.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.psql("postgres", "CREATE DATABASE autolumiku");
    env.psql("autolumiku", SCHEMA);
    let dump = "PG_DUMP -h \"$PGHOST\" -U postgres -d autolumiku --format=custom --compress=9";

    // Three nights, three eras of openssl, the data changing in between.
    let md5_file = env.path("autolumiku_backup_20250101_020000.sql.gz.enc");
    env.pipeline(&md5_file, dump, "-md md5");
    let sig1 = env.psql("autolumiku", SIGNATURE);
    env.psql(
        "autolumiku",
        "UPDATE vehicles SET notes = notes || ' (sold)' WHERE id % 3 = 0; \
         DELETE FROM \"Dealer Ops\".\"Odd \"\"Leads\"\"\" WHERE id > 500; \
         INSERT INTO empty_one VALUES (1), (2)",
    );
    let sha_file = env.path("autolumiku_backup_20250102_020000.sql.gz.enc");
    env.pipeline(&sha_file, dump, "");
    let sig2 = env.psql("autolumiku", SIGNATURE);
    env.psql(
        "autolumiku",
        "INSERT INTO tenants (name) VALUES ('late tenant'); TRUNCATE empty_one",
    );
    let pbkdf2_file = env.path("autolumiku_backup_20250103_020000.sql.gz.enc");
    env.pipeline(&pbkdf2_file, dump, "-pbkdf2");
    let sig3 = env.psql("autolumiku", SIGNATURE);
    assert!(sig1 != sig2 && sig2 != sig3);

    // --- import all three ----------------------------------------------------------------
    let (o, v) = env.import(&[&md5_file, &sha_file, &pbkdf2_file]);
    ok(&o);
    assert_eq!(v["imported"], 3, "{v}");
    let expect = [
        (&md5_file, "evp-md5", "2024-12-31T19:00:00Z", &sig1),
        (&sha_file, "evp-sha256", "2025-01-01T19:00:00Z", &sig2),
        (&pbkdf2_file, "pbkdf2-sha256", "2025-01-02T19:00:00Z", &sig3),
    ];
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    for (i, (file, kdf, time, sig)) in expect.iter().enumerate() {
        let name = file.file_name().unwrap().to_str().unwrap();
        let f = file_entry(&v, name);
        assert_eq!(f["status"], "imported", "{f}");
        assert_eq!(f["kdf"], *kdf, "{f}");
        assert_eq!(f["time"], *time, "{f}");
        assert_eq!(f["database"], "autolumiku");
        let id = f["snapshot"].as_str().unwrap();
        let s = snaps.iter().find(|s| s["id"] == id).unwrap();
        // dated from the name (read in Asia/Jakarta), the facts a logical backup has
        assert_eq!(s["time"], *time);
        assert_eq!(s["kind"], "pg-logical");
        assert_eq!(s["source"], "legacy:autolumiku");
        let facts = &s["facts"];
        assert_eq!(facts["legacy"], true);
        assert_eq!(facts["imported_from"], name);
        assert_eq!(facts["legacy_kdf"], *kdf);
        assert_eq!(facts["database"], "autolumiku");
        assert!(facts["server_version"].as_str().unwrap().starts_with("15"));
        assert_eq!(facts["server_version_num"].as_i64().unwrap() / 10000, 15);
        assert_eq!(
            facts["legacy_size"].as_u64().unwrap(),
            std::fs::metadata(file).unwrap().len()
        );
        assert_eq!(facts["legacy_blake3"].as_str().unwrap().len(), 64);
        // exact row counts, as `backup pg --logical` records them
        let counts = &facts["row_counts"];
        let want: Vec<u64> = sig
            .split(' ')
            .map(|p| p.split(':').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts["public.tenants"], want[0], "{counts}");
        assert_eq!(counts["public.vehicles"], want[1], "{counts}");
        assert_eq!(counts["Dealer Ops.Odd \"Leads\""], want[2], "{counts}");
        assert_eq!(counts["public.empty_one"], want[3], "{counts}");

        // restored unchanged, into a new database, by the ordinary logical restore
        let db = format!("restored{i}");
        let o = env
            .arsip()
            .args([
                "restore",
                "pg",
                "--logical",
                &id[..12],
                "--create",
                "--dbname",
            ])
            .arg(env.cluster.conninfo(&db))
            .output()
            .unwrap();
        ok(&o);
        assert_eq!(&env.psql(&db, SIGNATURE), *sig, "{name}");
    }
    // `latest` is the newest by the names' times
    let o = env
        .arsip()
        .args([
            "restore",
            "pg",
            "--logical",
            "latest",
            "--create",
            "--dbname",
        ])
        .arg(env.cluster.conninfo("restored_latest"))
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(env.psql("restored_latest", SIGNATURE), sig3);

    // --- idempotent: the same bytes again, under any name, are skipped ----------------------
    let copy = env.path("copy_of_autolumiku_backup_20250101_020000.sql.gz.enc");
    std::fs::copy(&md5_file, &copy).unwrap();
    let (o, v) = env.import(&[&md5_file, &copy]);
    ok(&o);
    assert_eq!(v["skipped"], 2, "{v}");
    assert_eq!(v["imported"], 0);
    for f in v["files"].as_array().unwrap() {
        assert_eq!(f["status"], "skipped", "{f}");
        assert_eq!(
            f["snapshot"],
            file_entry_id(&snaps, "20250101_020000.sql.gz.enc")
        );
    }
    assert_eq!(env.snapshots().len(), 3);

    // --- refusals, each with its own message and exit class ---------------------------------
    let len = std::fs::metadata(&sha_file).unwrap().len();
    let bytes = std::fs::read(&sha_file).unwrap();
    // cut inside an AES block
    let cut_odd = env.path("autolumiku_backup_20250104_020000.sql.gz.enc");
    std::fs::write(&cut_odd, &bytes[..len as usize - 5]).unwrap();
    // cut on a block boundary: only the padding or the gzip trailer can tell
    let cut_block = env.path("autolumiku_backup_20250105_020000.sql.gz.enc");
    std::fs::write(&cut_block, &bytes[..(len as usize / 2) & !15]).unwrap();
    // pg_dump died halfway, gzip and openssl finished (the old script's blind spot)
    let cut_inside = env.path("autolumiku_backup_20250106_020000.sql.gz.enc");
    let full = env.path("full.dump");
    ok(&Command::new(env.cluster.bin.join("pg_dump"))
        .envs(env.cluster.env())
        .args(["-d", "autolumiku", "-Fc", "-Z9", "-f"])
        .arg(&full)
        .output()
        .unwrap());
    let n = std::fs::metadata(&full).unwrap().len() * 2 / 3;
    env.pipeline(
        &cut_inside,
        &format!("head -c {n} '{}'", full.display()),
        "",
    );
    // not dumps: gzip of random bytes; a plain-format SQL dump
    let random = env.path("autolumiku_backup_20250107_020000.sql.gz.enc");
    env.pipeline(&random, "head -c 200000 /dev/urandom", "");
    let plain = env.path("autolumiku_backup_20250108_020000.sql.gz.enc");
    env.pipeline(
        &plain,
        "PG_DUMP -h \"$PGHOST\" -U postgres -d autolumiku --format=plain",
        "",
    );
    // not openssl at all
    let not_enc = env.path("autolumiku_backup_20250109_020000.sql.gz.enc");
    std::fs::write(&not_enc, b"hello, this is not encrypted\n").unwrap();

    let cases: [(&Path, &str, &str); 6] = [
        (&cut_odd, "damaged", "AES block"),
        (&cut_block, "damaged", "truncated"),
        (&cut_inside, "damaged", "pg_restore"),
        (&random, "refused", "not a pg_dump archive"),
        (&plain, "refused", "plain-format dump"),
        (&not_enc, "refused", "Salted__"),
    ];
    for (file, class, text) in cases {
        let (o, v) = env.import(&[file]);
        let f = &v["files"][0];
        assert_eq!(f["status"], "refused", "{f}");
        assert_eq!(f["class"], class, "{f}");
        assert!(
            f["reason"].as_str().unwrap().contains(text),
            "{}: {f}",
            file.display()
        );
        let code = if class == "damaged" { 6 } else { 8 };
        assert_eq!(o.status.code(), Some(code), "{f}");
    }
    // the human form says the same, with the hint
    let o = env
        .arsip()
        .args(["import", "legacy-dump", "--time-zone", "Asia/Jakarta"])
        .arg("--legacy-key-file")
        .arg(&key_file)
        .arg(&cut_inside)
        .output()
        .unwrap();
    no_key_in(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("refused") && out.contains("HINT:"), "{out}");
    assert_eq!(o.status.code(), Some(6));

    // wrong key, from the environment this time (files not imported yet: an imported
    // file's bytes are recognised, and skipped, before any key is tried)
    let fresh_sha = env.path("autolumiku_backup_20250111_020000.sql.gz.enc");
    env.pipeline(&fresh_sha, dump, "");
    let fresh_md5 = env.path("autolumiku_backup_20250112_020000.sql.gz.enc");
    env.pipeline(&fresh_md5, dump, "-md md5");
    let o = env
        .arsip()
        .env("ARSIP_LEGACY_KEY", "not-the-key")
        .args(["--json", "import", "legacy-dump", "--time-zone", "UTC"])
        .arg(&fresh_sha)
        .arg(&fresh_md5)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["refused"], 2, "{v}");
    for f in v["files"].as_array().unwrap() {
        assert_eq!(f["class"], "wrong_key", "{f}");
        assert!(f["reason"].as_str().unwrap().contains("does not decrypt"));
    }
    assert_eq!(o.status.code(), Some(4));

    // a name without the time: refused, then imported with --time
    let renamed = env.path("nightly.sql.gz.enc");
    env.psql(
        "autolumiku",
        "INSERT INTO tenants (name) VALUES ('renamed')",
    );
    env.pipeline(&renamed, dump, "");
    let sig4 = env.psql("autolumiku", SIGNATURE);
    let (o, v) = env.import(&[&renamed]);
    assert_eq!(v["files"][0]["class"], "usage", "{v}");
    assert_eq!(o.status.code(), Some(2));
    let o = env
        .arsip()
        .args([
            "--json",
            "import",
            "legacy-dump",
            "--time-zone",
            "Asia/Jakarta",
        ])
        .args([
            "--time",
            "2025-01-10 02:00:00",
            "--source",
            "postgresql://old-db/autolumiku",
        ])
        .arg("--legacy-key-file")
        .arg(&key_file)
        .arg(&renamed)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&ok(&o)).unwrap();
    assert_eq!(v["files"][0]["time"], "2025-01-09T19:00:00Z", "{v}");
    let id4 = v["files"][0]["snapshot"].as_str().unwrap().to_string();
    let s4 = env
        .snapshots()
        .into_iter()
        .find(|s| s["id"] == id4.as_str())
        .unwrap();
    assert_eq!(s4["source"], "postgresql://old-db/autolumiku");
    assert_eq!(s4["facts"]["legacy_time_from"], "--time");
    let o = env
        .arsip()
        .args([
            "restore",
            "pg",
            "--logical",
            &id4[..12],
            "--create",
            "--dbname",
        ])
        .arg(env.cluster.conninfo("restored_renamed"))
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(env.psql("restored_renamed", SIGNATURE), sig4);

    // several files at once: each reported, the exit code the refusals' (mixed: 1)
    let (o, v) = env.import(&[&sha_file, &cut_odd, &random]);
    assert_eq!(
        file_entry(&v, "20250102_020000.sql.gz.enc")["status"],
        "skipped"
    );
    assert_eq!(v["refused"], 2, "{v}");
    assert_eq!(o.status.code(), Some(1));

    // a key file others can read is not used
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = env
        .arsip()
        .args(["import", "legacy-dump", "--legacy-key-file"])
        .arg(&key_file)
        .arg(&sha_file)
        .output()
        .unwrap();
    no_key_in(&o);
    assert_eq!(o.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("chmod 600"));
    // no key at all
    let o = env
        .arsip()
        .args(["import", "legacy-dump"])
        .arg(&sha_file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));

    // nothing refused left a snapshot behind
    assert_eq!(env.snapshots().len(), 4);
}

/// The id of the snapshot imported from the file whose name ends in `name`.
fn file_entry_id(snaps: &[Value], name: &str) -> Value {
    snaps
        .iter()
        .find(|s| {
            s["facts"]["imported_from"]
                .as_str()
                .is_some_and(|f| f.ends_with(name))
        })
        .map(|s| s["id"].clone())
        .unwrap_or_else(|| panic!("no snapshot of {name}"))
}

//! End-to-end tests of the `arsip` binary, exactly as operators run it, against a local
//! directory and a real S3-protocol server (moto, started by `arsip-testkit`).
//!
//! Modules:
//! - `common` (shared with `trust.rs`): the `Arsip` runner (a repository plus its
//!   environment); `support`: it, with this file's `init` and file helpers;
//! - `roundtrip`: init, backup, snapshots, restore, check, stats on each backend;
//! - `keys`: key slots, key files, agents;
//! - `bad_input`: refusals, hints and exit codes;
//! - `damage`: flipped and truncated objects are named, restores fail loudly;
//! - `concurrency`: several writers at once;
//! - `crash`: `kill -9` at random points and at every write stage, local and S3.

mod common;

mod support {
    use std::path::{Path, PathBuf};

    pub use crate::common::*;

    impl Arsip {
        pub fn init(&self) {
            self.init_sized("256K", ["16K", "64K", "256K"]);
        }
    }

    /// A small tree with text, binary, an empty file, a symlink and odd modes.
    pub fn make_tree(root: &Path, seed: u64) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root.join("etc/app/conf.d")).unwrap();
        std::fs::create_dir_all(root.join("secrets")).unwrap();
        std::fs::write(
            root.join("etc/app/app.yaml"),
            format!("db: postgres://db/app\nseed: {seed}\n"),
        )
        .unwrap();
        std::fs::write(
            root.join("etc/app/conf.d/big.bin"),
            arsip_testkit::sample_data(700_000, seed),
        )
        .unwrap();
        std::fs::write(root.join("etc/app/empty"), b"").unwrap();
        std::fs::write(root.join("secrets/jwt.key"), b"not-a-real-secret").unwrap();
        std::fs::set_permissions(
            root.join("secrets/jwt.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::set_permissions(root.join("secrets"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::os::unix::fs::symlink("app/app.yaml", root.join("etc/current.yaml")).unwrap();
    }

    /// Compare two trees: contents, modes, mtimes (files), symlink targets.
    pub fn assert_same_tree(a: &Path, b: &Path) {
        use std::os::unix::fs::MetadataExt;
        let ma = std::fs::symlink_metadata(a).unwrap();
        let mb = std::fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
        assert_eq!(
            ma.file_type().is_symlink(),
            mb.file_type().is_symlink(),
            "{}",
            b.display()
        );
        assert_eq!(
            ma.mode() & 0o7777,
            mb.mode() & 0o7777,
            "mode of {}",
            b.display()
        );
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(a).unwrap(),
                std::fs::read_link(b).unwrap()
            );
        } else if ma.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(a)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            let mut names_b: Vec<_> = std::fs::read_dir(b)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names_b.sort();
            assert_eq!(names, names_b, "entries of {}", b.display());
            for n in names {
                assert_same_tree(&a.join(&n), &b.join(&n));
            }
        } else {
            assert_eq!(
                std::fs::read(a).unwrap(),
                std::fs::read(b).unwrap(),
                "content of {}",
                b.display()
            );
            assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", b.display());
        }
    }

    /// Where a backed-up absolute path lands under a restore target.
    pub fn restored(target: &Path, original: &Path) -> PathBuf {
        target.join(original.strip_prefix("/").unwrap())
    }
}

mod roundtrip {
    use super::support::*;

    #[test]
    fn files_and_streams_on_each_backend() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            let src = tmp.path().join(format!("src-{name}"));
            make_tree(&src, 1);
            a.init();
            let out = a.json(&[
                "backup",
                "files",
                src.to_str().unwrap(),
                "--tag",
                "env=prod",
                "--tag",
                "tenant=42",
            ]);
            let files_id = out["id"].as_str().unwrap().to_string();
            assert_eq!(out["files"], 4, "{out}");

            let dump = arsip_testkit::sample_data(2_500_000, 5);
            let o = a.run_stdin(&["backup", "stdin", "--name", "app.dump", "--json"], &dump);
            assert!(o.status.success(), "{}", stderr(&o));

            let snaps = a.json(&["snapshots"]);
            let arr = snaps.as_array().unwrap();
            assert_eq!(arr.len(), 2, "{name}: {snaps}");
            for s in arr {
                for field in ["id", "time", "kind", "tags", "logical_bytes"] {
                    assert!(
                        s.get(field).is_some(),
                        "{name}: snapshot JSON lacks {field}: {s}"
                    );
                }
            }
            assert_eq!(arr[0]["tags"]["tenant"], "42");
            assert_eq!(arr[1]["kind"], "stdin");
            assert_eq!(arr[1]["logical_bytes"], dump.len());

            // Restore by full id, by prefix, and `latest` narrowed by kind.
            let target = tmp.path().join(format!("restore-{name}"));
            a.ok(&["restore", &files_id[..10], "--to", target.to_str().unwrap()]);
            assert_same_tree(&src, &restored(&target, &src));
            let out = a.run(&["restore", "latest", "--stdout"]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(out.stdout == dump, "{name}: stdout restore differs");
            // With a tiny index memory budget the index spills to a mapped file: same result.
            let t2 = tmp.path().join(format!("restore2-{name}"));
            a.with_env("ARSIP_INDEX_MEMORY", "1K").ok(&[
                "restore",
                "latest",
                "--kind",
                "files",
                "--to",
                t2.to_str().unwrap(),
            ]);
            assert_same_tree(&src, &restored(&t2, &src));

            // Unchanged input stores almost nothing new.
            let again = a.run_stdin(&["backup", "stdin", "--name", "app.dump", "--json"], &dump);
            let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
            assert!(
                v["added_bytes"].as_u64().unwrap() < dump.len() as u64 / 100,
                "{name}: {v}"
            );

            let check = a.json(&["check", "--read-data"]);
            assert_eq!(
                check["problems"].as_array().unwrap().len(),
                0,
                "{name}: {check}"
            );
            assert!(check["packs_read"].as_u64().unwrap() > 0);
            let subset = a.json(&["check", "--read-data-subset=50"]);
            assert!(subset["problems"].as_array().unwrap().is_empty());

            let stats = a.json(&["stats"]);
            for field in ["stored_bytes", "logical_bytes", "snapshots", "chunks"] {
                assert!(
                    stats[field].as_u64().is_some(),
                    "{name}: stats lacks {field}: {stats}"
                );
            }
            assert_eq!(stats["snapshots"], 3);
            assert!(
                stats["stored_bytes"].as_u64().unwrap() < stats["logical_bytes"].as_u64().unwrap()
            );
        }
    }

    #[test]
    fn restore_into_existing_directory_replaces_files_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path());
        let src = tmp.path().join("src");
        make_tree(&src, 2);
        a.init();
        a.ok(&["backup", "files", src.to_str().unwrap()]);
        let target = tmp.path().join("t");
        let dest = restored(&target, &src.join("etc/app/app.yaml"));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, "stale").unwrap();
        // Refused by default, naming the file, writing nothing; replaced with --overwrite.
        let o = a.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
        assert_eq!(code(&o), 8, "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&dest.display().to_string()),
            "{}",
            stderr(&o)
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"stale");
        a.ok(&[
            "restore",
            "latest",
            "--to",
            target.to_str().unwrap(),
            "--overwrite",
        ]);
        assert_same_tree(&src, &restored(&target, &src));
        let leftovers: Vec<_> = walk(&target)
            .into_iter()
            .filter(|p| p.contains(".arsip-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    pub fn walk(p: &std::path::Path) -> Vec<String> {
        let mut out = vec![p.display().to_string()];
        if std::fs::symlink_metadata(p)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            for e in std::fs::read_dir(p).unwrap() {
                out.extend(walk(&e.unwrap().path()));
            }
        }
        out
    }
}

mod keys {
    use super::support::*;

    #[test]
    fn password_slots_key_files_and_passwd() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path());
        a.init();
        let src = tmp.path().join("src");
        make_tree(&src, 3);
        a.ok(&["backup", "files", src.to_str().unwrap()]);

        // A second password opens the same repository.
        let new_pw = tmp.path().join("new-password");
        std::fs::write(&new_pw, "second password").unwrap();
        a.with_env("ARSIP_NEW_PASSWORD_FILE", new_pw.to_str().unwrap())
            .ok(&["key", "add", "--label", "ops"]);
        let second = a.with_env("ARSIP_PASSWORD_FILE", new_pw.to_str().unwrap());
        assert_eq!(second.json(&["snapshots"]).as_array().unwrap().len(), 1);

        // A key file opens it without any password.
        let kf = tmp.path().join("full.key");
        a.ok(&["key", "add", "--keyfile", "--out", kf.to_str().unwrap()]);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let by_file = a
            .without_env("ARSIP_PASSWORD_FILE")
            .with_env("ARSIP_KEY_FILE", kf.to_str().unwrap());
        assert_eq!(by_file.json(&["snapshots"]).as_array().unwrap().len(), 1);
        // --out never overwrites.
        let o = a.run(&["key", "add", "--keyfile", "--out", kf.to_str().unwrap()]);
        assert_ne!(code(&o), 0);

        // passwd replaces the slot that opened the repository; the old password stops working.
        let third = tmp.path().join("third");
        std::fs::write(&third, "third password").unwrap();
        second
            .with_env("ARSIP_NEW_PASSWORD_FILE", third.to_str().unwrap())
            .ok(&["key", "passwd"]);
        assert_eq!(
            code(&second.run(&["snapshots"])),
            4,
            "old password must fail with exit 4"
        );
        let t = a.with_env("ARSIP_PASSWORD_FILE", third.to_str().unwrap());
        let slots = t.json(&["key", "list"]);
        assert_eq!(slots["slots"].as_array().unwrap().len(), 3, "{slots}");

        // Removing slots: never the last one.
        for s in slots["slots"].as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            if s["kind"] == "password" && s["label"] == "initial" {
                t.ok(&["key", "remove", id]);
            }
        }
        let slots = t.json(&["key", "list"])["slots"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(slots.len(), 2);
        t.ok(&[
            "key",
            "remove",
            slots.iter().find(|s| s["kind"] == "keyfile").unwrap()["id"]
                .as_str()
                .unwrap(),
        ]);
        let last = t.json(&["key", "list"])["slots"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let o = t.run(&["key", "remove", &last]);
        assert_ne!(code(&o), 0, "removing the last slot must be refused");
        // Data is untouched by all of this.
        let target = tmp.path().join("t");
        t.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
        assert_same_tree(&src, &restored(&target, &src));
    }

    #[test]
    fn agent_credentials_add_backups_but_read_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let agent_file = tmp.path().join(format!("agent-{name}.json"));
            a.ok(&[
                "key",
                "add",
                "--agent",
                "--label",
                "db-1",
                "--out",
                agent_file.to_str().unwrap(),
            ]);
            let agent = a
                .without_env("ARSIP_PASSWORD_FILE")
                .with_env("ARSIP_KEY_FILE", agent_file.to_str().unwrap());
            let dump = arsip_testkit::sample_data(1_000_000, 8);
            let o = agent.run_stdin(&["backup", "stdin", "--name", "db.dump"], &dump);
            assert!(o.status.success(), "{name}: {}", stderr(&o));
            for args in [
                &["snapshots"][..],
                &["restore", "latest", "--stdout"],
                &["check"],
                &["stats"],
            ] {
                let o = agent.run(args);
                assert_eq!(
                    code(&o),
                    8,
                    "{name}: agent must be refused {args:?}: {}",
                    stderr(&o)
                );
                assert!(stderr(&o).contains("full key"), "{}", stderr(&o));
            }
            let out = a.run(&["restore", "latest", "--stdout"]);
            assert!(
                out.status.success() && out.stdout == dump,
                "{name}: full key restores the agent's backup"
            );
            let list = a.json(&["key", "list"]);
            assert_eq!(list["agents"].as_array().unwrap().len(), 1);
        }
    }
}

mod bad_input {
    use super::support::*;

    #[test]
    fn wrong_password_missing_repo_and_unknown_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path());
        a.init();
        a.run_stdin(&["backup", "stdin", "--name", "x"], b"hello");

        let bad_pw = tmp.path().join("bad");
        std::fs::write(&bad_pw, "hunter2-xyzzy").unwrap();
        let o = a
            .with_env("ARSIP_PASSWORD_FILE", bad_pw.to_str().unwrap())
            .run(&["snapshots"]);
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        assert!(stderr(&o).contains("HINT:"), "{}", stderr(&o));
        assert!(
            !stderr(&o).contains("hunter2"),
            "the password must not be echoed: {}",
            stderr(&o)
        );

        let missing = Arsip {
            repo: tmp.path().join("nope").display().to_string(),
            ..a.clone()
        };
        let o = missing.run(&["snapshots"]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        assert!(stderr(&o).contains("HINT:"));

        let not_repo_dir = tmp.path().join("plain");
        std::fs::create_dir_all(&not_repo_dir).unwrap();
        std::fs::write(not_repo_dir.join("file"), "x").unwrap();
        let o = Arsip {
            repo: not_repo_dir.display().to_string(),
            ..a.clone()
        }
        .run(&["snapshots"]);
        assert_eq!(code(&o), 3, "{}", stderr(&o));
        assert!(stderr(&o).contains("arsip init"), "{}", stderr(&o));

        let o = a.run(&["restore", "deadbeef", "--stdout"]);
        assert_eq!(code(&o), 7, "{}", stderr(&o));

        // Bad input is a usage error (2) wherever it comes from, and a full stdout is a local
        // I/O error (5), as README's table says.
        let not_a_key = tmp.path().join("not-a-key");
        std::fs::write(&not_a_key, "x").unwrap();
        for (what, o) in [
            (
                "a snapshot that is not an id",
                a.run(&["restore", "zzzz", "--stdout"]),
            ),
            ("an empty snapshot", a.run(&["restore", "", "--stdout"])),
            ("an unknown kind", a.run(&["snapshots", "--kind", "nope"])),
            (
                "an unknown kind for latest",
                a.run(&["restore", "latest", "--kind", "nope", "--stdout"]),
            ),
            (
                "an empty password",
                a.without_env("ARSIP_PASSWORD_FILE")
                    .with_env("ARSIP_PASSWORD", "")
                    .run(&["snapshots"]),
            ),
            (
                "an unreadable password file",
                a.with_env("ARSIP_PASSWORD_FILE", "/nonexistent/pw")
                    .run(&["snapshots"]),
            ),
            (
                "a file that is not a key file",
                a.with_env("ARSIP_KEY_FILE", not_a_key.to_str().unwrap())
                    .run(&["snapshots"]),
            ),
            (
                "a staging name as a stream name",
                a.run_stdin(&["backup", "stdin", "--name", "a/.arsip-restore-x"], b"x"),
            ),
        ] {
            assert_eq!(code(&o), 2, "{what}: {}", stderr(&o));
        }
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = a.cmd(&["snapshots"]).stdout(full).output().unwrap();
        assert_eq!(code(&o), 5, "stdout on /dev/full: {}", stderr(&o));
        let file_url = format!("file://{}", a.local_root.as_ref().unwrap().display());
        let o = Arsip {
            repo: file_url,
            ..a.clone()
        }
        .run(&["snapshots"]);
        assert_eq!(code(&o), 0, "file:///PATH: {}", stderr(&o));

        let o = a.run(&["init"]);
        assert_eq!(
            code(&o),
            8,
            "init over an existing repository: {}",
            stderr(&o)
        );

        let o = a.without_env("ARSIP_PASSWORD_FILE").run(&["snapshots"]);
        assert_ne!(code(&o), 0);
        assert!(stderr(&o).contains("ARSIP_PASSWORD_FILE"), "{}", stderr(&o));

        let o = a.run(&[
            "backup",
            "files",
            tmp.path().join("does-not-exist").to_str().unwrap(),
        ]);
        assert_ne!(code(&o), 0);
        assert_eq!(
            a.json(&["snapshots"]).as_array().unwrap().len(),
            1,
            "a failed backup commits nothing"
        );
    }

    #[test]
    fn unreachable_and_misconfigured_s3() {
        let tmp = tempfile::tempdir().unwrap();
        let s3 = Arsip::s3(tmp.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = s3.with_env("ARSIP_S3_ENDPOINT", &format!("http://127.0.0.1:{port}"));
        let started = std::time::Instant::now();
        let o = down.run(&["snapshots"]);
        assert_eq!(code(&o), 5, "{}", stderr(&o));
        assert!(stderr(&o).contains("HINT:"), "{}", stderr(&o));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "retries are bounded"
        );

        let no_bucket = Arsip {
            repo: "s3://no-such-bucket-arsip/x".into(),
            ..s3.clone()
        };
        let o = no_bucket.run(&["snapshots"]);
        assert!(matches!(code(&o), 3 | 5), "{}: {}", code(&o), stderr(&o));

        let bad_url = Arsip {
            repo: "s3://AKIA:secret@bucket/x".into(),
            ..s3.clone()
        };
        let o = bad_url.run(&["snapshots"]);
        assert_ne!(code(&o), 0);
        assert!(
            !stderr(&o).contains("secret"),
            "credentials must not be echoed: {}",
            stderr(&o)
        );
    }

    #[test]
    fn store_ignoring_conditional_creates_is_refused() {
        // A fault hook that makes every create look like a fresh success models servers that
        // ignore If-None-Match; init must refuse to use such a store.
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path()).with_env("ARSIP_TEST_FAULTS", "ignore-if-none-match");
        let o = a.run(&["init"]);
        assert_eq!(code(&o), 8, "{}", stderr(&o));
        assert!(stderr(&o).contains("conditional"), "{}", stderr(&o));
    }
}

mod damage {
    use super::support::*;

    fn objects(root: &std::path::Path, prefix: &str) -> Vec<std::path::PathBuf> {
        super::roundtrip::walk(&root.join(prefix))
            .into_iter()
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_file())
            .collect()
    }

    fn flip(path: &std::path::Path, at: usize) {
        let mut b = std::fs::read(path).unwrap();
        let i = at.min(b.len() - 1);
        b[i] ^= 0x20;
        std::fs::write(path, b).unwrap();
    }

    /// A repository with one files snapshot and one stream snapshot, copied per case.
    fn fixture(tmp: &std::path::Path) -> (Arsip, Vec<u8>) {
        let a = Arsip::local(tmp);
        a.init();
        let data = arsip_testkit::sample_data(1_500_000, 4);
        let o = a.run_stdin(&["backup", "stdin", "--name", "dump"], &data);
        assert!(o.status.success());
        let src = tmp.join("src");
        make_tree(&src, 4);
        a.ok(&["backup", "files", src.to_str().unwrap()]);
        (a, data)
    }

    #[test]
    fn flipped_byte_in_a_pack_is_named_and_restore_fails_loudly() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, _) = fixture(tmp.path());
        let root = a.local_root.clone().unwrap();
        let stream_id = a.json(&["snapshots", "--kind", "stdin"])[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        // Damage the largest pack (it holds the stream's data).
        let mut packs = objects(&root, "data");
        packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
        let victim = packs.last().unwrap().clone();
        flip(&victim, 5000);
        let victim_name = victim.strip_prefix(&root).unwrap().display().to_string();

        let o = a.run(&["check", "--read-data"]);
        assert_eq!(code(&o), 6, "{}", String::from_utf8_lossy(&o.stdout));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&victim_name),
            "check names the damaged object: {out}"
        );
        assert!(
            out.contains(&format!("AFFECTED snapshot {stream_id}")),
            "check names the affected snapshot: {out}"
        );
        // Structure-only check does not read data and stays clean.
        assert_eq!(code(&a.run(&["check"])), 0);

        let o = a.run(&["restore", &stream_id, "--stdout"]);
        assert_eq!(code(&o), 6, "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&victim_name) || stderr(&o).contains("damaged"),
            "{}",
            stderr(&o)
        );
        let target = tmp.path().join("t");
        let o = a.run(&["restore", &stream_id, "--to", target.to_str().unwrap()]);
        assert_eq!(code(&o), 6);
        assert!(!target.join("dump").exists(), "no file may appear restored");
    }

    #[test]
    fn every_object_type_damaged_or_truncated_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, _) = fixture(&tmp.path().join("orig"));
        let orig = a.local_root.clone().unwrap();
        for (case, prefix, truncate) in [
            ("index-flip", "index", false),
            ("index-trunc", "index", true),
            ("snapshot-flip", "snapshots", false),
            ("pack-trunc", "data", true),
            ("config-flip", "config", false),
            ("keyslot-flip", "keys", false),
        ] {
            let dir = tmp.path().join(case);
            copy_dir(&orig, &dir.join("repo"));
            let b = Arsip {
                repo: dir.join("repo").display().to_string(),
                local_root: Some(dir.join("repo")),
                ..a.clone()
            };
            let root = b.local_root.clone().unwrap();
            let victim = if prefix == "config" {
                root.join("config")
            } else {
                objects(&root, prefix)[0].clone()
            };
            if truncate {
                let len = std::fs::metadata(&victim).unwrap().len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&victim)
                    .unwrap();
                f.set_len(len / 2).unwrap();
            } else {
                let len = std::fs::metadata(&victim).unwrap().len() as usize;
                flip(
                    &victim,
                    if prefix == "keys" || prefix == "config" {
                        len / 3
                    } else {
                        len / 2
                    },
                );
            }
            let o = b.run(&["check", "--read-data"]);
            let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
            assert_ne!(code(&o), 0, "{case}: damage must be reported: {all}");
            if prefix == "index" || prefix == "snapshots" || prefix == "data" {
                let name = victim.strip_prefix(&root).unwrap().display().to_string();
                assert_eq!(code(&o), 6, "{case}: {all}");
                assert!(all.contains(&name), "{case}: check names {name}: {all}");
            }
            // A truncated pack is damage for a restore too, not a storage outage retried
            // six times and reported as exit 5.
            if case == "pack-trunc" {
                let mut codes = vec![];
                for (i, snap) in b
                    .json(&["snapshots"])
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                {
                    let to = dir.join(format!("restored-{i}"));
                    let id = snap["id"].as_str().unwrap();
                    let o = b.run(&["restore", id, "--to", to.to_str().unwrap()]);
                    codes.push((code(&o), stderr(&o)));
                }
                assert!(
                    codes.iter().all(|(c, _)| *c == 0 || *c == 6),
                    "{case}: {codes:?}"
                );
                assert!(codes.iter().any(|(c, _)| *c == 6), "{case}: {codes:?}");
            }
        }
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
}

mod concurrency {
    use super::support::*;

    #[test]
    fn two_backups_at_once_both_commit_and_restore() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let d1 = arsip_testkit::sample_data(3_000_000, 21);
            let mut d2 = d1.clone();
            d2.extend(arsip_testkit::sample_data(1_000_000, 22));
            let (a1, a2) = (a.clone(), a.clone());
            let (c1, c2) = (d1.clone(), d2.clone());
            let t1 = std::thread::spawn(move || {
                a1.run_stdin(&["backup", "stdin", "--name", "one", "--json"], &c1)
            });
            let t2 = std::thread::spawn(move || {
                a2.run_stdin(&["backup", "stdin", "--name", "two", "--json"], &c2)
            });
            let (o1, o2) = (t1.join().unwrap(), t2.join().unwrap());
            assert!(o1.status.success(), "{name}: {}", stderr(&o1));
            assert!(o2.status.success(), "{name}: {}", stderr(&o2));
            for (o, d) in [(o1, d1), (o2, d2)] {
                let id = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let r = a.run(&["restore", &id, "--stdout"]);
                assert!(
                    r.status.success() && r.stdout == d,
                    "{name}: restore of {id}"
                );
            }
            assert!(a.json(&["check", "--read-data"])["problems"]
                .as_array()
                .unwrap()
                .is_empty());
            assert!(!a.run(&["snapshots"]).stdout.is_empty());
        }
    }
}

mod crash {
    use std::process::Stdio;
    use std::time::Duration;

    use super::support::*;

    /// Kill points: SIGKILL from inside at the n-th pack, index or manifest write (before or
    /// after it is stored), and SIGKILL from outside after a random delay.
    fn kill_point(i: usize, rng: u64) -> Option<String> {
        let n = 1 + rng % 4;
        match i % 6 {
            0 => Some(format!("crash:data/:{n}:before")),
            1 => Some(format!("crash:data/:{n}:after")),
            2 => Some("crash:index/:1:before".into()),
            3 => Some("crash:index/:1:after".into()),
            4 => Some(format!(
                "crash:snapshots/:1:{}",
                if rng.is_multiple_of(2) {
                    "before"
                } else {
                    "after"
                }
            )),
            _ => None,
        }
    }

    fn crash_loop(a: &Arsip, iterations: usize) {
        a.init();
        let src = arsip_testkit::sample_data(2_000_000, 99);
        let mut committed = 0usize;
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..iterations {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Vary the input so every iteration has new chunks to write.
            let mut data = src.clone();
            let at = (rng as usize) % (data.len() - 64);
            data[at..at + 64].copy_from_slice(&rng.to_le_bytes().repeat(8));
            let runner = match kill_point(i, rng) {
                Some(f) => a.with_env("ARSIP_TEST_FAULTS", &f),
                None => a.clone(),
            };
            let mut child = runner
                .cmd(&["backup", "stdin", "--name", "crash.bin"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                let _ = stdin.write_all(&data);
            });
            if kill_point(i, rng).is_none() {
                std::thread::sleep(Duration::from_millis(rng % 400));
                let _ = child.kill();
            }
            let status = child.wait().unwrap();
            writer.join().unwrap();
            if status.success() {
                committed += 1;
            }
            // After every crash: no partial snapshot, structure clean.
            let snaps = a.json(&["snapshots"]);
            let n = snaps.as_array().unwrap().len();
            assert!(
                n >= committed && n <= i + 1,
                "iteration {i}: {n} snapshots, {committed} acknowledged"
            );
            committed = n;
            let check = a.run(&["check", "--json"]);
            assert!(
                check.status.success(),
                "iteration {i}: check after crash: {}",
                String::from_utf8_lossy(&check.stdout)
            );
        }
        // The next backup succeeds, and everything listed restores with verified data.
        let o = a.run_stdin(&["backup", "stdin", "--name", "after.bin"], &src);
        assert!(o.status.success(), "{}", stderr(&o));
        let r = a.run(&["restore", "latest", "--stdout"]);
        assert!(r.stdout == src);
        let check = a.json(&["check", "--read-data"]);
        assert!(check["problems"].as_array().unwrap().is_empty(), "{check}");
    }

    #[test]
    fn kill_9_during_backups_local() {
        let tmp = tempfile::tempdir().unwrap();
        crash_loop(&Arsip::local(tmp.path()), 100);
    }

    #[test]
    fn kill_9_during_backups_s3() {
        let tmp = tempfile::tempdir().unwrap();
        crash_loop(&Arsip::s3(tmp.path()), 100);
    }
}

mod fixtures {
    //! Frozen repositories (written once by `tests/fixtures/make.sh`, never rewritten): later
    //! code must still read them, and must report their damage exactly as recorded.
    use super::support::*;

    fn fixture(name: &str, tmp: &std::path::Path) -> Arsip {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let dst = tmp.join(name);
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(&dst)
            .status()
            .unwrap();
        assert!(status.success());
        let mut a = Arsip::local(tmp);
        a.repo = dst.display().to_string();
        a.with_env("ARSIP_PASSWORD", "fixture")
            .without_env("ARSIP_PASSWORD_FILE")
    }

    fn expected(name: &str) -> serde_json::Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/{name}.expected.json"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn check_reports_on_frozen_repositories() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "clean",
            "flipped-pack",
            "missing-pack",
            "missing-index",
            "damaged-manifest",
        ] {
            let a = fixture(name, tmp.path());
            let o = a.run(&["check", "--read-data", "--json"]);
            let report: serde_json::Value = serde_json::from_slice(&o.stdout)
                .unwrap_or_else(|e| panic!("{name}: {e}: {}", stderr(&o)));
            let mut affected: Vec<String> = report["affected_snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            affected.sort();
            let got =
                serde_json::json!({"problems": report["problems"], "affected_snapshots": affected});
            assert_eq!(got, expected(name), "{name}");
            assert_eq!(code(&o), if name == "clean" { 0 } else { 6 }, "{name}");
        }
    }

    #[test]
    fn frozen_repository_still_restores() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fixture("clean", tmp.path());
        let out = a.run(&["restore", "latest", "--kind", "stdin", "--stdout"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let want: String = (1..=30000).map(|i| format!("{i}\n")).collect();
        assert!(out.stdout == want.as_bytes());
        let snaps = a.json(&["snapshots"]);
        assert_eq!(snaps[0]["tags"]["env"], "fixture");
        assert_eq!(
            snaps[0]["time"], "2026-11-25T19:00:00Z",
            "the injected clock stamped the snapshot"
        );
    }
}

/// `arsip config check` on the shipped example and on broken copies of it.
mod config {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use crate::support::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/arsip.toml");

    /// The example with its `/etc/arsip/` files created, private, under `dir`.
    fn example_in(dir: &Path) -> std::path::PathBuf {
        let text = std::fs::read_to_string(EXAMPLE).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("\"/etc/arsip/") {
            let p = &rest[at + "\"/etc/arsip/".len()..];
            let end = p.find('"').unwrap();
            let path = dir.join(&p[..end]);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "s3cr3t-value\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            rest = &p[end..];
        }
        let file = dir.join("arsip.toml");
        let text = text.replace("\"/etc/arsip/", &format!("\"{}/", dir.display()));
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn the_example_checks_and_prints_its_plan() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path()).with_env("ARSIP_TEST_NOW", "2026-12-02T12:00:00Z");
        let file = example_in(tmp.path());
        let f = file.to_str().unwrap();
        let out = a.run(&["config", "check", "--config", f]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
        assert!(
            text.contains("valid: 9 job(s), 3 source(s), 2 repositories"),
            "{text}"
        );
        // 02:00 WIB tomorrow is 19:00 UTC today.
        assert!(
            text.contains("2026-12-03 02:00 +07:00 (Thu)  2026-12-02 19:00Z"),
            "{text}"
        );
        let plan = a.json(&["config", "check", "--config", f, "--runs", "5"]);
        let jobs = plan["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 9);
        let daily = jobs.iter().find(|j| j["name"] == "pg-main-daily").unwrap();
        assert_eq!(daily["next"].as_array().unwrap().len(), 5);
        assert_eq!(daily["next"][0]["utc"], "2026-12-02T19:00:00Z");
        let all = format!("{text}{plan}");
        assert!(!all.contains("s3cr3t"), "a secret was shown: {all}");
    }

    #[test]
    fn errors_name_file_line_and_key_and_exit_2() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path());
        // The example as shipped names files this machine does not have.
        let out = a.run(&["config", "check", "--config", EXAMPLE]);
        assert_eq!(code(&out), 2);
        let err = stderr(&out);
        assert!(
            err.contains("arsip.toml:28:12: repository.main.key_file: /etc/arsip/keys/main.key:"),
            "{err}"
        );
        // One cause, one error: a missing key file is not also "no full key".
        assert!(!err.contains("needs the repository's full key"), "{err}");

        let file = example_in(tmp.path());
        let text = std::fs::read_to_string(&file).unwrap();
        let broken = text
            .replace("schedule = \"0 2 * * *\"", "schedule = \"0 2 * *\"")
            .replace(
                "tls = \"starttls\"",
                "tls = \"starttls\"\npassword = \"hunter2-inline\"",
            );
        std::fs::write(&file, broken).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let f = file.to_str().unwrap();
        let out = a.run(&["config", "check", "--config", f]);
        assert_eq!(code(&out), 2);
        let err = stderr(&out);
        assert!(
            err.contains("job.pg-main-daily.schedule: \"0 2 * *\" has 4 field(s)"),
            "{err}"
        );
        assert!(
            err.contains("channel.email.password: give exactly one of"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let out = a.run(&["config", "check", "--config", f, "--json"]);
        assert_eq!(code(&out), 2);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let errors = v["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 2, "{v}");
        assert_eq!(errors[0]["key"], "job.pg-main-daily.schedule");
        assert!(errors[0]["line"].as_u64().unwrap() > 0);
    }
}

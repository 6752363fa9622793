//! End-to-end tests of the repository's trust boundaries, through the `arsip` binary on a
//! local directory and a real S3-protocol server (moto): `init` over a used location, lost
//! or damaged key slots, retiring and compromising agents, rebuilding lost indexes, claimed
//! versus store-vouched snapshot times, and unusable cache directories.
//!
//! Modules:
//! - `support`: the runner (`common`, shared with `cli.rs`), and raw object access (local files, or plain HTTP to moto,
//!   which does not check signatures) to damage repositories the way operators lose them;
//! - `init_and_slots`: items 3 and 4 of issue 10 §4;
//! - `agents`: retirement, compromise, `key remove` confirmation, `check`'s revoked section;
//! - `repair`: `check` on unindexed packs and `repair index`;
//! - `time`: `latest` and writer filters against a forged future snapshot;
//! - `cache`: an unusable cache or spill directory is local I/O, not damage;
//! - `copy`: `arsip copy` into another location (another region): what the copy holds
//!   opens with the same keys, restores and checks clean, a retired agent's past included;
//!   damage at the source is reported and not copied; a copy killed midway is consistent
//!   and completes when run again; another repository at the destination is refused.

mod common;

mod support {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};

    pub use crate::common::*;

    impl Arsip {
        /// Back up `data` as the stream `name`; returns the snapshot id.
        pub fn backup_stdin(&self, name: &str, data: &[u8]) -> String {
            let o = self.run_stdin(&["backup", "stdin", "--name", name, "--json"], data);
            assert!(o.status.success(), "backup {name}: {}", stderr(&o));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["id"].as_str().unwrap().to_string()
        }

        pub fn init(&self) {
            self.init_sized("64K", ["4K", "16K", "64K"]);
        }

        /// This repository opened with agent credentials from `file`.
        pub fn as_agent(&self, file: &Path) -> Arsip {
            self.without_env("ARSIP_PASSWORD_FILE")
                .with_env("ARSIP_KEY_FILE", file.to_str().unwrap())
        }

        /// Register an agent; returns its credentials file and writer id.
        pub fn add_agent(&self, dir: &Path, label: &str) -> (PathBuf, String) {
            let file = dir.join(format!("agent-{label}.json"));
            let v = self.json(&[
                "key",
                "add",
                "--agent",
                "--label",
                label,
                "--out",
                file.to_str().unwrap(),
            ]);
            (file, v["agent"].as_str().unwrap().to_string())
        }

        // ---- raw object access ----------------------------------------------------------

        /// Every object name under `prefix` (relative to the repository root).
        pub fn objects(&self, prefix: &str) -> Vec<String> {
            let mut out = Vec::new();
            if let Some(root) = &self.local_root {
                fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
                    let Ok(rd) = std::fs::read_dir(p) else { return };
                    for e in rd {
                        let e = e.unwrap();
                        if e.file_type().unwrap().is_dir() {
                            walk(root, &e.path(), out);
                        } else {
                            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                            if !rel.contains('#') {
                                out.push(rel);
                            }
                        }
                    }
                }
                walk(root, root, &mut out);
            } else {
                let (bucket, pfx) = self.s3.as_ref().unwrap();
                let mut token: Option<String> = None;
                loop {
                    let mut q = format!("/{bucket}?list-type=2&prefix={pfx}/{prefix}");
                    if let Some(t) = &token {
                        q += &format!("&continuation-token={}", urlencode(t));
                    }
                    let (status, body) = http("GET", &q, &[]);
                    assert!(status.contains("200"), "{status}");
                    let body = String::from_utf8_lossy(&body).into_owned();
                    for part in body.split("<Key>").skip(1) {
                        let key = part.split("</Key>").next().unwrap();
                        out.push(key.strip_prefix(&format!("{pfx}/")).unwrap().to_string());
                    }
                    token = body
                        .split("<NextContinuationToken>")
                        .nth(1)
                        .map(|t| t.split('<').next().unwrap().to_string());
                    if token.is_none() {
                        break;
                    }
                }
            }
            out.retain(|k| k.starts_with(prefix));
            out.sort();
            out
        }

        pub fn delete(&self, name: &str) {
            if let Some(root) = &self.local_root {
                std::fs::remove_file(root.join(name)).unwrap();
            } else {
                let (bucket, pfx) = self.s3.as_ref().unwrap();
                let (status, _) = http("DELETE", &format!("/{bucket}/{pfx}/{name}"), &[]);
                assert!(status.contains("204") || status.contains("200"), "{status}");
            }
        }

        /// Create or replace an object (what a writer with overwrite rights could do).
        pub fn put(&self, name: &str, data: &[u8]) {
            if let Some(root) = &self.local_root {
                let p = root.join(name);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                if p.exists() {
                    let mut perm = std::fs::metadata(&p).unwrap().permissions();
                    #[allow(clippy::permissions_set_readonly_false)]
                    perm.set_readonly(false);
                    std::fs::set_permissions(&p, perm).unwrap();
                }
                std::fs::write(p, data).unwrap();
            } else {
                let (bucket, pfx) = self.s3.as_ref().unwrap();
                let (status, _) = http("PUT", &format!("/{bucket}/{pfx}/{name}"), data);
                assert!(status.contains("200"), "{status}");
            }
        }

        pub fn get(&self, name: &str) -> Vec<u8> {
            if let Some(root) = &self.local_root {
                std::fs::read(root.join(name)).unwrap()
            } else {
                let (bucket, pfx) = self.s3.as_ref().unwrap();
                let (status, body) = http("GET", &format!("/{bucket}/{pfx}/{name}"), &[]);
                assert!(status.contains("200"), "{status}");
                body
            }
        }
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// moto checks that a delete carries credentials, not the signature.
    const MOTO_AUTH: &str =
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                             SignedHeaders=host, Signature=00";

    /// One plain HTTP/1.1 request to the S3 test server: status line and body.
    fn http(method: &str, path: &str, body: &[u8]) -> (String, Vec<u8>) {
        let endpoint = &arsip_testkit::s3().endpoint;
        let hostport = endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(hostport).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: {}\r\n\
             Authorization: {MOTO_AUTH}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP header end");
        let head = String::from_utf8_lossy(&resp[..split]).into_owned();
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (head.lines().next().unwrap_or("").to_string(), body)
    }

    fn dechunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
            b = &b[line_end + 2 + n + 2..];
        }
    }
}

mod init_and_slots {
    use super::support::*;

    /// A location holding anything (a repository whose `config` was lost, a stray file) is
    /// refused by `init`, with what was found; nothing is written there.
    #[test]
    fn init_refuses_a_location_that_holds_objects() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            a.backup_stdin("db.dump", &arsip_testkit::sample_data(200_000, 1));
            a.delete("config");
            let before = a.objects("");
            let o = a.run(&["init"]);
            let err = stderr(&o);
            assert_eq!(code(&o), 8, "{name}: {err}");
            for want in [
                "not empty",
                "keys/",
                "data/",
                "index/",
                "snapshots/",
                "config",
            ] {
                assert!(err.contains(want), "{name}: {want:?} missing: {err}");
            }
            assert!(!err.contains("already exists"), "{name}: {err}");
            assert_eq!(a.objects(""), before, "{name}: init wrote something");
            // Still no repository: nothing was "repaired".
            assert_eq!(code(&a.run(&["snapshots"])), 3, "{name}");
        }
        // Any object at all, not only arsip's.
        for (name, a) in Arsip::both(&tmp.path().join("stray")) {
            a.put("notes.txt", b"not arsip");
            let o = a.run(&["init"]);
            assert_eq!(code(&o), 8, "{name}: {}", stderr(&o));
            assert!(stderr(&o).contains("notes.txt"), "{name}: {}", stderr(&o));
            // An intact repository is still "already exists".
            let b = Arsip::local(&tmp.path().join(format!("again-{name}")));
            b.init();
            let o = b.run(&["init"]);
            assert_eq!(code(&o), 8);
            assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
        }
    }

    /// The only key slot deleted or damaged in each way a slot can be: "no usable key
    /// slot" with what was found, class damaged (6), never "wrong password" (4).
    #[test]
    fn a_lost_or_damaged_only_slot_is_not_a_wrong_password() {
        let tmp = tempfile::tempdir().unwrap();
        type Damage = fn(&str, &[u8]) -> Option<Vec<u8>>;
        let cases: Vec<(&str, Damage, &str)> = vec![
            ("deleted", |_, _| None, "no key slots at all"),
            (
                "not json",
                |_, _| Some(b"{\"version\": 1, \"id\"".to_vec()),
                "damaged",
            ),
            ("empty", |_, _| Some(Vec::new()), "damaged"),
            (
                "short wrapped key",
                |_, b| {
                    let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
                    let w = v["wrapped"].as_str().unwrap()[..100].to_string();
                    v["wrapped"] = w.into();
                    Some(serde_json::to_vec(&v).unwrap())
                },
                "72 bytes",
            ),
            (
                "absurd kdf",
                |_, b| {
                    let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
                    v["kdf"]["m_kib"] = (u32::MAX).into();
                    Some(serde_json::to_vec(&v).unwrap())
                },
                "KDF",
            ),
        ];
        for (i, (what, damage, want)) in cases.into_iter().enumerate() {
            let kinds: Vec<(&str, Arsip)> = if i == 0 {
                Arsip::both(&tmp.path().join(format!("c{i}")))
            } else {
                vec![("local", Arsip::local(&tmp.path().join(format!("c{i}"))))]
            };
            for (name, a) in kinds {
                a.init();
                let slots = a.objects("keys/");
                assert_eq!(slots.len(), 1);
                let raw = a.get(&slots[0]);
                match damage(&slots[0], &raw) {
                    None => a.delete(&slots[0]),
                    Some(b) => a.put(&slots[0], &b),
                }
                let o = a.run(&["snapshots"]);
                let err = stderr(&o);
                assert_eq!(code(&o), 6, "{name}/{what}: {err}");
                assert!(err.contains("no usable key slot"), "{name}/{what}: {err}");
                assert!(err.contains(want), "{name}/{what}: {want:?} missing: {err}");
                assert!(!err.contains("wrong password"), "{name}/{what}: {err}");
            }
        }
        // A wrong password against an intact slot is still a wrong password.
        let a = Arsip::local(&tmp.path().join("intact"));
        a.init();
        let bad = tmp.path().join("bad-password");
        std::fs::write(&bad, "not it").unwrap();
        let o = a
            .with_env("ARSIP_PASSWORD_FILE", bad.to_str().unwrap())
            .run(&["snapshots"]);
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        // A key file whose slot is gone: the slot is named, not "wrong key file".
        let kf = tmp.path().join("full.key");
        a.ok(&["key", "add", "--keyfile", "--out", kf.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&kf).unwrap()).unwrap();
        let slot = format!("keys/{}", v["slot_id"].as_str().unwrap());
        a.delete(&slot);
        let o = a
            .without_env("ARSIP_PASSWORD_FILE")
            .with_env("ARSIP_KEY_FILE", kf.to_str().unwrap())
            .run(&["snapshots"]);
        let err = stderr(&o);
        assert_eq!(code(&o), 6, "{err}");
        assert!(
            err.contains("no usable key slot") && err.contains(&slot),
            "{err}"
        );
    }
}

mod agents {
    use super::support::*;

    /// Declaring an agent compromised: `key remove` lists what becomes unreadable and
    /// needs --yes; the agent's next backup fails before writing anything; its objects are
    /// reported apart from damage and `check` stays green.
    #[test]
    fn a_compromised_agent_is_refused_and_check_stays_green() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let root_snap = a.backup_stdin("root.dump", &arsip_testkit::sample_data(150_000, 1));
            let (file, id) = a.add_agent(tmp.path(), &format!("db-{name}"));
            let agent = a.as_agent(&file);
            let s1 = agent.backup_stdin("db.dump", &arsip_testkit::sample_data(150_000, 2));
            let s2 = agent.backup_stdin("db.dump", &arsip_testkit::sample_data(150_000, 3));

            // An agent is not a key slot.
            let o = a.run(&["key", "remove", &id]);
            assert_eq!(code(&o), 2, "{name}: {}", stderr(&o));
            assert!(stderr(&o).contains("key retire"), "{name}: {}", stderr(&o));

            // Without --yes (and no terminal): refused, after saying what would be lost.
            let o = a.run(&["key", "remove", "--compromised", &id]);
            let err = stderr(&o);
            assert_eq!(code(&o), 8, "{name}: {err}");
            assert!(err.contains("2 snapshot(s)"), "{name}: {err}");
            for s in [&s1, &s2] {
                assert!(err.contains(&s[..8]), "{name}: {s} not listed: {err}");
            }
            assert!(!err.contains(&root_snap[..8]), "{name}: {err}");
            assert_eq!(a.snapshot_ids().len(), 3, "{name}: nothing changed");

            let v = a.json(&["key", "remove", "--compromised", "--yes", &id]);
            assert_eq!(v["unreadable"].as_array().unwrap().len(), 2, "{name}: {v}");
            let list = a.json(&["key", "list"]);
            assert_eq!(list["agents"][0]["standing"]["state"], "compromised");

            // The agent's next backup fails, and writes nothing.
            let before = a.objects("");
            let o = agent.run_stdin(
                &["backup", "stdin", "--name", "db.dump"],
                &arsip_testkit::sample_data(150_000, 4),
            );
            let err = stderr(&o);
            assert_eq!(code(&o), 8, "{name}: {err}");
            assert!(
                err.contains("compromised") && err.contains("nothing was backed up"),
                "{name}: {err}"
            );
            assert_eq!(
                a.objects(""),
                before,
                "{name}: a refused agent wrote objects"
            );

            // Listing: only the root snapshot; exit 0 with a note, not damage.
            let o = a.run(&["snapshots", "--json"]);
            assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
            let listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(listed.as_array().unwrap().len(), 1, "{name}: {listed}");
            assert!(stderr(&o).contains("not listed"), "{name}: {}", stderr(&o));

            // check: revoked objects apart, no problems, exit 0.
            let o = a.run(&["check"]);
            assert_eq!(
                code(&o),
                0,
                "{name}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                out.contains("REVOKED") && !out.contains("DAMAGED"),
                "{name}: {out}"
            );
            let report = a.json(&["check", "--read-data"]);
            assert!(
                report["problems"].as_array().unwrap().is_empty(),
                "{name}: {report}"
            );
            let revoked = report["revoked"].as_array().unwrap();
            assert!(
                revoked
                    .iter()
                    .any(|r| r["object"] == format!("snapshots/{s1}")),
                "{name}: {report}"
            );
            assert!(revoked
                .iter()
                .any(|r| r["object"].as_str().unwrap().starts_with("index/")));

            // Restoring one of its snapshots by id: refused as revoked, not "not found".
            let o = a.run(&["restore", &s1[..12], "--stdout"]);
            assert_eq!(code(&o), 8, "{name}: {}", stderr(&o));
            assert!(stderr(&o).contains("compromised"), "{name}: {}", stderr(&o));
            // The root snapshot is untouched.
            let o = a.run(&["restore", &root_snap, "--stdout"]);
            assert!(o.status.success() && o.stdout == arsip_testkit::sample_data(150_000, 1));
        }
    }

    /// Retiring an agent keeps what the store accepted before the cut-off, refuses the
    /// agent's next backup, and refuses an object of it the store accepted after the
    /// cut-off (here: one of its old manifests stored again, as a stale or malicious agent
    /// process could do), whatever time the agent claims.
    #[test]
    fn a_retired_agent_keeps_its_past_and_loses_its_future() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let (file, id) = a.add_agent(tmp.path(), &format!("db-{name}"));
            let agent = a.as_agent(&file);
            let data = arsip_testkit::sample_data(150_000, 2);
            let s1 = agent.backup_stdin("db.dump", &data);
            let s2 = agent.backup_stdin("other.dump", &arsip_testkit::sample_data(90_000, 5));
            let manifest = a.get(&format!("snapshots/{s2}"));
            a.delete(&format!("snapshots/{s2}"));
            // Store times have one-second resolution on S3.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let v = a.json(&["key", "retire", &id]);
            assert_eq!(v["agent"]["standing"]["state"], "retired", "{name}: {v}");
            std::thread::sleep(std::time::Duration::from_millis(1100));
            a.put(&format!("snapshots/{s2}"), &manifest);

            let o = agent.run_stdin(&["backup", "stdin", "--name", "db.dump"], &data);
            assert_eq!(code(&o), 8, "{name}: {}", stderr(&o));
            assert!(stderr(&o).contains("retired"), "{name}: {}", stderr(&o));

            let ids = a.snapshot_ids();
            assert_eq!(ids, vec![s1.clone()], "{name}");
            let o = a.run(&["restore", &s1, "--stdout"]);
            assert!(
                o.status.success() && o.stdout == data,
                "{name}: {}",
                stderr(&o)
            );
            let o = a.run(&["restore", &s2, "--stdout"]);
            assert_eq!(code(&o), 8, "{name}: {}", stderr(&o));
            assert!(stderr(&o).contains("cut-off"), "{name}: {}", stderr(&o));
            let report = a.json(&["check", "--read-data"]);
            assert!(
                report["problems"].as_array().unwrap().is_empty(),
                "{name}: {report}"
            );
            assert_eq!(
                report["revoked"].as_array().unwrap().len(),
                1,
                "{name}: {report}"
            );
        }
    }
}

mod repair {
    use super::support::*;

    fn streams() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("a.dump", arsip_testkit::sample_data(400_000, 11)),
            ("b.dump", arsip_testkit::sample_data(250_000, 12)),
            // Shares most chunks with a.dump.
            ("a.dump", {
                let mut v = arsip_testkit::sample_data(400_000, 11);
                v.extend(arsip_testkit::sample_data(60_000, 13));
                v
            }),
        ]
    }

    /// Every index object deleted: `check` says which snapshots lost what and which
    /// unindexed packs hold it; `repair index` rebuilds the entries (create-only); then
    /// every snapshot restores byte for byte and `check --read-data` is clean.
    #[test]
    fn repair_index_rebuilds_deleted_indexes() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let src = tmp.path().join(format!("files-{name}"));
            std::fs::create_dir_all(src.join("d")).unwrap();
            std::fs::write(src.join("d/x.bin"), arsip_testkit::sample_data(120_000, 14)).unwrap();
            std::fs::write(src.join("y.txt"), b"hello").unwrap();
            let files = a.json(&["backup", "files", src.to_str().unwrap()]);
            let files_id = files["id"].as_str().unwrap().to_string();
            let ids: Vec<(String, Vec<u8>)> = streams()
                .into_iter()
                .map(|(n, d)| (a.backup_stdin(n, &d), d))
                .collect();
            let indexes = a.objects("index/");
            assert!(!indexes.is_empty());
            for i in &indexes {
                a.delete(i);
            }
            let packs = a.objects("data/");

            let o = a.run(&["check", "--json"]);
            assert_eq!(code(&o), 6, "{name}: {}", stderr(&o));
            let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(
                report["affected_snapshots"].as_array().unwrap().len(),
                4,
                "{name}: {report}"
            );
            let u = &report["unindexed"];
            assert_eq!(
                u["packs"].as_u64().unwrap() as usize,
                packs.len(),
                "{name}: {u}"
            );
            assert!(
                u["chunks_snapshots_need"].as_u64().unwrap() > 0,
                "{name}: {u}"
            );
            assert!(u["raw_bytes"].as_u64().unwrap() > 700_000, "{name}: {u}");
            let o = a.run(&["check"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
            assert!(text.contains("repair index"), "{name}: {text}");
            assert!(!text.contains("harmless"), "{name}: {text}");

            let r = a.json(&["repair", "index"]);
            assert_eq!(
                r["packs_indexed"].as_u64().unwrap() as usize,
                packs.len(),
                "{r}"
            );
            assert!(r["problems"].as_array().unwrap().is_empty(), "{name}: {r}");
            // Create-only: the packs are all still there, new indexes were added.
            assert_eq!(a.objects("data/"), packs, "{name}");
            assert!(!a.objects("index/").is_empty());

            let report = a.json(&["check", "--read-data"]);
            assert!(
                report["problems"].as_array().unwrap().is_empty(),
                "{name}: {report}"
            );
            assert!(report["affected_snapshots"].as_array().unwrap().is_empty());
            assert_eq!(report["unindexed"]["packs"], 0, "{name}: {report}");
            for (id, data) in &ids {
                let o = a.run(&["restore", id, "--stdout"]);
                assert!(o.status.success(), "{name}: {}", stderr(&o));
                assert!(o.stdout == *data, "{name}: snapshot {id} differs");
            }
            let target = tmp.path().join(format!("restored-{name}"));
            a.ok(&["restore", &files_id, "--to", target.to_str().unwrap()]);
            let back = target.join(src.strip_prefix("/").unwrap());
            assert_eq!(
                std::fs::read(back.join("d/x.bin")).unwrap(),
                arsip_testkit::sample_data(120_000, 14)
            );
            assert_eq!(std::fs::read(back.join("y.txt")).unwrap(), b"hello");
            // Nothing left to do: a second repair writes nothing.
            let again = a.json(&["repair", "index"]);
            assert_eq!(again["packs_unindexed"], 0, "{name}: {again}");
            assert!(again["indexes_written"].as_array().unwrap().is_empty());
        }
    }

    /// Packs no index names and no snapshot needs (an interrupted backup): check says what
    /// they hold, exits 0, and does not call them harmless.
    #[test]
    fn unindexed_packs_no_snapshot_needs_are_described() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path());
        a.init();
        let id = a.backup_stdin("x.dump", &arsip_testkit::sample_data(300_000, 21));
        a.delete(&format!("snapshots/{id}"));
        for i in a.objects("index/") {
            a.delete(&i);
        }
        let o = a.run(&["check"]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
        assert!(
            out.contains("UNINDEXED") && out.contains("no snapshot needs them"),
            "{out}"
        );
        assert!(!out.contains("harmless"), "{out}");
        let report = a.json(&["check"]);
        assert!(report["unindexed"]["chunks_not_indexed"].as_u64().unwrap() > 5);
        assert_eq!(report["unindexed"]["chunks_snapshots_need"], 0);
    }
}

mod cache {
    use super::support::*;

    /// A cache directory that cannot be used (a regular file, a path below a file, a path
    /// under /proc) while the index spills (tiny ARSIP_INDEX_MEMORY): local I/O (exit 5)
    /// naming the path, never "DAMAGED" snapshots.
    #[test]
    fn an_unusable_cache_directory_is_local_io_not_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(tmp.path());
        a.init();
        let data = arsip_testkit::sample_data(1_500_000, 31);
        a.backup_stdin("big.dump", &data);
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let bad = [
            file.clone(),
            file.join("below"),
            std::path::PathBuf::from("/proc/arsip-no-such-cache"),
        ];
        for dir in bad {
            let b = a
                .with_env("ARSIP_CACHE_DIR", dir.to_str().unwrap())
                .with_env("ARSIP_INDEX_MEMORY", "1K");
            for args in [
                &["check", "--read-data"][..],
                &["check"],
                &["restore", "latest", "--stdout"],
            ] {
                let o = b.run(args);
                let err = stderr(&o);
                let out = String::from_utf8_lossy(&o.stdout).into_owned();
                assert_eq!(code(&o), 5, "{dir:?} {args:?}: {out}{err}");
                assert!(
                    err.contains(dir.to_str().unwrap()),
                    "{dir:?} {args:?}: {err}"
                );
                assert!(
                    !out.contains("DAMAGED") && !err.contains("damaged"),
                    "{out}{err}"
                );
            }
        }
        // The same spill in a usable directory works.
        let o = a
            .with_env("ARSIP_INDEX_MEMORY", "1K")
            .run(&["restore", "latest", "--stdout"]);
        assert!(o.status.success() && o.stdout == data, "{}", stderr(&o));
    }
}

mod time {
    use super::support::*;

    /// A real agent claims 2099 for its snapshot of a source the root writer owns:
    /// `restore latest` keeps restoring the owner's snapshot and says what it passed over;
    /// `--writer` selects the agent's explicitly; `snapshots` shows the writer; where the
    /// store reports its time, the listed effective time is bounded by it.
    #[test]
    fn a_forged_future_snapshot_does_not_become_latest() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let mine = arsip_testkit::sample_data(120_000, 41);
            let forged = arsip_testkit::sample_data(120_000, 42);
            let root_id = a.backup_stdin("db.dump", &mine);
            let label = format!("db-{name}");
            let (file, agent_id) = a.add_agent(tmp.path(), &label);
            let agent = a
                .as_agent(&file)
                .with_env("ARSIP_TEST_NOW", "2099-01-01T00:00:00Z");
            let forged_id = agent.backup_stdin("db.dump", &forged);

            let o = a.run(&["restore", "latest", "--stdout"]);
            assert!(o.status.success(), "{name}: {}", stderr(&o));
            assert!(
                o.stdout == mine,
                "{name}: latest restored the forged snapshot"
            );
            let err = stderr(&o);
            assert!(
                err.contains("warning") && err.contains(&forged_id[..8]) && err.contains(&label),
                "{name}: {err}"
            );
            let o = a.run(&["restore", "latest", "--stdout", "--source", "db.dump"]);
            assert!(o.stdout == mine, "{name}");

            // Explicitly: by writer label, by writer id prefix, by id.
            for w in [label.as_str(), &agent_id[..10]] {
                let o = a.run(&["restore", "latest", "--stdout", "--writer", w]);
                assert!(o.status.success() && o.stdout == forged, "{name}: {w}");
            }
            let o = a.run(&["restore", &forged_id, "--stdout"]);
            assert!(o.status.success() && o.stdout == forged, "{name}");

            let rows = a.json(&["snapshots"]);
            let rows = rows.as_array().unwrap();
            assert_eq!(rows.len(), 2);
            let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
            assert_eq!(row(&root_id)["writer_label"], "root", "{name}");
            assert_eq!(row(&forged_id)["writer_label"], label.as_str(), "{name}");
            if row(&forged_id).get("stored").is_some() {
                let eff = row(&forged_id)["effective_time"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert!(
                    !eff.starts_with("2099"),
                    "{name}: the store's time bounds it: {eff}"
                );
            }
            let only_root = a.json(&["snapshots", "--writer", "root"]);
            assert_eq!(only_root.as_array().unwrap().len(), 1, "{name}");
            let none = a.json(&["snapshots", "--host", "no-such-host"]);
            assert!(none.as_array().unwrap().is_empty(), "{name}");
            let o = a.run(&["snapshots"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                text.contains("writer") && text.contains(&label),
                "{name}: {text}"
            );
        }
    }
}

mod copy {
    use super::support::*;
    use std::path::Path;

    /// `a` with `d`'s S3 settings (if any) as the `ARSIP_TO_` variables of `copy --to`, as
    /// an operator would give a bucket in another region.
    fn towards(a: &Arsip, d: &Arsip) -> Arsip {
        let mut a = a.clone();
        for (k, v) in &d.env {
            if let Some(rest) = k.strip_prefix("ARSIP_S3_") {
                a = a.with_env(&format!("ARSIP_TO_S3_{rest}"), v);
            } else if k.starts_with("AWS_") {
                a = a.with_env(&format!("ARSIP_TO_{k}"), v);
            }
        }
        a
    }

    fn copy(a: &Arsip, d: &Arsip, extra: &[&str]) -> std::process::Output {
        let a = towards(a, d);
        let mut args = vec!["--json", "copy", "--to", d.repo.as_str()];
        args.extend(extra);
        a.run(&args)
    }

    fn ok(o: &std::process::Output) -> serde_json::Value {
        assert!(o.status.success(), "copy: {}", stderr(o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The destination of `a`: the other kind of store (a local repository copies to the
    /// S3 server and the other way round), opened with the same password.
    fn destination(name: &str, dir: &Path) -> Arsip {
        match name {
            "local" => Arsip::s3(&dir.join("copy")),
            _ => Arsip::local(&dir.join("copy")),
        }
    }

    #[test]
    fn a_copy_opens_with_the_same_keys_restores_and_checks_clean() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, a) in Arsip::both(tmp.path()) {
            a.init();
            let (file, id) = a.add_agent(tmp.path(), &format!("db-{name}"));
            let agent = a.as_agent(&file);
            let db = arsip_testkit::sample_data(300_000, 21);
            let s1 = agent.backup_stdin("db.dump", &db);
            let s2 = a.backup_stdin("etc.tar", &arsip_testkit::sample_data(120_000, 22));
            // Retired after its backup: on the copy too, what it wrote before counts.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            a.ok(&["key", "retire", &id]);
            let d = destination(name, &tmp.path().join(name));
            let before = ok(&copy(&a, &d, &["--dry-run"]));
            assert_eq!(before["dry_run"], true);
            assert_eq!(before["missing_manifests"], 2, "{name}: {before}");
            assert!(
                d.run(&["snapshots"]).status.code() != Some(0),
                "{name}: a dry run writes nothing"
            );
            let done = ok(&copy(&a, &d, &[]));
            assert_eq!(done["copied"], before["copied"], "{name}: {done}");
            assert!(
                done["damaged"].as_array().unwrap().is_empty(),
                "{name}: {done}"
            );
            let mut ids = d.snapshot_ids();
            ids.sort();
            let mut want = vec![s1.clone(), s2.clone()];
            want.sort();
            assert_eq!(ids, want, "{name}: the retired agent's past is on the copy");
            let o = d.run(&["restore", &s1, "--stdout"]);
            assert!(
                o.status.success() && o.stdout == db,
                "{name}: {}",
                stderr(&o)
            );
            let report = d.json(&["check", "--read-data"]);
            assert_eq!(
                report["problems"].as_array().unwrap().len(),
                0,
                "{name}: {report}"
            );
            // The agent stays retired on the copy.
            let o = agent
                .with_env("ARSIP_REPO", &d.repo)
                .run_stdin(&["backup", "stdin", "--name", "db.dump"], &db);
            assert!(
                !o.status.success(),
                "{name}: a retired agent backs up to the copy"
            );
            // Again: nothing to do.
            let again = ok(&copy(&a, &d, &[]));
            assert_eq!(again["copied"], 0, "{name}: {again}");
            assert_eq!(
                again["lag_seconds"],
                serde_json::Value::Null,
                "{name}: {again}"
            );
        }
    }

    #[test]
    fn damage_at_the_source_is_reported_and_not_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(&tmp.path().join("a"));
        a.init();
        a.backup_stdin("db.dump", &arsip_testkit::sample_data(200_000, 31));
        let pack = a.objects("data/").into_iter().next().unwrap();
        let mut bytes = a.get(&pack);
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        a.put(&pack, &bytes);
        let d = Arsip::local(&tmp.path().join("copy"));
        let o = copy(&a, &d, &[]);
        assert_eq!(code(&o), 6, "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["damaged"][0], pack.as_str(), "{v}");
        assert!(!d.local_root.as_ref().unwrap().join(&pack).exists());
        // Another repository at the destination is refused before anything is written.
        let other = Arsip::local(&tmp.path().join("other"));
        other.init();
        let o = copy(&a, &other, &[]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("another repository"), "{}", stderr(&o));
        assert!(other.objects("data/").is_empty());
    }

    /// Killed at random moments: whatever the copy holds then opens and checks clean (or
    /// is not a repository yet), and the next run completes it.
    #[test]
    fn a_copy_killed_midway_is_consistent_and_completes() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::local(&tmp.path().join("a"));
        a.init();
        let mut want = Vec::new();
        for i in 0..6 {
            want.push(a.backup_stdin(
                &format!("db{i}.dump"),
                &arsip_testkit::sample_data(3_000_000, 40 + i),
            ));
        }
        want.sort();
        let d = Arsip::s3(&tmp.path().join("copy"));
        for delay in [150, 400, 900] {
            let mut child = towards(&a, &d)
                .cmd(&["copy", "--to", d.repo.as_str()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay));
            let _ = child.kill();
            let _ = child.wait();
            let o = d.run(&["--json", "check"]);
            if o.status.code() != Some(3) {
                // 3: not a repository yet (the config goes after the keys and writers).
                let v: serde_json::Value = serde_json::from_slice(&o.stdout)
                    .unwrap_or_else(|_| panic!("check after {delay} ms: {}", stderr(&o)));
                assert_eq!(
                    v["problems"].as_array().unwrap().len(),
                    0,
                    "after {delay} ms: {v}"
                );
            }
        }
        ok(&copy(&a, &d, &[]));
        let mut ids = d.snapshot_ids();
        ids.sort();
        assert_eq!(ids, want);
        let report = d.json(&["check", "--read-data"]);
        assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    }

    /// The repository's server stopped (its endpoint refuses connections): listings,
    /// restores and `wal fetch` given `--repo-fallback` read the copy, and say so; without it
    /// they fail as before (exit 5). Each command waits for the store's retries first
    /// (about 20 s each here).
    #[test]
    fn with_the_repository_unreachable_restores_and_wal_fetch_read_the_copy() {
        use arsip_pg::cluster::{Cluster, ClusterOptions};
        let tmp = tempfile::tempdir().unwrap();
        let a = Arsip::s3(&tmp.path().join("a"));
        a.init();
        let data = arsip_testkit::sample_data(250_000, 51);
        let id = a.backup_stdin("db.dump", &data);
        // WAL: the first segment of a cluster (initdb; the server need not run).
        let cluster = Cluster::init(&ClusterOptions {
            settings: arsip_pg::PgSettings::from_vars(std::env::vars_os()),
            ..Default::default()
        })
        .unwrap();
        let pgdata = cluster.data.to_str().unwrap().to_string();
        let seg = "000000010000000000000001";
        let segment = std::fs::read(cluster.data.join("pg_wal").join(seg)).unwrap();
        a.ok(&["wal", "push", &format!("pg_wal/{seg}"), "--pgdata", &pgdata]);
        let b = Arsip::local(&tmp.path().join("b"));
        ok(&copy(&a, &b, &[]));
        let down = a.with_env("ARSIP_S3_ENDPOINT", "http://127.0.0.1:9");
        let o = down.run(&["snapshots"]);
        assert_eq!(code(&o), 5, "{}", stderr(&o));
        let via = down.with_env("ARSIP_REPO_FALLBACK", &b.repo);
        let o = via.run(&["--json", "snapshots"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(&id));
        assert!(stderr(&o).contains("reading its copy"), "{}", stderr(&o));
        let o = via.run(&["restore", &id, "--stdout"]);
        assert!(o.status.success() && o.stdout == data, "{}", stderr(&o));
        let dest = tmp.path().join("fetched");
        let fetch = |who: &Arsip| {
            let args = [
                "wal",
                "fetch",
                seg,
                dest.to_str().unwrap(),
                "--pgdata",
                &pgdata,
            ];
            who.run(&[&args[..], &["--prefetch", "0"]].concat())
        };
        let o = fetch(&via);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read(&dest).unwrap(), segment);
        // Reachable but missing the segment (lost there): the copy has it.
        let ns = a.objects("wal/");
        assert_eq!(ns.len(), 1, "{ns:?}");
        a.delete(&ns[0]);
        std::fs::remove_file(&dest).unwrap();
        let o = fetch(&a);
        assert_eq!(code(&o), 1, "missing without the copy: {}", stderr(&o));
        let o = fetch(&a.with_env("ARSIP_REPO_FALLBACK", &b.repo));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read(&dest).unwrap(), segment);
    }
}

//! The harness the end-to-end test files share (`mod common;` in each, so every test file
//! stays one binary): the `Arsip` runner, a repository plus the environment to reach it, on
//! a local directory or the S3 test server. What only one file needs stays in its own
//! `support` module (as more `impl Arsip` blocks).

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const EXE: &str = env!("CARGO_BIN_EXE_arsip");

/// One repository and the environment to reach it.
#[derive(Clone)]
pub struct Arsip {
    pub repo: String,
    pub env: Vec<(String, String)>,
    pub local_root: Option<PathBuf>,
    /// Bucket and prefix on the S3 test server.
    pub s3: Option<(String, String)>,
}

impl Arsip {
    pub fn local(dir: &Path) -> Arsip {
        let root = dir.join("repo");
        Arsip {
            repo: root.display().to_string(),
            env: base_env(dir),
            local_root: Some(root),
            s3: None,
        }
    }

    pub fn s3(dir: &Path) -> Arsip {
        let s3 = arsip_testkit::s3();
        let mut env = base_env(dir);
        env.extend(s3.env().into_iter().map(|(k, v)| (k.to_string(), v)));
        let bucket = s3.bucket();
        Arsip {
            repo: format!("s3://{bucket}/backups/prod"),
            env,
            local_root: None,
            s3: Some((bucket, "backups/prod".into())),
        }
    }

    pub fn both(dir: &Path) -> Vec<(&'static str, Arsip)> {
        vec![
            ("local", Arsip::local(&dir.join("l"))),
            ("s3", Arsip::s3(&dir.join("s"))),
        ]
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.args(args)
            .env_clear()
            .env("ARSIP_REPO", &self.repo)
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let t = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        t.join().unwrap();
        out
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "arsip {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// `init` with small packs and chunks (so that little data makes many objects).
    pub fn init_sized(&self, pack: &str, [min, avg, max]: [&str; 3]) {
        self.ok(&[
            "init",
            "--pack-size",
            pack,
            "--chunk-min",
            min,
            "--chunk-avg",
            avg,
            "--chunk-max",
            max,
        ]);
    }

    pub fn with_env(&self, k: &str, v: &str) -> Arsip {
        let mut a = self.clone();
        a.env.retain(|(key, _)| key != k);
        a.env.push((k.into(), v.into()));
        a
    }

    /// The ids of the snapshots readers accept, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.json(&["snapshots"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn without_env(&self, k: &str) -> Arsip {
        let mut a = self.clone();
        a.env.retain(|(key, _)| key != k);
        a
    }
}

fn base_env(dir: &Path) -> Vec<(String, String)> {
    std::fs::create_dir_all(dir).unwrap();
    let pw = dir.join("password");
    std::fs::write(&pw, "correct horse battery staple\n").unwrap();
    vec![
        ("ARSIP_PASSWORD_FILE".into(), pw.display().to_string()),
        ("ARSIP_TEST_WEAK_KDF".into(), "1".into()),
        (
            "ARSIP_CACHE_DIR".into(),
            dir.join("cache").display().to_string(),
        ),
        ("HOME".into(), dir.display().to_string()),
    ]
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

//! The files backup through the binary (as root, as CI runs): a partial snapshot exits 9
//! (the backup run as `nobody`, for whom files are unreadable), `backup files /` restores,
//! the repository inside the backed-up tree is left out, `backup command` commits only after
//! exit 0, and bad stream names are usage errors before the repository is opened.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{code, stderr, Arsip};

/// A local repository under `dir` (canonical), initialised; its directory, repository and
/// cache paths.
fn env(dir: &Path) -> (Arsip, PathBuf) {
    let dir = std::fs::canonicalize(dir).unwrap();
    let a = Arsip::local(&dir);
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    a.ok(&["init"]);
    (a, dir)
}

fn snapshots(a: &Arsip) -> Vec<serde_json::Value> {
    a.json(&["snapshots"]).as_array().unwrap().clone()
}

fn chown_r(p: &Path) {
    std::os::unix::fs::lchown(p, Some(65534), Some(65534)).unwrap();
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_r(&e.unwrap().path());
        }
    }
}

/// Run as `nobody`, a backup meets an unreadable file and an unlistable directory: both
/// named on stderr, the snapshot committed with `partial: true`, exit 9.
#[test]
fn partial_snapshot_exits_9_and_names_each_path() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (e, dir) = env(d.path());
    let t = dir.join("t");
    std::fs::create_dir_all(t.join("closed")).unwrap();
    std::fs::write(t.join("ok"), b"readable").unwrap();
    std::fs::write(t.join("secret"), b"root only").unwrap();
    std::fs::set_permissions(t.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(t.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    chown_r(e.local_root.as_ref().unwrap());
    chown_r(&dir.join("cache"));
    chown_r(&dir.join("password"));
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
    let inner = e.cmd(&["backup", "files", t.to_str().unwrap()]);
    c.arg(inner.get_program())
        .args(inner.get_args())
        .env_clear();
    for (k, v) in inner.get_envs() {
        c.env(k, v.unwrap());
    }
    let out = c.stdin(Stdio::null()).output().unwrap();
    assert_eq!(code(&out), 9, "{}", stderr(&out));
    let err = stderr(&out);
    for p in ["secret", "closed"] {
        assert!(
            err.contains(&format!("arsip: warning: {}:", t.join(p).display())),
            "{err}"
        );
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("PARTIAL"));
    let snaps = snapshots(&e);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["facts"]["partial"], true);
    assert_eq!(snaps[0]["facts"]["problems"].as_array().unwrap().len(), 2);
}

/// `backup files /` (all top-level entries but the test's own excluded) restores; the local
/// repository inside the backed-up tree is left out; a complete backup exits 0.
#[test]
fn backup_of_slash_restores_and_leaves_the_repository_out() {
    let d = tempfile::Builder::new()
        .prefix(".arsip-cli-slash-")
        .tempdir_in("/")
        .unwrap();
    let (e, dir) = env(d.path());
    std::fs::create_dir_all(dir.join("data/sub")).unwrap();
    std::fs::write(dir.join("data/sub/f"), b"file").unwrap();
    let top = dir.file_name().unwrap().to_str().unwrap().to_string();
    let mut args = vec!["backup".to_string(), "files".into(), "/".into()];
    for entry in std::fs::read_dir("/").unwrap() {
        let n = entry.unwrap().file_name().to_string_lossy().into_owned();
        if n != top {
            args.push(format!("--exclude=/{n}"));
        }
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = e.run(&a);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let to = dir.join("restored");
    let out = e.run(&["restore", "latest", "--to", to.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let r = to.join(&top);
    assert_eq!(std::fs::read(r.join("data/sub/f")).unwrap(), b"file");
    assert!(r.join("password").exists());
    assert!(!r.join("repo").exists(), "the repository was backed up");
    assert!(!r.join("cache").exists(), "the cache was backed up");
}

/// `backup command` commits after exit 0 (facts: argv[0] and the status); a failure exits 1,
/// names the status and stderr, commits nothing; a bad `--name` exits 2.
#[test]
fn backup_command_commits_only_after_exit_0() {
    let d = tempfile::tempdir().unwrap();
    let (e, _dir) = env(d.path());
    let out = e.run(&[
        "backup",
        "command",
        "--name",
        "app.dump",
        "--",
        "sh",
        "-c",
        "echo dump-bytes",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = e.run(&[
        "backup",
        "command",
        "--name",
        "app.dump",
        "--",
        "sh",
        "-c",
        "echo half; echo boom >&2; exit 3",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exit status: 3") && stderr(&out).contains("boom"),
        "{}",
        stderr(&out)
    );
    let out = e.run(&[
        "backup",
        "command",
        "--name",
        "app.dump",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let snaps = snapshots(&e);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["kind"], "command");
    assert_eq!(snaps[0]["facts"]["command"], "sh");
    assert_eq!(snaps[0]["facts"]["exit_status"], 0);
    let out = e.run(&["restore", "latest", "--stdout"]);
    assert_eq!(out.stdout, b"dump-bytes\n");
    for bad in ["", "/etc/x", "../x", "a/../b", "a//b", "a/"] {
        for sub in [
            &["stdin", "--name", bad][..],
            &["command", "--name", bad, "--", "true"][..],
        ] {
            let mut args = vec!["backup"];
            args.extend_from_slice(sub);
            let out = e
                .cmd(&args)
                .env("ARSIP_REPO", "/nonexistent/repo")
                .output()
                .unwrap();
            assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("stream name"), "{}", stderr(&out));
        }
    }
}

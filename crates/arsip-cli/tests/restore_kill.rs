//! `kill -9` during `arsip restore --to`: whatever the moment, every file under a final name
//! is complete, a backup of the half-restored directory takes nothing else for data, a
//! second restore into it is refused (naming what exists) and `--overwrite` completes it.
//! The assertions hold whenever the kill lands, so the test does not depend on speed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::Arsip;

/// Regular files below `root` by path relative to it, with their bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.map(|e| e.unwrap().path()));
            }
        } else if m.is_file() {
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
    out
}

fn under(root: &Path, abs: &Path) -> PathBuf {
    root.join(abs.strip_prefix("/").unwrap())
}

#[test]
fn kill_9_during_restore_leaves_only_complete_files() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let a = Arsip::local(&base);
    a.ok(&[
        "init",
        "--chunk-min",
        "16K",
        "--chunk-avg",
        "64K",
        "--chunk-max",
        "256K",
    ]);
    let src = base.join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..16u64 {
        let data = arsip_testkit::sample_data(600_000 + i as usize * 1000, i);
        std::fs::write(src.join(format!("d/f{i:02}")), data).unwrap();
        std::fs::write(src.join(format!("s{i:02}")), format!("small {i}")).unwrap();
    }
    let out: serde_json::Value =
        serde_json::from_str(&a.ok(&["backup", "files", src.to_str().unwrap(), "--json"])).unwrap();
    let first = out["id"]
        .as_str()
        .expect("backup --json names the snapshot")
        .to_string();
    let want = files(&src);

    for round in 0..2usize {
        let target = base.join(format!("t{round}"));
        let mut child = a
            .cmd(&["restore", &first, "--to", target.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill once a few files are in place (or when it has finished by itself).
        loop {
            if child.try_wait().unwrap().is_some() || files(&target).len() > round * 6 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let restored = under(&target, &src);

        // Every regular file anywhere in the target is a complete file of the snapshot.
        let got = files(&target);
        assert!(!got.is_empty(), "round {round}: nothing was restored");
        eprintln!(
            "round {round}: killed with {} of {} files in place",
            got.len(),
            want.len()
        );
        for (p, data) in &got {
            let rel = target.join(p);
            let rel = rel.strip_prefix(&restored).unwrap_or_else(|_| {
                panic!("round {round}: {} is not a snapshot file", p.display())
            });
            assert_eq!(
                want.get(rel),
                Some(data),
                "round {round}: {} is incomplete or foreign",
                p.display()
            );
        }

        // A backup of the half-restored directory holds only those complete files.
        a.ok(&["backup", "files", target.to_str().unwrap()]);
        let copy = base.join(format!("copy{round}"));
        a.ok(&["restore", "latest", "--to", copy.to_str().unwrap()]);
        let copied = files(&under(&copy, &target));
        assert_eq!(copied, got, "round {round}: the backup took something else");

        // A second restore into it is refused, naming what exists, and changes nothing.
        let again = a.run(&["restore", &first, "--to", target.to_str().unwrap()]);
        assert_eq!(again.status.code(), Some(8), "round {round}: {again:?}");
        let err = String::from_utf8_lossy(&again.stderr);
        assert!(
            err.contains("already exist") && err.contains("overwrite"),
            "{err}"
        );
        assert_eq!(
            files(&target),
            got,
            "round {round}: a refused restore wrote"
        );

        // With --overwrite it completes.
        a.ok(&[
            "restore",
            &first,
            "--to",
            target.to_str().unwrap(),
            "--overwrite",
        ]);
        assert_eq!(files(&restored), want, "round {round}");
        assert_eq!(files(&target).len(), want.len(), "round {round}");
    }
}

/// A full disk during a restore: exit 5 (storage), the real error naming the file, and no
/// file under its final name that is incomplete.
#[test]
fn full_disk_during_restore_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let a = Arsip::local(&base);
    a.ok(&["init"]);
    let src = base.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4u64 {
        let data = arsip_testkit::sample_data(900_000, i);
        std::fs::write(src.join(format!("f{i}")), data).unwrap();
    }
    a.ok(&["backup", "files", src.to_str().unwrap()]);
    let target = base.join("small");
    std::fs::create_dir_all(&target).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs (the tests run as root)");
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Umount(&target);
    let out = a.run(&["restore", "latest", "--to", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&under(&target, &src).join("f").display().to_string()),
        "the error names the file: {err}"
    );
    let want = files(&src);
    for (p, data) in files(&under(&target, &src)) {
        assert_eq!(want.get(&p), Some(&data), "{} is incomplete", p.display());
    }
}

//! Maintenance end to end, through the `arsip` binary against the real S3-protocol server
//! (moto) and a local directory: forget and prune while a password writer and two agents
//! back up from other processes; a writer stopped (SIGSTOP) past its session's lifetime,
//! fenced by prune and refused when it resumes; prune killed at random moments; every
//! retained snapshot restored byte for byte afterwards; the audit trail of all of it.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{code, stderr, Arsip};

fn data(seed: u64, len: usize) -> Vec<u8> {
    // xorshift: deterministic, incompressible enough.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn restore_bytes(a: &Arsip, id: &str) -> Vec<u8> {
    let out = a.run(&["restore", id, "--stdout"]);
    assert!(out.status.success(), "restore {id}: {}", stderr(&out));
    out.stdout
}

/// A backup of `input` as stream `name` that is still running: its stdin stays open until
/// [`finish`].
fn start_stream(a: &Arsip, name: &str, input: &[u8]) -> Child {
    let mut child = a
        .cmd(&["backup", "stdin", "--name", name, "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    child
}

fn finish(mut child: Child) -> std::process::Output {
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, sig).unwrap();
}

fn setup(dir: &Path, s3: bool) -> (Arsip, Arsip, Arsip) {
    let a = if s3 {
        Arsip::s3(dir)
    } else {
        Arsip::local(dir)
    };
    let a = a.with_env("ARSIP_TEST_SESSION_TTL", "2");
    a.init_sized("1M", ["64K", "256K", "1M"]);
    let agent = |n: &str| {
        let f = dir.join(format!("{n}.agent"));
        a.ok(&[
            "key",
            "add",
            "--agent",
            "--label",
            n,
            "--out",
            f.to_str().unwrap(),
        ]);
        a.without_env("ARSIP_PASSWORD_FILE")
            .with_env("ARSIP_KEY_FILE", f.to_str().unwrap())
    };
    let (one, two) = (agent("db1"), agent("db2"));
    (a, one, two)
}

/// A month of churn in miniature: three writers back up while forget and prune run, more
/// than once (as two commands and as `forget --prune`); afterwards every retained snapshot restores exactly and `check --read-data`
/// is clean.
#[test]
fn prune_beside_a_password_writer_and_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let (root, one, two) = setup(dir.path(), true);
    let mut expected: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let shared = data(1, 1 << 20);
    for round in 0..3u64 {
        // Each writer's stream shares a part with the others and with its own past.
        let inputs: Vec<Vec<u8>> = (0..3)
            .map(|w| [shared.clone(), data(100 * round + w, 1 << 20)].concat())
            .collect();
        let running: Vec<(Child, Vec<u8>)> = [&root, &one, &two]
            .iter()
            .zip(&inputs)
            .enumerate()
            .map(|(w, (a, input))| {
                (
                    start_stream(a, &format!("db{w}.dump"), input),
                    input.clone(),
                )
            })
            .collect();
        // Forget all but the newest per source, and prune, while they run.
        root.ok(&["forget", "--keep-last", "1"]);
        let p = root.json(&["prune"]);
        assert!(p["waiting_packs"].as_u64().is_some(), "{p}");
        for (child, input) in running {
            let out = finish(child);
            assert!(out.status.success(), "backup: {}", stderr(&out));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            expected.insert(v["id"].as_str().unwrap().to_string(), input);
        }
    }
    root.ok(&["forget", "--keep-last", "1"]);
    std::thread::sleep(Duration::from_secs(4));
    let p = root.json(&["prune"]);
    assert_eq!(p["waiting_packs"], 0, "{p}");
    let kept = root.snapshot_ids();
    assert_eq!(kept.len(), 3, "one per source: {kept:?}");
    for id in &kept {
        assert_eq!(&restore_bytes(&root, id), &expected[id], "snapshot {id}");
    }
    let c = root.run(&["check", "--read-data"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    // Every operation is in the audit trail, from all three writers, and it verifies.
    let log = root.json(&["audit"]);
    let ops: Vec<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "backup").count(), 9, "{ops:?}");
    assert!(ops.contains(&"forget") && ops.contains(&"prune"));
    let writers: std::collections::HashSet<&str> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["writer"].as_str().unwrap())
        .collect();
    assert_eq!(writers.len(), 3, "root and both agents appended");
    assert!(
        log["check"]["problems"].as_array().unwrap().is_empty(),
        "{log}"
    );
    root.ok(&["audit", "verify"]);
}

/// A writer stopped past its session's lifetime is fenced by prune, which then deletes the
/// data the writer deduplicated against; when it resumes, its commit fails (exit 8) and no
/// reader lists a snapshot of it.
#[test]
fn a_stopped_writer_is_fenced_and_its_commit_fails() {
    use rustix::process::Signal;
    let dir = tempfile::tempdir().unwrap();
    for s3 in [false, true] {
        let d = dir.path().join(if s3 { "s3" } else { "local" });
        let (root, agent, _) = setup(&d, s3);
        let x = data(7, 2 << 20);
        let first = root.run_stdin(&["backup", "stdin", "--name", "db.dump", "--json"], &x);
        assert!(first.status.success(), "{}", stderr(&first));
        // The agent backs up the same bytes (deduplicated against the first snapshot's
        // chunks? an agent trusts only its own and root's entries: root's here), then stops.
        let paused = start_stream(&agent, "db.dump", &x);
        std::thread::sleep(Duration::from_secs(1));
        signal(&paused, Signal::STOP);
        std::thread::sleep(Duration::from_secs(2));
        root.ok(&["forget", "--keep-within", "1s", "--allow-empty"]);
        assert!(root.snapshot_ids().is_empty());
        std::thread::sleep(Duration::from_secs(4));
        let p = root.json(&["prune"]);
        assert_eq!(p["fenced_sessions"].as_array().unwrap().len(), 1, "{p}");
        signal(&paused, Signal::CONT);
        let out = finish(paused);
        assert_eq!(code(&out), 8, "the fenced backup fails: {}", stderr(&out));
        assert!(stderr(&out).contains("fenced"), "{}", stderr(&out));
        let c = root.run(&["check", "--read-data"]);
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
        // Nothing of the fenced session is listed; a new backup of the same data works.
        let again = agent.run_stdin(&["backup", "stdin", "--name", "db.dump", "--json"], &x);
        assert!(again.status.success(), "{}", stderr(&again));
        let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
        assert_eq!(restore_bytes(&root, v["id"].as_str().unwrap()), x);
    }
}

/// `kill -9` of prune at random moments loses nothing: the next prune finishes the work,
/// every retained snapshot restores, `check --read-data` is clean.
#[test]
fn prune_killed_at_random_moments_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _, _) = setup(dir.path(), false);
    let mut keep = Vec::new();
    for n in 0..6u64 {
        let x = [data(1, 512 << 10), data(10 + n, 1 << 20)].concat();
        let o = root.run_stdin(
            &[
                "backup",
                "stdin",
                "--name",
                &format!("s{}", n % 2),
                "--json",
            ],
            &x,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        keep.push((v["id"].as_str().unwrap().to_string(), x));
    }
    root.ok(&["forget", "--keep-last", "1"]);
    let retained = root.snapshot_ids();
    let mut seed = 12345u64;
    for _ in 0..6 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let delay = Duration::from_millis(20 + (seed >> 33) % 400);
        let mut child = root
            .cmd(&["prune"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // A killed prune's claim lapses with its session.
        std::thread::sleep(Duration::from_secs(3));
        for (id, x) in keep.iter().filter(|(id, _)| retained.contains(id)) {
            assert_eq!(&restore_bytes(&root, id), x, "after a killed prune: {id}");
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    root.ok(&["prune"]);
    let c = root.run(&["check", "--read-data"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    for (id, x) in keep.iter().filter(|(id, _)| retained.contains(id)) {
        assert_eq!(&restore_bytes(&root, id), x, "{id}");
    }
    let again = root.json(&["prune", "--dry-run"]);
    assert_eq!(again["condemned_packs"], 0, "the work is done: {again}");
}

/// Forty days of daily backups of a churning "database" under an injected clock (the
/// process clock follows `ARSIP_TEST_NOW`, the local store's `ARSIP_TEST_STORE_NOW`), the plan's default
/// retention (30 days) and a prune after each day, one of the days' backups killed halfway:
/// exactly the last 30 days stay, each restores to that day's bytes, the repository holds
/// little more than those days' distinct data, `check --read-data` is clean, and of the
/// daily verification records prune removed those past `--keep-verifications` but not the
/// newest 30.
#[test]
fn a_month_of_daily_backups_forget_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _, _) = setup(dir.path(), false);
    let start: jiff::Timestamp = "2026-10-01T19:00:00Z".parse().unwrap(); // 02:00 WIB
    let mut db = data(42, 4 << 20);
    let mut kept: Vec<(jiff::Timestamp, Vec<u8>)> = Vec::new();
    for day in 0..40i64 {
        let now = start + jiff::SignedDuration::from_hours(24 * day);
        let at = root
            .with_env("ARSIP_TEST_NOW", &now.to_string())
            .with_env("ARSIP_TEST_STORE_NOW", &now.to_string());
        // Churn: a different 128 KiB region rewritten every day.
        let off = ((day as usize) * 131_072 * 7) % (db.len() - 131_072);
        db[off..off + 131_072].copy_from_slice(&data(1000 + day as u64, 131_072));
        if day == 12 {
            // A backup killed halfway leaves packs and a session that never ends.
            let mut child = start_stream(&at, "app.dump", &db[..2 << 20]);
            std::thread::sleep(Duration::from_millis(500));
            let _ = child.kill();
            let _ = child.wait();
        }
        let o = at.run_stdin(&["backup", "stdin", "--name", "app.dump", "--json"], &db);
        assert!(o.status.success(), "day {day}: {}", stderr(&o));
        kept.push((now, db.clone()));
        // A daily verification record (its verdict does not matter here).
        let _ = at.run(&["verify", "--json"]);
        if day % 2 == 0 {
            at.ok(&["forget"]);
            at.ok(&["prune", "--keep-verifications", "20d"]);
        } else {
            // The same in one run.
            let both = at.json(&["forget", "--prune", "--keep-verifications", "20d"]);
            assert!(both["forget"]["kept"].as_u64().unwrap() >= 1, "{both}");
            assert!(both["prune"]["generation"].as_u64().unwrap() >= 1, "{both}");
        }
    }
    let end = start + jiff::SignedDuration::from_hours(24 * 39);
    let at = root
        .with_env("ARSIP_TEST_NOW", &end.to_string())
        .with_env("ARSIP_TEST_STORE_NOW", &end.to_string());
    let snaps = at.json(&["snapshots"]);
    let snaps = snaps.as_array().unwrap();
    assert_eq!(snaps.len(), 31, "the last 30 days (and today) stay");
    for s in snaps {
        let t: jiff::Timestamp = s["stored"].as_str().unwrap().parse().unwrap();
        let (_, want) = kept.iter().find(|(k, _)| *k == t).expect("a day's backup");
        assert_eq!(&restore_bytes(&at, s["id"].as_str().unwrap()), want, "{t}");
    }
    let c = at.run(&["check", "--read-data"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    let stats = at.json(&["stats"]);
    let stored = stats["stored_bytes"].as_u64().unwrap();
    let unique = stats["unique_bytes"].as_u64().unwrap();
    // What stays is the retained days' distinct data (plus pack overhead and the unused
    // share prune tolerates), not forty full copies (160 MiB).
    assert!(
        stored <= unique + unique / 10 + (1 << 20) && stored < 64 << 20,
        "prune reclaimed the forgotten days: {stats}"
    );
    let log = at.json(&["audit", "verify"]);
    assert!(log["problems"].as_array().unwrap().is_empty(), "{log}");
    // Forty daily verification records: those older than 20 days went, but never the
    // newest 30.
    let records = std::fs::read_dir(root.local_root.as_ref().unwrap().join("verify"))
        .unwrap()
        .count();
    assert_eq!(records, 30, "verification records kept");
}

/// A compromised agent's snapshots (no reader accepts them, their indexes are refused) do
/// not stop prune; `forget --revoked` then lets prune remove what the agent wrote, and the
/// root's snapshots stay intact.
#[test]
fn a_compromised_agents_objects_go_after_forget_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (root, agent, _) = setup(dir.path(), false);
    let mine = data(5, 1 << 20);
    let o = root.run_stdin(&["backup", "stdin", "--name", "root.dump", "--json"], &mine);
    assert!(o.status.success(), "{}", stderr(&o));
    let id: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = agent.run_stdin(
        &["backup", "stdin", "--name", "agent.dump"],
        &data(6, 2 << 20),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let writers = root.json(&["key", "list"]);
    let agent_id = writers["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["label"] == "db1")
        .expect("the agent db1")["writer_id"]
        .as_str()
        .unwrap()
        .to_string();
    root.ok(&["key", "remove", &agent_id, "--compromised", "--yes"]);
    let p = root.json(&["prune"]);
    let stored_before = root.json(&["stats"])["stored_bytes"].as_u64().unwrap();
    assert_eq!(
        p["deleted_packs"], 0,
        "its snapshot is not forgotten yet: {p}"
    );
    let f = root.json(&["forget", "--revoked"]);
    assert_eq!(f["revoked_removed"].as_array().unwrap().len(), 1, "{f}");
    let p = root.json(&["prune"]);
    assert!(p["deleted_packs"].as_u64().unwrap() > 0, "{p}");
    let stored_after = root.json(&["stats"])["stored_bytes"].as_u64().unwrap();
    assert!(
        stored_after + (1 << 20) < stored_before,
        "{stored_before} → {stored_after}"
    );
    assert_eq!(restore_bytes(&root, id["id"].as_str().unwrap()), mine);
    let c = root.run(&["check", "--read-data"]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
}

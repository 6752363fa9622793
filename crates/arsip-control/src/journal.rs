//! The daemon's local state journal: what it started, what it finished, what it missed,
//! one JSON object per line in `STATE_DIR/journal/<seq>.jsonl`, each line written and
//! `fdatasync`ed before the daemon acts on it (an attempt is journaled before it starts)
//! or reports it (a run is journaled before its metrics change). Readable with `jq` at
//! 3 a.m.
//!
//! Crash rules: a torn last line (the process died inside a write) is cut off at the next
//! start with a warning; an attempt started and never finished is recorded as
//! `interrupted`. A damaged line anywhere else is an error naming the file and line: the
//! history is never silently shortened. `STATE_DIR/lock` is held (`flock`) while the journal
//! is open, so two daemons never share a state directory.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A segment is closed and a new one started beyond this size.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// How a run or an attempt ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Verify found anomalies but nothing failed.
    Warnings,
    Failed,
    /// The daemon stopped (or died) while it ran.
    Interrupted,
    /// Its time passed while the daemon was down, and it was not made up.
    Missed,
    /// It came due while the job's previous run was still running.
    Skipped,
    /// An operator cancelled it (`POST /api/v1/jobs/{job}/cancel`).
    Cancelled,
}

impl Outcome {
    /// Counts as a success (moves "last success").
    pub fn succeeded(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Warnings)
    }
}

/// What one attempt measured; every field is optional (each job type fills its own).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Backups: the snapshot's bytes as read, new bytes after dedup, bytes written to the
    /// store, entries, seconds the backup took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Prune: what it deleted, and the repository's packed bytes it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_packs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_bytes: Option<u64>,
    /// Forget: snapshots removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_snapshots: Option<u64>,
    /// Verify: integrity problems found (damaged or missing objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_objects: Option<u64>,
    /// Verify: each restore test, by snapshot kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_tests: Vec<RestoreTestFact>,
    /// Wal-check: segments the archive is behind the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_lag_segments: Option<u64>,
    /// Copy: objects and bytes copied, and the replication lag before the run (the age of
    /// the oldest snapshot the copy lacked; none when it lacked none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_objects: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_lag_seconds: Option<f64>,
    /// Requests the attempt sent to the store (every try of every request: what is billed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<arsip_ops::storage::metered::Usage>,
}

impl Facts {
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestFact {
    pub kind: String,
    pub ok: bool,
    /// From the start of the restore to the end of its last step.
    pub rto_seconds: f64,
}

/// One journaled event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    ConfigLoaded {
        path: PathBuf,
        /// The configuration's sources (so that "configured since" survives restarts).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sources: Vec<String>,
    },
    AttemptStarted {
        job: String,
        scheduled: Timestamp,
        attempt: u32,
    },
    AttemptFinished {
        job: String,
        scheduled: Timestamp,
        attempt: u32,
        outcome: Outcome,
        /// A failure worth retrying (storage, a busy prune).
        transient: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// What the attempt produced: a snapshot or verification record id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        produced: Option<String>,
        /// What the attempt measured (for `/metrics` and `status`).
        #[serde(default, skip_serializing_if = "Facts::is_empty")]
        facts: Box<Facts>,
    },
    /// An alert began to hold (its notifications are owed to its routes' channels).
    AlertOpened { alert: crate::alerts::Firing },
    /// An alert stopped holding (a resolve is owed where its opening was delivered).
    AlertResolved { rule: String, subject: String },
    /// A delivery to a channel ended: `sent`, `failed` (will be retried) or `dropped`
    /// (permanent: a 4xx, a channel that cannot work).
    Notified {
        rule: String,
        subject: String,
        channel: String,
        status: crate::alerts::Status,
        result: String,
    },
    /// A run asked for through the API (`POST /api/v1/jobs/{job}/trigger`): `scheduled` is
    /// the time it was asked for, claimed like an occurrence.
    Triggered {
        job: String,
        scheduled: Timestamp,
        /// The API token's name.
        by: String,
    },
    RunFinished {
        job: String,
        scheduled: Timestamp,
        outcome: Outcome,
        /// Another daemon ran it (its id): this one watched its claim in the repository.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub at: Timestamp,
    #[serde(flatten)]
    pub event: Event,
}

/// What opening the journal found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every entry, oldest first (the `interrupted` ones recovery added included).
    pub entries: Vec<Entry>,
    /// Bytes of a torn last line that were cut off.
    pub truncated: u64,
    /// Attempts that had started and not finished: now recorded as interrupted.
    pub interrupted: Vec<(String, Timestamp, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another arsip daemon holds {0} (one daemon per state directory; stop it, or give this \
         one its own daemon.state_dir)"
    )]
    Locked(PathBuf),
    #[error("{path}:{line}: damaged journal entry ({why}); the history is kept as it is: move the file aside to start a new one")]
    Damaged {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

type Result<T> = std::result::Result<T, JournalError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    seq: u64,
    bytes: u64,
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({})", self.path.display())
    }
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016}.jsonl")
}

/// Make a new directory entry durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Journal {
    /// Open (or create) the journal of `state_dir`, recovering from a crash as the module
    /// says. `now` stamps the entries recovery adds.
    pub fn open(state_dir: &Path, now: Timestamp) -> Result<(Journal, Recovered)> {
        let dir = state_dir.join("journal");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = state_dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| JournalError::Locked(lock_path.clone()))?;

        let mut segments: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".jsonl")?.parse().ok()
            })
            .collect();
        segments.sort_unstable();
        let mut rec = Recovered::default();
        for (n, &seq) in segments.iter().enumerate() {
            let path = dir.join(segment_name(seq));
            let last = n + 1 == segments.len();
            rec.truncated += read_segment(&path, last, &mut rec.entries)?;
        }
        let seq = segments.last().copied().unwrap_or(1);
        let path = dir.join(segment_name(seq));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let bytes = file.metadata().map_err(io(&path))?.len();
        if segments.is_empty() {
            sync_dir(&dir)?;
        }
        let mut j = Journal {
            dir,
            file,
            path,
            seq,
            bytes,
            _lock: lock,
        };
        rec.interrupted = unfinished(&rec.entries);
        for (job, scheduled, attempt) in rec.interrupted.clone() {
            let e = j.append(
                now,
                Event::AttemptFinished {
                    job,
                    scheduled,
                    attempt,
                    outcome: Outcome::Interrupted,
                    transient: true,
                    message: Some("the daemon stopped while it ran".into()),
                    produced: None,
                    facts: Box::default(),
                },
            )?;
            rec.entries.push(e);
        }
        Ok((j, rec))
    }

    /// Append one entry, durably, before returning it.
    pub fn append(&mut self, at: Timestamp, event: Event) -> Result<Entry> {
        let entry = Entry { at, event };
        let mut line = serde_json::to_vec(&entry).expect("journal entries serialise");
        line.push(b'\n');
        if self.bytes > 0 && self.bytes + line.len() as u64 > SEGMENT_BYTES {
            self.rotate()?;
        }
        self.file.write_all(&line).map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.bytes += line.len() as u64;
        Ok(entry)
    }

    fn rotate(&mut self) -> Result<()> {
        self.seq += 1;
        self.path = self.dir.join(segment_name(self.seq));
        self.file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        sync_dir(&self.dir)?;
        self.bytes = 0;
        Ok(())
    }
}

/// Read one segment's entries into `out`. In the last segment a torn or unparseable final
/// line is cut off (returns its length); anywhere else a bad line is an error.
fn read_segment(path: &Path, last: bool, out: &mut Vec<Entry>) -> Result<u64> {
    let f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    let mut reader = std::io::BufReader::new(f);
    let mut good: u64 = 0;
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        let got = reader.read_until(b'\n', &mut line).map_err(io(path))?;
        if got == 0 {
            return Ok(0);
        }
        n += 1;
        let complete = line.last() == Some(&b'\n');
        let parsed = serde_json::from_slice::<Entry>(&line);
        match parsed {
            Ok(e) if complete => {
                out.push(e);
                good += got as u64;
            }
            // The final line, torn by a crash (no newline yet): cut it off.
            _ if last && !complete => {
                tracing::warn!(
                    journal = %path.display(),
                    line = n,
                    bytes = len - good,
                    "cut off a torn last journal entry: the daemon stopped while writing it"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                f.set_len(good).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                return Ok(len - good);
            }
            Ok(_) => {
                return Err(JournalError::Damaged {
                    path: path.to_path_buf(),
                    line: n,
                    why: "an entry without its end of line before other entries".into(),
                })
            }
            Err(e) => {
                return Err(JournalError::Damaged {
                    path: path.to_path_buf(),
                    line: n,
                    why: e.to_string(),
                })
            }
        }
    }
}

/// Attempts started and not finished, in the order they started.
fn unfinished(entries: &[Entry]) -> Vec<(String, Timestamp, u32)> {
    let mut open: Vec<(String, Timestamp, u32)> = Vec::new();
    for e in entries {
        match &e.event {
            Event::AttemptStarted {
                job,
                scheduled,
                attempt,
            } => open.push((job.clone(), *scheduled, *attempt)),
            Event::AttemptFinished {
                job,
                scheduled,
                attempt,
                ..
            } => open.retain(|(j, s, a)| !(j == job && s == scheduled && a == attempt)),
            _ => {}
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn started(job: &str, attempt: u32) -> Event {
        Event::AttemptStarted {
            job: job.into(),
            scheduled: t("2026-12-02T19:00:00Z"),
            attempt,
        }
    }

    fn finished(job: &str, attempt: u32, outcome: Outcome) -> Event {
        Event::AttemptFinished {
            job: job.into(),
            scheduled: t("2026-12-02T19:00:00Z"),
            attempt,
            outcome,
            transient: false,
            message: None,
            produced: Some("ab12".into()),
            facts: Box::default(),
        }
    }

    #[test]
    fn entries_survive_a_restart_and_unfinished_attempts_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-12-02T19:05:00Z");
        {
            let (mut j, rec) = Journal::open(dir.path(), now).unwrap();
            assert!(rec.entries.is_empty());
            j.append(now, started("a", 1)).unwrap();
            j.append(now, finished("a", 1, Outcome::Ok)).unwrap();
            j.append(now, started("b", 1)).unwrap();
        }
        let (_j, rec) = Journal::open(dir.path(), now).unwrap();
        assert_eq!(rec.entries.len(), 4);
        assert_eq!(
            rec.interrupted,
            vec![("b".to_string(), t("2026-12-02T19:00:00Z"), 1)]
        );
        assert!(matches!(
            rec.entries[3].event,
            Event::AttemptFinished {
                outcome: Outcome::Interrupted,
                ..
            }
        ));
        drop(_j);
        // Recorded once: a second restart finds nothing unfinished.
        let (_j, rec) = Journal::open(dir.path(), now).unwrap();
        assert!(rec.interrupted.is_empty());
        assert_eq!(rec.entries.len(), 4);
    }

    #[test]
    fn a_torn_last_line_is_cut_at_any_byte() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-12-02T19:05:00Z");
        {
            let (mut j, _) = Journal::open(dir.path(), now).unwrap();
            j.append(now, started("a", 1)).unwrap();
            j.append(now, finished("a", 1, Outcome::Ok)).unwrap();
        }
        let seg = dir.path().join("journal").join(segment_name(1));
        let full = std::fs::read(&seg).unwrap();
        let first_end = full.iter().position(|&b| b == b'\n').unwrap() + 1;
        for cut in first_end..full.len() {
            std::fs::write(&seg, &full[..cut]).unwrap();
            let (mut j, rec) = Journal::open(dir.path(), now).unwrap();
            // The first entry stands; the torn second one is gone, so "a" was interrupted.
            assert_eq!(rec.truncated, (cut - first_end) as u64, "cut at {cut}");
            assert_eq!(rec.interrupted.len(), 1, "cut at {cut}");
            assert_eq!(rec.entries.len(), 2, "cut at {cut}");
            // Appending goes on after the last good line.
            j.append(now, started("c", 1)).unwrap();
            drop(j);
            let (_, rec) = Journal::open(dir.path(), now).unwrap();
            assert_eq!(rec.truncated, 0, "cut at {cut}");
            assert!(
                matches!(&rec.entries[2].event, Event::AttemptStarted { job, .. } if job == "c")
            );
        }
    }

    #[test]
    fn damage_before_the_end_is_an_error_not_a_shorter_history() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-12-02T19:05:00Z");
        {
            let (mut j, _) = Journal::open(dir.path(), now).unwrap();
            j.append(now, started("a", 1)).unwrap();
            j.append(now, finished("a", 1, Outcome::Ok)).unwrap();
        }
        let seg = dir.path().join("journal").join(segment_name(1));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[3] = b'#';
        std::fs::write(&seg, &bytes).unwrap();
        let e = Journal::open(dir.path(), now).unwrap_err().to_string();
        assert!(e.contains(":1: damaged journal entry"), "{e}");
    }

    #[test]
    fn one_daemon_per_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-12-02T19:05:00Z");
        let (_j, _) = Journal::open(dir.path(), now).unwrap();
        let e = Journal::open(dir.path(), now).unwrap_err();
        assert!(matches!(e, JournalError::Locked(_)), "{e}");
    }

    #[test]
    fn segments_rotate_and_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2026-12-02T19:05:00Z");
        let long = "x".repeat(1 << 20);
        {
            let (mut j, _) = Journal::open(dir.path(), now).unwrap();
            for n in 0..20 {
                j.append(
                    now,
                    Event::AttemptFinished {
                        job: format!("j{n}"),
                        scheduled: now,
                        attempt: 1,
                        outcome: Outcome::Failed,
                        transient: true,
                        message: Some(long.clone()),
                        produced: None,
                        facts: Box::default(),
                    },
                )
                .unwrap();
            }
        }
        let segs = std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .count();
        assert_eq!(segs, 2);
        let (_, rec) = Journal::open(dir.path(), now).unwrap();
        let jobs: Vec<String> = rec
            .entries
            .iter()
            .map(|e| match &e.event {
                Event::AttemptFinished { job, .. } => job.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(jobs, (0..20).map(|n| format!("j{n}")).collect::<Vec<_>>());
    }
}

//! Which timeline a recovery follows, and which backup it starts from.
//!
//! The archive of a namespace may hold several histories: the source's, and every restore
//! that was promoted and archived there (a restore declared the new primary; older arsip
//! archived every restore). The rules, applied before anything is written:
//!
//! - `--target-timeline N|latest|current` is obeyed (`current` is the backup's own);
//! - an explicit SNAPSHOT follows its own timeline;
//! - otherwise recovery follows the newest timeline whose history contains the **newest
//!   backup** of the stanza, so that a restore promoted off an older point (a drill) never
//!   captures later restores;
//! - the chosen timeline must contain the chosen backup (PostgreSQL would refuse later, after
//!   the copy: "requested timeline is not a child of this server's history");
//! - newer backups and archived WAL off the followed history are reported as warnings.
//!
//! The number chosen is always written as `recovery_target_timeline`: PostgreSQL's own
//! default (`latest`) would follow whatever timeline is highest.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arsip_repo::FullRepo;
use arsip_repo::Snapshot;

use crate::control::{format_lsn, parse_history, HistoryEntry, SegName};
use crate::error::{PgError, Result};
use crate::physical::PhysicalFacts;
use crate::restore::target::Target;

/// A timeline and its ancestry (the lines of its `.history` file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimelineView {
    pub target: u32,
    pub ancestors: Vec<HistoryEntry>,
}

impl TimelineView {
    /// Whether a backup taken on `tli` that stopped at `stop_lsn` lies on this history.
    pub fn contains(&self, tli: u32, stop_lsn: u64) -> bool {
        tli == self.target
            || self
                .ancestors
                .iter()
                .any(|e| e.parent == tli && stop_lsn <= e.switch_lsn)
    }

    /// The timeline whose copy of segment `segno` this history reads: the one whose range
    /// holds it. A segment holding a switch point is the child's: the parent's copy also
    /// holds the parent's records after the switch point, which recovery replays as if they
    /// were this history when it falls back to that copy (PostgreSQL does, when the child's
    /// copy is missing), so the parent's copy never stands in for it.
    pub fn tlis_for(&self, segno: u64, seg_size: u64) -> Vec<u32> {
        let owner = self
            .ancestors
            .iter()
            .find(|e| segno < e.switch_lsn / seg_size)
            .map_or(self.target, |e| e.parent);
        vec![owner]
    }

    fn on_path(&self, tli: u32) -> bool {
        tli == self.target || self.ancestors.iter().any(|e| e.parent == tli)
    }
}

/// What one LIST of a namespace (and its `.history` files) says.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    pub names: HashSet<String>,
    /// Segments, sorted.
    pub segments: Vec<SegName>,
    /// Every archived timeline history, by timeline.
    pub histories: BTreeMap<u32, Vec<HistoryEntry>>,
    /// When the store accepted each history file (when that timeline's primary first
    /// archived, by the store's clock).
    pub history_stored: BTreeMap<u32, jiff::Timestamp>,
}

impl Archive {
    pub async fn load(repo: &FullRepo, ns: &str, seg_size: u64) -> Result<Archive> {
        let listed = repo.wal_list_times(ns).await?;
        let history_stored = listed
            .iter()
            .filter_map(|(n, t)| {
                let tli = u32::from_str_radix(n.strip_suffix(".history")?, 16).ok()?;
                Some((tli, *t))
            })
            .collect();
        let names: HashSet<String> = listed.into_iter().map(|(n, _)| n).collect();
        let mut segments: Vec<SegName> = names
            .iter()
            .filter_map(|n| SegName::parse(n, seg_size))
            .collect();
        segments.sort();
        let mut histories = BTreeMap::new();
        for tli in names
            .iter()
            .filter_map(|f| f.strip_suffix(".history"))
            .filter_map(|t| u32::from_str_radix(t, 16).ok())
        {
            let name = format!("{tli:08X}.history");
            if let Some(b) = repo.wal_get(ns, &name).await? {
                histories.insert(tli, parse_history(&String::from_utf8_lossy(&b)));
            }
        }
        Ok(Archive {
            names,
            segments,
            histories,
            history_stored,
        })
    }

    /// Every timeline the archive knows: 1 and each one with a history file.
    pub fn timelines(&self) -> BTreeSet<u32> {
        let mut t: BTreeSet<u32> = self.histories.keys().copied().collect();
        t.insert(1);
        t.extend(self.segments.iter().map(|s| s.timeline));
        t
    }

    pub fn view(&self, tli: u32) -> Result<TimelineView> {
        if tli <= 1 {
            return Ok(TimelineView {
                target: tli.max(1),
                ancestors: Vec::new(),
            });
        }
        match self.histories.get(&tli) {
            Some(h) => Ok(TimelineView {
                target: tli,
                ancestors: h.clone(),
            }),
            None => Err(PgError::refused(
                format!("timeline {tli} has no history file in the repository"),
                "`arsip wal list` shows the archived timelines",
            )),
        }
    }
}

/// A backup with its facts.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub snap: Snapshot,
    pub facts: PhysicalFacts,
    pub stop_lsn: u64,
}

/// The timeline decision, as the plan shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineChoice {
    /// Written as `recovery_target_timeline`.
    pub follow: u32,
    pub reason: String,
    /// The followed timeline's ancestry: where each parent switched to its child.
    pub history: Vec<SwitchPoint>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SwitchPoint {
    pub parent: u32,
    pub switch_lsn: String,
}

fn timeline_number(s: &str) -> Result<u32> {
    let t = s.trim();
    let n = if let Some(h) = t.strip_prefix("0x") {
        u32::from_str_radix(h, 16).ok()
    } else {
        t.parse().ok()
    };
    n.filter(|n| *n >= 1).ok_or_else(|| {
        PgError::usage(
            format!("--target-timeline {s:?}"),
            "use a timeline number, `latest` or `current`",
        )
    })
}

pub struct Chosen {
    pub index: usize,
    pub view: TimelineView,
    pub choice: TimelineChoice,
    pub warnings: Vec<String>,
}

/// Pick the backup and the timeline (rules in the module documentation).
pub fn choose(
    archive: &Archive,
    cands: &[Candidate],
    explicit: Option<&str>,
    target_timeline: Option<&str>,
    target: &Target,
    seg_size: u64,
) -> Result<Chosen> {
    if cands.is_empty() {
        return Err(PgError::refused(
            "this repository has no physical backup of the stanza",
            "`arsip snapshots --kind pg-physical` lists them; --stanza selects another",
        ));
    }
    let explicit = explicit.filter(|s| *s != "latest");
    let newest = cands
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| c.snap.manifest.time)
        .map(|(i, _)| i)
        .expect("not empty");
    let explicit_index = match explicit {
        Some(spec) => {
            let snaps: Vec<Snapshot> = cands.iter().map(|c| c.snap.clone()).collect();
            let s = arsip_repo::select_snapshot(&snaps, spec)?;
            Some(
                cands
                    .iter()
                    .position(|c| c.snap.id == s.id)
                    .expect("selected from the list"),
            )
        }
        None => None,
    };
    let max_tli = archive.timelines().into_iter().max().unwrap_or(1);
    let (tli, reason) = match (target_timeline, explicit_index) {
        (Some("latest"), _) => (
            max_tli,
            format!("--target-timeline latest: the highest archived timeline, {max_tli}"),
        ),
        (Some("current"), Some(i)) => (
            cands[i].facts.timeline,
            format!(
                "--target-timeline current: the timeline of snapshot {}",
                cands[i].snap.short_id()
            ),
        ),
        (Some("current"), None) => (
            cands[newest].facts.timeline,
            format!(
                "--target-timeline current: the timeline of the newest backup {}",
                cands[newest].snap.short_id()
            ),
        ),
        (Some(n), _) => (timeline_number(n)?, format!("--target-timeline {n}")),
        (None, Some(i)) => (
            cands[i].facts.timeline,
            format!(
                "the timeline of the chosen snapshot {}",
                cands[i].snap.short_id()
            ),
        ),
        (None, None) => {
            let nb = &cands[newest];
            let (nb_tli, nb_time) = (nb.facts.timeline, nb.snap.effective_time());
            // A new primary declared after the newest backup from a point before that
            // backup's end (a PITR promoted with --promote-as-primary, the usual repair of
            // a bad change) is the source's history from then on: the backup holds what the
            // repair undid. Its history file, archived when it was promoted, says when.
            let superseding = archive
                .timelines()
                .into_iter()
                .filter(|&t| {
                    t > nb_tli
                        && archive.history_stored.get(&t).is_some_and(|s| *s > nb_time)
                        && archive
                            .view(t)
                            .is_ok_and(|v| v.on_path(nb_tli) && !v.contains(nb_tli, nb.stop_lsn))
                })
                .max();
            if let Some(t) = superseding {
                (
                    t,
                    format!(
                        "timeline {t}: a primary promoted after the newest backup {} (timeline {nb_tli}, stopped {}) from a point before that backup's end; that backup is off the history it started",
                        nb.snap.short_id(),
                        nb.facts.stop_time
                    ),
                )
            } else {
                let mut best = nb_tli;
                for t in archive.timelines() {
                    if t > best
                        && archive
                            .view(t)
                            .is_ok_and(|v| v.contains(nb_tli, nb.stop_lsn))
                    {
                        best = t;
                    }
                }
                (
                    best,
                    format!(
                        "the newest timeline whose history contains the newest backup {} (timeline {nb_tli}, stopped {})",
                        nb.snap.short_id(),
                        nb.facts.stop_time
                    ),
                )
            }
        }
    };
    let view = archive.view(tli)?;

    let index = match explicit_index {
        Some(i) => {
            let c = &cands[i];
            if !view.contains(c.facts.timeline, c.stop_lsn) {
                return Err(PgError::refused(
                    format!(
                        "timeline {tli} does not contain snapshot {} (taken on timeline {}, stopped at {}): recovery could not follow it from there",
                        c.snap.short_id(),
                        c.facts.timeline,
                        c.facts.stop_lsn
                    ),
                    format!("omit --target-timeline to follow the snapshot's own timeline {}", c.facts.timeline),
                ));
            }
            i
        }
        None => pick(cands, &view, target)?,
    };

    let chosen = &cands[index];
    let mut warnings = Vec::new();
    for c in cands {
        if c.snap.manifest.time > chosen.snap.manifest.time
            && !view.contains(c.facts.timeline, c.stop_lsn)
        {
            warnings.push(format!(
                "backup {} (timeline {}, stopped {}) is newer than the chosen backup {} but is not on the history of timeline {tli}: this restore does not include what it holds (--target-timeline {} follows it)",
                c.snap.short_id(),
                c.facts.timeline,
                c.facts.stop_time,
                chosen.snap.short_id(),
                c.facts.timeline
            ));
        }
    }
    for t in archive.timelines() {
        if view.on_path(t) {
            continue;
        }
        let from = archive
            .histories
            .get(&t)
            .and_then(|h| h.last())
            .map(|e| {
                format!(
                    " (branched from timeline {} at {})",
                    e.parent,
                    format_lsn(e.switch_lsn)
                )
            })
            .unwrap_or_default();
        let segs = archive.segments.iter().filter(|s| s.timeline == t).count();
        warnings.push(format!(
            "timeline {t}{from} is not followed: its history and {segs} archived segment(s) lie off the history of timeline {tli} (a restore promoted there; --target-timeline {t} follows it)"
        ));
    }
    let mut child = tli;
    for e in view.ancestors.iter().rev() {
        let switch_seg = e.switch_lsn / seg_size;
        if let Some(last) = archive
            .segments
            .iter()
            .filter(|s| s.timeline == e.parent && s.segno > switch_seg)
            .max()
        {
            warnings.push(format!(
                "timeline {} continues after it switched to timeline {child} at {} (archived up to {}): that later WAL is off the followed history (--target-timeline {} follows it)",
                e.parent,
                format_lsn(e.switch_lsn),
                last.name(seg_size),
                e.parent
            ));
        }
        child = e.parent;
    }
    Ok(Chosen {
        index,
        choice: TimelineChoice {
            follow: tli,
            reason,
            history: view
                .ancestors
                .iter()
                .map(|e| SwitchPoint {
                    parent: e.parent,
                    switch_lsn: format_lsn(e.switch_lsn),
                })
                .collect(),
        },
        view,
        warnings,
    })
}

/// The newest backup on `view` that ends before the target.
fn pick(cands: &[Candidate], view: &TimelineView, target: &Target) -> Result<usize> {
    let mut on: Vec<usize> = (0..cands.len())
        .filter(|&i| view.contains(cands[i].facts.timeline, cands[i].stop_lsn))
        .collect();
    on.sort_by_key(|&i| cands[i].snap.manifest.time);
    let found =
        match target {
            Target::End | Target::Immediate => on.last().copied(),
            Target::Time(t) => on
                .iter()
                .rev()
                .find(|&&i| cands[i].facts.stop_time().is_ok_and(|st| st < t.at))
                .copied(),
            Target::Lsn(l) => on.iter().rev().find(|&&i| cands[i].stop_lsn <= *l).copied(),
            Target::Xid(_) | Target::Name(_) => return Err(PgError::refused(
                "--target-xid and --target-name need an explicit SNAPSHOT",
                "pick a backup taken before the target from `arsip snapshots --kind pg-physical`",
            )),
        };
    found.ok_or_else(|| {
        PgError::refused(
            format!(
                "no physical backup ends before the recovery target ({}) on the history of timeline {}",
                target.describe(),
                view.target
            ),
            "`arsip snapshots --kind pg-physical` lists backups with their stop times (facts.stop_time)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn backup(id: &str, timeline: u32, stop_lsn: u64, at: i64) -> Candidate {
        let facts = PhysicalFacts {
            system_identifier: "1".into(),
            major: 15,
            server_version: "15".into(),
            namespace: "1-15".into(),
            stanza: "main".into(),
            timeline,
            start_lsn: format_lsn(stop_lsn - 0x100),
            stop_lsn: format_lsn(stop_lsn),
            start_wal: String::new(),
            stop_wal: String::new(),
            start_time: String::new(),
            stop_time: String::new(),
            wal_segment_size: SEG,
            data_checksums: false,
            pgdata: String::new(),
            bytes_read: 0,
            reused_files: 0,
            reused_bytes: 0,
            tablespace_map: None,
            row_estimates: Default::default(),
        };
        let manifest = arsip_repo::Manifest {
            version: 1,
            kind: crate::physical::KIND.into(),
            source: "main".into(),
            host: "h".into(),
            tags: Default::default(),
            time: ts(at),
            end_time: ts(at),
            logical_bytes: 0,
            added_bytes: 0,
            stored_bytes: 0,
            files: 0,
            facts: Default::default(),
            tree: vec![],
            tree_bytes: 0,
            session: None,
            audit_head: None,
        };
        Candidate {
            snap: Snapshot {
                id: format!("{id:0<64}"),
                writer: String::new(),
                stored: Some(ts(at)),
                manifest,
            },
            facts,
            stop_lsn,
        }
    }

    /// A PITR promoted with --promote-as-primary to a point before the newest backup's end
    /// (bad change at 10:31, nightly backup at 11:00, repair at 12:00) is the source's
    /// history from then on: later default restores follow it from the older backup, and
    /// say that the newest backup is off it. Today's choice followed the newest backup back
    /// onto the history the repair undid, with exit 0.
    #[test]
    fn a_primary_promoted_after_the_newest_backup_is_followed() {
        let switch = 5 * SEG + 0x300;
        let cands = vec![backup("b1", 1, 3 * SEG, 0), backup("b3", 1, 7 * SEG, 100)];
        let mut archive = Archive::default();
        archive.histories.insert(
            3,
            vec![HistoryEntry {
                parent: 1,
                switch_lsn: switch,
            }],
        );
        archive.history_stored.insert(3, ts(200));
        let c = choose(&archive, &cands, None, None, &Target::default(), SEG).unwrap();
        assert_eq!((c.view.target, c.index), (3, 0), "{:?}", c.choice);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains(cands[1].snap.short_id())),
            "{:?}",
            c.warnings
        );
        // A timeline promoted before the newest backup (the backup was taken on the old
        // primary afterwards) does not supersede it.
        archive.history_stored.insert(3, ts(50));
        let c = choose(&archive, &cands, None, None, &Target::default(), SEG).unwrap();
        assert_eq!((c.view.target, c.index), (1, 1), "{:?}", c.choice);
    }
}

//! WAL retention that follows the backups, and the shape of the archive (`wal show`).
//!
//! A WAL file is kept when any of these needs it:
//! - a retained physical backup, to become consistent: the segments from its start to its
//!   stop LSN, on its own history;
//! - a point inside the PITR window (default 7 days) reachable from a retained backup:
//!   from the newest backup the store accepted before the window opened (else the oldest),
//!   and from every newer one, every segment from the backup's start on every timeline whose
//!   history contains that backup;
//! - every `.history` file (tiny, and what a restore reads to choose a timeline);
//! - anything the store accepted less than a day ago, or less than the window if it is
//!   shorter (a promotion whose first backup has not been taken yet), and every name that is
//!   not a segment, a `.partial` or a `.backup`.
//!
//! Everything else in a namespace that has retained physical backups goes: segments older
//! than what any retained backup or the window can reach, and timelines that branched off
//! where no retained backup lies (a drill promoted from a forgotten backup). A namespace
//! without a retained physical backup keeps everything.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use arsip_repo::FullRepo;
use arsip_repo::Snapshot;
use serde::Serialize;

use crate::control::SegName;
use crate::error::Result;
use crate::physical::{PhysicalFacts, KIND};
use crate::restore::timeline::Archive;

/// The plan's default: point-in-time recovery over the last 7 days.
pub const DEFAULT_PITR_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);

/// WAL the store accepted less than this long ago (or the PITR window, if shorter) is never
/// removed.
pub const MIN_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// A retained physical backup, as retention needs it.
#[derive(Debug, Clone)]
pub struct Base {
    pub snapshot: String,
    pub timeline: u32,
    pub start_lsn: u64,
    pub stop_lsn: u64,
    /// When the store accepted its manifest.
    pub stored: jiff::Timestamp,
}

/// A WAL file name's segment: plain segments, `.partial` and `.backup` files.
fn segment_of(name: &str, seg_size: u64) -> Option<SegName> {
    if name.len() < 24 {
        return None;
    }
    let rest = &name[24..];
    let ok = rest.is_empty()
        || rest == ".partial"
        || (rest.ends_with(".backup") && rest.len() == ".00000000.backup".len());
    ok.then(|| SegName::parse(&name[..24], seg_size)).flatten()
}

/// The names of `archive` to keep (rules in the module documentation).
pub fn needed(
    archive: &Archive,
    stored: &BTreeMap<String, jiff::Timestamp>,
    bases: &[Base],
    seg_size: u64,
    window: jiff::SignedDuration,
    now: jiff::Timestamp,
) -> Result<HashSet<String>> {
    let mut keep_seg: HashSet<SegName> = HashSet::new();
    let opens = now.checked_sub(window).unwrap_or(now);
    let mut sorted: Vec<&Base> = bases.iter().collect();
    sorted.sort_by_key(|b| b.stored);
    let first_in_window = sorted.iter().rposition(|b| b.stored <= opens).unwrap_or(0);
    for (n, b) in sorted.iter().enumerate() {
        let own = archive.view(b.timeline)?;
        let (start, stop) = (b.start_lsn / seg_size, b.stop_lsn / seg_size);
        for segno in start..=stop {
            for tli in own.tlis_for(segno, seg_size) {
                keep_seg.insert(SegName {
                    timeline: tli,
                    segno,
                });
            }
        }
        if n < first_in_window {
            continue;
        }
        for t in archive.timelines() {
            let Ok(view) = archive.view(t) else { continue };
            if !view.contains(b.timeline, b.stop_lsn) {
                continue;
            }
            for s in archive.segments.iter().filter(|s| s.segno >= start) {
                if view.tlis_for(s.segno, seg_size).contains(&s.timeline) {
                    keep_seg.insert(*s);
                }
            }
        }
    }
    let min_age = MIN_AGE.min(window);
    let young = |name: &str| {
        stored
            .get(name)
            .is_some_and(|t| now.duration_since(*t) < min_age)
    };
    Ok(archive
        .names
        .iter()
        .filter(|n| match segment_of(n, seg_size) {
            Some(s) => keep_seg.contains(&s) || young(n),
            None => true,
        })
        .cloned()
        .collect())
}

/// One contiguous run of segments on a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// When the store accepted the newest segment of the run.
    pub last_stored: Option<jiff::Timestamp>,
}

/// The archive of one namespace.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceShow {
    pub namespace: String,
    pub stanzas: Vec<String>,
    pub timelines: Vec<u32>,
    pub runs: Vec<Run>,
    /// Missing segments between runs of one timeline: (after, before).
    pub gaps: Vec<(String, String)>,
    pub physical_backups: usize,
    /// The oldest and newest points a restore can reach: the oldest retained backup's end
    /// and the newest segment archived without a gap after it (on its history).
    pub recoverable_from: Option<String>,
    pub recoverable_to: Option<jiff::Timestamp>,
    pub recoverable_timeline: Option<u32>,
}

/// Retained physical backups of `ns`, and the segment size they record.
pub fn bases_of(snaps: &[Snapshot], ns: &str) -> (Vec<(Base, PhysicalFacts)>, Option<u64>) {
    let mut out = Vec::new();
    let mut seg = None;
    for s in snaps.iter().filter(|s| s.manifest.kind == KIND) {
        let Ok(f) = PhysicalFacts::of(s) else {
            continue;
        };
        if f.namespace != ns {
            continue;
        }
        let (Ok(start), Ok(stop)) = (f.start_lsn(), f.stop_lsn()) else {
            continue;
        };
        seg = Some(f.wal_segment_size);
        out.push((
            Base {
                snapshot: s.id.clone(),
                timeline: f.timeline,
                start_lsn: start,
                stop_lsn: stop,
                stored: s.stored.unwrap_or(s.manifest.time),
            },
            f,
        ));
    }
    (out, seg)
}

/// `wal show`: per namespace, the archived runs, gaps and the recoverable window.
pub async fn show(repo: &FullRepo) -> Result<Vec<NamespaceShow>> {
    let snaps = repo.snapshot_listing().await?.snapshots;
    let mut out = Vec::new();
    for ns in repo.wal_namespaces().await? {
        let (bases, seg) = bases_of(&snaps, &ns);
        let seg_size = seg.unwrap_or(16 << 20);
        let (archive, times) = futures::try_join!(Archive::load(repo, &ns, seg_size), async {
            Ok(repo.wal_list_times(&ns).await?)
        })?;
        let stored: BTreeMap<String, jiff::Timestamp> = times.into_iter().collect();
        let mut runs: Vec<Run> = Vec::new();
        let mut gaps = Vec::new();
        for s in &archive.segments {
            let name = s.name(seg_size);
            match runs.last_mut() {
                Some(r)
                    if r.timeline == s.timeline && {
                        let last = SegName::parse(&r.last, seg_size).expect("a segment name");
                        last.segno + 1 == s.segno
                    } =>
                {
                    r.last = name.clone();
                    r.segments += 1;
                    r.last_stored = stored.get(&name).copied();
                }
                prev => {
                    if let Some(r) = prev.filter(|r| r.timeline == s.timeline) {
                        gaps.push((r.last.clone(), name.clone()));
                    }
                    runs.push(Run {
                        timeline: s.timeline,
                        first: name.clone(),
                        last: name.clone(),
                        segments: 1,
                        last_stored: stored.get(&name).copied(),
                    });
                }
            }
        }
        let mut stanzas: BTreeSet<String> = BTreeSet::new();
        let oldest = bases.iter().min_by_key(|(b, _)| b.stored);
        for (_, f) in &bases {
            stanzas.insert(f.stanza.clone());
        }
        // The newest point: follow the newest timeline whose history holds the oldest
        // backup, segment by segment from that backup's start, while nothing is missing.
        let (mut to, mut tli) = (None, None);
        if let Some((b, _)) = oldest {
            let best = archive.timelines().into_iter().rev().find(|t| {
                archive
                    .view(*t)
                    .is_ok_and(|v| v.contains(b.timeline, b.stop_lsn))
            });
            if let Some(t) = best {
                let view = archive.view(t)?;
                let mut segno = b.start_lsn / seg_size;
                loop {
                    let owner = view.tlis_for(segno, seg_size)[0];
                    let name = SegName {
                        timeline: owner,
                        segno,
                    }
                    .name(seg_size);
                    if !archive.names.contains(&name) {
                        break;
                    }
                    to = stored.get(&name).copied().or(to);
                    segno += 1;
                }
                tli = Some(t);
            }
        }
        out.push(NamespaceShow {
            namespace: ns,
            stanzas: stanzas.into_iter().collect(),
            timelines: archive.timelines().into_iter().collect(),
            runs,
            gaps,
            physical_backups: bases.len(),
            recoverable_from: oldest.map(|(_, f)| f.stop_time.clone()),
            recoverable_to: to,
            recoverable_timeline: tli,
        });
    }
    Ok(out)
}

/// What WAL retention removed (or, in a dry run, would remove), per namespace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalRetention {
    pub namespaces: Vec<NamespaceRetention>,
    pub removed_files: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamespaceRetention {
    pub namespace: String,
    pub physical_backups: usize,
    pub kept_files: usize,
    pub removed: Vec<String>,
}

/// Remove the WAL no retained backup or point of the window needs.
pub async fn apply(
    repo: &FullRepo,
    window: jiff::SignedDuration,
    dry_run: bool,
) -> Result<WalRetention> {
    let (listing, namespaces) = futures::try_join!(repo.snapshot_listing(), repo.wal_namespaces())?;
    let snaps = listing.snapshots;
    let now = repo.now();
    let mut out = WalRetention::default();
    for ns in namespaces {
        let (bases, seg) = bases_of(&snaps, &ns);
        let Some(seg_size) = seg else {
            out.namespaces.push(NamespaceRetention {
                namespace: ns,
                physical_backups: 0,
                kept_files: 0,
                removed: Vec::new(),
            });
            continue;
        };
        let (archive, times) = futures::try_join!(Archive::load(repo, &ns, seg_size), async {
            Ok(repo.wal_list_times(&ns).await?)
        })?;
        let stored: BTreeMap<String, jiff::Timestamp> = times.into_iter().collect();
        let bases: Vec<Base> = bases.into_iter().map(|(b, _)| b).collect();
        let keep = needed(&archive, &stored, &bases, seg_size, window, now)?;
        let mut removed: Vec<String> = archive
            .names
            .iter()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        removed.sort();
        if !dry_run {
            repo.wal_remove(&ns, &removed).await?;
        }
        out.removed_files += removed.len();
        out.namespaces.push(NamespaceRetention {
            namespace: ns,
            physical_backups: bases.len(),
            kept_files: keep.len(),
            removed,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::HistoryEntry;

    const SEG: u64 = 16 << 20;

    fn seg(tli: u32, segno: u64) -> String {
        SegName {
            timeline: tli,
            segno,
        }
        .name(SEG)
    }

    /// Timeline 1 with segments 1..=20; timeline 2 branched at segment 15 (a drill), with
    /// segments 15..=18; backups on timeline 1 at segments 3–4 and 10–11.
    fn archive() -> Archive {
        let mut a = Archive::default();
        for s in 1..=20 {
            a.segments.push(SegName {
                timeline: 1,
                segno: s,
            });
        }
        for s in 15..=18 {
            a.segments.push(SegName {
                timeline: 2,
                segno: s,
            });
        }
        a.segments.sort();
        a.names = a.segments.iter().map(|s| s.name(SEG)).collect();
        a.names.insert("00000002.history".into());
        a.histories.insert(
            2,
            vec![HistoryEntry {
                parent: 1,
                switch_lsn: 15 * SEG + 100,
            }],
        );
        a
    }

    fn base(n: &str, start: u64, stop: u64, day: i64) -> Base {
        Base {
            snapshot: n.into(),
            timeline: 1,
            start_lsn: start * SEG + 40,
            stop_lsn: stop * SEG + 200,
            stored: jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * day),
        }
    }

    fn old(a: &Archive) -> BTreeMap<String, jiff::Timestamp> {
        a.names
            .iter()
            .map(|n| (n.clone(), jiff::Timestamp::UNIX_EPOCH))
            .collect()
    }

    #[test]
    fn window_from_the_newest_backup_before_it_and_every_descendant_timeline() {
        let a = archive();
        let now = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 30);
        let bases = [base("a", 3, 4, 10), base("b", 10, 11, 25)];
        // Window of 7 days opens on day 23: "a" (day 10) is the newest before it.
        let keep = needed(&a, &old(&a), &bases, SEG, DEFAULT_PITR_WINDOW, now).unwrap();
        assert!(!keep.contains(&seg(1, 1)) && !keep.contains(&seg(1, 2)));
        for s in 3..=20 {
            assert!(keep.contains(&seg(1, s)), "tl 1 segment {s}");
        }
        // The drill's timeline holds backup "a": kept from the switch on.
        for s in 15..=18 {
            assert!(keep.contains(&seg(2, s)), "tl 2 segment {s}");
        }
        assert!(keep.contains("00000002.history"));
    }

    #[test]
    fn old_backups_keep_only_their_own_range_and_unreachable_timelines_go() {
        let a = archive();
        let now = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 30);
        // The window opens on day 23; "b" (day 22) is the newest backup before it, so "a"
        // (day 1) keeps its own segments 3–4 only, and from "b" on everything stays on
        // timeline 1 and on timeline 2, which branched at segment 15, after "b" ended.
        let bases = [base("a", 3, 4, 1), base("b", 10, 11, 22)];
        let keep = needed(&a, &old(&a), &bases, SEG, DEFAULT_PITR_WINDOW, now).unwrap();
        let kept: Vec<u64> = (1..=20).filter(|s| keep.contains(&seg(1, *s))).collect();
        assert_eq!(kept, [3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
        assert!(keep.contains(&seg(2, 16)));
        // A single retained backup taken after the branch: timeline 2 does not contain it
        // (it branched at segment 15, the backup ended at 17), so the drill's WAL goes.
        let bases = [base("c", 16, 17, 29)];
        let keep = needed(&a, &old(&a), &bases, SEG, DEFAULT_PITR_WINDOW, now).unwrap();
        assert!((15..=18).all(|s| !keep.contains(&seg(2, s))));
        assert!((16..=20).all(|s| keep.contains(&seg(1, s))));
        assert!(!keep.contains(&seg(1, 15)));
    }

    #[test]
    fn young_files_and_other_names_are_never_removed() {
        let mut a = archive();
        a.names.insert("README".into());
        let now = jiff::Timestamp::UNIX_EPOCH + jiff::SignedDuration::from_hours(24 * 30);
        let mut stored = old(&a);
        stored.insert(seg(1, 1), now - jiff::SignedDuration::from_hours(1));
        let bases = [base("c", 16, 17, 29)];
        let keep = needed(&a, &stored, &bases, SEG, DEFAULT_PITR_WINDOW, now).unwrap();
        assert!(keep.contains(&seg(1, 1)) && keep.contains("README"));
        assert_eq!(
            segment_of("000000010000000000000002.00000028.backup", SEG)
                .unwrap()
                .segno,
            2
        );
        assert!(segment_of("000000010000000000000002.bak", SEG).is_none());
    }
}

//! WAL continuity over the archive, checked against one listing (no reads) along the
//! followed history: from the backup's start to its stop (and to an LSN target) every
//! segment is required; after that the archive is followed to its first missing segment.
//! A missing segment followed by later WAL on the same history is a **gap**: recovery would
//! stop there and promote, silently dropping everything after it, so a restore to the end or
//! to a time refuses it unless the user accepts it (`--allow-gap`).

use crate::control::SegName;
use crate::error::{PgError, Result};
use crate::restore::timeline::{Archive, TimelineView};

#[derive(Debug, Clone, serde::Serialize)]
pub struct WalPlan {
    /// First and last segment recovery cannot do without.
    pub required_from: String,
    pub required_to: String,
    /// The last segment before the first missing one.
    pub continuous_to: String,
    /// The first segment missing after `continuous_to` (where recovery ends).
    pub first_missing: String,
    /// Set when WAL on the followed history exists after `first_missing`.
    pub gap: Option<Gap>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Gap {
    pub first_missing: String,
    /// The first archived segment after the gap on the followed history.
    pub resumes_at: String,
    /// Archived segments on the followed history after the gap.
    pub segments_after: usize,
}

/// Check the archive from `start` to `required_to` (segment numbers) along `view`; `backup`
/// is the backup's own timeline and stop segment (its files may be read up to there).
pub fn check(
    archive: &Archive,
    view: &TimelineView,
    backup: SegName,
    start: u64,
    required_to: u64,
    seg_size: u64,
    snapshot: &str,
) -> Result<WalPlan> {
    let tlis = |segno: u64| -> Vec<u32> {
        let mut t = view.tlis_for(segno, seg_size);
        if segno <= backup.segno && !t.contains(&backup.timeline) {
            t.push(backup.timeline);
            t.sort_unstable_by(|a, b| b.cmp(a));
        }
        t
    };
    let name = |timeline: u32, segno: u64| SegName { timeline, segno }.name(seg_size);
    let mut last: Option<String> = None;
    let mut segno = start;
    loop {
        let names: Vec<String> = tlis(segno).into_iter().map(|t| name(t, segno)).collect();
        match names.iter().find(|n| archive.names.contains(*n)) {
            Some(n) => last = Some(n.clone()),
            None if segno <= required_to => {
                return Err(PgError::refused(
                    format!(
                        "WAL is not continuous: {} (needed to reach the target from backup {snapshot}) is not in the repository",
                        names[0]
                    ),
                    "`arsip wal list` shows what is archived; pick an earlier target or another backup",
                ));
            }
            None => {
                let after: Vec<&SegName> = archive
                    .segments
                    .iter()
                    .filter(|s| s.segno > segno && tlis(s.segno).contains(&s.timeline))
                    .collect();
                let first_missing = names[0].clone();
                return Ok(WalPlan {
                    required_from: name(backup.timeline, start),
                    required_to: name(tlis(required_to)[0], required_to),
                    continuous_to: last.unwrap_or_default(),
                    gap: after.first().map(|s| Gap {
                        first_missing: first_missing.clone(),
                        resumes_at: s.name(seg_size),
                        segments_after: after.len(),
                    }),
                    first_missing,
                });
            }
        }
        segno += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::HistoryEntry;

    const SEG: u64 = 16 << 20;

    fn archive(names: &[&str]) -> Archive {
        let names: std::collections::HashSet<String> =
            names.iter().map(|s| s.to_string()).collect();
        let mut segments: Vec<SegName> = names
            .iter()
            .filter_map(|n| SegName::parse(n, SEG))
            .collect();
        segments.sort();
        Archive {
            history_stored: Default::default(),
            names,
            segments,
            histories: Default::default(),
        }
    }

    #[test]
    fn gaps_ends_and_switch_points() {
        let tl1 = TimelineView {
            target: 1,
            ancestors: vec![],
        };
        let b = SegName {
            timeline: 1,
            segno: 3,
        };
        // continuous 2..=5, nothing after: the end, no gap
        let a = archive(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005",
        ]);
        let p = check(&a, &tl1, b, 2, 3, SEG, "x").unwrap();
        assert_eq!(p.continuous_to, "000000010000000000000005");
        assert_eq!(p.first_missing, "000000010000000000000006");
        assert!(p.gap.is_none());
        // 5 missing, 6 and 7 present: a gap
        let a = archive(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000006",
            "000000010000000000000007",
        ]);
        let p = check(&a, &tl1, b, 2, 3, SEG, "x").unwrap();
        let g = p.gap.unwrap();
        assert_eq!(g.first_missing, "000000010000000000000005");
        assert_eq!(g.resumes_at, "000000010000000000000006");
        assert_eq!(g.segments_after, 2);
        // inside the backup's range: refused whatever the target
        let a = archive(&["000000010000000000000002", "000000010000000000000004"]);
        assert!(check(&a, &tl1, b, 2, 3, SEG, "x").is_err());
        // WAL on another history after the end is not a gap of this one
        let tl2 = TimelineView {
            target: 2,
            ancestors: vec![HistoryEntry {
                parent: 1,
                switch_lsn: 5 * SEG + 100,
            }],
        };
        let a = archive(&[
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005",
            "000000010000000000000009",
            "000000020000000000000005",
            "000000020000000000000006",
        ]);
        let p = check(&a, &tl2, b, 2, 3, SEG, "x").unwrap();
        assert_eq!(p.continuous_to, "000000020000000000000006");
        assert!(p.gap.is_none(), "{p:?}");
        // ... but on timeline 1 it is
        let p = check(&a, &tl1, b, 2, 3, SEG, "x").unwrap();
        assert_eq!(p.gap.unwrap().first_missing, "000000010000000000000006");
    }

    /// The child's copy of the segment holding its switch point is missing: the parent's
    /// copy of that segment (which holds the parent's records after the switch point) does
    /// not stand in for it. Today's recovery read it, replayed what the promotion had undone,
    /// and exited 0 on a mix of both histories; now it is a gap, refused before writing.
    #[test]
    fn the_parents_copy_of_a_switch_segment_is_not_the_childs() {
        let tl3 = TimelineView {
            target: 3,
            ancestors: vec![HistoryEntry {
                parent: 1,
                switch_lsn: 9 * SEG + 0x278,
            }],
        };
        let b = SegName {
            timeline: 1,
            segno: 3,
        };
        let mut names: Vec<String> = (2..=10)
            .map(|n| {
                SegName {
                    timeline: 1,
                    segno: n,
                }
                .name(SEG)
            })
            .collect();
        names.push(
            SegName {
                timeline: 3,
                segno: 10,
            }
            .name(SEG),
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = check(&archive(&refs), &tl3, b, 2, 3, SEG, "x").unwrap();
        assert_eq!(p.continuous_to, "000000010000000000000008");
        let g = p.gap.expect("the child's switch segment is a gap");
        assert_eq!(g.first_missing, "000000030000000000000009");
        assert_eq!(g.resumes_at, "00000003000000000000000A");
        // with the child's copy, the history is continuous on timeline 3
        names.push(
            SegName {
                timeline: 3,
                segno: 9,
            }
            .name(SEG),
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = check(&archive(&refs), &tl3, b, 2, 3, SEG, "x").unwrap();
        assert_eq!(p.continuous_to, "00000003000000000000000A");
        assert!(p.gap.is_none(), "{p:?}");
    }
}

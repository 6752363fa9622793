//! `forget`: retention. Snapshots are grouped by kind, source, host and **writer** (an
//! agent's snapshots never count towards another writer's `keep-last`, so an agent cannot
//! push good backups out by inventing snapshots), each group is filtered by the rules, and
//! the manifests of what no rule keeps are deleted; their data goes at the next prune.
//!
//! Ages and calendar buckets come from the time the store accepted each manifest (its clock,
//! not the writer's claim). A snapshot whose store gives no time is kept. The newest
//! snapshot of a group is kept unless the caller allows emptying a group.

use arsip_repo::FullRepo;
use arsip_repo::Snapshot;
use serde::Serialize;

use crate::{Error, Result};

/// The plan's default: 30 days of backups.
pub const DEFAULT_KEEP_WITHIN_DAYS: i64 = 30;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Policy {
    pub keep_last: Option<usize>,
    pub keep_hourly: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub keep_monthly: Option<usize>,
    pub keep_yearly: Option<usize>,
    /// Keep everything the store accepted within this long before now.
    pub keep_within: Option<jiff::SignedDuration>,
    /// Keep snapshots carrying one of these tags (`key` or `key=value`).
    pub keep_tags: Vec<String>,
}

impl Policy {
    fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.buckets().iter().all(|(_, n, _)| n.is_none())
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// The plan's default when no rule is given.
    pub fn or_default(self) -> Policy {
        if self.is_empty() {
            Policy {
                keep_within: Some(jiff::SignedDuration::from_hours(
                    24 * DEFAULT_KEEP_WITHIN_DAYS,
                )),
                ..self
            }
        } else {
            self
        }
    }

    fn buckets(&self) -> [(&'static str, Option<usize>, &'static str); 5] {
        [
            ("hourly", self.keep_hourly, "%Y-%m-%d %H"),
            ("daily", self.keep_daily, "%Y-%m-%d"),
            ("weekly", self.keep_weekly, "%G-W%V"),
            ("monthly", self.keep_monthly, "%Y-%m"),
            ("yearly", self.keep_yearly, "%Y"),
        ]
    }
}

#[derive(Debug, Clone)]
pub struct ForgetOptions {
    pub policy: Policy,
    /// Groups with their own rule: a group follows the first rule whose tag (`key=value`)
    /// one of its snapshots carries (the daemon tags a source's backups with their job);
    /// the others follow `policy`.
    pub by_tag: Vec<(String, Policy)>,
    /// Decide and report; delete nothing.
    pub dry_run: bool,
    /// Let a group lose its last snapshot.
    pub allow_empty: bool,
    /// Also forget snapshots of retired or compromised writers (no reader accepts them).
    pub revoked: bool,
    /// Calendar buckets (daily, weekly, …) are days in this time zone.
    pub time_zone: jiff::tz::TimeZone,
}

impl ForgetOptions {
    /// The rule a group of snapshots follows.
    fn policy_of(&self, group: &[Snapshot]) -> &Policy {
        self.by_tag
            .iter()
            .find(|(tag, _)| group.iter().any(|s| has_tag(s, tag)))
            .map_or(&self.policy, |(_, p)| p)
    }
}

/// Whether `s` carries `tag` (`key` or `key=value`).
fn has_tag(s: &Snapshot, tag: &str) -> bool {
    match tag.split_once('=') {
        Some((k, v)) => s.manifest.tags.get(k).is_some_and(|x| x == v),
        None => s.manifest.tags.contains_key(tag),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub id: String,
    /// The store's time of the manifest.
    pub stored: Option<jiff::Timestamp>,
    /// Why it stays (empty for a snapshot that goes).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub kind: String,
    pub source: String,
    pub host: String,
    pub writer: String,
    pub keep: Vec<Decision>,
    pub remove: Vec<Decision>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForgetOutcome {
    pub dry_run: bool,
    pub groups: Vec<Group>,
    /// Manifests of revoked writers forgotten (with `revoked`).
    pub revoked_removed: Vec<String>,
    pub kept: usize,
    pub removed: usize,
}

pub async fn run(repo: &FullRepo, opts: &ForgetOptions) -> Result<ForgetOutcome> {
    if opts.dry_run {
        return decide_all(repo, opts).await;
    }
    let r = decide_all(repo, opts).await;
    crate::audit::record(repo, "forget", Default::default(), &r, |o, d| {
        let ids: Vec<serde_json::Value> = o
            .groups
            .iter()
            .flat_map(|g| g.remove.iter().map(|x| x.id.clone().into()))
            .chain(o.revoked_removed.iter().map(|x| x.clone().into()))
            .collect();
        d.insert("forgotten".into(), ids.into());
        d.insert("kept".into(), o.kept.into());
    })
    .await;
    r
}

async fn decide_all(repo: &FullRepo, opts: &ForgetOptions) -> Result<ForgetOutcome> {
    let listing = repo.snapshot_listing().await?;
    let now = repo.now();
    let groups = crate::snapshots::by_source(listing.snapshots);
    let mut out = ForgetOutcome {
        dry_run: opts.dry_run,
        groups: Vec::new(),
        revoked_removed: Vec::new(),
        kept: 0,
        removed: 0,
    };
    for ((kind, source, host, writer), snaps) in groups {
        let policy = opts.policy_of(&snaps);
        let (keep, remove) = decide(snaps, policy, opts, now)?;
        out.kept += keep.len();
        out.removed += remove.len();
        out.groups.push(Group {
            kind,
            source,
            host,
            writer,
            keep,
            remove,
        });
    }
    if opts.revoked {
        out.revoked_removed = listing
            .revoked
            .iter()
            .map(|(name, _)| name.trim_start_matches("snapshots/").to_string())
            .collect();
    }
    if !opts.dry_run {
        let ids: Vec<String> = out
            .groups
            .iter()
            .flat_map(|g| g.remove.iter().map(|d| d.id.clone()))
            .chain(out.revoked_removed.iter().cloned())
            .collect();
        repo.forget(&ids).await?;
    }
    Ok(out)
}

/// Split one group into what stays (with why) and what goes.
fn decide(
    mut snaps: Vec<Snapshot>,
    p: &Policy,
    opts: &ForgetOptions,
    now: jiff::Timestamp,
) -> Result<(Vec<Decision>, Vec<Decision>)> {
    // Newest first, by the store's time.
    snaps.sort_by(|a, b| (b.stored, &b.id).cmp(&(a.stored, &a.id)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    for (n, s) in snaps.iter().enumerate() {
        let r = &mut reasons[n];
        let Some(t) = s.stored else {
            r.push("the store gives no time for it".into());
            continue;
        };
        if p.keep_last.is_some_and(|k| n < k) {
            r.push(format!("last {}", p.keep_last.unwrap()));
        }
        if let Some(w) = p.keep_within {
            if now.duration_since(t) <= w {
                r.push(format!("within {}", friendly(w)));
            }
        }
        for tag in &p.keep_tags {
            if has_tag(s, tag) {
                r.push(format!("tag {tag}"));
            }
        }
    }
    for (name, count, fmt) in p.buckets() {
        let Some(count) = count else { continue };
        let mut last: Option<String> = None;
        let mut taken = 0;
        for (n, s) in snaps.iter().enumerate() {
            if taken >= count {
                break;
            }
            let Some(t) = s.stored else { continue };
            let bucket = t.to_zoned(opts.time_zone.clone()).strftime(fmt).to_string();
            if last.as_deref() != Some(bucket.as_str()) {
                reasons[n].push(format!("{name} {bucket}"));
                last = Some(bucket);
                taken += 1;
            }
        }
    }
    if !opts.allow_empty && !snaps.is_empty() && reasons.iter().all(|r| r.is_empty()) {
        reasons[0].push("newest of its source (forgetting the last needs allow-empty)".into());
    }
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    for (s, r) in snaps.into_iter().zip(reasons) {
        let d = Decision {
            id: s.id,
            stored: s.stored,
            reasons: r,
        };
        if d.reasons.is_empty() {
            remove.push(d);
        } else {
            keep.push(d);
        }
    }
    Ok((keep, remove))
}

fn friendly(d: jiff::SignedDuration) -> String {
    let secs = d.as_secs();
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

/// Parse a duration such as `30d`, `12h`, `1w`, `2d12h`, `90m` (days are 24 hours).
pub fn parse_duration(s: &str) -> Result<jiff::SignedDuration> {
    let bad = || {
        Error::usage(format!(
            "{s:?} is not a duration (e.g. 30d, 12h, 1w, 2d12h)"
        ))
    };
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(jiff::SignedDuration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arsip_repo::Manifest;

    fn snap(n: u8, stored: &str) -> Snapshot {
        Snapshot {
            id: format!("{n:064}"),
            writer: "w".into(),
            stored: Some(stored.parse().unwrap()),
            manifest: Manifest {
                version: 1,
                kind: "k".into(),
                source: "s".into(),
                host: "h".into(),
                tags: Default::default(),
                time: stored.parse().unwrap(),
                end_time: stored.parse().unwrap(),
                logical_bytes: 0,
                added_bytes: 0,
                stored_bytes: 0,
                files: 0,
                facts: Default::default(),
                tree: vec![],
                tree_bytes: 0,
                session: None,
                audit_head: None,
            },
        }
    }

    fn opts(policy: Policy) -> ForgetOptions {
        ForgetOptions {
            policy,
            by_tag: Vec::new(),
            dry_run: true,
            allow_empty: false,
            revoked: false,
            time_zone: jiff::tz::TimeZone::get("Asia/Jakarta").unwrap(),
        }
    }

    /// `decide` under `o`'s policy for the source.
    fn split(
        snaps: Vec<Snapshot>,
        o: &ForgetOptions,
        now: jiff::Timestamp,
    ) -> (Vec<Decision>, Vec<Decision>) {
        decide(snaps.clone(), o.policy_of(&snaps), o, now).unwrap()
    }

    #[test]
    fn daily_buckets_follow_the_time_zone_and_keep_the_newest_of_each_day() {
        // 16:30 and 17:30 UTC are 23:30 and 00:30 in Jakarta: two different days.
        let snaps = vec![
            snap(1, "2026-11-01T16:30:00Z"),
            snap(2, "2026-11-01T17:30:00Z"),
            snap(3, "2026-11-01T18:00:00Z"),
        ];
        let p = Policy {
            keep_daily: Some(7),
            ..Default::default()
        };
        let now = "2026-11-02T00:00:00Z".parse().unwrap();
        let (keep, remove) = split(snaps, &opts(p), now);
        let ids = |v: &[Decision]| v.iter().map(|d| d.id[63..].to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&keep), ["3", "1"]);
        assert_eq!(ids(&remove), ["2"]);
    }

    #[test]
    fn within_last_and_the_newest_survivor() {
        let snaps: Vec<Snapshot> = (1..=5)
            .map(|d| snap(d, &format!("2026-11-{:02}T02:00:00Z", d)))
            .collect();
        let now: jiff::Timestamp = "2026-11-05T03:00:00Z".parse().unwrap();
        let p = Policy {
            keep_within: Some(parse_duration("2d").unwrap()),
            ..Default::default()
        };
        let (keep, remove) = split(snaps.clone(), &opts(p), now);
        assert_eq!((keep.len(), remove.len()), (2, 3));
        // No rule keeps anything: the newest stays unless emptying is allowed.
        let p = Policy {
            keep_within: Some(parse_duration("1s").unwrap()),
            ..Default::default()
        };
        let (keep, _) = split(snaps.clone(), &opts(p.clone()), now);
        assert_eq!(keep.len(), 1);
        assert!(keep[0].reasons[0].contains("newest"));
        let mut o = opts(p);
        o.allow_empty = true;
        assert!(split(snaps, &o, now).0.is_empty());
    }

    #[test]
    fn a_group_tagged_with_a_rule_follows_it() {
        let mut snaps: Vec<Snapshot> = (1..=5)
            .map(|d| snap(d, &format!("2026-11-{:02}T02:00:00Z", d)))
            .collect();
        let now: jiff::Timestamp = "2026-11-05T03:00:00Z".parse().unwrap();
        let rule = |n| Policy {
            keep_last: Some(n),
            ..Default::default()
        };
        let mut o = opts(rule(1));
        o.by_tag = vec![("arsip.job=b".into(), rule(4))];
        // No snapshot carries the tag: the general rule.
        assert_eq!(split(snaps.clone(), &o, now).0.len(), 1);
        // One does (a manual snapshot of the same source is in the group too).
        snaps[2]
            .manifest
            .tags
            .insert("arsip.job".into(), "b".into());
        assert_eq!(split(snaps.clone(), &o, now).0.len(), 4);
        // Another job's tag is not this rule's.
        snaps[2]
            .manifest
            .tags
            .insert("arsip.job".into(), "c".into());
        assert_eq!(split(snaps, &o, now).0.len(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(parse_duration("2d12h").unwrap().as_secs(), 60 * 3600);
        for bad in ["", "d", "12", "3x", "0d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

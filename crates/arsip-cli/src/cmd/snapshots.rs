//! `arsip snapshots`: list snapshots; damaged manifests are reported on stderr and make the
//! exit code 6.

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::repo::snapshot::Snapshot;
use arsip_ops::snapshots::{self, Filter, Listing};
use serde::Serialize;

use crate::cli::FilterArgs;
use crate::ctx::{human, Ctx, Render};
use crate::exit;

impl From<&FilterArgs> for Filter {
    fn from(f: &FilterArgs) -> Filter {
        Filter {
            kind: f.kind.clone(),
            source: f.source.clone(),
        }
    }
}

/// A listed snapshot as `--json` prints it.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    short_id: &'a str,
    time: jiff::Timestamp,
    end_time: jiff::Timestamp,
    kind: &'a str,
    source: &'a str,
    host: &'a str,
    tags: &'a std::collections::BTreeMap<String, String>,
    logical_bytes: u64,
    added_bytes: u64,
    stored_bytes: u64,
    files: u64,
    facts: &'a std::collections::BTreeMap<String, serde_json::Value>,
    writer: &'a str,
}

impl<'a> From<&'a Snapshot> for Row<'a> {
    fn from(s: &'a Snapshot) -> Row<'a> {
        let m = &s.manifest;
        Row {
            id: &s.id,
            short_id: s.short_id(),
            time: m.time,
            end_time: m.end_time,
            kind: &m.kind,
            source: &m.source,
            host: &m.host,
            tags: &m.tags,
            logical_bytes: m.logical_bytes,
            added_bytes: m.added_bytes,
            stored_bytes: m.stored_bytes,
            files: m.files,
            facts: &m.facts,
            writer: &s.writer,
        }
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct Rows<'a>(Vec<Row<'a>>);

impl Render for Rows<'_> {
    fn human(&self) -> String {
        let mut out = format!(
            "{:<8}  {:<20}  {:<8}  {:>10}  {:<12}  source / tags\n",
            "id", "time (UTC)", "kind", "size", "host"
        );
        for r in &self.0 {
            let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!(
                "{:<8}  {:<20}  {:<8}  {:>10}  {:<12}  {} {}\n",
                r.short_id,
                r.time.strftime("%Y-%m-%d %H:%M:%S"),
                r.kind,
                human(r.logical_bytes),
                r.host,
                r.source,
                tags.join(",")
            );
        }
        out + &format!("{} snapshot(s)", self.0.len())
    }
}

/// List with a filter, warning on stderr about each damaged manifest.
pub async fn list(repo: &arsip_ops::repo::Repository, filter: &Filter) -> Result<Listing> {
    let listing = snapshots::list(repo, filter).await?;
    for d in &listing.damaged {
        eprintln!(
            "arsip: warning: {} is damaged and cannot be listed: {}",
            d.object, d.error
        );
    }
    Ok(listing)
}

pub async fn run(ctx: &Ctx<'_>, f: &FilterArgs) -> Result<u8> {
    let repo = ctx.open(Access::Full).await?;
    let listing = list(&repo, &f.into()).await?;
    ctx.emit(&Rows(listing.snapshots.iter().map(Row::from).collect()))?;
    Ok(if listing.damaged.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

//! `arsip snapshots`: list snapshots; damaged manifests are reported on stderr and make the
//! exit code 6.

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::repo::Snapshot;
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
            writer: f.writer.clone(),
            host: f.host.clone(),
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
    /// `root`, or the agent's label.
    writer_label: &'a str,
    /// When the store accepted the manifest, if the store says.
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<jiff::Timestamp>,
    /// The time `latest` orders by: `time`, never later than `stored` plus the allowed skew.
    effective_time: jiff::Timestamp,
}

impl<'a> Row<'a> {
    fn new(s: &'a Snapshot, listing: &'a Listing) -> Row<'a> {
        let m = &s.manifest;
        Row {
            writer_label: listing.writer_label(&s.writer),
            stored: s.stored,
            effective_time: s.effective_time(),
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
            "{:<8}  {:<20}  {:<8}  {:>10}  {:<12}  {:<12}  source / tags\n",
            "id", "time (UTC)", "kind", "size", "host", "writer"
        );
        for r in &self.0 {
            let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            // A claimed time the store contradicts is shown as the store's, marked.
            let time = if r.effective_time != r.time {
                format!("{}*", r.effective_time.strftime("%Y-%m-%d %H:%M:%S"))
            } else {
                r.time.strftime("%Y-%m-%d %H:%M:%S").to_string()
            };
            out += &format!(
                "{:<8}  {:<20}  {:<8}  {:>10}  {:<12}  {:<12}  {} {}\n",
                r.short_id,
                time,
                r.kind,
                human(r.logical_bytes),
                r.host,
                r.writer_label,
                r.source,
                tags.join(",")
            );
        }
        out + &format!("{} snapshot(s)", self.0.len())
    }
}

/// List with a filter, warning on stderr about each damaged manifest.
pub async fn list(repo: &arsip_ops::repo::FullRepo, filter: &Filter) -> Result<Listing> {
    let listing = snapshots::list(repo, filter).await?;
    for d in &listing.damaged {
        eprintln!(
            "arsip: warning: {} is damaged and cannot be listed: {}",
            d.object, d.error
        );
    }
    if !listing.revoked.is_empty() {
        eprintln!(
            "arsip: note: {} snapshot(s) of retired or compromised agents are not listed: no \
             reader accepts them (`arsip check` lists them)",
            listing.revoked.len()
        );
    }
    Ok(listing)
}

pub async fn run(ctx: &Ctx<'_>, f: &FilterArgs) -> Result<u8> {
    let repo = ctx.open_reading(Access::Full, "listing snapshots").await?;
    let listing = list(&repo, &f.into()).await?;
    ctx.emit(&Rows(
        listing
            .snapshots
            .iter()
            .map(|s| Row::new(s, &listing))
            .collect(),
    ))?;
    Ok(if listing.damaged.is_empty() {
        exit::OK
    } else {
        exit::DAMAGED
    })
}

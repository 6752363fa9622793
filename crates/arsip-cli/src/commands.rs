//! One function per command: open what it needs, call the operation, print the result
//! (human text, or JSON with `--json`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arsip_files::restore;
use arsip_repo::check::{self, ReadData};
use arsip_repo::snapshot::Snapshot;
use arsip_repo::txn::{SnapshotMeta, SnapshotTxn};
use arsip_repo::{InitOptions, OpenWith, RepoError, Repository};
use arsip_storage::backend::{self, Location};
use arsip_storage::DynStore;
use futures::TryStreamExt;
use serde_json::json;

use crate::cli::{
    BackupCmd, CheckArgs, Cli, Command, FilterArgs, InitArgs, KeyCmd, RestoreArgs, TagArgs,
};
use crate::{exit, progress, secrets};

pub async fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx { cli: &cli };
    match &cli.command {
        Command::Init(a) => ctx.init(a).await,
        Command::Backup(b) => ctx.backup(b).await,
        Command::Snapshots(f) => ctx.snapshots(f).await,
        Command::Restore(r) => ctx.restore(r).await,
        Command::Check(c) => ctx.check(c).await,
        Command::Stats => ctx.stats().await,
        Command::Key(k) => ctx.key(k).await,
        Command::Wal(w) => crate::pg::wal(&cli, w).await,
        Command::Quickstart(q) => crate::pg::quickstart(&cli, q).await,
    }
}

struct Ctx<'a> {
    cli: &'a Cli,
}

/// How a command may touch storage.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// Backup paths: a wrapper refuses every delete (create-only by contract already).
    AppendOnly,
    Full,
}

/// Open the store at `--repo`: backend, then the test-only fault hook, then retries.
pub(crate) fn open_store(repo: Option<&str>, create_dir: bool, mode: Mode) -> Result<DynStore> {
    let repo = repo.context("no repository given: pass --repo LOCATION or set ARSIP_REPO")?;
    let loc = Location::parse(repo)?;
    let mut store: DynStore = backend::open(&loc, create_dir)?;
    if let Ok(spec) = std::env::var("ARSIP_TEST_FAULTS") {
        let plan = arsip_storage::fault::FaultPlan::parse(&spec).map_err(anyhow::Error::msg)?;
        store = Arc::new(arsip_storage::fault::Faulty::new(store, plan));
    }
    let policy = arsip_storage::retry::RetryPolicy::default();
    store = Arc::new(arsip_storage::retry::Retry::new(store, policy));
    if mode == Mode::AppendOnly {
        store = Arc::new(arsip_storage::append_only::AppendOnly::new(store));
    }
    Ok(store)
}

fn parse_tags(t: &TagArgs) -> Result<BTreeMap<String, String>> {
    t.tags
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("tag {s:?} is not KEY=VALUE"),
        })
        .collect()
}

fn size_arg(s: &str, what: &str) -> Result<u32> {
    arsip_repo::index::parse_size(s)
        .and_then(|n| u32::try_from(n).ok())
        .with_context(|| format!("{what}: {s:?} is not a size (bytes, or with K/M/G)"))
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Ctx<'_> {
    fn progress(&self) -> bool {
        progress::enabled(self.cli.json, self.cli.quiet)
    }

    fn info(&self, msg: impl AsRef<str>) {
        if !self.cli.quiet && !self.cli.json {
            eprintln!("{}", msg.as_ref());
        }
    }

    async fn open(&self, mode: Mode) -> Result<Arc<Repository>> {
        let store = open_store(self.cli.repo.as_deref(), false, mode)?;
        let with = secrets::open_with(self.cli.key_file.as_deref())?;
        let repo = Repository::open(store, with, arsip_repo::clock::from_env()).await?;
        Ok(Arc::new(repo))
    }

    async fn init(&self, a: &InitArgs) -> Result<u8> {
        let opts = InitOptions {
            chunker: arsip_repo::keys::ChunkerParams {
                min: size_arg(&a.chunk_min, "--chunk-min")?,
                avg: size_arg(&a.chunk_avg, "--chunk-avg")?,
                max: size_arg(&a.chunk_max, "--chunk-max")?,
            },
            compression_level: a.compression,
            pack_size: size_arg(&a.pack_size, "--pack-size")?,
            block_size: size_arg(&a.block_size, "--block-size")?,
        };
        let store = open_store(self.cli.repo.as_deref(), true, Mode::Full)?;
        let password = secrets::password("new repository password: ", true)?;
        let (repo, _) =
            Repository::init(store, Some(&password), &opts, arsip_repo::clock::from_env()).await?;
        if let Some(out) = &a.key_file_out {
            let reserved = secrets::SecretFile::reserve(out)?;
            let (slot, file) = repo.add_keyfile("init key file").await?;
            reserved.write(&serde_json::to_vec_pretty(&file)?)?;
            self.info(format!(
                "wrote key file {} (slot {})",
                out.display(),
                slot.id
            ));
        }
        if self.cli.json {
            print_json(
                &json!({"repo_id": repo.config.repo_id, "location": repo.store.describe()}),
            )?;
        } else {
            self.info(format!(
                "created arsip repository {} at {}",
                &repo.config.repo_id[..8],
                repo.store.describe()
            ));
            self.info(
                "keep the password safe: without it (or a key file) the data cannot be recovered",
            );
        }
        Ok(exit::OK)
    }

    async fn backup(&self, b: &BackupCmd) -> Result<u8> {
        if let BackupCmd::Pg(a) = b {
            return crate::pg::backup(self.cli, a).await;
        }
        let repo = self.open(Mode::AppendOnly).await?;
        let backup = SnapshotTxn::start(repo).await?;
        let bar = progress::follow_backup(self.progress(), backup.progress());
        let outcome = match b {
            BackupCmd::Files { paths, tags } => {
                let source = paths
                    .iter()
                    .map(|p| {
                        std::path::absolute(p)
                            .unwrap_or(p.clone())
                            .display()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let meta = SnapshotMeta {
                    kind: "files".into(),
                    source,
                    tags: parse_tags(tags)?,
                    facts: BTreeMap::new(),
                };
                let opts = arsip_files::backup::FilesOptions {
                    paths: paths.clone(),
                    ..Default::default()
                };
                arsip_files::backup::files(backup, opts, meta)
                    .await
                    .map(|o| o.backup)
            }
            BackupCmd::Pg(_) => unreachable!("dispatched before the generic backup path"),
            BackupCmd::Stdin { name, tags } => {
                let meta = SnapshotMeta {
                    kind: "stdin".into(),
                    source: name.clone(),
                    tags: parse_tags(tags)?,
                    facts: BTreeMap::new(),
                };
                arsip_files::backup::stream(backup, std::io::stdin(), name.clone(), meta).await
            }
        };
        if let Some((pb, h)) = bar {
            h.abort();
            pb.finish_and_clear();
        }
        let o = outcome?;
        if self.cli.json {
            print_json(&o)?;
        } else {
            println!(
                "snapshot {} saved: {} in {} file(s), {} new, {} stored, {:.1}s ({}/s)",
                &o.id[..8],
                human(o.logical_bytes),
                o.files,
                human(o.added_bytes),
                human(o.stored_bytes),
                o.seconds,
                human((o.logical_bytes as f64 / o.seconds.max(1e-6)) as u64)
            );
        }
        Ok(exit::OK)
    }

    /// Snapshots matching a filter; damaged manifests are reported on stderr.
    async fn list(
        &self,
        repo: &Repository,
        f: &FilterArgs,
    ) -> Result<(Vec<Snapshot>, Vec<String>)> {
        let (snaps, bad) = repo.snapshots_report().await?;
        for (name, e) in &bad {
            eprintln!("arsip: warning: {name} is damaged and cannot be listed: {e}");
        }
        let snaps = snaps
            .into_iter()
            .filter(|s| f.kind.as_ref().is_none_or(|k| &s.manifest.kind == k))
            .filter(|s| f.source.as_ref().is_none_or(|k| &s.manifest.source == k))
            .collect();
        Ok((snaps, bad.into_iter().map(|(n, _)| n).collect()))
    }

    async fn snapshots(&self, f: &FilterArgs) -> Result<u8> {
        let repo = self.open(Mode::Full).await?;
        let (snaps, bad) = self.list(&repo, f).await?;
        if self.cli.json {
            let v: Vec<_> = snaps
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id, "short_id": s.short_id(), "time": s.manifest.time, "end_time": s.manifest.end_time,
                        "kind": s.manifest.kind, "source": s.manifest.source, "host": s.manifest.host,
                        "tags": s.manifest.tags, "logical_bytes": s.manifest.logical_bytes,
                        "added_bytes": s.manifest.added_bytes, "stored_bytes": s.manifest.stored_bytes,
                        "files": s.manifest.files, "facts": s.manifest.facts, "writer": s.writer,
                    })
                })
                .collect();
            print_json(&v)?;
        } else {
            println!(
                "{:<8}  {:<20}  {:<8}  {:>10}  {:<12}  source / tags",
                "id", "time (UTC)", "kind", "size", "host"
            );
            for s in &snaps {
                let tags: Vec<String> = s
                    .manifest
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<8}  {:<20}  {:<8}  {:>10}  {:<12}  {} {}",
                    s.short_id(),
                    s.manifest.time.strftime("%Y-%m-%d %H:%M:%S"),
                    s.manifest.kind,
                    human(s.manifest.logical_bytes),
                    s.manifest.host,
                    s.manifest.source,
                    tags.join(",")
                );
            }
            println!("{} snapshot(s)", snaps.len());
        }
        Ok(if bad.is_empty() {
            exit::OK
        } else {
            exit::DAMAGED
        })
    }

    async fn restore(&self, r: &RestoreArgs) -> Result<u8> {
        if let Some(sub) = &r.pg {
            return crate::pg::restore(self.cli, sub).await;
        }
        let repo = self.open(Mode::Full).await?;
        let (snaps, bad) = self.list(&repo, &r.filter).await?;
        let snap = match arsip_repo::snapshot::select(&snaps, &r.snapshot) {
            Ok(s) => s.clone(),
            Err(RepoError::NotFound(_))
                if bad
                    .iter()
                    .any(|n| n.trim_start_matches("snapshots/").starts_with(&r.snapshot)) =>
            {
                return Err(RepoError::corrupt(
                    format!("snapshot {}", r.snapshot),
                    "its manifest is damaged",
                )
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        let reader = arsip_repo::read::Reader::open(repo).await?;
        let pb = progress::bytes_bar(
            self.progress(),
            Some(snap.manifest.logical_bytes),
            "restoring",
        );
        let on_bytes = |n: u64| pb.inc(n);
        let outcome = if r.stdout {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            restore::to_writer(&reader, &snap, &mut w, &on_bytes).await
        } else {
            restore::to_dir(&reader, &snap, r.to.as_deref().unwrap(), &on_bytes).await
        };
        pb.finish_and_clear();
        let o = outcome?;
        if self.cli.json && !r.stdout {
            print_json(&o)?;
        } else {
            self.info(format!(
                "restored snapshot {}: {} file(s), {} in {:.1}s ({}/s)",
                &o.snapshot[..8],
                o.files,
                human(o.bytes),
                o.seconds,
                human((o.bytes as f64 / o.seconds.max(1e-6)) as u64)
            ));
        }
        Ok(exit::OK)
    }

    async fn check(&self, c: &CheckArgs) -> Result<u8> {
        let repo = self.open(Mode::Full).await?;
        let read = if c.read_data {
            ReadData::Subset(100.0)
        } else if let Some(p) = &c.read_data_subset {
            let pct: f64 = p
                .trim_end_matches('%')
                .parse()
                .with_context(|| format!("--read-data-subset {p:?} is not a percentage"))?;
            if !(pct > 0.0 && pct <= 100.0) {
                bail!("--read-data-subset must be in (0, 100]");
            }
            ReadData::Subset(pct)
        } else {
            ReadData::None
        };
        let report = check::check(repo, read).await?;
        if self.cli.json {
            print_json(&report)?;
        } else {
            println!(
                "{} snapshot(s), {} index(es), {} pack(s), {} chunk(s); read {} pack(s), {}",
                report.snapshots,
                report.indexes,
                report.packs,
                report.chunks,
                report.packs_read,
                human(report.bytes_read)
            );
            if report.unreferenced_packs > 0 {
                println!("{} unreferenced pack(s) from interrupted backups (harmless; prune removes them)", report.unreferenced_packs);
            }
            for p in &report.problems {
                println!("DAMAGED {}: {}", p.object, p.message);
            }
            for s in &report.affected_snapshots {
                println!("AFFECTED snapshot {s}");
            }
            println!(
                "{}",
                if report.ok() {
                    "no problems found"
                } else {
                    "problems found"
                }
            );
        }
        if !report.ok() {
            eprintln!("HINT: restore affected data from another snapshot or a copy of the repository; unaffected snapshots restore normally");
        }
        Ok(if report.ok() { exit::OK } else { exit::DAMAGED })
    }

    async fn stats(&self) -> Result<u8> {
        let repo = self.open(Mode::Full).await?;
        let (snaps, _) = self.list(&repo, &FilterArgs::default()).await?;
        let index = repo.load_index().await?;
        // Streamed: a listing of millions of objects is never held in memory.
        let (objects, stored_bytes, packs) = repo
            .store
            .list("")
            .try_fold((0usize, 0u64, 0usize), |(n, bytes, packs), o| async move {
                Ok((
                    n + 1,
                    bytes + o.size,
                    packs + usize::from(o.key.starts_with("data/")),
                ))
            })
            .await?;
        let logical_bytes: u64 = snaps.iter().map(|s| s.manifest.logical_bytes).sum();
        let mut unique_raw = 0u64;
        let mut last = None;
        for s in index.slots() {
            if last != Some(s.id) {
                unique_raw += s.raw_len as u64;
                last = Some(s.id);
            }
        }
        let v = json!({
            "snapshots": snaps.len(), "logical_bytes": logical_bytes, "stored_bytes": stored_bytes,
            "unique_bytes": unique_raw, "chunks": index.len(), "packs": packs, "objects": objects,
            "dedup_ratio": if stored_bytes > 0 { logical_bytes as f64 / stored_bytes as f64 } else { 0.0 },
            "index_memory_bytes": index.len() * arsip_repo::index::SLOT_SIZE,
        });
        if self.cli.json {
            print_json(&v)?;
        } else {
            println!("snapshots:      {}", snaps.len());
            println!(
                "logical bytes:  {} (sum over snapshots)",
                human(logical_bytes)
            );
            println!("unique bytes:   {} (before compression)", human(unique_raw));
            println!(
                "stored bytes:   {} in {} objects, {} packs",
                human(stored_bytes),
                objects,
                packs
            );
            println!("chunks:         {}", index.len());
            println!(
                "ratio:          {:.2}× logical / stored",
                v["dedup_ratio"].as_f64().unwrap_or(0.0)
            );
        }
        Ok(exit::OK)
    }

    async fn key(&self, k: &KeyCmd) -> Result<u8> {
        let repo = self.open(Mode::Full).await?;
        match k {
            KeyCmd::Add {
                label,
                agent,
                keyfile,
                out,
            } => {
                if *agent {
                    let reserved = secrets::SecretFile::reserve(out.as_ref().unwrap())?;
                    let file = repo.add_agent(label).await?;
                    reserved.write(&serde_json::to_vec_pretty(&file)?)?;
                    self.emit(
                        json!({"agent": file.writer_id, "out": out}),
                        &format!(
                            "added agent {} → {}",
                            file.writer_id,
                            out.as_ref().unwrap().display()
                        ),
                    )?;
                } else if *keyfile {
                    let reserved = secrets::SecretFile::reserve(out.as_ref().unwrap())?;
                    let (slot, file) = repo.add_keyfile(label).await?;
                    reserved.write(&serde_json::to_vec_pretty(&file)?)?;
                    self.emit(
                        json!({"slot": slot.id, "out": out}),
                        &format!(
                            "added key-file slot {} → {}",
                            slot.id,
                            out.as_ref().unwrap().display()
                        ),
                    )?;
                } else {
                    let pw = secrets::new_password()?;
                    let slot = repo.add_password(&pw, label).await?;
                    self.emit(
                        json!({"slot": slot.id}),
                        &format!("added password slot {}", slot.id),
                    )?;
                }
            }
            KeyCmd::List => {
                let slots = repo.slots().await?;
                let writers = repo.writers().await?;
                if self.cli.json {
                    let s: Vec<_> = slots.iter().map(|s| json!({"id": s.id, "kind": s.kind, "label": s.label, "host": s.host, "created": s.created})).collect();
                    print_json(&json!({"slots": s, "agents": writers}))?;
                } else {
                    for s in &slots {
                        println!(
                            "slot   {}  {:<8}  {}  {}  {}",
                            s.id,
                            format!("{:?}", s.kind).to_lowercase(),
                            s.created.strftime("%Y-%m-%d %H:%M"),
                            s.host,
                            s.label
                        );
                    }
                    for w in &writers {
                        let state = if w.revoked.is_some() {
                            "revoked"
                        } else {
                            "active"
                        };
                        println!(
                            "agent  {}  {state}  {}  {}",
                            w.writer_id,
                            w.created.strftime("%Y-%m-%d %H:%M"),
                            w.label
                        );
                    }
                }
            }
            KeyCmd::Remove { id } => {
                if repo.slots().await?.iter().any(|s| &s.id == id) {
                    repo.remove_slot(id).await?;
                    self.emit(json!({"removed": id}), &format!("removed key slot {id}"))?;
                } else {
                    repo.revoke_agent(id).await?;
                    self.emit(json!({"revoked": id}), &format!("revoked agent {id}"))?;
                }
            }
            KeyCmd::Passwd => {
                let old = self.opened_slot(&repo).await?;
                let pw = secrets::new_password()?;
                let slot = repo.add_password(&pw, "passwd").await?;
                repo.remove_slot(&old).await?;
                self.emit(
                    json!({"slot": slot.id, "removed": old}),
                    &format!("password changed (slot {} replaces {old})", slot.id),
                )?;
            }
        }
        Ok(exit::OK)
    }

    /// The password slot that the current password opens.
    async fn opened_slot(&self, repo: &Repository) -> Result<String> {
        let OpenWith::Password(pw) = secrets::open_with(self.cli.key_file.as_deref())? else {
            bail!("key passwd changes a password; open the repository with the password, not a key file")
        };
        for s in repo.slots().await? {
            if s.open(
                &repo.config.repo_id,
                &arsip_repo::keys::Secret::Password(&pw),
            )?
            .is_some()
            {
                return Ok(s.id);
            }
        }
        Err(RepoError::WrongKey.into())
    }

    fn emit(&self, v: serde_json::Value, text: &str) -> Result<()> {
        if self.cli.json {
            print_json(&v)
        } else {
            println!("{text}");
            Ok(())
        }
    }
}

//! `arsip import legacy-dump FILE...`: the old system's encrypted dumps as pg-logical
//! snapshots (arsip_pg::legacy).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;
use arsip_ops::open::Access;
use arsip_ops::pg::{
    self, default_zone, parse_time_in, ImportStatus as Status, LegacyImport, LegacyImportOutcome,
    PgError, TimeError,
};
use zeroize::Zeroizing;

use crate::cli::{ImportCmd, LegacyDumpArgs};
use crate::ctx::{human, Ctx, Render};
use crate::{exit, usage};

impl Render for LegacyImportOutcome {
    fn human(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            let name = Path::new(&f.file)
                .file_name()
                .map_or(f.file.clone(), |n| n.to_string_lossy().into_owned());
            match f.status {
                Status::Imported => {
                    let id = f.snapshot.as_deref().unwrap_or("?");
                    out += &format!(
                        "imported {name}: snapshot {} (database {}, {}, {}, {} table(s), {})\n",
                        &id[..8.min(id.len())],
                        f.database.as_deref().unwrap_or("?"),
                        f.time.map(|t| t.to_string()).unwrap_or_default(),
                        f.kdf.map_or("?", |k| k.as_str()),
                        f.tables.unwrap_or(0),
                        human(f.dump_bytes.unwrap_or(0)),
                    )
                }
                Status::Skipped => {
                    out += &format!(
                        "skipped  {name}: {}\n",
                        f.reason.as_deref().unwrap_or("already imported")
                    )
                }
                Status::Refused => {
                    out += &format!("refused  {name}: {}\n", f.reason.as_deref().unwrap_or("?"));
                    if let Some(h) = &f.hint {
                        out += &format!("         HINT: {h}\n");
                    }
                }
            }
        }
        out += &format!(
            "{} imported, {} skipped (already imported), {} refused",
            self.imported, self.skipped, self.refused
        );
        out
    }
}

/// The old system's key: from `--legacy-key-file` / `ARSIP_LEGACY_KEY_FILE` (no group or
/// other access, a trailing newline ignored), else `ARSIP_LEGACY_KEY`. Never from argv.
fn legacy_key(a: &LegacyDumpArgs) -> Result<Zeroizing<Vec<u8>>> {
    let mut key = if let Some(path) = &a.legacy_key_file {
        let mut f = std::fs::File::open(path)
            .map_err(|e| usage!("cannot read the legacy key file {}: {e}", path.display()))?;
        let mode = f.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(PgError::refused(
                format!(
                    "the legacy key file {} is open to its group or others (mode {:04o})",
                    path.display(),
                    mode & 0o7777
                ),
                format!(
                    "chmod 600 {} (a secret readable by others is not used)",
                    path.display()
                ),
            )
            .into());
        }
        let mut raw = Zeroizing::new(Vec::new());
        f.read_to_end(&mut raw)
            .map_err(|e| usage!("cannot read the legacy key file {}: {e}", path.display()))?;
        raw
    } else if let Some(v) = std::env::var_os("ARSIP_LEGACY_KEY") {
        Zeroizing::new(v.into_encoded_bytes())
    } else {
        return Err(usage!(
            "no legacy key: give the old system's BACKUP_ENCRYPTION_KEY in a file \
             (--legacy-key-file PATH or ARSIP_LEGACY_KEY_FILE, preferred) or in ARSIP_LEGACY_KEY"
        ));
    };
    while key.last() == Some(&b'\n') || key.last() == Some(&b'\r') {
        key.pop();
    }
    if key.is_empty() {
        return Err(usage!("the legacy key is empty"));
    }
    Ok(key)
}

pub async fn run(ctx: &Ctx<'_>, cmd: &ImportCmd) -> Result<u8> {
    let ImportCmd::LegacyDump(a) = cmd;
    let key = legacy_key(a)?;
    let zone = match a.time_zone.as_deref().filter(|z| !z.trim().is_empty()) {
        Some(spec) => default_zone(spec).map_err(|e| match e {
            TimeError::Invalid(m) => usage!("--time-zone/TZ {spec:?}: {m}"),
            TimeError::NoZone => usage!("--time-zone/TZ {spec:?} names no zone"),
        })?,
        None => jiff::tz::TimeZone::system(),
    };
    let time = match &a.time {
        None => None,
        Some(_) if a.files.len() != 1 => {
            return Err(usage!(
                "--time dates one file: give exactly one FILE with it"
            ))
        }
        Some(t) => Some(
            parse_time_in(t, Some(&zone))
                .map_err(|e| match e {
                    TimeError::Invalid(m) => usage!("--time: {m}"),
                    TimeError::NoZone => usage!("--time {t:?} has no zone"),
                })?
                .0,
        ),
    };
    let tags = arsip_ops::backup::parse_tags(&a.tags)?;
    let repo = ctx
        .open_full(
            Access::AppendOnly,
            "importing legacy dumps (it lists snapshots to skip files already imported)",
        )
        .await?;
    let opts = LegacyImport {
        files: a.files.clone(),
        key,
        zone,
        time,
        source: a.source.clone(),
        tags,
        pbkdf2_iterations: a.pbkdf2_iter,
        settings: ctx.pg_settings(),
    };
    let out = pg::import_legacy(repo, &opts).await?;
    ctx.emit(&out)?;
    match out.refusal_class() {
        None => Ok(exit::OK),
        Some(class) => {
            if !ctx.cli.json {
                eprintln!(
                    "arsip: error: {} of {} file(s) refused",
                    out.refused,
                    out.files.len()
                );
            }
            Ok(crate::exit_code(class).0)
        }
    }
}

//! The restore plan: every decision of a physical restore, made before a byte is written —
//! which backup, which timeline, whether the archive holds the WAL to get there (and whether
//! it has a gap), where the tablespaces go, whether the PostgreSQL programs match, how the
//! unattended `restore_command` will authenticate, whether the restored cluster archives,
//! and the exact recovery settings. `--dry-run` prints it and stops; a restore executes it
//! step by step ([`super::materialise`], [`super::recovery_conf`], [`super::start`]).

use std::path::{Path, PathBuf};

use arsip_repo::FullRepo;
use arsip_repo::KeyFile;
use arsip_repo::Snapshot;

use crate::control::{bin_major, format_lsn, pg_bin_dir, SegName};
use crate::error::{PgError, Result};
use crate::physical::PhysicalFacts;
use crate::restore::recovery_conf::{conf_quote, plain_path, RECOVERY_KEY};
use crate::restore::tablespace::{tablespace_dirs, TablespacePlan};
use crate::restore::target::{Target, TargetAction};
use crate::restore::timeline::{self, Archive, Candidate, TimelineChoice};
use crate::restore::wal::{self, WalPlan};
use crate::restore::{Credential, PhysicalRestore};

/// Where the backup starts and stops.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupPoint {
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal: String,
    pub stop_wal: String,
    pub stop_time: String,
    pub server_version: String,
}

/// How `restore_command` authenticates.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialPlan {
    /// The key file `restore_command` names.
    pub key_file: PathBuf,
    /// Set when that is a recovery key this restore writes (and recovery removes).
    pub recovery_key: Option<PathBuf>,
    pub note: String,
}

/// Whether the restored cluster archives into the source's namespace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Archiving {
    pub into_source_namespace: bool,
    pub note: String,
}

/// A secret that must not reach Debug output or the serialized plan.
#[derive(Clone)]
pub(crate) struct SecretKeyFile(pub(crate) KeyFile);

impl std::fmt::Debug for SecretKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeyFile(slot {}, key redacted)", self.0.slot_id)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestorePlan {
    pub snapshot: String,
    pub snapshot_time: jiff::Timestamp,
    pub stanza: String,
    pub namespace: String,
    pub to: PathBuf,
    pub major: u32,
    pub pg_bin: PathBuf,
    pub backup: BackupPoint,
    pub target: Target,
    pub target_description: String,
    pub target_action: TargetAction,
    pub inclusive: bool,
    pub timeline: TimelineChoice,
    pub wal: WalPlan,
    pub allow_gap: bool,
    pub tablespaces: Vec<TablespacePlan>,
    pub archiving: Archiving,
    pub credential: CredentialPlan,
    /// The lines appended to postgresql.auto.conf.
    pub recovery_settings: Vec<String>,
    pub start: bool,
    pub port: Option<u16>,
    /// Things the user must know: newer backups or WAL off the followed history, an accepted
    /// gap. Printed on stderr and kept in --json output.
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub(crate) snap: Snapshot,
    #[serde(skip)]
    pub(crate) recovery_key: Option<SecretKeyFile>,
}

pub(crate) fn dir_is_empty(d: &Path) -> Result<bool> {
    match std::fs::read_dir(d) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(crate::os::io_at(d, e)),
    }
}

/// Whether the postgres OS user (when we are root) can read `p`.
fn postgres_can_read(p: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let Some((uid, gid)) = crate::os::postgres_owner() else {
        return Ok(true);
    };
    let m = std::fs::metadata(p).map_err(|e| crate::os::io_at(p, e))?;
    Ok((m.uid() == uid && m.mode() & 0o400 != 0)
        || (m.gid() == gid && m.mode() & 0o040 != 0)
        || m.mode() & 0o004 != 0)
}

fn read_key_file(p: &Path) -> Result<KeyFile> {
    let raw = zeroize::Zeroizing::new(
        std::fs::read(p).map_err(|e| PgError::Tool(format!("cannot read {}: {e}", p.display())))?,
    );
    serde_json::from_slice(&raw).map_err(|_| {
        PgError::refused(
            format!("{} is not a full key file", p.display()),
            "a physical restore needs full read access: a key file from `arsip key add --keyfile`, or the password",
        )
    })
}

impl RestorePlan {
    /// Compute the plan. Reads the repository (one WAL listing, the `.history` files, key
    /// slots when a password is used) and the local file system; writes nothing.
    pub async fn compute(
        repo: &FullRepo,
        snaps: &[Snapshot],
        o: &PhysicalRestore,
    ) -> Result<RestorePlan> {
        if o.promote_as_primary && o.no_archive {
            return Err(PgError::usage(
                "--promote-as-primary and --no-archive contradict each other",
                "a restore archives into the source's WAL namespace only with --promote-as-primary; without it archiving is off already",
            ));
        }
        if let Target::Time(t) = &o.target {
            let now = repo.now();
            if t.at > now {
                return Err(PgError::refused(
                    format!(
                        "the target time {} is in the future (now {now}): recovery would replay every archived segment and then fail",
                        t.at
                    ),
                    "give a time in the past, or no target to replay all archived WAL",
                ));
            }
        }

        // The stanza's backups with their facts. A snapshot whose facts do not parse is
        // skipped with a warning naming the fact, and refused if it is the one asked for.
        let mut warnings = Vec::new();
        let mut cands = Vec::new();
        for s in snaps {
            match PhysicalFacts::of(s) {
                Ok(f) if f.stanza == o.stanza => {
                    let stop_lsn = f.stop_lsn()?;
                    cands.push(Candidate {
                        snap: s.clone(),
                        facts: f,
                        stop_lsn,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    if o.snapshot
                        .as_deref()
                        .is_some_and(|p| p != "latest" && s.id.starts_with(p))
                    {
                        return Err(e);
                    }
                    warnings.push(format!("skipped: {e}"));
                }
            }
        }
        let Some(newest) = cands.iter().max_by_key(|c| c.snap.manifest.time) else {
            return Err(PgError::refused(
                format!(
                    "this repository has no physical backup of stanza {:?}",
                    o.stanza
                ),
                "`arsip snapshots --kind pg-physical` lists them; --stanza selects another",
            ));
        };
        let ns = newest.facts.namespace.clone();
        let archive = Archive::load(repo, &ns, newest.facts.wal_segment_size).await?;
        let chosen = timeline::choose(
            &archive,
            &cands,
            o.snapshot.as_deref(),
            o.target_timeline.as_deref(),
            &o.target,
            newest.facts.wal_segment_size,
        )?;
        warnings.extend(chosen.warnings);
        let c = &cands[chosen.index];
        let f = &c.facts;
        let seg_size = f.wal_segment_size;
        let short = c.snap.short_id();

        // Targets the chosen backup cannot reach.
        match &o.target {
            Target::Lsn(l) if *l < c.stop_lsn => {
                return Err(PgError::refused(
                    format!(
                        "the target LSN {} is before the end of backup {short} (stop LSN {}): a backup is consistent only from its end",
                        format_lsn(*l),
                        f.stop_lsn
                    ),
                    "pick an earlier backup, or a later target",
                ));
            }
            Target::Time(t) if f.stop_time()? > t.at => {
                return Err(PgError::refused(
                    format!(
                        "the target time {} is before the end of backup {short} ({}): a backup is consistent only from its end",
                        t.at, f.stop_time
                    ),
                    "pick an earlier backup (or no SNAPSHOT: arsip picks one that ends before the target)",
                ));
            }
            _ => {}
        }

        // The target directory and tablespaces.
        let to = std::path::absolute(&o.to).map_err(|e| crate::os::io_at(&o.to, e))?;
        if to.join("postmaster.pid").exists() {
            return Err(PgError::refused(
                format!(
                    "{} holds postmaster.pid: a server may be running there",
                    to.display()
                ),
                "stop that server, or restore into another directory",
            ));
        }
        if !dir_is_empty(&to)? {
            return Err(PgError::refused(
                format!("{} is not empty", to.display()),
                "restore into a new or empty directory",
            ));
        }
        let originals = f
            .tablespace_map
            .as_deref()
            .map(crate::restore::tablespace::parse_tablespace_map)
            .unwrap_or_default();
        let tablespaces: Vec<TablespacePlan> = tablespace_dirs(&c.snap, f, &to, &o.tablespace_map)?
            .into_iter()
            .map(|(oid, dir)| TablespacePlan {
                original: originals
                    .iter()
                    .find(|(x, _)| *x == oid)
                    .map(|(_, l)| l.clone())
                    .unwrap_or_default(),
                oid,
                dir,
            })
            .collect();

        // PostgreSQL programs of the backup's major version.
        let settings = o.settings.clone();
        let (bin, have) = arsip_repo::blocking(move || {
            let bin = pg_bin_dir(&settings)?;
            let have = bin_major(&bin)?;
            Ok::<_, PgError>((bin, have))
        })
        .await?;
        if have != f.major {
            return Err(PgError::refused(
                format!(
                    "the backup is PostgreSQL {}, the programs in {} are {have}",
                    f.major,
                    bin.display()
                ),
                "set ARSIP_PG_BIN to the matching major version's bin directory",
            ));
        }

        // WAL continuity along the followed history.
        let start = f.start_wal()?;
        let stop = f.stop_wal()?;
        let required_to = match o.target {
            Target::Lsn(l) if l / seg_size >= stop.segno => l / seg_size,
            _ => stop.segno,
        };
        let walplan = wal::check(
            &archive,
            &chosen.view,
            SegName {
                timeline: f.timeline,
                segno: stop.segno,
            },
            start.segno,
            required_to,
            seg_size,
            short,
        )?;
        if let Some(g) = &walplan.gap {
            let what = format!(
                "the archive has a gap on the followed history: {} is missing, but {} later segment(s) are archived from {} on",
                g.first_missing, g.segments_after, g.resumes_at
            );
            match (&o.target, o.allow_gap) {
                (Target::End | Target::Time(_), false) => {
                    return Err(PgError::refused(
                        format!("{what}; recovery would stop at the gap and promote, without the WAL after it"),
                        format!(
                            "put {} back into the repository; or pass --allow-gap to recover up to the gap (to {}); a --target-time or --target-lsn before the gap needs --allow-gap too",
                            g.first_missing, walplan.continuous_to
                        ),
                    ));
                }
                (Target::End | Target::Time(_), true) => warnings.push(format!(
                    "{what}; --allow-gap: recovery ends at the gap, after {}",
                    walplan.continuous_to
                )),
                _ => warnings.push(format!(
                    "{what}; recovery cannot pass it: a target after {} is not reached",
                    walplan.continuous_to
                )),
            }
        }

        // How restore_command authenticates.
        let exe = plain_path(&o.arsip_exe, "the arsip binary path")?;
        if std::iter::once(&o.repo_location)
            .chain(&o.repo_fallback)
            .any(|l| {
                l.chars()
                    .any(|ch| ch.is_whitespace() || ch == '\'' || ch == '%')
            })
        {
            return Err(PgError::refused(
                "the repository location contains spaces, quotes or %",
                "use a plain location",
            ));
        }
        let recovery_key_path = to.join(RECOVERY_KEY);
        let (credential, secret) = match &o.credential {
            None => {
                return Err(PgError::refused(
                    "a physical restore needs the credential the repository was opened with, for its restore_command",
                    "open the repository with a password (ARSIP_PASSWORD_FILE) or a full key file (--key-file)",
                ))
            }
            Some(Credential::KeyFile(p)) => {
                let p = p
                    .canonicalize()
                    .map_err(|e| PgError::Tool(format!("--key-file {}: {e}", p.display())))?;
                if postgres_can_read(&p)? && plain_path(&p, "--key-file").is_ok() {
                    (
                        CredentialPlan {
                            key_file: p.clone(),
                            recovery_key: None,
                            note: format!("restore_command reads the key file {}", p.display()),
                        },
                        None,
                    )
                } else {
                    let k = read_key_file(&p)?;
                    (
                        CredentialPlan {
                            key_file: recovery_key_path.clone(),
                            recovery_key: Some(recovery_key_path.clone()),
                            note: format!(
                                "the postgres OS user cannot use {} (unreadable, or a path restore_command cannot hold): a copy is written to {} (mode 0600) and removed when recovery ends",
                                p.display(),
                                recovery_key_path.display()
                            ),
                        },
                        Some(SecretKeyFile(k)),
                    )
                }
            }
            Some(Credential::Password(pw)) => {
                let mut found = None;
                for slot in repo.slots().await? {
                    if let Some(k) = slot.derived_key_file(repo.repo_id(), pw)? {
                        found = Some((slot.id.clone(), k));
                        break;
                    }
                }
                let (slot, k) = found.ok_or(arsip_repo::RepoError::WrongKey)?;
                (
                    CredentialPlan {
                        key_file: recovery_key_path.clone(),
                        recovery_key: Some(recovery_key_path.clone()),
                        note: format!(
                            "the password's slot {slot} is unlocked once (one Argon2id run): its derived key is written to {} (mode 0600, owner postgres) for restore_command, and removed when recovery ends",
                            recovery_key_path.display()
                        ),
                    },
                    Some(SecretKeyFile(k)),
                )
            }
        };
        if credential.recovery_key.is_some() {
            plain_path(&to, "--to")?;
        }
        let key_s = plain_path(&credential.key_file, "the key file")?;

        let archiving = if o.promote_as_primary {
            Archiving {
                into_source_namespace: true,
                note: format!(
                    "--promote-as-primary: the restored cluster keeps the backup's archive_command and archives its new timeline into namespace {ns}; later restores of stanza {} follow it",
                    o.stanza
                ),
            }
        } else {
            Archiving {
                into_source_namespace: false,
                note: "archive_mode = off: this restore is not the primary, so it leaves no trace in the source's WAL namespace (--promote-as-primary makes it the new primary)".into(),
            }
        };

        // The recovery settings.
        let mut settings = vec![format!(
            "# written by arsip restore pg --physical (snapshot {short}, {})",
            repo.now()
        )];
        settings.push(format!(
            "restore_command = {}",
            conf_quote(&format!(
                "{exe} --repo {}{} --key-file {key_s} wal fetch --namespace {ns} --timeline {} %f %p",
                o.repo_location,
                o.repo_fallback
                    .as_ref()
                    .map_or(String::new(), |f| format!(" --repo-fallback {f}")),
                chosen.choice.follow
            ))
        ));
        if credential.recovery_key.is_some() {
            settings.push(format!(
                "recovery_end_command = {}",
                conf_quote(&format!("rm -f {key_s}"))
            ));
        }
        settings.extend(o.target.conf_line());
        if o.target != Target::End {
            settings.push(format!(
                "recovery_target_action = {}",
                conf_quote(o.target_action.as_str())
            ));
            if o.exclusive {
                settings.push("recovery_target_inclusive = off".into());
            }
        }
        settings.push(format!(
            "recovery_target_timeline = {}",
            conf_quote(&chosen.choice.follow.to_string())
        ));
        if let Some(p) = o.port {
            settings.push(format!("port = {p}"));
        }
        if !o.promote_as_primary {
            settings.push("archive_mode = off".into());
        }

        Ok(RestorePlan {
            snapshot: c.snap.id.clone(),
            snapshot_time: c.snap.manifest.time,
            stanza: o.stanza.clone(),
            namespace: ns,
            to,
            major: f.major,
            pg_bin: bin,
            backup: BackupPoint {
                timeline: f.timeline,
                start_lsn: f.start_lsn.clone(),
                stop_lsn: f.stop_lsn.clone(),
                start_wal: f.start_wal.clone(),
                stop_wal: f.stop_wal.clone(),
                stop_time: f.stop_time.clone(),
                server_version: f.server_version.clone(),
            },
            target_description: o.target.describe(),
            target: o.target.clone(),
            target_action: o.target_action,
            inclusive: !o.exclusive,
            timeline: chosen.choice,
            wal: walplan,
            allow_gap: o.allow_gap,
            tablespaces,
            archiving,
            credential,
            recovery_settings: settings,
            start: o.start,
            port: o.port,
            warnings,
            snap: c.snap.clone(),
            recovery_key: secret,
        })
    }

    /// The plan for people.
    pub fn text(&self) -> String {
        let mut s = format!(
            "restore plan (nothing written)\n  snapshot   {} ({}), PostgreSQL {}, stanza {}\n  backup     timeline {}, {} .. {} (WAL {} .. {}), stopped {}\n  target     {}{}\n  timeline   {}: {}\n",
            &self.snapshot[..12.min(self.snapshot.len())],
            self.snapshot_time,
            self.backup.server_version,
            self.stanza,
            self.backup.timeline,
            self.backup.start_lsn,
            self.backup.stop_lsn,
            self.backup.start_wal,
            self.backup.stop_wal,
            self.backup.stop_time,
            self.target_description,
            if self.target == Target::End {
                String::new()
            } else {
                format!(", then {}", self.target_action.as_str())
            },
            self.timeline.follow,
            self.timeline.reason,
        );
        s += &format!(
            "  WAL        required {} .. {}, archived continuously to {}{}\n",
            self.wal.required_from,
            self.wal.required_to,
            self.wal.continuous_to,
            match &self.wal.gap {
                Some(g) => format!(
                    "; GAP: {} missing, archive resumes at {}",
                    g.first_missing, g.resumes_at
                ),
                None => format!(" (then {} is not archived yet)", self.wal.first_missing),
            }
        );
        s += &format!("  into       {}\n", self.to.display());
        for t in &self.tablespaces {
            s += &format!(
                "  tablespace {} ({}) into {}\n",
                t.oid,
                t.original,
                t.dir.display()
            );
        }
        s += &format!("  archiving  {}\n", self.archiving.note);
        s += &format!("  credential {}\n", self.credential.note);
        s += "  settings   postgresql.auto.conf gets:\n";
        for l in &self.recovery_settings {
            s += &format!("               {l}\n");
        }
        for w in &self.warnings {
            s += &format!("  WARNING    {w}\n");
        }
        s
    }
}

//! Command-line definition: every command's arguments, declared once here with their
//! environment variable where one exists; precedence is flag > environment > default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "arsip",
    version,
    about = "Backup and disaster recovery for multi-tenant PostgreSQL + object storage"
)]
pub struct Cli {
    /// Repository: a directory, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix
    #[arg(long, global = true, env = "ARSIP_REPO")]
    pub repo: Option<String>,

    /// A copy of the repository (`arsip copy`) that restores, listings, `check`, `verify`
    /// and `wal fetch` read when the repository is unreachable (and `wal fetch` when a
    /// segment is missing from it). Its S3 settings: the `ARSIP_FALLBACK_` variables
    /// (`ARSIP_FALLBACK_S3_ENDPOINT`, `ARSIP_FALLBACK_AWS_ACCESS_KEY_ID`, …) if any is set,
    /// else the repository's own
    #[arg(
        long,
        global = true,
        env = "ARSIP_REPO_FALLBACK",
        value_name = "LOCATION"
    )]
    pub repo_fallback: Option<String>,

    /// Key file (a full key file, or agent credentials from `key add --agent`) instead of a password
    #[arg(long, global = true, env = "ARSIP_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars or informational output
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Local cache and index spill files [default: $XDG_CACHE_HOME/arsip, else ~/.cache/arsip]
    #[arg(long, global = true, env = "ARSIP_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Index memory budget before it spills to a mapped file in the cache dir (K/M/G suffix)
    #[arg(
        long,
        global = true,
        env = "ARSIP_INDEX_MEMORY",
        default_value = "256M",
        value_name = "SIZE"
    )]
    pub index_memory: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository
    Init(InitArgs),
    /// Back up files, directories or a stream
    #[command(subcommand)]
    Backup(BackupCmd),
    /// List snapshots
    Snapshots(FilterArgs),
    /// Restore a snapshot into a directory or to stdout
    Restore(RestoreArgs),
    /// Verify the repository's structure and, with --read-data, its content
    Check(CheckArgs),
    /// Mirror the repository into another location (another region): byte for byte, in
    /// dependency order, verified, resumable; storage credentials are enough
    Copy(CopyArgs),
    /// Retention: forget snapshots no rule keeps (their data goes at the next prune)
    Forget(ForgetArgs),
    /// Delete data no snapshot references and repack mostly unused packs, beside live backups
    Prune(PruneArgs),
    /// Whether the backups can be trusted: freshness, anomalies, integrity, a restore test
    Verify(VerifyArgs),
    /// The audit trail: every backup, restore, forget, prune, key change and repair
    Audit(AuditArgs),
    /// Repository statistics
    Stats,
    /// Rebuild what the repository lost from what it still holds (create-only)
    #[command(subcommand)]
    Repair(RepairCmd),
    /// Manage key slots and agent credentials
    #[command(subcommand)]
    Key(KeyCmd),
    /// PostgreSQL WAL archiving: archive_command and restore_command
    #[command(subcommand)]
    Wal(WalCmd),
    /// Try everything on a throwaway cluster: archive, back up, lose data, restore to a time
    Quickstart(QuickstartArgs),
    /// Import backups made by other systems
    #[command(subcommand)]
    Import(ImportCmd),
    /// The configuration file of `arsip serve`: check it and print what runs when
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run the configuration's schedules (backups, forget, prune, verify, WAL checks) until
    /// SIGTERM; several daemons may share a repository and run each job once
    Serve(ServeArgs),
    /// What every source's backups look like: last backup, RPO, 7-day success rate, size
    /// trend, storage, growth and cost, open alerts (from the running daemon)
    Status(StatusArgs),
    /// Tokens of the HTTP API of `arsip serve`
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The daemon's configuration (its state directory names its API address, its
    /// api.tokens a token)
    #[arg(long, env = "ARSIP_CONFIG", default_value = arsip_control::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Ask the daemon at this URL instead (e.g. https://backup-1:9851)
    #[arg(long, requires = "token_file")]
    pub daemon: Option<String>,
    /// A file holding an API token (read role is enough)
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Trust this CA for the daemon's TLS certificate
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Read the repositories the configuration names instead of asking a daemon: the runs
    /// from their job claims, sizes from the snapshots (with a full key)
    #[arg(long, conflicts_with = "daemon")]
    pub from_repository: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Write a new random token into FILE (mode 0600; never printed); name the file in the
    /// configuration's api.tokens with a role (read or operator)
    Generate {
        /// Where to write the token
        file: PathBuf,
        /// Replace the token in an existing file
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file
    #[arg(long, env = "ARSIP_CONFIG", default_value = arsip_control::config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate the file (every error with its line) and print the resolved plan: each
    /// job's next runs in its time zone and in UTC. Opens no repository, reads no secret
    Check(ConfigCheckArgs),
}

#[derive(Args, Debug)]
pub struct ConfigCheckArgs {
    /// The configuration file
    #[arg(long, env = "ARSIP_CONFIG", default_value = arsip_control::config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Next runs shown per job (at most 1000)
    #[arg(long, default_value_t = arsip_control::plan::NEXT_RUNS, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub runs: u16,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// zstd level per chunk (0 = no compression)
    #[arg(long, default_value_t = arsip_ops::repo::DEFAULT_COMPRESSION_LEVEL)]
    pub compression: i32,
    /// Target pack size in bytes (suffix K/M/G allowed)
    #[arg(long, default_value = "32M")]
    pub pack_size: String,
    /// Fixed block size for PostgreSQL relation files (power of two, 4K..4M; suffix K/M
    /// allowed). Smaller blocks store daily backups of a busy database in fewer bytes;
    /// larger ones make full backups faster
    #[arg(long, default_value = "16K")]
    pub block_size: String,
    /// Chunk sizes min/avg/max in bytes (suffix K/M allowed)
    #[arg(long, default_value = "256K")]
    pub chunk_min: String,
    #[arg(long, default_value = "1M")]
    pub chunk_avg: String,
    #[arg(long, default_value = "4M")]
    pub chunk_max: String,
    /// Also write a full key file (mode 0600) for unattended use without a password KDF
    #[arg(long)]
    pub key_file_out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Files and directories (names as bytes, modes, owners, times, links, xattrs/ACLs,
    /// special files; README §What a files backup keeps)
    Files {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Leave out paths matching this glob (`*.log`, `/var/cache`, `**/node_modules`);
        /// repeatable
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Read exclude patterns from FILE, one a line (`#` comments); repeatable
        #[arg(long, value_name = "FILE")]
        exclude_file: Vec<PathBuf>,
        /// Do not cross mount points below each path
        #[arg(long, short = 'x')]
        one_file_system: bool,
        /// Descend into virtual filesystems (proc, sysfs, devtmpfs, …) below the paths
        #[arg(long)]
        include_virtual: bool,
        #[command(flatten)]
        tags: TagArgs,
    },
    /// Run a program (no shell) and back up its stdout under NAME, only if it exits 0:
    /// `backup command --name app.dump -- pg_dump -Fc app`
    Command {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        tags: TagArgs,
        /// The program and its arguments, after `--`
        #[arg(required = true, last = true, value_name = "PROGRAM")]
        argv: Vec<std::ffi::OsString>,
    },
    /// PostgreSQL: --logical (pg_dump) or --physical (base backup of the data directory)
    Pg(PgBackupArgs),
    /// A stream read from stdin, stored under NAME
    Stdin {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        tags: TagArgs,
    },
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// KEY=VALUE, repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only snapshots of this kind (files, stdin, …)
    #[arg(long)]
    pub kind: Option<String>,
    /// Only snapshots whose source is this
    #[arg(long)]
    pub source: Option<String>,
    /// Only snapshots of this writer: `root`, an agent's label, or a writer id (prefix)
    #[arg(long)]
    pub writer: Option<String>,
    /// Only snapshots whose (writer-claimed) host is this
    #[arg(long)]
    pub host: Option<String>,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RestoreArgs {
    /// Snapshot id, unique id prefix, or `latest`
    #[arg(required = true, default_value = "", hide_default_value = true)]
    pub snapshot: String,
    /// `restore pg …`: PostgreSQL restores
    #[command(subcommand)]
    pub pg: Option<RestoreSub>,
    /// Restore into this directory
    #[arg(long, conflicts_with = "stdout", required_unless_present = "stdout")]
    pub to: Option<PathBuf>,
    /// Write the snapshot's single file to stdout
    #[arg(long)]
    pub stdout: bool,
    /// Replace entries of --to that the snapshot also holds (links are replaced, never
    /// followed); without it such a restore is refused before anything is written
    #[arg(long, requires = "to")]
    pub overwrite: bool,
    /// Remove entries of restored directories that the snapshot does not hold
    #[arg(long, requires = "to")]
    pub delete: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download and verify every pack
    #[arg(long)]
    pub read_data: bool,
    /// Download and verify this percentage of packs, chosen at random
    #[arg(long, value_name = "PCT", conflicts_with = "read_data")]
    pub read_data_subset: Option<String>,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Where the copy goes: a directory or `s3://bucket/prefix`. For S3 the destination's
    /// endpoint, region and credentials come from `ARSIP_TO_S3_ENDPOINT`, `ARSIP_TO_S3_REGION`,
    /// `ARSIP_TO_AWS_ACCESS_KEY_ID`, `ARSIP_TO_AWS_SECRET_ACCESS_KEY` (…) when any
    /// `ARSIP_TO_` variable is set, else from the repository's own
    #[arg(long, value_name = "LOCATION")]
    pub to: String,
    /// Count what would be copied; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum RepairCmd {
    /// Rebuild index entries from the packs no index names (after index objects were lost);
    /// every blob is verified first; writes new index objects, deletes nothing
    Index,
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Add a password slot (default), a key-file slot, or agent credentials
    Add {
        #[arg(long, default_value = "")]
        label: String,
        /// Create write-only agent credentials instead of a full key
        #[arg(long, requires = "out")]
        agent: bool,
        /// Create a full key file instead of a password
        #[arg(long, conflicts_with = "agent", requires = "out")]
        keyfile: bool,
        /// Where to write the key file or agent file (mode 0600, must not exist)
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List key slots and agents
    List,
    /// Remove a key slot (never the last), or with --compromised revoke an agent whose
    /// credentials are untrusted: nothing it ever wrote is accepted any more
    Remove {
        id: String,
        /// ID is an agent whose credentials may be in other hands: refuse everything it
        /// signed, past snapshots included (lists them first)
        #[arg(long)]
        compromised: bool,
        /// Do it even though snapshots become unreadable (otherwise asked on a terminal,
        /// refused elsewhere)
        #[arg(long)]
        yes: bool,
    },
    /// Retire an agent: what the store accepted from it so far stays restorable, anything
    /// it writes from now on is refused (the cut-off is the store's time, not the agent's)
    Retire { id: String },
    /// Change the password: add a new slot, then remove the one that opened the repository
    Passwd,
}

// ---- PostgreSQL ------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum WalCmd {
    /// Archive one WAL file (archive_command = 'arsip wal push %p')
    #[command(
        mut_arg("pgdata", |a| a.help(
            "Data directory (default: the working directory, where PostgreSQL runs archive_command)"
        )),
        mut_arg("stanza", |a| a.help(
            "Stanza: the name this cluster archives under; a different cluster is refused"
        ))
    )]
    Push {
        /// The file, as PostgreSQL passes %p (relative to the data directory)
        path: PathBuf,
        #[command(flatten)]
        pgdata: PgdataArgs,
        #[command(flatten)]
        stanza: StanzaArgs,
    },
    /// Fetch one WAL file (restore_command = 'arsip wal fetch %f %p'); exit 1 only if missing
    Fetch {
        /// File name (%f)
        file: String,
        /// Destination path (%p)
        dest: PathBuf,
        /// WAL namespace <system-identifier>-<major> (default: read from the data directory)
        #[arg(long)]
        namespace: Option<String>,
        #[command(flatten)]
        pgdata: PgdataArgs,
        /// Segments to prefetch after this one (0 = off)
        #[arg(long, default_value_t = 4)]
        prefetch: usize,
        /// The timeline the recovery follows (restores write it): an ancestor's copy of a
        /// segment past its switch point on that history is reported missing
        #[arg(long)]
        timeline: Option<u32>,
    },
    /// List archived WAL files of a namespace (default: every namespace)
    List {
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Per namespace and timeline: archived ranges, gaps, and the recoverable window
    Show,
}

/// `--pgdata`, as PostgreSQL's own tools take it (each command says what it is for).
#[derive(Args, Debug)]
pub struct PgdataArgs {
    #[arg(long, env = "PGDATA")]
    pub pgdata: Option<PathBuf>,
}

/// `--logical` or `--physical`, and `--dbname`, as `backup pg` and `restore pg` take them
/// (each command says what they mean for it).
#[derive(Args, Debug)]
pub struct PgKindArgs {
    #[arg(
        long,
        conflicts_with = "physical",
        required_unless_present = "physical"
    )]
    pub logical: bool,
    #[arg(long)]
    pub physical: bool,
    #[arg(long, short = 'd')]
    pub dbname: Option<String>,
}

/// `--stanza`: the name a cluster archives under.
#[derive(Args, Debug)]
pub struct StanzaArgs {
    #[arg(long, env = "ARSIP_STANZA", default_value = "main")]
    pub stanza: String,
}

#[derive(Args, Debug)]
#[command(
    mut_arg("pgdata", |a| a.help("With --physical: the data directory")),
    mut_arg("logical", |a| a.help("pg_dump of one database (custom format, uncompressed, streamed)")),
    mut_arg("physical", |a| a.help("Base backup read from the data directory (run on the database host)")),
    mut_arg("dbname", |a| a.help("Database / connection string (libpq conninfo or URL, without a password)")),
)]
pub struct PgBackupArgs {
    #[command(flatten)]
    pub kind: PgKindArgs,
    /// With --logical: also store globals (roles, tablespaces) from pg_dumpall --globals-only
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub pgdata: PgdataArgs,
    /// With --physical: request an immediate checkpoint
    #[arg(long)]
    pub fast: bool,
    /// With --physical: seconds to wait for the backup's WAL to reach the repository
    #[arg(long, default_value_t = 300)]
    pub wal_timeout: u64,
    #[command(flatten)]
    pub stanza: StanzaArgs,
    #[command(flatten)]
    pub tags: TagArgs,
}

#[derive(Subcommand, Debug)]
pub enum RestoreSub {
    /// Restore a PostgreSQL backup (logical into a database, physical into a data directory)
    Pg(Box<PgRestoreArgs>),
}

#[derive(Args, Debug)]
#[command(
    mut_arg("logical", |a| a.help("Restore a pg_dump snapshot into a database")),
    mut_arg("physical", |a| a.help("Restore a base backup into a data directory, with point-in-time recovery")),
    mut_arg("dbname", |a| a.help("Logical: target database / connection string (no password)")),
)]
pub struct PgRestoreArgs {
    /// Snapshot id, prefix or `latest` (physical: default is chosen from the target)
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub kind: PgKindArgs,
    /// Logical: create the target database (template0, the dump's encoding and locale)
    #[arg(long)]
    pub create: bool,
    /// Logical: restore only SCHEMA.TABLE (repeatable), with its indexes, constraints, triggers
    #[arg(long = "table", value_name = "SCHEMA.TABLE")]
    pub tables: Vec<String>,
    /// Logical: parallel pg_restore jobs (spools the dump to a local file first)
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// Logical: first apply the roles and tablespaces stored by `backup pg --logical --all`
    #[arg(long)]
    pub globals: bool,
    /// Physical: the (empty or missing) directory to restore into
    #[arg(long)]
    pub to: Option<PathBuf>,
    #[arg(long)]
    pub target_time: Option<String>,
    #[arg(long)]
    pub target_lsn: Option<String>,
    #[arg(long)]
    pub target_xid: Option<String>,
    #[arg(long)]
    pub target_name: Option<String>,
    /// `immediate`: stop as soon as the backup is consistent
    #[arg(long)]
    pub target: Option<String>,
    /// Timeline to follow: a number, `latest` or `current` (default: the newest timeline
    /// holding the newest backup; with SNAPSHOT, the snapshot's own)
    #[arg(long)]
    pub target_timeline: Option<String>,
    /// Zone of a --target-time written without one (e.g. Asia/Jakarta)
    #[arg(long, env = "TZ")]
    pub timezone: Option<String>,
    /// Physical: recover up to a gap in the archived WAL instead of refusing
    #[arg(long)]
    pub allow_gap: bool,
    /// Physical: the restored cluster is the new primary and archives its new timeline into
    /// the source's WAL namespace (default: archiving off)
    #[arg(long, conflicts_with = "no_archive")]
    pub promote_as_primary: bool,
    /// Physical: print the restore plan (snapshot, timeline, WAL, settings) and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// promote | pause | shutdown
    #[arg(long, default_value = "promote")]
    pub target_action: String,
    /// Stop just before the target instead of just after it
    #[arg(long)]
    pub exclusive: bool,
    /// Start the restored cluster, wait for recovery to end and report what it reached
    #[arg(long)]
    pub start: bool,
    /// Port for the restored cluster
    #[arg(long)]
    pub port: Option<u16>,
    /// Archiving off (the default unless --promote-as-primary; kept for older scripts)
    #[arg(long)]
    pub no_archive: bool,
    /// Restore tablespace OID into DIR instead of its original location (repeatable)
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    #[command(flatten)]
    pub stanza: StanzaArgs,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Where to put the repository and clusters (default: a new temp directory)
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the repository and clusters afterwards
    #[arg(long)]
    pub keep: bool,
    /// Tenants to generate
    #[arg(long, default_value_t = 20)]
    pub tenants: u32,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Keep the N newest snapshots of each group
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
    /// Keep every snapshot stored within this long (30d, 12h, 1w, 2d12h) [default when no
    /// rule is given: 30d]
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep snapshots carrying this tag (KEY or KEY=VALUE); repeatable
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Allow forgetting the last snapshot of a source
    #[arg(long)]
    pub allow_empty: bool,
    /// Also forget snapshots of retired or compromised agents (no reader accepts them)
    #[arg(long)]
    pub revoked: bool,
    /// Time zone of the calendar rules [default: the system's]
    #[arg(long, value_name = "TZ", env = "TZ")]
    pub time_zone: Option<String>,
    /// Show what would be forgotten and which rule keeps each survivor; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Then prune, in the same run (one opening of the repository); with --dry-run, prune's
    /// figures do not count what forget would remove
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub prune_settings: PruneSettings,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    #[command(flatten)]
    pub settings: PruneSettings,
    /// Show what would be condemned and repacked; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// How prune works (shared by `prune` and `forget --prune`).
#[derive(Args, Debug)]
pub struct PruneSettings {
    /// Repack until unused bytes are at most this share of the packs that stay
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
    /// Keep the WAL that reaches every point of this window from a retained physical backup
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub pitr_window: String,
    /// Remove verification records older than this (the newest 30 always stay)
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    pub keep_verifications: String,
    /// Remove the claims of scheduled runs (`arsip serve`) older than this (the newest 30
    /// of each job always stay)
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    pub keep_jobs: String,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Fail a source whose newest backup the store accepted longer ago than this
    #[arg(long, default_value = "26h", value_name = "DURATION")]
    pub rpo: String,
    /// Per kind RPO, overriding --rpo (repeatable), e.g. `files=8d`
    #[arg(long = "rpo-kind", value_name = "KIND=DURATION")]
    pub rpo_kind: Vec<String>,
    /// Read every pack once per this cycle (one slice a day; 1d reads everything)
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub cycle: String,
    /// Warn when a table's row count drops by more than this since the previous backup
    #[arg(long, default_value = "10%", value_name = "PERCENT")]
    pub row_drop: String,
    /// Compare against this many earlier snapshots of the same source
    #[arg(long, default_value_t = arsip_ops::verify::DEFAULT_HISTORY, value_name = "N")]
    pub history: usize,
    /// Restore the newest logical and physical backups into throwaway clusters and check them
    #[arg(long)]
    pub restore_test: bool,
    /// With --restore-test: a query that must return one row that is true in the restored
    /// physical cluster, e.g. `SELECT count(*) > 0 FROM vehicles` (repeatable)
    #[arg(long = "sql-check", value_name = "SQL", requires = "restore_test")]
    pub sql_checks: Vec<String>,
    /// The database the --sql-check queries run in
    #[arg(long, default_value = "postgres", value_name = "DBNAME")]
    pub sql_check_db: String,
    /// The PostgreSQL server whose current WAL the archive's lag is measured against
    #[arg(long, value_name = "CONNINFO")]
    pub dbname: Option<String>,
    /// Report only; store no verification record and no audit record
    #[arg(long)]
    pub no_record: bool,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCmd>,
    /// Only records from this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Detect an edited, removed, reordered or truncated log (exit 6 if so)
    Verify,
}

#[derive(Subcommand, Debug)]
pub enum ImportCmd {
    /// The old system's `autolumiku_backup_YYYYMMDD_HHMMSS.sql.gz.enc` files (`pg_dump -Fc |
    /// gzip | openssl enc -aes-256-cbc -salt -k KEY`): each verified in full and stored as a
    /// pg-logical snapshot dated from its name, restorable with `restore pg --logical`
    LegacyDump(LegacyDumpArgs),
}

#[derive(Args, Debug)]
pub struct LegacyDumpArgs {
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// File holding the old system's BACKUP_ENCRYPTION_KEY (a trailing newline is ignored;
    /// no group or other access) [else the variable ARSIP_LEGACY_KEY]
    #[arg(long, env = "ARSIP_LEGACY_KEY_FILE", value_name = "PATH")]
    pub legacy_key_file: Option<PathBuf>,
    /// Zone of the times in the names (the old host's) [default: the system's]
    #[arg(long, value_name = "TZ", env = "TZ")]
    pub time_zone: Option<String>,
    /// The dump's time instead of its name's (one FILE only): `2025-01-31 02:00:00`, in
    /// --time-zone unless it names its own
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// The snapshots' source [default: legacy:<database>]
    #[arg(long)]
    pub source: Option<String>,
    /// Iterations tried for files written with `openssl enc -pbkdf2 -iter N`
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub pbkdf2_iter: u32,
    /// KEY=VALUE, repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

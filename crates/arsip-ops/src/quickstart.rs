//! `arsip quickstart`: the whole story on a throwaway cluster, timed. Create a local
//! repository, start a cluster archiving into it, load a small car-dealer schema, take a
//! physical and a logical backup, keep writing, record a moment T, lose data after T (drop a
//! table, delete one tenant's vehicles), restore to T into a new cluster, prove the data is
//! back, and report each step's duration, the RTO and the RPO.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arsip_repo::{InitOptions, LocalSettings, Repository};
use arsip_storage::backend::{self, Location};

use arsip_pg::cluster::{chown_postgres, make_base, Cluster, ClusterOptions};
use arsip_pg::{PgError, Result};

#[derive(Debug, Clone)]
pub struct Options {
    pub dir: Option<PathBuf>,
    pub keep: bool,
    pub tenants: u32,
    /// The arsip binary (archive_command and restore_command run it).
    pub arsip_exe: PathBuf,
    /// Where the PostgreSQL programs and scratch directories are.
    pub settings: arsip_pg::PgSettings,
    /// This host's name, recorded in the drill's key slots and snapshots.
    pub host: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub step: String,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub dir: String,
    pub steps: Vec<Step>,
    pub target_time: String,
    pub failure_time: String,
    pub last_recovered_commit: Option<String>,
    pub rto_seconds: f64,
    pub rpo_seconds: Option<f64>,
    pub verified: BTreeMap<String, String>,
    pub ok: bool,
    pub kept: bool,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::from("arsip quickstart\n");
        for st in &self.steps {
            s += &format!("  {:<34} {:>7.2}s  {}\n", st.step, st.seconds, st.detail);
        }
        s += &format!("  target time T          {}\n", self.target_time);
        s += &format!("  failure at             {}\n", self.failure_time);
        s += &format!(
            "  last recovered commit  {}\n",
            self.last_recovered_commit.as_deref().unwrap_or("?")
        );
        s += &format!(
            "  RTO {:.2}s (restore start until the new cluster accepted a write)\n",
            self.rto_seconds
        );
        if let Some(r) = self.rpo_seconds {
            s += &format!("  RPO {r:.3}s (failure time minus the last recoverable commit)\n");
        }
        for (k, v) in &self.verified {
            s += &format!("  verified {k}: {v}\n");
        }
        s += if self.ok {
            "  RESULT: every check passed; the data lost after T is back\n"
        } else {
            "  RESULT: FAILED\n"
        };
        if self.kept {
            s += &format!("  kept everything under {}\n", self.dir);
        }
        s
    }
}

const SCHEMA: &str = "
CREATE TABLE tenants (id int PRIMARY KEY, name text NOT NULL, city text NOT NULL,
    created timestamptz NOT NULL DEFAULT now());
CREATE TABLE vehicles (id bigserial PRIMARY KEY, tenant_id int NOT NULL REFERENCES tenants(id),
    vin text NOT NULL, make text, model text, year int, price_idr bigint, attrs jsonb);
CREATE INDEX vehicles_tenant ON vehicles (tenant_id);
CREATE TABLE photos (id bigserial PRIMARY KEY, vehicle_id bigint NOT NULL REFERENCES vehicles(id)
    ON DELETE CASCADE, tenant_id int NOT NULL, object_key text NOT NULL, bytes int, sha256 text);
CREATE INDEX photos_vehicle ON photos (vehicle_id);
CREATE TABLE leads (id bigserial PRIMARY KEY, tenant_id int NOT NULL REFERENCES tenants(id),
    vehicle_id bigint, name text, phone text, message text, created timestamptz DEFAULT now());
CREATE INDEX leads_tenant ON leads (tenant_id, created);
";

fn load_sql(tenants: u32) -> String {
    format!(
        "INSERT INTO tenants (id, name, city) SELECT g, 'Dealer ' || g, \
           (ARRAY['Jakarta','Bandung','Surabaya','Medan','Semarang'])[1 + g % 5] \
           FROM generate_series(1, {tenants}) g;
         INSERT INTO vehicles (tenant_id, vin, make, model, year, price_idr, attrs)
           SELECT 1 + g % {tenants}, upper(substr(md5(g::text), 1, 17)),
             (ARRAY['Toyota','Honda','Daihatsu','Suzuki','Mitsubishi'])[1 + g % 5],
             'Model ' || (g % 40), 2005 + g % 20, 80000000 + (g * 7919) % 400000000,
             jsonb_build_object('km', (g * 131) % 200000, 'color', md5((g * 3)::text))
           FROM generate_series(1, {v}) g;
         INSERT INTO photos (vehicle_id, tenant_id, object_key, bytes, sha256)
           SELECT v.id, v.tenant_id, 'vehicles/' || v.tenant_id || '/' || v.id || '/photo-' || p || '.jpg',
             100000 + (v.id * p) % 900000, md5(v.id::text || p) || md5(p::text || v.id)
           FROM vehicles v, generate_series(1, 3) p;
         INSERT INTO leads (tenant_id, vehicle_id, name, phone, message)
           SELECT 1 + g % {tenants}, 1 + g % {v}, 'Customer ' || g, '+62812' || lpad(g::text, 7, '0'),
             repeat(md5(g::text), 3) FROM generate_series(1, {l}) g;",
        v = tenants * 200,
        l = tenants * 100
    )
}

struct Timer {
    steps: Vec<Step>,
}

impl Timer {
    async fn run<T>(
        &mut self,
        name: &str,
        f: impl std::future::Future<Output = Result<(T, String)>>,
    ) -> Result<T> {
        let t = Instant::now();
        let (v, detail) = f.await?;
        self.record(name, t, detail);
        Ok(v)
    }
    fn record(&mut self, name: &str, t: Instant, detail: String) {
        let s = Step {
            step: name.into(),
            seconds: t.elapsed().as_secs_f64(),
            detail,
        };
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("  {:<34} {:>7.2}s  {}", s.step, s.seconds, s.detail);
        }
        self.steps.push(s);
    }
}

async fn expect(c: &Cluster, what: &str, sql: &str) -> Result<String> {
    c.psql_async("app", sql)
        .await
        .map_err(|e| PgError::Tool(format!("checking {what}: {e}")))
}

pub async fn run(o: &Options) -> Result<Report> {
    let mut tm = Timer { steps: Vec::new() };
    let dir = workspace(o)?;
    let paths = Paths::under(&dir);

    // 1. repository, with a key file (restore_command) and agent credentials (archive_command)
    let t = Instant::now();
    let repo = create_repository(o, &paths).await?;
    chown_postgres(&dir)?;
    tm.record("create repository", t, paths.repo.display().to_string());

    // 2. a cluster archiving through arsip, 3. schema and data, 4. backups
    let cluster = start_archiving_cluster(o, &paths, &mut tm).await?;
    load_schema(&cluster, o.tenants, &mut tm).await?;
    back_up(o, &repo, &cluster, &mut tm).await?;

    // 5. keep writing, then record T and what the data looks like at T
    let at_t = write_then_record_t(&cluster, o.tenants, &mut tm).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // 6. lose data after T
    let failure_time = lose_data(&cluster, &mut tm).await?;

    // 7. restore to T into a new cluster, 8. prove it
    let (restored, reached, rto) =
        restore_to_new_cluster(o, &repo, &at_t.time, &paths, &mut tm).await?;
    let (verified, ok) = verify(&restored, &at_t.facts, &mut tm).await?;

    let rpo = reached
        .time
        .as_deref()
        .and_then(arsip_pg::restore::parse_time)
        .zip(arsip_pg::restore::parse_time(&failure_time))
        .map(|(last, fail)| (fail - last).total(jiff::Unit::Second).unwrap_or(0.0));
    let report = Report {
        dir: dir.display().to_string(),
        steps: tm.steps,
        target_time: at_t.time,
        failure_time,
        last_recovered_commit: reached.time,
        rto_seconds: rto,
        rpo_seconds: rpo,
        verified,
        ok,
        kept: o.keep,
    };
    clean_up(o.keep, dir, vec![restored, cluster]).await?;
    Ok(report)
}

/// The directory everything goes into: `o.dir` (made, owned by postgres), else a new one
/// under the scratch directory.
fn workspace(o: &Options) -> Result<PathBuf> {
    Ok(match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            chown_postgres(d)?;
            d.canonicalize()?
        }
        None => make_base(&o.settings, "arsip-quickstart-")?,
    })
}

/// Where the drill keeps its repository and credentials.
struct Paths {
    repo: PathBuf,
    /// The full key file (restore_command).
    key: PathBuf,
    /// The agent credentials (archive_command).
    agent: PathBuf,
}

impl Paths {
    fn under(dir: &Path) -> Paths {
        Paths {
            repo: dir.join("repo"),
            key: dir.join("full.key"),
            agent: dir.join("agent.key"),
        }
    }
}

/// A new cluster whose archive_command is `arsip wal push` with the agent credentials.
async fn start_archiving_cluster(o: &Options, paths: &Paths, tm: &mut Timer) -> Result<Cluster> {
    let archive = format!(
        "{} --repo {} --key-file {} wal push %p",
        o.arsip_exe.display(),
        paths.repo.display(),
        paths.agent.display()
    );
    let opts = ClusterOptions {
        archive_command: Some(archive),
        data_checksums: true,
        conf: vec![],
        settings: o.settings.clone(),
    };
    let mut cluster = tm
        .run("start cluster (initdb, archiving)", async {
            let c = arsip_repo::blocking(move || Cluster::init(&opts)).await?;
            c.start_async().await?;
            let d = format!(
                "PostgreSQL {} at {}",
                arsip_pg::control::read_major(&c.data)?,
                c.data.display()
            );
            Ok((c, d))
        })
        .await?;
    cluster.keep = o.keep;
    Ok(cluster)
}

/// The car-dealer schema and `tenants` tenants' data in database `app`.
async fn load_schema(cl: &Cluster, tenants: u32, tm: &mut Timer) -> Result<()> {
    tm.run("load car-dealer schema", async {
        cl.psql_async("postgres", "CREATE DATABASE app").await?;
        cl.psql_async("app", SCHEMA).await?;
        cl.psql_async("app", &load_sql(tenants)).await?;
        let n = cl.psql_async("app", "SELECT (SELECT count(*) FROM vehicles) || ' vehicles, ' || (SELECT count(*) FROM photos) || ' photos, ' || (SELECT count(*) FROM leads) || ' leads, ' || pg_size_pretty(pg_database_size('app'))").await?;
        Ok(((), format!("{tenants} tenants, {n}")))
    })
    .await
}

/// A physical backup of the cluster, then a logical one of `app`.
async fn back_up(
    o: &Options,
    repo: &arsip_repo::FullRepo,
    cluster: &Cluster,
    tm: &mut Timer,
) -> Result<()> {
    let t = Instant::now();
    let phys = arsip_pg::physical::backup(
        repo.shared(),
        &arsip_pg::physical::PhysicalBackup {
            dbname: Some(cluster.conninfo("postgres")),
            pgdata: cluster.data.clone(),
            fast: true,
            wal_timeout: Duration::from_secs(120),
            stanza: "main".into(),
            tags: BTreeMap::from([("origin".into(), "quickstart".into())]),
            settings: o.settings.clone(),
        },
    )
    .await?;
    tm.record(
        "physical backup",
        t,
        format!(
            "snapshot {}, {} files, {} bytes",
            &phys.id[..8],
            phys.files,
            phys.logical_bytes
        ),
    );
    let t = Instant::now();
    let logi = arsip_pg::logical::backup(
        repo.shared(),
        &arsip_pg::logical::LogicalBackup {
            dbname: Some(cluster.conninfo("app")),
            all: false,
            tags: BTreeMap::from([("origin".into(), "quickstart".into())]),
            settings: o.settings.clone(),
        },
    )
    .await?;
    tm.record(
        "logical backup (pg_dump)",
        t,
        format!(
            "snapshot {}, {} bytes dumped",
            &logi.id[..8],
            logi.logical_bytes
        ),
    );
    Ok(())
}

/// The moment T the restore aims at, and what the checks said then.
struct Moment {
    time: String,
    facts: BTreeMap<String, String>,
}

/// Writes after the backups (only the archived WAL holds them), then T and the checks at T.
async fn write_then_record_t(cluster: &Cluster, tenants: u32, tm: &mut Timer) -> Result<Moment> {
    let t = Instant::now();
    for round in 0..5 {
        cluster
            .psql_async(
            "app",
            &format!(
                "INSERT INTO leads (tenant_id, vehicle_id, name, phone, message) SELECT 1 + g % {tenants}, 1 + g, \
                 'Walk-in {round}-' || g, '+62813' || g, 'after backup' FROM generate_series(1, 200) g; \
                 UPDATE vehicles SET price_idr = price_idr - 1000000 WHERE id % 50 = {round};",
            ),
        )
            .await?;
    }
    let time = cluster
        .psql_async(
        "app",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
        .await?;
    let mut facts = BTreeMap::new();
    for (k, sql) in checks() {
        facts.insert(k.to_string(), expect(cluster, k, sql).await?);
    }
    tm.record("keep writing, record T", t, format!("T = {time}"));
    Ok(Moment { time, facts })
}

/// Drop a table and delete one tenant's vehicles, then wait until that WAL is archived;
/// the failure's time.
async fn lose_data(cluster: &Cluster, tm: &mut Timer) -> Result<String> {
    let t = Instant::now();
    let failure_time = cluster
        .psql_async(
            "app",
            "BEGIN; DROP TABLE leads; DELETE FROM vehicles WHERE tenant_id = 7; COMMIT; \
         SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .await?;
    let seg = cluster
        .psql_async("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .await?;
    wait_archived(cluster, &seg).await?;
    tm.record(
        "lose data after T",
        t,
        "DROP TABLE leads; DELETE tenant 7's vehicles (WAL archived)".into(),
    );
    Ok(failure_time)
}

/// Stop the servers (pg_ctl) and, unless `keep`, remove everything: both block.
async fn clean_up(keep: bool, dir: PathBuf, clusters: Vec<Cluster>) -> Result<()> {
    arsip_repo::blocking(move || {
        drop(clusters);
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok::<_, PgError>(())
    })
    .await
}

/// A local repository at `paths.repo`, owned by postgres (archive_command writes WAL into
/// it as postgres; made and given away before it is opened, so what root writes into it is
/// postgres's too), with its key file at `paths.key` (restore_command) and agent credentials
/// at `paths.agent` (archive_command). Its caches are under the temporary directory.
async fn create_repository(o: &Options, paths: &Paths) -> Result<arsip_repo::FullRepo> {
    let (repo_dir, key_path, agent_path) = (&paths.repo, &paths.key, &paths.agent);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(repo_dir)
        .map_err(|e| PgError::Tool(format!("cannot create {}: {e}", repo_dir.display())))?;
    chown_postgres(repo_dir)?;
    let store = backend::open(&Location::Local(repo_dir.to_path_buf()), false)
        .map_err(arsip_repo::RepoError::from)?;
    let init = InitOptions {
        host: o.host.clone(),
        ..InitOptions::default()
    };
    let (repo, keyfile) =
        Repository::init(store, None, &init, arsip_repo::clock::from_env()).await?;
    let repo = repo.with_local(LocalSettings {
        cache_dir: o.settings.temp_dir.join("arsip-cache"),
        host: o.host.clone(),
        ..LocalSettings::default()
    });
    let keyfile = keyfile.expect("a repository made without a password has a key file");
    write_secret(key_path, &serde_json::to_vec_pretty(&keyfile).unwrap())?;
    let agent = repo.add_agent("quickstart db host").await?;
    write_secret(agent_path, &serde_json::to_vec_pretty(&agent).unwrap())?;
    Ok(repo)
}

/// Restore the newest physical backup to `target` into a new cluster (the restore with its
/// plan, then the cluster started and promoted, then a write to prove it is usable); the
/// restored cluster, where recovery stopped, and the RTO in seconds.
async fn restore_to_new_cluster(
    o: &Options,
    repo: &arsip_repo::FullRepo,
    target: &str,
    paths: &Paths,
    tm: &mut Timer,
) -> Result<(Cluster, arsip_pg::restore::Reached, f64)> {
    let restore_start = Instant::now();
    let base = make_base(&o.settings, "arsip-quickstart-restore-")?;
    let (snaps, _) = repo.snapshots_report().await?;
    let snaps: Vec<_> = snaps
        .into_iter()
        .filter(|s| s.manifest.kind == arsip_pg::physical::KIND)
        .collect();
    let r = arsip_pg::restore::restore(
        repo.clone(),
        &snaps,
        &arsip_pg::restore::PhysicalRestore {
            snapshot: None,
            to: base.join("data"),
            target: arsip_pg::restore::Target::Time(arsip_pg::restore::target::parse_target_time(
                target, None,
            )?),
            target_timeline: None,
            target_action: arsip_pg::restore::TargetAction::Promote,
            exclusive: false,
            start: false,
            port: None,
            no_archive: true,
            tablespace_map: Vec::new(),
            stanza: "main".into(),
            arsip_exe: o.arsip_exe.clone(),
            repo_location: paths.repo.display().to_string(),
            credential: Some(arsip_pg::restore::Credential::KeyFile(paths.key.clone())),
            settings: o.settings.clone(),
            ..Default::default()
        },
    )
    .await?;
    tm.record(
        "restore base backup",
        restore_start,
        format!(
            "{} files, {} bytes; WAL continuous to {}",
            r.files, r.bytes, r.wal_checked_to
        ),
    );
    let t = Instant::now();
    let adopt = ClusterOptions {
        settings: o.settings.clone(),
        ..Default::default()
    };
    let mut restored = arsip_repo::blocking(move || Cluster::adopt(base, &adopt)).await?;
    restored.keep = o.keep;
    restored.start_async().await?;
    let reached = arsip_pg::restore::wait_for_recovery(
        &restored.bin,
        &restored.socket_dir.display().to_string(),
        restored.port,
        "promote",
        Duration::from_secs(600),
        &restored.data,
        &restored.log_path(),
    )
    .await?;
    restored
        .psql_async(
            "app",
            "CREATE TABLE rto_probe (x int); DROP TABLE rto_probe",
        )
        .await?;
    let rto = restore_start.elapsed().as_secs_f64();
    tm.record(
        "replay WAL to T, promote",
        t,
        format!(
            "reached {} on timeline {}",
            reached.lsn.as_deref().unwrap_or("?"),
            reached.timeline.unwrap_or(0)
        ),
    );
    Ok((restored, reached, rto))
}

/// Each check's result on the restored cluster against what was recorded at T.
async fn verify(
    restored: &Cluster,
    facts: &BTreeMap<String, String>,
    tm: &mut Timer,
) -> Result<(BTreeMap<String, String>, bool)> {
    let t = Instant::now();
    let mut verified = BTreeMap::new();
    let mut ok = true;
    for (k, sql) in checks() {
        let got = expect(restored, k, sql).await?;
        let want = &facts[k];
        let good = &got == want;
        ok &= good;
        verified.insert(
            k.to_string(),
            if good {
                format!("{got} (as at T)")
            } else {
                format!("MISMATCH: {got}, expected {want}")
            },
        );
    }
    let detail = if ok { "match" } else { "MISMATCH" };
    tm.record("verify restored data", t, detail.into());
    Ok((verified, ok))
}

fn checks() -> [(&'static str, &'static str); 4] {
    [
        ("leads", "SELECT count(*) || ' rows, md5 ' || md5(string_agg(id || name, ',' ORDER BY id)) FROM leads"),
        ("tenant 7 vehicles", "SELECT count(*) || ' rows, md5 ' || md5(string_agg(id || vin || price_idr, ',' ORDER BY id)) FROM vehicles WHERE tenant_id = 7"),
        ("all vehicles", "SELECT count(*) || ' rows, md5 ' || md5(string_agg(id::text || price_idr, ',' ORDER BY id)) FROM vehicles"),
        ("photos", "SELECT count(*) FROM photos"),
    ]
}

async fn wait_archived(c: &Cluster, seg: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let last = c
            .psql_async(
                "postgres",
                "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
            )
            .await?;
        if !last.is_empty() && last.as_str() >= seg {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(PgError::Tool(format!(
                "{seg} was not archived within 120 s\n{}",
                arsip_pg::cluster::tail(&c.log(), 20)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_secret(p: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

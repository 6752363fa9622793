//! Throwaway PostgreSQL clusters for tests and `arsip quickstart`: the harness.
//!
//! A [`Cluster`] lives in a private temp directory (owned by the `postgres` OS user when we
//! run as root, because `initdb` and `postgres` refuse to run as root): the data directory,
//! the unix socket, and the server log. It listens on the socket only (no TCP, so parallel
//! tests never collide) under a random port number, runs with `wal_level=replica`, and when
//! asked archives through a given `archive_command`. Dropping it stops the server with
//! `pg_ctl stop -m immediate` and removes the directory, unless `keep` is set.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::control::pg_bin_dir;
use crate::error::{PgError, Result};
/// The production helpers this harness builds on, re-exported for its users.
pub use crate::os::{as_postgres, check_output, chown_postgres, make_base, postgres_owner, tail};
use crate::settings::PgSettings;

/// How to make a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `archive_command` (archive_mode=on); `None` leaves archiving off.
    pub archive_command: Option<String>,
    /// initdb --data-checksums.
    pub data_checksums: bool,
    /// Extra `postgresql.conf` lines.
    pub conf: Vec<String>,
    /// Where the programs and scratch directories are, and whether to keep the cluster.
    pub settings: PgSettings,
}

#[derive(Debug)]
pub struct Cluster {
    pub base: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub bin: PathBuf,
    /// Keep the directory (and leave the server running) on drop.
    pub keep: bool,
}

/// A free-looking port number (the harness listens on its socket only, so a clash with a TCP
/// listener does not matter; the number just names the socket file).
fn random_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0");
    l.and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54321)
}

impl Cluster {
    /// initdb a new cluster (not started).
    pub fn init(opts: &ClusterOptions) -> Result<Cluster> {
        let bin = pg_bin_dir(&opts.settings)?;
        if !bin.join("initdb").exists() {
            return Err(PgError::refused(
                format!("{} has no initdb", bin.display()),
                "install the PostgreSQL server package",
            ));
        }
        let base = make_base(&opts.settings, "arsip-pg-")?;
        let data = base.join("data");
        let socket_dir = base.join("sock");
        std::fs::create_dir(&socket_dir)?;
        chown_postgres(&socket_dir)?;
        let mut c = as_postgres(&bin.join("initdb"));
        c.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        if opts.data_checksums {
            c.arg("--data-checksums");
        }
        let cl = Cluster {
            base,
            data,
            socket_dir,
            port: random_port(),
            bin,
            keep: opts.settings.keep_clusters,
        };
        check_output("initdb", c.output())?;
        let mut conf = vec![
            format!("port = {}", cl.port),
            "listen_addresses = ''".into(),
            format!("unix_socket_directories = '{}'", cl.socket_dir.display()),
            "wal_level = replica".into(),
            "max_wal_senders = 4".into(),
            "shared_buffers = 32MB".into(),
            "max_connections = 40".into(),
            "log_min_messages = warning".into(),
            "log_line_prefix = '%m [%p] '".into(),
        ];
        match &opts.archive_command {
            Some(a) => {
                conf.push("archive_mode = on".into());
                conf.push(format!("archive_command = '{}'", a.replace('\'', "''")));
            }
            None => conf.push("archive_mode = off".into()),
        }
        conf.extend(opts.conf.iter().cloned());
        cl.append_conf(&conf)?;
        Ok(cl)
    }

    /// Adopt a data directory restored into `base/data` (by `arsip restore pg --physical`),
    /// pointing its socket and port at this harness. Of `opts`, only the settings and the
    /// extra `conf` lines apply: the restore configured archiving and checksums.
    pub fn adopt(base: PathBuf, opts: &ClusterOptions) -> Result<Cluster> {
        let bin = pg_bin_dir(&opts.settings)?;
        let data = base.join("data");
        let socket_dir = base.join("sock");
        std::fs::create_dir_all(&socket_dir)?;
        chown_postgres(&socket_dir)?;
        let cl = Cluster {
            base,
            data,
            socket_dir,
            port: random_port(),
            bin,
            keep: opts.settings.keep_clusters,
        };
        let mut conf = vec![
            format!("port = {}", cl.port),
            "listen_addresses = ''".into(),
            format!("unix_socket_directories = '{}'", cl.socket_dir.display()),
        ];
        conf.extend(opts.conf.iter().cloned());
        cl.append_conf(&conf)?;
        Ok(cl)
    }

    pub fn append_conf(&self, lines: &[String]) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        writeln!(f, "\n# arsip test harness")?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.base.join("server.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn start_command(&self) -> Command {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "300", "start"])
            .stdin(Stdio::null());
        c
    }

    fn started(&self, r: std::io::Result<std::process::Output>) -> Result<()> {
        check_output("pg_ctl start", r).map(|_| ()).map_err(|e| {
            PgError::Tool(format!(
                "{e}\n--- server log (tail) ---\n{}",
                tail(&self.log(), 30)
            ))
        })
    }

    /// Start and wait until the server accepts connections (or, for a recovering cluster,
    /// until pg_ctl's wait ends).
    pub fn start(&self) -> Result<()> {
        self.started(self.start_command().output())
    }

    /// [`start`](Cluster::start) for async code (pg_ctl waits without blocking a runtime
    /// thread).
    pub async fn start_async(&self) -> Result<()> {
        let o = tokio::process::Command::from(self.start_command())
            .output()
            .await;
        self.started(o)
    }

    pub fn stop(&self) -> Result<()> {
        check_output(
            "pg_ctl stop",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "120", "stop"])
                .output(),
        )
        .map(|_| ())
    }

    pub fn is_running(&self) -> bool {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// libpq connection string for `dbname`.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// libpq environment for client programs.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGHOST", self.socket_dir.display().to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", "postgres".into()),
        ]
    }

    fn psql_command(&self, db: &str, sql: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-d")
            .arg(self.conninfo(db))
            .arg("-c")
            .arg(sql);
        c
    }

    /// Run SQL with psql; returns unaligned tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        check_output("psql", self.psql_command(db, sql).output())
    }

    /// [`psql`](Cluster::psql) for async code.
    pub async fn psql_async(&self, db: &str, sql: &str) -> Result<String> {
        let o = tokio::process::Command::from(self.psql_command(db, sql))
            .output()
            .await;
        check_output("psql", o)
    }

    /// A program from the bin directory with this cluster's libpq environment.
    pub fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("arsip: keeping cluster at {}", self.base.display());
            return;
        }
        if self.data.join("postmaster.pid").exists() {
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

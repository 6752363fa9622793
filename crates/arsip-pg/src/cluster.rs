//! Throwaway PostgreSQL clusters for tests, drills and `arsip quickstart`.
//!
//! A [`Cluster`] lives in a private temp directory (owned by the `postgres` OS user when we
//! run as root, because `initdb` and `postgres` refuse to run as root): the data directory,
//! the unix socket, and the server log. It listens on the socket only (no TCP, so parallel
//! tests never collide) under a random port number, runs with `wal_level=replica`, and when
//! asked archives through a given `archive_command`. Dropping it stops the server with
//! `pg_ctl stop -m immediate` and removes the directory, unless `keep` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::control::pg_bin_dir;
use crate::error::{PgError, Result};

/// How to make a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `archive_command` (archive_mode=on); `None` leaves archiving off.
    pub archive_command: Option<String>,
    /// initdb --data-checksums.
    pub data_checksums: bool,
    /// Extra `postgresql.conf` lines.
    pub conf: Vec<String>,
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

/// uid and gid of the `postgres` OS user, when we run as root.
pub fn postgres_owner() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// A command that runs as the `postgres` OS user when we are root.
pub fn as_postgres(program: &Path) -> Command {
    if postgres_owner().is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Recursively give `path` to the postgres user (no-op unless root).
pub fn chown_postgres(path: &Path) -> Result<()> {
    let Some((u, g)) = postgres_owner() else {
        return Ok(());
    };
    fn walk(p: &Path, u: u32, g: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(p, Some(u), Some(g))?;
        let m = std::fs::symlink_metadata(p)?;
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), u, g)?;
            }
        }
        Ok(())
    }
    walk(path, u, g)?;
    Ok(())
}

pub fn check_output(what: &str, o: std::io::Result<Output>) -> Result<String> {
    let o = o.map_err(|e| PgError::Tool(format!("{what}: cannot run: {e}")))?;
    if !o.status.success() {
        return Err(PgError::Tool(format!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim(),
            String::from_utf8_lossy(&o.stdout).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// A free-looking port number (the harness listens on its socket only, so a clash with a TCP
/// listener does not matter; the number just names the socket file).
fn random_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0");
    l.and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54321)
}

/// Make a private directory for a cluster, owned by postgres when root.
pub fn make_base(prefix: &str) -> Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(
            std::env::var_os("ARSIP_PG_TMP").map_or_else(std::env::temp_dir, PathBuf::from),
        )?
        .keep();
    chown_postgres(&dir)?;
    Ok(dir)
}

impl Cluster {
    /// initdb a new cluster (not started).
    pub fn init(opts: &ClusterOptions) -> Result<Cluster> {
        let bin = pg_bin_dir()?;
        if !bin.join("initdb").exists() {
            return Err(PgError::refused(
                format!("{} has no initdb", bin.display()),
                "install the PostgreSQL server package",
            ));
        }
        let base = make_base("arsip-pg-")?;
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
            keep: std::env::var_os("ARSIP_KEEP_CLUSTERS").is_some(),
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
    /// pointing its socket and port at this harness.
    pub fn adopt(base: PathBuf) -> Result<Cluster> {
        let bin = pg_bin_dir()?;
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
            keep: std::env::var_os("ARSIP_KEEP_CLUSTERS").is_some(),
        };
        cl.append_conf(&[
            format!("port = {}", cl.port),
            "listen_addresses = ''".into(),
            format!("unix_socket_directories = '{}'", cl.socket_dir.display()),
        ])?;
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

    /// Start and wait until the server accepts connections (or, for a recovering cluster,
    /// until pg_ctl's wait ends).
    pub fn start(&self) -> Result<()> {
        let r = check_output(
            "pg_ctl start",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "300", "start"])
                .stdin(Stdio::null())
                .output(),
        );
        r.map(|_| ()).map_err(|e| {
            PgError::Tool(format!(
                "{e}\n--- server log (tail) ---\n{}",
                tail(&self.log(), 30)
            ))
        })
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

    /// Run SQL with psql; returns unaligned tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        check_output(
            "psql",
            Command::new(self.bin.join("psql"))
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
                .arg("-d")
                .arg(self.conninfo(db))
                .arg("-c")
                .arg(sql)
                .output(),
        )
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

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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

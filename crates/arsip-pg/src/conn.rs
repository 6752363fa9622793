//! Connecting to PostgreSQL the way libpq does: `--dbname` (a conninfo string or URL) and
//! then the defaults the edge resolved ([`LibpqDefaults`]: `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE`, `PGPASSWORD`, `PGPASSFILE`, default `~/.pgpass`). A password written inside
//! `--dbname` is refused: argv is visible to every user of the host (`ps`), and arsip keeps
//! secrets out of argv.

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{PgError, Result};
use crate::settings::LibpqDefaults;

/// Refuse a password inside a connection string given on the command line.
pub fn refuse_password(dbname: &str) -> Result<()> {
    let hint = "put the password in a password file (PGPASSFILE, default ~/.pgpass, mode 0600) \
                or PGPASSWORD, never on the command line";
    if dbname.contains("://") {
        let u = url::Url::parse(dbname).map_err(|e| {
            PgError::refused(
                format!("--dbname is not a valid URL: {e}"),
                "check --dbname",
            )
        })?;
        if u.password().is_some() || u.query_pairs().any(|(k, _)| k == "password") {
            return Err(PgError::refused(
                "refusing a password inside the --dbname URL",
                hint,
            ));
        }
    } else if dbname
        .split_whitespace()
        .any(|kv| kv.split('=').next().is_some_and(|k| k.trim() == "password"))
        || dbname.contains("password =")
    {
        return Err(PgError::refused(
            "refusing a password inside the --dbname connection string",
            hint,
        ));
    }
    Ok(())
}

/// The name of the OS user of the effective uid, libpq's default user (it asks the user
/// database, not `$USER`); `postgres` if the uid has no entry.
fn os_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map_or_else(|| "postgres".into(), |u| u.name)
}

/// Resolve a connection config: `--dbname` first, then the libpq defaults.
pub fn config(dbname: Option<&str>, defaults: &LibpqDefaults) -> Result<Config> {
    let mut cfg = match dbname {
        Some(d) if d.contains('=') || d.contains("://") => {
            refuse_password(d)?;
            d.parse::<Config>().map_err(|e| {
                PgError::refused(format!("cannot parse --dbname: {e}"), "check --dbname")
            })?
        }
        Some(d) => {
            let mut c = Config::new();
            c.dbname(d);
            c
        }
        None => Config::new(),
    };
    if cfg.get_hosts().is_empty() {
        let hosts = defaults.host.as_deref().unwrap_or("/var/run/postgresql");
        for h in hosts.split(',') {
            if h.starts_with('/') {
                cfg.host_path(h);
            } else {
                cfg.host(h);
            }
        }
    }
    if cfg.get_ports().is_empty() {
        cfg.port(defaults.port.unwrap_or(5432));
    }
    if cfg.get_user().is_none() {
        cfg.user(defaults.user.clone().unwrap_or_else(os_user));
    }
    if cfg.get_dbname().is_none() {
        let db = defaults
            .database
            .clone()
            .unwrap_or_else(|| cfg.get_user().unwrap_or("postgres").to_string());
        cfg.dbname(db);
    }
    if cfg.get_password().is_none() {
        if let Some(p) = &defaults.password {
            cfg.password(p.as_bytes());
        } else if let Some(p) = defaults
            .passfile
            .as_deref()
            .and_then(|f| pgpass_lookup(f, &cfg))
        {
            cfg.password(p);
        }
    }
    cfg.application_name("arsip");
    Ok(cfg)
}

/// Look the password up in the password file (libpq's format and matching rules).
fn pgpass_lookup(path: &std::path::Path, cfg: &Config) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let host = match cfg.get_hosts().first()? {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432).to_string();
    let want = [
        host.as_str(),
        port.as_str(),
        cfg.get_dbname().unwrap_or(""),
        cfg.get_user().unwrap_or(""),
    ];
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(want.iter())
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for ch in line.chars() {
        if esc {
            out.last_mut().unwrap().push(ch);
            esc = false;
        } else if ch == '\\' {
            esc = true;
        } else if ch == ':' && out.len() < 5 {
            out.push(String::new());
        } else {
            out.last_mut().unwrap().push(ch);
        }
    }
    out
}

/// A client and the task that drives its connection. Use it as a [`Client`]; end it with
/// [`close`](Conn::close) where a session ends normally, so that the server sees a
/// Terminate message rather than a reset socket when arsip exits right after (it would log
/// "could not receive data from client: Connection reset by peer").
pub struct Conn {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Conn {
    pub async fn close(self) {
        // Dropping the last client makes the connection send Terminate and finish.
        drop(self.client);
        let _ = self.task.await;
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Connect and drive the connection on a background task.
pub async fn connect(cfg: &Config) -> Result<Conn> {
    let (client, conn) = cfg.connect(NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    // Times arsip reads as text (a backup's start and stop time, recorded as facts that
    // restores parse) in ISO form whatever the server's DateStyle (`SQL, DMY` prints
    // "02/12/2026 00:37:33 UTC", which no restore could read back).
    client.batch_execute("SET DateStyle = 'ISO, MDY'").await?;
    Ok(Conn { client, task })
}

/// Environment for libpq programs (pg_dump, pg_restore, psql) matching `cfg`, so they reach
/// the same server without a password on their command line.
pub fn libpq_env(cfg: &Config) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if let Some(h) = cfg.get_hosts().first() {
        env.push((
            "PGHOST",
            match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            },
        ));
    }
    if let Some(p) = cfg.get_ports().first() {
        env.push(("PGPORT", p.to_string()));
    }
    if let Some(u) = cfg.get_user() {
        env.push(("PGUSER", u.to_string()));
    }
    if let Some(d) = cfg.get_dbname() {
        env.push(("PGDATABASE", d.to_string()));
    }
    if let Some(p) = cfg.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(p).into_owned()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_passwords() {
        assert!(refuse_password("postgres://u:secret@h/db").is_err());
        assert!(refuse_password("postgres://u@h/db?password=x").is_err());
        assert!(refuse_password("host=h password=x dbname=d").is_err());
        assert!(refuse_password("postgres://u@h/db").is_ok());
        assert!(refuse_password("host=h dbname=d").is_ok());
    }

    #[test]
    fn pgpass_split() {
        assert_eq!(
            split_pgpass("h:5432:*:u:p\\:w"),
            vec!["h", "5432", "*", "u", "p:w"]
        );
    }
}

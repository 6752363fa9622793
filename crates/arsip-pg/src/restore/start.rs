//! Starting a restored cluster and waiting for recovery: until it is promoted, paused, or
//! shut down at the target, then what it reached. When PostgreSQL stops recovery instead,
//! the error quotes PostgreSQL's own reason from the server log (its FATAL and recovery
//! lines), never a generic hint.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::control::parse_lsn;
use crate::error::{PgError, Result};
use crate::os::{as_postgres, tail};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Reached {
    pub lsn: Option<String>,
    pub time: Option<String>,
    pub timeline: Option<i32>,
    /// PostgreSQL's own account of where it stopped ("recovery stopping after commit of
    /// transaction 747, time …"), when it logged one.
    pub stopped: Option<String>,
}

/// The lines of a server log that say why recovery stopped: FATAL and PANIC lines, else the
/// last lines about recovery.
pub fn server_reasons(log: &str) -> Vec<String> {
    let fatal: Vec<String> = log
        .lines()
        .filter(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(|l| l.trim().to_string())
        .collect();
    if !fatal.is_empty() {
        let mut out = fatal;
        // the DETAIL/HINT PostgreSQL gave with them
        out.extend(
            log.lines()
                .filter(|l| {
                    l.contains("recovery stopping")
                        || l.contains("recovery target")
                        || l.contains("consistent recovery")
                })
                .map(|l| l.trim().to_string()),
        );
        out.dedup();
        return out;
    }
    let rec: Vec<String> = log
        .lines()
        .filter(|l| l.contains("recovery") || l.contains("timeline"))
        .map(|l| l.trim().to_string())
        .collect();
    rec[rec.len().saturating_sub(5)..].to_vec()
}

/// The error for a server that stopped during recovery, with PostgreSQL's reasons.
pub fn recovery_failed(what: &str, log: &Path) -> PgError {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let reasons = server_reasons(&text);
    PgError::Recovery {
        what: what.to_string(),
        reason: if reasons.is_empty() {
            format!(
                "the server log says nothing about recovery; its tail:\n{}",
                tail(&text, 20)
            )
        } else {
            format!("PostgreSQL says:\n  {}", reasons.join("\n  "))
        },
        log: log.display().to_string(),
    }
}

/// `pg_ctl start` on a restored data directory; a start that fails reports the server's
/// reasons.
pub async fn pg_ctl_start(bin: &Path, pgdata: &Path, log: &Path) -> Result<()> {
    let mut c = as_postgres(&bin.join("pg_ctl"));
    c.arg("-D")
        .arg(pgdata)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", "3600", "start"])
        .stdin(std::process::Stdio::null());
    let o = tokio::process::Command::from(c)
        .output()
        .await
        .map_err(|e| PgError::Tool(format!("cannot run {}/pg_ctl: {e}", bin.display())))?;
    // A recovery that reaches a `shutdown` target quickly stops the server before pg_ctl
    // sees it accept connections: that is the requested end, not a failed start.
    let at_target =
        || std::fs::read_to_string(log).is_ok_and(|t| t.contains("shutdown at recovery target"));
    if o.status.success() || at_target() {
        Ok(())
    } else {
        Err(recovery_failed("the restored cluster did not start", log))
    }
}

/// What `pg_controldata` says (key → value).
async fn controldata(bin: &Path, pgdata: &Path) -> Vec<(String, String)> {
    let mut c = as_postgres(&bin.join("pg_controldata"));
    c.arg("-D").arg(pgdata);
    let Ok(o) = tokio::process::Command::from(c).output().await else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Where a cluster that shut down at its recovery target stopped: the LSN and timeline from
/// `pg_control` (the minimum recovery point its restartpoint recorded), the time and
/// PostgreSQL's own line from the log.
pub async fn reached_at_shutdown(bin: &Path, pgdata: &Path, log_text: &str) -> Reached {
    let cd = controldata(bin, pgdata).await;
    let get = |k: &str| cd.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let min =
        get("Minimum recovery ending location").filter(|v| parse_lsn(v).is_some_and(|l| l > 0));
    let lsn = min
        .clone()
        .or_else(|| get("Latest checkpoint's REDO location"));
    let timeline = if min.is_some() {
        get("Min recovery ending loc's timeline")
    } else {
        get("Latest checkpoint's TimeLineID")
    }
    .and_then(|t| t.parse().ok());
    let stopped = recovery_stopping(log_text);
    let time = stopped
        .as_deref()
        .and_then(|s| s.rsplit_once(", time "))
        .map(|(_, t)| t.trim().to_string());
    Reached {
        lsn,
        time,
        timeline,
        stopped,
    }
}

/// Wait until recovery has ended (promote), paused (pause), or the server stopped at the
/// target (shutdown); then report the last replayed LSN and transaction time. A server that
/// stops otherwise is an error quoting its reasons. `bin` holds the server's programs
/// (`pg_controldata` reads where a shut-down server stopped).
pub async fn wait_for_recovery(
    bin: &Path,
    host: &str,
    port: u16,
    action: &str,
    timeout: Duration,
    pgdata: &Path,
    log: &Path,
) -> Result<Reached> {
    let mut cfg = tokio_postgres::Config::new();
    if host.starts_with('/') {
        cfg.host_path(host);
    } else {
        cfg.host(host);
    }
    cfg.port(port).user("postgres").dbname("postgres");
    let deadline = Instant::now() + timeout;
    let pid_file = pgdata.join("postmaster.pid");
    loop {
        if Instant::now() > deadline {
            return Err(PgError::Tool("recovery did not finish in time".into()));
        }
        if action == "shutdown" {
            if !pid_file.exists() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if !text.contains("shutdown at recovery target") {
                    return Err(recovery_failed(
                        "the server stopped before reaching the recovery target",
                        log,
                    ));
                }
                return Ok(reached_at_shutdown(bin, pgdata, &text).await);
            }
        } else if let Ok(c) = crate::conn::connect(&cfg).await {
            let r = c
                .query_one(
                    "SELECT pg_is_in_recovery(), \
                     CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'not paused' END, \
                     pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()::text, \
                     (SELECT timeline_id FROM pg_control_checkpoint())",
                    &[],
                )
                .await;
            if let Ok(r) = r {
                let in_rec: bool = r.get(0);
                let pause: String = r.get(1);
                let done =
                    (action == "promote" && !in_rec) || (action == "pause" && pause == "paused");
                if done {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let mut reached = Reached {
                        lsn: r.get(2),
                        time: r.get(3),
                        timeline: r.get(4),
                        stopped: recovery_stopping(&text),
                    };
                    if action == "promote" {
                        // The checkpoint timeline lags promotion until the end-of-recovery
                        // checkpoint; ask the WAL insert position's file name instead.
                        if let Ok(t) = c
                            .query_one("SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int", &[])
                            .await
                        {
                            reached.timeline = Some(t.get(0));
                        }
                    }
                    return Ok(reached);
                }
            }
        }
        if !pid_file.exists() && action != "shutdown" {
            return Err(recovery_failed("the server stopped during recovery", log));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server log's last "recovery stopping …" message (where recovery ended and why).
fn recovery_stopping(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("recovery stopping"))
        .map(|l| {
            l.split_once("LOG:")
                .map_or(l, |(_, r)| r)
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_quote_postgres() {
        let log = "2026-12-01 10:00:00 UTC [1] LOG:  starting point-in-time recovery to 2026-12-01\n\
                   2026-12-01 10:00:01 UTC [1] LOG:  redo done at 0/3000100\n\
                   2026-12-01 10:00:01 UTC [1] FATAL:  recovery ended before configured recovery target was reached\n\
                   2026-12-01 10:00:01 UTC [2] LOG:  startup process (PID 1) exited with exit code 1\n";
        let r = server_reasons(log);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("recovery ended before configured recovery target was reached"));
        let quiet = "LOG:  database system is ready\nLOG:  archive recovery complete\n";
        assert_eq!(
            server_reasons(quiet),
            vec!["LOG:  archive recovery complete"]
        );
    }
}

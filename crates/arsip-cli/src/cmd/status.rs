//! `arsip status`: the daemon's report (`GET /api/v1/status`), problems first.

use anyhow::{anyhow, Result};
use serde_json::Value;

use crate::cli::StatusArgs;
use crate::ctx::{human, Ctx, Render};
use crate::exit;

struct Report(Value);

impl serde::Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

fn bytes(v: &Value) -> String {
    v.as_u64().map(human).unwrap_or_else(|| "-".into())
}

fn when(v: &Value) -> String {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%MZ").to_string())
        .unwrap_or_else(|| "-".into())
}

impl Render for Report {
    fn human(&self) -> String {
        let r = &self.0;
        let mut out = vec![format!(
            "arsip status at {} (daemon {})",
            when(&r["time"]),
            r["daemon"].as_str().unwrap_or("?")
        )];
        out.push(format!(
            "{:<16} {:<12} {:<8} {:<18} {:>10} {:>8} {:<5} {:>6} {:>12}",
            "source", "kind", "status", "last backup", "size", "took", "RPO", "7 d", "trend/day"
        ));
        for s in r["sources"].as_array().into_iter().flatten() {
            let last = &s["last_backup"];
            let took = last["seconds"]
                .as_f64()
                .map(|x| format!("{x:.0} s"))
                .unwrap_or_else(|| "-".into());
            let week = format!("{}/{}", s["ok_7d"], s["runs_7d"]);
            let trend = s["size_trend_bytes_per_day"]
                .as_f64()
                .map(|x| {
                    format!(
                        "{}{}",
                        if x < 0.0 { "-" } else { "+" },
                        human(x.abs() as u64)
                    )
                })
                .unwrap_or_else(|| "-".into());
            out.push(format!(
                "{:<16} {:<12} {:<8} {:<18} {:>10} {:>8} {:<5} {:>6} {:>12}",
                s["name"].as_str().unwrap_or(""),
                s["kind"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or("").to_uppercase(),
                when(&s["last_success"]),
                bytes(&last["logical_bytes"]),
                took,
                if s["rpo_ok"] == true { "ok" } else { "MISS" },
                week,
                trend
            ));
        }
        out.push(String::new());
        out.push(format!(
            "{:<16} {:>10} {:>7} {:>12} {:>14} {:>14}",
            "repository", "stored", "quota", "growth/day", "requests 30 d", "cost/month"
        ));
        for p in r["repositories"].as_array().into_iter().flatten() {
            let q = &p["requests_30d"];
            let reqs: u64 = ["put", "get", "head", "list", "delete"]
                .iter()
                .filter_map(|k| q[*k].as_u64())
                .sum();
            out.push(format!(
                "{:<16} {:>10} {:>7} {:>12} {:>14} {:>14}",
                p["name"].as_str().unwrap_or(""),
                bytes(&p["stored_bytes"]),
                p["quota_used"]
                    .as_f64()
                    .map(|x| format!("{:.0} %", x * 100.0))
                    .unwrap_or_else(|| "-".into()),
                p["growth_bytes_per_day"]
                    .as_f64()
                    .map(|x| human(x as u64))
                    .unwrap_or_else(|| "-".into()),
                reqs,
                p["cost"]["monthly"]
                    .as_f64()
                    .map(|x| format!("{} {x:.2}", p["cost"]["currency"].as_str().unwrap_or("")))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
        let alerts = r["open_alerts"].as_array().cloned().unwrap_or_default();
        out.push(String::new());
        if alerts.is_empty() {
            out.push("open alerts: none".into());
        } else {
            out.push("open alerts:".into());
            for a in alerts {
                let f = &a["firing"];
                out.push(format!(
                    "  {:<8} {} {}: {}",
                    f["severity"].as_str().unwrap_or("").to_uppercase(),
                    f["rule"].as_str().unwrap_or(""),
                    f["subject"].as_str().unwrap_or(""),
                    f["summary"].as_str().unwrap_or("")
                ));
            }
        }
        out.join("\n")
    }
}

/// Exit 0 when every source is ok or running, 1 when one is failed, stale or never backed up.
pub async fn run(ctx: &Ctx<'_>, a: &StatusArgs) -> Result<u8> {
    if a.from_repository {
        return from_repository(ctx, a).await;
    }
    let (base, token) = match (&a.daemon, &a.token_file) {
        (Some(d), Some(f)) => {
            let t = std::fs::read_to_string(f).map_err(|e| anyhow!("{}: {e}", f.display()))?;
            (d.clone(), zeroize::Zeroizing::new(t))
        }
        _ => {
            let config = arsip_control::load(&a.config).map_err(|e| anyhow!("{e}"))?;
            arsip_control::status::daemon_of(&config).map_err(anyhow::Error::msg)?
        }
    };
    let v = arsip_control::status::fetch(&base, &token, a.ca_file.as_deref())
        .await
        .map_err(anyhow::Error::msg)?;
    finish(ctx, v)
}

/// Exit 1 when a source is failed, stale or never backed up.
fn finish(ctx: &Ctx<'_>, v: Value) -> Result<u8> {
    let bad = v["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| matches!(s["status"].as_str(), Some("failed" | "stale" | "never")));
    ctx.emit(&Report(v))?;
    Ok(if bad { exit::FAILURE } else { exit::OK })
}

/// `--from-repository`: the report from the repositories themselves.
async fn from_repository(ctx: &Ctx<'_>, a: &StatusArgs) -> Result<u8> {
    use std::collections::BTreeMap;
    let config = arsip_control::load(&a.config).map_err(|e| anyhow!("{e}"))?;
    let local = ctx.local_settings()?;
    let clock = arsip_ops::repo::clock::from_env();
    let executors = arsip_control::executor::Executors::new(
        config.clone(),
        clock.clone(),
        std::env::current_exe()?,
        ctx.pg_settings(),
        local.host,
        local.user,
    );
    let (mut repos, mut full) = (BTreeMap::new(), BTreeMap::new());
    for (name, r) in &config.repositories {
        let opened = executors
            .open(name, !r.has_full_key())
            .await
            .map_err(anyhow::Error::msg)?;
        repos.insert(name.clone(), opened.shared().clone());
        if let Ok(f) = opened.full("status") {
            full.insert(name.clone(), f);
        }
    }
    let now = clock.now();
    let state = arsip_control::status::state_from_repositories(&config, &repos, &full, now)
        .await
        .map_err(anyhow::Error::msg)?;
    let report = arsip_control::status::report(&config, &state, now);
    finish(ctx, serde_json::to_value(&report)?)
}

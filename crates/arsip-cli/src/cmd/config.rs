//! `arsip config check [--config FILE]`: validate the configuration file and print the
//! resolved plan (docs/CONFIG.md). Opens no repository and reads no secret.

use anyhow::Result;
use arsip_control::plan::{JobPlan, Plan};
use arsip_control::ConfigErrors;

use crate::cli::{ConfigCheckArgs, ConfigCmd};
use crate::ctx::{Ctx, Render};
use crate::exit;

pub async fn run(ctx: &Ctx<'_>, c: &ConfigCmd) -> Result<u8> {
    match c {
        ConfigCmd::Check(a) => check(ctx, a),
    }
}

fn check(ctx: &Ctx<'_>, a: &ConfigCheckArgs) -> Result<u8> {
    match arsip_control::load(&a.config) {
        Ok(config) => {
            let now = arsip_ops::repo::clock::from_env().now();
            ctx.emit(&Plan::new(&config, now, a.runs.into()))?;
            Ok(exit::OK)
        }
        Err(errors) => {
            ctx.emit(&Invalid(errors))?;
            Ok(exit::USAGE)
        }
    }
}

/// An invalid file: every error, on stderr (or as JSON on stdout).
#[derive(serde::Serialize)]
struct Invalid(ConfigErrors);

impl Render for Invalid {
    fn human(&self) -> String {
        eprintln!("{}", self.0);
        eprintln!(
            "arsip: error: {} error(s) in {}",
            self.0.errors.len(),
            self.0.path.display()
        );
        String::new()
    }
}

fn secs(d: jiff::SignedDuration) -> String {
    let s = d.as_secs();
    match s {
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn job_line(j: &JobPlan, widths: &[usize; 4]) -> Vec<String> {
    let head = format!(
        "{:w0$}  {:w1$}  {:w2$}  {:w3$}",
        j.name,
        serde_json::to_value(j.kind).unwrap().as_str().unwrap_or(""),
        j.target,
        j.schedule.expr(),
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2],
        w3 = widths[3],
    );
    let pad = " ".repeat(head.len());
    j.next
        .iter()
        .enumerate()
        .map(|(n, r)| {
            format!(
                "{}  {}  {}",
                if n == 0 { &head } else { &pad },
                r.local,
                r.utc.strftime("%Y-%m-%d %H:%MZ")
            )
        })
        .collect()
}

impl Render for Plan {
    fn human(&self) -> String {
        let mut out = format!(
            "{}: valid: {} job(s), {} source(s), {} repositor{}, {} channel(s)\n",
            self.config.display(),
            self.jobs.len(),
            self.sources.len(),
            self.repositories.len(),
            if self.repositories.len() == 1 {
                "y"
            } else {
                "ies"
            },
            self.channels.len()
        );
        let w = |f: &dyn Fn(&JobPlan) -> usize, title: &str| {
            self.jobs.iter().map(f).max().unwrap_or(0).max(title.len())
        };
        let widths = [
            w(&|j| j.name.len(), "job"),
            w(&|_| "wal-check".len(), "type"),
            w(&|j| j.target.len(), "target"),
            w(&|j| j.schedule.expr().len(), "schedule"),
        ];
        if !self.jobs.is_empty() {
            out += &format!(
                "\n{:w0$}  {:w1$}  {:w2$}  {:w3$}  next runs (local time)             (UTC)\n",
                "job",
                "type",
                "target",
                "schedule",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            );
            for j in &self.jobs {
                for line in job_line(j, &widths) {
                    out += &line;
                    out.push('\n');
                }
            }
            let zones: std::collections::BTreeSet<&str> =
                self.jobs.iter().map(|j| j.schedule.zone_name()).collect();
            out += &format!(
                "(schedules in {})\n",
                zones.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        out += "\nsources:\n";
        for (name, s) in &self.sources {
            out += &format!(
                "  {name}: {} into {}, RPO {}{}\n",
                serde_json::to_value(s.kind).unwrap().as_str().unwrap_or(""),
                s.repository,
                secs(s.rpo),
                s.rto
                    .map(|r| format!(", RTO {}", secs(r)))
                    .unwrap_or_default()
            );
        }
        out += "repositories:\n";
        for (name, r) in &self.repositories {
            let opens: Vec<String> = [
                r.password
                    .as_ref()
                    .map(|s| format!("password {}", s.describe())),
                r.key_file.as_ref().map(|s| format!("key {}", s.describe())),
                r.agent_file
                    .as_ref()
                    .map(|s| format!("agent {}", s.describe())),
            ]
            .into_iter()
            .flatten()
            .collect();
            out += &format!(
                "  {name}: {}{}; opens with {}\n",
                r.location,
                r.region
                    .as_ref()
                    .map(|g| format!(" ({g})"))
                    .unwrap_or_default(),
                opens.join(", ")
            );
        }
        if !self.routes.is_empty() {
            out += "alerts:\n";
            for (sev, chans) in &self.routes {
                out += &format!(
                    "  {} → {}\n",
                    serde_json::to_value(sev).unwrap().as_str().unwrap_or(""),
                    chans.join(", ")
                );
            }
        }
        for s in &self.unscheduled_sources {
            out += &format!("WARNING: source {s} has no backup job: its RPO cannot be met\n");
        }
        out
    }
}

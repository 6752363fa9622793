//! The web dashboard of `arsip serve`: server-rendered HTML with inline SVG charts, no
//! JavaScript, nothing fetched from elsewhere (the CSP forbids it), refreshed every 60 s.
//! Built for the person on call at 3 a.m.: open alerts first, then every source by how bad
//! it is, each with a status word **and** a colour, the age of its last backup, its RPO and
//! its next run; a page per source with its size and duration over time and its runs.
//! Everything comes from the daemon's state, like `/metrics`.

use std::fmt::Write;

use jiff::Timestamp;

use crate::config::{Config, JobKind};
use crate::state::{RunRecord, State};
use crate::status::{self, Report};

/// The stylesheet, served as `/static/arsip.css`.
pub const CSS: &str = include_str!("dashboard.css");

/// The icon, served as `/static/favicon.svg`.
pub const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#24292f\"/><path d=\"M4 12V6h8v6zM3 4h10v2H3z\" fill=\"#d0d7de\"/></svg>";

/// The Content-Security-Policy of every page: no script, no outside fetch.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HTML-escape `s` (text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, nav: &str, body: &str) -> String {
    page_with(title, nav, body, true)
}

fn page_with(title: &str, nav: &str, body: &str, refresh: bool) -> String {
    let links = [
        ("/", "Overview"),
        ("/alerts", "Alerts"),
        ("/storage", "Storage"),
        ("/verify", "Verification"),
    ];
    let mut n = String::new();
    for (href, label) in links {
        let class = if href == nav { " class=\"here\"" } else { "" };
        let _ = write!(n, "<a href=\"{href}\"{class}>{label}</a>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         {refresh}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · arsip</title><link rel=\"stylesheet\" href=\"/static/arsip.css\"><link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\"></head>\
         <body><header><span class=\"brand\">arsip</span><nav>{n}</nav></header><main>{body}</main></body></html>",
        esc(title),
        refresh = if refresh { "<meta http-equiv=\"refresh\" content=\"60\">" } else { "" },
    )
}

/// "3 h ago", "2 d ago".
fn age(now: Timestamp, t: Timestamp) -> String {
    let s = now.duration_since(t).as_secs();
    let (v, u) = if s < 0 {
        return "in the future".into();
    } else if s < 120 {
        (s, "s")
    } else if s < 7200 {
        (s / 60, "min")
    } else if s < 172_800 {
        (s / 3600, "h")
    } else {
        (s / 86_400, "d")
    };
    format!("{v} {u} ago")
}

fn time(t: Timestamp, zone: &jiff::tz::TimeZone) -> String {
    let z = t.to_zoned(zone.clone());
    format!(
        "<time datetime=\"{t}\" title=\"{t}\">{}</time>",
        esc(&z.strftime("%Y-%m-%d %H:%M %Z").to_string())
    )
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds, with decimals when short.
fn secs(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} s")
    } else if v < 600.0 {
        format!("{v:.0} s")
    } else {
        format!("{:.1} min", v / 60.0)
    }
}

/// The CSS class of a run's outcome.
fn outcome_class(o: crate::journal::Outcome) -> &'static str {
    use crate::journal::Outcome::*;
    match o {
        Ok => "ok",
        Warnings => "warning",
        Skipped => "running",
        Failed | Interrupted | Missed | Cancelled => "failed",
    }
}

fn zone(config: &Config) -> jiff::tz::TimeZone {
    crate::schedule::zone(&config.daemon.time_zone).unwrap_or(jiff::tz::TimeZone::UTC)
}

fn badge(word: &str) -> String {
    format!(
        "<span class=\"badge {w}\">{}</span>",
        word.to_uppercase(),
        w = esc(word)
    )
}

fn alerts_table(r: &Report, zone: &jiff::tz::TimeZone) -> String {
    if r.open_alerts.is_empty() {
        return "<p class=\"quiet\" data-test=\"no-alerts\">No open alerts.</p>".into();
    }
    let mut s = String::from("<table data-test=\"alerts\"><tr><th>severity</th><th>rule</th><th>subject</th><th>since</th><th>what</th><th>notified</th></tr>");
    let mut open = r.open_alerts.clone();
    open.sort_by_key(|a| (a.firing.severity, a.opened));
    for a in &open {
        let sev = match a.firing.severity {
            crate::config::Severity::Critical => "critical",
            crate::config::Severity::Warning => "warning",
        };
        let _ = write!(
            s,
            "<tr class=\"{sev}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            badge(sev),
            esc(&a.firing.rule),
            esc(&a.firing.subject),
            time(a.opened, zone),
            esc(&a.firing.summary),
            esc(&a.delivered.iter().cloned().collect::<Vec<_>>().join(", "))
        );
    }
    s.push_str("</table>");
    s
}

/// `/`: open alerts, then the sources, worst first.
pub fn overview(config: &Config, state: &State, now: Timestamp) -> String {
    let r = status::report(config, state, now);
    let z = zone(config);
    let mut b = String::new();
    let bad = r
        .sources
        .iter()
        .filter(|s| status::rank(s.status) < 3)
        .count();
    let _ = write!(
        b,
        "<section class=\"summary {}\" data-test=\"summary\"><h1>{}</h1><p>{} source(s), {} open alert(s). Updated {}.</p></section>",
        if bad > 0 || !r.open_alerts.is_empty() { "bad" } else { "good" },
        if bad > 0 { format!("{bad} source(s) need attention") } else { "All sources are backed up within their RPO".into() },
        r.sources.len(),
        r.open_alerts.len(),
        time(now, &z)
    );
    b.push_str("<h2>Open alerts</h2>");
    b.push_str(&alerts_table(&r, &z));
    b.push_str("<h2>Sources</h2><table data-test=\"sources\"><tr><th>status</th><th>source</th><th>kind</th><th>last backup</th><th>size</th><th>took</th><th>RPO</th><th>7 days</th><th>next run</th></tr>");
    for s in &r.sources {
        let last = match s.last_success {
            Some(t) => format!(
                "{} <span class=\"quiet\">({})</span>",
                time(t, &z),
                age(now, t)
            ),
            None => "<span class=\"quiet\">never</span>".into(),
        };
        let size = s
            .last_backup
            .as_ref()
            .and_then(|l| l.logical_bytes)
            .map(bytes)
            .unwrap_or_else(|| "–".into());
        let took = s
            .last_backup
            .as_ref()
            .and_then(|l| l.seconds)
            .map(secs)
            .unwrap_or_else(|| "–".into());
        let rpo = format!(
            "{} <span class=\"quiet\">{:#}</span>",
            if s.rpo_ok {
                "<span class=\"ok-text\">met</span>"
            } else {
                "<span class=\"bad-text\">MISSED</span>"
            },
            jiff::SignedDuration::from_secs(s.rpo_seconds)
        );
        let week = match s.success_rate_7d {
            Some(_) => format!("{}/{}", s.ok_7d, s.runs_7d),
            None => "–".into(),
        };
        let next = s
            .next_run
            .map(|t| time(t, &z))
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            b,
            "<tr class=\"{w}\" data-test=\"source-{n}\"><td>{}</td><td><a href=\"/source/{n}\">{n}</a></td><td>{}</td><td>{last}</td><td>{size}</td><td>{took}</td><td>{rpo}</td><td>{week}</td><td>{next}</td></tr>",
            badge(s.status),
            esc(s.kind),
            w = esc(s.status),
            n = esc(&s.name),
        );
    }
    b.push_str("</table>");
    page("Overview", "/", &b)
}

/// A line chart of `points` (time, value) as inline SVG, with its axis labels.
pub fn chart(title: &str, points: &[(Timestamp, f64)], unit: fn(f64) -> String) -> String {
    let (w, h, pad) = (640.0, 160.0, 36.0);
    let mut s = format!(
        "<figure data-test=\"chart\"><figcaption>{}</figcaption>",
        esc(title)
    );
    if points.len() < 2 {
        s.push_str("<p class=\"quiet\">Not enough history yet.</p></figure>");
        return s;
    }
    let t0 = points[0].0.as_second() as f64;
    let t1 = points[points.len() - 1].0.as_second() as f64;
    let vmax = points.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9);
    let x = |t: Timestamp| pad + (t.as_second() as f64 - t0) / (t1 - t0).max(1.0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad / 2.0 - v / vmax * (h - pad);
    let mut path = String::new();
    for (i, (t, v)) in points.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            x(*t),
            y(*v)
        );
    }
    let _ = write!(
        s,
        "<svg viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\"><line class=\"axis\" x1=\"{pad}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\"/>\
         <text x=\"2\" y=\"14\">{max}</text><text x=\"2\" y=\"{b:.1}\">0</text><path class=\"line\" d=\"{path}\"/>",
        t = esc(title),
        b = h - pad / 2.0,
        r = w - pad,
        max = esc(&unit(vmax)),
    );
    for (t, v) in points {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{t}: {}</title></circle>",
            x(*t),
            y(*v),
            esc(&unit(*v))
        );
    }
    s.push_str("</svg></figure>");
    s
}

fn runs_table(runs: &[&RunRecord], z: &jiff::tz::TimeZone) -> String {
    let mut b = String::from("<table data-test=\"runs\"><tr><th>outcome</th><th>scheduled</th><th>finished</th><th>attempts</th><th>size</th><th>took</th><th>by</th><th>message</th></tr>");
    for r in runs {
        let o = crate::state::outcome_name(r.outcome);
        let word = outcome_class(r.outcome);
        let by = match (&r.peer, &r.triggered_by) {
            (Some(p), _) => format!("peer {}", esc(p)),
            (None, Some(t)) => format!("trigger ({})", esc(t)),
            _ => "schedule".into(),
        };
        let _ = write!(
            b,
            "<tr class=\"{word}\"><td><span class=\"badge {word}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{by}</td><td>{}</td></tr>",
            o.to_uppercase(),
            time(r.scheduled, z),
            time(r.finished, z),
            r.attempts,
            r.facts.logical_bytes.map(bytes).unwrap_or_else(|| "–".into()),
            r.seconds().map(secs).unwrap_or_else(|| "–".into()),
            esc(r.message.as_deref().unwrap_or("")),
        );
    }
    b.push_str("</table>");
    b
}

/// `/source/{name}`: size and duration over time, the runs, newest first.
pub fn source(config: &Config, state: &State, name: &str, now: Timestamp) -> Option<String> {
    let s = config.sources.get(name)?;
    let z = zone(config);
    let st = state.source(config, name);
    let (word, rpo_ok) = status::word(&st, s.rpo, now);
    let mut runs: Vec<&RunRecord> = config
        .jobs
        .iter()
        .filter(|(_, d)| d.kind == JobKind::Backup && d.source.as_deref() == Some(name))
        .filter_map(|(j, _)| state.jobs.get(j))
        .flat_map(|j| j.history.iter())
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.finished));
    let measured: Vec<&&RunRecord> = runs
        .iter()
        .rev()
        .filter(|r| r.outcome.succeeded() && !r.facts.is_empty())
        .collect();
    let sizes: Vec<(Timestamp, f64)> = measured
        .iter()
        .filter_map(|r| Some((r.finished, r.facts.logical_bytes? as f64)))
        .collect();
    let durations: Vec<(Timestamp, f64)> = measured
        .iter()
        .filter_map(|r| Some((r.finished, r.seconds()?)))
        .collect();
    let mut b = format!(
        "<section class=\"summary {}\" data-test=\"source-summary\"><h1>{} {}</h1><p>{} in repository {} · RPO {:#} {} · last success {}</p></section>",
        if status::rank(word) < 3 { "bad" } else { "good" },
        badge(word),
        esc(name),
        esc(crate::metrics::kind_name(s.kind)),
        esc(&s.repository),
        s.rpo,
        if rpo_ok { "met" } else { "<strong>missed</strong>" },
        st.last_success.as_ref().map(|r| format!("{} ({})", time(r.finished, &z), age(now, r.finished))).unwrap_or_else(|| "never".into()),
    );
    b.push_str("<div class=\"charts\">");
    b.push_str(&chart("Backup size", &sizes, |v| bytes(v as u64)));
    b.push_str(&chart("Backup duration", &durations, secs));
    b.push_str("</div><h2>Runs</h2>");
    b.push_str(&runs_table(
        &runs.iter().take(100).copied().collect::<Vec<_>>(),
        &z,
    ));
    Some(page(name, "", &b))
}

/// `/alerts`: open alerts, and what each channel was sent.
pub fn alerts(config: &Config, state: &State, now: Timestamp) -> String {
    let r = status::report(config, state, now);
    let z = zone(config);
    let mut b = String::from("<h1>Alerts</h1><h2>Open</h2>");
    b.push_str(&alerts_table(&r, &z));
    b.push_str("<h2>Deliveries</h2><table data-test=\"deliveries\"><tr><th>channel</th><th>result</th><th>count</th></tr>");
    for ((channel, result), n) in &state.alerts.notifications {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
            esc(channel),
            esc(result)
        );
    }
    b.push_str("</table>");
    page("Alerts", "/alerts", &b)
}

/// `/storage`: per repository storage, growth, requests and cost.
pub fn storage(config: &Config, state: &State, now: Timestamp) -> String {
    let r = status::report(config, state, now);
    let mut b = String::from("<h1>Storage</h1><table data-test=\"storage\"><tr><th>repository</th><th>stored</th><th>quota used</th><th>growth per day</th><th>requests (30 days)</th><th>cost per month</th></tr>");
    for p in &r.repositories {
        let q = &p.requests_30d;
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            p.stored_bytes.map(bytes).unwrap_or_else(|| "–".into()),
            p.quota_used
                .map(|x| format!("{:.0} %", x * 100.0))
                .unwrap_or_else(|| "–".into()),
            p.growth_bytes_per_day
                .map(|x| bytes(x as u64))
                .unwrap_or_else(|| "–".into()),
            q.put + q.get + q.head + q.list + q.delete,
            p.cost
                .as_ref()
                .map(|c| format!("{} {:.2}", esc(&c.currency), c.monthly))
                .unwrap_or_else(|| "–".into()),
        );
    }
    b.push_str("</table>");
    // Stored bytes of backups per day, over the repository's history.
    for name in config.repositories.keys() {
        let mut daily: std::collections::BTreeMap<i64, f64> = Default::default();
        for (j, d) in &config.jobs {
            if &d.repository != name {
                continue;
            }
            for run in state.jobs.get(j).into_iter().flat_map(|j| &j.history) {
                if let Some(sb) = run.facts.stored_bytes {
                    *daily.entry(run.finished.as_second() / 86_400).or_default() += sb as f64;
                }
            }
        }
        let points: Vec<(Timestamp, f64)> = daily
            .into_iter()
            .filter_map(|(d, v)| Some((Timestamp::from_second(d * 86_400).ok()?, v)))
            .collect();
        b.push_str(&chart(
            &format!("{name}: bytes stored per day"),
            &points,
            |v| bytes(v as u64),
        ));
    }
    page("Storage", "/storage", &b)
}

/// `/verify`: verification and restore-test history.
pub fn verify(config: &Config, state: &State, _now: Timestamp) -> String {
    let z = zone(config);
    let mut b = String::from("<h1>Verification</h1>");
    let mut runs: Vec<&RunRecord> = config
        .jobs
        .iter()
        .filter(|(_, d)| d.kind == JobKind::Verify)
        .filter_map(|(j, _)| state.jobs.get(j))
        .flat_map(|j| j.history.iter())
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.finished));
    if runs.is_empty() {
        b.push_str("<p class=\"quiet\" data-test=\"no-verify\">No verification has run yet.</p>");
    } else {
        b.push_str("<table data-test=\"verify\"><tr><th>outcome</th><th>finished</th><th>damaged objects</th><th>restore tests (RTO)</th><th>message</th></tr>");
        for r in runs.iter().take(100) {
            let o = crate::state::outcome_name(r.outcome);
            let word = outcome_class(r.outcome);
            let tests: Vec<String> = r
                .facts
                .restore_tests
                .iter()
                .map(|t| {
                    format!(
                        "{} {} ({:.0} s)",
                        esc(&t.kind),
                        if t.ok { "passed" } else { "FAILED" },
                        t.rto_seconds
                    )
                })
                .collect();
            let _ = write!(
                b,
                "<tr class=\"{word}\"><td><span class=\"badge {word}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                o.to_uppercase(),
                time(r.finished, &z),
                r.facts.damaged_objects.map(|d| d.to_string()).unwrap_or_else(|| "–".into()),
                tests.join("; "),
                esc(r.message.as_deref().unwrap_or("")),
            );
        }
        b.push_str("</table>");
    }
    page("Verification", "/verify", &b)
}

/// The login page: a token, traded for a session cookie.
pub fn login(message: Option<&str>) -> String {
    let m = message
        .map(|m| format!("<p class=\"bad-text\">{}</p>", esc(m)))
        .unwrap_or_default();
    page_with(
        "Sign in",
        "",
        &format!("<h1>Sign in</h1>{m}<form method=\"post\" action=\"/login\"><label>API token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required></label> <button type=\"submit\">Sign in</button></form>"),
        false,
    )
}

#[cfg(test)]
mod tests;

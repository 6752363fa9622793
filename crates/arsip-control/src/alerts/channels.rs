//! The channels alerts go to: what each notification sends (generic webhook JSON, Slack
//! incoming webhook, PagerDuty Events API v2, e-mail over SMTP with STARTTLS or TLS) and one
//! delivery of it, classified for the retry policy ([`Delivery`]).

use std::time::Duration;

use serde_json::json;

use super::{Firing, Status};
use crate::config::{Channel, Severity};
use jiff::Timestamp;

/// One notification to send.
#[derive(Debug, Clone)]
pub struct Notification {
    pub channel: String,
    pub status: Status,
    pub firing: Firing,
    /// When the alert opened, and (for a resolve) when it cleared.
    pub opened: Timestamp,
    pub at: Timestamp,
    pub daemon: String,
    pub host: String,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Sent,
    /// Tried again later (with how long to wait, if the receiver said).
    Retry(String, Option<Duration>),
    /// Will never work as it is (a 4xx, a bad URL): reported, not retried.
    Permanent(String),
}

/// The request a notification makes on its channel: (URL, JSON body).
pub fn request(
    channel: &Channel,
    n: &Notification,
) -> Result<Option<(String, serde_json::Value)>, String> {
    let f = &n.firing;
    let sev = match f.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    };
    let status = match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    };
    Ok(Some(match channel {
        Channel::Webhook { url } => (
            url.read()?,
            json!({
                "version": 1,
                "status": status,
                "rule": f.rule,
                "severity": sev,
                "subject": f.subject,
                "repository": f.repository,
                "summary": f.summary,
                "started_at": n.opened,
                "resolved_at": (n.status == Status::Resolved).then_some(n.at),
                "dedup_key": f.dedup_key(),
                "daemon": n.daemon,
                "host": n.host,
            }),
        ),
        Channel::Slack { url } => {
            let head = match n.status {
                Status::Firing => format!("[{}] {}", sev.to_uppercase(), f.rule),
                Status::Resolved => format!("[RESOLVED] {}", f.rule),
            };
            (
                url.read()?,
                json!({ "text": format!("{head}: {} (arsip on {})", f.summary, n.host) }),
            )
        }
        Channel::Pagerduty { routing_key, url } => {
            let key = routing_key.read()?;
            let body = match n.status {
                Status::Firing => json!({
                    "routing_key": key,
                    "event_action": "trigger",
                    "dedup_key": f.dedup_key(),
                    "payload": {
                        "summary": truncate(&f.summary, 1024),
                        "source": n.host,
                        "severity": sev,
                        "timestamp": n.opened,
                        "component": f.subject,
                        "group": f.repository,
                        "class": f.rule,
                        "custom_details": { "daemon": n.daemon },
                    },
                }),
                Status::Resolved => json!({
                    "routing_key": key,
                    "event_action": "resolve",
                    "dedup_key": f.dedup_key(),
                }),
            };
            (url.clone(), body)
        }
        // E-mail goes over SMTP (`send_email`): nothing to POST.
        Channel::Email { .. } => return Ok(None),
    }))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The subject and text of a notification's e-mail.
pub fn email_text(n: &Notification) -> (String, String) {
    let f = &n.firing;
    let head = match (n.status, f.severity) {
        (Status::Resolved, _) => "RESOLVED",
        (Status::Firing, Severity::Critical) => "CRITICAL",
        (Status::Firing, Severity::Warning) => "WARNING",
    };
    let subject = format!("[arsip {head}] {}: {}", f.rule, f.subject);
    let mut body = format!(
        "{}\n\nrule: {}\nsubject: {}\nrepository: {}\nsince: {}\n",
        f.summary, f.rule, f.subject, f.repository, n.opened
    );
    if n.status == Status::Resolved {
        body.push_str(&format!("resolved: {}\n", n.at));
    }
    body.push_str(&format!(
        "daemon: {} on {}\ndedup key: {}\n",
        n.daemon,
        n.host,
        f.dedup_key()
    ));
    (subject, body)
}

/// Send one notification as e-mail: STARTTLS (required: a server that does not offer it
/// gets nothing, credentials included) or TLS from the first byte; AUTH only inside TLS.
async fn send_email(channel: &Channel, n: &Notification) -> Delivery {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let Channel::Email {
        host,
        port,
        tls,
        ca_file,
        username,
        password,
        from,
        to,
    } = channel
    else {
        return Delivery::Permanent("not an e-mail channel".into());
    };
    let (subject, body) = email_text(n);
    let id = blake3::hash(format!("{}:{:?}", n.firing.dedup_key(), n.status).as_bytes());
    let mut m = Message::builder()
        .subject(subject)
        .message_id(Some(format!("<{}@arsip>", &id.to_hex()[..32])));
    match from.parse() {
        Ok(a) => m = m.from(a),
        Err(_) => return Delivery::Permanent(format!("from {from:?} is not an address")),
    }
    for t in to {
        match t.parse() {
            Ok(a) => m = m.to(a),
            Err(_) => return Delivery::Permanent(format!("to {t:?} is not an address")),
        }
    }
    let message = match m.body(body) {
        Ok(m) => m,
        Err(e) => return Delivery::Permanent(format!("cannot build the message: {e}")),
    };
    let mut params = TlsParameters::builder(host.clone());
    if let Some(ca) = ca_file {
        let pem = match std::fs::read(ca) {
            Ok(p) => p,
            Err(e) => return Delivery::Retry(format!("ca_file {}: {e}", ca.display()), None),
        };
        match Certificate::from_pem(&pem) {
            Ok(c) => params = params.add_root_certificate(c),
            Err(e) => return Delivery::Permanent(format!("ca_file {}: {e}", ca.display())),
        }
    }
    let params = match params.build_rustls() {
        Ok(p) => p,
        Err(e) => return Delivery::Permanent(format!("TLS set-up: {e}")),
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(*port)
        .timeout(Some(Duration::from_secs(30)))
        .tls(match tls {
            crate::config::SmtpTls::Starttls => Tls::Required(params),
            crate::config::SmtpTls::Tls => Tls::Wrapper(params),
        });
    if let Some(user) = username {
        let pass = match password.as_ref().map(|p| p.read()).transpose() {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return Delivery::Retry(e, None),
        };
        // PLAIN inside TLS: the one mechanism every server has.
        b = b
            .credentials(Credentials::new(user.clone(), pass))
            .authentication(vec![Mechanism::Plain]);
    }
    match b.build().send(message).await {
        Ok(_) => Delivery::Sent,
        Err(e) if e.is_permanent() => {
            Delivery::Permanent(format!("the SMTP server refused it: {e}"))
        }
        Err(e) if e.is_tls() => Delivery::Retry(
            format!(
                "TLS with the SMTP server failed (STARTTLS required, certificate checked): {e}"
            ),
            None,
        ),
        Err(e) => Delivery::Retry(format!("SMTP: {e}"), None),
    }
}

/// Send one notification once.
pub async fn deliver(client: &reqwest::Client, channel: &Channel, n: &Notification) -> Delivery {
    let (url, body) = match request(channel, n) {
        Ok(Some(x)) => x,
        Ok(None) => return send_email(channel, n).await,
        Err(e) => return Delivery::Retry(e, None),
    };
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    // Errors name the channel, never its URL (a Slack URL is a secret).
    match r {
        Err(e) if e.is_builder() => Delivery::Permanent("the channel's URL is not valid".into()),
        Err(e) => Delivery::Retry(
            format!(
                "cannot reach the receiver ({})",
                if e.is_timeout() {
                    "timeout"
                } else {
                    "connection failed"
                }
            ),
            None,
        ),
        Ok(resp) => {
            let code = resp.status().as_u16();
            let after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            match code {
                200..=299 => Delivery::Sent,
                408 | 429 => Delivery::Retry(format!("the receiver answered {code}"), after),
                400..=499 => Delivery::Permanent(format!("the receiver refused it ({code})")),
                _ => Delivery::Retry(format!("the receiver answered {code}"), after),
            }
        }
    }
}

/// Wait before the `n`-th retry (from 1): 5 s doubling, at most 10 min.
pub fn retry_wait(n: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1u64 << n.saturating_sub(1).min(7)))
        .min(Duration::from_secs(600))
}

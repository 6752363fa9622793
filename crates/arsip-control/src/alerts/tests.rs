//! The alert book: an alert opens once, is owed once per routed channel, and its resolve is
//! owed only where its opening arrived; a permanent failure is not retried.

use std::time::Duration;

use super::*;
use crate::config::Channel;
use crate::testutil::{config, t};

const SITE: &str = r#"
[alerts]
routes = { critical = ["hook", "slack"], warning = ["hook"] }

[channel.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"

[channel.slack]
type = "slack"
url = "http://127.0.0.1:9/slack"
"#;

fn firing() -> Firing {
    Firing {
        rule: "ArsipBackupFailed".into(),
        severity: Severity::Critical,
        subject: "db".into(),
        repository: "main".into(),
        summary: "backup of db failed".into(),
        ours: true,
    }
}

fn entry(at: &str, event: Event) -> Entry {
    Entry { at: t(at), event }
}

fn notified(channel: &str, status: Status, result: &str) -> Event {
    Event::Notified {
        rule: "ArsipBackupFailed".into(),
        subject: "db".into(),
        channel: channel.into(),
        status,
        result: result.into(),
    }
}

#[test]
fn an_alert_is_owed_once_per_channel_and_its_resolve_where_it_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), SITE);
    let mut b = Book::default();
    let f = firing();
    let opened = b.diff(std::slice::from_ref(&f));
    assert_eq!(opened.len(), 1);
    for e in opened {
        b.apply(&entry("2026-12-01T02:00:00Z", e));
    }
    assert!(
        b.diff(std::slice::from_ref(&f)).is_empty(),
        "a repeat opens nothing"
    );
    let owed = b.owed(&c, t("2026-12-01T02:00:01Z"));
    let channels: Vec<&str> = owed.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(channels, ["hook", "slack"]);
    b.apply(&entry(
        "2026-12-01T02:00:02Z",
        notified("hook", Status::Firing, "failed"),
    ));
    b.apply(&entry(
        "2026-12-01T02:00:03Z",
        notified("hook", Status::Firing, "sent"),
    ));
    b.apply(&entry(
        "2026-12-01T02:00:03Z",
        notified("slack", Status::Firing, "dropped"),
    ));
    assert!(b.owed(&c, t("2026-12-01T02:00:04Z")).is_empty());
    assert_eq!(
        b.notifications[&("hook".to_string(), "failed".to_string())],
        1
    );
    // It clears: the resolve is owed to both (the slack opening was given up on, and
    // counts as delivered so that it is not retried; its resolve is tried once too).
    for e in b.diff(&[]) {
        b.apply(&entry("2026-12-01T03:00:00Z", e));
    }
    let owed = b.owed(&c, t("2026-12-01T03:00:01Z"));
    assert!(owed.iter().all(|o| o.1 == Status::Resolved), "{owed:?}");
    b.apply(&entry(
        "2026-12-01T03:00:02Z",
        notified("hook", Status::Resolved, "sent"),
    ));
    b.apply(&entry(
        "2026-12-01T03:00:02Z",
        notified("slack", Status::Resolved, "sent"),
    ));
    assert!(b.owed(&c, t("2026-12-01T03:00:03Z")).is_empty());
    assert!(b.resolving.is_empty() && b.open.is_empty());
}

#[test]
fn nothing_is_owed_after_a_day() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), SITE);
    let mut b = Book::default();
    for e in b.diff(&[firing()]) {
        b.apply(&entry("2026-12-01T02:00:00Z", e));
    }
    assert_eq!(b.owed(&c, t("2026-12-02T01:59:00Z")).len(), 2);
    assert!(b.owed(&c, t("2026-12-02T02:00:01Z")).is_empty());
}

#[test]
fn pagerduty_events_carry_the_dedup_key_and_resolve_with_it() {
    let ch = Channel::Pagerduty {
        routing_key: crate::config::Secret::Inline("rk".into()),
        url: "http://127.0.0.1:9/pd".into(),
    };
    let mut n = Notification {
        channel: "pd".into(),
        status: Status::Firing,
        firing: Firing {
            summary: "é".repeat(2000),
            ..firing()
        },
        opened: t("2026-12-01T02:00:00Z"),
        at: t("2026-12-01T02:00:00Z"),
        daemon: "d1".into(),
        host: "backup-1".into(),
    };
    let (_, body) = request(&ch, &n).unwrap().unwrap();
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], "arsip:main:ArsipBackupFailed:db");
    assert!(body["payload"]["summary"].as_str().unwrap().len() <= 1024);
    n.status = Status::Resolved;
    let (_, body) = request(&ch, &n).unwrap().unwrap();
    assert_eq!(body["event_action"], "resolve");
    assert_eq!(body["dedup_key"], "arsip:main:ArsipBackupFailed:db");
}

#[test]
fn retries_back_off_to_ten_minutes() {
    assert_eq!(retry_wait(1), Duration::from_secs(5));
    assert_eq!(retry_wait(2), Duration::from_secs(10));
    assert_eq!(retry_wait(30), Duration::from_secs(600));
}

fn email(port: u16, ca: &std::path::Path, password: &str) -> Channel {
    Channel::Email {
        host: "localhost".into(),
        port,
        tls: crate::config::SmtpTls::Starttls,
        ca_file: Some(ca.to_path_buf()),
        username: Some("arsip".into()),
        password: Some(crate::config::Secret::Inline(password.into())),
        from: "arsip@autolumiku.test".into(),
        to: vec!["devops@autolumiku.test".into()],
    }
}

fn notification(status: Status) -> Notification {
    Notification {
        channel: "email".into(),
        status,
        firing: firing(),
        opened: t("2026-12-01T02:00:00Z"),
        at: t("2026-12-01T03:00:00Z"),
        daemon: "d1".into(),
        host: "backup-1".into(),
    }
}

/// Against a real SMTP server (aiosmtpd): STARTTLS, then AUTH, then the message; a
/// resolve follows; a wrong password is a permanent refusal; a server that offers no
/// STARTTLS gets neither the password nor the message.
#[tokio::test]
async fn email_goes_over_starttls_with_auth_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = arsip_testkit::tls_certificates(dir.path());
    let smtp = arsip_testkit::SmtpServer::start(
        &dir.path().join("spool"),
        &cert,
        &key,
        "arsip",
        "smtp-secret-value",
        true,
    );
    let client = reqwest::Client::new();
    let ch = email(smtp.port, &ca, "smtp-secret-value");
    assert_eq!(
        deliver(&client, &ch, &notification(Status::Firing)).await,
        Delivery::Sent
    );
    assert_eq!(
        deliver(&client, &ch, &notification(Status::Resolved)).await,
        Delivery::Sent
    );
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let all = msgs.join("\n");
    assert!(
        all.contains("Subject: [arsip CRITICAL] ArsipBackupFailed: db"),
        "{all}"
    );
    assert!(
        all.contains("Subject: [arsip RESOLVED] ArsipBackupFailed: db"),
        "{all}"
    );
    assert!(all.contains("arsip:main:ArsipBackupFailed:db"), "{all}");
    assert!(!all.contains("smtp-secret-value"));
    let auth = smtp.auth_log();
    assert!(
        auth.lines().count() >= 2 && auth.lines().all(|l| l.ends_with("ok tls=true")),
        "{auth}"
    );

    let wrong = email(smtp.port, &ca, "not-the-password");
    match deliver(&client, &wrong, &notification(Status::Firing)).await {
        Delivery::Permanent(m) => assert!(!m.contains("not-the-password"), "{m}"),
        other => panic!("{other:?}"),
    }

    let plain_dir = dir.path().join("plain");
    let plain = arsip_testkit::SmtpServer::start(
        &plain_dir,
        &cert,
        &key,
        "arsip",
        "smtp-secret-value",
        false,
    );
    let ch = email(plain.port, &ca, "smtp-secret-value");
    match deliver(&client, &ch, &notification(Status::Firing)).await {
        Delivery::Retry(m, _) => assert!(m.contains("TLS") || m.contains("STARTTLS"), "{m}"),
        other => panic!("a server without STARTTLS: {other:?}"),
    }
    assert!(plain.messages().is_empty(), "nothing sent in clear");
    assert!(plain.auth_log().is_empty(), "no password sent in clear");
}

#[test]
fn a_key_older_than_key_rotation_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), SITE);
    c.repositories.get_mut("main").unwrap().key_rotation =
        Some(SignedDuration::from_hours(24 * 365));
    let mut s = State::new("d1".into(), t("2026-01-01T00:00:00Z"), &[]);
    s.oldest_key
        .insert("main".into(), t("2025-11-01T00:00:00Z"));
    let due = |s: &State| {
        evaluate(&c, s, t("2026-12-01T00:00:00Z"))
            .into_iter()
            .any(|f| f.rule == "ArsipKeyRotationDue" && f.subject == "main")
    };
    assert!(due(&s));
    s.oldest_key
        .insert("main".into(), t("2026-06-01T00:00:00Z"));
    assert!(!due(&s));
}

#[test]
fn with_repeat_after_an_open_alert_is_owed_again_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), &format!("{SITE}\n"));
    let mut c2 = c.clone();
    c2.alerts.repeat_after = Some(SignedDuration::from_hours(4));
    let mut b = Book::default();
    for e in b.diff(&[firing()]) {
        b.apply(&entry("2026-12-01T02:00:00Z", e));
    }
    b.apply(&entry(
        "2026-12-01T02:00:01Z",
        notified("hook", Status::Firing, "sent"),
    ));
    b.apply(&entry(
        "2026-12-01T02:00:01Z",
        notified("slack", Status::Firing, "dropped"),
    ));
    for (config, at, owed) in [
        (&c2, "2026-12-01T05:00:00Z", 0),
        (&c2, "2026-12-01T06:00:01Z", 1),
        (&c2, "2026-12-03T06:00:01Z", 1),
        (&c, "2026-12-01T06:00:01Z", 0),
    ] {
        let o = b.owed(config, t(at));
        assert_eq!(o.len(), owed, "{at}: {o:?}");
        // Only to the channel that got it (a dropped one is not tried again).
        assert!(o
            .iter()
            .all(|(ch, s, _, _)| ch == "hook" && *s == Status::Firing));
    }
    b.apply(&entry(
        "2026-12-01T06:00:02Z",
        notified("hook", Status::Firing, "sent"),
    ));
    assert!(b.owed(&c2, t("2026-12-01T10:00:01Z")).is_empty());
    assert_eq!(b.owed(&c2, t("2026-12-01T10:00:02Z")).len(), 1);
}

#[test]
fn a_failing_channel_alerts_through_the_others_and_clears_when_one_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        &SITE.replace(r#"warning = ["hook"]"#, r#"warning = ["hook", "slack"]"#),
    );
    let mut state = crate::state::State::new("a".into(), t("2026-12-01T00:00:00Z"), &[]);
    let failing = |s: &crate::state::State, at: &str| -> Vec<String> {
        evaluate(&c, s, t(at))
            .into_iter()
            .filter(|f| f.rule == "ArsipAlertChannelFailing")
            .map(|f| f.subject)
            .collect()
    };
    let book = |s: &mut crate::state::State, at: &str, ch: &str, result: &str| {
        s.alerts
            .apply(&entry(at, notified(ch, Status::Firing, result)))
    };
    book(&mut state, "2026-12-01T02:00:00Z", "slack", "sent");
    book(&mut state, "2026-12-01T02:00:00Z", "hook", "failed");
    // Retries ride out a blip: failing once a delivery has failed for 10 minutes.
    assert!(failing(&state, "2026-12-01T02:09:59Z").is_empty());
    assert_eq!(failing(&state, "2026-12-01T02:10:00Z"), ["hook"]);
    // One that worked 10 minutes ago is not failing before 30 minutes without a delivery.
    book(&mut state, "2026-12-01T02:10:00Z", "slack", "failed");
    assert_eq!(failing(&state, "2026-12-01T02:25:01Z"), ["hook"]);
    assert_eq!(failing(&state, "2026-12-01T02:31:00Z"), ["hook", "slack"]);
    // Its alert goes to the other channels only.
    let f = evaluate(&c, &state, t("2026-12-01T02:31:00Z"))
        .into_iter()
        .find(|f| f.rule == "ArsipAlertChannelFailing" && f.subject == "hook")
        .unwrap();
    assert!(
        !f.summary.contains("http"),
        "no URL in the message: {}",
        f.summary
    );
    let mut b = Book::default();
    for e in b.diff(std::slice::from_ref(&f)) {
        b.apply(&entry("2026-12-01T02:31:00Z", e));
    }
    let to: Vec<String> = b
        .owed(&c, t("2026-12-01T02:31:01Z"))
        .into_iter()
        .map(|o| o.0)
        .collect();
    assert_eq!(to, ["slack"]);
    // One delivery through it clears it.
    book(&mut state, "2026-12-01T02:40:00Z", "hook", "sent");
    assert_eq!(failing(&state, "2026-12-01T02:40:01Z"), ["slack"]);
}

#[test]
fn a_refused_reload_is_an_alert_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), SITE);
    let mut state = crate::state::State::new("a".into(), t("2026-12-01T00:00:00Z"), &[]);
    let reload = |s: &crate::state::State| {
        evaluate(&c, s, t("2026-12-01T00:01:00Z"))
            .into_iter()
            .filter(|f| f.rule == "ArsipConfigReloadFailed")
            .count()
    };
    assert_eq!(reload(&state), 0);
    state.config_reload_failed = true;
    assert_eq!(reload(&state), 1);
}

//! The API over real HTTP on 127.0.0.1 (and TLS with a certificate the openssl CLI makes):
//! authentication and roles, the JSON views, `/metrics`, and the trigger's answers.

use std::os::unix::fs::PermissionsExt;

use arsip_ops::repo::clock::FixedClock;

use super::*;
use crate::journal::{Entry, Event, Outcome};
use crate::state::State;
use crate::testutil::{config, t};

const READ: &str = "read-token-0123456789abcdefghijklmnopqrstuvwxyz";
const OPERATOR: &str = "operator-token-0123456789abcdefghijklmnopqrstuvwxyz";

fn site(dir: &std::path::Path, tls: &str) -> Config {
    for (name, value) in [
        ("read", READ),
        ("operator", OPERATOR),
        ("short", "too-short"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    config(
        dir,
        &format!(
            r#"
[api]
listen = "127.0.0.1:0"
{tls}
tokens = [{{ name = "prometheus", role = "read", file = "{d}/read" }},
          {{ name = "oncall", role = "operator", file = "{d}/operator" }}]

[job.db-daily]
type = "backup"
source = "db"
schedule = "0 2 * * *"
time_zone = "Asia/Jakarta"
"#,
            d = dir.display()
        ),
    )
}

/// The API on a free port, with a stand-in for the daemon's loop that accepts a trigger of
/// `db-daily` once and answers busy after.
async fn start(config: Config, tls: Option<tokio_rustls::TlsAcceptor>) -> (String, Shared) {
    let entries = vec![Entry {
        at: t("2026-12-01T00:00:00Z"),
        event: Event::ConfigLoaded {
            path: "/x".into(),
            sources: vec!["db".into(), "files".into()],
        },
    }];
    let state = State::new("d1".into(), t("2026-12-01T00:00:00Z"), &entries).shared();
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut taken = false;
        while let Some(Command::Trigger { job, reply, .. }) = rx.recv().await {
            let r = match (job.as_str(), taken) {
                ("db-daily", false) => Ok(t("2026-12-01T05:00:00Z")),
                ("db-daily", true) => Err(TriggerRefused::Busy(t("2026-12-01T05:00:00Z"))),
                _ => Err(TriggerRefused::NoSuchJob),
            };
            taken = true;
            let _ = reply.send(r);
        }
    });
    let tokens = load_tokens(&config).unwrap();
    let clock = Arc::new(FixedClock::new(t("2026-12-01T05:00:00Z")));
    let api = Api::new(
        Arc::new(config),
        state.clone(),
        tx,
        tokens,
        BTreeMap::new(),
        clock,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn(serve(
        listener,
        tls.map(|t| Arc::new(std::sync::RwLock::new(t))),
        api.router(),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    (format!("{scheme}://localhost:{}", addr.port()), state)
}

async fn get(c: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String) {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn every_request_needs_a_token_and_mutations_an_operator() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = start(site(dir.path(), ""), None).await;
    let c = reqwest::Client::new();
    for path in [
        "/health",
        "/metrics",
        "/api/v1/sources",
        "/api/v1/jobs",
        "/api/v1/status",
    ] {
        let (status, body) = get(&c, &format!("{base}{path}"), None).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _) = get(
            &c,
            &format!("{base}{path}"),
            Some("not-a-token-of-this-daemon-at-all"),
        )
        .await;
        assert_eq!(status, 401, "{path}");
    }
    let (status, body) = get(&c, &format!("{base}/health"), Some(READ)).await;
    assert_eq!(status, 200, "{body}");
    let post = |token: &'static str, job: &'static str| {
        let c = c.clone();
        let url = format!("{base}/api/v1/jobs/{job}/trigger");
        async move {
            let r = c.post(url).bearer_auth(token).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = post(READ, "db-daily").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let (status, body) = post(OPERATOR, "db-daily").await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("2026-12-01T05:00:00Z"), "{body}");
    let (status, body) = post(OPERATOR, "db-daily").await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = post(OPERATOR, "nope").await;
    assert_eq!(status, 404);
    // Every refusal counts, and /metrics says so.
    let (_, text) = get(&c, &format!("{base}/metrics"), Some(READ)).await;
    assert!(
        text.contains("arsip_api_auth_failures_total 11\n"),
        "{text}"
    );

    // The dashboard: a browser without a session is sent to /login; a token buys a
    // read-only session cookie; the cookie never mutates.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let r = browser.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = browser
        .post(format!("{base}/login"))
        .form(&[("token", "wrong-token-wrong-token-wrong-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = browser
        .post(format!("{base}/login"))
        .form(&[("token", OPERATOR)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(OPERATOR));
    let session = cookie.split(';').next().unwrap().to_string();
    let r = browser
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(r.text().await.unwrap().contains("data-test=\"sources\""));
    let r = browser
        .post(format!("{base}/api/v1/jobs/db-daily/trigger"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "a session cookie cannot trigger");
    let r = browser
        .get(format!("{base}/"))
        .header("cookie", "arsip_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
}

#[tokio::test]
async fn sources_and_jobs_show_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (base, state) = start(site(dir.path(), ""), None).await;
    {
        let mut s = state.write().unwrap();
        let at = t("2026-12-01T00:00:00Z");
        for event in [
            Event::AttemptStarted {
                job: "db-daily".into(),
                scheduled: at,
                attempt: 1,
            },
            Event::AttemptFinished {
                job: "db-daily".into(),
                scheduled: at,
                attempt: 1,
                outcome: Outcome::Failed,
                transient: false,
                message: Some("pg_dump: connection refused".into()),
                produced: None,
                facts: Default::default(),
            },
            Event::RunFinished {
                job: "db-daily".into(),
                scheduled: at,
                outcome: Outcome::Failed,
                peer: None,
            },
        ] {
            s.apply(&Entry { at, event });
        }
    }
    let c = reqwest::Client::new();
    let (status, body) = get(&c, &format!("{base}/api/v1/sources"), Some(READ)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let db = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap();
    assert_eq!(db["status"], "failed", "{db}");
    assert_eq!(db["rpo_ok"], false);
    let files = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "files")
        .unwrap();
    assert_eq!(files["status"], "never", "{files}");
    let (_, body) = get(
        &c,
        &format!("{base}/api/v1/jobs/db-daily/runs?limit=5"),
        Some(READ),
    )
    .await;
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[0]["message"], "pg_dump: connection refused");
    let (_, body) = get(&c, &format!("{base}/api/v1/jobs/db-daily"), Some(READ)).await;
    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(job["time_zone"], "Asia/Jakarta");
    // Its next occurrence after the one it handled: 02:00 in Jakarta the next day.
    assert_eq!(job["next_run"], "2026-12-01T19:00:00Z");
    let (status, body) = get(&c, &format!("{base}/metrics"), Some(READ)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains(r#"arsip_source_backup_last_run_ok{repo="main",source="db"} 0"#),
        "{body}"
    );
}

#[test]
fn a_short_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = site(dir.path(), "");
    c.api.tokens[0].file = crate::config::Secret::File(dir.path().join("short"));
    let e = load_tokens(&c).err().unwrap();
    assert!(
        e.contains("shorter than 32") && !e.contains("too-short"),
        "{e}"
    );
}

#[tokio::test]
async fn tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = arsip_testkit::tls_certificates(dir.path());
    let c = site(
        dir.path(),
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    let (cert_path, key_secret) = c.api.tls.clone().unwrap();
    let acceptor = tls_acceptor(&cert_path, key_secret.read().unwrap().as_bytes()).unwrap();
    let (base, _) = start(c, Some(acceptor)).await;
    let pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let (status, body) = get(&client, &format!("{base}/health"), Some(READ)).await;
    assert_eq!(status, 200, "{body}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = base.replace("https://", "http://");
    assert!(reqwest::Client::new()
        .get(format!("{plain}/health"))
        .send()
        .await
        .is_err());
}

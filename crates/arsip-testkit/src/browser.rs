//! Headless Chromium (Debian's package, which `scripts/test` installs) driven over the
//! DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in NUL, the
//! browser reading fd 3 and writing fd 4): no WebSocket, no port, no crate.
//!
//! [`Browser::check`] loads a page and fails on what a person would see as broken: a load
//! that does not finish, a response of 400 or more, a failed load, a script exception, an
//! error on the console or in the log (a Content-Security-Policy violation is one), or a
//! `[data-test=…]` element that is missing. It can save a screenshot.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub struct Browser {
    child: Child,
    to: File,
    rx: Receiver<Value>,
    next: u64,
    events: VecDeque<Value>,
    _profile: PathBuf,
}

/// What loading a page showed.
#[derive(Debug, Default)]
pub struct PageReport {
    pub problems: Vec<String>,
}

pub fn chromium() -> PathBuf {
    let bin = std::env::var_os("ARSIP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(bin.exists(), "Chromium not found at {} — run ./scripts/test (it installs Debian's chromium), or set ARSIP_CHROMIUM", bin.display());
    bin
}

impl Browser {
    pub fn launch(profile: &Path) -> Browser {
        // Close-on-exec: only the copies made at 3 and 4 reach the browser.
        let pipe = || rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let (cmd_read, cmd_write) = pipe();
        let (resp_read, resp_write) = pipe();
        let (r3, w4) = (cmd_read.as_raw_fd(), resp_write.as_raw_fd());
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            File::create(profile.with_extension("log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only dup2 runs (async-signal-safe), on descriptors
        // this process owns; the OwnedFd wrappers are leaked so nothing is closed twice.
        unsafe {
            cmd.pre_exec(move || {
                use std::os::fd::BorrowedFd;
                // Copies above 10 first, so that a pipe end already at 3 or 4 is not
                // clobbered; dup2 then makes 3 and 4 without close-on-exec.
                let a = rustix::io::fcntl_dupfd_cloexec(BorrowedFd::borrow_raw(r3), 10)?;
                let b = rustix::io::fcntl_dupfd_cloexec(BorrowedFd::borrow_raw(w4), 10)?;
                let mut three = OwnedFd::from_raw_fd(3);
                let mut four = OwnedFd::from_raw_fd(4);
                let r =
                    rustix::io::dup2(&a, &mut three).and_then(|_| rustix::io::dup2(&b, &mut four));
                let _ = (three.into_raw_fd(), four.into_raw_fd());
                r.map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("start chromium");
        drop(cmd_read);
        drop(resp_write);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(File::from(resp_read));
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).map(|n| n > 0).unwrap_or(false) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        Browser {
            child,
            to: File::from(cmd_write),
            rx,
            next: 0,
            events: VecDeque::new(),
            _profile: profile.into(),
        }
    }

    /// Send `method` (to `session`, or the browser) and wait for its result.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.events.push_back(v);
        }
    }

    fn wait_event(&mut self, session: &str, method: &str, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            if self
                .events
                .iter()
                .any(|e| e["method"] == method && e["sessionId"] == session)
            {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.rx.recv_timeout(left) {
                Ok(v) => self.events.push_back(v),
                Err(_) => return false,
            }
        }
    }

    /// Load `url` with `headers`, check it (see the module docs) and that every
    /// `[data-test=NAME]` of `expect` is there; save a PNG at `screenshot` when given.
    pub fn check(
        &mut self,
        url: &str,
        headers: Value,
        expect: &[&str],
        screenshot: Option<&Path>,
    ) -> PageReport {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            ["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        let s = Some(session.as_str());
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
            "Page.enable",
        ] {
            self.call(s, domain, json!({}));
        }
        self.call(
            s,
            "Network.setExtraHTTPHeaders",
            json!({ "headers": headers }),
        );
        self.events.clear();
        self.call(s, "Page.navigate", json!({ "url": url }));
        let mut report = PageReport::default();
        if !self.wait_event(&session, "Page.loadEventFired", Duration::from_secs(30)) {
            report
                .problems
                .push(format!("{url}: the page did not finish loading"));
        }
        // Late console messages of the load.
        std::thread::sleep(Duration::from_millis(300));
        while let Ok(v) = self.rx.try_recv() {
            self.events.push_back(v);
        }
        for e in self
            .events
            .iter()
            .filter(|e| e["sessionId"] == session.as_str())
        {
            let p = &e["params"];
            match e["method"].as_str().unwrap_or("") {
                "Runtime.exceptionThrown" => report
                    .problems
                    .push(format!("exception: {}", p["exceptionDetails"])),
                "Runtime.consoleAPICalled" if p["type"] == "error" => report
                    .problems
                    .push(format!("console error: {}", p["args"])),
                "Log.entryAdded" if p["entry"]["level"] == "error" => report
                    .problems
                    .push(format!("log error: {}", p["entry"]["text"])),
                "Network.responseReceived"
                    if p["response"]["status"].as_u64().unwrap_or(0) >= 400 =>
                {
                    report.problems.push(format!(
                        "{} answered {}",
                        p["response"]["url"], p["response"]["status"]
                    ))
                }
                "Network.loadingFailed" => report
                    .problems
                    .push(format!("load failed: {}", p["errorText"])),
                _ => {}
            }
        }
        for name in expect {
            let expr = format!("document.querySelector('[data-test=\"{name}\"]') !== null");
            let r = self.call(
                s,
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true }),
            );
            if r["result"]["value"] != true {
                report
                    .problems
                    .push(format!("{url}: no [data-test={name}]"));
            }
        }
        if let Some(path) = screenshot {
            let r = self.call(
                s,
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            );
            let png = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap())
                .unwrap();
            std::fs::write(path, png).unwrap();
        }
        self.call(None, "Target.closeTarget", json!({ "targetId": target }));
        report
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A full Chromium outlives a closed pipe: ask, then kill.
        self.next += 1;
        let _ = self.to.write_all(
            format!("{{\"id\":{},\"method\":\"Browser.close\"}}\0", self.next).as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

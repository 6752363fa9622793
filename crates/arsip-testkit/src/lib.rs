//! Shared test harness: a real S3-protocol server (moto in server mode) started once per
//! test binary on a random loopback port, a fresh bucket per test, and temp directories.
//!
//! The server binary is `$ARSIP_MOTO_SERVER`, else `$ARSIP_TOOLS_DIR/moto-venv/bin/moto_server`
//! (default tools dir `~/.cache/arsip-tools`), which `scripts/test` installs. A test that
//! cannot find or start it fails; it never skips.

pub mod browser;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running S3 server. It is started from a thread that lives as long as the test process
/// with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test binary (statics are never
/// dropped, so a guard alone would leak it).
pub struct S3Server {
    pub endpoint: String,
    port: u16,
}

/// Spawn `cmd` so that it is killed when the test process exits.
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: the closure only makes the prctl system call, which is async-signal-safe
        // (no allocation, no locks) as code between fork and exec must be.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let r: std::io::Result<Child> = cmd.spawn();
        let (res, child) = match r {
            Ok(c) => (Ok(c.id()), Some(c)),
            Err(e) => (Err(e), None),
        };
        let _ = tx.send(res);
        // This thread must outlive the child: PDEATHSIG fires when the spawning thread exits.
        let _keep = child;
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("spawner thread")
}

/// Where `scripts/test` installs the test tools: `$ARSIP_TOOLS_DIR`, else
/// `~/.cache/arsip-tools`.
fn tools_dir() -> PathBuf {
    std::env::var_os("ARSIP_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/arsip-tools")
        })
}

fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ARSIP_MOTO_SERVER") {
        return p.into();
    }
    tools_dir().join("moto-venv/bin/moto_server")
}

/// The Python of the tools venv `scripts/test` makes (moto, aiosmtpd and PyYAML are in it).
pub fn venv_python() -> PathBuf {
    let python = tools_dir().join("moto-venv/bin/python");
    assert!(
        python.exists(),
        "{} not found — run ./scripts/test (it makes the tools venv)",
        python.display()
    );
    python
}

/// Prometheus's `promtool` (`$ARSIP_PROMTOOL`, else where `scripts/test` unpacks Debian's
/// package). Missing, the test fails: it never skips.
pub fn promtool() -> PathBuf {
    let bin = std::env::var_os("ARSIP_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("prometheus/usr/bin/promtool"));
    assert!(
        bin.exists(),
        "promtool not found at {} — run ./scripts/test (it installs it), or set ARSIP_PROMTOOL",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The process-wide S3 server, started on first use.
pub fn s3() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let bin = moto_binary();
        assert!(
            bin.exists(),
            "S3 test server not found at {} — run ./scripts/test (it installs moto), or set ARSIP_MOTO_SERVER",
            bin.display()
        );
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        spawn_tied(cmd).unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "S3 test server did not start listening on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server { endpoint: format!("http://127.0.0.1:{port}"), port }
    })
}

impl S3Server {
    /// Create a fresh bucket and return its name. moto does not check signatures, so a
    /// plain unsigned PUT creates it.
    pub fn bucket(&self) -> String {
        let name = format!("arsip-test-{:016x}", rand::random::<u64>());
        let status = self.raw("PUT", &format!("/{name}"), &[]);
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {status}"
        );
        name
    }

    /// Send one raw HTTP request; returns the status line.
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> String {
        let mut s =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect to S3 test server");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.lines().next().unwrap_or("").to_string()
    }

    /// Environment for an arsip process talking to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ARSIP_S3_ENDPOINT", self.endpoint.clone()),
            ("ARSIP_S3_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Set this server's environment in the current process (for in-process tests).
    pub fn set_env(&self) {
        for (k, v) in self.env() {
            // Tests in one binary all point at the same server, so concurrent writes agree.
            unsafe { std::env::set_var(k, v) };
        }
    }
}

/// Deterministic pseudo-random bytes with a given share of compressible text.
pub fn sample_data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    let words = [
        "tenant", "vehicle", "photo", "lead", "jakarta", "avanza", "xenia", "brio", "price", "km",
    ];
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(3) {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(words[(x % 10) as usize].as_bytes());
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1, made with
/// the openssl CLI in `dir`: (CA certificate PEM path, server chain PEM path, server key
/// PEM path, mode 0600).
pub fn tls_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let p = |n: &str| dir.join(n);
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=arsip test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ];
    ca.extend(ec);
    run(&ca);
    let mut req = vec![
        "req",
        "-new",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    req.extend(ec);
    run(&req);
    std::fs::write(p("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    std::fs::set_permissions(p("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// A real SMTP server (aiosmtpd, `tools/smtp_server.py`, run by the venv's Python that
/// `scripts/test` installs it into) on a free loopback port: STARTTLS required with
/// `cert`/`key` (or not offered at all when `!starttls`), AUTH only after TLS as
/// `user`/`password`; each message is stored in `spool` as an `.eml` file. Stopped on drop.
pub struct SmtpServer {
    pub port: u16,
    pub spool: PathBuf,
    child: Child,
}

impl SmtpServer {
    pub fn start(
        spool: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        user: &str,
        password: &str,
        starttls: bool,
    ) -> SmtpServer {
        use std::io::BufRead;
        std::fs::create_dir_all(spool).unwrap();
        let python = venv_python();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/smtp_server.py");
        let mut cmd = Command::new(&python);
        cmd.arg(script)
            .arg("--spool")
            .arg(spool)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
        cmd.args(["--user", user, "--password", password]);
        if !starttls {
            cmd.arg("--no-starttls");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the SMTP server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {line:?}"));
        SmtpServer {
            port,
            spool: spool.to_path_buf(),
            child,
        }
    }

    /// The messages received, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.spool)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// One line per AUTH attempt: mechanism, ok/refused, whether it came inside TLS.
    pub fn auth_log(&self) -> String {
        std::fs::read_to_string(self.spool.join("auth.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

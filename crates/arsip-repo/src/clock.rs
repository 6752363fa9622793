//! The clock. Everything that stamps or compares times asks a [`Clock`]; tests substitute
//! [`FixedClock`]. This is the only module allowed to read the system time (clippy's
//! `disallowed-methods` enforces it).

use std::sync::Mutex;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> jiff::Timestamp;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FixedClock(Mutex<jiff::Timestamp>);

impl FixedClock {
    pub fn new(t: jiff::Timestamp) -> Self {
        FixedClock(Mutex::new(t))
    }
    pub fn advance(&self, by: jiff::SignedDuration) {
        let mut t = self.0.lock().unwrap();
        *t = t.checked_add(by).expect("time in range");
    }
}

impl Clock for FixedClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap()
    }
}

/// A clock that reads the time from a file (RFC 3339) whenever asked, so that a test can
/// move a running daemon from one day to the next. Only built with `test-hooks`.
#[cfg(feature = "test-hooks")]
#[derive(Debug)]
pub struct FileClock(std::path::PathBuf, Mutex<Option<jiff::Timestamp>>);

#[cfg(feature = "test-hooks")]
impl Clock for FileClock {
    /// The file's time; while the file is being rewritten (empty or partial), the last
    /// time read.
    fn now(&self) -> jiff::Timestamp {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let mut last = self.1.lock().unwrap();
        match text.trim().parse() {
            Ok(t) => *last = Some(t),
            Err(_) if last.is_some() => {}
            Err(_) => panic!(
                "ARSIP_TEST_CLOCK_FILE {} holds no RFC 3339 time: {text:?}",
                self.0.display()
            ),
        }
        last.expect("a time")
    }
}

/// The process clock. In builds with the `test-hooks` feature (test builds only; see
/// `scripts/test`), `ARSIP_TEST_NOW` (RFC 3339) pins it, and `ARSIP_TEST_CLOCK_FILE` (a file
/// holding an RFC 3339 time, read at every call) lets a test move it while a daemon runs;
/// every other build ignores both variables, so no one can date a snapshot by setting them.
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    #[cfg(feature = "test-hooks")]
    if let Some(path) = std::env::var_os("ARSIP_TEST_CLOCK_FILE") {
        return std::sync::Arc::new(FileClock(path.into(), Mutex::new(None)));
    }
    #[cfg(feature = "test-hooks")]
    if let Some(t) = std::env::var("ARSIP_TEST_NOW")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return std::sync::Arc::new(FixedClock::new(t));
    }
    std::sync::Arc::new(SystemClock)
}

/// Whether the process clock is a test's ([`from_env`] honoured a hook): a daemon then
/// looks at it often, since it may jump.
pub fn is_test_clock() -> bool {
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("ARSIP_TEST_CLOCK_FILE").is_some()
        || std::env::var_os("ARSIP_TEST_NOW").is_some()
    {
        return true;
    }
    false
}

/// Time since boot, counting time the machine was suspended or the process stopped
/// (`CLOCK_BOOTTIME`): what a lease holder measures its own renewals with, since a laptop
/// that slept did not renew either.
pub fn since_boot() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

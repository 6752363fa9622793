//! Fault injection for tests: a wrapper that fails chosen operations with a chosen error
//! kind, to prove that retries lose nothing and that errors surface with the right class.
//! Never used outside tests and the `ARSIP_TEST_FAULTS` hook of the CLI (which exists only
//! in builds with the `test-hooks` feature).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::{DynStore, ErrorKind, Object, ObjectMeta, Result, Revision, StorageError, Store};

/// Which operations fail.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Fail the first attempt of every `create` of each key once (transient).
    pub fail_each_create_once: bool,
    /// Fail the first attempt of every `get`/`get_range` of each key once (transient).
    pub fail_each_get_once: bool,
    /// Fail every `get`/`get_range` whose key starts with this prefix, always.
    pub fail_get_prefix: Option<(String, ErrorKind)>,
    /// Refuse creates whose key starts with this prefix, always (permanent).
    pub fail_create_prefix: Option<String>,
    /// Kill the process with SIGKILL at the n-th create (1-based) whose key starts with the
    /// prefix, before or after storing it: crash tests of the write path.
    pub crash: Option<Crash>,
    /// Report success for creates of existing objects, like servers that ignore
    /// `If-None-Match` (the object is left as it was).
    pub ignore_if_none_match: bool,
    /// Lose the answer of the first `update` / `delete_if` of each key: the write is done,
    /// then a transient error is reported (what a timeout after the server acted looks like).
    pub lose_each_conditional_answer_once: bool,
}

#[derive(Debug, Clone)]
pub struct Crash {
    pub prefix: String,
    pub nth: u64,
    pub after: bool,
}

impl FaultPlan {
    /// Parse the compact form used by the `ARSIP_FAULTS` test hook:
    /// comma-separated `create-once`, `get-once`, `get:PREFIX:transient|permanent`,
    /// `create:PREFIX`, `crash:PREFIX:N:before|after`, `ignore-if-none-match`,
    /// `lose-conditional-answer-once`.
    pub fn parse(s: &str) -> std::result::Result<FaultPlan, String> {
        let mut p = FaultPlan::default();
        for item in s.split(',').filter(|i| !i.is_empty()) {
            let parts: Vec<&str> = item.split(':').collect();
            match parts.as_slice() {
                ["create-once"] => p.fail_each_create_once = true,
                ["get-once"] => p.fail_each_get_once = true,
                ["ignore-if-none-match"] => p.ignore_if_none_match = true,
                ["lose-conditional-answer-once"] => p.lose_each_conditional_answer_once = true,
                ["get", prefix, kind] => {
                    let k = match *kind {
                        "transient" => ErrorKind::Transient,
                        "permanent" => ErrorKind::Permanent,
                        "denied" => ErrorKind::PermissionDenied,
                        other => return Err(format!("unknown fault kind {other}")),
                    };
                    p.fail_get_prefix = Some((prefix.to_string(), k));
                }
                ["create", prefix] => p.fail_create_prefix = Some(prefix.to_string()),
                ["crash", prefix, nth, when @ ("before" | "after")] => {
                    let nth = nth.parse().map_err(|_| format!("bad crash count {nth}"))?;
                    p.crash = Some(Crash {
                        prefix: prefix.to_string(),
                        nth,
                        after: *when == "after",
                    });
                }
                _ => return Err(format!("unknown fault {item}")),
            }
        }
        Ok(p)
    }
}

/// The `ARSIP_TEST_FAULTS` hook: the plan it names, in builds with the `test-hooks`
/// feature; `None` in every other build, whatever the environment says.
pub fn from_test_env() -> std::result::Result<Option<FaultPlan>, String> {
    #[cfg(feature = "test-hooks")]
    if let Ok(spec) = std::env::var("ARSIP_TEST_FAULTS") {
        return FaultPlan::parse(&spec).map(Some);
    }
    Ok(None)
}

#[derive(Debug)]
pub struct Faulty {
    inner: DynStore,
    plan: FaultPlan,
    seen: Mutex<HashMap<String, u32>>,
    injected: Mutex<u64>,
    crash_count: Mutex<u64>,
}

impl Faulty {
    pub fn new(inner: DynStore, plan: FaultPlan) -> Self {
        Faulty {
            inner,
            plan,
            seen: Mutex::default(),
            injected: Mutex::new(0),
            crash_count: Mutex::new(0),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        *self.injected.lock().unwrap()
    }

    fn first_time(&self, op: &str, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap();
        let n = seen.entry(format!("{op}:{key}")).or_insert(0);
        *n += 1;
        *n == 1
    }

    fn fault(&self, kind: ErrorKind, key: &str) -> StorageError {
        *self.injected.lock().unwrap() += 1;
        StorageError::new(kind, Some(key), "injected fault")
    }

    fn check_get(&self, key: &str) -> Result<()> {
        if let Some((prefix, kind)) = &self.plan.fail_get_prefix {
            if key.starts_with(prefix.as_str()) {
                return Err(self.fault(*kind, key));
            }
        }
        if self.plan.fail_each_get_once && self.first_time("get", key) {
            return Err(self.fault(ErrorKind::Transient, key));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Faulty {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        let crash_here = self
            .plan
            .crash
            .as_ref()
            .filter(|c| key.starts_with(c.prefix.as_str()))
            .is_some_and(|c| {
                let mut n = self.crash_count.lock().unwrap();
                *n += 1;
                *n == c.nth
            });
        if crash_here && !self.plan.crash.as_ref().unwrap().after {
            kill_self();
        }
        if let Some(prefix) = &self.plan.fail_create_prefix {
            if key.starts_with(prefix.as_str()) {
                return Err(self.fault(ErrorKind::Permanent, key));
            }
        }
        if self.plan.fail_each_create_once && self.first_time("create", key) {
            return Err(self.fault(ErrorKind::Transient, key));
        }
        let r = match self.inner.create(key, data).await {
            Err(e) if e.kind == ErrorKind::AlreadyExists && self.plan.ignore_if_none_match => {
                Ok(())
            }
            r => r,
        };
        if crash_here {
            kill_self();
        }
        r
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.check_get(key)?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.check_get(key)?;
        self.inner.get_range(key, range).await
    }
    async fn get_with_meta(&self, key: &str) -> Result<Object> {
        self.check_get(key)?;
        self.inner.get_with_meta(key).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn update(&self, key: &str, expected: &Revision, data: Bytes) -> Result<ObjectMeta> {
        let r = self.inner.update(key, expected, data).await;
        if r.is_ok()
            && self.plan.lose_each_conditional_answer_once
            && self.first_time("update", key)
        {
            return Err(self.fault(ErrorKind::Transient, key));
        }
        r
    }
    async fn delete_if(&self, key: &str, expected: &Revision) -> Result<()> {
        let r = self.inner.delete_if(key, expected).await;
        if r.is_ok()
            && self.plan.lose_each_conditional_answer_once
            && self.first_time("delete_if", key)
        {
            return Err(self.fault(ErrorKind::Transient, key));
        }
        r
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn sweep_staging(&self, older_than: jiff::Timestamp) -> Result<u64> {
        self.inner.sweep_staging(older_than).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Die exactly as `kill -9` would: no destructors, no flushes.
fn kill_self() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    unreachable!("SIGKILL cannot be caught")
}

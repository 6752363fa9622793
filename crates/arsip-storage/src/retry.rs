//! Retrying wrapper: transient failures are retried with capped exponential backoff and
//! jitter; every other error kind passes through on the first attempt.
//!
//! `create` is safe to retry: if an earlier attempt stored the object but its answer was
//! lost, the retry meets `AlreadyExists`; the wrapper then reads the object back and reports
//! success only if the stored bytes are exactly the bytes it was asked to write.
//!
//! The conditional writes likewise: a retried `update` that meets `PreconditionFailed` reads
//! the object back and reports success (with that revision) if it holds exactly the bytes
//! asked for; a retried `delete_if` that meets `NotFound` reports success (an earlier attempt
//! removed it). Only `Transient` errors are retried: never a local fsync failure, which is
//! `Permanent` (after it, reading the bytes back proves nothing about the disk).

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use rand::Rng;

use crate::{DynStore, ErrorKind, Object, ObjectMeta, Result, Revision, Store};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
pub struct Retry {
    inner: DynStore,
    policy: RetryPolicy,
}

impl Retry {
    pub fn new(inner: DynStore, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .policy
            .initial
            .saturating_mul(1 << attempt.min(16))
            .min(self.policy.max);
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        base.mul_f64(jitter)
    }
}

macro_rules! retrying {
    ($self:ident, $op:expr) => {{
        let mut attempt = 0;
        loop {
            match $op.await {
                Err(e) if e.is_retryable() && attempt + 1 < $self.policy.attempts => {
                    tracing::warn!(error = %e, attempt, "retrying storage operation");
                    tokio::time::sleep($self.delay(attempt)).await;
                    attempt += 1;
                }
                r => break (r, attempt),
            }
        }
    }};
}

#[async_trait]
impl Store for Retry {
    async fn create(&self, key: &str, data: Bytes) -> Result<()> {
        let (r, attempts) = retrying!(self, self.inner.create(key, data.clone()));
        match r {
            // An earlier attempt of ours stored the object but its answer was lost.
            Err(e) if e.kind == ErrorKind::AlreadyExists && attempts > 0 => {
                let stored = self.inner.get(key).await?;
                if stored == data {
                    Ok(())
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    async fn create_with_meta(&self, key: &str, data: Bytes) -> Result<ObjectMeta> {
        let (r, attempts) = retrying!(self, self.inner.create_with_meta(key, data.clone()));
        match r {
            Err(e) if e.kind == ErrorKind::AlreadyExists && attempts > 0 => {
                let stored = self.inner.get_with_meta(key).await?;
                if stored.data == data {
                    Ok(stored.meta)
                } else {
                    Err(e)
                }
            }
            r => r,
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        retrying!(self, self.inner.get(key)).0
    }

    async fn get_with_meta(&self, key: &str) -> Result<Object> {
        retrying!(self, self.inner.get_with_meta(key)).0
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        retrying!(self, self.inner.get_range(key, range.clone())).0
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        retrying!(self, self.inner.head(key)).0
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        // A listing is restarted by the caller; object_store retries each page request.
        self.inner.list(prefix)
    }

    async fn update(&self, key: &str, expected: &Revision, data: Bytes) -> Result<ObjectMeta> {
        let (r, attempts) = retrying!(self, self.inner.update(key, expected, data.clone()));
        match r {
            // An earlier attempt of ours replaced it but its answer was lost: then the object
            // holds exactly our bytes. Anything else is a real conflict.
            Err(e) if e.kind == ErrorKind::PreconditionFailed && attempts > 0 => {
                match retrying!(self, self.inner.get_with_meta(key)).0 {
                    Ok(stored) if stored.data == data => Ok(stored.meta),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    async fn delete_if(&self, key: &str, expected: &Revision) -> Result<()> {
        let (r, attempts) = retrying!(self, self.inner.delete_if(key, expected));
        match r {
            Err(e) if e.kind == ErrorKind::NotFound && attempts > 0 => Ok(()),
            r => r,
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        retrying!(self, self.inner.delete(key)).0
    }

    async fn sweep_staging(&self, older_than: jiff::Timestamp) -> Result<u64> {
        self.inner.sweep_staging(older_than).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

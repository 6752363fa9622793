//! Retrying wrapper: transient failures are retried with capped exponential backoff and
//! jitter; every other error kind passes through on the first attempt.
//!
//! `create` is safe to retry: if an earlier attempt stored the object but its answer was
//! lost, the retry meets `AlreadyExists`; the wrapper then reads the object back and reports
//! success only if the stored bytes are exactly the bytes it was asked to write.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use rand::Rng;

use crate::{DynStore, ErrorKind, ObjectMeta, Result, Store};

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

    async fn get(&self, key: &str) -> Result<Bytes> {
        retrying!(self, self.inner.get(key)).0
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

    async fn delete(&self, key: &str) -> Result<()> {
        retrying!(self, self.inner.delete(key)).0
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

//! Named records: small objects that sources (and, later, maintenance) keep beside the
//! snapshots, one object `<kind prefix><name>` each (FORMAT.md §2.3). Crates above the
//! repository reach them only through [`Repository::record_get`] and
//! [`Repository::record_create`]: they never write raw objects.
//!
//! Records today are plain (not signed, not sealed): guards against misconfiguration, not
//! security boundaries. Signed records and conditional updates come with the records that
//! need them (writer sessions, prune generations).

use arsip_storage::ErrorKind;
use bytes::Bytes;

use crate::error::{RepoError, Result};
use crate::repo::Repository;

/// Which namespace a record lives in. Each kind owns one object-name prefix (FORMAT.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// `stanzas/<name>`: ties a source's stanza name to one cluster identity (FORMAT.md §16.1).
    Stanza,
}

impl RecordKind {
    /// The object-name prefix of this kind, with its trailing `/`.
    pub fn prefix(self) -> &'static str {
        match self {
            RecordKind::Stanza => "stanzas/",
        }
    }

    fn object_name(self, name: &str) -> Result<String> {
        check_name(name, "record name")?;
        Ok(format!("{}{name}", self.prefix()))
    }
}

/// Longest name of a named object (a record, a stream object or its namespace): the longest
/// file name local file systems allow.
pub const MAX_NAME_LEN: usize = 255;

/// The generic rule for names inside a namespace (FORMAT.md §2.1): 1–255 characters of
/// `[A-Za-z0-9._-]`, not starting with `.`. Such a name is one path component on every
/// backend, never `.` or `..`, and never contains `#` (the local backend's staging marker).
pub fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "{name:?} is not a valid {what} (1–{MAX_NAME_LEN} characters of letters, digits, \
             '.', '_' and '-', not starting with '.')"
        )))
    }
}

/// What [`Repository::record_create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordCreate {
    /// The record did not exist; it does now, durably, with the bytes given.
    Created,
    /// A record of that name already exists (possibly written concurrently by another
    /// writer); it was left untouched. Its current bytes.
    AlreadyExists(Bytes),
}

impl Repository {
    /// The bytes of record `name` of `kind`, or `None` if there is none. Any credential may
    /// read records: they are not sealed.
    pub async fn record_get(&self, kind: RecordKind, name: &str) -> Result<Option<Bytes>> {
        let key = kind.object_name(name)?;
        match self.store.get(&key).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Create record `name` of `kind` with `bytes`, create-only: an existing record is never
    /// overwritten but reported as [`RecordCreate::AlreadyExists`] with its bytes. Durable
    /// when it returns [`RecordCreate::Created`]. Agents may create records.
    pub async fn record_create(
        &self,
        kind: RecordKind,
        name: &str,
        bytes: Bytes,
    ) -> Result<RecordCreate> {
        let key = kind.object_name(name)?;
        match self.store.create(&key, bytes).await {
            Ok(()) => Ok(RecordCreate::Created),
            Err(e) if e.kind == ErrorKind::AlreadyExists => match self.store.get(&key).await {
                Ok(b) => Ok(RecordCreate::AlreadyExists(b)),
                // Records are never deleted: one that exists and then does not is damage.
                Err(e) if e.kind == ErrorKind::NotFound => Err(RepoError::corrupt(
                    key,
                    "the record exists but vanished when read",
                )),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("main", "x").is_ok());
        assert!(check_name("a.b-c_9", "x").is_ok());
        assert!(check_name(&"a".repeat(MAX_NAME_LEN), "x").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a#b", "ä", "a b"] {
            assert!(check_name(bad, "x").is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_LEN + 1), "x").is_err());
        assert_eq!(
            RecordKind::Stanza.object_name("main").unwrap(),
            "stanzas/main"
        );
    }

    #[tokio::test]
    async fn create_only() {
        let store =
            arsip_storage::backend::open(&arsip_storage::backend::Location::Memory, false).unwrap();
        let (repo, _) = Repository::init(
            store,
            None,
            &crate::InitOptions::default(),
            std::sync::Arc::new(crate::clock::SystemClock),
        )
        .await
        .unwrap();
        let k = RecordKind::Stanza;
        assert_eq!(repo.record_get(k, "main").await.unwrap(), None);
        let one = Bytes::from_static(b"{\"a\": 1}");
        assert_eq!(
            repo.record_create(k, "main", one.clone()).await.unwrap(),
            RecordCreate::Created
        );
        assert_eq!(
            repo.record_create(k, "main", Bytes::from_static(b"other"))
                .await
                .unwrap(),
            RecordCreate::AlreadyExists(one.clone())
        );
        assert_eq!(repo.record_get(k, "main").await.unwrap(), Some(one.clone()));
        // The object name is the documented one.
        assert_eq!(repo.store.get("stanzas/main").await.unwrap(), one);
        assert!(matches!(
            repo.record_create(k, "../config", one).await,
            Err(RepoError::Invalid(_))
        ));
    }
}

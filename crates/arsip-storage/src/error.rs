//! Storage errors, classified by what the caller does next.
//!
//! Policy: every backend maps its native errors into [`ErrorKind`] once, at the boundary;
//! wrappers (retry) and the repository layer decide on the kind, never on message text.
//! Messages name the object and the store, never credentials.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// A create-only write found an object already there.
    AlreadyExists,
    /// A conditional request's precondition did not hold.
    PreconditionFailed,
    /// The store cannot do this (e.g. conditional create on a store that lacks it).
    NotSupported,
    /// Credentials were refused or lack a permission; retrying will not help.
    PermissionDenied,
    /// A failure that may pass (network, throttling, 5xx); worth retrying.
    Transient,
    /// Anything else that will not pass by retrying (bad configuration, invalid key).
    Permanent,
    /// The object is shorter than the range asked for: it was truncated (damage, not an
    /// outage; retrying will not help).
    Truncated,
}

#[derive(Debug)]
pub struct StorageError {
    pub kind: ErrorKind,
    pub key: Option<String>,
    pub message: String,
}

impl StorageError {
    pub fn new(kind: ErrorKind, key: Option<&str>, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            key: key.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// A local I/O error while doing `what` to `path` (which the message names).
    pub(crate) fn io(key: &str, what: &str, path: &std::path::Path, e: &std::io::Error) -> Self {
        StorageError::new(
            classify_io(e),
            Some(key),
            format!("{what} {}: {e}", path.display()),
        )
    }

    /// A failed fsync is permanent, whatever its errno: after it the page cache may hold
    /// bytes the disk does not, and a retry that reads them back would acknowledge an
    /// object that never reached the disk.
    pub(crate) fn fsync(key: &str, path: &std::path::Path, e: &std::io::Error) -> Self {
        StorageError::new(
            ErrorKind::Permanent,
            Some(key),
            format!("fsync {}: {e}", path.display()),
        )
    }

    /// Map an `object_store` error into the contract's classification.
    pub fn from_object_store(key: &str, err: object_store::Error) -> Self {
        use object_store::Error as E;
        let kind = match &err {
            E::NotFound { .. } => ErrorKind::NotFound,
            E::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            E::Precondition { .. } | E::NotModified { .. } => ErrorKind::PreconditionFailed,
            E::NotSupported { .. } | E::NotImplemented => ErrorKind::NotSupported,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => ErrorKind::PermissionDenied,
            E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::Permanent,
            E::Generic { source, .. } => classify_generic(source.as_ref()),
            _ => ErrorKind::Transient,
        };
        StorageError::new(kind, Some(key), redact(&err.to_string()))
    }
}

/// `Generic` covers both I/O and HTTP failures; an I/O error of the local filesystem such as
/// "no space left" or "permission denied" is permanent, everything else (connection refused,
/// timeouts, 5xx after the client's own retries) is worth another attempt.
fn classify_generic(source: &(dyn std::error::Error + 'static)) -> ErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        cur = e.source();
    }
    ErrorKind::Transient
}

/// The class of a local I/O error (not of an fsync: see [`StorageError::fsync`]).
pub(crate) fn classify_io(io: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
        K::StorageFull | K::QuotaExceeded | K::FileTooLarge => ErrorKind::Permanent,
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::InvalidInput | K::InvalidData => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// Remove anything that looks like a signed query string from a message: object_store
/// errors may include request URLs, and presigned parameters carry credentials.
fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for word in msg.split_inclusive(char::is_whitespace) {
        if let Some(pos) = word.find("X-Amz-") {
            out.push_str(&word[..pos]);
            out.push_str("[redacted] ");
        } else {
            out.push_str(word);
        }
    }
    out
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::NotSupported => "not supported by this store",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Transient => "transient storage failure",
            ErrorKind::Permanent => "storage failure",
            ErrorKind::Truncated => "truncated object",
        };
        match &self.key {
            Some(k) => write!(f, "{what} ({k}): {}", self.message),
            None => write!(f, "{what}: {}", self.message),
        }
    }
}

impl std::error::Error for StorageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_presigned_parameters() {
        let m = redact("GET http://h/b/k?X-Amz-Signature=abc failed");
        assert!(!m.contains("abc"), "{m}");
    }

    #[test]
    fn io_errors_classified_by_kind() {
        let e = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::StorageFull)),
        };
        assert_eq!(
            StorageError::from_object_store("k", e).kind,
            ErrorKind::Permanent
        );
        let e = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        };
        assert_eq!(
            StorageError::from_object_store("k", e).kind,
            ErrorKind::Transient
        );
    }
}

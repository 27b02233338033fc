//! Object stores: where archives and manifests live.
//!
//! Keys are relative to the configured root (`s3://bucket/prefix` or a local directory). A store
//! offers what the pipeline needs and no more: whole small objects (manifests), multipart
//! uploads for archive streams (nothing visible until `complete_upload`), ranged reads for
//! recovery, listing and deletion. Behaviour that is the same for every store — retries with
//! backoff, the dry run — is a wrapper ([`retry::RetryStore`], [`dry_run::DryRunStore`]), not a
//! flag inside each implementation, and one conformance suite (tests/store_conformance.rs) runs
//! against every implementation, the in-memory one included ([`memory`], and [`faulty`] to
//! inject faults in unit tests; docs/ARCHITECTURE.md, "Testing seams").
//!
//! Archives may be stored in an S3 storage class ([`StorageClass`]); those in an archive class
//! (GLACIER, DEEP_ARCHIVE) must be retrieved ([`Store::restore`]) before a byte can be read.
//! [`retrieval`] decides that from HEAD and requests what is needed, for every reader.

pub mod credentials;
pub mod dry_run;
pub mod endpoint;
#[cfg(test)]
pub mod faulty;
pub mod local;
pub mod memory;
pub mod retrieval;
pub mod retry;
pub mod s3;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

/// What went wrong, as far as callers need to decide: retry, report "missing", or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// Worth retrying: 5xx, throttling, timeouts, connection failures.
    Transient,
    /// Credentials or permissions refused.
    Denied,
    /// A write onto a key that exists: every PUT and completion is conditional
    /// (`If-None-Match: *`, 412 Precondition Failed on S3), so no object is ever replaced.
    Exists,
    /// The server does not implement the operation (HTTP 501 `NotImplemented`, as S3-compatible
    /// servers answer calls they lack): never retried. A caller that can do without the
    /// operation goes on through [`optional`]; anywhere else it fails, naming the call.
    NotImplemented,
    Other,
}

/// A store error always names the object (`s3://bucket/key` or a local path) it concerns.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {target}: {message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub operation: &'static str,
    pub target: String,
    pub message: String,
}

impl StoreError {
    pub fn new(
        kind: ErrorKind,
        operation: &'static str,
        target: impl Into<String>,
        message: impl fmt::Display,
    ) -> Self {
        StoreError {
            kind,
            operation,
            target: target.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The error and its sources as one readable line (`a: b: c`), without repeating a source
/// whose text its parent already contains, and without the SDK's debug representation.
pub(crate) fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

/// The calls the server lacks as this process knows them: those [`optional`] met, and those an
/// earlier run met ([`lacking_known`]; `connect` keeps them in DiffDir). A daily cron job must
/// not warn, and so mail, every day about what the server cannot change.
struct Lacking {
    earlier: std::collections::BTreeSet<String>,
    met: std::collections::BTreeSet<&'static str>,
}

static LACKING: std::sync::Mutex<Lacking> = std::sync::Mutex::new(Lacking {
    earlier: std::collections::BTreeSet::new(),
    met: std::collections::BTreeSet::new(),
});

fn lacking() -> std::sync::MutexGuard<'static, Lacking> {
    LACKING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tells [`optional`] which calls an earlier run found the server lacking (logged at info).
pub fn lacking_known(earlier: impl IntoIterator<Item = String>) {
    lacking().earlier.extend(earlier);
}

/// The calls found lacking in this process that no earlier run had found.
pub fn lacking_new() -> Vec<String> {
    let l = lacking();
    l.met
        .iter()
        .filter(|op| !l.earlier.contains(**op))
        .map(|op| op.to_string())
        .collect()
}

/// The answer of an operation the caller can do without: `None` when the server does not
/// implement it ([`ErrorKind::NotImplemented`]), after one warning per operation naming the
/// call, the server's answer and `without`, what is not done for lack of it — once per process,
/// and not again in later runs once [`lacking_known`] says an earlier run met it (then an info
/// line). Any other error stays an error.
pub fn optional<T>(result: Result<T>, without: &str) -> Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind == ErrorKind::NotImplemented => {
            let mut l = lacking();
            let first = l.met.insert(e.operation);
            if !first {
                log::debug!("{e} (reported already)");
            } else if l.earlier.contains(e.operation) {
                log::info!(
                    "{e}; the server does not implement this call (as an earlier run found), \
                     so {without}"
                );
            } else {
                log::warn!(
                    "{e}; the server does not implement this call, so {without} (warned once: \
                     later runs say it at info level)"
                );
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the store last wrote it, on the store's own clock (compare with
    /// [`Store::server_time`], never with the local clock).
    pub modified: Option<DateTime<Utc>>,
    /// The storage class as the store reports it (S3's `x-amz-storage-class`); `None` is
    /// STANDARD (S3 leaves the header out for it). A lifecycle rule may have changed it since
    /// the upload, so it is what the store says, never what the configuration asked for.
    pub storage_class: Option<String>,
    /// The retrieval of an archived object (S3's `x-amz-restore`); only `head` reports it.
    pub restore: RestoreStatus,
    /// Its Object Lock retention; only [`Store::head`] reads it (`None` from `list`).
    pub lock: Option<ObjectLock>,
}

impl ObjectInfo {
    /// Whether the object lies in an archive class (GLACIER, DEEP_ARCHIVE) and no retrieved
    /// copy of it can be read now: reading it would fail until a retrieval completes. The one
    /// test of "archived and not (yet) readable" for every reader (recover, verify).
    pub fn needs_retrieval(&self) -> bool {
        let archived = self
            .storage_class
            .as_deref()
            .and_then(StorageClass::parse)
            .is_some_and(StorageClass::is_archive);
        archived && !matches!(self.restore, RestoreStatus::Restored { .. })
    }
}

/// The state of an object's retrieval from an archive class, as HEAD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RestoreStatus {
    /// None was requested, or its copy expired.
    #[default]
    None,
    /// Requested and not done yet (`ongoing-request="true"`): requesting it again is pointless.
    Ongoing,
    /// A readable copy exists until `until` (`ongoing-request="false", expiry-date="…"`).
    Restored { until: Option<DateTime<Utc>> },
}

impl RestoreStatus {
    /// S3's `x-amz-restore` header: `ongoing-request="true"`, or `ongoing-request="false",
    /// expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`. Anything else is read as no retrieval.
    pub fn parse(header: &str) -> RestoreStatus {
        let field = |name: &str| {
            let start = header.find(&format!("{name}=\""))? + name.len() + 2;
            let len = header[start..].find('"')?;
            Some(&header[start..start + len])
        };
        match field("ongoing-request") {
            Some("true") => RestoreStatus::Ongoing,
            Some("false") => RestoreStatus::Restored {
                until: field("expiry-date")
                    .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                    .map(|d| d.with_timezone(&Utc)),
            },
            _ => RestoreStatus::None,
        }
    }
}

/// The S3 storage classes an archive may be uploaded to (`StorageClass`). Manifests and every
/// other small object stay in STANDARD, so that listing and the catalog never need a retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageClass {
    #[default]
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
    Glacier,
    DeepArchive,
}

impl StorageClass {
    pub const ALL: [StorageClass; 7] = [
        StorageClass::Standard,
        StorageClass::StandardIa,
        StorageClass::OnezoneIa,
        StorageClass::IntelligentTiering,
        StorageClass::GlacierIr,
        StorageClass::Glacier,
        StorageClass::DeepArchive,
    ];

    /// The name S3 uses (and the configuration).
    pub fn name(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
        }
    }

    /// The class called `name`, in any case.
    pub fn parse(name: &str) -> Option<StorageClass> {
        StorageClass::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Whether objects of this class must be retrieved before they can be read (GLACIER_IR is
    /// read directly).
    pub fn is_archive(self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an archived object is retrieved (`RetrievalTier`): faster costs more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetrievalTier {
    #[default]
    Standard,
    Bulk,
    Expedited,
}

impl RetrievalTier {
    pub const ALL: [RetrievalTier; 3] = [
        RetrievalTier::Standard,
        RetrievalTier::Bulk,
        RetrievalTier::Expedited,
    ];

    /// The name S3 uses (and the configuration).
    pub fn name(self) -> &'static str {
        match self {
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Bulk => "Bulk",
            RetrievalTier::Expedited => "Expedited",
        }
    }
}

impl fmt::Display for RetrievalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// S3 Object Lock's retention modes: governance may be lifted by credentials allowed to
/// bypass it, compliance by nobody until the date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// As S3 spells it (`x-amz-object-lock-mode`).
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        })
    }
}

/// An object's retention: no version of it can be deleted before `until` (server's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub until: DateTime<Utc>,
}

/// How a multipart upload's object is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UploadOptions {
    pub storage_class: StorageClass,
    /// Asks for the completed object to be locked (S3 honours it; callers still
    /// [`Store::retain`] after completion, for servers that do not).
    pub lock: Option<ObjectLock>,
}

/// An upload that was started and never completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// Receipt of one uploaded part, needed to complete the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReceipt {
    pub number: u32,
    pub etag: String,
}

#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// How to name `key` in messages: `s3://bucket/prefix/key` or the local path.
    fn locate(&self, key: &str) -> String;

    /// Whether writes are only recorded, not done (`-t`, see [`dry_run::DryRunStore`]): asked
    /// by what writes outside the store and by messages saying what was done.
    fn dry_run(&self) -> bool {
        false
    }

    /// Stores a small object atomically; fails if it cannot, never leaves a partial object.
    /// Fails with [`ErrorKind::Exists`] when `key` exists: objects are never replaced.
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_locked(key, data, None).await
    }
    /// [`Store::put`], the object locked from the start when `lock` is given.
    async fn put_locked(&self, key: &str, data: Bytes, lock: Option<&ObjectLock>) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Bytes `range` of the object; shorter only at the object's end.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    /// `None` when the object does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Removes the object. A store that keeps versions (a bucket with Object Lock, see
    /// [`s3::S3Store::versioned`]) removes every version of the key, not just its latest;
    /// a version still locked is refused ([`ErrorKind::Denied`]).
    async fn delete(&self, key: &str) -> Result<()>;

    /// Starts an upload whose object is stored as `options` say; a store that cannot store it
    /// so (a storage class the local store does not have, a lock where locks are impossible)
    /// fails here, before any byte is sent.
    async fn create_upload(&self, key: &str, options: &UploadOptions) -> Result<String>;
    /// Part numbers start at 1; parts may arrive in any order and concurrently.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartReceipt>;
    /// Makes the object visible under `key`, its parts in number order; fails with
    /// [`ErrorKind::Exists`] when `key` exists (the upload stays, to be aborted).
    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartReceipt>,
    ) -> Result<()>;
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()>;
    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>>;
    /// Requests a readable copy of an archived object for `days` days (S3's RestoreObject);
    /// done when `head` reports [`RestoreStatus::Restored`]. A request while one is ongoing is
    /// no error. An object in no archive class is an error (S3: `InvalidObjectState`).
    async fn restore(&self, key: &str, days: u32, tier: RetrievalTier) -> Result<()>;
    /// The store's clock now: the time that `modified` and `initiated` are measured against,
    /// so that an age is right however far the local clock is off.
    async fn server_time(&self) -> Result<DateTime<Utc>>;

    /// Sets the retention of the stored object `key` (S3's PutObjectRetention).
    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()>;
    /// Whether objects can be locked here at all (S3: the bucket has Object Lock enabled).
    async fn locks_enabled(&self) -> Result<bool>;
}

pub type DynStore = Arc<dyn Store>;

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

pub mod dry_run;
#[cfg(test)]
pub mod faulty;
pub mod local;
pub mod memory;
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the store last wrote it, on the store's own clock (compare with
    /// [`Store::server_time`], never with the local clock).
    pub modified: Option<DateTime<Utc>>,
    /// Its Object Lock retention; only [`Store::head`] reads it (`None` from `list`).
    pub lock: Option<ObjectLock>,
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

    async fn create_upload(&self, key: &str) -> Result<String> {
        self.create_upload_locked(key, None).await
    }
    /// [`Store::create_upload`], asking for the completed object to be locked (S3 honours it;
    /// callers still [`Store::retain`] after completion, for servers that do not).
    async fn create_upload_locked(&self, key: &str, lock: Option<&ObjectLock>) -> Result<String>;
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
    /// The store's clock now: the time that `modified` and `initiated` are measured against,
    /// so that an age is right however far the local clock is off.
    async fn server_time(&self) -> Result<DateTime<Utc>>;

    /// Sets the retention of the stored object `key` (S3's PutObjectRetention).
    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()>;
    /// Whether objects can be locked here at all (S3: the bucket has Object Lock enabled).
    async fn locks_enabled(&self) -> Result<bool>;
}

pub type DynStore = Arc<dyn Store>;

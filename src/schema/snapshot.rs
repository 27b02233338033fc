//! What the manifest of a bucket snapshot records: the buckets, the listing's time window
//! and sizes, and the key of the version references gc reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How new master objects reach the versioned replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketMode {
    /// S3 replication (or the master being the replica) does it.
    Replicated,
    /// Each snapshot first copies new and changed objects server-side.
    Copy,
}

/// What the manifest of a snapshot says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub master: String,
    pub replica: String,
    pub mode: BucketMode,
    /// The replica's keys start with this (the master's prefix).
    pub prefix: String,
    /// The real clock when listing began: versions superseded later may be missing from it.
    pub listed_from: DateTime<Utc>,
    pub listed_to: DateTime<Utc>,
    /// Keys present at the snapshot, and keys whose current version is a delete marker.
    pub keys: u64,
    pub deleted_keys: u64,
    /// Every version listed (current or not).
    pub versions: u64,
    pub list_requests: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    /// Keys gone from the master that got a delete marker in the replica (`Mode copy`).
    pub marked_deleted: u64,
    /// The unencrypted list of referenced version ids, for gc.
    pub refs: String,
    /// SHA-256 of the `refs` object as stored (absent in manifests written before it was
    /// recorded): a damaged list must stop gc, not change the versions it keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs_sha256: Option<String>,
}

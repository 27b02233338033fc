//! Bucket sets: protecting a versioned S3 bucket by version-index snapshots.
//!
//! A snapshot lists every version under the protected prefix of the replica (after copying new
//! master objects there in `Mode copy`) and streams the current version of every key — one
//! JSON line each — through the normal pipeline as the set's archive, so `gpg -d | zstd -d`
//! shows it. Beside it goes a small unencrypted list of the version ids it references, which
//! lets gc run unattended without the secret key. Restore copies the recorded versions back
//! server-side; gc deletes replica versions that no kept snapshot needs.
//!
//! - [`client`]: the S3 calls, with retries; [`listing`]: parallel version listing;
//! - [`snapshot`]: the set's source; [`mirror`]: `Mode copy`;
//! - [`restore`], [`diff`], [`gc`]: what the `bucket` commands and prune do with the indexes.

pub mod client;
pub mod diff;
pub mod gc;
pub mod listing;
pub mod mirror;
pub mod restore;
pub mod snapshot;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The index of the snapshot `manifest`, read back through the recovery pipeline (integrity
/// checked, decrypted, decompressed). Blocking: call it outside the runtime `handle` belongs to.
pub fn load_index(
    handle: &tokio::runtime::Handle,
    store: &crate::store::DynStore,
    manifest: &crate::schema::manifest::Manifest,
    decrypt: &crate::pipeline::decrypt::DecryptWith,
) -> anyhow::Result<Vec<Version>> {
    let mut data = Vec::new();
    crate::recover::stream(
        handle,
        store,
        vec![manifest.clone()],
        Vec::new(),
        Some(decrypt),
        false,
        &mut data,
    )?;
    parse_index(&data).map_err(|e| anyhow::anyhow!("{}: {e}", store.locate(&manifest.archive.key)))
}

/// Objects above this are copied in parts (S3's limit for CopyObject).
pub const SINGLE_COPY_LIMIT: u64 = 5 << 30;

/// One version (or delete marker) of one key. A snapshot index is the `is_latest` ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub key: String,
    pub version_id: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: DateTime<Utc>,
    pub storage_class: String,
    #[serde(skip)]
    pub is_latest: bool,
    /// The key was deleted: absent at the snapshot's point in time.
    #[serde(default)]
    pub delete_marker: bool,
}

/// Parses a snapshot index (JSON lines) as `recover` writes it; errors name the line.
pub fn parse_index(data: &[u8]) -> Result<Vec<Version>, String> {
    data.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            serde_json::from_slice::<Version>(line)
                .map(|mut v| {
                    v.is_latest = true;
                    v
                })
                .map_err(|e| format!("index line {}: {e}", n + 1))
        })
        .collect()
}

/// The index line of `v`.
pub fn index_line(v: &Version) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).expect("a version serializes");
    line.push(b'\n');
    line
}

#[cfg(test)]
pub(crate) fn version(key: &str, id: &str, etag: &str, minute: i64, latest: bool) -> Version {
    Version {
        key: key.into(),
        version_id: id.into(),
        size: etag.len() as u64,
        etag: etag.into(),
        last_modified: DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap(),
        storage_class: "STANDARD".into(),
        is_latest: latest,
        delete_marker: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_round_trip_and_bad_lines_are_named() {
        let mut marker = version("gone", "v9", "", 3, true);
        marker.delete_marker = true;
        let entries = vec![version("a/b", "v1", "\"e1\"", 1, true), marker];
        let data: Vec<u8> = entries.iter().flat_map(index_line).collect();
        assert_eq!(parse_index(&data).unwrap(), entries);
        let mut bad = data.clone();
        bad.extend_from_slice(b"{\"key\":\n");
        assert!(parse_index(&bad).unwrap_err().starts_with("index line 3:"));
    }
}

//! The uploads of this configuration that are not yet committed, and the runs it is retiring,
//! recorded in DiffDir.
//!
//! A run records each archive upload (key, upload id, the run's manifest and other object keys)
//! as a file under `DiffDir/uploads/` right after the store gave it an upload id, and removes
//! the record once the run's manifest is stored or its upload was aborted. A record that is
//! still there when the next run of this configuration starts (under the same lock) is what an
//! interrupted run left: that run aborts exactly that upload and deletes its objects unless a
//! manifest for them exists. Uploads that another configuration has in flight under the same
//! bucket and host are never in these records, so they are never touched (prune removes
//! foreign debris only after a grace period on the server's clock). A retirement is recorded
//! the same way, without an upload id, before its manifest is deleted: killed half-way, it is
//! finished by the next run or prune (the manifest gone, its objects go too).
//!
//! A quilt content upload (`backup::quilt`) is recorded too, as [`UploadKind::Content`]: its
//! next run only aborts it. Content is never deleted here, even when it exists: completed, it
//! may be referenced by another run of any host by then (the same content, stored once).
//!
//! Uploads are listed (ListMultipartUploads) through [`open_uploads`] only: every use of the
//! listing is a safeguard a run can do without, and some S3-compatible servers lack the call.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{DynStore, ErrorKind, PendingUpload};

/// What is not done on a server that cannot list multipart uploads.
const WITHOUT_LISTING: &str = "open uploads are not looked for: prune does not abort those \
     that interrupted runs of other configurations left (this configuration's own are still \
     aborted), and another configuration uploading the same set under this Host is not detected";

/// The multipart uploads open under `prefix`, or `None` when the server does not implement
/// listing them (s3s-fs answers 501 NotImplemented): the callers' safeguards are then skipped,
/// after one warning per run.
pub async fn open_uploads(
    store: &DynStore,
    prefix: &str,
) -> crate::store::Result<Option<Vec<PendingUpload>>> {
    crate::store::optional(store.list_uploads(prefix).await, WITHOUT_LISTING)
}

/// One upload in flight, or one run being retired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub archive: String,
    /// Empty for a retirement: the run's objects are to go once its manifest has gone.
    pub upload_id: String,
    /// The manifest that commits it: when it exists, the archive belongs to a committed run.
    pub manifest: String,
    /// The run's other objects (range hashes, a snapshot's version ids), written before the
    /// manifest.
    pub others: Vec<String>,
    /// What the upload stores. Records written before there were quilt content uploads have
    /// none: they are a run's.
    #[serde(default)]
    pub kind: UploadKind,
}

/// What a recorded upload stores, which decides what its clean-up may remove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    /// A run's archive: without its manifest, it and the run's other objects are debris.
    #[default]
    Run,
    /// A quilt content object (`manifest` and `others` unused): the upload is aborted, and
    /// content that completed is kept, whoever stored it.
    Content,
}

/// The records of one configuration: the `uploads` directory in its DiffDir.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(diff_dir: &Path) -> Self {
        Records {
            dir: diff_dir.join("uploads"),
        }
    }

    fn path(&self, archive: &str) -> PathBuf {
        // A hash of the key: injective in practice, and a valid file name for any key.
        self.dir
            .join(format!("{}.json", hex::encode(Sha256::digest(archive))))
    }

    /// Records `upload` durably before any of its parts is sent.
    pub fn record(&self, upload: &Upload) -> io::Result<()> {
        // `atomic::replace_file` creates the records directory when it is missing.
        let text = serde_json::to_vec_pretty(upload).expect("serializes");
        crate::atomic::replace_file(&self.path(&upload.archive), &text)
    }

    /// Forgets `archive`'s upload: committed, or aborted and its objects gone.
    pub fn clear(&self, archive: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(archive)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every recorded upload. A record that cannot be parsed is skipped with a warning naming
    /// its file (its upload is then left to prune's grace period), so one damaged file does
    /// not stop the clean-up of the others.
    pub fn list(&self) -> io::Result<Vec<Upload>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue; // a temporary file of an interrupted write
            }
            let text = std::fs::read(&path)?;
            match serde_json::from_slice(&text) {
                Ok(upload) => out.push(upload),
                Err(e) => log::warn!("{}: not an upload record, ignored: {e}", path.display()),
            }
        }
        out.sort_by(|a: &Upload, b| a.archive.cmp(&b.archive));
        Ok(out)
    }
}

/// Finishes what interrupted runs of this configuration left: aborts each recorded upload,
/// deletes its objects unless its manifest exists, and forgets it. Returns the archives
/// cleaned up (not those found committed after all); a record that cannot be finished now
/// stays for the next run.
pub async fn finish_interrupted(store: &DynStore, records: &Records) -> Vec<String> {
    let uploads = match records.list() {
        Ok(uploads) => uploads,
        Err(e) => {
            log::warn!("cannot read the records of unfinished uploads: {e}");
            return Vec::new();
        }
    };
    let mut cleaned = Vec::new();
    for upload in uploads {
        match finish_one(store, &upload).await {
            Ok(finished) => {
                if finished == Finished::Committed {
                    log::info!(
                        "{} of an interrupted run is committed after all: nothing to clean up",
                        store.locate(&upload.archive)
                    );
                } else {
                    log::info!(
                        "finished the clean-up of {} left by an interrupted run",
                        store.locate(&upload.archive)
                    );
                }
                if let Err(e) = records.clear(&upload.archive) {
                    log::warn!("cannot forget the upload of {}: {e}", upload.archive);
                }
                if finished == Finished::CleanedUp {
                    cleaned.push(upload.archive);
                }
            }
            Err(e) => log::warn!(
                "cannot finish the clean-up of {} left by an interrupted run ({e}); the next run tries again",
                store.locate(&upload.archive)
            ),
        }
    }
    cleaned
}

/// With `PruneAfterRun no`: logs the interrupted runs whose clean-up is left to `s3nap prune`
/// (a run deletes nothing then).
pub fn log_left_to_prune(store: &DynStore, records: &Records) {
    match records.list() {
        Ok(uploads) => {
            for upload in uploads {
                log::info!(
                    "PruneAfterRun no: s3nap prune will finish the clean-up of {} (left by an interrupted run)",
                    store.locate(&upload.archive)
                );
            }
        }
        Err(e) => log::warn!("cannot read the records of unfinished uploads: {e}"),
    }
}

/// Aborts `upload` and deletes its objects unless its manifest and its archive exist (then the
/// run is committed after all and nothing is debris). A manifest whose archive is gone goes
/// first, so that no run is ever listed without its archive. A content upload is only
/// aborted. Keeps the record: the caller clears it.
pub async fn finish_one(store: &DynStore, upload: &Upload) -> crate::store::Result<Finished> {
    // The stores treat an upload that is gone (completed or aborted) as aborted: S3 answers
    // 404 NoSuchUpload. s3s-fs refuses it instead (403): with the archive stored, the upload
    // was completed (keys are never reused), nothing is left open on any server, and the
    // clean-up goes on.
    if !upload.upload_id.is_empty() {
        if let Err(e) = store.abort_upload(&upload.archive, &upload.upload_id).await {
            if e.kind != ErrorKind::Denied || store.head(&upload.archive).await?.is_none() {
                return Err(e);
            }
        }
    }
    // (A record from before records had a kind names content as its manifest and archive.)
    if upload.kind == UploadKind::Content || crate::schema::quilt::is_content_key(&upload.archive) {
        // Never deleted, whether it exists now or appears later: the same content completed by
        // another host (or by this upload before the kill) may be referenced by a committed run.
        return Ok(Finished::CleanedUp);
    }
    if store.head(&upload.manifest).await?.is_some() {
        if store.head(&upload.archive).await?.is_some() {
            return Ok(Finished::Committed); // the run is complete, nothing is debris
        }
        store.delete(&upload.manifest).await?;
        log::warn!(
            "removed {}: its archive is gone (an interrupted run)",
            store.locate(&upload.manifest)
        );
    }
    for key in std::iter::once(&upload.archive).chain(&upload.others) {
        if store.head(key).await?.is_some() {
            store.delete(key).await?;
            log::info!(
                "removed {}: left by an interrupted run (no manifest)",
                store.locate(key)
            );
        }
    }
    Ok(Finished::CleanedUp)
}

/// What [`finish_one`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The run's manifest and archive exist: it was committed after all (interrupted after its
    /// manifest, or a retirement killed before its first deletion); nothing was touched.
    Committed,
    /// The upload is aborted and whatever the run stored is gone (a content upload: aborted,
    /// its content kept).
    CleanedUp,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use chrono::Utc;

    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn a_manifest_whose_archive_is_gone_is_removed_not_taken_for_a_commit() {
        let memory = Arc::new(MemoryStore::new());
        let store: DynStore = memory.clone();
        let upload = Upload {
            archive: "h/s/20261101T030000Z.full.tar.zst".into(),
            upload_id: "u1".into(),
            manifest: "h/s/20261101T030000Z.full.manifest.json".into(),
            others: vec!["h/s/20261101T030000Z.full.sha256".into()],
            kind: UploadKind::Run,
        };
        // The commit stored the manifest, found the archive gone, and could not remove the
        // manifest before it was stopped.
        memory.insert(&upload.manifest, Bytes::from_static(b"{}"), Utc::now());
        memory.insert(&upload.others[0], Bytes::from_static(b"x"), Utc::now());
        assert_eq!(
            finish_one(&store, &upload).await.unwrap(),
            Finished::CleanedUp
        );
        assert!(memory.keys().is_empty(), "{:?}", memory.keys());

        // With its archive, the run is committed: nothing is touched.
        memory.insert(&upload.manifest, Bytes::from_static(b"{}"), Utc::now());
        memory.insert(&upload.archive, Bytes::from_static(b"a"), Utc::now());
        assert_eq!(
            finish_one(&store, &upload).await.unwrap(),
            Finished::Committed
        );
        assert_eq!(memory.keys().len(), 2);
    }

    /// s3s-fs refuses to abort an upload that is gone (403, where S3 answers 404): one that
    /// completed into the archive is cleaned up all the same; without the archive, the
    /// refusal stands (it may be a missing permission, and the upload still open).
    #[tokio::test]
    async fn a_refused_abort_of_a_completed_upload_does_not_stop_the_clean_up() {
        use crate::store::faulty::{Fault, FaultyStore, Op, Rule};
        let memory = Arc::new(MemoryStore::new());
        let faulty = FaultyStore::new(
            memory.clone(),
            vec![Rule::new(Op::AbortUpload, Fault::Denied)],
        );
        let store: DynStore = Arc::new(faulty);
        let upload = Upload {
            archive: "h/s/20261101T030000Z.full.tar.zst".into(),
            upload_id: "u1".into(),
            manifest: "h/s/20261101T030000Z.full.manifest.json".into(),
            others: vec!["h/s/20261101T030000Z.full.sha256".into()],
            kind: UploadKind::Run,
        };
        memory.insert(&upload.archive, Bytes::from_static(b"a"), Utc::now());
        memory.insert(&upload.others[0], Bytes::from_static(b"x"), Utc::now());
        assert_eq!(
            finish_one(&store, &upload).await.unwrap(),
            Finished::CleanedUp
        );
        assert!(memory.keys().is_empty(), "{:?}", memory.keys());

        memory.insert(&upload.others[0], Bytes::from_static(b"x"), Utc::now());
        let refused = finish_one(&store, &upload).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Denied, "{refused}");
        assert_eq!(memory.keys(), vec![upload.others[0].clone()]);
    }
}

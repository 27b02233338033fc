//! The commit of one run's archive: from the multipart upload's creation to the stored
//! manifest, which is what makes the run exist.
//!
//! An [`ArchiveCommit`] owns the upload. It is recorded in DiffDir before any part is sent; it
//! ends either in [`ArchiveCommit::commit`] — complete the upload, check the stored size, store
//! the range hashes, store the manifest, check the archive is still there — or in
//! [`ArchiveCommit::abort`], which aborts the upload and deletes whatever of the run was stored.
//! A commit that fails part-way aborts itself. Nothing happens on drop (no async clean-up can
//! run there): a run killed with an open commit leaves its record, and the next run of the
//! configuration finishes it (`uploads::finish_interrupted`).
//!
//! Deletions go through their own store ([`Stores::deleter`]: PruneKeyfile's credentials), or
//! with `PruneAfterRun no` do not happen at all: an abort then only aborts the upload, and
//! whatever the run had stored stays recorded for `s3nap prune`.
//!
//! With `ObjectLock` ([`RunLock`]) every object of the run is locked before the manifest is
//! stored: the archive asks for its lock at CreateMultipartUpload and gets it (again) with a
//! retention set after completion — a run whose archive cannot be locked never commits —, the
//! range hashes and the manifest are stored locked, and a bucket snapshot's refs get a
//! retention too. The date is counted on the server's clock (it enforces the lock), once per
//! run ([`ArchiveCommit::run_lock`]): the quilted content the manifest references gets it too.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use sha2::Digest;

use super::sources::archive_key;
use crate::config::{Config, SetSpec, SourceSpec};
use crate::pipeline::parts::Stored;
use crate::policy::lock::{retain_until, LockTerms, Retirement};
use crate::prune;
use crate::schema::layout::{self, Kind, RunId};
use crate::schema::manifest::{self, Manifest, RangeHashes};
use crate::store::{DynStore, LockMode, ObjectLock, PartReceipt, UploadOptions};
use crate::uploads::{self, Records, Upload};

/// The keys of one run's objects.
pub(super) struct RunKeys {
    pub archive: String,
    pub manifest: String,
    /// The per-range SHA-256s of the archive.
    pub ranges: String,
    /// A bucket snapshot's referenced version ids.
    pub refs: Option<String>,
}

impl RunKeys {
    pub fn new(config: &Config, set: &SetSpec, run: RunId, kind: Kind) -> Self {
        let object = |ext: &str| layout::archive_key(&config.host, &set.name, run, kind, ext);
        RunKeys {
            archive: archive_key(config, set, run, kind),
            manifest: layout::manifest_key(&config.host, &set.name, run, kind),
            ranges: object("sha256"),
            refs: matches!(set.source, SourceSpec::Bucket(_)).then(|| object("refs.zst")),
        }
    }
}

/// How the objects of one run are locked: until its earliest retirement (`retirement`, on
/// the run's scheduled clock `run`), counted from the server's time of each lock.
#[derive(Debug, Clone)]
pub(super) struct RunLock {
    pub mode: LockMode,
    pub retirement: Retirement,
    pub run: chrono::DateTime<chrono::Utc>,
    pub terms: LockTerms,
}

impl RunLock {
    /// The lock to set now, by the store's clock.
    pub(super) async fn now(&self, store: &DynStore) -> anyhow::Result<ObjectLock> {
        let server_now = store.server_time().await?;
        Ok(ObjectLock {
            mode: self.mode,
            until: retain_until(&self.retirement, self.run, server_now, self.terms),
        })
    }
}

/// The stores a commit writes and deletes through.
#[derive(Clone, Copy)]
pub(super) struct Stores<'a> {
    pub store: &'a DynStore,
    /// `None`: this run deletes nothing (`PruneAfterRun no`).
    pub deleter: Option<&'a DynStore>,
}

/// An archive upload between its creation and its manifest (see the module comment).
pub(super) struct ArchiveCommit<'a> {
    store: &'a DynStore,
    deleter: Option<&'a DynStore>,
    records: Records,
    upload: Upload,
    /// Where the archive's per-range SHA-256s go (also among `upload.others`).
    ranges: String,
    /// The set, for messages.
    set: String,
    lock: Option<RunLock>,
    /// The lock of the run's objects, once [`ArchiveCommit::run_lock`] fixed it.
    fixed: tokio::sync::OnceCell<ObjectLock>,
}

impl<'a> ArchiveCommit<'a> {
    /// Checks that none of the run's objects exist and that no other configuration is uploading
    /// the set, then creates the upload and records it.
    pub async fn begin(
        stores: Stores<'a>,
        diff_dir: &Path,
        host: &str,
        set: &str,
        keys: &RunKeys,
        options: &UploadOptions,
        lock: Option<RunLock>,
    ) -> anyhow::Result<ArchiveCommit<'a>> {
        let store = stores.store;
        // Never a silent unlocked backup: the bucket must be able to lock.
        if lock.is_some() && !store.locks_enabled().await? {
            bail!(
                "{set} has ObjectLock, but {} does not have Object Lock enabled (enable it at \
                 the bucket's creation, or later on a versioned bucket): nothing was stored",
                store.locate("")
            );
        }
        let first_lock = match &lock {
            Some(l) => Some(l.now(store).await?),
            None => None,
        };
        let objects = [&keys.manifest, &keys.archive, &keys.ranges];
        for key in objects.into_iter().chain(keys.refs.as_ref()) {
            if store.head(key).await?.is_some() {
                bail!(
                    "{} already exists: runs are never overwritten",
                    store.locate(key)
                );
            }
        }
        let records = Records::new(diff_dir);
        check_no_foreign_upload(store, &records, host, set, None).await?;
        // Only the archive takes the set's storage class: the manifest, the range hashes and
        // the refs stay in STANDARD (put), so that listing never needs a retrieval.
        let options = UploadOptions {
            lock: first_lock,
            ..options.clone()
        };
        let created = store.create_upload(&keys.archive, &options).await;
        abort_strays(store, &keys.archive, created.as_ref().ok()).await;
        let upload_id = created?;
        let commit = ArchiveCommit {
            store,
            deleter: stores.deleter,
            records,
            upload: Upload {
                archive: keys.archive.clone(),
                upload_id,
                manifest: keys.manifest.clone(),
                others: std::iter::once(keys.ranges.clone())
                    .chain(keys.refs.clone())
                    .collect(),
                kind: uploads::UploadKind::Run,
            },
            ranges: keys.ranges.clone(),
            set: set.to_string(),
            lock,
            fixed: tokio::sync::OnceCell::new(),
        };
        // Recorded before any part is sent, so that an interrupted run's next run finds it.
        if let Err(e) = commit.records.record(&commit.upload) {
            commit.abort().await;
            bail!(
                "cannot record the upload of {} in {} ({e}); nothing was stored",
                store.locate(&keys.archive),
                diff_dir.display()
            );
        }
        // Once more now that ours is listed too: of two configurations that began the same
        // set at the same moment, at least the second sees the first (both may fail; neither
        // commits a run mixed up with the other's).
        // Our own archive's key is ours: a stray of a create whose reply was lost and whose
        // abort failed is not another configuration's.
        let own = Some(keys.archive.as_str());
        if let Err(e) = check_no_foreign_upload(store, &commit.records, host, set, own).await {
            commit.abort().await;
            return Err(e);
        }
        Ok(commit)
    }

    pub fn archive(&self) -> &str {
        &self.upload.archive
    }

    pub fn upload_id(&self) -> &str {
        &self.upload.upload_id
    }

    /// With ObjectLock: the lock of every object the run commits, counted from the store's
    /// time of the first call and the same afterwards. Whatever else the manifest names
    /// (quilted content) is locked to this date before the manifest is stored, so nothing it
    /// references is locked for less long than the run itself.
    pub async fn run_lock(&self) -> anyhow::Result<Option<ObjectLock>> {
        let Some(run_lock) = &self.lock else {
            return Ok(None);
        };
        let lock = self
            .fixed
            .get_or_try_init(|| run_lock.now(self.store))
            .await?;
        Ok(Some(*lock))
    }

    /// Commits the uploaded parts: the manifest `build` makes (given the archive's range
    /// hashes) is stored last. On any failure the run's objects are removed again.
    pub async fn commit(
        self,
        receipts: Vec<PartReceipt>,
        stored: &Stored,
        build: impl FnOnce(RangeHashes) -> Manifest,
    ) -> anyhow::Result<Manifest> {
        match self.store_all(receipts, stored, build).await {
            Ok(manifest) => {
                if let Err(e) = self.records.clear(self.archive()) {
                    log::warn!(
                        "{}: run {} committed, but its upload record could not be removed ({e}); the next run removes it",
                        self.set,
                        manifest.run
                    );
                }
                Ok(manifest)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn store_all(
        &self,
        receipts: Vec<PartReceipt>,
        stored: &Stored,
        build: impl FnOnce(RangeHashes) -> Manifest,
    ) -> anyhow::Result<Manifest> {
        let store = self.store;
        let archive = self.archive();
        store
            .complete_upload(archive, self.upload_id(), receipts)
            .await?;
        let info = store.head(archive).await?.ok_or_else(|| {
            anyhow!(
                "{}: missing right after its upload completed",
                store.locate(archive)
            )
        })?;
        if info.size != stored.size {
            bail!(
                "{}: stored {} bytes but the pipeline produced {}; not committing this run",
                store.locate(archive),
                info.size,
                stored.size
            );
        }
        let lock = self.lock_stored().await?;
        let ranges = self.store_range_hashes(stored, lock.as_ref()).await?;
        // Objects the source stored itself (a bucket snapshot's refs) get the lock too.
        if let Some(lock) = &lock {
            for key in self.upload.others.iter().filter(|k| **k != self.ranges) {
                if store.head(key).await?.is_some() {
                    store.retain(key, lock).await?;
                }
            }
        }
        let manifest = build(ranges);
        self.store_manifest(&manifest, lock.as_ref()).await?;
        // Another configuration's prune may have taken the archive for debris meanwhile (its
        // grace period passed during a very long run): a manifest without its archive must not
        // stand, so it goes, and the run fails loudly.
        match store.head(archive).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let Some(deleter) = self.deleter else {
                    // Recorded: the abort leaves it, and prune removes the manifest.
                    bail!(
                        "{} vanished before its run was committed (removed by another configuration's prune?); run not committed, its manifest is left for s3nap prune (PruneAfterRun no)",
                        store.locate(archive)
                    );
                };
                deleter.delete(&self.upload.manifest).await?;
                bail!(
                    "{} vanished before its run was committed (removed by another configuration's prune?); run not committed",
                    store.locate(archive)
                );
            }
            // The archive was there, whole, just before the manifest: a check that cannot be
            // made now does not undo a stored run (the next run's clean-up checks again).
            Err(e) => log::warn!(
                "{}: {} could not be checked again after its manifest ({e}); the run stands",
                self.set,
                store.locate(archive)
            ),
        }
        Ok(manifest)
    }

    /// Stores the manifest: from then on the run exists. A failed PUT whose reply was lost
    /// after the store took the manifest is told apart by reading it back: that run is
    /// committed, and undoing it (or not saving its local state) would be wrong.
    async fn store_manifest(
        &self,
        manifest: &Manifest,
        lock: Option<&ObjectLock>,
    ) -> anyhow::Result<()> {
        let (store, key) = (self.store, &self.upload.manifest);
        let json: bytes::Bytes = manifest.to_json().into();
        let Err(e) = store.put_locked(key, json.clone(), lock).await else {
            return Ok(());
        };
        match store.get(key).await {
            Ok(stored) if stored == json => {
                log::warn!(
                    "{}: the reply to storing {} was lost ({e}), but the manifest is stored: run committed",
                    self.set,
                    store.locate(key)
                );
                Ok(())
            }
            _ => Err(anyhow::Error::from(e).context(format!(
                "committing the manifest of {}",
                store.locate(self.archive())
            ))),
        }
    }

    /// Stores the archive's per-range SHA-256s and returns what the manifest says of them.
    /// With ObjectLock: locks the completed archive (servers that ignore the lock asked for
    /// at its creation get it here), and returns the lock for the run's other objects.
    async fn lock_stored(&self) -> anyhow::Result<Option<ObjectLock>> {
        let Some(lock) = self.run_lock().await? else {
            return Ok(None);
        };
        let archive = self.archive();
        self.store.retain(archive, &lock).await.with_context(|| {
            format!("locking {}; run not committed", self.store.locate(archive))
        })?;
        log::info!(
            "{}: {} locked ({}) until {}",
            self.set,
            self.store.locate(archive),
            lock.mode,
            lock.until
        );
        Ok(Some(lock))
    }

    async fn store_range_hashes(
        &self,
        stored: &Stored,
        lock: Option<&ObjectLock>,
    ) -> anyhow::Result<RangeHashes> {
        let key = &self.ranges;
        let hashes = RangeHashes::encode(&stored.ranges);
        let ranges = RangeHashes {
            key: key.clone(),
            range_size: manifest::RANGE_SIZE,
            count: stored.ranges.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(&hashes)),
        };
        self.store
            .put_locked(key, hashes.into(), lock)
            .await
            .with_context(|| {
                format!(
                    "storing the range hashes of {}",
                    self.store.locate(self.archive())
                )
            })?;
        Ok(ranges)
    }

    /// Undoes an upload that will not be committed: aborts it, deletes whatever of its objects
    /// were stored (unless its manifest exists after all), and forgets it. What fails here stays
    /// recorded, and the next run of this configuration finishes it.
    pub async fn abort(self) {
        let Some(deleter) = self.deleter else {
            return self.abort_without_deleting().await;
        };
        match uploads::finish_one(deleter, &self.upload).await {
            Ok(_) => {
                if let Err(e) = self.records.clear(self.archive()) {
                    log::warn!("cannot forget the upload of {}: {e}", self.archive());
                }
            }
            Err(e) => log::warn!("{e}; the next run finishes the clean-up"),
        }
    }
}

impl ArchiveCommit<'_> {
    /// `PruneAfterRun no`: aborts the upload (the backup credentials may abort their own
    /// uploads) and deletes nothing. The record is forgotten only if nothing of the run is
    /// stored; otherwise it stays, and `s3nap prune` (or a run with `PruneAfterRun yes`)
    /// removes the objects it names.
    async fn abort_without_deleting(self) {
        let store = self.store;
        if let Err(e) = store.abort_upload(self.archive(), self.upload_id()).await {
            log::warn!("{e}; s3nap prune finishes the clean-up");
            return;
        }
        let upload = &self.upload;
        let mut left = Vec::new();
        for key in [&upload.manifest, &upload.archive]
            .into_iter()
            .chain(&upload.others)
        {
            match store.head(key).await {
                Ok(None) => {}
                Ok(Some(_)) => left.push(store.locate(key)),
                Err(e) => {
                    log::warn!("{e}; s3nap prune finishes the clean-up");
                    return;
                }
            }
        }
        if left.is_empty() {
            if let Err(e) = self.records.clear(self.archive()) {
                log::warn!("cannot forget the upload of {}: {e}", self.archive());
            }
        } else {
            log::warn!(
                "{}: PruneAfterRun no: {} left for s3nap prune to remove",
                self.set,
                left.join(", ")
            );
        }
    }
}

/// Aborts the uploads of `archive` other than `ours`: a create whose reply was lost (the
/// store made the upload, its id never came back, a retry made another) leaves one that no
/// record names, which the set's next runs would take for another configuration's live upload
/// until the debris grace passed. The run's key is its own (checked free just before), so any
/// other upload of it is such a stray. Best effort: what stays, prune removes after the grace.
async fn abort_strays(store: &DynStore, archive: &str, ours: Option<&String>) {
    let strays = match uploads::open_uploads(store, archive).await {
        Ok(pending) => pending.unwrap_or_default(),
        Err(e) => {
            log::warn!(
                "cannot look for stray uploads of {}: {e}",
                store.locate(archive)
            );
            return;
        }
    };
    for stray in strays
        .iter()
        .filter(|u| u.key == archive && Some(&u.upload_id) != ours)
    {
        if let Err(e) = store.abort_upload(&stray.key, &stray.upload_id).await {
            log::warn!(
                "cannot abort a stray upload of {}: {e}",
                store.locate(archive)
            );
        }
    }
}

/// Fails when an upload of `set` younger than the debris grace period (on the server's clock)
/// is open: this configuration's own interrupted uploads were finished when the run started,
/// so it belongs to another configuration backing up the same set under the same Host, which
/// would retire this one's runs (and this one its runs). Uploads of `own` (this run's archive
/// key, once its upload is created) are this run's.
async fn check_no_foreign_upload(
    store: &DynStore,
    records: &Records,
    host: &str,
    set: &str,
    own: Option<&str>,
) -> anyhow::Result<()> {
    let prefix = layout::set_prefix(host, set);
    let Some(pending) = uploads::open_uploads(store, &prefix).await? else {
        return Ok(()); // the server cannot list uploads: warned about once
    };
    // An upload of ours that could not be aborted yet is ours to finish, not a foreign one.
    let recorded: std::collections::HashSet<String> =
        records.list()?.into_iter().map(|u| u.upload_id).collect();
    let of_set = |key: &str| layout::parse_archive_key(host, key).is_some_and(|(s, _, _)| s == set);
    let pending: Vec<_> = pending
        .into_iter()
        .filter(|u| of_set(&u.key) && !recorded.contains(&u.upload_id))
        .filter(|u| own != Some(u.key.as_str()))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let server_now = store.server_time().await?;
    if let Some(live) = pending.iter().find(|u| {
        u.initiated
            .is_none_or(|t| server_now - t < prune::DEBRIS_GRACE)
    }) {
        bail!(
            "{} is being uploaded by another configuration (not recorded in this DiffDir); \
             two configurations must not back up the same set under one Host",
            store.locate(&live.key)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use chrono::TimeZone;

    use super::*;
    use crate::store::faulty::{Fault, FaultyStore, Op, Rule};
    use crate::store::memory::MemoryStore;

    const DATA: &[u8] = b"the archive's bytes";

    fn run() -> RunId {
        RunId::at(chrono::Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).unwrap())
    }

    fn keys() -> RunKeys {
        let object = |ext: &str| layout::archive_key("h", "dir/x", run(), Kind::Full, ext);
        RunKeys {
            archive: object("tar"),
            manifest: layout::manifest_key("h", "dir/x", run(), Kind::Full),
            ranges: object("sha256"),
            refs: None,
        }
    }

    /// `store` for writing and deleting both (`PruneAfterRun yes`).
    fn both(store: &DynStore) -> Stores<'_> {
        Stores {
            store,
            deleter: Some(store),
        }
    }

    /// An in-memory store behind `rules`, and the memory itself to look at.
    fn store(rules: Vec<Rule>) -> (DynStore, Arc<MemoryStore>) {
        let memory = Arc::new(MemoryStore::new());
        (Arc::new(FaultyStore::new(memory.clone(), rules)), memory)
    }

    /// What the pipeline would have produced for `DATA` in one part.
    fn stored() -> Stored {
        let digest: [u8; 32] = sha2::Sha256::digest(DATA).into();
        Stored {
            size: DATA.len() as u64,
            sha256: hex::encode(digest),
            parts: 1,
            largest_part: DATA.len() as u64,
            ranges: vec![digest],
        }
    }

    fn manifest(ranges: RangeHashes) -> Manifest {
        let mut m = manifest::sample("dir/x", run(), Kind::Full, None);
        m.archive.key = keys().archive;
        m.archive.stored_size = DATA.len() as u64;
        m.archive.ranges = Some(ranges);
        m
    }

    /// Begins the commit, uploads `DATA` as its one part, then commits.
    async fn begin_upload_commit(store: &DynStore, diff_dir: &Path) -> anyhow::Result<Manifest> {
        let keys = keys();
        let commit = ArchiveCommit::begin(
            both(store),
            diff_dir,
            "h",
            "dir/x",
            &keys,
            &UploadOptions::default(),
            None,
        )
        .await?;
        let receipt = store
            .upload_part(
                commit.archive(),
                commit.upload_id(),
                1,
                Bytes::from_static(DATA),
            )
            .await?;
        commit.commit(vec![receipt], &stored(), manifest).await
    }

    fn records(diff_dir: &Path) -> usize {
        Records::new(diff_dir).list().unwrap().len()
    }

    #[tokio::test]
    async fn a_foreign_upload_begun_after_the_first_check_fails_the_begin_and_only_ours_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _memory) = store(vec![]);
        let k = keys();
        // Another configuration's upload of the same set, of a run a second later.
        let later = RunId::at(run().0 + chrono::Duration::seconds(1));
        let theirs = layout::archive_key("h", "dir/x", later, Kind::Full, "tar");
        let foreign = store
            .create_upload(&theirs, &UploadOptions::default())
            .await
            .unwrap();
        // It stands for an upload begun between the two checks: a stale record of our
        // archive naming its id hides it from the first check only (ours replaces it).
        Records::new(dir.path())
            .record(&Upload {
                archive: k.archive.clone(),
                upload_id: foreign.clone(),
                manifest: k.manifest.clone(),
                others: vec![],
                kind: uploads::UploadKind::Run,
            })
            .unwrap();
        let err = ArchiveCommit::begin(
            both(&store),
            dir.path(),
            "h",
            "dir/x",
            &k,
            &UploadOptions::default(),
            None,
        )
        .await
        .err()
        .expect("the second check sees the other configuration's upload");
        assert!(
            err.to_string()
                .contains("is being uploaded by another configuration"),
            "{err}"
        );
        let open = store.list_uploads("h/").await.unwrap();
        assert_eq!(open.len(), 1, "ours is aborted, theirs stays: {open:?}");
        assert_eq!(open[0].upload_id, foreign);
        assert_eq!(records(dir.path()), 0);
    }

    #[tokio::test]
    async fn without_a_deleter_a_failed_commit_aborts_its_upload_deletes_nothing_and_stays_recorded(
    ) {
        let k = keys();
        // The range hashes cannot be stored: the archive is complete by then.
        let rules = vec![Rule::new(Op::Put, Fault::Permanent).key(&k.ranges)];
        let dir = tempfile::tempdir().unwrap();
        let (store, memory) = store(rules);
        let stores = Stores {
            store: &store,
            deleter: None,
        };
        let commit = ArchiveCommit::begin(
            stores,
            dir.path(),
            "h",
            "dir/x",
            &k,
            &UploadOptions::default(),
            None,
        )
        .await
        .unwrap();
        let receipt = store
            .upload_part(
                commit.archive(),
                commit.upload_id(),
                1,
                Bytes::from_static(DATA),
            )
            .await
            .unwrap();
        let err = commit
            .commit(vec![receipt], &stored(), manifest)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("range hashes"), "{err:#}");
        // Nothing was deleted: the archive stays, recorded for prune.
        assert_eq!(memory.keys(), vec![k.archive.clone()]);
        assert_eq!(records(dir.path()), 1);
        assert!(memory.open_uploads().is_empty());

        // Aborted before anything was stored: nothing is left, and the record goes.
        let dir = tempfile::tempdir().unwrap();
        let (store, memory) = self::store(vec![]);
        let stores = Stores {
            store: &store,
            deleter: None,
        };
        let commit = ArchiveCommit::begin(
            stores,
            dir.path(),
            "h",
            "dir/x",
            &k,
            &UploadOptions::default(),
            None,
        )
        .await
        .unwrap();
        commit.abort().await;
        assert!(memory.keys().is_empty());
        assert!(memory.open_uploads().is_empty());
        assert_eq!(records(dir.path()), 0);
    }

    fn run_lock() -> RunLock {
        RunLock {
            mode: LockMode::Compliance,
            retirement: Retirement::At(run().0 + chrono::Duration::days(2), "test"),
            run: run().0,
            terms: LockTerms {
                margin: chrono::Duration::seconds(30),
                max: chrono::Duration::days(3650),
            },
        }
    }

    /// Begins a locked commit in `stores`, uploads `DATA`, commits.
    async fn locked_commit(stores: Stores<'_>, diff_dir: &Path) -> anyhow::Result<Manifest> {
        let commit = ArchiveCommit::begin(
            stores,
            diff_dir,
            "h",
            "dir/x",
            &keys(),
            &UploadOptions::default(),
            Some(run_lock()),
        )
        .await?;
        let receipt = stores
            .store
            .upload_part(
                commit.archive(),
                commit.upload_id(),
                1,
                Bytes::from_static(DATA),
            )
            .await?;
        commit.commit(vec![receipt], &stored(), manifest).await
    }

    #[tokio::test]
    async fn a_locked_commit_locks_every_object_and_a_run_that_cannot_be_locked_never_commits() {
        let k = keys();
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::store::memory::ManualClock::new(chrono::Utc::now());
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()).with_object_lock());
        let store: DynStore = memory.clone();
        locked_commit(both(&store), dir.path()).await.unwrap();
        // Two days to the slot's reuse plus the margin, from the store's clock.
        let want = ObjectLock {
            mode: LockMode::Compliance,
            until: clock.now() + chrono::Duration::days(2) + chrono::Duration::seconds(30),
        };
        for key in [&k.archive, &k.ranges, &k.manifest] {
            let info = store.head(key).await.unwrap().unwrap();
            assert_eq!(info.lock, Some(want), "{key}");
        }

        // A bucket snapshot's refs, stored by its source during the run, are locked too.
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()).with_object_lock());
        let store: DynStore = memory.clone();
        let refs = layout::archive_key("h", "dir/x", run(), Kind::Full, "refs.zst");
        let with_refs = RunKeys {
            refs: Some(refs.clone()),
            ..keys()
        };
        let commit = ArchiveCommit::begin(
            both(&store),
            dir.path(),
            "h",
            "dir/x",
            &with_refs,
            &UploadOptions::default(),
            Some(run_lock()),
        )
        .await
        .unwrap();
        store.put(&refs, Bytes::from_static(b"refs")).await.unwrap();
        // The lock fixed before the manifest (quilted content got it) is every object's, by
        // however long the commit takes after.
        assert_eq!(commit.run_lock().await.unwrap(), Some(want));
        clock.advance(chrono::Duration::seconds(5));
        let receipt = store
            .upload_part(
                commit.archive(),
                commit.upload_id(),
                1,
                Bytes::from_static(DATA),
            )
            .await
            .unwrap();
        commit
            .commit(vec![receipt], &stored(), manifest)
            .await
            .unwrap();
        for key in [&refs, &k.archive, &k.manifest] {
            let info = store.head(key).await.unwrap().unwrap();
            assert_eq!(info.lock, Some(want), "{key}");
        }

        // The archive's retention cannot be set: no manifest, the run does not commit (and
        // its locked archive stays for a later prune).
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(MemoryStore::new().with_object_lock());
        let rules = vec![Rule::new(Op::Retain, Fault::Permanent)];
        let store: DynStore = Arc::new(FaultyStore::new(memory.clone(), rules));
        let err = locked_commit(both(&store), dir.path()).await.unwrap_err();
        assert!(format!("{err:#}").contains("locking"), "{err:#}");
        assert!(memory.object(&k.manifest).is_none());

        // A store that cannot lock: nothing is stored at all.
        let dir = tempfile::tempdir().unwrap();
        let (store, memory) = self::store(vec![]);
        let err = locked_commit(both(&store), dir.path()).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("does not have Object Lock enabled"),
            "{err:#}"
        );
        assert!(memory.keys().is_empty() && memory.open_uploads().is_empty());
    }

    #[tokio::test]
    async fn a_commit_stores_archive_hashes_and_manifest_and_forgets_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let (store, memory) = store(vec![]);
        let m = begin_upload_commit(&store, dir.path()).await.unwrap();
        let k = keys();
        let mut want = vec![k.archive.clone(), k.manifest.clone(), k.ranges.clone()];
        want.sort();
        assert_eq!(memory.keys(), want);
        assert_eq!(memory.object(&k.archive).unwrap(), DATA);
        assert_eq!(
            Manifest::from_json(&memory.object(&k.manifest).unwrap()).unwrap(),
            m
        );
        assert!(memory.open_uploads().is_empty());
        assert_eq!(records(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_failure_at_any_step_of_the_commit_leaves_nothing_of_the_run() {
        let k = keys();
        // The archive is looked at once before the upload starts, then after it completed.
        let steps = [
            Rule::new(Op::CompleteUpload, Fault::Permanent),
            Rule::new(Op::Head, Fault::Permanent).key(&k.archive).nth(2),
            Rule::new(Op::Put, Fault::Permanent).key(&k.ranges),
            Rule::new(Op::Put, Fault::Permanent).key(&k.manifest),
        ];
        for (i, rule) in steps.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (store, memory) = store(vec![rule]);
            let e = begin_upload_commit(&store, dir.path()).await.unwrap_err();
            assert!(format!("{e:#}").contains("injected"), "step {i}: {e:#}");
            assert!(memory.keys().is_empty(), "step {i}: {:?}", memory.keys());
            assert!(memory.open_uploads().is_empty(), "step {i}");
            assert_eq!(records(dir.path()), 0, "step {i}");
        }
    }

    #[tokio::test]
    async fn a_manifest_whose_reply_was_lost_commits_the_run() {
        // The manifest reached the store but the reply did not: the run exists, so it is
        // committed, and nothing of it may be deleted.
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        let (store, memory) = store(vec![Rule::new(Op::Put, Fault::LostReply).key(&k.manifest)]);
        let m = begin_upload_commit(&store, dir.path()).await.unwrap();
        assert_eq!(memory.keys().len(), 3, "{:?}", memory.keys());
        assert_eq!(
            Manifest::from_json(&memory.object(&k.manifest).unwrap()).unwrap(),
            m
        );
        assert_eq!(records(dir.path()), 0);
    }

    #[tokio::test]
    async fn an_existing_run_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (store, memory) = store(vec![]);
        memory.insert(
            &keys().manifest,
            Bytes::from_static(b"{}"),
            chrono::Utc::now(),
        );
        let e = begin_upload_commit(&store, dir.path()).await.unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e:#}");
        assert!(memory.open_uploads().is_empty());
        assert_eq!(memory.keys(), [keys().manifest]);
    }

    #[tokio::test]
    async fn an_abort_that_fails_stays_recorded_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let (store, memory) = store(vec![Rule::new(Op::AbortUpload, Fault::Permanent)]);
        let commit = ArchiveCommit::begin(
            both(&store),
            dir.path(),
            "h",
            "dir/x",
            &keys(),
            &UploadOptions::default(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(records(dir.path()), 1, "recorded before any part is sent");
        commit.abort().await;
        assert_eq!(records(dir.path()), 1);
        assert_eq!(memory.open_uploads(), [keys().archive]);
        // Once the store answers again, the next run finishes it.
        let store: DynStore = memory.clone();
        let finished = uploads::finish_interrupted(&store, &Records::new(dir.path())).await;
        assert_eq!(finished, [keys().archive]);
        assert!(memory.open_uploads().is_empty());
        assert_eq!(records(dir.path()), 0);
    }

    /// The keys of a run of day `day` of November 2026.
    fn keys_of(day: u32) -> RunKeys {
        let run = RunId::at(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, day, 3, 0, 0)
                .unwrap(),
        );
        let object = |ext: &str| layout::archive_key("h", "dir/x", run, Kind::Full, ext);
        RunKeys {
            archive: object("tar"),
            manifest: layout::manifest_key("h", "dir/x", run, Kind::Full),
            ranges: object("sha256"),
            refs: None,
        }
    }

    #[tokio::test]
    async fn a_create_whose_reply_was_lost_does_not_block_the_next_runs() {
        // The store made the upload but its id never came back; the retry made another. The
        // first, unrecorded, must not pass for another configuration's live upload of the set
        // (which would refuse every run of the set for the debris grace).
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(MemoryStore::new());
        let rule = Rule::new(Op::CreateUpload, Fault::LostReply).nth(1);
        let faulty: DynStore = Arc::new(FaultyStore::new(memory.clone(), [rule]));
        let policy = crate::store::retry::RetryPolicy {
            attempts: 2,
            first_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(1),
        };
        let store: DynStore = Arc::new(crate::store::retry::RetryStore::new(faulty, policy));
        begin_upload_commit(&store, dir.path()).await.unwrap();
        assert!(
            memory.open_uploads().is_empty(),
            "{:?}",
            memory.open_uploads()
        );
        let next = ArchiveCommit::begin(
            both(&store),
            dir.path(),
            "h",
            "dir/x",
            &keys_of(23),
            &UploadOptions::default(),
            None,
        )
        .await;
        assert!(next.is_ok(), "{:#}", next.err().unwrap());
        next.unwrap().abort().await;
    }

    #[tokio::test]
    async fn a_stray_of_our_own_create_that_cannot_be_aborted_is_not_a_foreign_upload() {
        // The create's reply was lost (the retry made another upload), and the stray's abort
        // fails: it is this run's archive key, so it is no other configuration's upload.
        let dir = tempfile::tempdir().unwrap();
        let memory = Arc::new(MemoryStore::new());
        let rules = [
            Rule::new(Op::CreateUpload, Fault::LostReply).nth(1),
            Rule::new(Op::AbortUpload, Fault::Permanent),
        ];
        let faulty: DynStore = Arc::new(FaultyStore::new(memory.clone(), rules));
        let policy = crate::store::retry::RetryPolicy {
            attempts: 2,
            first_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(1),
        };
        let store: DynStore = Arc::new(crate::store::retry::RetryStore::new(faulty, policy));
        let committed = begin_upload_commit(&store, dir.path()).await;
        assert!(committed.is_ok(), "{:#}", committed.err().unwrap());
        assert_eq!(memory.open_uploads(), [keys().archive], "the stray stays");
    }

    /// How a run under one fault ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Outcome {
        /// Reported committed, and the run is whole.
        Committed,
        /// Reported failed, and nothing of the run is left.
        Undone,
        /// Reported failed after its manifest was stored: the run exists, and is whole.
        Kept,
    }

    /// As a run does it: begin, send the part (aborting if that fails), commit.
    async fn attempt(store: &DynStore, diff_dir: &Path) -> anyhow::Result<Manifest> {
        let commit = ArchiveCommit::begin(
            both(store),
            diff_dir,
            "h",
            "dir/x",
            &keys(),
            &UploadOptions::default(),
            None,
        )
        .await?;
        let sent = store
            .upload_part(
                commit.archive(),
                commit.upload_id(),
                1,
                Bytes::from_static(DATA),
            )
            .await;
        match sent {
            Ok(receipt) => commit.commit(vec![receipt], &stored(), manifest).await,
            Err(e) => {
                commit.abort().await;
                Err(e.into())
            }
        }
    }

    #[tokio::test]
    async fn under_any_fault_at_any_step_a_run_commits_whole_or_leaves_nothing() {
        use Fault::*;
        use Outcome::*;
        let k = keys();
        let (arc, man, ran) = (k.archive.as_str(), k.manifest.as_str(), k.ranges.as_str());
        // Each step of the run, under each fault that outlived the store's retries: (rules,
        // outcome). A lost reply means the store did the operation.
        let mut rows: Vec<(Vec<Rule>, Outcome)> = Vec::new();
        for f in [Transient, Permanent, LostReply] {
            // The run's keys are looked at before anything is created.
            rows.push((vec![Rule::new(Op::Head, f).key(man).nth(1)], Undone));
            rows.push((vec![Rule::new(Op::Head, f).key(arc).nth(1)], Undone));
            rows.push((vec![Rule::new(Op::ListUploads, f)], Undone));
            rows.push((vec![Rule::new(Op::CreateUpload, f)], Undone));
            rows.push((vec![Rule::new(Op::UploadPart, f)], Undone));
            rows.push((vec![Rule::new(Op::CompleteUpload, f)], Undone));
            // The stored size, checked after the completion.
            rows.push((vec![Rule::new(Op::Head, f).key(arc).nth(2)], Undone));
            rows.push((vec![Rule::new(Op::Put, f).key(ran)], Undone));
            // Once the manifest is stored, the run exists: a check of the archive that fails
            // after it does not undo it (the archive was whole just before).
            rows.push((vec![Rule::new(Op::Head, f).key(arc).nth(3)], Committed));
            // A manifest PUT that failed is read back: held by the store, the run commits.
            rows.push((
                vec![
                    Rule::new(Op::Put, Transient).key(man),
                    Rule::new(Op::Get, f),
                ],
                Undone,
            ));
            rows.push((
                vec![
                    Rule::new(Op::Put, LostReply).key(man),
                    Rule::new(Op::Get, f),
                ],
                Kept,
            ));
        }
        rows.push((vec![Rule::new(Op::Put, Transient).key(man)], Undone));
        rows.push((vec![Rule::new(Op::Put, Permanent).key(man)], Undone));
        rows.push((vec![Rule::new(Op::Put, LostReply).key(man)], Committed));
        // The read-back damaged: not the manifest sent, so not taken for it.
        for f in [Truncate, FlipBit] {
            rows.push((
                vec![
                    Rule::new(Op::Put, LostReply).key(man),
                    Rule::new(Op::Get, f),
                ],
                Kept,
            ));
        }
        let earlier = keys_of(21);
        let earlier_keys = [&earlier.archive, &earlier.ranges, &earlier.manifest];
        for (rules, want) in rows {
            let row = format!("{rules:?}");
            let dir = tempfile::tempdir().unwrap();
            let (store, memory) = store(rules);
            for key in earlier_keys {
                memory.insert(key, Bytes::from(key.clone()), chrono::Utc::now());
            }
            let result = attempt(&store, dir.path()).await;
            // An earlier run is never touched.
            for key in earlier_keys {
                assert_eq!(memory.object(key).as_deref(), Some(key.as_bytes()), "{row}");
            }
            let of_run: Vec<String> = memory
                .keys()
                .into_iter()
                .filter(|key| !earlier_keys.contains(&key))
                .collect();
            let whole = memory.object(arc).as_deref() == Some(DATA)
                && memory.object(ran).is_some()
                && memory
                    .object(man)
                    .is_some_and(|m| Manifest::from_json(&m).unwrap().archive.key == k.archive);
            let got = match (&result, whole) {
                (Ok(_), true) => Committed,
                (Err(_), true) => Kept,
                (Err(_), false) if of_run.is_empty() => Undone,
                _ => panic!("{row}: {result:?} left {of_run:?}"),
            };
            assert_eq!(got, want, "{row}: {result:?}");
            assert!(memory.open_uploads().is_empty(), "{row}");
            assert_eq!(records(dir.path()), 0, "{row}: finished, forgotten");
        }
    }
}

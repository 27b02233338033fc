//! A quilted set's run: large files' content into the quilt, references into the archive.
//!
//! The tree source offers each large file ([`crate::source::quilt::Quilter`]) on its own
//! blocking thread; [`QuiltRun`] answers there, calling the store through the runtime's handle.
//! Pass 1 reads the file and hashes it: the content key follows (`QuiltSecret::content_key`).
//! A key this run has confirmed already, or that HEAD finds stored, costs nothing more (it is
//! *reused*). Otherwise pass 2 uploads the file as a multipart upload through the archive's own
//! stages (`stream::produce`: zstd → OpenPGP → parts → uploader), hashing the plaintext again:
//! a file that changed between the passes has its upload aborted and goes into the archive
//! inline, with a warning. Completion is create-only: `Exists` means another host stored the
//! same content meanwhile, which is as good (reused).
//!
//! Each content upload is recorded in DiffDir (`uploads`) like an archive upload, as a content
//! upload (`UploadKind::Content`): an interrupted run's next run only aborts it, and never
//! deletes the content object, even when it exists by then (completed before the kill, or by
//! another host meanwhile: either way a committed run may reference it). An abort that fails
//! leaves the record for the next run's clean-up; a content upload no record names (its record
//! could not be written) is aborted by `s3nap quilt gc` once stale.
//!
//! Just before the run's manifest is stored, [`QuiltRun::confirm`] HEADs every key the archive
//! references: a key gone meanwhile (gc) is uploaded again from the file, which must still hold
//! the same content; with ObjectLock, content locked for less long than the run's archive gets
//! the archive's very lock. Any store error fails the run, as an archive upload's would.
//!
//! The quilt's uploads take half of `MemoryLimit`, the archive's stream the other half: both
//! run at once (the archive's part being filled waits while a large file is uploaded). A file
//! so large that its parts outgrow that half is a problem of the run, as the archive's would be.
//!
//! Content keys cover the keys the content is encrypted to ([`crate::keys::encryption_fingerprints`],
//! the Sealer's own choice): content stored before an encryption subkey was added or rotated
//! is not reused, it is stored again for the keys valid now.
//!
//! [`claim_secret`] makes sure the bucket's quilt is keyed with this host's secret.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use futures::{StreamExt, TryStreamExt};
use sequoia_openpgp::Cert;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;

use super::commit::RunLock;
use super::stream::{over_limit, produce};
use crate::config::Config;
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::compress::Compression;
use crate::pipeline::parts::PartWriter;
use crate::pipeline::schedule::Schedule;
use crate::pipeline::upload::upload_parts;
use crate::schema::manifest;
use crate::schema::quilt::{QuiltRef, QuiltSecret, QuiltUse, SECRET_ID_KEY};
use crate::source::quilt::{Offered, Quilter};
use crate::source::{Report, Source};
use crate::store::{DynStore, ErrorKind, ObjectLock, StorageClass, UploadOptions};
use crate::uploads::{Records, Upload, UploadKind};

/// HEAD requests of the commit's check in flight at once.
const CONFIRM_AT_ONCE: usize = 16;

/// Bytes read from a file at once when hashing it.
const READ_BLOCK: usize = 1 << 20;

/// Reads the quilt secret from `QuiltKeyFile`: it must be owner-only, and no error ever
/// quotes its content.
pub fn load_secret(path: &Path) -> anyhow::Result<QuiltSecret> {
    let named = || format!("QuiltKeyFile {}", path.display());
    let meta = std::fs::metadata(path).with_context(named)?;
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{}: readable or writable by group or others (mode {:04o}); the quilt secret must \
             be owner-only: chmod 600 it",
            named(),
            meta.mode() & 0o7777
        );
    }
    let text = std::fs::read_to_string(path).with_context(named)?;
    QuiltSecret::parse(&text).with_context(named)
}

/// Makes sure the store's quilt is keyed with `secret`: reads `quilt/secret.id`; stores the
/// secret's fingerprint there (create-only) when it is absent; fails when it holds another
/// one (content keyed with another secret would never be found by the hosts sharing the
/// quilt, nor theirs by this one). Callers name their key file in the error's context.
pub async fn claim_secret(store: &DynStore, secret: &QuiltSecret) -> anyhow::Result<()> {
    let ours = secret.fingerprint();
    let stored = match store.get(SECRET_ID_KEY).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind == ErrorKind::NotFound => {
            match store.put(SECRET_ID_KEY, format!("{ours}\n").into()).await {
                Ok(()) => {
                    log::info!(
                        "{}: the quilt is now keyed with this secret",
                        store.locate(SECRET_ID_KEY)
                    );
                    return Ok(());
                }
                // Another host claimed it meanwhile: its claim is what counts.
                Err(e) if e.kind == ErrorKind::Exists => store.get(SECRET_ID_KEY).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if String::from_utf8_lossy(&stored).trim() != ours {
        bail!(
            "{} names another quilt secret than QuiltKeyFile's: this Host would key its \
             content differently from the hosts sharing the quilt; install their key file \
             (or use another bucket or prefix); nothing was stored",
            store.locate(SECRET_ID_KEY)
        );
    }
    Ok(())
}

/// What a run stores in the quilt with: the store, the secret, the recipients, the stages'
/// settings.
pub(super) struct QuiltSettings {
    pub store: DynStore,
    pub secret: QuiltSecret,
    pub certs: Arc<Vec<Cert>>,
    pub min_size: u64,
    /// The archive's compression level when it is zstd; the quilt always uses zstd.
    pub compression: Compression,
    pub chunk_size: u64,
    /// The quilt's share of MemoryLimit.
    pub memory_limit: u64,
    pub parallel_uploads: usize,
    pub records: Records,
    pub lock: Option<RunLock>,
    pub set: String,
}

impl QuiltSettings {
    pub fn new(
        config: &Config,
        set: &crate::config::SetSpec,
        store: DynStore,
        secret: QuiltSecret,
        certs: Arc<Vec<Cert>>,
        lock: Option<RunLock>,
    ) -> Self {
        QuiltSettings {
            store,
            secret,
            certs,
            min_size: set.quilt.unwrap_or(crate::schema::quilt::DEFAULT_MIN_SIZE),
            compression: match set.compression {
                z @ Compression::Zstd { .. } => z,
                _ => Compression::default(),
            },
            chunk_size: config.chunk_size,
            memory_limit: quilt_share(config.memory_limit),
            parallel_uploads: config.parallel_uploads,
            records: Records::new(&config.diff_dir),
            lock,
            set: set.name.clone(),
        }
    }
}

/// The share of MemoryLimit each of the archive's stream and the quilt's uploads may hold.
pub(super) fn quilt_share(memory_limit: u64) -> u64 {
    (memory_limit / 2).max(crate::pipeline::schedule::MIN_PART)
}

/// One content key the archive references.
#[derive(Debug)]
struct Referenced {
    sha256: [u8; 32],
    size: u64,
    /// The files found with this content, to upload it again from if it vanishes.
    paths: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Tally {
    refs: BTreeMap<String, Referenced>,
    uploaded: u64,
    uploaded_bytes: u64,
    reused: u64,
    /// What the run must report (content whose parts went over the quilt's MemoryLimit share).
    problems: Vec<String>,
}

/// One quilted set's run (see the module comment). Cloned into the source as its quilter.
#[derive(Clone)]
pub(super) struct QuiltRun {
    inner: Arc<Inner>,
}

struct Inner {
    settings: QuiltSettings,
    /// The fingerprints of the keys content is encrypted to, which content keys cover.
    recipients: Vec<String>,
    handle: Handle,
    tally: Mutex<Tally>,
}

/// Whether content `key` is stored; with `lock`, a lock of it that ends earlier is extended to
/// `lock`'s date (content outlives, locked, every run that references it).
async fn present_and_locked(
    store: &DynStore,
    key: &str,
    lock: Option<&ObjectLock>,
) -> anyhow::Result<bool> {
    let Some(info) = store.head(key).await? else {
        return Ok(false);
    };
    if let Some(lock) = lock {
        if info.lock.is_none_or(|l| l.until < lock.until) {
            store
                .retain(key, lock)
                .await
                .with_context(|| format!("extending the lock of {}", store.locate(key)))?;
        }
    }
    Ok(true)
}

/// How a content upload ended, when it did not fail.
enum Stored {
    /// This run stored it: its stored bytes.
    Uploaded(u64),
    /// Another host completed the same content first.
    Exists,
    /// The file's content is not the one expected (it changed while read).
    Changed,
}

/// The file read by the upload's stages did not hash to pass 1's SHA-256.
#[derive(Debug, thiserror::Error)]
#[error("the file changed while it was read")]
struct Changed;

impl QuiltRun {
    /// A quilt run on the current runtime.
    pub fn new(settings: QuiltSettings) -> Self {
        let recipients = crate::keys::encryption_fingerprints(&settings.certs);
        QuiltRun {
            inner: Arc::new(Inner {
                settings,
                recipients,
                handle: Handle::current(),
                tally: Mutex::new(Tally::default()),
            }),
        }
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.inner.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The run's problems so far: content uploads whose parts went over the memory limit.
    pub fn problems(&self) -> Vec<String> {
        self.tally().problems.clone()
    }

    fn remember(&self, key: &str, sha256: [u8; 32], size: u64, path: &Path) {
        self.tally()
            .refs
            .entry(key.to_string())
            .or_insert_with(|| Referenced {
                sha256,
                size,
                paths: Vec::new(),
            })
            .paths
            .push(path.to_path_buf());
    }

    /// Offers one file (on the source's thread; see [`Quilter::offer`]).
    fn offer_file(&self, file: &File, size: u64, path: &Path) -> anyhow::Result<Offered> {
        let s = &self.inner.settings;
        let sha256 = match hash_unchanged(file, size) {
            Ok(Some(sha256)) => sha256,
            Ok(None) => return Ok(Offered::Inline(Some(changed_warning()))),
            // Read inline, where the failure is reported as for any file.
            Err(_) => return Ok(Offered::Inline(None)),
        };
        let key = s.secret.content_key(&self.inner.recipients, &sha256);
        let reference = QuiltRef {
            key: key.clone(),
            size,
            sha256,
        };
        let known = self.tally().refs.contains_key(&key);
        if !known {
            let head = self.inner.handle.block_on(s.store.head(&key))?;
            if head.is_none() {
                // Locked as of now: `confirm` extends it to the run's lock, fixed later.
                let lock = match &s.lock {
                    Some(l) => Some(self.inner.handle.block_on(l.now(&s.store))?),
                    None => None,
                };
                match self.upload(file, size, &sha256, &key, lock)? {
                    Stored::Uploaded(bytes) => {
                        let mut t = self.tally();
                        t.uploaded += 1;
                        t.uploaded_bytes += bytes;
                        drop(t);
                        self.remember(&key, sha256, size, path);
                        return Ok(Offered::Quilted(reference));
                    }
                    Stored::Exists => {}
                    Stored::Changed => return Ok(Offered::Inline(Some(changed_warning()))),
                }
            }
        }
        self.tally().reused += 1;
        self.remember(&key, sha256, size, path);
        Ok(Offered::Quilted(reference))
    }

    /// Uploads `file` (`size` bytes, expected to hash to `sha256`) as the content object
    /// `key`, locked with `lock`, through the archive's stages. Blocks; called on a blocking
    /// thread.
    fn upload(
        &self,
        file: &File,
        size: u64,
        sha256: &[u8; 32],
        key: &str,
        lock: Option<ObjectLock>,
    ) -> anyhow::Result<Stored> {
        let s = &self.inner.settings;
        let handle = &self.inner.handle;
        let store = &s.store;
        let options = UploadOptions {
            // Content is shared and read by every recovery of every host: never archived.
            storage_class: StorageClass::Standard,
            lock,
        };
        let upload_id = handle.block_on(store.create_upload(key, &options))?;
        let record = content_record(key, &upload_id);
        if let Err(e) = s.records.record(&record) {
            if let Err(abort) = handle.block_on(store.abort_upload(key, &upload_id)) {
                log::warn!(
                    "cannot abort the upload of {} ({abort}); s3nap quilt gc aborts it once stale",
                    store.locate(key)
                );
            }
            bail!("cannot record the upload of {}: {e}", store.locate(key));
        }
        let outcome = self.send(file, size, sha256, key, &upload_id, lock.as_ref());
        // Unless it completed, the upload is still open (a refused completion too): aborted
        // now, or left recorded for the next run's clean-up when the abort fails.
        let mut forget = true;
        if !matches!(outcome, Ok(Stored::Uploaded(_))) {
            if let Err(abort) = handle.block_on(store.abort_upload(key, &upload_id)) {
                log::warn!(
                    "cannot abort the upload of {} ({abort}); it stays recorded, and the next \
                     run aborts it",
                    store.locate(key)
                );
                forget = false;
            }
        }
        if forget {
            if let Err(e) = s.records.clear(key) {
                log::warn!("cannot forget the upload of {}: {e}", store.locate(key));
            }
        }
        match outcome {
            Err(e) if e.downcast_ref::<Changed>().is_some() => Ok(Stored::Changed),
            other => other,
        }
    }

    /// The stages and the uploader of one content object, then its completion.
    fn send(
        &self,
        file: &File,
        size: u64,
        sha256: &[u8; 32],
        key: &str,
        upload_id: &str,
        lock: Option<&ObjectLock>,
    ) -> anyhow::Result<Stored> {
        let s = &self.inner.settings;
        let handle = &self.inner.handle;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let uploader = handle.spawn(upload_parts(
            s.store.clone(),
            key.to_string(),
            upload_id.to_string(),
            rx,
            s.parallel_uploads,
            |_| {},
        ));
        let schedule = Schedule::new(s.chunk_size, Some(size), s.memory_limit);
        let budget = MemoryBudget::new(s.memory_limit);
        let parts = PartWriter::new(tx, schedule, budget.clone(), manifest::RANGE_SIZE);
        let content = Content {
            file: file.try_clone().context("reading a file again")?,
            size,
            sha256: *sha256,
        };
        let produced = produce(
            Box::new(content),
            s.compression,
            s.certs.clone(),
            parts,
            Box::new(|_| {}),
        );
        let uploaded = handle
            .block_on(uploader)
            .map_err(|e| anyhow!("upload task failed: {e}"))?;
        let (_, _, stored) = match (produced, uploaded) {
            (Err(e), _) if e.downcast_ref::<Changed>().is_some() => return Err(e),
            (_, Err(e)) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("uploading quilt content {}", s.store.locate(key))))
            }
            (Err(e), Ok(_)) => return Err(e),
            (Ok(p), Ok(receipts)) => {
                let done = handle.block_on(s.store.complete_upload(key, upload_id, receipts));
                match done {
                    Ok(()) => p,
                    Err(e) if e.kind == ErrorKind::Exists => return Ok(Stored::Exists),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if let Some(problem) = over_limit(&stored, budget.limit()) {
            log::warn!("{}: {problem}", s.store.locate(key));
            self.tally()
                .problems
                .push(format!("quilt content {}: {problem}", s.store.locate(key)));
        }
        if let Some(lock) = lock {
            handle.block_on(s.store.retain(key, lock))?;
        }
        Ok(Stored::Uploaded(stored.size))
    }

    /// Just before the manifest: every referenced key is HEADed; one that is gone is uploaded
    /// again from its file (which must still hold that content), and with ObjectLock (`lock`:
    /// the run's own, that of its archive) content locked for less long gets that lock.
    /// Returns what the manifest records.
    pub async fn confirm(&self, lock: Option<&ObjectLock>) -> anyhow::Result<QuiltUse> {
        let s = &self.inner.settings;
        let store = &s.store;
        let keys: Vec<String> = self.tally().refs.keys().cloned().collect();
        // A run may reference thousands of objects: their HEADs (and lock extensions) go
        // several at a time, as recovery's do; what vanished is uploaded again afterwards.
        let vanished: Vec<&String> = futures::stream::iter(&keys)
            .map(|key| async move {
                let present = present_and_locked(store, key, lock).await?;
                anyhow::Ok((!present).then_some(key))
            })
            .buffered(CONFIRM_AT_ONCE)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;
        for key in vanished {
            log::warn!(
                "{}: {} vanished before the run was committed (removed by gc?); uploading it \
                 again",
                s.set,
                store.locate(key)
            );
            let this = self.clone();
            let again = key.clone();
            let run_lock = lock.copied();
            tokio::task::spawn_blocking(move || this.upload_again(&again, run_lock))
                .await
                .map_err(|e| anyhow!("quilt upload thread failed: {e}"))??;
            // Uploaded with the run's lock — or completed first by another host, with its own:
            // extended like any reused content.
            if !present_and_locked(store, key, lock).await? {
                bail!(
                    "{} vanished again right after it was uploaded: run not committed",
                    store.locate(key)
                );
            }
        }
        let t = self.tally();
        Ok(QuiltUse {
            fingerprint: s.secret.fingerprint(),
            min_size: s.min_size,
            content: keys,
            uploaded: t.uploaded,
            uploaded_bytes: t.uploaded_bytes,
            reused: t.reused,
        })
    }

    /// Uploads the content `key` again from one of the files it was found in, locked with
    /// `lock` (the run's).
    fn upload_again(&self, key: &str, lock: Option<ObjectLock>) -> anyhow::Result<()> {
        let (sha256, size, paths) = {
            let t = self.tally();
            let r = &t.refs[key];
            (r.sha256, r.size, r.paths.clone())
        };
        let store = &self.inner.settings.store;
        for path in &paths {
            let Ok(file) = File::open(path) else { continue };
            if file.metadata().map(|m| m.len()).ok() != Some(size) {
                continue;
            }
            match self.upload(&file, size, &sha256, key, lock)? {
                Stored::Uploaded(bytes) => {
                    let mut t = self.tally();
                    t.uploaded += 1;
                    t.uploaded_bytes += bytes;
                    return Ok(());
                }
                Stored::Exists => return Ok(()),
                Stored::Changed => continue,
            }
        }
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} vanished before the run was committed, and {} no longer holds the content the \
             archive references: run not committed",
            store.locate(key),
            shown.join(", ")
        )
    }
}

impl Quilter for QuiltRun {
    fn min_size(&self) -> u64 {
        self.inner.settings.min_size
    }

    fn offer(&mut self, file: &File, size: u64, path: &Path) -> anyhow::Result<Offered> {
        self.offer_file(file, size, path)
    }
}

/// The DiffDir record of a content upload: `uploads::finish_one` only aborts it, and never
/// deletes the content (another run may reference it, whoever completed it).
fn content_record(key: &str, upload_id: &str) -> Upload {
    Upload {
        archive: key.to_string(),
        upload_id: upload_id.to_string(),
        manifest: String::new(),
        others: Vec::new(),
        kind: UploadKind::Content,
    }
}

fn changed_warning() -> String {
    "file changed as we read it; archived inline instead of in the quilt".to_string()
}

/// Why [`read_hashed`] stopped before the file's end.
enum Stopped {
    Reading(io::Error),
    Writing(io::Error),
}

/// Reads `file` by position from its start to its end, writing each block to `out`: the bytes
/// read and their SHA-256. Both passes read through it.
fn read_hashed(file: &File, out: &mut dyn Write) -> Result<(u64, [u8; 32]), Stopped> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_BLOCK];
    let mut at = 0u64;
    loop {
        let n = match file.read_at(&mut buffer, at) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stopped::Reading(e)),
        };
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        out.write_all(&buffer[..n]).map_err(Stopped::Writing)?;
        at += n as u64;
    }
    Ok((at, hasher.finalize().into()))
}

/// Pass 1: the SHA-256 of the file's `size` bytes, read by position; `None` when the file
/// did not keep its size and modification time while it was read.
fn hash_unchanged(file: &File, size: u64) -> io::Result<Option<[u8; 32]>> {
    let before = file.metadata()?;
    let (at, sha256) = match read_hashed(file, &mut io::sink()) {
        Ok(read) => read,
        Err(Stopped::Reading(e) | Stopped::Writing(e)) => return Err(e),
    };
    let after = file.metadata()?;
    let same = at == size
        && after.len() == size
        && (after.mtime(), after.mtime_nsec()) == (before.mtime(), before.mtime_nsec());
    Ok(same.then_some(sha256))
}

/// Pass 2's source: the file's bytes, hashed again as they go; a different SHA-256 (or size)
/// fails the stream with [`Changed`] before its last part, so the upload never completes.
struct Content {
    file: File,
    size: u64,
    sha256: [u8; 32],
}

impl Source for Content {
    fn format(&self) -> &'static str {
        "raw"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        match read_hashed(&self.file, out) {
            Ok((at, digest)) if at == self.size && digest == self.sha256 => Ok(Report::default()),
            Ok(_) | Err(Stopped::Reading(_)) => Err(Changed.into()),
            Err(Stopped::Writing(e)) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use sequoia_openpgp::cert::CertBuilder;

    use super::*;
    use crate::schema::quilt::{is_content_key, CONTENT_PREFIX, SECRET_LEN};
    use crate::store::memory::MemoryStore;

    /// Confirms as a run does: with the lock its settings give, counted from now.
    async fn confirm(run: &QuiltRun) -> anyhow::Result<QuiltUse> {
        let s = &run.inner.settings;
        let lock = match &s.lock {
            Some(l) => Some(l.now(&s.store).await?),
            None => None,
        };
        run.confirm(lock.as_ref()).await
    }

    fn secret(b: u8) -> QuiltSecret {
        QuiltSecret::from_bytes([b; SECRET_LEN])
    }

    fn certs() -> Arc<Vec<Cert>> {
        let (cert, _) = CertBuilder::general_purpose(Some("q@example.org"))
            .generate()
            .unwrap();
        Arc::new(vec![cert])
    }

    struct Fixture {
        memory: Arc<MemoryStore>,
        store: DynStore,
        certs: Arc<Vec<Cert>>,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let memory = Arc::new(MemoryStore::new());
            Fixture {
                store: memory.clone(),
                memory,
                certs: certs(),
                dir: tempfile::tempdir().unwrap(),
            }
        }

        /// A quilt run (on the current runtime) with `secret`.
        fn run(&self, secret: QuiltSecret) -> QuiltRun {
            QuiltRun::new(QuiltSettings {
                store: self.store.clone(),
                secret,
                certs: self.certs.clone(),
                min_size: 1,
                compression: Compression::Zstd { level: 1 },
                chunk_size: 5 << 20,
                memory_limit: 16 << 20,
                parallel_uploads: 2,
                records: Records::new(self.dir.path()),
                lock: None,
                set: "dir/x".into(),
            })
        }

        fn file(&self, name: &str, data: &[u8]) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            path
        }

        fn content_keys(&self) -> Vec<String> {
            self.memory
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(CONTENT_PREFIX))
                .collect()
        }

        fn records(&self) -> usize {
            Records::new(self.dir.path()).list().unwrap().len()
        }
    }

    /// Offers the file at `path` on a blocking thread, as the source does.
    async fn offer(run: &QuiltRun, path: &Path) -> Offered {
        let (mut run, path) = (run.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let file = File::open(&path).unwrap();
            let size = file.metadata().unwrap().len();
            run.offer(&file, size, &path).unwrap()
        })
        .await
        .unwrap()
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_is_stored_once_and_reused_by_later_files_and_runs() {
        let f = Fixture::new();
        let a = f.file("a", &data(3 << 20, 1));
        let b = f.file("b", &data(3 << 20, 1));
        let run = f.run(secret(1));
        let Offered::Quilted(ra) = offer(&run, &a).await else {
            panic!("not quilted")
        };
        let Offered::Quilted(rb) = offer(&run, &b).await else {
            panic!("not quilted")
        };
        assert_eq!(ra, rb);
        assert!(is_content_key(&ra.key), "{}", ra.key);
        assert_eq!(
            ra.sha256,
            <[u8; 32]>::from(Sha256::digest(data(3 << 20, 1)))
        );
        let used = confirm(&run).await.unwrap();
        assert_eq!((used.uploaded, used.reused), (1, 1));
        assert_eq!(used.content, vec![ra.key.clone()]);
        assert_eq!(f.content_keys(), vec![ra.key.clone()]);
        // Stored: OpenPGP, of the size recorded.
        let stored = f.memory.object(&ra.key).unwrap();
        assert_eq!(used.uploaded_bytes, stored.len() as u64);
        assert!(stored[0] & 0x80 != 0, "an OpenPGP packet");
        assert_eq!(f.records(), 0, "the upload record is cleared");

        // Another run (another host with the same secret and recipients) uploads nothing:
        // it could not even start an upload.
        let refusing = crate::store::faulty::FaultyStore::new(
            f.store.clone(),
            [crate::store::faulty::Rule::new(
                crate::store::faulty::Op::CreateUpload,
                crate::store::faulty::Fault::Permanent,
            )],
        );
        let f = Fixture {
            store: Arc::new(refusing),
            ..f
        };
        let again = f.run(secret(1));
        assert!(matches!(offer(&again, &a).await, Offered::Quilted(r) if r == ra));
        let used = confirm(&again).await.unwrap();
        assert_eq!((used.uploaded, used.reused), (0, 1));
        assert_eq!(f.content_keys().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_that_changed_while_read_is_not_stored() {
        // Pass 2 reads other bytes than pass 1 hashed: the upload is aborted, nothing of it
        // stays, and the caller archives the file inline.
        let f = Fixture::new();
        let path = f.file("a", &data(6 << 20, 2));
        let run = f.run(secret(1));
        let key = secret(1).content_key(&run.inner.recipients, &[9; 32]);
        let (this, k) = (run.clone(), key.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let file = File::open(&path).unwrap();
            this.upload(&file, 6 << 20, &[9; 32], &k, None)
        })
        .await
        .unwrap()
        .unwrap();
        assert!(matches!(stored, Stored::Changed));
        assert!(f.memory.object(&key).is_none());
        assert!(f.memory.open_uploads().is_empty());
        assert_eq!(f.records(), 0);
        {
            let t = run.tally();
            assert_eq!((t.uploaded, t.reused, t.refs.len()), (0, 0, 0));
        }

        // Pass 1 itself read another size than the file had when it was opened: inline, with
        // tar's warning, and nothing asked of the store.
        let path = f.file("b", &data(1 << 20, 2));
        let no_head = crate::store::faulty::FaultyStore::new(
            f.store.clone(),
            [crate::store::faulty::Rule::new(
                crate::store::faulty::Op::Head,
                crate::store::faulty::Fault::Permanent,
            )],
        );
        let f = Fixture {
            store: Arc::new(no_head),
            ..f
        };
        let this = f.run(secret(1));
        let offered = tokio::task::spawn_blocking(move || {
            let file = File::open(&path).unwrap();
            let mut quilter = this;
            quilter.offer(&file, (1 << 20) + 1, &path).unwrap()
        })
        .await
        .unwrap();
        match offered {
            Offered::Inline(Some(w)) => assert!(w.contains("changed as we read it"), "{w}"),
            other => panic!("{other:?}"),
        }
        assert!(f.content_keys().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_gone_before_the_commit_is_uploaded_again_or_fails_the_run() {
        let f = Fixture::new();
        let path = f.file("a", &data(1 << 20, 3));
        let run = f.run(secret(1));
        let Offered::Quilted(r) = offer(&run, &path).await else {
            panic!("not quilted")
        };
        f.store.delete(&r.key).await.unwrap();
        let used = confirm(&run).await.unwrap();
        assert!(f.memory.object(&r.key).is_some(), "uploaded again");
        assert_eq!(used.uploaded, 2);

        // Gone again, and the file no longer holds that content: the run fails, naming both.
        f.store.delete(&r.key).await.unwrap();
        std::fs::write(&path, data(1 << 20, 4)).unwrap();
        let e = format!("{:#}", confirm(&run).await.unwrap_err());
        assert!(
            e.contains(&r.key) && e.contains(&path.display().to_string()),
            "{e}"
        );
        assert!(f.memory.object(&r.key).is_none());
        assert!(f.memory.open_uploads().is_empty());
    }

    #[tokio::test]
    async fn the_quilt_is_claimed_once_and_another_secret_is_refused() {
        let f = Fixture::new();
        claim_secret(&f.store, &secret(1)).await.unwrap();
        let stored = f.memory.object(SECRET_ID_KEY).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&stored).trim(),
            secret(1).fingerprint()
        );
        claim_secret(&f.store, &secret(1)).await.unwrap();
        let e = claim_secret(&f.store, &secret(2)).await.unwrap_err();
        assert!(e.to_string().contains(SECRET_ID_KEY), "{e}");
        assert_eq!(f.memory.keys(), vec![SECRET_ID_KEY.to_string()]);
    }

    #[test]
    fn a_key_file_must_be_owner_only_and_is_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quilt.key");
        std::fs::write(&path, secret(7).to_file_text()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = format!("{:#}", load_secret(&path).unwrap_err());
        assert!(
            e.contains(&path.display().to_string()) && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_secret(&path).unwrap(), secret(7));
        std::fs::write(&path, "0707 not a key\n").unwrap();
        let e = format!("{:#}", load_secret(&path).unwrap_err());
        assert!(e.contains("QuiltKeyFile") && !e.contains("0707"), "{e}");
        let missing = dir.path().join("none");
        let e = format!("{:#}", load_secret(&missing).unwrap_err());
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    #[tokio::test]
    async fn an_interrupted_content_upload_is_aborted_but_completed_content_is_kept() {
        // A content record: the next run's clean-up aborts an upload left open, and never
        // deletes content that completed (another run may reference it by then).
        let f = Fixture::new();
        let records = Records::new(f.dir.path());
        let open = "quilt/content/".to_string() + &"a".repeat(64) + ".zst.gpg";
        let done = "quilt/content/".to_string() + &"b".repeat(64) + ".zst.gpg";
        for key in [&open, &done] {
            let id = f
                .store
                .create_upload(key, &UploadOptions::default())
                .await
                .unwrap();
            records.record(&content_record(key, &id)).unwrap();
            if key == &done {
                let part = f
                    .store
                    .upload_part(key, &id, 1, bytes::Bytes::from_static(b"x"))
                    .await
                    .unwrap();
                f.store.complete_upload(key, &id, vec![part]).await.unwrap();
            }
        }
        // A record from before records had a kind: a run's, naming the content as its
        // manifest and archive. The content is never deleted all the same, even when another
        // host completes it between the clean-up's HEADs.
        let legacy = "quilt/content/".to_string() + &"c".repeat(64) + ".zst.gpg";
        let id = f
            .store
            .create_upload(&legacy, &UploadOptions::default())
            .await
            .unwrap();
        records
            .record(&Upload {
                manifest: legacy.clone(),
                kind: UploadKind::Run,
                ..content_record(&legacy, &id)
            })
            .unwrap();
        let (memory, theirs) = (f.memory.clone(), legacy.clone());
        let racing = crate::store::faulty::FaultyStore::new(
            f.store.clone(),
            [
                crate::store::faulty::Rule::pass(crate::store::faulty::Op::Head)
                    .key(legacy.clone())
                    .nth(1)
                    .then(move |_| memory.insert(&theirs, b"theirs".to_vec(), chrono::Utc::now())),
            ],
        );
        let faults = racing.faults();
        let racing: DynStore = Arc::new(racing);
        crate::uploads::finish_interrupted(&racing, &records).await;
        let deletes = faults.calls_of(crate::store::faulty::Op::Delete);
        assert!(deletes.is_empty(), "content is never deleted: {deletes:?}");
        assert!(f.memory.open_uploads().is_empty());
        assert_eq!(f.records(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reused_content_gets_at_least_the_runs_lock() {
        use crate::store::LockMode;
        let memory = Arc::new(MemoryStore::new().with_object_lock());
        let f = Fixture {
            store: memory.clone(),
            memory,
            ..Fixture::new()
        };
        let path = f.file("a", &data(1 << 20, 5));
        let locked = |days| RunLock {
            mode: LockMode::Governance,
            retirement: crate::policy::lock::Retirement::Never("test"),
            run: chrono::Utc::now(),
            terms: crate::policy::lock::LockTerms {
                margin: chrono::Duration::zero(),
                max: chrono::Duration::days(days),
            },
        };
        let with_lock = |days| {
            let mut run = f.run(secret(1));
            Arc::get_mut(&mut run.inner).unwrap().settings.lock = Some(locked(days));
            run
        };
        let first = with_lock(10);
        let Offered::Quilted(r) = offer(&first, &path).await else {
            panic!("not quilted")
        };
        confirm(&first).await.unwrap();
        let until = || {
            let (store, key) = (f.store.clone(), r.key.clone());
            async move { store.head(&key).await.unwrap().unwrap().lock.unwrap().until }
        };
        let ten = until().await;
        assert!(
            ten > chrono::Utc::now() + chrono::Duration::days(9),
            "{ten}"
        );
        // A later run that keeps its objects longer extends the reused content's lock.
        let second = with_lock(20);
        offer(&second, &path).await;
        confirm(&second).await.unwrap();
        let twenty = until().await;
        assert!(twenty > ten + chrono::Duration::days(9), "{ten} → {twenty}");

        // Referenced, gone before the commit (gc), and while this run uploads it again another
        // host completes it first, unlocked: its lock is still extended to this run's.
        let mut third = with_lock(30);
        let other = f.file("b", &data(1 << 20, 6));
        let sha256: [u8; 32] = Sha256::digest(std::fs::read(&other).unwrap()).into();
        let key = secret(1).content_key(&third.inner.recipients, &sha256);
        third.remember(&key, sha256, 1 << 20, &other);
        let (memory, theirs) = (f.memory.clone(), key.clone());
        let racing = crate::store::faulty::FaultyStore::new(
            f.store.clone(),
            [
                crate::store::faulty::Rule::pass(crate::store::faulty::Op::CreateUpload)
                    .key(key.clone())
                    .then(move |_| memory.insert(&theirs, b"theirs".to_vec(), chrono::Utc::now())),
            ],
        );
        Arc::get_mut(&mut third.inner).unwrap().settings.store = Arc::new(racing);
        confirm(&third).await.unwrap();
        assert_eq!(f.memory.object(&key).unwrap(), &b"theirs"[..]);
        let info = f.store.head(&key).await.unwrap().unwrap();
        let thirty = info.lock.expect("locked").until;
        assert!(
            thirty > twenty + chrono::Duration::days(9),
            "{twenty} → {thirty}"
        );
    }

    #[tokio::test]
    async fn content_completed_by_another_host_during_the_clean_up_is_kept() {
        // This host was killed during a content upload; while its next run cleans up, another
        // host completes the same content (and may commit a run referencing it): the clean-up
        // aborts this host's upload and deletes nothing, whatever its HEADs saw.
        let f = Fixture::new();
        let key = "quilt/content/".to_string() + &"c".repeat(64) + ".zst.gpg";
        let id = f
            .store
            .create_upload(&key, &UploadOptions::default())
            .await
            .unwrap();
        let records = Records::new(f.dir.path());
        records.record(&content_record(&key, &id)).unwrap();
        // The object appears right after the first HEAD.
        use crate::store::faulty::{FaultyStore, Op, Rule};
        let (memory, k) = (f.memory.clone(), key.clone());
        let appears = Rule::pass(Op::Head)
            .nth(1)
            .then(move |_| memory.insert(&k, &b"theirs"[..], chrono::Utc::now()));
        let racing = FaultyStore::new(f.memory.clone(), [appears]);
        let faults = racing.faults();
        let store: DynStore = Arc::new(racing);
        crate::uploads::finish_interrupted(&store, &records).await;
        assert!(f.memory.open_uploads().is_empty());
        let deletes = faults.calls_of(Op::Delete);
        assert!(
            deletes.iter().all(|c| c.key != key),
            "content is never deleted: another host's may be there by now: {deletes:?}"
        );
        assert_eq!(f.records(), 0);
        // A record written before content records had a kind is a run's.
        let old: Upload =
            serde_json::from_str(r#"{"archive":"a","upload_id":"u","manifest":"m","others":[]}"#)
                .unwrap();
        assert_eq!(old.kind, UploadKind::Run);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_that_cannot_be_aborted_stays_recorded() {
        // Another host completed the same content first: the completion is refused and the
        // upload must be aborted; when the abort fails, its record stays for the next run.
        use crate::store::faulty::{Fault, FaultyStore, Op, Rule};
        let f = Fixture::new();
        let content = data(1 << 20, 7);
        let path = f.file("a", &content);
        let no_abort = FaultyStore::new(
            f.store.clone(),
            [Rule::new(Op::AbortUpload, Fault::Permanent)],
        );
        let plain = f.store.clone();
        let f = Fixture {
            store: Arc::new(no_abort),
            ..f
        };
        let run = f.run(secret(1));
        let sha256: [u8; 32] = Sha256::digest(&content).into();
        let key = secret(1).content_key(&run.inner.recipients, &sha256);
        f.memory.insert(&key, &b"theirs"[..], chrono::Utc::now());
        let (this, k) = (run.clone(), key.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let file = File::open(&path).unwrap();
            this.upload(&file, 1 << 20, &sha256, &k, None)
        })
        .await
        .unwrap()
        .unwrap();
        assert!(matches!(stored, Stored::Exists));
        assert_eq!(f.memory.open_uploads().len(), 1);
        let left = Records::new(f.dir.path()).list().unwrap();
        assert_eq!(left.len(), 1, "the upload stays recorded");
        assert_eq!(
            (left[0].archive.as_str(), left[0].kind),
            (key.as_str(), UploadKind::Content)
        );
        // The next run's clean-up aborts it, and keeps the other host's content.
        crate::uploads::finish_interrupted(&plain, &Records::new(f.dir.path())).await;
        assert!(f.memory.open_uploads().is_empty());
        assert_eq!(f.memory.object(&key).as_deref(), Some(&b"theirs"[..]));
        assert_eq!(f.records(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_encryption_subkey_gives_new_content_keys() {
        // Content encrypted before the certificate got another encryption key (the Sealer
        // encrypts to every valid one) is not reused: it is stored again for the keys now.
        use sequoia_openpgp::cert::prelude::KeyBuilder;
        use sequoia_openpgp::types::KeyFlags;
        let f = Fixture::new();
        let path = f.file("a", &data(1 << 20, 6));
        let before = f.run(secret(1));
        let Offered::Quilted(old) = offer(&before, &path).await else {
            panic!("not quilted")
        };
        confirm(&before).await.unwrap();
        let cert = &f.certs[0];
        let valid = cert.with_policy(crate::keys::policy(), None).unwrap();
        let rotated = KeyBuilder::new(
            KeyFlags::empty()
                .set_storage_encryption()
                .set_transport_encryption(),
        )
        .subkey(valid)
        .unwrap()
        .attach_cert()
        .unwrap();
        assert_eq!(rotated.fingerprint(), cert.fingerprint());
        assert_eq!(crate::keys::encryption_keys(&rotated).count(), 2);
        let f = Fixture {
            certs: Arc::new(vec![rotated]),
            ..f
        };
        let after = f.run(secret(1));
        let Offered::Quilted(new) = offer(&after, &path).await else {
            panic!("not quilted")
        };
        assert_ne!(new.key, old.key);
        let used = confirm(&after).await.unwrap();
        assert_eq!((used.uploaded, used.reused), (1, 0));
        assert_eq!(f.content_keys().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn content_whose_parts_outgrow_the_memory_limit_is_a_problem_of_the_run() {
        // Parts of 8 MiB under a share of 6 MiB, as the archive's stream would report it.
        let f = Fixture::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..10 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let path = f.file("big", &noise);
        let mut run = f.run(secret(1));
        {
            let s = &mut Arc::get_mut(&mut run.inner).unwrap().settings;
            s.chunk_size = 8 << 20;
            s.memory_limit = 6 << 20;
        }
        let Offered::Quilted(r) = offer(&run, &path).await else {
            panic!("not quilted")
        };
        let problems = run.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(&r.key) && problems[0].contains("memory went over the limit"),
            "{problems:?}"
        );
    }
}

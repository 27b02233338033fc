//! The embedded store: a local directory (`Bucket /path` or `file:///path`).
//!
//! Key `a/b/c` is the file `ROOT/a/b/c`. Nothing appears under its final name until it is
//! complete: small objects are written to a hidden temporary name beside the target, synced,
//! then renamed. A multipart upload lives in `ROOT/.s3nap-uploads/ID/` until it is completed or
//! aborted, which is also what `list_uploads` reports after a crash.
//!
//! An upload's parts are written once, as they arrive: each part that comes in order is
//! appended to the upload's `data` file, and completing the upload syncs that file and renames
//! it to the object — no second copy of the archive. A part that arrives before its
//! predecessor (parallel uploads may race) waits in a file of its own and is appended when its
//! turn comes; a part sent again (a retry) replaces the last one appended, as S3 replaces a
//! part.
//!
//! A directory has no storage classes: an upload asked for any class but STANDARD fails (the
//! configuration refuses `StorageClass` with a local store before that), and nothing is ever
//! archived, so there is nothing to retrieve.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    ErrorKind, ObjectInfo, ObjectLock, PartReceipt, PendingUpload, Result, RetrievalTier,
    StorageClass, Store, StoreError, UploadOptions,
};

const UPLOADS: &str = ".s3nap-uploads";
/// The file an upload's in-order parts are appended to.
const DATA: &str = "data";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// The uploads this process created, by upload id: where their parts are appended.
    appending: Arc<Mutex<HashMap<String, Arc<Mutex<Appended>>>>>,
    /// Buffers of ranges read and since dropped, read into again (see [`Recycled`]).
    buffers: Buffers,
}

type Buffers = Arc<Mutex<Vec<Vec<u8>>>>;

/// Range buffers kept for reuse: a recovery's parallel GETs and the ranges queued behind them.
const KEPT_BUFFERS: usize = 8;
/// Ranges from this size on are read into kept buffers. A smaller one gets its own: it costs
/// no mapping, and it would otherwise hold a kept multi-MiB buffer as long as it lives.
const RECYCLED_FROM: usize = 1 << 20;

/// A range's bytes, whose buffer goes back to the store when the last `Bytes` of it is
/// dropped. A recovery reads range after range of the same size: a fresh multi-MiB buffer
/// each time is a fresh mapping, whose page faults and unmapping cost about a tenth of a
/// recovery's CPU time.
struct Recycled {
    data: Vec<u8>,
    buffers: Buffers,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        // A poisoned pool (a panic elsewhere) just keeps nothing: no panic inside a drop.
        let Ok(mut kept) = self.buffers.lock() else {
            return;
        };
        if kept.len() < KEPT_BUFFERS {
            let mut data = std::mem::take(&mut self.data);
            data.clear();
            kept.push(data);
        }
    }
}

/// An upload's `data` file and the parts in it: part `n` is `ends[n-2]..ends[n-1]`.
#[derive(Debug)]
struct Appended {
    file: File,
    ends: Vec<u64>,
}

impl Appended {
    fn end(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    fn next(&self) -> u32 {
        self.ends.len() as u32 + 1
    }

    /// Writes part `number` at its place: the next part is appended, the last one appended is
    /// replaced. `Ok(false)`: not its turn yet.
    fn write(&mut self, number: u32, data: &[u8]) -> io::Result<bool> {
        let at = if number == self.next() {
            self.end()
        } else if number + 1 == self.next() {
            self.ends.pop();
            self.end()
        } else if number > self.next() {
            return Ok(false);
        } else {
            return Err(io::Error::other(format!(
                "part {number} sent again after part {} was stored",
                number + 1
            )));
        };
        self.file.write_all_at(data, at)?;
        self.ends.push(at + data.len() as u64);
        Ok(true)
    }

    /// Appends the parts that were waiting in files of their own and whose turn has come.
    fn take_waiting(&mut self, dir: &Path) -> io::Result<()> {
        loop {
            let waiting = dir.join(part_name(self.next()));
            let data = match fs::read(&waiting) {
                Ok(data) => data,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            self.write(self.next(), &data)?;
            fs::remove_file(&waiting)?;
        }
    }
}

fn part_name(number: u32) -> String {
    format!("{number:05}")
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: root.into(),
            appending: Arc::default(),
            buffers: Arc::default(),
        }
    }

    fn path(&self, operation: &'static str, key: &str) -> Result<PathBuf> {
        let bad = key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c == UPLOADS);
        if bad {
            return Err(StoreError::new(
                ErrorKind::Other,
                operation,
                format!("{}/{key}", self.root.display()),
                "invalid key",
            ));
        }
        Ok(self.root.join(key))
    }

    fn upload_dir(&self, upload_id: &str) -> PathBuf {
        self.root.join(UPLOADS).join(upload_id)
    }

    /// The `data` file of an upload this process created; `None` for one it did not (its
    /// parts are kept in files of their own).
    fn appended(&self, upload_id: &str) -> Option<Arc<Mutex<Appended>>> {
        let uploads = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        uploads.get(upload_id).cloned()
    }
}

fn io_error(operation: &'static str, target: &Path, e: io::Error) -> StoreError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::Denied,
        io::ErrorKind::AlreadyExists => ErrorKind::Exists,
        io::ErrorKind::Interrupted | io::ErrorKind::TimedOut => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    StoreError::new(kind, operation, target.display().to_string(), e)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::new(ErrorKind::Other, "run", "local store", e)))
}

/// Writes `target` atomically (`crate::atomic`), so readers never see a partial object, and
/// never over an existing object (as S3's conditional writes: `If-None-Match: *`).
fn write_atomically(
    operation: &'static str,
    target: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    crate::atomic::write_new(target, fill).map_err(|e| io_error(operation, target, e))
}

/// Our own in-progress files and the upload area: never objects.
fn is_internal(name: &std::ffi::OsStr) -> bool {
    name == UPLOADS || crate::atomic::is_temporary(name)
}

/// Makes the `data` file of an upload the object `target`, once it holds exactly `parts`.
fn complete_appended(
    appended: &mut Appended,
    dir: &Path,
    parts: &[PartReceipt],
    target: &Path,
) -> Result<()> {
    let data = dir.join(DATA);
    let fail = |e: io::Error| io_error("complete upload", &data, e);
    appended.take_waiting(dir).map_err(fail)?;
    let mut start = 0;
    let mismatch = |message: String| {
        StoreError::new(
            ErrorKind::Other,
            "complete upload",
            data.display().to_string(),
            message,
        )
    };
    for (i, part) in parts.iter().enumerate() {
        let size = appended.ends.get(i).map(|end| end - start);
        if part.number as usize != i + 1
            || size.map(|s| s.to_string()).as_deref() != Some(part.etag.as_str())
        {
            return Err(mismatch(format!(
                "part {} ({} bytes) is not the part stored as number {} ({size:?} bytes)",
                part.number,
                part.etag,
                i + 1
            )));
        }
        start = appended.ends[i];
    }
    if parts.len() != appended.ends.len() {
        return Err(mismatch(format!(
            "{} parts stored, {} listed to complete",
            appended.ends.len(),
            parts.len()
        )));
    }
    // A part replaced by a shorter one leaves its tail behind the end.
    appended.file.set_len(start).map_err(fail)?;
    appended.file.sync_all().map_err(fail)?;
    if let Some(parent) = target.parent() {
        crate::atomic::create_dirs(parent).map_err(|e| io_error("complete upload", parent, e))?;
    }
    crate::atomic::rename_new(&data, target).map_err(|e| io_error("complete upload", target, e))
}

fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut Vec<ObjectInfo>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if is_internal(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let key = rel.to_string_lossy().into_owned();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            // Only descend where keys under this directory can still match the prefix.
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(root, &path, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            let meta = entry.metadata()?;
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: meta.modified().ok().map(DateTime::<Utc>::from),
                ..ObjectInfo::default()
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Store for LocalStore {
    fn locate(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    async fn put_locked(&self, key: &str, data: Bytes, lock: Option<&ObjectLock>) -> Result<()> {
        self.no_lock("put", key, lock)?;
        let path = self.path("put", key)?;
        blocking(move || write_atomically("put", &path, |f| f.write_all(&data))).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path("get", key)?;
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_error("get", &path, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path("get", key)?;
        let buffers = self.buffers.clone();
        blocking(move || {
            let len = (range.end - range.start) as usize;
            let recycled = len >= RECYCLED_FROM;
            // A kept buffer much larger than the range (one of a larger range size) is let
            // go rather than held by a small range.
            let kept = match recycled {
                // A poisoned pool (a panic elsewhere) just gives nothing, as in `Recycled`.
                true => buffers.lock().ok().and_then(|mut kept| kept.pop()),
                false => None,
            };
            let mut data = kept
                .filter(|kept| kept.capacity() <= 2 * len)
                .unwrap_or_default();
            data.reserve_exact(len);
            let mut read = || -> io::Result<()> {
                let mut file = File::open(&path)?;
                file.seek(SeekFrom::Start(range.start))?;
                file.take(len as u64).read_to_end(&mut data)?;
                Ok(())
            };
            read().map_err(|e| io_error("get", &path, e))?;
            Ok(match recycled {
                true => Bytes::from_owner(Recycled { data, buffers }),
                false => Bytes::from(data),
            })
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path("head", key)?;
        let key = key.to_string();
        blocking(move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                key,
                size: m.len(),
                modified: m.modified().ok().map(DateTime::<Utc>::from),
                ..ObjectInfo::default()
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("head", &path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &prefix, &mut out).map_err(|e| io_error("list", &root, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path("delete", key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", &path, e)),
        })
        .await
    }

    async fn create_upload(&self, key: &str, options: &UploadOptions) -> Result<String> {
        self.no_lock("create upload", key, options.lock.as_ref())?;
        self.path("create upload", key)?;
        if options.storage_class != StorageClass::Standard {
            return Err(StoreError::new(
                ErrorKind::Other,
                "create upload",
                self.locate(key),
                format!(
                    "a local directory has no storage class {}",
                    options.storage_class
                ),
            ));
        }
        let id = format!(
            "{}-{}-{:08x}",
            Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
            std::process::id(),
            rand_u32()
        );
        let dir = self.upload_dir(&id);
        let key = key.to_string();
        let appending = self.appending.clone();
        blocking(move || {
            crate::atomic::create_dirs(&dir).map_err(|e| io_error("create upload", &dir, e))?;
            let meta = dir.join("key");
            crate::atomic::create_file(&meta)
                .and_then(|mut f| f.write_all(key.as_bytes()))
                .map_err(|e| io_error("create upload", &meta, e))?;
            let data = dir.join(DATA);
            let file = crate::atomic::create_file(&data)
                .map_err(|e| io_error("create upload", &data, e))?;
            let appended = Appended {
                file,
                ends: Vec::new(),
            };
            let mut uploads = appending.lock().unwrap_or_else(|e| e.into_inner());
            uploads.insert(id.clone(), Arc::new(Mutex::new(appended)));
            Ok(id)
        })
        .await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        self.path("upload part", key)?;
        let dir = self.upload_dir(upload_id);
        let appended = self.appended(upload_id);
        blocking(move || {
            if !dir.is_dir() {
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    "upload part",
                    dir.display().to_string(),
                    "no such upload",
                ));
            }
            let write_file = || -> io::Result<()> {
                let mut f = crate::atomic::create_file(&dir.join(part_name(number)))?;
                f.write_all(&data)?;
                f.sync_data()
            };
            let write = || -> io::Result<()> {
                let Some(appended) = &appended else {
                    return write_file();
                };
                // One writer per upload at a time, held until a waiting part's file is whole:
                // a part's turn cannot pass unseen, nor a half-written part be taken.
                let mut appended = appended.lock().unwrap_or_else(|e| e.into_inner());
                if appended.write(number, &data)? {
                    appended.take_waiting(&dir)
                } else {
                    write_file()
                }
            };
            write().map_err(|e| io_error("upload part", &dir, e))?;
            Ok(PartReceipt {
                number,
                etag: format!("{}", data.len()),
            })
        })
        .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let target = self.path("complete upload", key)?;
        let dir = self.upload_dir(upload_id);
        parts.sort_by_key(|p| p.number);
        // Forgotten only once completed, so that a retried completion finds it again.
        let appended = self.appended(upload_id);
        let (appending, id) = (self.appending.clone(), upload_id.to_string());
        blocking(move || {
            match appended {
                Some(appended) => {
                    let mut appended = appended.lock().unwrap_or_else(|e| e.into_inner());
                    complete_appended(&mut appended, &dir, &parts, &target)?;
                    let mut uploads = appending.lock().unwrap_or_else(|e| e.into_inner());
                    uploads.remove(&id);
                }
                // An upload another process created: its parts are files of their own.
                None => write_atomically("complete upload", &target, |out| {
                    for part in &parts {
                        let mut f = File::open(dir.join(part_name(part.number)))?;
                        io::copy(&mut f, out)?;
                    }
                    Ok(())
                })?,
            }
            fs::remove_dir_all(&dir).map_err(|e| io_error("complete upload", &dir, e))
        })
        .await
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<()> {
        let dir = self.upload_dir(upload_id);
        {
            let mut uploads = self.appending.lock().unwrap_or_else(|e| e.into_inner());
            uploads.remove(upload_id);
        }
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("abort upload", &dir, e)),
        })
        .await
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let base = self.root.join(UPLOADS);
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            let entries = match fs::read_dir(&base) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(io_error("list uploads", &base, e)),
            };
            for entry in entries.flatten() {
                let Ok(key) = fs::read_to_string(entry.path().join("key")) else {
                    continue;
                };
                if !key.starts_with(&prefix) {
                    continue;
                }
                let initiated = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .map(DateTime::<Utc>::from);
                out.push(PendingUpload {
                    key,
                    upload_id: entry.file_name().to_string_lossy().into_owned(),
                    initiated,
                });
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    /// Nothing here is ever archived: like S3 for an object in no archive class, a refusal.
    async fn restore(&self, key: &str, _days: u32, _tier: RetrievalTier) -> Result<()> {
        let (kind, message) = match self.head(key).await? {
            Some(_) => (
                ErrorKind::Other,
                "a local directory has no archive class: nothing to retrieve",
            ),
            None => (ErrorKind::NotFound, "no such object"),
        };
        Err(StoreError::new(kind, "restore", self.locate(key), message))
    }

    /// The files' times come from this machine's clock, so that clock is the store's.
    async fn server_time(&self) -> Result<DateTime<Utc>> {
        Ok(Utc::now())
    }

    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()> {
        self.no_lock("retain", key, Some(lock))
    }

    /// Files cannot be locked: the configuration refuses ObjectLock with a local Bucket.
    async fn locks_enabled(&self) -> Result<bool> {
        Ok(false)
    }
}

impl LocalStore {
    fn no_lock(&self, operation: &'static str, key: &str, lock: Option<&ObjectLock>) -> Result<()> {
        match lock {
            None => Ok(()),
            Some(_) => Err(StoreError::new(
                ErrorKind::Other,
                operation,
                self.locate(key),
                "a local store cannot lock objects (ObjectLock needs an S3 Bucket)",
            )),
        }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::atomic::tests::names;

    #[tokio::test]
    async fn parts_in_order_are_written_once_into_the_object_and_early_ones_wait_their_turn() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::new(tmp.path());
        let id = store
            .create_upload("set/archive", &UploadOptions::default())
            .await
            .unwrap();
        let dir = store.upload_dir(&id);
        let mut receipts = Vec::new();
        for (number, byte) in [(1, b'a'), (2, b'b')] {
            let part = Bytes::from(vec![byte; 1000]);
            receipts.push(
                store
                    .upload_part("set/archive", &id, number, part)
                    .await
                    .unwrap(),
            );
        }
        // In order: appended to the object-to-be, no file per part.
        assert_eq!(names(&dir), ["data", "key"]);
        assert_eq!(fs::metadata(dir.join(DATA)).unwrap().len(), 2000);
        // Part 4 before part 3 waits in a file of its own until part 3 is stored.
        let four = Bytes::from(vec![b'd'; 10]);
        receipts.push(
            store
                .upload_part("set/archive", &id, 4, four)
                .await
                .unwrap(),
        );
        assert_eq!(names(&dir), ["00004", "data", "key"]);
        let three = Bytes::from(vec![b'c'; 5]);
        receipts.push(
            store
                .upload_part("set/archive", &id, 3, three)
                .await
                .unwrap(),
        );
        assert_eq!(names(&dir), ["data", "key"]);
        store
            .complete_upload("set/archive", &id, receipts)
            .await
            .unwrap();
        let mut want = vec![b'a'; 1000];
        want.extend([b'b'; 1000]);
        want.extend([b'c'; 5]);
        want.extend([b'd'; 10]);
        assert_eq!(fs::read(tmp.path().join("set/archive")).unwrap(), want);
        assert_eq!(names(&tmp.path().join(UPLOADS)), Vec::<String>::new());
    }

    #[tokio::test]
    async fn completing_with_other_parts_than_were_stored_fails_and_can_be_retried() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::new(tmp.path());
        let id = store
            .create_upload("set/archive", &UploadOptions::default())
            .await
            .unwrap();
        let one = store
            .upload_part("set/archive", &id, 1, Bytes::from_static(b"one"))
            .await
            .unwrap();
        store
            .upload_part("set/archive", &id, 2, Bytes::from_static(b"two"))
            .await
            .unwrap();
        let err = store
            .complete_upload("set/archive", &id, vec![one.clone()])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("2 parts stored, 1 listed"),
            "{err}"
        );
        assert!(store.head("set/archive").await.unwrap().is_none());
        // The upload is still there: completing it again, rightly, works.
        let two = PartReceipt {
            number: 2,
            etag: "3".into(),
        };
        store
            .complete_upload("set/archive", &id, vec![one, two])
            .await
            .unwrap();
        assert_eq!(fs::read(tmp.path().join("set/archive")).unwrap(), b"onetwo");
    }

    #[tokio::test]
    async fn a_range_read_into_a_reused_buffer_is_exactly_that_range() {
        const MIB: usize = 1 << 20;
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::new(tmp.path());
        let data: Vec<u8> = (0..3 * MIB as u32).map(|i| (i % 251) as u8).collect();
        store.put("obj", Bytes::from(data.clone())).await.unwrap();
        let kept = || store.buffers.lock().unwrap().len();
        // A large range, dropped: its buffer is kept, then filled with another range while an
        // earlier one is still held, and with the file's last bytes.
        let large = store.get_range("obj", 0..2 * MIB as u64).await.unwrap();
        assert_eq!(large, data[..2 * MIB]);
        drop(large);
        assert_eq!(kept(), 1, "kept for reuse");
        let held = store.get_range("obj", 7..MIB as u64 + 7).await.unwrap();
        assert_eq!(kept(), 0, "reused");
        let next = store
            .get_range("obj", MIB as u64 + 3..2 * MIB as u64 + 9)
            .await
            .unwrap();
        assert_eq!(held, data[7..MIB + 7]);
        assert_eq!(next, data[MIB + 3..2 * MIB + 9]);
        drop((held, next));
        assert_eq!(kept(), 2);
        // Past the end: what is there, no byte of an earlier range.
        let last = store
            .get_range("obj", 3 * MIB as u64 - 100..4 * MIB as u64)
            .await
            .unwrap();
        assert_eq!(last, data[3 * MIB - 100..]);
        // A small range takes no kept buffer and gives none back.
        drop(last);
        assert_eq!(kept(), 2);
        let small = store.get_range("obj", 10..20).await.unwrap();
        assert_eq!(small, data[10..20]);
        assert_eq!(kept(), 2, "the small range took no kept buffer");
        drop(small);
        assert_eq!(kept(), 2);
        // A kept buffer of more than twice a range's size is let go, not filled.
        let whole = store.get_range("obj", 0..3 * MIB as u64).await.unwrap();
        assert_eq!(whole, data);
        drop(whole);
        let one = store.get_range("obj", 0..MIB as u64).await.unwrap();
        assert_eq!(one, data[..MIB]);
        drop(one);
        let largest = store
            .buffers
            .lock()
            .unwrap()
            .iter()
            .map(Vec::capacity)
            .max();
        assert!(largest < Some(3 * MIB), "{largest:?}");
    }
}

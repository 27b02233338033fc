//! The embedded store: a local directory (`Bucket /path` or `file:///path`).
//!
//! Key `a/b/c` is the file `ROOT/a/b/c`. Nothing appears under its final name until it is
//! complete: small objects and completed uploads are written to a hidden temporary name beside
//! the target, synced, then renamed. Multipart uploads keep their parts under
//! `ROOT/.s3nap-uploads/ID/` until they are completed or aborted, which is also what
//! `list_uploads` reports after a crash.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{ErrorKind, ObjectInfo, PartReceipt, PendingUpload, Result, Store, StoreError};

const UPLOADS: &str = ".s3nap-uploads";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
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
}

fn io_error(operation: &'static str, target: &Path, e: io::Error) -> StoreError {
    let kind = match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => ErrorKind::Denied,
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

/// Writes `target` atomically (`crate::atomic`), so readers never see a partial object.
fn write_atomically(
    operation: &'static str,
    target: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    crate::atomic::write_with(target, fill).map_err(|e| io_error(operation, target, e))
}

/// Our own in-progress files and the upload area: never objects.
fn is_internal(name: &std::ffi::OsStr) -> bool {
    name == UPLOADS || crate::atomic::is_temporary(name)
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

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
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
        blocking(move || {
            let read = || -> io::Result<Vec<u8>> {
                let mut file = File::open(&path)?;
                file.seek(SeekFrom::Start(range.start))?;
                let mut buf = Vec::with_capacity((range.end - range.start) as usize);
                file.take(range.end - range.start).read_to_end(&mut buf)?;
                Ok(buf)
            };
            read()
                .map(Bytes::from)
                .map_err(|e| io_error("get", &path, e))
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

    async fn create_upload(&self, key: &str) -> Result<String> {
        self.path("create upload", key)?;
        let id = format!(
            "{}-{}-{:08x}",
            Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
            std::process::id(),
            rand_u32()
        );
        let dir = self.upload_dir(&id);
        let key = key.to_string();
        blocking(move || {
            fs::create_dir_all(&dir).map_err(|e| io_error("create upload", &dir, e))?;
            let meta = dir.join("key");
            fs::write(&meta, key.as_bytes()).map_err(|e| io_error("create upload", &meta, e))?;
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
        blocking(move || {
            if !dir.is_dir() {
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    "upload part",
                    dir.display().to_string(),
                    "no such upload",
                ));
            }
            let part = dir.join(format!("{number:05}"));
            let write = || -> io::Result<()> {
                let mut f = File::create(&part)?;
                f.write_all(&data)?;
                f.sync_data()
            };
            write().map_err(|e| io_error("upload part", &part, e))?;
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
        blocking(move || {
            write_atomically("complete upload", &target, |out| {
                for part in &parts {
                    let mut f = File::open(dir.join(format!("{:05}", part.number)))?;
                    io::copy(&mut f, out)?;
                }
                Ok(())
            })?;
            fs::remove_dir_all(&dir).map_err(|e| io_error("complete upload", &dir, e))
        })
        .await
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<()> {
        let dir = self.upload_dir(upload_id);
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

    /// The files' times come from this machine's clock, so that clock is the store's.
    async fn server_time(&self) -> Result<DateTime<Utc>> {
        Ok(Utc::now())
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    h.finish() as u32
}

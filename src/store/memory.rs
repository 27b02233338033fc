//! An in-memory store, for tests: objects and multipart uploads live in a map behind a mutex.
//!
//! It keeps the contract the real stores keep (the conformance suite in
//! tests/store_conformance.rs runs against it too): nothing is visible under a key until a put
//! or a completed upload stores it whole, listings are in key order, a short read happens only
//! at the object's end, and a completion of an upload that is gone fails as `NotFound` (as S3's
//! `NoSuchUpload` does). Times come from a clock the test may set ([`ManualClock`]), so that
//! ages — debris grace, upload age — can be tested without waiting.
//!
//! Storage classes are simulated as S3 has them: an object uploaded to (or moved by
//! [`MemoryStore::set_storage_class`] to) GLACIER or DEEP_ARCHIVE refuses reads
//! (`InvalidObjectState`) until a retrieval was requested and the test completes it
//! ([`MemoryStore::finish_retrievals`]), so that the logic above the store can be tested with a
//! retrieval that is still ongoing.
//!
//! A store made [`MemoryStore::with_object_lock`] keeps Object Lock as S3 does: a locked object
//! cannot be deleted before its date on that clock (versions are not simulated: a delete
//! removes).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{
    ErrorKind, ObjectInfo, ObjectLock, PartReceipt, PendingUpload, RestoreStatus, Result,
    RetrievalTier, StorageClass, Store, StoreError, UploadOptions,
};

/// Where the store reads the time: stamps objects and uploads, and answers `server_time`.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// A clock that stands still until the test moves it; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(now)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("not poisoned")
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().expect("not poisoned") = now;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("not poisoned") += by;
    }

    /// This clock as a store's [`Clock`].
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Arc::new(move || me.now())
    }
}

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    modified: DateTime<Utc>,
    class: StorageClass,
    restore: RestoreStatus,
    lock: Option<ObjectLock>,
}

impl Object {
    fn new(data: Bytes, modified: DateTime<Utc>) -> Self {
        Object {
            data,
            modified,
            class: StorageClass::Standard,
            restore: RestoreStatus::None,
            lock: None,
        }
    }
}

#[derive(Debug)]
struct Upload {
    key: String,
    class: StorageClass,
    initiated: DateTime<Utc>,
    parts: BTreeMap<u32, (Bytes, String)>,
    /// Applied on completion, as S3 applies the lock headers of CreateMultipartUpload.
    lock: Option<ObjectLock>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    /// By upload id.
    uploads: BTreeMap<String, Upload>,
    next_upload: u64,
    /// Every retrieval requested, in order: key, days, tier.
    restores: Vec<(String, u32, RetrievalTier)>,
}

pub struct MemoryStore {
    state: Mutex<State>,
    clock: Clock,
    object_lock: bool,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryStore")
            .field("objects", &state.objects.len())
            .field("uploads", &state.uploads.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

fn etag(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..16])
}

impl MemoryStore {
    /// An empty store on the real clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(Arc::new(Utc::now))
    }

    /// An empty store whose times come from `clock`.
    pub fn with_clock(clock: Clock) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            clock,
            object_lock: false,
        }
    }

    /// This store with Object Lock enabled, as a bucket created with it.
    pub fn with_object_lock(mut self) -> Self {
        self.object_lock = true;
        self
    }

    /// Refuses a lock on a store without Object Lock, as S3 does (InvalidRequest).
    fn check_lock(
        &self,
        operation: &'static str,
        key: &str,
        lock: Option<&ObjectLock>,
    ) -> Result<()> {
        if lock.is_some() && !self.object_lock {
            return Err(StoreError::new(
                ErrorKind::Other,
                operation,
                self.locate(key),
                "Object Lock is not enabled here",
            ));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn not_found(&self, operation: &'static str, key: &str, what: &str) -> StoreError {
        StoreError::new(ErrorKind::NotFound, operation, self.locate(key), what)
    }

    /// Stores `data` under `key` as written at `modified` (debris of long ago, say).
    pub fn insert(&self, key: &str, data: impl Into<Bytes>, modified: DateTime<Utc>) {
        let data = data.into();
        self.lock()
            .objects
            .insert(key.to_string(), Object::new(data, modified));
    }

    /// Moves the object under `key` to `class`, as a lifecycle rule would; a retrieved copy is
    /// gone with it.
    pub fn set_storage_class(&self, key: &str, class: StorageClass) {
        if let Some(o) = self.lock().objects.get_mut(key) {
            o.class = class;
            o.restore = RestoreStatus::None;
        }
    }

    /// Completes every ongoing retrieval, as the archive eventually does.
    pub fn finish_retrievals(&self) {
        for o in self.lock().objects.values_mut() {
            if o.restore == RestoreStatus::Ongoing {
                o.restore = RestoreStatus::Restored { until: None };
            }
        }
    }

    /// Every retrieval requested so far, in order: key, days, tier.
    pub fn restore_requests(&self) -> Vec<(String, u32, RetrievalTier)> {
        self.lock().restores.clone()
    }

    /// Every object key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// The bytes under `key`, if any, whatever its storage class.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.lock().objects.get(key).map(|o| o.data.clone())
    }

    /// The bytes under `key` as a GET has them: an archived object without a retrieved copy
    /// cannot be read, as S3 refuses it.
    fn readable(&self, operation: &'static str, key: &str) -> Result<Bytes> {
        let state = self.lock();
        let o = state
            .objects
            .get(key)
            .ok_or_else(|| self.not_found(operation, key, "no such object"))?;
        if Self::object_info(key, o).needs_retrieval() {
            return Err(StoreError::new(
                ErrorKind::Other,
                operation,
                self.locate(key),
                format!(
                    "InvalidObjectState: the object is in {} and has not been retrieved",
                    o.class
                ),
            ));
        }
        Ok(o.data.clone())
    }

    /// Keys of the uploads neither completed nor aborted, in key order.
    pub fn open_uploads(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .uploads
            .values()
            .map(|u| u.key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn check_key(&self, operation: &'static str, key: &str) -> Result<()> {
        if key.is_empty() || key.starts_with('/') {
            return Err(StoreError::new(
                ErrorKind::Other,
                operation,
                self.locate(key),
                "invalid key",
            ));
        }
        Ok(())
    }

    fn object_info(key: &str, o: &Object) -> ObjectInfo {
        ObjectInfo {
            key: key.to_string(),
            size: o.data.len() as u64,
            modified: Some(o.modified),
            storage_class: (o.class != StorageClass::Standard).then(|| o.class.name().to_string()),
            restore: o.restore.clone(),
            lock: o.lock,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn locate(&self, key: &str) -> String {
        format!("memory:/{key}")
    }

    async fn put_locked(&self, key: &str, data: Bytes, lock: Option<&ObjectLock>) -> Result<()> {
        self.check_key("put", key)?;
        self.check_lock("put", key, lock)?;
        let modified = (self.clock)();
        let mut state = self.lock();
        // As S3 answers s3nap's conditional PUT (`If-None-Match: *`): an object is never replaced.
        if state.objects.contains_key(key) {
            return Err(exists("put", self.locate(key)));
        }
        let mut object = Object::new(data, modified);
        object.lock = lock.copied();
        state.objects.insert(key.to_string(), object);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.readable("get", key)
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.readable("get", key)?;
        let len = data.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        Ok(data.slice(start as usize..end.max(start) as usize))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(self
            .lock()
            .objects
            .get(key)
            .map(|o| Self::object_info(key, o)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let state = self.lock();
        Ok(state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| Self::object_info(k, o))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let now = (self.clock)();
        let mut state = self.lock();
        if let Some(lock) = state.objects.get(key).and_then(|o| o.lock) {
            if lock.until > now {
                return Err(StoreError::new(
                    ErrorKind::Denied,
                    "delete",
                    self.locate(key),
                    format!("locked ({}) until {}", lock.mode, lock.until),
                ));
            }
        }
        state.objects.remove(key);
        Ok(())
    }

    async fn create_upload(&self, key: &str, options: &UploadOptions) -> Result<String> {
        self.check_key("create upload", key)?;
        self.check_lock("create upload", key, options.lock.as_ref())?;
        let initiated = (self.clock)();
        let mut state = self.lock();
        state.next_upload += 1;
        let id = format!("upload-{}", state.next_upload);
        state.uploads.insert(
            id.clone(),
            Upload {
                key: key.to_string(),
                class: options.storage_class,
                initiated,
                parts: BTreeMap::new(),
                lock: options.lock,
            },
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        let mut state = self.lock();
        let upload = state
            .uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| self.not_found("upload part", key, "no such upload"))?;
        let etag = etag(&data);
        upload.parts.insert(number, (data, etag.clone()));
        Ok(PartReceipt { number, etag })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let modified = (self.clock)();
        let mut state = self.lock();
        let upload = state
            .uploads
            .get(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| self.not_found("complete upload", key, "no such upload"))?;
        if state.objects.contains_key(key) {
            return Err(exists("complete upload", self.locate(key)));
        }
        parts.sort_by_key(|p| p.number);
        let mut data = BytesMut::new();
        for part in &parts {
            // As S3: each listed part must be there with the receipt's ETag.
            match upload.parts.get(&part.number) {
                Some((bytes, etag)) if *etag == part.etag => data.extend_from_slice(bytes),
                _ => {
                    return Err(StoreError::new(
                        ErrorKind::Other,
                        "complete upload",
                        self.locate(key),
                        format!("part {} missing or with another ETag", part.number),
                    ))
                }
            }
        }
        let class = upload.class;
        let lock = upload.lock;
        state.uploads.remove(upload_id);
        let mut object = Object::new(data.freeze(), modified);
        object.class = class;
        object.lock = lock;
        state.objects.insert(key.to_string(), object);
        Ok(())
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<()> {
        self.lock().uploads.remove(upload_id);
        Ok(())
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        let mut out: Vec<PendingUpload> = self
            .lock()
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| PendingUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn restore(&self, key: &str, days: u32, tier: RetrievalTier) -> Result<()> {
        let mut state = self.lock();
        let Some(o) = state.objects.get_mut(key) else {
            return Err(self.not_found("restore", key, "no such object"));
        };
        if !o.class.is_archive() {
            return Err(StoreError::new(
                ErrorKind::Other,
                "restore",
                self.locate(key),
                format!("InvalidObjectState: {} is no archive class", o.class),
            ));
        }
        // As S3: a request for a retrieved copy extends it, one while ongoing changes nothing.
        if o.restore == RestoreStatus::None {
            o.restore = RestoreStatus::Ongoing;
        }
        state.restores.push((key.to_string(), days, tier));
        Ok(())
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        Ok((self.clock)())
    }

    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()> {
        self.check_lock("retain", key, Some(lock))?;
        let now = (self.clock)();
        let mut state = self.lock();
        let object = state
            .objects
            .get_mut(key)
            .ok_or_else(|| self.not_found("retain", key, "no such object"))?;
        // As S3 without the bypass permission: a lock in force is extended, never shortened.
        if let Some(held) = object
            .lock
            .filter(|l| l.until > now && l.until > lock.until)
        {
            return Err(StoreError::new(
                ErrorKind::Denied,
                "retain",
                self.locate(key),
                format!("locked until {}, later than {}", held.until, lock.until),
            ));
        }
        object.lock = Some(*lock);
        Ok(())
    }

    async fn locks_enabled(&self) -> Result<bool> {
        Ok(self.object_lock)
    }
}

/// The answer to a write onto an existing key (S3's 412 Precondition Failed).
fn exists(operation: &'static str, target: String) -> StoreError {
    StoreError::new(
        ErrorKind::Exists,
        operation,
        target,
        "the object exists already and is never replaced",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn times_come_from_the_clock_it_was_given() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let clock = ManualClock::new(start);
        let store = MemoryStore::with_clock(clock.clock());
        store.put("a", Bytes::from_static(b"x")).await.unwrap();
        clock.advance(chrono::Duration::days(8));
        let id = store
            .create_upload("b", &UploadOptions::default())
            .await
            .unwrap();
        assert_eq!(
            store.head("a").await.unwrap().unwrap().modified,
            Some(start)
        );
        let uploads = store.list_uploads("").await.unwrap();
        assert_eq!(uploads[0].upload_id, id);
        assert_eq!(uploads[0].initiated, Some(clock.now()));
        assert_eq!(
            store.server_time().await.unwrap(),
            start + chrono::Duration::days(8)
        );
    }

    #[tokio::test]
    async fn a_completion_needs_every_listed_part_as_received() {
        let store = MemoryStore::new();
        let id = store
            .create_upload("k", &UploadOptions::default())
            .await
            .unwrap();
        let mut receipt = store
            .upload_part("k", &id, 1, Bytes::from_static(b"one"))
            .await
            .unwrap();
        receipt.etag = "other".into();
        let err = store
            .complete_upload("k", &id, vec![receipt])
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Other, "{err}");
        assert!(store.head("k").await.unwrap().is_none());
        // A completion of an upload that is gone is NotFound, as S3's NoSuchUpload.
        store.abort_upload("k", &id).await.unwrap();
        let gone = store.complete_upload("k", &id, vec![]).await.unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound, "{gone}");
    }
}

//! The dry run (`-t`) as a store: reads go through to the real store, every write is recorded
//! and not done. Code that plans and writes runs unchanged under it, so what `-t` shows is what
//! a real run would do, and a write that slipped into a read-only path cannot change anything.
//!
//! Writes outside the store (a bucket set's gc deleting replica versions) and messages that
//! say what was done ask [`Store::dry_run`].

use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    DynStore, ObjectInfo, ObjectLock, PartReceipt, PendingUpload, Result, RetrievalTier, Store,
    UploadOptions,
};

/// A write the dry run did not do, naming the object as the store does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(String),
    Delete(String),
    CreateUpload(String),
    UploadPart(String, u32),
    CompleteUpload(String),
    AbortUpload(String),
    /// A retrieval from an archive class (it is billed, so the dry run does not request it).
    Restore(String),
    Retain(String, ObjectLock),
}

#[derive(Debug)]
pub struct DryRunStore {
    inner: DynStore,
    writes: Mutex<Vec<Write>>,
}

impl DryRunStore {
    pub fn wrap(inner: DynStore) -> Arc<DryRunStore> {
        Arc::new(DryRunStore {
            inner,
            writes: Mutex::new(Vec::new()),
        })
    }

    /// The writes not done so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().expect("not poisoned").clone()
    }

    fn record(&self, write: Write) {
        log::debug!("dry run: not done: {write:?}");
        self.writes.lock().expect("not poisoned").push(write);
    }
}

#[async_trait]
impl Store for DryRunStore {
    fn locate(&self, key: &str) -> String {
        self.inner.locate(key)
    }

    fn dry_run(&self) -> bool {
        true
    }

    async fn put_locked(&self, key: &str, _data: Bytes, _lock: Option<&ObjectLock>) -> Result<()> {
        self.record(Write::Put(self.locate(key)));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.record(Write::Delete(self.locate(key)));
        Ok(())
    }

    async fn create_upload(&self, key: &str, _options: &UploadOptions) -> Result<String> {
        self.record(Write::CreateUpload(self.locate(key)));
        Ok("dry-run".to_string())
    }

    async fn upload_part(
        &self,
        key: &str,
        _upload_id: &str,
        number: u32,
        _data: Bytes,
    ) -> Result<PartReceipt> {
        self.record(Write::UploadPart(self.locate(key), number));
        Ok(PartReceipt {
            number,
            etag: "dry-run".to_string(),
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        _upload_id: &str,
        _parts: Vec<PartReceipt>,
    ) -> Result<()> {
        self.record(Write::CompleteUpload(self.locate(key)));
        Ok(())
    }

    async fn abort_upload(&self, key: &str, _upload_id: &str) -> Result<()> {
        self.record(Write::AbortUpload(self.locate(key)));
        Ok(())
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        self.inner.list_uploads(prefix).await
    }

    async fn restore(&self, key: &str, _days: u32, _tier: RetrievalTier) -> Result<()> {
        self.record(Write::Restore(self.locate(key)));
        Ok(())
    }

    async fn server_time(&self) -> Result<DateTime<Utc>> {
        self.inner.server_time().await
    }

    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()> {
        self.record(Write::Retain(self.locate(key), *lock));
        Ok(())
    }

    /// Read from the real store: `-t` reports a bucket without Object Lock as a run would.
    async fn locks_enabled(&self) -> Result<bool> {
        self.inner.locks_enabled().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn reads_go_through_and_writes_are_recorded_not_done() {
        let memory = Arc::new(MemoryStore::new());
        let real: DynStore = memory.clone();
        real.put("h/kept", Bytes::from_static(b"data"))
            .await
            .unwrap();
        let dry = DryRunStore::wrap(real.clone());
        assert!(dry.dry_run() && !real.dry_run());
        assert_eq!(
            dry.get("h/kept").await.unwrap(),
            Bytes::from_static(b"data")
        );
        assert_eq!(dry.list("h/").await.unwrap().len(), 1);
        dry.delete("h/kept").await.unwrap();
        dry.put("h/new", Bytes::from_static(b"x")).await.unwrap();
        let id = dry
            .create_upload("h/big", &UploadOptions::default())
            .await
            .unwrap();
        let part = dry
            .upload_part("h/big", &id, 1, Bytes::new())
            .await
            .unwrap();
        dry.complete_upload("h/big", &id, vec![part]).await.unwrap();
        // Nothing changed in the real store.
        assert_eq!(memory.keys(), ["h/kept"]);
        assert!(memory.open_uploads().is_empty());
        let at = |k: &str| real.locate(k);
        assert_eq!(
            dry.writes(),
            [
                Write::Delete(at("h/kept")),
                Write::Put(at("h/new")),
                Write::CreateUpload(at("h/big")),
                Write::UploadPart(at("h/big"), 1),
                Write::CompleteUpload(at("h/big")),
            ]
        );
    }
}

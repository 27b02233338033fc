//! Retries with exponential backoff around any store.
//!
//! Only errors of kind [`ErrorKind::Transient`] are retried; a refused credential or a missing
//! object fails at once. Each call is retried on its own, so a multipart upload that loses one
//! part to a connection reset resends that part only.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    DynStore, ErrorKind, ObjectInfo, ObjectLock, PartReceipt, PendingUpload, Result, RetrievalTier,
    Store, StoreError, UploadOptions,
};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.first_delay.saturating_mul(1 << attempt.min(16));
        exp.min(self.max_delay)
    }
}

#[derive(Debug)]
pub struct RetryStore {
    inner: DynStore,
    policy: RetryPolicy,
}

impl RetryStore {
    pub fn new(inner: DynStore, policy: RetryPolicy) -> Self {
        RetryStore { inner, policy }
    }

    async fn retry<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>> + Send,
    {
        with_retries(&self.policy, call).await
    }
}

/// Calls `call` until it succeeds, fails for good, or `policy` runs out of attempts.
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>> + Send,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if e.kind == ErrorKind::Transient && attempt + 1 < policy.attempts => {
                let delay = policy.delay(attempt);
                log::warn!(
                    "{e}; retrying in {:.1}s (attempt {} of {})",
                    delay.as_secs_f64(),
                    attempt + 2,
                    policy.attempts
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(mut e) if e.kind == ErrorKind::Transient => {
                e.message = format!("{} (gave up after {} attempts)", e.message, attempt + 1);
                return Err(e);
            }
            other => return other,
        }
    }
}

#[async_trait]
impl Store for RetryStore {
    fn locate(&self, key: &str) -> String {
        self.inner.locate(key)
    }

    fn dry_run(&self) -> bool {
        self.inner.dry_run()
    }

    async fn put_locked(&self, key: &str, data: Bytes, lock: Option<&ObjectLock>) -> Result<()> {
        let mut attempts = 0u32;
        let result = self
            .retry(|| {
                attempts += 1;
                self.inner.put_locked(key, data.clone(), lock)
            })
            .await;
        // PUTs are conditional (`If-None-Match: *`): a retry of one whose reply was lost after
        // the store took it meets the object it stored itself (412). That is success only if
        // the stored bytes are exactly ours; anything else is another writer's object.
        match result {
            Err(e) if e.kind == ErrorKind::Exists && attempts > 1 => {
                match self.retry(|| self.inner.get(key)).await {
                    Ok(stored) if stored == data => {
                        log::warn!(
                            "{e}; but the earlier attempt had stored it: {} is stored",
                            self.locate(key)
                        );
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.retry(|| self.inner.get(key)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.retry(|| self.inner.get_range(key, range.clone()))
            .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.retry(|| self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.retry(|| self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.retry(|| self.inner.delete(key)).await
    }

    async fn create_upload(&self, key: &str, options: &UploadOptions) -> Result<String> {
        self.retry(|| self.inner.create_upload(key, options)).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> Result<PartReceipt> {
        self.retry(|| self.inner.upload_part(key, upload_id, number, data.clone()))
            .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartReceipt>,
    ) -> Result<()> {
        let mut attempts = 0u32;
        let result = self
            .retry(|| {
                attempts += 1;
                self.inner.complete_upload(key, upload_id, parts.clone())
            })
            .await;
        // A reply may have been lost after the store completed the upload: every reply (S3
        // answers a repeated completion with success), or the first one, when the repeat then
        // finds the upload gone, or finds the object it made (the completion is conditional:
        // 412). Either way the object's presence decides: a run's keys never exist before its
        // upload, and its size is checked next.
        let maybe_done = |e: &StoreError| {
            e.kind == ErrorKind::Transient
                || (matches!(e.kind, ErrorKind::NotFound | ErrorKind::Exists) && attempts > 1)
        };
        match result {
            Err(e) if maybe_done(&e) => match self.retry(|| self.inner.head(key)).await {
                Ok(Some(_)) => {
                    log::warn!(
                        "{e}; but {} is stored: the upload was completed",
                        self.locate(key)
                    );
                    Ok(())
                }
                _ => Err(e),
            },
            other => other,
        }
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        self.retry(|| self.inner.abort_upload(key, upload_id)).await
    }

    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        self.retry(|| self.inner.list_uploads(prefix)).await
    }

    /// Safe to repeat: a request while the retrieval is ongoing is no error.
    async fn restore(&self, key: &str, days: u32, tier: RetrievalTier) -> Result<()> {
        self.retry(|| self.inner.restore(key, days, tier)).await
    }

    async fn server_time(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        self.retry(|| self.inner.server_time()).await
    }

    /// Setting the same retention again is harmless: a lost reply is simply repeated.
    async fn retain(&self, key: &str, lock: &ObjectLock) -> Result<()> {
        self.retry(|| self.inner.retain(key, lock)).await
    }

    async fn locks_enabled(&self) -> Result<bool> {
        self.retry(|| self.inner.locks_enabled()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::faulty::{Fault, Faults, FaultyStore, Op, Rule};
    use crate::store::memory::MemoryStore;

    /// A memory store behind `rules`, retried up to three attempts without real waits.
    fn retried(rules: Vec<Rule>) -> (RetryStore, Arc<MemoryStore>, Faults) {
        let memory = Arc::new(MemoryStore::new().with_object_lock());
        let faulty = FaultyStore::new(memory.clone(), rules);
        let faults = faulty.faults();
        let policy = RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        (RetryStore::new(Arc::new(faulty), policy), memory, faults)
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_one_attempt_succeeds() {
        let (store, memory, faults) = retried(vec![Rule::new(Op::Put, Fault::Transient).first(2)]);
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(faults.count(Op::Put), 3);
        assert_eq!(memory.object("k").as_deref(), Some(&b"v"[..]));
    }

    /// A server that lacks a call (HTTP 501) answers the same every time: asked once, and
    /// the caller decides whether it can do without it.
    #[tokio::test]
    async fn a_call_the_server_does_not_implement_is_asked_once_and_optional_for_callers() {
        let (store, _, faults) = retried(vec![Rule::new(Op::ListUploads, Fault::NotImplemented)]);
        let err = store.list_uploads("h/").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotImplemented, "{err}");
        assert_eq!(faults.count(Op::ListUploads), 1, "retried: {err}");
        assert!(err.to_string().contains("list uploads"), "{err}");
        let skipped = crate::store::optional(store.list_uploads("h/").await, "none listed");
        assert_eq!(skipped.unwrap(), None);
        // Any other failure stays one.
        let (store, _, _) = retried(vec![Rule::new(Op::ListUploads, Fault::Permanent)]);
        let failed = crate::store::optional(store.list_uploads("h/").await, "none listed");
        assert_eq!(failed.unwrap_err().kind, ErrorKind::Other);
        let (store, _, _) = retried(vec![]);
        let listed = crate::store::optional(store.list_uploads("h/").await, "none listed");
        assert_eq!(listed.unwrap(), Some(vec![]));
    }

    #[tokio::test]
    async fn a_completion_whose_every_reply_was_lost_is_found_stored() {
        // The first attempt completes the upload and its reply is lost; the others fail (as
        // when the network stays down): the object's presence decides.
        let (store, memory, _) = retried(vec![
            Rule::new(Op::CompleteUpload, Fault::LostReply).nth(1),
            Rule::new(Op::CompleteUpload, Fault::Transient),
        ]);
        let id = store
            .create_upload("k", &UploadOptions::default())
            .await
            .unwrap();
        let part = store
            .upload_part("k", &id, 1, Bytes::from_static(b"v"))
            .await
            .unwrap();
        store.complete_upload("k", &id, vec![part]).await.unwrap();
        assert_eq!(memory.object("k").as_deref(), Some(&b"v"[..]));

        // Not stored: the transient error stands.
        let (store, _, _) = retried(vec![Rule::new(Op::CompleteUpload, Fault::Transient)]);
        let id = store
            .create_upload("k", &UploadOptions::default())
            .await
            .unwrap();
        let part = store
            .upload_part("k", &id, 1, Bytes::from_static(b"v"))
            .await
            .unwrap();
        let err = store
            .complete_upload("k", &id, vec![part])
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    }

    #[tokio::test]
    async fn a_put_retried_after_its_lost_reply_is_success_only_with_our_own_bytes() {
        // The first attempt stores the object and its reply is lost; the retry meets it (412).
        let (store, memory, faults) = retried(vec![Rule::new(Op::Put, Fault::LostReply).nth(1)]);
        store.put("k", Bytes::from_static(b"ours")).await.unwrap();
        assert_eq!(faults.count(Op::Put), 2);
        assert_eq!(memory.object("k").as_deref(), Some(&b"ours"[..]));

        // Another writer's object under the key: the conflict stands, its bytes stay.
        let (store, memory, _) = retried(vec![Rule::new(Op::Put, Fault::Transient).nth(1)]);
        memory
            .put("k", Bytes::from_static(b"theirs"))
            .await
            .unwrap();
        let err = store
            .put("k", Bytes::from_static(b"ours"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Exists, "{err}");
        assert_eq!(memory.object("k").as_deref(), Some(&b"theirs"[..]));

        // On the first attempt an existing key is a conflict, whatever it holds.
        let (store, memory, _) = retried(Vec::new());
        memory.put("k", Bytes::from_static(b"ours")).await.unwrap();
        let err = store
            .put("k", Bytes::from_static(b"ours"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Exists, "{err}");
    }

    #[tokio::test]
    async fn transient_errors_are_retried_up_to_the_limit_then_reported() {
        let (store, memory, faults) = retried(vec![Rule::new(Op::Get, Fault::Transient)]);
        memory.insert("k", &b"v"[..], chrono::Utc::now());
        let err = store.get("k").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert!(err.message.contains("gave up after 3 attempts"), "{err}");
        assert_eq!(faults.count(Op::Get), 3, "the policy's attempts, no more");
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let (store, memory, faults) = retried(vec![Rule::new(Op::Delete, Fault::Permanent)]);
        memory.insert("k", &b"v"[..], chrono::Utc::now());
        let err = store.delete("k").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Other, "{err}");
        assert_eq!(faults.count(Op::Delete), 1);
        assert_eq!(memory.keys(), vec!["k"]);
        // A missing object is no passing fault either.
        let missing = store.get("none").await.unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
        assert_eq!(faults.count(Op::Get), 1);
    }

    #[tokio::test]
    async fn an_idempotent_call_whose_reply_was_lost_is_simply_repeated() {
        let (store, memory, faults) = retried(vec![Rule::new(Op::Put, Fault::LostReply).nth(1)]);
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        let puts = faults.calls_of(Op::Put);
        assert_eq!(puts.len(), 2);
        assert_eq!(puts[0].fault, Some(Fault::LostReply));
        assert_eq!(memory.object("k").as_deref(), Some(&b"v"[..]));
    }

    #[tokio::test]
    async fn a_completion_whose_reply_was_lost_succeeds_when_its_object_is_there() {
        let rules = vec![Rule::new(Op::CompleteUpload, Fault::LostReply).nth(1)];
        let (store, memory, faults) = retried(rules);
        let id = store
            .create_upload("big", &UploadOptions::default())
            .await
            .unwrap();
        let part = store
            .upload_part("big", &id, 1, Bytes::from_static(b"data"))
            .await
            .unwrap();
        store.complete_upload("big", &id, vec![part]).await.unwrap();
        // The repeat found the upload gone (NotFound); the object's presence decided.
        assert_eq!(faults.count(Op::CompleteUpload), 2);
        assert_eq!(faults.count(Op::Head), 1);
        assert_eq!(memory.object("big").as_deref(), Some(&b"data"[..]));
    }

    #[tokio::test]
    async fn a_completion_of_an_unknown_upload_still_fails() {
        let (store, _memory, faults) = retried(vec![]);
        let err = store
            .complete_upload("big", "no-such-upload", vec![])
            .await
            .unwrap_err();
        // Not mistaken for a lost reply on a first attempt: no object check, no retry.
        assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
        assert_eq!(faults.count(Op::CompleteUpload), 1);
        assert_eq!(faults.count(Op::Head), 0);
    }

    /// Calls `op` once through `store` on an object "k" (a put: on "new", since no key is
    /// replaced) and the upload `upload` of "up" (whose part 1 is `part`); `Ok` when the call
    /// succeeded.
    async fn call(store: &RetryStore, op: Op, upload: &str, part: &PartReceipt) -> Result<()> {
        let data = Bytes::from_static(b"v");
        match op {
            Op::Put => store.put("new", data).await,
            Op::Get => store.get("k").await.map(drop),
            Op::GetRange => store.get_range("k", 0..1).await.map(drop),
            Op::Head => store.head("k").await.map(drop),
            Op::List => store.list("").await.map(drop),
            Op::Delete => store.delete("k").await,
            Op::CreateUpload => store
                .create_upload("other", &UploadOptions::default())
                .await
                .map(drop),
            Op::UploadPart => store.upload_part("up", upload, 2, data).await.map(drop),
            Op::CompleteUpload => {
                store
                    .complete_upload("up", upload, vec![part.clone()])
                    .await
            }
            Op::AbortUpload => store.abort_upload("up", upload).await,
            Op::ListUploads => store.list_uploads("").await.map(drop),
            Op::ServerTime => store.server_time().await.map(drop),
            Op::Restore => store.restore("archived", 1, RetrievalTier::Bulk).await,
            Op::Retain => {
                let lock = ObjectLock {
                    mode: crate::store::LockMode::Governance,
                    until: chrono::Utc::now() + chrono::Duration::days(1),
                };
                store.retain("k", &lock).await
            }
            Op::LocksEnabled => store.locks_enabled().await.map(drop),
        }
    }

    #[tokio::test]
    async fn every_operation_is_retried_while_transient_and_reported_as_such_after_the_limit() {
        use Op::*;
        let all = Op::ALL;
        // (fault, which calls it hits, the calls the store sees, the error kind that comes out)
        let cases = [
            // Two passing faults: the third and last attempt succeeds.
            (Fault::Transient, Some(2), 3, None),
            // A fault that outlives the retries comes out as transient, after all 3 attempts.
            (Fault::Transient, None, 3, Some(ErrorKind::Transient)),
            (Fault::Permanent, None, 1, Some(ErrorKind::Other)),
            // A reply lost once: the operation happened, and its repeat is harmless.
            (Fault::LostReply, Some(1), 2, None),
        ];
        for op in all {
            for (fault, first, calls, error) in cases {
                let row = format!("{op:?} under {fault:?} (first {first:?})");
                let (store, memory, faults) = retried(vec![]);
                memory.insert("k", &b"v"[..], chrono::Utc::now());
                memory.insert("archived", &b"v"[..], chrono::Utc::now());
                memory.set_storage_class("archived", crate::store::StorageClass::Glacier);
                let upload = memory
                    .create_upload("up", &UploadOptions::default())
                    .await
                    .unwrap();
                let part = memory
                    .upload_part("up", &upload, 1, Bytes::from_static(b"part"))
                    .await
                    .unwrap();
                let rule = Rule::new(op, fault);
                faults.add(match first {
                    Some(n) => rule.first(n),
                    None => rule,
                });
                let result = call(&store, op, &upload, &part).await;
                assert_eq!(
                    result.as_ref().err().map(|e| e.kind),
                    error,
                    "{row}: {result:?}"
                );
                if error == Some(ErrorKind::Transient) {
                    let message = result.unwrap_err().message;
                    assert!(
                        message.contains("gave up after 3 attempts"),
                        "{row}: {message}"
                    );
                }
                let seen = faults.count(op);
                assert_eq!(seen, calls, "{row}: attempts");
                // The repeat of a completion whose reply was lost finds the upload gone; the
                // object, there, proves the first attempt succeeded.
                if op == CompleteUpload && fault == Fault::LostReply {
                    assert_eq!(memory.object("up").as_deref(), Some(&b"part"[..]), "{row}");
                }
                // A create whose reply was lost made an upload nobody has the id of: the retry
                // cannot know, so it is left open (the commit's begin has to see to it).
                if op == CreateUpload && fault == Fault::LostReply {
                    let other = memory.open_uploads();
                    assert_eq!(other.iter().filter(|k| *k == "other").count(), 2, "{row}");
                }
                if op == Delete && error.is_none() {
                    assert_eq!(memory.object("k"), None, "{row}: deleted");
                }
            }
        }
    }
}

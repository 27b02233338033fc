//! One conformance suite, run against every store implementation: the local directory store,
//! the S3 store talking to real S3 servers over HTTP (moto, and s3s-fs as a second, independent
//! implementation), and the in-memory store that unit tests stand on (so that what they prove
//! holds for the real stores).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use s3nap::store::local::LocalStore;
use s3nap::store::memory::MemoryStore;
use s3nap::store::retry::{RetryPolicy, RetryStore};
use s3nap::store::s3::{S3Settings, S3Store};
use s3nap::store::{
    DynStore, ErrorKind, LockMode, ObjectLock, PendingUpload, RestoreStatus, RetrievalTier,
    StorageClass, UploadOptions,
};

/// Which of the suite's calls the store's server implements (s3s-fs lacks some): a call it
/// lacks must fail as [`ErrorKind::NotImplemented`], naming itself and the server's answer, at
/// once (behind [`slow_retries`], any retry would take seconds).
#[derive(Debug, Clone, Copy)]
struct Implements {
    /// ListMultipartUploads.
    list_uploads: bool,
    /// RestoreObject (needed only for archived objects, which such a server cannot hold).
    restore: bool,
    /// AbortMultipartUpload of an upload that completed is taken as done (S3 answers 404
    /// NoSuchUpload); s3s-fs refuses it (403 AccessDenied), which `uploads::finish_one` allows
    /// for when the object is stored.
    abort_gone: bool,
}

const EVERYTHING: Implements = Implements {
    list_uploads: true,
    restore: true,
    abort_gone: true,
};

/// Asserts that `result` is the refusal of a call the server does not implement, named
/// `call` (as s3nap names it), answered at once after `started`.
fn assert_not_implemented<T: std::fmt::Debug>(
    result: Result<T, s3nap::store::StoreError>,
    call: &str,
    started: Instant,
) {
    let err = result.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotImplemented, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(call) && text.contains("NotImplemented (HTTP 501)"),
        "{text}"
    );
    assert!(started.elapsed() < SLOW_RETRY, "retried: {err}");
}

/// The uploads open under `prefix`, or `None` where the server cannot list them.
async fn open_uploads(
    store: &DynStore,
    prefix: &str,
    server: Implements,
) -> Option<Vec<PendingUpload>> {
    let started = Instant::now();
    let listed = store.list_uploads(prefix).await;
    if server.list_uploads {
        return Some(listed.unwrap());
    }
    assert_not_implemented(listed, "list uploads", started);
    None
}

/// The retry's delay in [`slow_retries`]: far longer than one request takes even on a loaded
/// machine, so the bound tells "not retried" apart without being a performance test.
const SLOW_RETRY: Duration = Duration::from_secs(60);

/// `store` behind one retry that waits exactly [`SLOW_RETRY`] (the policy has no jitter), so
/// that a call answered faster was not retried.
fn slow_retries(store: DynStore) -> DynStore {
    let policy = RetryPolicy {
        attempts: 2,
        first_delay: SLOW_RETRY,
        max_delay: SLOW_RETRY,
    };
    Arc::new(RetryStore::new(store, policy))
}

async fn conformance(store: DynStore) {
    conformance_of(store, EVERYTHING).await
}

async fn conformance_of(store: DynStore, implements: Implements) {
    // Small objects.
    store
        .put("h/set/a.json", Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();
    store
        .put("h/set/b.json", Bytes::from_static(b"bbb"))
        .await
        .unwrap();
    store
        .put("h/set/nested/c", Bytes::from_static(b"c"))
        .await
        .unwrap();
    store
        .put("h/other", Bytes::from_static(b"o"))
        .await
        .unwrap();
    assert_eq!(&store.get("h/set/a.json").await.unwrap()[..], b"{\"a\":1}");
    assert_eq!(store.head("h/set/b.json").await.unwrap().unwrap().size, 3);
    assert!(store.head("h/set/none").await.unwrap().is_none());
    let missing = store.get("h/set/none").await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert!(
        missing.to_string().contains("h/set/none"),
        "errors name the object: {missing}"
    );

    // Listing: by prefix, in key order, with sizes.
    let listed: Vec<(String, u64)> = store
        .list("h/set/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("h/set/a.json".to_string(), 7),
            ("h/set/b.json".to_string(), 3),
            ("h/set/nested/c".to_string(), 1)
        ]
    );
    assert_eq!(store.list("h/").await.unwrap().len(), 4);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    // Times: objects carry the store's write time, and the store tells its own clock (for S3,
    // the Date of its answers), so that ages are measured on one clock. The server runs on
    // this machine: both are within a minute of the local clock.
    let local = chrono::Utc::now();
    let server = store.server_time().await.unwrap();
    assert!(
        (server - local).num_seconds().abs() < 60,
        "{server} vs {local}"
    );
    let near = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.is_some_and(|t| (server - t).num_seconds().abs() < 60)
    };
    let head = store.head("h/set/b.json").await.unwrap().unwrap();
    assert!(near(head.modified), "head: {:?}", head.modified);
    for o in store.list("h/").await.unwrap() {
        assert!(near(o.modified), "list {}: {:?}", o.key, o.modified);
    }

    // Ranged reads.
    let data: Vec<u8> = (0..100u8).collect();
    store
        .put("h/range", Bytes::from(data.clone()))
        .await
        .unwrap();
    assert_eq!(
        &store.get_range("h/range", 10..20).await.unwrap()[..],
        &data[10..20]
    );
    assert_eq!(
        &store.get_range("h/range", 90..100).await.unwrap()[..],
        &data[90..]
    );

    // Multipart: parts arrive out of order; nothing is visible before completion.
    let part1 = vec![1u8; 5 * 1024 * 1024];
    let part2 = b"tail".to_vec();
    let id = store
        .create_upload("h/set/big.tar", &UploadOptions::default())
        .await
        .unwrap();
    let r2 = store
        .upload_part("h/set/big.tar", &id, 2, Bytes::from(part2.clone()))
        .await
        .unwrap();
    let r1 = store
        .upload_part("h/set/big.tar", &id, 1, Bytes::from(part1.clone()))
        .await
        .unwrap();
    assert!(
        store.head("h/set/big.tar").await.unwrap().is_none(),
        "visible before completion"
    );
    if let Some(pending) = open_uploads(&store, "h/", implements).await {
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].key, "h/set/big.tar");
        assert_eq!(pending[0].upload_id, id);
        let initiated = pending[0].initiated;
        assert!(
            initiated.is_some_and(|t| (chrono::Utc::now() - t).num_seconds().abs() < 60),
            "an upload is dated when it started: {initiated:?}"
        );
    }
    store
        .complete_upload("h/set/big.tar", &id, vec![r2, r1])
        .await
        .unwrap();
    let got = store.get("h/set/big.tar").await.unwrap();
    assert_eq!(got.len(), part1.len() + part2.len());
    assert_eq!(&got[..part1.len()], &part1[..]);
    assert_eq!(&got[part1.len()..], &part2[..]);
    if let Some(pending) = open_uploads(&store, "h/", implements).await {
        assert!(pending.is_empty(), "{pending:?}");
    }
    let gone = store.abort_upload("h/set/big.tar", &id).await;
    if implements.abort_gone {
        gone.unwrap();
    } else {
        assert_eq!(gone.unwrap_err().kind, ErrorKind::Denied);
    }
    assert_eq!(store.get("h/set/big.tar").await.unwrap().len(), got.len());

    // A part sent again (a retry after a lost reply) replaces the first copy, shorter or not.
    let id = store
        .create_upload("h/set/retried", &UploadOptions::default())
        .await
        .unwrap();
    let first = vec![9u8; 5 * 1024 * 1024 + 100];
    store
        .upload_part("h/set/retried", &id, 1, Bytes::from(first))
        .await
        .unwrap();
    let r1 = store
        .upload_part("h/set/retried", &id, 1, Bytes::from(part1.clone()))
        .await
        .unwrap();
    let r2 = store
        .upload_part("h/set/retried", &id, 2, Bytes::from(part2.clone()))
        .await
        .unwrap();
    store
        .complete_upload("h/set/retried", &id, vec![r1, r2])
        .await
        .unwrap();
    let got = store.get("h/set/retried").await.unwrap();
    assert_eq!(got.len(), part1.len() + part2.len());
    assert_eq!(&got[..part1.len()], &part1[..]);
    assert_eq!(&got[part1.len()..], &part2[..]);
    store.delete("h/set/retried").await.unwrap();

    // Abort: the object never appears and the upload is gone.
    let id = store
        .create_upload("h/set/aborted", &UploadOptions::default())
        .await
        .unwrap();
    store
        .upload_part("h/set/aborted", &id, 1, Bytes::from_static(b"x"))
        .await
        .unwrap();
    store.abort_upload("h/set/aborted", &id).await.unwrap();
    assert!(store.head("h/set/aborted").await.unwrap().is_none());
    match open_uploads(&store, "h/", implements).await {
        Some(pending) => assert!(pending.is_empty(), "{pending:?}"),
        // Unlisted, the upload is still seen gone: it takes no more parts.
        None => assert!(store
            .upload_part("h/set/aborted", &id, 2, Bytes::from_static(b"y"))
            .await
            .is_err()),
    }
    assert!(store
        .list("h/set/")
        .await
        .unwrap()
        .iter()
        .all(|o| o.key != "h/set/aborted"));

    // No key is ever replaced (conditional writes, `If-None-Match: *` on S3): a second put of
    // a key, or a completion onto it, fails as "exists" and the first bytes stay.
    let again = store
        .put("h/set/a.json", Bytes::from_static(b"other bytes"))
        .await
        .unwrap_err();
    assert_eq!(again.kind, ErrorKind::Exists, "{again}");
    assert!(again.to_string().contains("h/set/a.json"), "{again}");
    assert_eq!(&store.get("h/set/a.json").await.unwrap()[..], b"{\"a\":1}");
    let id = store
        .create_upload("h/set/big.tar", &UploadOptions::default())
        .await
        .unwrap();
    let r1 = store
        .upload_part("h/set/big.tar", &id, 1, Bytes::from_static(b"replacement"))
        .await
        .unwrap();
    let over = store
        .complete_upload("h/set/big.tar", &id, vec![r1])
        .await
        .unwrap_err();
    assert_eq!(over.kind, ErrorKind::Exists, "{over}");
    assert_eq!(
        store.get("h/set/big.tar").await.unwrap().len(),
        part1.len() + part2.len()
    );
    store.abort_upload("h/set/big.tar", &id).await.unwrap();
    if let Some(pending) = open_uploads(&store, "h/", implements).await {
        assert!(pending.is_empty(), "{pending:?}");
    }

    // Delete is idempotent.
    store.delete("h/set/b.json").await.unwrap();
    store.delete("h/set/b.json").await.unwrap();
    assert!(store.head("h/set/b.json").await.unwrap().is_none());

    // Small objects are STANDARD, and nothing needs retrieving: asking is an error.
    let info = store.head("h/set/a.json").await.unwrap().unwrap();
    assert_eq!(
        (info.storage_class, info.restore),
        (None, RestoreStatus::None)
    );
    let started = Instant::now();
    let refused = store
        .restore("h/set/a.json", 1, RetrievalTier::Standard)
        .await;
    if !implements.restore {
        assert_not_implemented(refused, "restore", started);
        return;
    }
    let refused = refused.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Other, "{refused}");
    assert!(refused.to_string().contains("h/set/a.json"), "{refused}");
    let missing = store
        .restore("h/set/none", 1, RetrievalTier::Standard)
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
}

/// A store with storage classes: an upload made in `class` reports it on HEAD, and, for an
/// archive class, refuses reads until a retrieval requested and completed (`complete` does it
/// where the store does not at once) makes a copy readable.
async fn storage_classes(store: DynStore, complete: impl Fn()) {
    for class in [StorageClass::StandardIa, StorageClass::Glacier] {
        let key = format!("h/set/{class}");
        let options = UploadOptions {
            storage_class: class,
            ..UploadOptions::default()
        };
        let id = store.create_upload(&key, &options).await.unwrap();
        let part = store
            .upload_part(&key, &id, 1, Bytes::from_static(b"archived"))
            .await
            .unwrap();
        store.complete_upload(&key, &id, vec![part]).await.unwrap();
        let info = store.head(&key).await.unwrap().unwrap();
        assert_eq!(info.storage_class.as_deref(), Some(class.name()));
        assert_eq!(info.restore, RestoreStatus::None);
        assert_eq!(info.needs_retrieval(), class.is_archive(), "{class}");
        let listed = store.list(&key).await.unwrap();
        assert_eq!(listed[0].storage_class.as_deref(), Some(class.name()));
        if !class.is_archive() {
            assert_eq!(&store.get(&key).await.unwrap()[..], b"archived");
            continue;
        }
        let refused = store.get_range(&key, 0..4).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Other, "{refused}");
        assert!(refused.message.contains("InvalidObjectState"), "{refused}");
        store
            .restore(&key, 1, RetrievalTier::Standard)
            .await
            .unwrap();
        complete();
        let info = store.head(&key).await.unwrap().unwrap();
        assert!(
            matches!(info.restore, RestoreStatus::Restored { .. }),
            "{info:?}"
        );
        assert!(!info.needs_retrieval());
        assert_eq!(&store.get_range(&key, 0..4).await.unwrap()[..], b"arch");
        // Asked again once done: no error (S3 extends the copy).
        store.restore(&key, 2, RetrievalTier::Bulk).await.unwrap();
        store.delete(&key).await.unwrap();
    }
}

/// Object Lock: a store that can lock keeps the lock given on a put and on an upload (after
/// `retain`, which S3 servers that ignore the upload's lock need), reports it by `head`,
/// refuses to delete a locked object and lets a lock be extended; one that cannot says so and
/// refuses a lock rather than storing the object unlocked.
async fn lock_conformance(store: DynStore, can_lock: bool) {
    assert_eq!(store.locks_enabled().await.unwrap(), can_lock);
    let now = store.server_time().await.unwrap();
    let lock = ObjectLock {
        mode: LockMode::Governance,
        until: chrono::DateTime::from_timestamp(now.timestamp() + 3600, 0).unwrap(),
    };
    let put = store
        .put_locked("h/lock/m.json", Bytes::from_static(b"{}"), Some(&lock))
        .await;
    if !can_lock {
        assert!(
            put.is_err(),
            "a lock was accepted by a store that cannot lock"
        );
        assert!(store.head("h/lock/m.json").await.unwrap().is_none());
        return;
    }
    put.unwrap();
    let info = store.head("h/lock/m.json").await.unwrap().unwrap();
    assert_eq!(info.lock, Some(lock));
    let refused = store.delete("h/lock/m.json").await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Denied, "{refused}");
    assert!(store.head("h/lock/m.json").await.unwrap().is_some());

    let id = store
        .create_upload(
            "h/lock/a.tar",
            &UploadOptions {
                lock: Some(lock),
                ..UploadOptions::default()
            },
        )
        .await
        .unwrap();
    let part = store
        .upload_part("h/lock/a.tar", &id, 1, Bytes::from_static(b"archive"))
        .await
        .unwrap();
    store
        .complete_upload("h/lock/a.tar", &id, vec![part])
        .await
        .unwrap();
    let longer = ObjectLock {
        until: lock.until + chrono::Duration::hours(1),
        ..lock
    };
    store.retain("h/lock/a.tar", &longer).await.unwrap();
    let info = store.head("h/lock/a.tar").await.unwrap().unwrap();
    assert_eq!(info.lock, Some(longer));
    assert_eq!(store.get("h/lock/a.tar").await.unwrap(), &b"archive"[..]);
    assert!(store.delete("h/lock/a.tar").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn local_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(LocalStore::new(dir.path().join("store")));
    conformance(store.clone()).await;
    // A directory has no storage classes: refused before anything is written.
    let glacier = UploadOptions {
        storage_class: StorageClass::Glacier,
        ..UploadOptions::default()
    };
    let refused = store.create_upload("h/set/g", &glacier).await.unwrap_err();
    assert!(
        refused.message.contains("no storage class GLACIER"),
        "{refused}"
    );
    assert!(store.list_uploads("h/").await.unwrap().is_empty());
    lock_conformance(Arc::new(LocalStore::new(dir.path().join("store"))), false).await;
    // No temporary or upload debris is left under the store root.
    let leftovers: Vec<_> = walk(&dir.path().join("store"))
        .into_iter()
        .filter(|p| p.contains(".tmp-") || p.contains(".s3nap-uploads/"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_store() {
    let store = Arc::new(MemoryStore::new());
    conformance(store.clone()).await;
    storage_classes(store.clone(), || store.finish_retrievals()).await;
    assert!(store.open_uploads().is_empty());
    assert!(store.keys().iter().all(|k| k.starts_with("h/")));
    lock_conformance(Arc::new(MemoryStore::new()), false).await;
    let locking = Arc::new(MemoryStore::new().with_object_lock());
    conformance(locking.clone()).await;
    lock_conformance(locking, true).await;
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

/// The S3 store's settings for `server`, its key file written into `dir`.
fn settings(server: &common::S3Server, dir: &std::path::Path) -> S3Settings {
    S3Settings {
        endpoint: Some(server.endpoint.clone()),
        region: None,
        keyfile: Some(server.keyfile(dir)),
        timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

#[test]
fn s3_store_against_a_real_server() {
    let server = common::S3Server::start();
    server.create_bucket("conformance");
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path());
    server.block_on(async {
        let store = S3Store::connect("conformance", "some/prefix", &settings)
            .await
            .unwrap();
        let store: DynStore = Arc::new(store);
        conformance(store.clone()).await;
        // moto completes a retrieval the moment it is requested.
        storage_classes(store, || ()).await;
    });
    // Everything went under the prefix.
    assert!(server
        .keys("conformance")
        .iter()
        .all(|k| k.starts_with("some/prefix/h/")));
}

/// The S3 store against s3s-fs, a second S3 implementation (independent of moto: a client
/// bug and an emulator bug could agree), through retries as runs use it. s3s-fs lacks
/// ListMultipartUploads, GetBucketVersioning and Object Lock: each answers 501 NotImplemented,
/// which fails at once, naming the call (callers that can do without it go on; see
/// tests/second_server.rs), and so does RestoreObject; storage classes are not compared (s3s-fs
/// ignores them on uploads, and reports none).
#[test]
fn s3_store_against_a_second_server_s3s_fs() {
    let server = common::S3Server::start_s3s_fs();
    server.create_bucket("conformance");
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path());
    server.block_on(async {
        let s3 = S3Store::connect("conformance", "some/prefix", &settings)
            .await
            .unwrap();
        let started = Instant::now();
        assert_not_implemented(s3.keeps_versions().await, "get versioning", started);
        let store = slow_retries(Arc::new(s3));
        let lacking = Implements {
            list_uploads: false,
            restore: false,
            abort_gone: false,
        };
        conformance_of(store.clone(), lacking).await;
        let started = Instant::now();
        let lock = store.locks_enabled().await;
        assert_not_implemented(lock, "read the Object Lock configuration", started);
    });
    assert!(server
        .keys("conformance")
        .iter()
        .all(|k| k.starts_with("some/prefix/h/")));
}

/// The S3 store on a bucket with Object Lock (versioned): the same contract — deletions by
/// version id leave nothing behind, so a deleted key is gone and may be written again — and
/// locks, and a bucket without Object Lock says so.
#[test]
fn s3_store_on_a_bucket_with_object_lock() {
    let server = common::S3Server::start();
    server
        .block_on(
            server
                .client
                .create_bucket()
                .bucket("locked")
                .object_lock_enabled_for_bucket(true)
                .send(),
        )
        .unwrap();
    server.create_bucket("plain");
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(&server, dir.path());
    server.block_on(async {
        let store = S3Store::connect("locked", "p", &settings).await.unwrap();
        let store: DynStore = Arc::new(store.versioned());
        conformance(store.clone()).await;
        lock_conformance(store, true).await;
        let plain = S3Store::connect("plain", "p", &settings).await.unwrap();
        lock_conformance(Arc::new(plain), false).await;
    });
    // Deleted keys left no version or delete marker behind: only the locked objects stay.
    let versions = server
        .block_on(server.client.list_object_versions().bucket("locked").send())
        .unwrap();
    assert!(versions.delete_markers().is_empty());
    let mut left: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
    left.sort();
    let current = server.keys("locked");
    assert_eq!(left.len(), current.len(), "{left:?} vs {current:?}");
    assert!(left.contains(&"p/h/lock/a.tar") && left.contains(&"p/h/lock/m.json"));
}

/// The fixture the other tests count objects with sees every key, not the first page's 1,000.
#[test]
fn the_test_servers_key_listing_reads_every_page() {
    use futures::stream::{self, StreamExt};
    let server = common::S3Server::start();
    server.create_bucket("many");
    let mut want: Vec<String> = (0..1001).map(|i| format!("k{i:04}")).collect();
    let results: Vec<_> = server.block_on(
        stream::iter(want.clone())
            .map(|key| {
                server
                    .client
                    .put_object()
                    .bucket("many")
                    .key(key)
                    .body(b"x".to_vec().into())
                    .send()
            })
            .buffer_unordered(16)
            .collect(),
    );
    assert!(results.iter().all(Result::is_ok));
    let mut got = server.keys("many");
    got.sort();
    want.sort();
    assert_eq!(got.len(), 1001);
    assert_eq!(got, want);
}

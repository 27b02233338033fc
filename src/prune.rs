//! Prune: retention's verdicts in, deletions out — and the debris of interrupted runs.
//!
//! A run is retired manifest first: once its manifest is gone it is no longer a run (never
//! listed, never recovered), so a deletion that stops half-way leaves debris, never a broken
//! run. Debris — archives without a manifest, multipart uploads left open — is removed here
//! too: what this configuration's own interrupted runs left is known exactly (see
//! [`crate::uploads`]) and finished at once; anything else under the host's prefix may belong
//! to a live run of another configuration, so it is removed only once it is older than
//! [`DEBRIS_GRACE`] on the server's clock (the clock that stamped it).

use chrono::{DateTime, Duration, Utc};

use crate::policy::retention::Verdict;
use crate::schema::layout;
use crate::schema::manifest::Manifest;
use crate::store::{DynStore, ErrorKind, StoreError};
use crate::uploads::{Records, Upload};

/// Uploads and manifest-less archives younger than this may belong to a live run of another
/// configuration. Long, because S3 dates a multipart object (and its upload) from the moment
/// the upload *started*: a run that reads for days must still find its archive when it commits.
pub const DEBRIS_GRACE: Duration = Duration::days(7);

/// Deletes the runs `verdicts` retire (through a dry-run store: records it); returns them.
/// Newest first, so that a DIFF never outlives its base, even when a deletion fails or the
/// process is killed; each retirement is recorded in `records` before its manifest goes, so
/// that an interrupted one is finished by the next run or prune (see [`crate::uploads`]).
pub async fn retire<'a>(
    store: &DynStore,
    records: &Records,
    runs: &'a [Manifest],
    verdicts: &[Verdict],
) -> Result<Vec<&'a Manifest>, StoreError> {
    let mut retired = Vec::new();
    let mut retiring: Vec<(&Verdict, &Manifest)> = verdicts
        .iter()
        .filter(|v| !v.keep)
        // The planned run itself is never retired by its own plan.
        .filter_map(|v| runs.iter().find(|m| m.run == v.run).map(|m| (v, m)))
        .collect();
    retiring.sort_by_key(|(_, m)| std::cmp::Reverse(m.run));
    for (verdict, m) in retiring {
        let manifest = layout::manifest_key(&m.host, &m.set, m.run, m.kind);
        // A damaged manifest could name another run's object: delete only what is this run's.
        let own = layout::run_prefix(&m.host, &m.set, m.run, m.kind);
        if let Some(stray) = m.objects().into_iter().find(|k| !k.starts_with(&own)) {
            return Err(StoreError::new(
                ErrorKind::Other,
                "retire",
                store.locate(&manifest),
                format!("names {stray}, an object of another run: not retired (damaged manifest?)"),
            ));
        }
        let record = Upload {
            archive: m.archive.key.clone(),
            upload_id: String::new(),
            manifest: manifest.clone(),
            others: m.objects().into_iter().skip(1).map(String::from).collect(),
            kind: crate::uploads::UploadKind::Run,
        };
        // Without a record (DiffDir full or unwritable) the retirement still goes ahead: cut
        // short, it leaves debris for prune's grace period, as a foreign run's would.
        if !store.dry_run() {
            if let Err(e) = records.record(&record) {
                log::warn!(
                    "{}: cannot record the retirement of run {} ({e}); retiring it anyway",
                    m.set,
                    m.run
                );
            }
        }
        store.delete(&manifest).await?;
        for key in m.objects() {
            store.delete(key).await?;
        }
        if !store.dry_run() {
            if let Err(e) = records.clear(&record.archive) {
                log::warn!(
                    "{}: run {} retired, but its record stays ({e})",
                    m.set,
                    m.run
                );
            }
        }
        done(
            store,
            format!(
                "{}: retired {} run {} ({})",
                m.set, m.kind, m.run, verdict.reason
            ),
        );
        retired.push(m);
    }
    Ok(retired)
}

#[derive(Debug, Default)]
pub struct Debris {
    /// Archive keys without a manifest.
    pub archives: Vec<String>,
    /// Keys of multipart uploads left open.
    pub uploads: Vec<String>,
    /// Archives and uploads that look like debris but are within the grace period: perhaps a
    /// live run of another configuration.
    pub young: Vec<String>,
    /// Archives without a manifest still under Object Lock (a run that failed after its
    /// archive was locked), with the date: removed by a prune after it.
    pub locked: Vec<(String, DateTime<Utc>)>,
}

/// Finds and removes (through a dry-run store: records it) what interrupted runs of `host`
/// left behind and is older than the grace period on the server's clock.
pub async fn clear_debris(store: &DynStore, host: &str) -> Result<Debris, StoreError> {
    let objects = store.list(&format!("{host}/")).await?;
    let now = store.server_time().await?;
    // An object or upload without a time is treated as young: never delete on a guess.
    let old = |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t >= DEBRIS_GRACE);
    let keys: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let mut debris = Debris::default();
    for o in &objects {
        let Some((set, run, kind)) = layout::parse_archive_key(host, &o.key) else {
            continue;
        };
        let manifest = layout::manifest_key(host, &set, run, kind);
        if !keys.contains(manifest.as_str()) {
            if !old(o.modified) {
                debris.young.push(o.key.clone());
                continue;
            }
            // The listing is a moment ago: a run that committed since keeps its archive.
            if store.head(&manifest).await?.is_some() {
                continue;
            }
            // A lock would refuse the deletion: prune never fails for one.
            let lock = store.head(&o.key).await?.and_then(|i| i.lock);
            if let Some(lock) = lock.filter(|l| l.until > now) {
                debris.locked.push((o.key.clone(), lock.until));
                continue;
            }
            store.delete(&o.key).await?;
            done(
                store,
                format!(
                    "removed {}: archive of an interrupted run (no manifest)",
                    store.locate(&o.key)
                ),
            );
            debris.archives.push(o.key.clone());
        }
    }
    let uploads = crate::uploads::open_uploads(store, &format!("{host}/")).await?;
    for upload in uploads.unwrap_or_default() {
        if !old(upload.initiated) {
            debris.young.push(upload.key);
            continue;
        }
        store.abort_upload(&upload.key, &upload.upload_id).await?;
        done(
            store,
            format!(
                "aborted an unfinished upload of {}",
                store.locate(&upload.key)
            ),
        );
        debris.uploads.push(upload.key);
    }
    Ok(debris)
}

/// Logs what was done; a dry run did not do it, and its caller prints what it would do.
fn done(store: &DynStore, what: String) {
    if !store.dry_run() {
        log::info!("{what}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::policy::retention::Reason;
    use crate::schema::layout::{Kind, RunId};
    use crate::store::dry_run::DryRunStore;
    use crate::store::faulty::{Fault, Faults, FaultyStore, Op, Rule};
    use crate::store::memory::{ManualClock, MemoryStore};
    use crate::store::UploadOptions;

    fn day(n: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T03:00:00Z")
            .unwrap()
            .to_utc()
            + Duration::days(n)
    }

    /// A committed run of day `n` in `store`: its archive, range hashes and manifest.
    fn commit(store: &MemoryStore, n: i64) -> Manifest {
        let run = RunId::at(day(n));
        let mut m = crate::schema::manifest::sample("dir/x", run, Kind::Full, None);
        m.archive.key = layout::archive_key("h", "dir/x", run, Kind::Full, "tar");
        let ranges = m.archive.ranges.as_mut().unwrap();
        ranges.key = format!("{}.ranges", m.archive.key);
        for key in m.objects() {
            store.insert(key, Bytes::from_static(b"data"), day(n));
        }
        let manifest = layout::manifest_key("h", "dir/x", run, Kind::Full);
        store.insert(&manifest, m.to_json(), day(n));
        m
    }

    /// Upload and retirement records in a fresh DiffDir (kept alive by the first element).
    fn records() -> (tempfile::TempDir, Records) {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(dir.path());
        (dir, records)
    }

    fn verdict(m: &Manifest, keep: bool) -> Verdict {
        Verdict {
            run: m.run,
            keep,
            reason: Reason::OlderThan { days: 1 },
        }
    }

    /// A memory store on a clock at day 30, behind `rules`.
    fn store(rules: Vec<Rule>) -> (DynStore, Arc<MemoryStore>, Faults) {
        let clock = ManualClock::new(day(30));
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()));
        let faulty = FaultyStore::new(memory.clone(), rules);
        let faults = faulty.faults();
        (Arc::new(faulty), memory, faults)
    }

    fn run_keys(m: &Manifest) -> Vec<String> {
        let mut keys: Vec<String> = m.objects().iter().map(|k| k.to_string()).collect();
        keys.push(layout::manifest_key("h", "dir/x", m.run, Kind::Full));
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn retire_deletes_the_retired_runs_manifest_first_and_keeps_the_kept() {
        let (store, memory, faults) = store(vec![]);
        let (old, kept) = (commit(&memory, 0), commit(&memory, 1));
        let runs = vec![old.clone(), kept.clone()];
        let verdicts = [verdict(&old, false), verdict(&kept, true)];
        let rec = records();
        let retired = retire(&store, &rec.1, &runs, &verdicts).await.unwrap();
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].run, old.run);
        assert_eq!(memory.keys(), run_keys(&kept), "the kept run is whole");
        let deletes = faults.calls_of(Op::Delete);
        assert!(
            deletes[0].key.ends_with(layout::MANIFEST_SUFFIX),
            "{deletes:?}"
        );
        assert_eq!(deletes.len(), 3);
    }

    #[tokio::test]
    async fn a_failing_delete_leaves_the_rest_listed_and_is_reported() {
        let archive = layout::archive_key("h", "dir/x", RunId::at(day(0)), Kind::Full, "tar");
        let (store, memory, _) = store(vec![Rule::new(Op::Delete, Fault::Permanent).key(&archive)]);
        let (old, kept) = (commit(&memory, 0), commit(&memory, 1));
        let runs = vec![old.clone(), kept.clone()];
        let verdicts = [verdict(&old, false), verdict(&kept, true)];
        let rec = records();
        let err = retire(&store, &rec.1, &runs, &verdicts).await.unwrap_err();
        assert!(err.to_string().contains(&archive), "{err}");
        // The manifest went first: what is left is debris (the archive and its range hashes,
        // still listed for the next prune), never a run without its archive.
        let mut want = run_keys(&kept);
        want.extend(old.objects().iter().map(|k| k.to_string()));
        want.sort();
        assert_eq!(memory.keys(), want);
        // The retirement was recorded: the next run or prune finishes it at once (no waiting
        // for the debris grace period).
        let plain: DynStore = memory.clone();
        let finished = crate::uploads::finish_interrupted(&plain, &rec.1).await;
        assert_eq!(finished, vec![old.archive.key.clone()]);
        assert_eq!(
            memory.keys(),
            run_keys(&kept),
            "the half-done retirement is finished"
        );
        assert!(rec.1.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_retirement_that_cannot_be_recorded_still_retires() {
        let (store, memory, _) = store(vec![]);
        let (old, kept) = (commit(&memory, 0), commit(&memory, 1));
        // DiffDir is a file: nothing can be recorded there (as when it is full).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let records = Records::new(&file);
        let verdicts = [verdict(&old, false), verdict(&kept, true)];
        let runs = [old.clone(), kept.clone()];
        let retired = retire(&store, &records, &runs, &verdicts).await.unwrap();
        assert_eq!(retired.len(), 1);
        assert_eq!(memory.keys(), run_keys(&kept));
    }

    #[tokio::test]
    async fn retirement_goes_newest_first_so_a_diff_never_outlives_its_base() {
        // FULL (day 0) ← DIFF (day 1), both retired; the delete of the DIFF's manifest fails.
        let (store, memory, faults) = store(vec![]);
        let full = commit(&memory, 0);
        // (Stored as a FULL for the fixture's keys; what matters is its base.)
        let mut diff = commit(&memory, 1);
        diff.base_run = Some(full.run);
        let diff_manifest = layout::manifest_key("h", "dir/x", diff.run, Kind::Full);
        faults.add(Rule::new(Op::Delete, Fault::Permanent).key(diff_manifest.as_str()));
        let runs = vec![full.clone(), diff.clone()];
        let rec = records();
        let verdicts = [verdict(&full, false), verdict(&diff, false)];
        let err = retire(&store, &rec.1, &runs, &verdicts).await.unwrap_err();
        assert!(err.to_string().contains(&diff_manifest), "{err}");
        // Stopped at the DIFF: its base is still whole, so the listed DIFF still recovers.
        for key in run_keys(&full) {
            assert!(memory.object(&key).is_some(), "{key} of the base is kept");
        }
        assert_eq!(faults.calls_of(Op::Delete)[0].key, diff_manifest);
    }

    #[tokio::test]
    async fn a_dry_run_deletes_nothing() {
        let (store, memory, faults) = store(vec![]);
        let old = commit(&memory, 0);
        let runs = [old.clone()];
        let dry: DynStore = DryRunStore::wrap(store);
        let rec = records();
        let retired = retire(&dry, &rec.1, &runs, &[verdict(&old, false)])
            .await
            .unwrap();
        assert_eq!(retired.len(), 1);
        assert_eq!(memory.keys(), run_keys(&old));
        assert_eq!(faults.count(Op::Delete), 0);
    }

    #[tokio::test]
    async fn debris_older_than_the_grace_goes_and_committed_runs_stay() {
        let (store, memory, faults) = store(vec![]);
        let committed = commit(&memory, 0);
        let orphan = layout::archive_key("h", "dir/x", RunId::at(day(2)), Kind::Full, "tar");
        let young = layout::archive_key("h", "dir/x", RunId::at(day(28)), Kind::Full, "tar");
        memory.insert(&orphan, Bytes::from_static(b"o"), day(2));
        memory.insert(&young, Bytes::from_static(b"y"), day(28));
        let dry: DynStore = DryRunStore::wrap(store.clone());
        let dry = clear_debris(&dry, "h").await.unwrap();
        assert_eq!(dry.archives, vec![orphan.clone()]);
        assert_eq!(memory.keys().len(), 5, "a dry run deletes nothing");
        // The listing alone tells a committed run's archive from debris: only debris is looked
        // at again (in case its run committed since).
        let manifest = layout::manifest_key("h", "dir/x", committed.run, Kind::Full);
        assert!(faults.calls_of(Op::Head).iter().all(|c| c.key != manifest));
        let debris = clear_debris(&store, "h").await.unwrap();
        assert_eq!(debris.archives, vec![orphan]);
        assert_eq!(debris.young, vec![young.clone()]);
        let mut want = run_keys(&committed);
        want.push(young);
        want.sort();
        assert_eq!(memory.keys(), want);
    }

    #[tokio::test]
    async fn locked_debris_is_kept_until_its_lock_expires_and_prune_does_not_fail() {
        let clock = ManualClock::new(day(30));
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()).with_object_lock());
        let store: DynStore = memory.clone();
        let orphan = layout::archive_key("h", "dir/x", RunId::at(day(2)), Kind::Full, "tar");
        memory.insert(&orphan, Bytes::from_static(b"o"), day(2));
        let lock = crate::store::ObjectLock {
            mode: crate::store::LockMode::Compliance,
            until: day(31),
        };
        store.retain(&orphan, &lock).await.unwrap();
        let debris = clear_debris(&store, "h").await.unwrap();
        assert_eq!(debris.locked, vec![(orphan.clone(), day(31))]);
        assert!(debris.archives.is_empty());
        assert_eq!(memory.keys(), vec![orphan.clone()]);
        clock.set(day(31) + Duration::seconds(1));
        let debris = clear_debris(&store, "h").await.unwrap();
        assert_eq!(debris.archives, vec![orphan]);
        assert!(memory.keys().is_empty());
    }

    #[tokio::test]
    async fn a_failing_debris_delete_is_reported_and_the_debris_stays_listed() {
        let orphan = layout::archive_key("h", "dir/x", RunId::at(day(2)), Kind::Full, "tar");
        let (store, memory, _) = store(vec![Rule::new(Op::Delete, Fault::Permanent)]);
        let committed = commit(&memory, 0);
        memory.insert(&orphan, Bytes::from_static(b"o"), day(2));
        let err = clear_debris(&store, "h").await.unwrap_err();
        assert!(err.to_string().contains(&orphan), "{err}");
        let listed: Vec<String> = store
            .list("h/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert!(listed.contains(&orphan), "{listed:?}");
        for key in run_keys(&committed) {
            assert!(
                listed.contains(&key),
                "{key} of a committed run: {listed:?}"
            );
        }
    }

    /// A server that lacks ListMultipartUploads (s3s-fs: 501): the uploads cannot be seen, the
    /// rest of the debris still goes, and prune does not fail.
    #[tokio::test]
    async fn without_listing_uploads_the_other_debris_still_goes_and_prune_succeeds() {
        let orphan = layout::archive_key("h", "dir/x", RunId::at(day(2)), Kind::Full, "tar");
        let (store, memory, faults) =
            store(vec![Rule::new(Op::ListUploads, Fault::NotImplemented)]);
        let committed = commit(&memory, 0);
        memory.insert(&orphan, Bytes::from_static(b"o"), day(2));
        let debris = clear_debris(&retried(store), "h").await.unwrap();
        assert_eq!(debris.archives, vec![orphan]);
        assert!(debris.uploads.is_empty() && debris.young.is_empty());
        assert_eq!(faults.count(Op::ListUploads), 1, "asked once, not retried");
        let mut keys = memory.keys();
        keys.sort();
        let mut want = run_keys(&committed);
        want.sort();
        assert_eq!(keys, want);
    }

    #[tokio::test]
    async fn old_uploads_are_aborted_and_young_ones_left() {
        let clock = ManualClock::new(day(0));
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()));
        let store: DynStore = memory.clone();
        store
            .create_upload("h/dir/x/old", &UploadOptions::default())
            .await
            .unwrap();
        clock.set(day(29));
        store
            .create_upload("h/dir/x/young", &UploadOptions::default())
            .await
            .unwrap();
        clock.set(day(30));
        let debris = clear_debris(&store, "h").await.unwrap();
        assert_eq!(debris.uploads, vec!["h/dir/x/old"]);
        assert_eq!(debris.young, vec!["h/dir/x/young"]);
        assert_eq!(memory.open_uploads(), vec!["h/dir/x/young"]);
    }

    /// `store` behind retries of up to three attempts, without real waits.
    fn retried(store: DynStore) -> DynStore {
        let policy = crate::store::retry::RetryPolicy {
            attempts: 3,
            first_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(1),
        };
        Arc::new(crate::store::retry::RetryStore::new(store, policy))
    }

    /// Every run the catalog lists has all its objects: no run without its archive.
    async fn listed_runs_are_whole(memory: &Arc<MemoryStore>, row: &str) -> Vec<RunId> {
        let plain: DynStore = memory.clone();
        let runs = crate::catalog::load(&plain, "h", None).await.unwrap();
        for m in &runs {
            for key in m.objects() {
                assert!(memory.object(key).is_some(), "{row}: {key} of a listed run");
            }
        }
        runs.iter().map(|m| m.run).collect()
    }

    #[tokio::test]
    async fn a_manifest_naming_another_runs_object_is_not_retired() {
        let (store, memory, _) = store(Vec::new());
        let (mut old, kept) = (commit(&memory, 0), commit(&memory, 1));
        // Damaged (a digit flipped): the old run's manifest names the kept run's archive.
        old.archive.key = kept.archive.key.clone();
        let before = memory.keys();
        let rec = records();
        let err = retire(
            &store,
            &rec.1,
            &[old.clone(), kept.clone()],
            &[verdict(&old, false)],
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("an object of another run"),
            "{err}"
        );
        assert_eq!(memory.keys(), before, "nothing deleted");
    }

    #[tokio::test]
    async fn retire_under_any_fault_on_any_delete_leaves_runs_whole_or_unlisted() {
        use Fault::*;
        let (old_run, kept_run) = (RunId::at(day(0)), RunId::at(day(1)));
        let manifest = layout::manifest_key("h", "dir/x", old_run, Kind::Full);
        let archive = layout::archive_key("h", "dir/x", old_run, Kind::Full, "tar");
        let ranges = format!("{archive}.ranges");
        // (key whose delete fails, fault, retried, the old run still listed, Ok)
        let mut rows = Vec::new();
        for key in [&manifest, &archive, &ranges] {
            // Refused before it acted, the manifest's delete leaves the run as it was.
            let listed = *key == manifest;
            rows.push((key, Transient, false, listed, false));
            rows.push((key, Permanent, false, listed, false));
            // The delete happened, its reply did not come: without a retry, an error.
            rows.push((key, LostReply, false, false, false));
            // Repeated, a delete of an object already gone succeeds.
            rows.push((key, LostReply, true, false, true));
            rows.push((key, Transient, true, false, true));
        }
        for (key, fault, retry, listed, ok) in rows {
            let row = format!("delete of {key} under {fault:?}, retried: {retry}");
            let (store, memory, _) = store(vec![Rule::new(Op::Delete, fault).key(key).nth(1)]);
            let store = if retry { retried(store) } else { store };
            let (old, kept) = (commit(&memory, 0), commit(&memory, 1));
            let runs = vec![old.clone(), kept.clone()];
            let verdicts = [verdict(&old, false), verdict(&kept, true)];
            let rec = records();
            let result = retire(&store, &rec.1, &runs, &verdicts).await;
            assert_eq!(result.is_ok(), ok, "{row}: {result:?}");
            let listed_runs = listed_runs_are_whole(&memory, &row).await;
            let want: Vec<RunId> = if listed {
                vec![old_run, kept_run]
            } else {
                vec![kept_run]
            };
            assert_eq!(listed_runs, want, "{row}");
            for key in run_keys(&kept) {
                assert!(
                    memory.object(&key).is_some(),
                    "{row}: {key} of the kept run"
                );
            }
            if ok {
                assert_eq!(
                    memory.keys(),
                    run_keys(&kept),
                    "{row}: all of the old run gone"
                );
            }
        }
    }

    #[tokio::test]
    async fn clear_debris_under_any_fault_never_touches_runs_or_young_debris() {
        use Fault::*;
        let orphan = layout::archive_key("h", "dir/x", RunId::at(day(2)), Kind::Full, "tar");
        let orphan_manifest = layout::manifest_key("h", "dir/x", RunId::at(day(2)), Kind::Full);
        let young = layout::archive_key("h", "dir/x", RunId::at(day(28)), Kind::Full, "tar");
        let mut rows = Vec::new();
        for fault in [Transient, Permanent, LostReply] {
            for rule in [
                Rule::new(Op::List, fault),
                Rule::new(Op::ServerTime, fault),
                // The orphan's manifest, looked for again in case its run committed since.
                Rule::new(Op::Head, fault).key(&orphan_manifest),
                Rule::new(Op::Delete, fault),
                Rule::new(Op::ListUploads, fault),
                Rule::new(Op::AbortUpload, fault),
            ] {
                // Once, retried: every fault but a permanent one passes.
                rows.push((rule.clone().nth(1), true, fault != Permanent));
                // Outliving the retries (or none): the error is reported.
                rows.push((rule, false, false));
            }
        }
        for (rule, retry, ok) in rows {
            let row = format!("{rule:?}, retried: {retry}");
            let clock = ManualClock::new(day(0));
            let memory = Arc::new(MemoryStore::with_clock(clock.clock()));
            let faulty = FaultyStore::new(memory.clone(), [rule]);
            let store: DynStore = Arc::new(faulty);
            let store = if retry { retried(store) } else { store };
            let committed = commit(&memory, 0);
            memory.insert(&orphan, Bytes::from_static(b"o"), day(2));
            memory.insert(&young, Bytes::from_static(b"y"), day(28));
            let plain: DynStore = memory.clone();
            plain
                .create_upload("h/dir/x/old", &UploadOptions::default())
                .await
                .unwrap();
            clock.set(day(29));
            plain
                .create_upload("h/dir/x/young", &UploadOptions::default())
                .await
                .unwrap();
            clock.set(day(30));
            let result = clear_debris(&store, "h").await;
            assert_eq!(result.is_ok(), ok, "{row}: {result:?}");
            for key in run_keys(&committed).iter().chain([&young]) {
                assert!(memory.object(key).is_some(), "{row}: {key}");
            }
            assert!(
                memory.open_uploads().contains(&"h/dir/x/young".to_string()),
                "{row}"
            );
            if ok {
                assert_eq!(memory.object(&orphan), None, "{row}");
                assert_eq!(memory.open_uploads(), ["h/dir/x/young"], "{row}");
            }
        }
    }
}

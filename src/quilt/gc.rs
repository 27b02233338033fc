//! `s3nap quilt gc`: every manifest of every host and a listing of `quilt/content/` in, the
//! deletions of content no manifest references out (README, "Quilting").
//!
//! The references are read from the manifests of every host in the store (a quilt is shared);
//! a manifest that cannot be read or parsed stops gc before it deletes anything, since the
//! content it references cannot be told from garbage. [`crate::policy::quilt::judge`] decides
//! per object; only unreferenced objects older than the grace period are candidates (a run
//! still uploading has stored new content but not yet its manifest). Just before deleting,
//! the manifests are read once more, and whatever a manifest committed meanwhile references is
//! kept. What remains of the race with a concurrent backup: a run that found a content object
//! present, and checked once more just before its commit that it still is, could commit
//! between that re-read and the deletion (at most the time gc spends deleting) — its manifest
//! would then name a deleted object (`verify` reports it; the set's next FULL uploads the
//! content again — a DIFF does not resend an unchanged file). Each candidate is
//! HEADed right before its deletion: its Object Lock retention, which a listing does not give,
//! keeps it (reported, not an error). Multipart uploads of content left open longer than the
//! grace period (a killed run's) are aborted. Retention (`prune`) never deletes content.

use std::collections::BTreeSet;

use anyhow::{anyhow, Context};
use chrono::Duration;

use crate::catalog;
use crate::policy::quilt::{judge, stale_upload, Reason};
use crate::schema::quilt::{is_content_key, CONTENT_PREFIX};
use crate::store::{self, DynStore};

/// The default `--grace`: as long as prune waits for another configuration's debris, since S3
/// dates a multipart object from the start of its upload.
pub const DEFAULT_GRACE: Duration = Duration::days(7);

#[derive(Debug, Default)]
pub struct Outcome {
    /// Manifests read (at the last reading).
    pub manifests: usize,
    /// Content objects listed.
    pub examined: usize,
    /// Content objects a manifest references.
    pub referenced: usize,
    /// Deleted (in a dry run: to be deleted), with why, in key order.
    pub deleted: Vec<(String, Reason)>,
    /// Unreferenced but kept (young, locked, of unknown age), with why.
    pub kept: Vec<(String, Reason)>,
    /// Keys of stale uploads of content aborted (in a dry run: to be aborted).
    pub aborted: Vec<String>,
    /// Deletions the store refused, one line each naming the object.
    pub failures: Vec<String>,
}

/// Deletes (through a dry-run store: records) the content objects no manifest of any host
/// references and that are older than `grace` on the store's clock. An error means nothing
/// was deleted (the manifests or the listing could not be read); refusals of single deletions
/// are the outcome's failures.
pub async fn collect(store: &DynStore, grace: Duration) -> anyhow::Result<Outcome> {
    let now = store.server_time().await?;
    let (first, _) = references(store).await?;
    let listed = store
        .list(CONTENT_PREFIX)
        .await
        .context("gc stopped before deleting anything: the quilt's content cannot be listed")?;
    let mut outcome = Outcome::default();
    let mut candidates = Vec::new();
    for o in listed.iter().filter(|o| is_content_key(&o.key)) {
        outcome.examined += 1;
        match judge(&o.key, o.modified, None, &first, now, grace) {
            (true, _) => candidates.push(o.key.as_str()),
            (false, Reason::Referenced) => outcome.referenced += 1,
            (false, reason) => outcome.kept.push((o.key.clone(), reason)),
        }
    }
    // Read again just before deleting: a run that committed since the first reading keeps
    // what it references. The first references stay too (a run retired meanwhile changes
    // nothing that was decided to keep).
    let (again, manifests) = references(store).await?;
    outcome.manifests = manifests;
    let referenced: BTreeSet<String> = first.union(&again).cloned().collect();
    for key in candidates {
        // The lock is HEAD's alone; an object gone meanwhile needs nothing.
        let info = match store.head(key).await {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(e) => {
                outcome.failures.push(e.to_string());
                continue;
            }
        };
        let lock = info.lock.map(|l| l.until);
        match judge(key, info.modified, lock, &referenced, now, grace) {
            (true, reason) => match store.delete(key).await {
                Ok(()) => {
                    if !store.dry_run() {
                        log::info!("quilt gc: deleted {} ({reason})", store.locate(key));
                    }
                    outcome.deleted.push((key.to_string(), reason));
                }
                Err(e) => outcome.failures.push(e.to_string()),
            },
            (false, Reason::Referenced) => outcome.referenced += 1,
            (false, reason) => outcome.kept.push((key.to_string(), reason)),
        }
    }
    outcome.kept.sort_by(|a, b| a.0.cmp(&b.0));
    abort_stale_uploads(store, now, grace, &mut outcome).await;
    Ok(outcome)
}

/// Every content key the manifests of every host reference, and how many manifests there are.
async fn references(store: &DynStore) -> anyhow::Result<(BTreeSet<String>, usize)> {
    let hosts = catalog::load_all_hosts(store, None).await.map_err(|e| {
        anyhow!(e).context(
            "gc stopped before deleting anything: every manifest must be read to know what the \
             quilt's content is referenced by",
        )
    })?;
    let mut referenced = BTreeSet::new();
    let mut manifests = 0;
    for m in hosts.values().flatten() {
        manifests += 1;
        if let Some(quilt) = &m.quilt {
            referenced.extend(quilt.content.iter().cloned());
        }
    }
    Ok((referenced, manifests))
}

/// Aborts the multipart uploads of content started longer than `grace` ago: a killed run's.
/// Debris, not the point of gc: a listing or an abort that fails is a warning.
async fn abort_stale_uploads(
    store: &DynStore,
    now: chrono::DateTime<chrono::Utc>,
    grace: Duration,
    outcome: &mut Outcome,
) {
    let without = "stale uploads of quilt content are not looked for";
    let uploads = match store::optional(store.list_uploads(CONTENT_PREFIX).await, without) {
        Ok(uploads) => uploads.unwrap_or_default(),
        Err(e) => {
            log::warn!("{e}; {without}");
            return;
        }
    };
    for u in uploads {
        if !is_content_key(&u.key) || !stale_upload(u.initiated, now, grace) {
            continue;
        }
        match store.abort_upload(&u.key, &u.upload_id).await {
            Ok(()) => outcome.aborted.push(u.key),
            Err(e) => log::warn!("{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::retention::{Reason as Kept, Verdict};
    use crate::schema::layout::{self, Kind, RunId};
    use crate::schema::manifest::{sample, Manifest};
    use crate::schema::quilt::{QuiltSecret, QuiltUse, QUILTED_FORMAT};
    use crate::store::faulty::{FaultyStore, Op, Rule};
    use crate::store::memory::MemoryStore;
    use crate::store::Store;
    use crate::uploads::Records;
    use chrono::{DateTime, Utc};
    use std::sync::Arc;

    fn content(n: u8) -> String {
        QuiltSecret::from_bytes([1; 32]).content_key(&["AA".into()], &[n; 32])
    }

    /// A quilted run of `set` on day `day`, referencing `keys`, stored with its objects.
    fn quilted(memory: &MemoryStore, host: &str, day: i64, keys: &[String]) -> Manifest {
        let run = RunId::at(DateTime::from_timestamp(1_800_000_000 + 86_400 * day, 0).unwrap());
        let mut m = sample("dir/x", run, Kind::Full, None);
        m.host = host.into();
        m.format = QUILTED_FORMAT;
        m.archive.key = layout::archive_key(host, "dir/x", run, Kind::Full, "tar");
        m.archive.ranges.as_mut().unwrap().key =
            layout::run_prefix(host, "dir/x", run, Kind::Full) + ".sha256";
        m.quilt = Some(QuiltUse {
            fingerprint: "f".into(),
            min_size: 1,
            content: keys.to_vec(),
            uploaded: 0,
            uploaded_bytes: 0,
            reused: 0,
        });
        let old = Utc::now() - Duration::days(30);
        memory.insert(&m.archive.key, vec![], old);
        memory.insert(&m.archive.ranges.as_ref().unwrap().key, vec![], old);
        memory.insert(
            &layout::manifest_key(host, "dir/x", run, Kind::Full),
            m.to_json(),
            old,
        );
        m
    }

    #[tokio::test]
    async fn retention_never_deletes_content_and_gc_deletes_what_nothing_references() {
        let memory = Arc::new(MemoryStore::new());
        let old = Utc::now() - Duration::days(30);
        for n in 1..=3 {
            memory.insert(&content(n), vec![n], old);
        }
        memory.insert(&content(4), vec![4], Utc::now());
        let a = quilted(&memory, "a", 0, &[content(1), content(2)]);
        quilted(&memory, "b", 1, &[content(2)]);
        let store: DynStore = memory.clone();

        // Retention retires host a's run: its own objects go, the content it referenced stays.
        let dir = tempfile::tempdir().unwrap();
        let verdict = Verdict {
            run: a.run,
            keep: false,
            reason: Kept::OlderThan { days: 30 },
        };
        let runs = [a.clone()];
        crate::prune::retire(&store, &Records::new(dir.path()), &runs, &[verdict])
            .await
            .unwrap();
        assert!(memory.object(&a.archive.key).is_none());
        for n in 1..=4 {
            assert!(memory.object(&content(n)).is_some(), "content {n}");
        }

        // gc: 1 (a's, now unreferenced) and 3 (never referenced) go; 2 (b's) and 4 (young)
        // stay.
        let outcome = collect(&store, DEFAULT_GRACE).await.unwrap();
        let deleted: Vec<&str> = outcome.deleted.iter().map(|(k, _)| k.as_str()).collect();
        let mut want = vec![content(1), content(3)];
        want.sort();
        assert_eq!(deleted, want);
        assert_eq!(outcome.kept.len(), 1, "{:?}", outcome.kept);
        assert_eq!(outcome.kept[0].0, content(4));
        assert_eq!((outcome.referenced, outcome.examined), (1, 4));
        assert!(memory.object(&content(2)).is_some());
        assert!(memory.object(&content(1)).is_none());
    }

    #[tokio::test]
    async fn content_a_run_committed_after_the_first_reading_references_is_kept() {
        let memory = Arc::new(MemoryStore::new());
        let old = Utc::now() - Duration::days(30);
        for n in 1..=2 {
            memory.insert(&content(n), vec![n], old);
        }
        // A backup commits a run referencing content 1 right after gc's listing of the
        // content, between its first reading of the manifests and its deletions.
        let m = memory.clone();
        let commit = Rule::pass(Op::List)
            .key(CONTENT_PREFIX)
            .nth(1)
            .then(move |_| {
                quilted(&m, "late", 3, &[content(1)]);
            });
        let store: DynStore = Arc::new(FaultyStore::new(memory.clone(), [commit]));
        let outcome = collect(&store, DEFAULT_GRACE).await.unwrap();
        let deleted: Vec<&str> = outcome.deleted.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(deleted, [content(2)]);
        assert_eq!((outcome.referenced, outcome.manifests), (1, 1));
        assert!(memory.object(&content(1)).is_some());
    }

    #[tokio::test]
    async fn stale_uploads_of_content_are_aborted_and_young_ones_left() {
        let clock = crate::store::memory::ManualClock::new(Utc::now() - Duration::days(30));
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()));
        let options = crate::store::UploadOptions::default();
        memory.create_upload(&content(1), &options).await.unwrap();
        clock.set(Utc::now());
        memory.create_upload(&content(2), &options).await.unwrap();
        let store: DynStore = memory.clone();
        let outcome = collect(&store, DEFAULT_GRACE).await.unwrap();
        assert_eq!(outcome.aborted, [content(1)]);
        let open: Vec<String> = memory
            .list_uploads(CONTENT_PREFIX)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.key)
            .collect();
        assert_eq!(open, [content(2)]);
    }
}

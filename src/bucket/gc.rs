//! gc of a bucket set: the snapshots retention keeps (their version-id lists) and a listing of
//! every replica version under the protected prefix in, DeleteObjects of the versions
//! [`crate::policy::gc::judge`] releases out. Any kept snapshot whose list cannot be read
//! stops gc before it deletes anything; every per-object refusal of DeleteObjects is reported.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::client::BucketClient;
use super::listing::list_parallel;
use super::snapshot::load_refs;
use crate::config::{BucketSpec, S3Spec};
use crate::policy::gc::{judge, Protection};
use crate::schema::manifest::{Manifest, SourceInfo};
use crate::schema::snapshot::SnapshotInfo;
use crate::store::retry::RetryPolicy;
use crate::store::DynStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub key: String,
    pub version_id: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Outcome {
    /// Deleted (or, in a dry run, to be deleted).
    pub deletions: Vec<Deletion>,
    pub failures: Vec<String>,
    pub examined: u64,
}

fn info(m: &Manifest) -> anyhow::Result<&SnapshotInfo> {
    match &m.source {
        SourceInfo::Bucket(info) => Ok(info),
        _ => bail!("{} run {} is not a bucket snapshot", m.set, m.run),
    }
}

async fn union_refs<'a>(
    store: &DynStore,
    runs: impl Iterator<Item = &'a Manifest>,
) -> anyhow::Result<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for m in runs {
        let refs = load_refs(store, info(m)?).await.map_err(|e| {
            anyhow!(
                "gc stopped before deleting anything: the version list of run {} is unreadable: {e:#}",
                m.run
            )
        })?;
        all.extend(refs);
    }
    Ok(all)
}

/// The version ids the newest MinimumRedundancy+1 of `all` (every committed snapshot of the
/// set) reference. Read before retention retires anything, so that these stay protected per
/// deletion even if retention were to retire one of them.
pub async fn guard(
    store: &DynStore,
    all: &[Manifest],
    minimum_redundancy: u64,
) -> anyhow::Result<BTreeSet<String>> {
    let mut newest_first: Vec<&Manifest> = all.iter().collect();
    newest_first.sort_by_key(|m| std::cmp::Reverse(m.run));
    let count = usize::try_from(minimum_redundancy.saturating_add(1)).unwrap_or(usize::MAX);
    union_refs(store, newest_first.into_iter().take(count)).await
}

/// Deletes (unless `dry_run`) the replica versions no snapshot of `kept` (those retention
/// keeps) references and `guarded` (from [`guard`]) does not protect.
pub async fn collect(
    store: &DynStore,
    spec: &BucketSpec,
    s3: &S3Spec,
    retry: RetryPolicy,
    kept: &[Manifest],
    guarded: &BTreeSet<String>,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    let Some(newest) = newest_listing(kept)? else {
        log::info!(
            "bucket/{}: no snapshot kept, so gc deletes nothing",
            spec.name
        );
        return Ok(Outcome::default());
    };
    let kept_refs = union_refs(store, kept.iter()).await?;
    let protection = Protection {
        kept: &kept_refs,
        guarded,
        newest,
    };

    let (_, replica) = super::client::connect(spec, s3, retry).await?;
    let mut outcome = judge_versions(&replica, spec, &protection).await?;
    if dry_run {
        return Ok(outcome);
    }
    // Listed completely before deleting anything, so deletions cannot disturb the listing.
    delete(&replica, &spec.name, &mut outcome).await;
    Ok(outcome)
}

/// When the newest of the `kept` snapshots began listing; `None` when none is kept.
fn newest_listing(kept: &[Manifest]) -> anyhow::Result<Option<DateTime<Utc>>> {
    Ok(kept
        .iter()
        .map(|m| info(m).map(|i| i.listed_from))
        .collect::<anyhow::Result<Vec<_>>>()?
        .into_iter()
        .max())
}

/// Lists every replica version under the protected prefix and returns those `protection`
/// releases, sorted by key, as the deletions to make.
async fn judge_versions(
    replica: &Arc<BucketClient>,
    spec: &BucketSpec,
    protection: &Protection<'_>,
) -> anyhow::Result<Outcome> {
    let prefix = spec.master.key_prefix();
    let (tx, mut rx) = mpsc::channel(spec.workers * 2);
    let listing = tokio::spawn({
        let (replica, prefix, workers) = (replica.clone(), prefix.clone(), spec.workers);
        async move { list_parallel(replica, &prefix, workers, tx).await }
    });
    let mut outcome = Outcome::default();
    while let Some(batch) = rx.recv().await {
        for listed in batch {
            outcome.examined += 1;
            let v = &listed.version;
            let (delete, reason) = judge(&v.version_id, v.is_latest, listed.superseded, protection);
            if delete {
                outcome.deletions.push(Deletion {
                    key: v.key.clone(),
                    version_id: v.version_id.clone(),
                    reason: reason.to_string(),
                });
            }
        }
    }
    listing
        .await
        .map_err(|e| anyhow!("listing task failed: {e}"))??;
    outcome.deletions.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(outcome)
}

/// Deletes `outcome`'s deletions from the replica of bucket set `set`: those the replica
/// refuses move to its failures, so that only what was deleted is reported as deleted.
async fn delete(replica: &BucketClient, set: &str, outcome: &mut Outcome) {
    let batch: Vec<_> = outcome
        .deletions
        .iter()
        .map(|d| (d.key.clone(), Some(d.version_id.clone())))
        .collect();
    let mut refused_keys = BTreeSet::new();
    for (key, version, why) in replica.delete_all(&batch).await {
        let version = version.unwrap_or_default();
        outcome.failures.push(format!(
            "{} (version {version}): {why}",
            replica.locate(&key)
        ));
        refused_keys.insert((key, version));
    }
    outcome
        .deletions
        .retain(|d| !refused_keys.contains(&(d.key.clone(), d.version_id.clone())));
    for d in &outcome.deletions {
        log::info!(
            "bucket/{set}: deleted {} (version {}): {}",
            replica.locate(&d.key),
            d.version_id,
            d.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::layout::{Kind, RunId};
    use crate::schema::snapshot::BucketMode;
    use crate::store::faulty::{Fault, FaultyStore, Op, Rule};
    use crate::store::memory::MemoryStore;

    /// Version ids as a snapshot writes them (one a line, zstd).
    fn packed(ids: &[&str]) -> Vec<u8> {
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        zstd::encode_all(text.as_bytes(), 3).unwrap()
    }

    /// A snapshot of day `n` whose version list, stored in `memory`, holds `ids`.
    fn snapshot(memory: &MemoryStore, n: u32, ids: &[&str]) -> Manifest {
        let run =
            RunId::at(DateTime::from_timestamp(1_800_000_000 + 86_400 * i64::from(n), 0).unwrap());
        let mut m = crate::schema::manifest::sample("bucket/b", run, Kind::Full, None);
        let refs = format!("h/bucket/b/{run}.full.refs.zst");
        let packed = packed(ids);
        let refs_sha256 = Some(crate::schema::manifest::sha256_hex(&packed));
        memory.insert(&refs, packed, Utc::now());
        m.source = SourceInfo::Bucket(SnapshotInfo {
            master: "s3://m".into(),
            replica: "r".into(),
            mode: BucketMode::Replicated,
            prefix: String::new(),
            listed_from: run.0,
            listed_to: run.0,
            keys: 0,
            deleted_keys: 0,
            versions: 0,
            list_requests: 0,
            copied: 0,
            copied_bytes: 0,
            marked_deleted: 0,
            refs,
            refs_sha256,
        });
        m
    }

    #[tokio::test]
    async fn a_version_list_that_cannot_be_read_whole_stops_gc_before_it_deletes() {
        use Fault::*;
        let memory = std::sync::Arc::new(MemoryStore::new());
        let older = snapshot(&memory, 0, &["a", "b"]);
        let newer = snapshot(&memory, 1, &["b", "c"]);
        let all = [older.clone(), newer];
        let plain: DynStore = memory.clone();
        let want: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert_eq!(guard(&plain, &all, 1).await.unwrap(), want);
        // The older snapshot's list under each fault; a flipped bit is caught by the SHA-256
        // its manifest records.
        for fault in [Transient, Permanent, LostReply, Truncate, FlipBit] {
            let key = info(&older).unwrap().refs.clone();
            // In the ids (stored raw at the end), a flip leaves a valid zstd stream.
            let in_ids = memory.object(&key).unwrap().len() as u64 - 2;
            let rule = Rule::new(Op::Get, fault).key(key).covering(in_ids);
            let store: DynStore = std::sync::Arc::new(FaultyStore::new(memory.clone(), [rule]));
            let e = guard(&store, &all, 1).await.unwrap_err();
            let message = format!("{e:#}");
            assert!(
                message.contains("gc stopped before deleting anything")
                    && message.contains(&older.run.to_string()),
                "{fault:?}: {message}"
            );
            // collect reads the kept snapshots' lists the same way, before it connects to the
            // replica (it is not run here: it needs a real bucket client).
            let kept = union_refs(&store, all.iter()).await;
            assert!(kept.is_err(), "{fault:?}");
        }
    }
}

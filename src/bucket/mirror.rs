//! `Mode copy`: the master's current objects in, the replica brought up to date out — new or
//! changed objects (by size and ETag) copied server-side, keys gone from the master given a
//! delete marker — so the snapshot that follows records the master as it is. Any key that
//! cannot be copied fails the snapshot: it would otherwise record an older state as current.
//!
//! `stop` (the set failed) ends it early: no further copies start, multipart copies under way
//! are aborted, no deletions are marked.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::client::BucketClient;
use super::listing::current_objects;
use super::{Version, SINGLE_COPY_LIMIT};

#[derive(Debug, Default, Clone, Copy)]
pub struct MirrorStats {
    pub copied: u64,
    pub copied_bytes: u64,
    pub marked_deleted: u64,
}

pub async fn mirror(
    master: Arc<BucketClient>,
    replica: Arc<BucketClient>,
    prefix: &str,
    workers: usize,
    stop: &CancellationToken,
) -> anyhow::Result<MirrorStats> {
    let job = Mirror {
        master,
        replica,
        prefix,
        workers,
        stop,
    };
    let (source, copy) = job.list().await?;
    let (changed, gone) = differences(&source, &copy);
    let mut stats = MirrorStats::default();
    let mut failures = Vec::new();
    for result in job.copy(changed).await? {
        match result {
            Ok(size) => {
                stats.copied += 1;
                stats.copied_bytes += size;
            }
            Err(e) => failures.push(e),
        }
    }
    stats.marked_deleted = job.mark_deleted(gone, &mut failures).await;
    let (master, replica) = (&job.master, &job.replica);
    if !failures.is_empty() {
        bail!(
            "copying {} into {} failed for {} key(s): {}",
            master.locate(prefix),
            replica.locate(prefix),
            failures.len(),
            failures.join("; ")
        );
    }
    log::info!(
        "{}: {} objects ({} bytes) copied into the replica, {} deletions marked",
        master.locate(prefix),
        stats.copied,
        stats.copied_bytes,
        stats.marked_deleted
    );
    Ok(stats)
}

/// The master's objects not in the replica as they are (by size and ETag), and the replica's
/// keys the master no longer has, each sorted by key.
fn differences(
    source: &HashMap<String, Version>,
    copy: &HashMap<String, Version>,
) -> (Vec<Version>, Vec<String>) {
    let mut changed: Vec<_> = source
        .values()
        .filter(|v| {
            copy.get(&v.key)
                .is_none_or(|c| c.size != v.size || c.etag != v.etag)
        })
        .cloned()
        .collect();
    changed.sort_by(|a, b| a.key.cmp(&b.key));
    let mut gone: Vec<String> = copy
        .keys()
        .filter(|k| !source.contains_key(*k))
        .cloned()
        .collect();
    gone.sort();
    (changed, gone)
}

/// One mirroring of `prefix` from master to replica.
struct Mirror<'a> {
    master: Arc<BucketClient>,
    replica: Arc<BucketClient>,
    prefix: &'a str,
    workers: usize,
    stop: &'a CancellationToken,
}

impl Mirror<'_> {
    fn stopped(&self) -> anyhow::Error {
        anyhow!("copying into {}: stopped", self.replica.locate(self.prefix))
    }

    /// The current objects of master and replica, listed side by side.
    async fn list(&self) -> anyhow::Result<(HashMap<String, Version>, HashMap<String, Version>)> {
        let (prefix, workers) = (self.prefix, self.workers);
        // Listing only reads: dropping it mid-way is safe.
        let (source, copy) = tokio::select! {
            listed = async {
                tokio::join!(
                    current_objects(self.master.clone(), prefix, workers),
                    current_objects(self.replica.clone(), prefix, workers)
                )
            } => listed,
            () = self.stop.cancelled() => return Err(self.stopped()),
        };
        Ok((source?, copy?))
    }

    /// Copies `changed` into the replica, `workers` at a time, starting none once stopped;
    /// per object, its size or why it failed.
    async fn copy(&self, changed: Vec<Version>) -> anyhow::Result<Vec<Result<u64, String>>> {
        let results: Vec<_> = stream::iter(changed)
            .take_while(|_| std::future::ready(!self.stop.is_cancelled()))
            .map(|v| {
                let (master, replica) = (self.master.clone(), self.replica.clone());
                async move {
                    replica
                        .copy_from(&master, &v, &v.key, SINGLE_COPY_LIMIT, self.stop)
                        .await
                        .map(|_| v.size)
                        .map_err(|e| e.to_string())
                }
            })
            .buffer_unordered(self.workers.max(1))
            .collect()
            .await;
        if self.stop.is_cancelled() {
            return Err(self.stopped());
        }
        Ok(results)
    }

    /// Gives each of the `gone` keys a delete marker in the replica; returns how many got one,
    /// adding the refusals to `failures`.
    async fn mark_deleted(&self, gone: Vec<String>, failures: &mut Vec<String>) -> u64 {
        let batch: Vec<_> = gone.into_iter().map(|k| (k, None)).collect();
        let refused = self.replica.delete_all(&batch).await;
        let marked = (batch.len() - refused.len()) as u64;
        failures.extend(
            refused
                .into_iter()
                .map(|(key, _, why)| format!("{}: {why}", self.replica.locate(&key))),
        );
        marked
    }
}

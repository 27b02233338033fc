//! `Mode copy`: the master's current objects in, the replica brought up to date out — new or
//! changed objects (by size and ETag) copied server-side, keys gone from the master given a
//! delete marker — so the snapshot that follows records the master as it is. Any key that
//! cannot be copied fails the snapshot: it would otherwise record an older state as current.
//!
//! `stop` (the set failed) ends it early: no further copies start, multipart copies under way
//! are aborted, no deletions are marked.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use futures::stream::{self, StreamExt};
use tokio_util::sync::CancellationToken;

use super::client::BucketClient;
use super::listing::current_objects;
use super::SINGLE_COPY_LIMIT;

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
    let stopped = || anyhow!("copying into {}: stopped", replica.locate(prefix));
    // Listing only reads: dropping it mid-way is safe.
    let (source, copy) = tokio::select! {
        listed = async {
            tokio::join!(
                current_objects(master.clone(), prefix, workers),
                current_objects(replica.clone(), prefix, workers)
            )
        } => listed,
        () = stop.cancelled() => return Err(stopped()),
    };
    let (source, copy) = (source?, copy?);
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

    let mut stats = MirrorStats::default();
    let mut failures = Vec::new();
    let results: Vec<_> = stream::iter(changed)
        .take_while(|_| std::future::ready(!stop.is_cancelled()))
        .map(|v| {
            let (master, replica) = (master.clone(), replica.clone());
            async move {
                replica
                    .copy_from(&master, &v, &v.key, SINGLE_COPY_LIMIT, stop)
                    .await
                    .map(|_| v.size)
            }
        })
        .buffer_unordered(workers.max(1))
        .collect()
        .await;
    if stop.is_cancelled() {
        return Err(stopped());
    }
    for result in results {
        match result {
            Ok(size) => {
                stats.copied += 1;
                stats.copied_bytes += size;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let batch: Vec<_> = gone.into_iter().map(|k| (k, None)).collect();
    let refused = replica.delete_all(&batch).await;
    stats.marked_deleted = (batch.len() - refused.len()) as u64;
    failures.extend(
        refused
            .into_iter()
            .map(|(key, _, why)| format!("{}: {why}", replica.locate(&key))),
    );
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

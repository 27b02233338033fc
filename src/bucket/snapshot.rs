//! The source of a bucket set: (in `Mode copy`, the master mirrored into the replica first,)
//! every version under the protected prefix listed in parallel, and the current version of
//! each key written as one JSON line. Listing runs on the async side and reaches this
//! synchronous source over a bounded channel; the run fails if the listing does.
//!
//! That background work starts only when the pipeline starts reading (after the run's own
//! checks), and is stopped — its multipart copies aborted — when reading ends early: a set that
//! failed must not go on changing the replica.
//!
//! After the index, the sorted version ids it references go to a small zstd object beside the
//! archive (`<run>.full.refs.zst`), which the manifest names: gc reads those, not the
//! encrypted index, so it needs no secret key.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use crate::schema::manifest;
use crate::schema::snapshot::SnapshotInfo;
use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::connect;
use super::client::BucketClient;
use super::index_line;
use super::listing::{self, Listed};
use super::mirror::{self, MirrorStats};
use crate::config::{BucketMode, BucketSpec, CycleSettings, CycleType};
use crate::source::{Counts, Report, Source, Warning};
use crate::store::DynStore;

type Prepared = (MirrorStats, listing::Stats, DateTime<Utc>);

pub struct SnapshotSource {
    handle: tokio::runtime::Handle,
    /// Taken when the pipeline starts reading.
    work: Option<Work>,
    store: DynStore,
    spec: BucketSpec,
    refs_key: String,
    warnings: Vec<Warning>,
}

/// What the background work of a snapshot needs.
struct Work {
    master: Arc<BucketClient>,
    replica: Arc<BucketClient>,
    prefix: String,
    mode: BucketMode,
    workers: usize,
}

impl Work {
    /// Mirrors (in `Mode copy`), then lists, in the background.
    fn spawn(self, handle: &tokio::runtime::Handle) -> Running {
        let (tx, rx) = mpsc::channel(self.workers * 2);
        let stop = CancellationToken::new();
        let task = handle.spawn({
            let stop = stop.clone();
            async move {
                let Work {
                    master,
                    replica,
                    prefix,
                    mode,
                    workers,
                } = self;
                let mirrored = match mode {
                    BucketMode::Copy => {
                        mirror::mirror(master, replica.clone(), &prefix, workers, &stop).await?
                    }
                    BucketMode::Replicated => MirrorStats::default(),
                };
                let listed_from = Utc::now();
                // Listing only reads: dropping it mid-way is safe.
                let stats = tokio::select! {
                    stats = listing::list_parallel(replica.clone(), &prefix, workers, tx) => stats?,
                    () = stop.cancelled() => bail!("{}: listing stopped", replica.locate(&prefix)),
                };
                Ok((mirrored, stats, listed_from))
            }
        });
        Running {
            handle: handle.clone(),
            rx,
            task: Some(task),
            stop,
        }
    }
}

/// The background work of a snapshot while the pipeline reads it. Dropped unfinished (writing
/// the index failed, so the set fails), it stops the work and waits until the multipart
/// copies it had open are aborted, so nothing of the failed set is left running or open.
struct Running {
    handle: tokio::runtime::Handle,
    rx: mpsc::Receiver<Vec<Listed>>,
    task: Option<JoinHandle<anyhow::Result<Prepared>>>,
    stop: CancellationToken,
}

impl Running {
    fn finish(mut self) -> anyhow::Result<Prepared> {
        let task = self.task.take().expect("finished once");
        self.handle
            .block_on(task)
            .map_err(|e| anyhow!("listing task failed: {e}"))?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        self.stop.cancel();
        // Listing workers blocked on a full channel see it closed.
        self.rx.close();
        // Blocking is allowed here: the pipeline's thread is not an async one.
        if let Ok(Err(e)) = self.handle.block_on(task) {
            log::debug!("bucket snapshot stopped: {e:#}");
        }
    }
}

/// How many days the oldest snapshot a cycle keeps may be old; `None`: forever.
pub fn promised_days(cycle: &CycleSettings) -> Option<u64> {
    if let Some(days) = cycle.retention_days {
        return Some(days);
    }
    match cycle.cycle_type {
        CycleType::Simple => Some(cycle.frequency * cycle.fulls),
        CycleType::Hanoi if cycle.archive_oldest_disc => None,
        CycleType::Hanoi => Some(cycle.frequency << cycle.discs.saturating_sub(1).min(40)),
    }
}

/// Lifecycle rules of the replica that would expire versions the snapshots still reference.
async fn lifecycle_warnings(
    replica: &BucketClient,
    prefix: &str,
    cycle: &CycleSettings,
) -> anyhow::Result<Vec<Warning>> {
    let promised = promised_days(cycle);
    let rules = replica.noncurrent_expiries().await?;
    Ok(rules
        .into_iter()
        .filter(|r| r.prefix.starts_with(prefix) || prefix.starts_with(&r.prefix))
        .filter(|r| promised.is_none_or(|p| r.days < p))
        .map(|r| Warning {
            path: replica.locate(&r.prefix),
            problem: format!(
                "lifecycle rule '{}' expires noncurrent versions after {} days, but snapshots are kept {}: older snapshots will not restore completely",
                r.rule,
                r.days,
                match promised {
                    Some(p) => format!("{p} days"),
                    None => "forever".into(),
                }
            ),
            unreadable: false,
        })
        .collect())
}

/// Checks the replica; mirroring (in `Mode copy`) and listing start when the pipeline reads.
pub async fn start(
    spec: &BucketSpec,
    s3: &crate::config::S3Spec,
    retry: crate::store::retry::RetryPolicy,
    cycle: &CycleSettings,
    store: DynStore,
    refs_key: String,
) -> anyhow::Result<SnapshotSource> {
    let (master, replica) = connect(spec, s3, retry).await?;
    if !replica.versioning_enabled().await? {
        bail!(
            "{}: versioning is not enabled, so old versions are not kept; enable it on the replica before taking snapshots",
            replica.locate("")
        );
    }
    let prefix = spec.master.key_prefix();
    // The check is advice: credentials that may not read lifecycle rules still take snapshots.
    let warnings = lifecycle_warnings(&replica, &prefix, cycle)
        .await
        .unwrap_or_else(|e| {
            log::warn!("cannot check the replica's lifecycle rules: {e:#}");
            Vec::new()
        });
    for w in &warnings {
        log::warn!("{}: {}", w.path, w.problem);
    }
    Ok(SnapshotSource {
        handle: tokio::runtime::Handle::current(),
        work: Some(Work {
            master,
            replica,
            prefix,
            mode: spec.mode,
            workers: spec.workers,
        }),
        store,
        spec: spec.clone(),
        refs_key,
        warnings,
    })
}

impl Source for SnapshotSource {
    fn format(&self) -> &'static str {
        "jsonl"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let mut refs = BTreeSet::new();
        let (mut keys, mut deleted, mut bytes) = (0u64, 0u64, 0u64);
        let mut running = self
            .work
            .take()
            .context("the snapshot was already written")?
            .spawn(&self.handle);
        while let Some(batch) = running.rx.blocking_recv() {
            for listed in batch.iter().filter(|l| l.version.is_latest) {
                let v = &listed.version;
                out.write_all(&index_line(v))?;
                refs.insert(v.version_id.clone());
                if v.delete_marker {
                    deleted += 1;
                } else {
                    keys += 1;
                    bytes += v.size;
                }
            }
        }
        let (mirrored, stats, listed_from) = running.finish()?;
        let listed_to = Utc::now();
        let mut text = Vec::new();
        for id in &refs {
            text.extend_from_slice(id.as_bytes());
            text.push(b'\n');
        }
        let packed = zstd::encode_all(text.as_slice(), 3).context("compressing version ids")?;
        let refs_sha256 = manifest::sha256_hex(&packed);
        self.handle
            .block_on(self.store.put(&self.refs_key, packed.into()))
            .context("storing the snapshot's version ids")?;
        let info = SnapshotInfo {
            master: self.spec.master.to_string(),
            replica: self.spec.replica.clone(),
            mode: self.spec.mode,
            prefix: self.spec.master.key_prefix(),
            listed_from,
            listed_to,
            keys,
            deleted_keys: deleted,
            versions: stats.versions,
            list_requests: stats.requests,
            copied: mirrored.copied,
            copied_bytes: mirrored.copied_bytes,
            marked_deleted: mirrored.marked_deleted,
            refs: self.refs_key.clone(),
            refs_sha256: Some(refs_sha256),
        };
        log::info!(
            "bucket/{}: {keys} keys ({deleted} deleted) of {} versions listed with {} requests ({} range splits); {} objects copied",
            self.spec.name,
            stats.versions,
            stats.requests,
            stats.splits,
            mirrored.copied
        );
        Ok(Report {
            counts: Counts {
                files: keys,
                content_bytes: bytes,
                ..Counts::default()
            },
            warnings: std::mem::take(&mut self.warnings),
            bucket: Some(info),
            ..Report::default()
        })
    }
}

/// The version ids the snapshot `info` references, from its refs object, checked against the
/// SHA-256 its manifest records.
pub async fn load_refs(store: &DynStore, info: &SnapshotInfo) -> anyhow::Result<BTreeSet<String>> {
    let key = &info.refs;
    let packed = store.get(key).await?;
    if let Some(want) = &info.refs_sha256 {
        manifest::check_sha256(&packed, want).map_err(|m| anyhow!("{}: {m}", store.locate(key)))?;
    }
    let text = zstd::decode_all(packed.as_ref())
        .with_context(|| format!("{}: not a zstd stream", store.locate(key)))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow!("{}: version ids are not UTF-8", store.locate(key)))?;
    Ok(text.lines().map(str::to_string).collect())
}

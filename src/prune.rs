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
use crate::store::{DynStore, StoreError};

/// Uploads and manifest-less archives younger than this may belong to a live run of another
/// configuration. Long, because S3 dates a multipart object (and its upload) from the moment
/// the upload *started*: a run that reads for days must still find its archive when it commits.
pub const DEBRIS_GRACE: Duration = Duration::days(7);

/// Deletes the runs `verdicts` retire (through a dry-run store: records it); returns them.
pub async fn retire<'a>(
    store: &DynStore,
    runs: &'a [Manifest],
    verdicts: &[Verdict],
) -> Result<Vec<&'a Manifest>, StoreError> {
    let mut retired = Vec::new();
    for verdict in verdicts.iter().filter(|v| !v.keep) {
        let Some(m) = runs.iter().find(|m| m.run == verdict.run) else {
            continue; // the planned run itself is never retired by its own plan
        };
        store
            .delete(&layout::manifest_key(&m.host, &m.set, m.run, m.kind))
            .await?;
        for key in m.objects() {
            store.delete(key).await?;
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
    for upload in store.list_uploads(&format!("{host}/")).await? {
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

//! From the configuration to a live store: the configured kind of store (a local directory or
//! an S3 bucket under a prefix), wrapped in retries.
//!
//! It sits above both `config` and `store` so that the store layer never reads the
//! configuration.

use std::sync::Arc;

use crate::config::{Config, S3Spec, StoreSpec};
use crate::store::retry::{RetryPolicy, RetryStore};
use crate::store::{local, optional, s3, DynStore, ErrorKind};

/// The configured store, wrapped in retries. An error here (an unreadable key file, a bad
/// endpoint) is the configuration's.
pub async fn open_store(config: &Config) -> anyhow::Result<DynStore> {
    open_with(config, &config.s3).await
}

/// The store that deletions go through (`prune`, a run's clean-up and retention): with
/// `PruneKeyfile`'s credentials when it is set, else the same as [`open_store`]'s.
pub async fn open_deleting_store(config: &Config) -> anyhow::Result<DynStore> {
    open_with(config, &config.s3.for_deletions()).await
}

async fn open_with(config: &Config, s3: &S3Spec) -> anyhow::Result<DynStore> {
    let inner: DynStore = match &config.store {
        StoreSpec::Local(path) => Arc::new(local::LocalStore::new(path.clone())),
        StoreSpec::S3 { bucket, prefix } => {
            recall_lacking(config);
            let settings = s3_settings(s3, &s3.endpoint, &s3.region);
            let store = s3::S3Store::connect(bucket, prefix, &settings).await?;
            // A bucket that keeps versions (every bucket that locks does): deletions must name
            // versions, or retired runs stay stored and billed under delete markers, and reads
            // see through delete markers (s3::S3Store::versioned). Asked of the bucket, not
            // read from the configuration: a prune host's copy may lack ObjectLock.
            let locking = config.sets.iter().any(|s| s.object_lock.is_some());
            // A server without versioning (s3s-fs answers GetBucketVersioning 501) keeps none.
            let no_versioning = "the bucket is taken to keep no versions";
            let versioned = locking
                || match optional(store.keeps_versions().await, no_versioning) {
                    Ok(keeps) => keeps.unwrap_or(false),
                    // The hint only where it helps: a TLS or region refusal is reported by
                    // the run's next call, under its own name.
                    Err(e) if e.kind == ErrorKind::Denied => {
                        log::warn!(
                            "{e}: deletions will not name versions (allow \
                             s3:GetBucketVersioning if the bucket keeps versions)"
                        );
                        false
                    }
                    Err(e) => {
                        log::warn!("{e}: deletions will not name versions");
                        false
                    }
                };
            if versioned {
                Arc::new(store.versioned())
            } else {
                Arc::new(store)
            }
        }
    };
    Ok(Arc::new(RetryStore::new(inner, retry_policy(config))))
}

/// Where a run keeps the calls the server lacks: one per line, as the store names them.
fn lacking_file(config: &Config) -> std::path::PathBuf {
    config.diff_dir.join("server-lacks")
}

/// Tells the store which calls earlier runs found the server lacking, so that it warns about
/// each once, not on every run. A missing or unreadable file only means warning again.
fn recall_lacking(config: &Config) {
    if let Ok(text) = std::fs::read_to_string(lacking_file(config)) {
        crate::store::lacking_known(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
}

/// Keeps in DiffDir the calls this run found the server lacking (after a run or a prune, never
/// under `-t`). The server may be replaced by one that has them: then they simply succeed.
/// Best effort: without the file, the next run warns once more.
pub fn remember_lacking(config: &Config) {
    if let Err(e) = write_lacking(config) {
        log::debug!("DiffDir: the calls the server lacks were not kept: {e}");
    }
}

fn write_lacking(config: &Config) -> std::io::Result<()> {
    let new = crate::store::lacking_new();
    if new.is_empty() || !config.diff_dir.is_dir() {
        return Ok(());
    }
    let path = lacking_file(config);
    let mut all: std::collections::BTreeSet<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    all.extend(new);
    let text: String = all.into_iter().map(|op| op + "\n").collect();
    crate::atomic::replace_file(&path, text.as_bytes())
}

/// The retry settings of the configuration, for the store and for the S3 calls outside it.
pub fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        attempts: config.retries.max(1),
        ..Default::default()
    }
}

/// The S3 client settings for `endpoint` and `region` (the store's, or a bucket set's own) with
/// the configuration's credentials and timeout.
pub fn s3_settings(
    s3: &S3Spec,
    endpoint: &Option<String>,
    region: &Option<String>,
) -> s3::S3Settings {
    s3::S3Settings {
        endpoint: endpoint.clone(),
        region: region.clone(),
        keyfile: s3.keyfile.clone(),
        timeout: s3.timeout,
        ca_file: s3.ca_file.clone(),
        addressing: s3.addressing,
        profile: s3.profile.clone(),
        role: s3.role.clone(),
        encryption: s3.encryption.clone(),
    }
}

//! Retention after a run (and in `prune`): the runs of a set's cycle that the policy no
//! longer keeps are retired, and for a bucket set the replica versions that only retired
//! snapshots needed are deleted.

use anyhow::bail;
use chrono::{DateTime, Utc};

use crate::bucket::gc;
use crate::catalog;
use crate::config::{Config, SetSpec, SourceSpec};
use crate::connect::retry_policy;
use crate::plan;
use crate::policy::retention::{self, Verdict};
use crate::prune;
use crate::schema::layout::RunId;
use crate::schema::manifest::Manifest;
use crate::store::DynStore;

/// What pruning one set did (or, in a dry run, would do).
pub struct Pruned {
    pub verdicts: Vec<Verdict>,
    pub retired: Vec<String>,
    /// For bucket sets: the replica versions gc deleted.
    pub gc: Option<gc::Outcome>,
}

/// What retention decides for the runs of `set` (in its cycle) now, reading only: what a run
/// with `PruneAfterRun no` logs as left for `s3nap prune`.
pub async fn verdicts(
    store: &DynStore,
    config: &Config,
    set: &SetSpec,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Verdict>> {
    let all = catalog::load(store, &config.host, Some(&set.name)).await?;
    let runs = plan::own_runs(set, &all);
    let refs: Vec<_> = runs.iter().map(plan::run_ref).collect();
    Ok(retention::evaluate(&refs, &plan::rules(set), now))
}

/// Retires the runs of `set` (in its cycle) that retention no longer keeps; for a bucket set,
/// then deletes the replica versions only retired snapshots needed. `store` is the one
/// deletions go through (`connect::open_deleting_store`: PruneKeyfile's credentials).
pub async fn prune_set(
    store: &DynStore,
    config: &Config,
    set: &SetSpec,
    now: DateTime<Utc>,
) -> anyhow::Result<Pruned> {
    let all = catalog::load(store, &config.host, Some(&set.name)).await?;
    let runs = plan::own_runs(set, &all);
    let refs: Vec<_> = runs.iter().map(plan::run_ref).collect();
    let verdicts = retention::evaluate(&refs, &plan::rules(set), now);
    // Read before anything is retired (retiring deletes a snapshot's version list).
    let guarded = match &set.source {
        SourceSpec::Bucket(_) => Some(gc::guard(store, &all, set.cycle.minimum_redundancy).await?),
        _ => None,
    };
    let records = crate::uploads::Records::new(&config.diff_dir);
    let retired: Vec<RunId> = prune::retire(store, &records, &runs, &verdicts)
        .await?
        .iter()
        .map(|m| m.run)
        .collect();
    let gc = match (&set.source, guarded) {
        (SourceSpec::Bucket(spec), Some(guarded)) => {
            // Every run of the set, in any cycle, except those retired here.
            let kept: Vec<Manifest> = all
                .into_iter()
                .filter(|m| !retired.contains(&m.run))
                .collect();
            let outcome = gc::collect(
                store,
                spec,
                // Replica versions are deleted with the deleting credentials too.
                &config.s3.for_deletions(),
                retry_policy(config),
                &kept,
                &guarded,
                // gc deletes replica versions through its own client, outside the store.
                store.dry_run(),
            )
            .await?;
            if !outcome.failures.is_empty() {
                bail!(
                    "gc could not delete {} version(s): {}",
                    outcome.failures.len(),
                    outcome.failures.join("; ")
                );
            }
            Some(outcome)
        }
        _ => None,
    };
    let retired = retired.iter().map(|r| r.to_string()).collect();
    Ok(Pruned {
        verdicts,
        retired,
        gc,
    })
}

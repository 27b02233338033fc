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
use crate::schema::manifest::{Manifest, Owner};
use crate::store::DynStore;

/// What pruning one set did (or, in a dry run, would do).
pub struct Pruned {
    pub verdicts: Vec<Verdict>,
    pub retired: Vec<String>,
    /// For bucket sets: the replica versions gc deleted.
    pub gc: Option<gc::Outcome>,
}

impl Pruned {
    /// The runs kept only because they are locked, with the lock's date.
    pub fn kept_locked(&self) -> Vec<(String, DateTime<Utc>)> {
        self.verdicts
            .iter()
            .filter_map(|v| match &v.reason {
                retention::Reason::Locked { until, .. } => Some((v.run.to_string(), *until)),
                _ => None,
            })
            .collect()
    }
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

/// This configuration, as `prune` checks the sets it prunes against (see
/// `owner::may_prune`): a set another configuration took over is left to it, but only when
/// this configuration has made runs under the Host itself (a copy of the configuration that
/// only prunes prunes every set).
pub struct PruneAs {
    mine: Owner,
    /// Whether this configuration made runs under the Host: read (every manifest under the
    /// Host) only once a set's latest run turns out to be another configuration's.
    ran: tokio::sync::OnceCell<bool>,
}

/// This configuration as `prune` checks it (its identity, read from DiffDir, never made).
pub fn pruning_as(config: &Config) -> std::io::Result<PruneAs> {
    let (mine, _) = super::owner::identify(&config.diff_dir, false)?;
    Ok(PruneAs {
        mine,
        ran: Default::default(),
    })
}

impl PruneAs {
    /// Why `set` (whose runs, any cycle, are `all`) is left alone; `None`: it is pruned.
    async fn leaves_alone(
        &self,
        store: &DynStore,
        host: &str,
        set: &SetSpec,
        all: &[Manifest],
    ) -> anyhow::Result<Option<String>> {
        let Some(why) = super::owner::may_prune(set, Some(&self.mine), all) else {
            return Ok(None);
        };
        let ran = self
            .ran
            .get_or_try_init(|| async {
                let each = catalog::load_each(store, host, None).await?;
                // Unreadable manifests do not count (`catalog` reports them elsewhere).
                let runs: Vec<Manifest> = each.into_iter().filter_map(|(_, m)| m.ok()).collect();
                let ran = super::owner::identity_if_it_ran(self.mine.clone(), &runs).is_some();
                Ok::<_, anyhow::Error>(ran)
            })
            .await?;
        Ok(ran.then_some(why))
    }
}

/// Keeps the runs retention retires whose objects are still under Object Lock (and the bases
/// of those that are DIFFs): deleting them would be refused, and prune must not fail for
/// it. The manifest's lock stands for the run's: it is set last, on the latest server time of
/// the commit, so no other object of the run is locked longer. Read by HEAD (the lock as
/// stored, whatever the configuration says now) against the server's clock.
async fn keep_locked(
    store: &DynStore,
    runs: &[Manifest],
    verdicts: &mut [Verdict],
) -> anyhow::Result<()> {
    let mut server_now = None;
    for v in verdicts.iter_mut().filter(|v| !v.keep) {
        let Some(m) = runs.iter().find(|m| m.run == v.run) else {
            continue;
        };
        let key = crate::schema::layout::manifest_key(&m.host, &m.set, m.run, m.kind);
        let Some(lock) = store.head(&key).await?.and_then(|i| i.lock) else {
            continue;
        };
        let now = match server_now {
            Some(now) => now,
            None => *server_now.insert(store.server_time().await?),
        };
        if lock.until > now {
            v.keep = true;
            let then = Box::new(v.reason.clone());
            v.reason = retention::Reason::Locked {
                until: lock.until,
                then,
            };
        }
    }
    // A kept DIFF keeps its chain.
    loop {
        let kept_bases: Vec<(RunId, RunId)> = verdicts
            .iter()
            .filter(|v| v.keep)
            .filter_map(|v| runs.iter().find(|m| m.run == v.run))
            .filter_map(|m| m.base_run.map(|b| (b, m.run)))
            .collect();
        let mut changed = false;
        for v in verdicts.iter_mut().filter(|v| !v.keep) {
            if let Some((_, by)) = kept_bases.iter().find(|(b, _)| *b == v.run) {
                v.keep = true;
                v.reason = retention::Reason::BaseOf(*by);
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
    }
}

/// Retires the runs of `set` (in its cycle) that retention no longer keeps; for a bucket set,
/// then deletes the replica versions only retired snapshots needed. `store` is the one
/// deletions go through (`connect::open_deleting_store`: PruneKeyfile's credentials). With
/// `mine` (see [`pruning_as`]), a set another configuration took over is left alone, with a
/// warning.
pub async fn prune_set(
    store: &DynStore,
    config: &Config,
    set: &SetSpec,
    mine: Option<&PruneAs>,
    now: DateTime<Utc>,
) -> anyhow::Result<Pruned> {
    let all = catalog::load(store, &config.host, Some(&set.name)).await?;
    let left = match mine {
        Some(mine) => mine.leaves_alone(store, &config.host, set, &all).await?,
        None => None,
    };
    if let Some(why) = left {
        log::warn!("{why}");
        return Ok(Pruned {
            verdicts: vec![],
            retired: vec![],
            gc: None,
        });
    }
    let runs = plan::own_runs(set, &all);
    let refs: Vec<_> = runs.iter().map(plan::run_ref).collect();
    let mut verdicts = retention::evaluate(&refs, &plan::rules(set), now);
    keep_locked(store, &runs, &mut verdicts).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;

    use super::*;
    use crate::policy::retention::Reason;
    use crate::schema::layout::{self, Kind};
    use crate::store::memory::{ManualClock, MemoryStore};
    use crate::store::{LockMode, ObjectLock};

    fn day(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + n * 86_400, 0).unwrap()
    }

    fn retiring(m: &Manifest) -> Verdict {
        Verdict {
            run: m.run,
            keep: false,
            reason: Reason::OlderThan { days: 1 },
        }
    }

    #[tokio::test]
    async fn a_locked_run_is_kept_with_its_base_until_the_lock_expires_on_the_stores_clock() {
        let clock = ManualClock::new(day(10));
        let memory = Arc::new(MemoryStore::with_clock(clock.clock()).with_object_lock());
        let store: DynStore = memory.clone();
        let full = crate::schema::manifest::sample("dir/x", RunId::at(day(1)), Kind::Full, None);
        let diff =
            crate::schema::manifest::sample("dir/x", RunId::at(day(2)), Kind::Diff, Some(full.run));
        let other = crate::schema::manifest::sample("dir/x", RunId::at(day(3)), Kind::Full, None);
        let runs = vec![full.clone(), diff.clone(), other.clone()];
        for m in &runs {
            let key = layout::manifest_key("h", "dir/x", m.run, m.kind);
            memory.insert(&key, m.to_json(), day(4));
        }
        // The DIFF locked until day 12; the other FULL's lock has expired.
        let lock = |until| ObjectLock {
            mode: LockMode::Governance,
            until,
        };
        let key = |m: &Manifest| layout::manifest_key("h", "dir/x", m.run, m.kind);
        store.retain(&key(&diff), &lock(day(12))).await.unwrap();
        clock.set(day(5));
        store.retain(&key(&other), &lock(day(6))).await.unwrap();
        clock.set(day(10));

        let mut verdicts: Vec<Verdict> = runs.iter().map(retiring).collect();
        keep_locked(&store, &runs, &mut verdicts).await.unwrap();
        assert_eq!(
            verdicts.iter().map(|v| v.keep).collect::<Vec<_>>(),
            vec![true, true, false]
        );
        assert_eq!(verdicts[0].reason, Reason::BaseOf(diff.run));
        assert_eq!(
            verdicts[1].reason.to_string(),
            format!(
                "kept: locked until {}; then retired by a later prune (older than RetentionPolicy 1 days)",
                day(12).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        );
        // Deleting it now is refused by the store, as S3 refuses it.
        assert!(store.delete(&key(&diff)).await.is_err());

        clock.set(day(12) + Duration::seconds(1));
        let mut verdicts: Vec<Verdict> = runs.iter().map(retiring).collect();
        keep_locked(&store, &runs, &mut verdicts).await.unwrap();
        assert!(verdicts.iter().all(|v| !v.keep));
        store.delete(&key(&diff)).await.unwrap();
    }
}

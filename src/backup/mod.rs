//! One backup run: every configured set through the pipeline into the store.
//!
//! Each set goes through [`run_all`]: [`Planner::plan`] (the plan, and the base's local start)
//! → [`run_set`] → [`prune_set`] (retention). `run_set` reads as a short sequence: the source →
//! stream it into a multipart upload that an [`ArchiveCommit`] owns → commit (complete, check
//! the size, store the manifest) or abort → save the local state for the next DIFF. Any
//! failure before the manifest is stored removes what the run stored, so no partial run ever
//! appears; earlier runs are never touched; a failed set does not stop the others.
//! docs/ARCHITECTURE.md, "A run of one set", tells the whole story.

mod commit;
mod hooks;
mod local;
mod owner;
mod planner;
mod quilt;
mod retain;
mod sets;
mod sources;
mod stream;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;

use crate::config::{Config, SetSpec, SourceSpec};
use crate::error::ExitStatus;
use crate::keys;
use crate::plan::{Action, BaseData, LocalStart, SetPlan};
use crate::policy::lock::earliest_retirement;
use crate::schema::manifest::{self, Manifest, SourceInfo};
use crate::source::state::Identity;
use crate::source::{Source, Warning};
use crate::store::{DynStore, UploadOptions};

use commit::{ArchiveCommit, RunKeys};
pub use local::prepare_diff_dir;
pub use owner::identify;
pub use planner::Planner;
pub use quilt::{claim_secret, load_secret};
pub use retain::{prune_set, pruning_as, verdicts, Pruned};
pub use sets::{expand_sets, FoundSet, UnreadableDirectory};
pub use sources::{archive_format, archive_key, extension};
use stream::Streamed;

/// What a run needs besides the configuration.
pub struct RunContext {
    pub store: DynStore,
    /// The store deletions go through (PruneKeyfile's credentials when set); `None` with
    /// `PruneAfterRun no`: the run deletes nothing at all, and leaves it to `s3nap prune`.
    pub deleter: Option<DynStore>,
    pub certs: Arc<Vec<Cert>>,
    pub progress: crate::progress::Progress,
    /// This configuration, as its runs' manifests name it (see `owner`).
    pub owner: manifest::Owner,
    /// `owner`'s identity was made by this run (see `owner::identify`).
    pub new_owner: bool,
    /// `--take-over`: back up sets whose latest run another configuration made.
    pub take_over: bool,
}

/// What became of one set in a run.
pub enum Outcome {
    /// Committed; with the runs retention retired afterwards, and what went wrong after the
    /// commit without undoing it (the local state for the next DIFF not saved).
    Committed {
        manifest: Box<Manifest>,
        retired: Vec<String>,
        /// Runs retention retires that were kept because they are still locked, with the
        /// date (see `retain`).
        kept_locked: Vec<(String, DateTime<Utc>)>,
        problems: Vec<String>,
    },
    Skipped(String),
    Failed(anyhow::Error),
}

pub struct SetOutcome {
    pub set: String,
    pub cycle: String,
    pub outcome: Outcome,
    pub seconds: f64,
}

impl Outcome {
    /// Committed with warnings in its manifest or problems after the commit.
    pub fn warned(&self) -> bool {
        match self {
            Outcome::Committed {
                manifest, problems, ..
            } => !manifest.warnings.is_empty() || !problems.is_empty(),
            _ => false,
        }
    }
}

/// The exit status of a run: any failed set → 2, else any warning → 1.
pub fn exit_status(outcomes: &[SetOutcome]) -> ExitStatus {
    let failed = outcomes
        .iter()
        .any(|o| matches!(o.outcome, Outcome::Failed(_)));
    let warned = outcomes.iter().any(|o| o.outcome.warned());
    if failed {
        ExitStatus::Failed
    } else if warned {
        ExitStatus::Warnings
    } else {
        ExitStatus::Ok
    }
}

/// Loads the recipients' certificates once per run.
pub fn load_certs(config: &Config) -> anyhow::Result<Arc<Vec<Cert>>> {
    if config.recipients.is_empty() {
        log::warn!("no GpgRecipient configured: archives are stored unencrypted");
        return Ok(Arc::new(Vec::new()));
    }
    Ok(Arc::new(keys::recipient_certs(
        &config.recipients,
        config.keyring.as_deref(),
    )?))
}

/// Runs `sets` (from [`expand_sets`]) in order: plan, run or skip, then retire what the policy
/// no longer keeps. Each outcome stands on its own.
pub async fn run_all(
    config: &Config,
    ctx: &RunContext,
    now: DateTime<Utc>,
    force: bool,
    sets: Vec<FoundSet>,
) -> Vec<SetOutcome> {
    let mut outcomes = Vec::new();
    let mut planner = Planner::new(&ctx.store, config, now, force)
        .owned_by((Some(&ctx.owner), ctx.new_owner), ctx.take_over);
    for (set, found) in sets {
        let set = &set;
        let started = Instant::now();
        let outcome = match planner.plan(set, found).await {
            Err(e) => Outcome::Failed(e),
            Ok(p) => match &p.action {
                Action::Skip { reason } => Outcome::Skipped(reason.clone()),
                Action::Run {
                    kind,
                    position,
                    run,
                    ..
                } => {
                    log::info!(
                        "{} [{}]: starting {kind} run in slot {}",
                        set.name,
                        set.cycle_label(),
                        position.slot
                    );
                    let hooks = hooks::Hooks::of(set, &config.host, *run, *kind);
                    let (ran, status) = match hooks.before().await {
                        Err(e) => (Err(e), hooks::Status::BeforeFailed),
                        Ok(()) => match run_set(config, ctx, p, now).await {
                            Ok(done) => (Ok(done), hooks::Status::Committed),
                            Err(e) => (Err(e), hooks::Status::Failed),
                        },
                    };
                    let after = hooks.after(status).await;
                    match (ran, after) {
                        (Ok((manifest, mut problems)), after) => {
                            problems.extend(after.map(|a| format!("After failed: {a}")));
                            retain_after(config, ctx, set, now, manifest, problems).await
                        }
                        (Err(e), None) => Outcome::Failed(e),
                        (Err(e), Some(a)) => {
                            Outcome::Failed(e.context(format!("After failed too: {a}")))
                        }
                    }
                }
            },
        };
        outcomes.push(SetOutcome {
            set: set.name.clone(),
            cycle: set.cycle_label().to_string(),
            outcome,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    outcomes
}

/// The outcome of a committed run, once retention has retired what the policy no longer keeps
/// (with `PruneAfterRun no`: once what prune will retire is logged).
async fn retain_after(
    config: &Config,
    ctx: &RunContext,
    set: &SetSpec,
    now: DateTime<Utc>,
    manifest: Manifest,
    problems: Vec<String>,
) -> Outcome {
    match &ctx.deleter {
        Some(deleter) => match prune_set(deleter, config, set, None, now).await {
            Ok(pruned) => Outcome::Committed {
                manifest: Box::new(manifest),
                kept_locked: pruned.kept_locked(),
                retired: pruned.retired,
                problems,
            },
            Err(e) => Outcome::Failed(e.context(format!(
                "run {} committed, but pruning failed",
                manifest.run
            ))),
        },
        None => {
            log_left_to_prune(&ctx.store, config, set, now).await;
            Outcome::Committed {
                manifest: Box::new(manifest),
                retired: Vec::new(),
                kept_locked: Vec::new(),
                problems,
            }
        }
    }
}

/// With `PruneAfterRun no`: logs the runs of `set` that `s3nap prune` will retire (the run
/// itself deletes nothing). A catalog that cannot be read only loses this notice.
async fn log_left_to_prune(store: &DynStore, config: &Config, set: &SetSpec, now: DateTime<Utc>) {
    match verdicts(store, config, set, now).await {
        Ok(verdicts) => {
            for v in verdicts.iter().filter(|v| !v.keep) {
                log::info!(
                    "{} [{}]: PruneAfterRun no: s3nap prune will retire {} ({})",
                    set.name,
                    set.cycle_label(),
                    v.run,
                    v.reason
                );
            }
        }
        Err(e) => log::warn!(
            "{} [{}]: cannot tell what s3nap prune will retire: {e:#}",
            set.name,
            set.cycle_label()
        ),
    }
}

/// The facts of a planned run that its manifest records.
struct Planned {
    set: SetSpec,
    run: crate::schema::layout::RunId,
    kind: crate::schema::layout::Kind,
    position: crate::policy::cycle::Position,
    base_run: Option<crate::schema::layout::RunId>,
    forced: bool,
    local: LocalStart,
    /// Stored bytes expected: the set's last run of the same kind, else its last run.
    expected: Option<u64>,
}

impl Planned {
    fn of(plan: SetPlan) -> anyhow::Result<Planned> {
        let SetPlan {
            set, action, runs, ..
        } = plan;
        let Action::Run {
            position,
            kind,
            run,
            base,
            forced,
            local,
            ..
        } = action
        else {
            bail!("{}: nothing to run", set.name);
        };
        let expected = expected_size(&runs, kind);
        Ok(Planned {
            expected,
            set,
            run,
            kind,
            position,
            base_run: base.map(|b| b.run),
            forced,
            local,
        })
    }
}

/// The stored size a run of `kind` is expected to have: that of the set's last run of the
/// same kind (a DIFF is not a FULL's size), else of its last run; `None` for a first run.
fn expected_size(runs: &[Manifest], kind: crate::schema::layout::Kind) -> Option<u64> {
    runs.iter()
        .rev()
        .find(|m| m.kind == kind)
        .or(runs.last())
        .map(|m| m.archive.stored_size)
}

/// Executes the run `plan` decided on (by [`Planner`]), started at `now`. Returns the stored
/// manifest and the problems met after the commit (see `local`).
pub async fn run_set(
    config: &Config,
    ctx: &RunContext,
    plan: SetPlan,
    now: DateTime<Utc>,
) -> anyhow::Result<(Manifest, Vec<String>)> {
    let mut planned = Planned::of(plan)?;
    let set = &planned.set;
    if let Some(w) = &planned.local.warning {
        log::warn!("{}: {}", w.path, w.problem);
    }
    let keys = RunKeys::new(config, set, planned.run, planned.kind);
    let lock = set.object_lock.map(|l| commit::RunLock {
        mode: l.mode,
        retirement: earliest_retirement(
            &set.cycle,
            set.source.incremental(),
            now,
            Some(planned.position),
        ),
        run: now,
        terms: l.terms(),
    });
    // Before anything of the set is stored: the quilt must be keyed with this secret.
    let quilt = match set.quilt {
        Some(_) => Some(start_quilt(config, ctx, set, lock.clone()).await?),
        None => None,
    };
    let start = std::mem::take(&mut planned.local.data);
    let quilter = quilt
        .clone()
        .map(|q| Box::new(q) as Box<dyn crate::source::quilt::Quilter>);
    let (source, source_info) = start_source(config, ctx, set, &keys, start, quilter).await?;
    let format = source.format();
    // -t printed this key: the source and the certificates must agree with it.
    let encrypted = !ctx.certs.is_empty();
    if format != archive_format(&set.source) || encrypted == config.recipients.is_empty() {
        bail!(
            "internal error: {} produces {format}{}, but its key is {}",
            set.name,
            if encrypted { " encrypted" } else { "" },
            keys.archive
        );
    }
    let stores = commit::Stores {
        store: &ctx.store,
        deleter: ctx.deleter.as_ref(),
    };
    let options = UploadOptions {
        storage_class: set.storage_class,
        lock: None, // ArchiveCommit::begin sets it, on the server's clock.
    };
    let commit = ArchiveCommit::begin(
        stores,
        &config.diff_dir,
        &config.host,
        &set.name,
        &keys,
        &options,
        lock,
    )
    .await?;
    let source_started = Utc::now();
    let target = stream::Target {
        store: &ctx.store,
        archive: commit.archive(),
        upload_id: commit.upload_id(),
        certs: ctx.certs.clone(),
        progress: &ctx.progress,
        memory_limit: match &quilt {
            Some(_) => quilt::quilt_share(config.memory_limit),
            None => config.memory_limit,
        },
    };
    let streamed = match stream::stream(config, set, source, target, planned.expected).await {
        Ok(streamed) => streamed,
        Err(e) => {
            commit.abort().await;
            return Err(e);
        }
    };
    // Every content key the archive references must exist when the manifest is stored, and
    // with ObjectLock be locked at least as long as the run's own objects.
    let quilt_use = match &quilt {
        None => None,
        Some(q) => match async { q.confirm(commit.run_lock().await?.as_ref()).await }.await {
            Ok(quilt_use) => {
                log::info!(
                    "{} [{}]: quilt: {} content object(s) uploaded ({} bytes), {} file(s) \
                     reused, {} key(s) referenced",
                    set.name,
                    set.cycle_label(),
                    quilt_use.uploaded,
                    quilt_use.uploaded_bytes,
                    quilt_use.reused,
                    quilt_use.content.len()
                );
                Some(quilt_use)
            }
            Err(e) => {
                commit.abort().await;
                return Err(e);
            }
        },
    };
    let Streamed {
        mut report,
        plaintext,
        stored,
        receipts,
        over_limit,
    } = streamed;
    let next = local::NextStart {
        state: report.state.take(),
        revision: report
            .program
            .as_ref()
            .and_then(|p| p.revisions)
            .map(|r| r.1),
        legacy: planned.local.legacy.take(),
        base_staged: planned.local.staged.take(),
    };
    // Staged before the manifest: a kill between the manifest and the promotion still leaves
    // the next run its start.
    let (staged, mut problems) =
        local::stage(&config.diff_dir, &Identity::of(set), planned.run, next);
    problems.extend(over_limit);
    if let Some(q) = &quilt {
        problems.extend(q.problems());
    }
    let times = (now, source_started);
    let committed = commit
        .commit(receipts, &stored, |ranges| {
            let archive = manifest::Archive {
                key: keys.archive.clone(),
                stored_size: stored.size,
                sha256: stored.sha256.clone(),
                plaintext_size: plaintext,
                format: format.to_string(),
                compression: set.compression,
                recipients: ctx.certs.iter().map(|c| c.fingerprint().to_hex()).collect(),
                parts: stored.parts,
                ranges: Some(ranges),
            };
            let mut manifest = manifest_of(config, &planned, times, archive, source_info, report);
            manifest.owner = Some(ctx.owner.clone());
            manifest.format = Manifest::format_for(quilt_use.as_ref());
            manifest.quilt = quilt_use;
            manifest
        })
        .await;
    match committed {
        Ok(manifest) => {
            // Committed: only now may the next DIFF build on this run.
            problems.extend(staged.promote());
            Ok((manifest, problems))
        }
        Err(e) => {
            staged.discard();
            Err(e)
        }
    }
}

/// The source of the run and what its manifest says of it when known beforehand; a bucket
/// snapshot starts asynchronously and stores its version ids beside the archive.
async fn start_source(
    config: &Config,
    ctx: &RunContext,
    set: &SetSpec,
    keys: &RunKeys,
    start: BaseData,
    quilter: Option<Box<dyn crate::source::quilt::Quilter>>,
) -> anyhow::Result<(Box<dyn Source>, Option<SourceInfo>)> {
    match (&set.source, &keys.refs) {
        (SourceSpec::Bucket(spec), Some(refs_key)) => {
            let snapshot = crate::bucket::snapshot::start(
                spec,
                &config.s3,
                crate::connect::retry_policy(config),
                &set.cycle,
                ctx.store.clone(),
                refs_key.clone(),
            )
            .await?;
            Ok((Box::new(snapshot), None))
        }
        _ => sources::source_for(set, start, quilter),
    }
}

/// The quilt of a quilted set's run: the secret read from QuiltKeyFile and claimed in the
/// store (a host with another secret is refused before anything is stored).
async fn start_quilt(
    config: &Config,
    ctx: &RunContext,
    set: &SetSpec,
    lock: Option<commit::RunLock>,
) -> anyhow::Result<quilt::QuiltRun> {
    let Some(path) = &config.quilt_key_file else {
        bail!(
            "{} has Quilt yes, but no QuiltKeyFile is configured",
            set.name
        );
    };
    let secret = load_secret(path)?;
    claim_secret(&ctx.store, &secret)
        .await
        .with_context(|| format!("QuiltKeyFile {}", path.display()))?;
    let settings = quilt::QuiltSettings::new(
        config,
        set,
        ctx.store.clone(),
        secret,
        ctx.certs.clone(),
        lock,
    );
    Ok(quilt::QuiltRun::new(settings))
}

/// The manifest of the run `planned`, started at `times.0` by the run's clock (which follows
/// `--now`) and reading its source from `times.1` on the real clock.
fn manifest_of(
    config: &Config,
    planned: &Planned,
    times: (DateTime<Utc>, DateTime<Utc>),
    archive: manifest::Archive,
    source_info: Option<SourceInfo>,
    report: crate::source::Report,
) -> Manifest {
    let set = &planned.set;
    let (now, source_started) = times;
    let source = match (source_info, report.bucket) {
        (Some(info), _) => info,
        (None, Some(snapshot)) => SourceInfo::Bucket(snapshot),
        (None, None) => SourceInfo::Program {
            kind: sources::program_kind(&set.source).to_string(),
            run: report.program.unwrap_or_default(),
        },
    };
    let mut warnings: Vec<Warning> = report.warnings;
    warnings.extend(planned.local.warning.clone());
    Manifest {
        format: manifest::FORMAT_VERSION,
        tool: format!("s3nap {}", env!("CARGO_PKG_VERSION")),
        host: config.host.clone(),
        set: set.name.clone(),
        run: planned.run,
        kind: planned.kind,
        base_run: planned.base_run,
        cycle: set.cycle.name.clone(),
        slot: Some(planned.position.slot),
        period: Some(planned.position.period),
        forced: planned.forced,
        started: now,
        // On the same clock as `started`, which follows --now.
        finished: now + (Utc::now() - source_started),
        source_started: Some(source_started),
        archive,
        source,
        counts: report.counts,
        warnings,
        owner: None, // the caller's
        quilt: None, // the caller's, when the set is quilted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::layout::Kind;

    #[test]
    fn a_run_expects_the_size_of_the_last_run_of_its_kind() {
        let run = |day: u32, kind, size| {
            let mut m = manifest::sample(
                "dir/srv",
                format!("202611{day:02}T030000Z").parse().unwrap(),
                kind,
                None,
            );
            m.archive.stored_size = size;
            m
        };
        let runs = vec![
            run(1, Kind::Full, 1000),
            run(2, Kind::Diff, 10),
            run(3, Kind::Diff, 20),
        ];
        assert_eq!(expected_size(&runs, Kind::Diff), Some(20));
        assert_eq!(expected_size(&runs, Kind::Full), Some(1000));
        assert_eq!(
            expected_size(&runs[..1], Kind::Diff),
            Some(1000),
            "no DIFF yet"
        );
        assert_eq!(expected_size(&[], Kind::Full), None);
    }
}

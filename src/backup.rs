//! One backup run: every configured set through the pipeline into the store.
//!
//! Per set: start a multipart upload under a new key, run the CPU stages on a blocking thread
//! and the uploader on the async side, and commit only if both finished cleanly — complete the
//! upload, check the stored size, then write the manifest. Any failure aborts the multipart
//! upload so no partial object ever appears; earlier runs are never touched. A failed set does
//! not stop the others (DESIGN.md section 7).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use tokio::sync::mpsc;

use crate::catalog;
use crate::config::{Config, SetSpec, SourceSpec};
use crate::keys;
use crate::layout;
use crate::layout::Kind;
use crate::manifest::{self, Manifest, SourceInfo};
use crate::pipeline::compress::{Compression, Compressor};
use crate::pipeline::encrypt::Sealer;
use crate::pipeline::parts::{PartWriter, Stored};
use crate::pipeline::upload::upload_parts;
use crate::pipeline::Counter;
use crate::plan::{self, Action, SetPlan};
use crate::prune;
use crate::source::state::{self, State};
use crate::source::tree::TreeSource;
use crate::source::{Report, Source, Warning};
use crate::store::DynStore;

/// Parts waiting in the channel besides those in flight.
const CHANNEL_DEPTH: usize = 2;

/// What a run needs besides the configuration.
pub struct RunContext {
    pub store: DynStore,
    pub certs: Arc<Vec<Cert>>,
    pub progress: crate::progress::Progress,
}

/// What became of one set in a run.
pub enum Outcome {
    /// Committed; with the runs retention retired afterwards.
    Committed {
        manifest: Box<Manifest>,
        retired: Vec<String>,
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

impl SetOutcome {
    /// Files that could not be read: the run committed, but not everything is in it.
    pub fn unreadable(&self) -> usize {
        match &self.outcome {
            Outcome::Committed { manifest, .. } => {
                manifest.warnings.iter().filter(|w| w.unreadable).count()
            }
            _ => 0,
        }
    }
}

/// The file name layers of an archive: `tar.zst.gpg`, `tar.xz`, `tar`.
pub fn extension(format: &str, compression: Compression, encrypted: bool) -> String {
    let mut ext = format.to_string();
    if let Some(c) = compression.extension() {
        ext.push('.');
        ext.push_str(c);
    }
    if encrypted {
        ext.push_str(".gpg");
    }
    ext
}

/// The source of `set`; a DIFF compares with `base`, the state of its base run.
fn source_for(set: &SetSpec, base: Option<State>) -> anyhow::Result<(Box<dyn Source>, SourceInfo)> {
    match &set.source {
        SourceSpec::Directory {
            path,
            excludes,
            one_file_system,
        } => Ok((
            Box::new(TreeSource {
                root: path.clone(),
                excludes: excludes.clone(),
                one_file_system: *one_file_system,
                base,
            }),
            SourceInfo::Directory {
                path: path.display().to_string(),
                excludes: excludes.iter().map(|p| p.display().to_string()).collect(),
            },
        )),
        other => bail!(
            "{} sets are planned but this version of s3nap cannot dump them yet ({})",
            match other {
                SourceSpec::MySql { .. } => "MySQL",
                SourceSpec::PostgreSql { .. } => "PostgreSQL",
                SourceSpec::Subversion { .. } => "Subversion",
                _ => "SubversionDir",
            },
            other.target()
        ),
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

/// Aborts multipart uploads of this host that an earlier, interrupted run left open. Only
/// called while holding the run lock, so none of them can belong to a live run of this
/// configuration.
pub async fn abort_stale_uploads(store: &DynStore, host: &str, before: DateTime<Utc>) {
    let pending = match store.list_uploads(&format!("{host}/")).await {
        Ok(p) => p,
        Err(e) => {
            log::warn!("cannot list unfinished uploads: {e}");
            return;
        }
    };
    for upload in pending {
        if upload.initiated.is_some_and(|t| t >= before) {
            continue;
        }
        match store.abort_upload(&upload.key, &upload.upload_id).await {
            Ok(()) => log::info!(
                "aborted the unfinished upload of {} left by an interrupted run",
                store.locate(&upload.key)
            ),
            Err(e) => log::warn!("cannot abort unfinished upload: {e}"),
        }
    }
}

/// Plans `set` against the store's catalog of its runs.
pub async fn plan(
    store: &DynStore,
    config: &Config,
    set: &SetSpec,
    now: DateTime<Utc>,
    force: bool,
) -> anyhow::Result<SetPlan> {
    let all = catalog::load(store, &config.host, Some(&set.name)).await?;
    Ok(plan::plan_set(set, &all, now, force))
}

/// Runs every selected set in order: plan, run or skip, then retire what the policy no longer
/// keeps. Each outcome stands on its own.
pub async fn run_all(
    config: &Config,
    ctx: &RunContext,
    now: DateTime<Utc>,
    force: bool,
    only: &[String],
) -> Vec<SetOutcome> {
    let mut outcomes = Vec::new();
    for set in config.selected_sets(only) {
        let started = Instant::now();
        let outcome = match plan(&ctx.store, config, set, now, force).await {
            Err(e) => Outcome::Failed(e),
            Ok(p) => match &p.action {
                Action::Skip { reason } => Outcome::Skipped(reason.clone()),
                Action::Run { kind, position, .. } => {
                    log::info!(
                        "{} [{}]: starting {kind} run in slot {}",
                        set.name,
                        set.cycle_label(),
                        position.slot
                    );
                    match run_set(config, ctx, &p, now).await {
                        Ok(manifest) => match prune_set(ctx, config, set, now).await {
                            Ok(retired) => Outcome::Committed {
                                manifest: Box::new(manifest),
                                retired,
                            },
                            Err(e) => Outcome::Failed(e.context(format!(
                                "run {} committed, but pruning failed",
                                manifest.run
                            ))),
                        },
                        Err(e) => Outcome::Failed(e),
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

/// Retires the runs of `set` (in its cycle) that retention no longer keeps.
pub async fn prune_set(
    ctx: &RunContext,
    config: &Config,
    set: &SetSpec,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<String>> {
    let all = catalog::load(&ctx.store, &config.host, Some(&set.name)).await?;
    let runs = plan::own_runs(set, &all);
    let refs: Vec<_> = runs.iter().map(plan::run_ref).collect();
    let verdicts = crate::policy::retention::evaluate(&refs, &plan::rules(set), now);
    let retired = prune::retire(&ctx.store, &runs, &verdicts, false).await?;
    Ok(retired.iter().map(|m| m.run.to_string()).collect())
}

/// Executes the run `plan` decided on, started at `now`.
pub async fn run_set(
    config: &Config,
    ctx: &RunContext,
    plan: &SetPlan,
    now: DateTime<Utc>,
) -> anyhow::Result<Manifest> {
    let Action::Run {
        position,
        kind,
        run,
        base,
        forced,
        ..
    } = &plan.action
    else {
        bail!("{}: nothing to run", plan.set.name);
    };
    let (set, run) = (&plan.set, *run);
    let store = &ctx.store;
    let state_path = state::path(&config.diff_dir, &set.name, set.cycle_label());
    let (kind, base, base_state, state_warning) = base_state(*kind, base.as_deref(), &state_path);
    let (source, source_info) = source_for(set, base_state)?;
    let encrypted = !ctx.certs.is_empty();
    let ext = extension(source.format(), set.compression, encrypted);
    let archive_key = layout::archive_key(&config.host, &set.name, run, kind, &ext);
    let manifest_key = layout::manifest_key(&config.host, &set.name, run, kind);
    for key in [&manifest_key, &archive_key] {
        if store.head(key).await?.is_some() {
            bail!(
                "{} already exists: runs are never overwritten",
                store.locate(key)
            );
        }
    }

    let source_started = Utc::now();
    let upload_id = store.create_upload(&archive_key).await?;
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let uploader = tokio::spawn(upload_parts(
        store.clone(),
        archive_key.clone(),
        upload_id.clone(),
        rx,
        config.parallel_uploads,
        {
            let progress = ctx.progress.clone();
            move |n| progress.in_flight(n)
        },
    ));
    let certs = ctx.certs.clone();
    let compression = set.compression;
    let chunk = config.chunk_size;
    let progress = ctx.progress.clone();
    progress.start_set(&set.name);
    let on_read: Box<dyn FnMut(u64) + Send> = Box::new(move |n| progress.read(n));
    let producer = tokio::task::spawn_blocking(move || {
        produce(source, compression, &certs, tx, chunk, on_read)
    });
    let (produced, uploaded) = tokio::join!(producer, uploader);
    let produced = produced
        .map_err(|e| anyhow!("pipeline thread failed: {e}"))
        .and_then(|r| r);
    let uploaded = uploaded
        .map_err(|e| anyhow!("upload task failed: {e}"))
        .and_then(|r| r.map_err(anyhow::Error::from));

    let (report, plaintext, stored, receipts) = match (produced, uploaded) {
        (Ok((report, plaintext, stored)), Ok(receipts)) => (report, plaintext, stored, receipts),
        (produced, uploaded) => {
            // The upload's own error is the cause when both failed: the pipeline only saw the
            // channel close.
            let cause = match (uploaded, produced) {
                (Err(e), _) => e.context(format!("uploading {}", store.locate(&archive_key))),
                (Ok(_), Err(e)) => e,
                (Ok(_), Ok(_)) => unreachable!("handled above"),
            };
            if let Err(abort) = store.abort_upload(&archive_key, &upload_id).await {
                log::warn!("{abort}; the next run aborts it");
            }
            return Err(cause);
        }
    };

    if let Err(e) = store
        .complete_upload(&archive_key, &upload_id, receipts)
        .await
    {
        if let Err(abort) = store.abort_upload(&archive_key, &upload_id).await {
            log::warn!("{abort}; the next run aborts it");
        }
        return Err(e.into());
    }
    let info = store.head(&archive_key).await?.ok_or_else(|| {
        anyhow!(
            "{}: missing right after its upload completed",
            store.locate(&archive_key)
        )
    })?;
    if info.size != stored.size {
        bail!(
            "{}: stored {} bytes but the pipeline produced {}; not committing this run",
            store.locate(&archive_key),
            info.size,
            stored.size
        );
    }

    let new_state = report.state;
    let mut warnings = report.warnings;
    warnings.extend(state_warning);
    let manifest = Manifest {
        format: manifest::FORMAT_VERSION,
        tool: format!("s3nap {}", env!("CARGO_PKG_VERSION")),
        host: config.host.clone(),
        set: set.name.clone(),
        run,
        kind,
        base_run: base.map(|b| b.run),
        cycle: set.cycle.name.clone(),
        slot: Some(position.slot),
        period: Some(position.period),
        forced: *forced,
        started: now,
        // On the same clock as `started`, which follows --now.
        finished: now + (Utc::now() - source_started),
        source_started: Some(source_started),
        archive: manifest::Archive {
            key: archive_key.clone(),
            stored_size: stored.size,
            sha256: stored.sha256,
            plaintext_size: plaintext,
            format: "tar".into(),
            compression,
            recipients: ctx.certs.iter().map(|c| c.fingerprint().to_hex()).collect(),
            parts: stored.parts,
        },
        source: source_info,
        counts: report.counts,
        warnings,
    };
    store
        .put(&manifest_key, manifest.to_json().into())
        .await
        .with_context(|| format!("committing the manifest of {}", store.locate(&archive_key)))?;
    // Committed: only now may the next DIFF build on this run.
    if let Some(mut state) = new_state {
        state.run = Some(run);
        if let Err(e) = state.save(&state_path) {
            log::error!(
                "{}: run {run} committed, but its incremental state could not be saved to {} ({e}); the next run will be a FULL",
                set.name,
                state_path.display()
            );
        }
    }
    Ok(manifest)
}

/// For `-t`: says when a planned DIFF will be a FULL because DiffDir lacks its base's state
/// (reads the state file; changes nothing).
pub fn check_incremental_state(config: &Config, mut plan: SetPlan) -> SetPlan {
    if let Action::Run {
        kind: Kind::Diff,
        base,
        note,
        ..
    } = &mut plan.action
    {
        let path = state::path(&config.diff_dir, &plan.set.name, plan.set.cycle_label());
        let (kind, _, _, warning) = base_state(Kind::Diff, base.as_deref(), &path);
        if kind == Kind::Full {
            *note = warning.map(|w| format!("{}: {}", w.path, w.problem));
        }
    }
    plan
}

/// A DIFF needs the state of exactly its base run; without it the run becomes a FULL (never a
/// wrong DIFF), and the manifest says why.
fn base_state<'a>(
    kind: Kind,
    base: Option<&'a Manifest>,
    path: &std::path::Path,
) -> (Kind, Option<&'a Manifest>, Option<State>, Option<Warning>) {
    let Some(base_run) = base.filter(|_| kind == Kind::Diff) else {
        return (kind, base, None, None);
    };
    let problem = match State::load(path) {
        Ok(Some(state)) if state.run == Some(base_run.run) => {
            return (Kind::Diff, base, Some(state), None)
        }
        Ok(Some(state)) => format!(
            "incremental state describes run {}, not the base run {}",
            state
                .run
                .map(|r| r.to_string())
                .unwrap_or_else(|| "none".into()),
            base_run.run
        ),
        Ok(None) => "no incremental state".to_string(),
        Err(e) => format!("incremental state unusable: {e}"),
    };
    let warning = Warning {
        path: path.display().to_string(),
        problem: format!("{problem}; this run is a FULL instead of a DIFF"),
        unreadable: false,
    };
    log::warn!("{}: {}", warning.path, warning.problem);
    (Kind::Full, None, None, Some(warning))
}

/// The synchronous stages, outermost finished first: source → counter → compressor → sealer →
/// part writer.
fn produce(
    mut source: Box<dyn Source>,
    compression: Compression,
    certs: &[Cert],
    tx: mpsc::Sender<bytes::Bytes>,
    chunk: u64,
    on_read: Box<dyn FnMut(u64) + Send>,
) -> anyhow::Result<(Report, u64, Stored)> {
    let mut parts = PartWriter::new(tx, chunk);
    let sealer = Sealer::new(&mut parts, certs).context("starting encryption")?;
    let compressor = Compressor::new(compression, sealer).context("starting compression")?;
    let mut counter = Counter::new(compressor, on_read);
    let report = source.write_to(&mut counter)?;
    let (compressor, plaintext) = counter.into_parts();
    let sealer = compressor.finish().context("finishing compression")?;
    sealer.finish().context("finishing encryption")?;
    let stored = parts.finish().context("sending the last part")?;
    Ok((report, plaintext, stored))
}

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
use crate::source::program;
use crate::source::state::{self, State};
use crate::source::tree::{PickedPaths, TreeSource};
use crate::source::{Report, Source, Warning};
use crate::store::DynStore;
use crate::uploads::{self, Records, Upload};
use sha2::Digest;

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

/// Where a DIFF starts: the tree state, or the last dumped Subversion revision, of its base run.
enum Base {
    None,
    Tree(State),
    Revision(u64),
}

/// The restore command recorded for a dump when neither `Restore` nor the program names one.
fn default_restore(source: &SourceSpec) -> Option<Vec<String>> {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match source {
        SourceSpec::MySql { options, .. } => {
            let client = program::find_program(&["mariadb", "mysql"])
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "mysql".into());
            // The dump creates its database(s) itself (--databases / --all-databases).
            let mut cmd = vec![client];
            cmd.extend(options.iter().cloned());
            Some(cmd)
        }
        SourceSpec::PostgreSql {
            database,
            user,
            custom_format,
        } => {
            // Dumps create their database (--create); pg_dumpall's roles usually exist already,
            // so its restore goes on past errors as psql does by default.
            let mut cmd = if *custom_format {
                owned(&["pg_restore", "--create", "--dbname", "postgres"])
            } else if database == "all" {
                owned(&["psql", "--quiet", "--dbname", "postgres"])
            } else {
                owned(&[
                    "psql",
                    "--quiet",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--dbname",
                    "postgres",
                ])
            };
            if let Some(u) = user {
                cmd.extend(["--username".to_string(), u.clone()]);
            }
            Some(cmd)
        }
        _ => None,
    }
}

/// The source of `set`, and what the manifest says of it when that is known beforehand.
fn source_for(set: &SetSpec, base: Base) -> anyhow::Result<(Box<dyn Source>, Option<SourceInfo>)> {
    let restore = if set.restore.is_empty() {
        default_restore(&set.source)
    } else {
        Some(set.restore.clone())
    };
    let program =
        |command: Vec<String>, format: &'static str, descriptor_mode: bool| -> Box<dyn Source> {
            Box::new(program::ProgramSource {
                command,
                format,
                descriptor_mode,
                restore: restore.clone(),
            })
        };
    Ok(match &set.source {
        SourceSpec::Directory {
            path,
            excludes,
            one_file_system,
        } => (
            Box::new(TreeSource {
                root: path.clone(),
                excludes: excludes.clone(),
                one_file_system: *one_file_system,
                base: match base {
                    Base::Tree(state) => Some(state),
                    _ => None,
                },
            }),
            Some(SourceInfo::Directory {
                path: path.display().to_string(),
                excludes: excludes.iter().map(|p| p.display().to_string()).collect(),
            }),
        ),
        SourceSpec::MySql { database, options } => {
            let dump = program::find_program(&["mariadb-dump", "mysqldump"])
                .context("neither mariadb-dump nor mysqldump is installed")?;
            let mut cmd = vec![dump.display().to_string()];
            // Option files (--defaults-extra-file) must come first.
            cmd.extend(options.iter().cloned());
            cmd.extend(
                [
                    "--single-transaction",
                    "--routines",
                    "--triggers",
                    "--events",
                ]
                .map(String::from),
            );
            if database == "all" {
                cmd.push("--all-databases".into());
            } else {
                cmd.extend(["--databases".to_string(), database.clone()]);
            }
            (program(cmd, "sql", false), None)
        }
        SourceSpec::PostgreSql {
            database,
            user,
            custom_format,
        } => {
            let mut cmd = vec![if database == "all" {
                "pg_dumpall"
            } else {
                "pg_dump"
            }
            .to_string()];
            if let Some(u) = user {
                cmd.extend(["--username".to_string(), u.clone()]);
            }
            if database != "all" {
                cmd.push(
                    if *custom_format {
                        "--format=custom"
                    } else {
                        "--create"
                    }
                    .into(),
                );
                cmd.push(database.clone());
            }
            let format = if *custom_format && database != "all" {
                "pgdump"
            } else {
                "sql"
            };
            (program(cmd, format, false), None)
        }
        SourceSpec::Subversion { repository, .. } => (
            Box::new(program::SubversionSource {
                repository: repository.clone(),
                last: match base {
                    Base::Revision(r) => Some(r),
                    _ => None,
                },
            }),
            None,
        ),
        SourceSpec::Command { run, fd, .. } => (program(run.clone(), "dump", *fd), None),
        SourceSpec::Picker { run, .. } => (
            Box::new(PickedPaths {
                command: run.clone(),
            }),
            None,
        ),
        SourceSpec::SubversionDir { .. } | SourceSpec::SnapshotsDir { .. } => {
            bail!("{} is expanded into its sets when a run starts", set.name)
        }
        SourceSpec::Bucket(_) => bail!("{}: a bucket snapshot starts asynchronously", set.name),
    })
}

fn program_kind(source: &SourceSpec) -> &'static str {
    match source {
        SourceSpec::MySql { .. } => "mysql",
        SourceSpec::PostgreSql { .. } => "pgsql",
        SourceSpec::Subversion { .. } | SourceSpec::SubversionDir { .. } => "svn",
        SourceSpec::Picker { .. } => "picker",
        _ => "command",
    }
}

/// The configured sets with SubversionDir and SnapshotsDir replaced by one set per
/// repository or executable found now; a directory that cannot be read is an error for it.
pub fn expand_sets<'a>(
    sets: impl Iterator<Item = &'a SetSpec>,
) -> Vec<(SetSpec, Result<(), String>)> {
    let sets: Vec<&SetSpec> = sets.collect();
    // A set configured on its own wins over the same set found by a directory expansion in the
    // same cycle: two sets with one identity would share (and prune) each other's runs.
    let explicit: std::collections::HashSet<(String, Option<String>)> = sets
        .iter()
        .map(|s| (s.name.clone(), s.cycle.name.clone()))
        .collect();
    let mut out = Vec::new();
    for set in sets {
        let (dir, svn) = match &set.source {
            SourceSpec::SubversionDir { directory } => (directory, true),
            SourceSpec::SnapshotsDir { directory } => (directory, false),
            _ => {
                out.push((set.clone(), Ok(())));
                continue;
            }
        };
        let mut entries: Vec<std::path::PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) => {
                out.push((
                    set.clone(),
                    Err(format!("cannot read {}: {e}", dir.display())),
                ));
                continue;
            }
        };
        entries.sort();
        for path in entries {
            let source = if svn {
                // Real repositories only: they have a format file and a db directory.
                if !(path.join("format").is_file() && path.join("db").is_dir()) {
                    log::debug!("{}: not a Subversion repository", path.display());
                    continue;
                }
                SourceSpec::Subversion {
                    repository: path.clone(),
                    full_only: true,
                }
            } else {
                use std::os::unix::fs::PermissionsExt;
                let executable = std::fs::metadata(&path)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false);
                if !executable {
                    continue;
                }
                SourceSpec::Command {
                    name: path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    run: vec![path.display().to_string()],
                    fd: true,
                }
            };
            let name = layout::set_name(&source);
            if explicit.contains(&(name.clone(), set.cycle.name.clone())) {
                log::debug!(
                    "{name}: configured on its own; not taken from {}",
                    dir.display()
                );
                continue;
            }
            out.push((
                SetSpec {
                    name,
                    source,
                    ..set.clone()
                },
                Ok(()),
            ));
        }
    }
    out
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

/// Fails when an upload of `set` younger than the debris grace period (on the server's clock)
/// is open: this configuration's own interrupted uploads were finished when the run started,
/// so it belongs to another configuration backing up the same set under the same Host, which
/// would retire this one's runs (and this one its runs).
async fn check_no_foreign_upload(store: &DynStore, host: &str, set: &str) -> anyhow::Result<()> {
    let pending = store.list_uploads(&layout::set_prefix(host, set)).await?;
    let ours = |key: &str| layout::parse_archive_key(host, key).is_some_and(|(s, _, _)| s == set);
    let pending: Vec<_> = pending.into_iter().filter(|u| ours(&u.key)).collect();
    if pending.is_empty() {
        return Ok(());
    }
    let server_now = store.server_time().await?;
    if let Some(live) = pending.iter().find(|u| {
        u.initiated
            .is_none_or(|t| server_now - t < prune::DEBRIS_GRACE)
    }) {
        bail!(
            "{} is being uploaded by another configuration (not recorded in this DiffDir); \
             two configurations must not back up the same set under one Host",
            store.locate(&live.key)
        );
    }
    Ok(())
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
    for (set, expanded) in expand_sets(config.selected_sets(only)) {
        let set = &set;
        let started = Instant::now();
        let planned = match expanded {
            Ok(()) => plan(&ctx.store, config, set, now, force).await,
            Err(e) => Err(anyhow!(e)),
        };
        let outcome = match planned {
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
                        Ok(manifest) => {
                            match prune_set(&ctx.store, config, set, now, false).await {
                                Ok(pruned) => Outcome::Committed {
                                    manifest: Box::new(manifest),
                                    retired: pruned.retired,
                                },
                                Err(e) => Outcome::Failed(e.context(format!(
                                    "run {} committed, but pruning failed",
                                    manifest.run
                                ))),
                            }
                        }
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

/// The retry settings of the configuration, for the S3 calls outside the store.
pub fn retry_policy(config: &Config) -> crate::store::retry::RetryPolicy {
    crate::store::retry::RetryPolicy {
        attempts: config.retries.max(1),
        ..Default::default()
    }
}

/// What pruning one set did (or, in a dry run, would do).
pub struct Pruned {
    pub verdicts: Vec<crate::policy::retention::Verdict>,
    pub retired: Vec<String>,
    /// For bucket sets: the replica versions gc deleted.
    pub gc: Option<crate::bucket::gc::Outcome>,
}

/// Retires the runs of `set` (in its cycle) that retention no longer keeps; for a bucket set,
/// then deletes the replica versions only retired snapshots needed.
pub async fn prune_set(
    store: &DynStore,
    config: &Config,
    set: &SetSpec,
    now: DateTime<Utc>,
    dry_run: bool,
) -> anyhow::Result<Pruned> {
    let all = catalog::load(store, &config.host, Some(&set.name)).await?;
    let runs = plan::own_runs(set, &all);
    let refs: Vec<_> = runs.iter().map(plan::run_ref).collect();
    let verdicts = crate::policy::retention::evaluate(&refs, &plan::rules(set), now);
    // Read before anything is retired (retiring deletes a snapshot's version list).
    let guarded = match &set.source {
        SourceSpec::Bucket(_) => {
            Some(crate::bucket::gc::guard(store, &all, set.cycle.minimum_redundancy).await?)
        }
        _ => None,
    };
    let retired: Vec<crate::layout::RunId> = prune::retire(store, &runs, &verdicts, dry_run)
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
            let outcome = crate::bucket::gc::collect(
                store,
                spec,
                &config.s3,
                retry_policy(config),
                &kept,
                &guarded,
                dry_run,
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

/// Executes the run `plan` decided on, started at `now`.
pub async fn run_set(
    config: &Config,
    ctx: &RunContext,
    plan: &SetPlan,
    now: DateTime<Utc>,
) -> anyhow::Result<Manifest> {
    let Action::Run {
        kind, run, base, ..
    } = &plan.action
    else {
        bail!("{}: nothing to run", plan.set.name);
    };
    let (set, run) = (&plan.set, *run);
    let store = &ctx.store;
    let state_path = state::path(&config.diff_dir, &set.name, set.cycle_label());
    let revision_path = state_path.with_extension("svnrev");
    // The base again in `commit`, from the plan: a DIFF that fell back to a FULL has none.
    let (kind, _, start, state_warning) = diff_start(set, *kind, base.as_deref(), &state_path);
    if let Some(w) = &state_warning {
        log::warn!("{}: {}", w.path, w.problem);
    }
    // A bucket snapshot stores the version ids it references beside its archive.
    let refs_key = matches!(set.source, SourceSpec::Bucket(_))
        .then(|| layout::archive_key(&config.host, &set.name, run, kind, "refs.zst"));
    let (source, source_info) = match (&set.source, &refs_key) {
        (SourceSpec::Bucket(spec), Some(refs_key)) => {
            let snapshot = crate::bucket::snapshot::start(
                spec,
                &config.s3,
                retry_policy(config),
                &set.cycle,
                store.clone(),
                refs_key.clone(),
            )
            .await?;
            (Box::new(snapshot) as Box<dyn Source>, None)
        }
        _ => source_for(set, start)?,
    };
    let encrypted = !ctx.certs.is_empty();
    let format = source.format();
    let ext = extension(format, set.compression, encrypted);
    let archive_key = layout::archive_key(&config.host, &set.name, run, kind, &ext);
    let manifest_key = layout::manifest_key(&config.host, &set.name, run, kind);
    let ranges_key = layout::archive_key(&config.host, &set.name, run, kind, "sha256");
    for key in [
        Some(&manifest_key),
        Some(&archive_key),
        Some(&ranges_key),
        refs_key.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if store.head(key).await?.is_some() {
            bail!(
                "{} already exists: runs are never overwritten",
                store.locate(key)
            );
        }
    }

    check_no_foreign_upload(store, &config.host, &set.name).await?;

    let source_started = Utc::now();
    let upload_id = store.create_upload(&archive_key).await?;
    // Recorded before any part is sent, so that an interrupted run's next run finds it.
    let records = Records::new(&config.diff_dir);
    let upload = Upload {
        archive: archive_key.clone(),
        upload_id: upload_id.clone(),
        manifest: manifest_key.clone(),
        others: std::iter::once(ranges_key.clone())
            .chain(refs_key.clone())
            .collect(),
    };
    if let Err(e) = records.record(&upload) {
        discard(store, &records, &upload).await;
        bail!(
            "cannot record the upload of {} in {} ({e}); nothing was stored",
            store.locate(&archive_key),
            config.diff_dir.display()
        );
    }
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
            discard(store, &records, &upload).await;
            return Err(cause);
        }
    };
    let committed = commit(
        config,
        ctx,
        plan,
        now,
        Finished {
            report,
            plaintext,
            stored,
            receipts,
            source_info,
            state_warning,
            source_started,
            format,
            state_path,
            revision_path,
        },
        &upload,
    )
    .await;
    let manifest = match committed {
        Ok(manifest) => manifest,
        Err(e) => {
            discard(store, &records, &upload).await;
            return Err(e);
        }
    };
    if let Err(e) = records.clear(&archive_key) {
        log::warn!(
            "{}: run {run} committed, but its upload record could not be removed ({e}); the next run removes it",
            set.name
        );
    }
    Ok(manifest)
}

/// Undoes an upload that will not be committed: aborts it, deletes whatever of its objects
/// were stored (unless its manifest exists after all), and forgets it. What fails here stays
/// recorded, and the next run of this configuration finishes it.
async fn discard(store: &DynStore, records: &Records, upload: &Upload) {
    match uploads::finish_one(store, upload).await {
        Ok(()) => {
            if let Err(e) = records.clear(&upload.archive) {
                log::warn!("cannot forget the upload of {}: {e}", upload.archive);
            }
        }
        Err(e) => log::warn!("{e}; the next run finishes the clean-up"),
    }
}

/// What the pipeline produced, ready to be committed.
struct Finished {
    report: Report,
    plaintext: u64,
    stored: Stored,
    receipts: Vec<crate::store::PartReceipt>,
    source_info: Option<SourceInfo>,
    state_warning: Option<Warning>,
    source_started: DateTime<Utc>,
    format: &'static str,
    /// Where the next DIFF's start is saved once this run is committed.
    state_path: std::path::PathBuf,
    revision_path: std::path::PathBuf,
}

/// Completes the upload, stores the range hashes, then the manifest (the commit), and only
/// then saves the incremental state for the next DIFF.
async fn commit(
    config: &Config,
    ctx: &RunContext,
    plan: &SetPlan,
    now: DateTime<Utc>,
    finished: Finished,
    upload: &Upload,
) -> anyhow::Result<Manifest> {
    let Action::Run {
        position,
        base,
        forced,
        ..
    } = &plan.action
    else {
        bail!("{}: nothing to run", plan.set.name);
    };
    let Finished {
        report,
        plaintext,
        stored,
        receipts,
        source_info,
        state_warning,
        source_started,
        format,
        state_path,
        revision_path,
    } = finished;
    let (set, store) = (&plan.set, &ctx.store);
    let archive_key = &upload.archive;
    let manifest_key = &upload.manifest;
    let (run, kind) = layout::parse_manifest_key(&config.host, manifest_key)
        .map(|(_, run, kind)| (run, kind))
        .ok_or_else(|| anyhow!("{manifest_key}: not a manifest key"))?;
    // A DIFF that fell back to a FULL has no base.
    let base = base.as_deref().filter(|_| kind == Kind::Diff);

    store
        .complete_upload(archive_key, &upload.upload_id, receipts)
        .await?;
    let info = store.head(archive_key).await?.ok_or_else(|| {
        anyhow!(
            "{}: missing right after its upload completed",
            store.locate(archive_key)
        )
    })?;
    if info.size != stored.size {
        bail!(
            "{}: stored {} bytes but the pipeline produced {}; not committing this run",
            store.locate(archive_key),
            info.size,
            stored.size
        );
    }
    let ranges_key = layout::archive_key(&config.host, &set.name, run, kind, "sha256");
    let hashes = manifest::RangeHashes::encode(&stored.ranges);
    let ranges = manifest::RangeHashes {
        key: ranges_key.clone(),
        range_size: manifest::RANGE_SIZE,
        count: stored.ranges.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(&hashes)),
    };
    store
        .put(&ranges_key, hashes.into())
        .await
        .with_context(|| format!("storing the range hashes of {}", store.locate(archive_key)))?;

    let new_state = report.state;
    let dumped_to = report
        .program
        .as_ref()
        .and_then(|p| p.revisions)
        .map(|(_, to)| to);
    let source_info = match (source_info, report.bucket) {
        (Some(info), _) => info,
        (None, Some(snapshot)) => SourceInfo::Bucket(snapshot),
        (None, None) => SourceInfo::Program {
            kind: program_kind(&set.source).to_string(),
            run: report.program.clone().unwrap_or_default(),
        },
    };
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
            format: format.to_string(),
            compression: set.compression,
            recipients: ctx.certs.iter().map(|c| c.fingerprint().to_hex()).collect(),
            parts: stored.parts,
            ranges: Some(ranges),
        },
        source: source_info,
        counts: report.counts,
        warnings,
    };
    store
        .put(manifest_key, manifest.to_json().into())
        .await
        .with_context(|| format!("committing the manifest of {}", store.locate(archive_key)))?;
    // Committed: only now may the next DIFF build on this run.
    if let Some(to) = dumped_to {
        if let Err(e) = program::save_revision(&revision_path, run, to) {
            log::error!(
                "{}: run {run} committed, but its last revision could not be saved to {} ({e}); the next run will be a FULL",
                set.name,
                revision_path.display()
            );
        }
    }
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

/// The Subversion counterpart of [`base_state`]: the last revision of exactly the base run.
fn base_revision<'a>(
    kind: Kind,
    base: Option<&'a Manifest>,
    path: &std::path::Path,
) -> (Kind, Option<&'a Manifest>, Base, Option<Warning>) {
    let Some(base_run) = base.filter(|_| kind == Kind::Diff) else {
        return (kind, base, Base::None, None);
    };
    let problem = match program::load_revision(path) {
        Ok(Some((run, rev))) if run == base_run.run => {
            return (Kind::Diff, base, Base::Revision(rev), None)
        }
        Ok(Some((run, _))) => format!(
            "last revision recorded for run {run}, not the base run {}",
            base_run.run
        ),
        Ok(None) => "no last revision recorded".to_string(),
        Err(e) => e,
    };
    let warning = Warning {
        path: path.display().to_string(),
        problem: format!("{problem}; this run is a FULL instead of a DIFF"),
        unreadable: false,
    };
    (Kind::Full, None, Base::None, Some(warning))
}

/// Where a run of `set` starts: the tree state or the Subversion revision of its base run,
/// read from beside `state_path` in DiffDir (reads only). Without it a DIFF becomes a FULL.
fn diff_start<'a>(
    set: &SetSpec,
    kind: Kind,
    base: Option<&'a Manifest>,
    state_path: &std::path::Path,
) -> (Kind, Option<&'a Manifest>, Base, Option<Warning>) {
    match &set.source {
        SourceSpec::Subversion { .. } => {
            base_revision(kind, base, &state_path.with_extension("svnrev"))
        }
        _ => {
            let (k, b, s, w) = base_state(kind, base, state_path);
            (k, b, s.map_or(Base::None, Base::Tree), w)
        }
    }
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
        let (kind, _, _, warning) = diff_start(&plan.set, Kind::Diff, base.as_deref(), &path);
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
    let mut parts = PartWriter::new(tx, chunk, manifest::RANGE_SIZE);
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

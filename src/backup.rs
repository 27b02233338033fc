//! One backup run: every configured set through the pipeline into the store.
//!
//! Per set: start a multipart upload under a new key, run the CPU stages on a blocking thread
//! and the uploader on the async side, and commit only if both finished cleanly — complete the
//! upload, check the stored size, then write the manifest. Any failure aborts the multipart
//! upload so no partial object ever appears; earlier runs are never touched. A failed set does
//! not stop the others.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use sequoia_openpgp::Cert;
use tokio::sync::mpsc;

use crate::catalog;
use crate::config::{Config, SetSpec, SourceSpec};
use crate::keys;
use crate::pipeline::compress::{Compression, Compressor};
use crate::pipeline::encrypt::Sealer;
use crate::pipeline::parts::{PartWriter, Stored};
use crate::pipeline::upload::upload_parts;
use crate::pipeline::Counter;
use crate::plan::{self, Action, BaseData, LocalStart, SetPlan};
use crate::prune;
use crate::schema::layout;
use crate::schema::layout::{Kind, RunId};
use crate::schema::manifest::{self, Manifest, SourceInfo};
use crate::source::program;
use crate::source::state::{self, Identity, State};
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

/// The plaintext format of a set's archives (the first layer of its key's extension): what
/// `-t` prints and the run's source produces.
pub fn archive_format(source: &SourceSpec) -> &'static str {
    match source {
        SourceSpec::Directory { .. }
        | SourceSpec::Picker { .. }
        | SourceSpec::SubversionDir { .. }
        | SourceSpec::SnapshotsDir { .. } => "tar",
        SourceSpec::MySql { .. } => "sql",
        SourceSpec::PostgreSql {
            database,
            custom_format,
            ..
        } => {
            if *custom_format && database != "all" {
                "pgdump"
            } else {
                "sql"
            }
        }
        SourceSpec::Subversion { .. } => "svndump",
        SourceSpec::Command { .. } => "dump",
        SourceSpec::Bucket(_) => "jsonl",
    }
}

/// The key the archive of a run of `set` is stored under.
pub fn archive_key(config: &Config, set: &SetSpec, run: RunId, kind: Kind) -> String {
    let ext = extension(
        archive_format(&set.source),
        set.compression,
        !config.recipients.is_empty(),
    );
    layout::archive_key(&config.host, &set.name, run, kind, &ext)
}

/// The source of `set`, and what the manifest says of it when that is known beforehand.
fn source_for(
    set: &SetSpec,
    base: BaseData,
) -> anyhow::Result<(Box<dyn Source>, Option<SourceInfo>)> {
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
                    BaseData::Tree(state) => Some(state),
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
            (program(cmd, archive_format(&set.source), false), None)
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
            (program(cmd, archive_format(&set.source), false), None)
        }
        SourceSpec::Subversion { repository, .. } => (
            Box::new(program::SubversionSource {
                repository: repository.clone(),
                last: match base {
                    BaseData::Revision(r) => Some(r),
                    _ => None,
                },
            }),
            None,
        ),
        SourceSpec::Command { run, fd, .. } => {
            (program(run.clone(), archive_format(&set.source), *fd), None)
        }
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

/// A set of a run, and whether it could be found (`Err`: the directory it comes from could
/// not be read).
pub type FoundSet = (SetSpec, Result<(), String>);

/// The sets a run works on, in order, each with whether it could be found: the configured sets
/// with SubversionDir and SnapshotsDir replaced by one set per repository or executable found
/// now; a directory that cannot be read is an error of that set alone. Two sets found by
/// different directories under one name in one cycle (two SnapshotsDir holding executables of
/// the same name) would share their runs, so the second would never run: that is a
/// configuration error (`Err`), for the whole run, as any other.
pub fn expand_sets<'a>(sets: impl Iterator<Item = &'a SetSpec>) -> Result<Vec<FoundSet>, String> {
    let sets: Vec<&SetSpec> = sets.collect();
    // A set configured on its own wins over the same set found by a directory expansion in the
    // same cycle: two sets with one identity would share (and prune) each other's runs.
    let explicit: std::collections::HashSet<(String, Option<String>)> = sets
        .iter()
        .map(|s| (s.name.clone(), s.cycle.name.clone()))
        .collect();
    // Where each expanded set was found, by identity.
    let mut found: std::collections::HashMap<
        (String, Option<String>),
        (std::path::PathBuf, &SetSpec),
    > = std::collections::HashMap::new();
    let mut conflicts = Vec::new();
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
            let name = source.set_name();
            let identity = (name.clone(), set.cycle.name.clone());
            if explicit.contains(&identity) {
                log::debug!(
                    "{name}: configured on its own; not taken from {}",
                    dir.display()
                );
                continue;
            }
            match found.get(&identity) {
                Some((first, by)) => {
                    conflicts.push(format!(
                        "{}: {} {} holds {}, and {} {} (at {}) holds {}: both would be set \
                         {name} {}, so only one of them would ever run. Rename one, or put the \
                         directories in different <Cycle>s",
                        set.pos,
                        directive(set),
                        dir.display(),
                        path.display(),
                        directive(by),
                        by.source.target(),
                        by.pos,
                        first.display(),
                        match &set.cycle.name {
                            Some(c) => format!("in cycle '{c}'"),
                            None => "outside any cycle".to_string(),
                        }
                    ));
                    continue;
                }
                None => {
                    found.insert(identity, (path.clone(), set));
                }
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
    if conflicts.is_empty() {
        Ok(out)
    } else {
        Err(conflicts.join("\n"))
    }
}

/// The directive that configured a directory set.
fn directive(set: &SetSpec) -> &'static str {
    match set.source {
        SourceSpec::SubversionDir { .. } => "SubversionDir",
        _ => "SnapshotsDir",
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

/// Fails when an upload of `set` younger than the debris grace period (on the server's clock)
/// is open: this configuration's own interrupted uploads were finished when the run started,
/// so it belongs to another configuration backing up the same set under the same Host, which
/// would retire this one's runs (and this one its runs).
async fn check_no_foreign_upload(
    store: &DynStore,
    records: &Records,
    host: &str,
    set: &str,
) -> anyhow::Result<()> {
    let pending = store.list_uploads(&layout::set_prefix(host, set)).await?;
    // An upload of ours that could not be aborted yet is ours to finish, not a foreign one.
    let recorded: std::collections::HashSet<String> =
        records.list()?.into_iter().map(|u| u.upload_id).collect();
    let of_set = |key: &str| layout::parse_archive_key(host, key).is_some_and(|(s, _, _)| s == set);
    let pending: Vec<_> = pending
        .into_iter()
        .filter(|u| of_set(&u.key) && !recorded.contains(&u.upload_id))
        .collect();
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

/// A SubversionDir or SnapshotsDir that cannot be read: its set fails when the run reaches it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableDirectory(pub String);

/// The one planning `-t` prints and a run executes: each set against the store's catalog of its
/// runs, and what a DIFF needs from DiffDir (reads only; a DIFF whose base's state or revision
/// is missing, damaged or not provably this set's is planned as a FULL, with the reason).
pub struct Planner<'a> {
    store: &'a DynStore,
    config: &'a Config,
    now: DateTime<Utc>,
    force: bool,
    /// Run ids planned so far, by set name: two cycles of one set never get the same one.
    taken: std::collections::HashMap<String, Vec<RunId>>,
}

impl<'a> Planner<'a> {
    pub fn new(store: &'a DynStore, config: &'a Config, now: DateTime<Utc>, force: bool) -> Self {
        Planner {
            store,
            config,
            now,
            force,
            taken: Default::default(),
        }
    }

    /// Plans `set`; `found` is what [`expand_sets`] said of it.
    pub async fn plan(
        &mut self,
        set: &SetSpec,
        found: Result<(), String>,
    ) -> anyhow::Result<SetPlan> {
        found.map_err(UnreadableDirectory)?;
        let all = catalog::load(self.store, &self.config.host, Some(&set.name)).await?;
        let taken = self.taken.entry(set.name.clone()).or_default();
        let mut plan = plan::plan_set(set, &all, self.now, self.force, taken);
        let mut fell_back = false;
        if let Action::Run {
            kind,
            run,
            base,
            note,
            local,
            ..
        } = &mut plan.action
        {
            taken.push(*run);
            let (start_kind, start) =
                local_start(&self.config.diff_dir, set, *kind, base.as_deref());
            if start_kind != *kind {
                *kind = start_kind;
                *base = None;
                *note = start
                    .warning
                    .as_ref()
                    .map(|w| format!("{}: {}", w.path, w.problem));
                fell_back = true;
            }
            *local = start;
        }
        if fell_back {
            // Retention after a FULL keeps other runs than after the planned DIFF would.
            let plan::SetPlan { runs, action, .. } = plan;
            plan = plan::finish(set, runs, action, self.now);
        }
        Ok(plan)
    }
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
    let mut planner = Planner::new(&ctx.store, config, now, force);
    for (set, found) in sets {
        let set = &set;
        let started = Instant::now();
        let outcome = match planner.plan(set, found).await {
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
                    match run_set(config, ctx, p, now).await {
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
    let retired: Vec<crate::schema::layout::RunId> =
        prune::retire(store, &runs, &verdicts, dry_run)
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

/// Executes the run `plan` decided on (by [`Planner`]), started at `now`.
pub async fn run_set(
    config: &Config,
    ctx: &RunContext,
    plan: SetPlan,
    now: DateTime<Utc>,
) -> anyhow::Result<Manifest> {
    let SetPlan { set, action, .. } = plan;
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
    let set = &set;
    let store = &ctx.store;
    let identity = Identity::of(set);
    let LocalStart {
        data: start,
        warning: state_warning,
        legacy,
    } = local;
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
    let format = source.format();
    let archive_key = archive_key(config, set, run, kind);
    // -t printed this key: the source and the certificates must agree with it.
    let encrypted = !ctx.certs.is_empty();
    if format != archive_format(&set.source) || encrypted == config.recipients.is_empty() {
        bail!(
            "internal error: {} produces {format}{}, but its key is {archive_key}",
            set.name,
            if encrypted { " encrypted" } else { "" }
        );
    }
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
    let records = Records::new(&config.diff_dir);
    check_no_foreign_upload(store, &records, &config.host, &set.name).await?;

    let source_started = Utc::now();
    let upload_id = store.create_upload(&archive_key).await?;
    // Recorded before any part is sent, so that an interrupted run's next run finds it.
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
    // Everything up to the stored manifest: any failure in here undoes the upload.
    let committed = async {
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
            (Ok((report, plaintext, stored)), Ok(receipts)) => {
                (report, plaintext, stored, receipts)
            }
            (produced, uploaded) => {
                // The upload's own error is the cause when both failed: the pipeline only saw the
                // channel close.
                let cause = match (uploaded, produced) {
                    (Err(e), _) => e.context(format!("uploading {}", store.locate(&archive_key))),
                    (Ok(_), Err(e)) => e,
                    (Ok(_), Ok(_)) => unreachable!("handled above"),
                };
                return Err(cause);
            }
        };

        store
            .complete_upload(&archive_key, &upload_id, receipts)
            .await?;
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
            .with_context(|| {
                format!("storing the range hashes of {}", store.locate(&archive_key))
            })?;

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
            base_run: base.as_ref().map(|b| b.run),
            cycle: set.cycle.name.clone(),
            slot: Some(position.slot),
            period: Some(position.period),
            forced,
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
                compression,
                recipients: ctx.certs.iter().map(|c| c.fingerprint().to_hex()).collect(),
                parts: stored.parts,
                ranges: Some(ranges),
            },
            source: source_info,
            counts: report.counts,
            warnings,
        };
        store
            .put(&manifest_key, manifest.to_json().into())
            .await
            .with_context(|| {
                format!("committing the manifest of {}", store.locate(&archive_key))
            })?;
        // Another configuration's prune may have taken the archive for debris meanwhile (its
        // grace period passed during a very long run): a manifest without its archive must not
        // stand, so it goes, and the run fails loudly.
        if store.head(&archive_key).await?.is_none() {
            store.delete(&manifest_key).await?;
            bail!(
                "{} vanished before its run was committed (removed by another configuration's prune?); run not committed",
                store.locate(&archive_key)
            );
        }
        anyhow::Ok((manifest, new_state, dumped_to))
    }
    .await;
    let (manifest, new_state, dumped_to) = match committed {
        Ok(committed) => committed,
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
    // Committed: only now may the next DIFF build on this run.
    let mut saved = false;
    if let Some(to) = dumped_to {
        let path = state::revision_path(&config.diff_dir, &identity);
        match state::save_revision(&path, &identity, run, to) {
            Ok(()) => saved = true,
            Err(e) => log::error!(
                "{}: run {run} committed, but its last revision could not be saved to {} ({e}); the next run will be a FULL",
                set.name,
                path.display()
            ),
        }
    }
    if let Some(mut state) = new_state {
        state.run = Some(run);
        let path = state::path(&config.diff_dir, &identity);
        match state.save(&path, &identity) {
            Ok(()) => saved = true,
            Err(e) => log::error!(
                "{}: run {run} committed, but its incremental state could not be saved to {} ({e}); the next run will be a FULL",
                set.name,
                path.display()
            ),
        }
    }
    // The old-format file this run started from has been replaced by the set's own.
    if let Some(old) = legacy.filter(|_| saved) {
        match std::fs::remove_file(&old) {
            Ok(()) => log::info!(
                "{}: migrated {} to the set's own file in {}",
                set.name,
                old.display(),
                config.diff_dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove {}: {e}", old.display()),
        }
    }
    Ok(manifest)
}

/// A DIFF that cannot start from its base's local record becomes a FULL with this warning
/// (also in its manifest): never a wrong DIFF.
fn fall_back(path: &std::path::Path, problem: String) -> (Kind, LocalStart) {
    (
        Kind::Full,
        LocalStart {
            warning: Some(Warning {
                path: path.display().to_string(),
                problem: format!("{problem}; this run is a FULL instead of a DIFF"),
                unreadable: false,
            }),
            ..LocalStart::default()
        },
    )
}

/// What a run of `set` of `kind` on `base` starts from, read from DiffDir (reads only): for a
/// DIFF, the tree state or the Subversion revision of exactly its base run, of exactly this
/// set and cycle. Without it the run becomes a FULL (the returned kind), with a warning.
fn local_start(
    diff_dir: &std::path::Path,
    set: &SetSpec,
    kind: Kind,
    base: Option<&Manifest>,
) -> (Kind, LocalStart) {
    let Some(base) = base.filter(|_| kind == Kind::Diff) else {
        return (kind, LocalStart::default());
    };
    let identity = Identity::of(set);
    match &set.source {
        SourceSpec::Subversion { .. } => revision_start(diff_dir, &identity, base),
        SourceSpec::Directory { path, .. } => tree_start(diff_dir, &identity, path, base),
        _ => fall_back(
            &state::path(diff_dir, &identity),
            format!("{} has no DIFF runs", set.name),
        ),
    }
}

/// The last revision the base run dumped, as its manifest records it.
fn recorded_revision(base: &Manifest) -> Option<u64> {
    match &base.source {
        SourceInfo::Program { run, .. } => run.revisions.map(|(_, to)| to),
        _ => None,
    }
}

/// The Subversion counterpart of [`tree_start`]: the last revision of exactly the base run,
/// which must also be the one the base run's manifest records (when it records one).
fn revision_start(
    diff_dir: &std::path::Path,
    id: &Identity,
    base: &Manifest,
) -> (Kind, LocalStart) {
    let path = state::revision_path(diff_dir, id);
    let recorded = recorded_revision(base);
    let problem = match state::load_revision(&path, id) {
        Ok(Some((run, rev))) if run == base.run && recorded.is_none_or(|r| r == rev) => {
            return (
                Kind::Diff,
                LocalStart {
                    data: BaseData::Revision(rev),
                    ..LocalStart::default()
                },
            )
        }
        Ok(Some((run, _))) if run != base.run => format!(
            "last revision recorded for run {run}, not the base run {}",
            base.run
        ),
        Ok(Some((_, rev))) => format!(
            "last revision recorded as {rev}, but the base run {} dumped up to revision {}",
            base.run,
            recorded.unwrap_or_default()
        ),
        Ok(None) => {
            // Written before revision files recorded their set: several sets may have shared
            // its name, so it counts only when the base run's manifest confirms the revision.
            let old = state::legacy_path(diff_dir, id, "svnrev");
            match state::load_legacy_revision(&old) {
                Ok(Some((run, rev))) if run == base.run && recorded == Some(rev) => {
                    return (
                        Kind::Diff,
                        LocalStart {
                            data: BaseData::Revision(rev),
                            legacy: Some(old),
                            ..LocalStart::default()
                        },
                    )
                }
                Ok(Some((run, rev))) => {
                    return fall_back(
                        &old,
                        format!(
                            "old-format revision file (its name may be shared by several sets) \
                             says run {run}, revision {rev}, which the base run {} of {id} does \
                             not confirm",
                            base.run
                        ),
                    )
                }
                Ok(None) => "no last revision recorded".to_string(),
                Err(e) => return fall_back(&old, e),
            }
        }
        Err(e) => e,
    };
    fall_back(&path, problem)
}

/// A DIFF needs the state of exactly its base run, of exactly this set and cycle.
fn tree_start(
    diff_dir: &std::path::Path,
    id: &Identity,
    root: &std::path::Path,
    base: &Manifest,
) -> (Kind, LocalStart) {
    let path = state::path(diff_dir, id);
    let describes = |state: &State| match state.run {
        Some(run) if run == base.run => None,
        run => Some(format!(
            "incremental state describes run {}, not the base run {}",
            run.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
            base.run
        )),
    };
    let problem = match State::load(&path, id) {
        Ok(Some(state)) => match describes(&state) {
            None => {
                return (
                    Kind::Diff,
                    LocalStart {
                        data: BaseData::Tree(state),
                        ..LocalStart::default()
                    },
                )
            }
            Some(problem) => problem,
        },
        Ok(None) => {
            // Written before states recorded their set: several sets may have shared its name,
            // so it counts only when its entries are all of this set's tree (whose base run
            // then identifies the cycle: run ids are unique per set).
            let old = state::legacy_path(diff_dir, id, "state");
            match State::load_legacy(&old) {
                Ok(Some(state)) => {
                    let root = member_name(root);
                    let problem = match describes(&state) {
                        Some(problem) => problem,
                        None if !state.covers_only(&root) => format!(
                            "old-format incremental state (its name may be shared by several \
                             sets) is not a state of {}",
                            String::from_utf8_lossy(&root)
                        ),
                        None => {
                            return (
                                Kind::Diff,
                                LocalStart {
                                    data: BaseData::Tree(state),
                                    legacy: Some(old),
                                    ..LocalStart::default()
                                },
                            )
                        }
                    };
                    return fall_back(&old, problem);
                }
                Ok(None) => "no incremental state".to_string(),
                Err(e) => return fall_back(&old, format!("incremental state unusable: {e}")),
            }
        }
        Err(e) => format!("incremental state unusable: {e}"),
    };
    fall_back(&path, problem)
}

/// The member name of a directory set's root, as its state names it (`srv/a_b`; `.` for `/`).
fn member_name(root: &std::path::Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = root.as_os_str().as_bytes();
    let stripped = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if stripped.is_empty() {
        b".".to_vec()
    } else {
        stripped.to_vec()
    }
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

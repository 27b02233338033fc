//! The commands behind the CLI: each takes the parsed command line, calls the library, prints,
//! and returns the exit status of the contract (README, `--help`; [`ExitStatus`]), or an
//! [`Error`] whose kind decides it.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use clap::CommandFactory;

use crate::backup::{self, Outcome, RunContext};
use crate::catalog;
use crate::cli::{BucketAction, Cli, Command, ConfigAction, QuiltAction};
use crate::config::{self, BucketSpec, BucketUrl, Config, SetSpec, SourceSpec};
use crate::error::{Error, ExitStatus};
use crate::keys::Identity;
use crate::lock::RunLock;
use crate::pipeline::decrypt::DecryptWith;
use crate::policy::retention::Reason;
use crate::progress::Progress;
use crate::store::dry_run::DryRunStore;
use crate::store::DynStore;
use crate::{bucket, metrics, notify, process, prune, quilt, recover, report, verify};

/// A panic is a bug, but it still ends as one readable line and a failure status.
pub fn install_panic_hook(debug: bool) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if debug {
            default(info);
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("s3nap: internal error{place}: {message} (please report it; -d shows more)");
    }));
}

pub fn dispatch(cli: Cli, logging: Option<log4rs::Handle>) -> Result<ExitStatus, Error> {
    match &cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(*shell, &mut Cli::command(), "s3nap", &mut std::io::stdout());
            return Ok(ExitStatus::Ok);
        }
        Some(Command::Man) => {
            man_page(&mut std::io::stdout().lock())?;
            return Ok(ExitStatus::Ok);
        }
        // A local file only: made anywhere (the operator's machine), no configuration needed.
        Some(Command::Quilt {
            action: QuiltAction::Init {
                key_file: Some(key_file),
            },
        }) => return quilt_init_command(key_file),
        _ => {}
    }
    let config = Config::load(&cli.config).map_err(Error::configuration)?;
    if let Some(handle) = &logging {
        crate::logging::configure(handle, &config.log, cli.debug)
            .map_err(|e| Error::configuration(e.context(config.file.display().to_string())))?;
    }
    let now = match &cli.now {
        Some(t) => {
            catalog::parse_time(t).map_err(|e| Error::configuration(anyhow!("--now: {e}")))?
        }
        None => Utc::now(),
    };
    // The commands cron runs; not list, recover or bucket, which someone is waiting for.
    if matches!(
        cli.command,
        None | Some(
            Command::Run { .. }
                | Command::Prune { .. }
                | Command::Verify { .. }
                | Command::Quilt { .. }
        )
    ) {
        apply_operations(&config);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let progress = match (cli.progress, cli.no_progress) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    match cli.command.unwrap_or(Command::Run { sets: Vec::new() }) {
        Command::Run { sets } => {
            check_sets(&config, &sets)?;
            if cli.test {
                return plan_command(&runtime, &config, (cli.force, cli.take_over), now, &sets);
            }
            let options = RunOptions {
                wait: cli.wait,
                force: cli.force,
                take_over: cli.take_over,
                json: cli.json,
                progress,
            };
            backup_command(&runtime, &config, &options, now, &sets)
        }
        Command::Prune { sets } => {
            check_sets(&config, &sets)?;
            prune_command(&runtime, &config, cli.test, cli.wait, now, &sets)
        }
        Command::List {
            set,
            host,
            all_hosts,
        } => {
            let request = ListRequest {
                set,
                host: host.host,
                all_hosts,
            };
            list_command(&runtime, &config, request, cli.json)
        }
        Command::Recover {
            set,
            at,
            decrypt,
            list,
            restore,
            wait_retrieval,
            host,
            paths,
        } => {
            let request = RecoverRequest {
                set,
                at,
                identity: decrypt.identity,
                list,
                restore,
                wait_retrieval,
                host: host.host,
                paths,
            };
            recover_command(&runtime, &config, request)
        }
        Command::Verify {
            sets,
            at,
            all,
            read,
            sample,
            deep,
            include_archived,
            decrypt,
            host,
        } => {
            let request = VerifyRequest {
                sets,
                at,
                all,
                read,
                sample,
                deep,
                include_archived,
                identity: decrypt.identity,
                host: host.host,
            };
            verify_command(&runtime, &config, request, cli.json)
        }
        Command::Bucket { action } => bucket_command(&runtime, &config, action, cli.test),
        Command::Quilt {
            action: QuiltAction::Gc { grace },
        } => quilt_gc_command(&runtime, &config, cli.test, cli.wait, grace),
        Command::Quilt {
            action: QuiltAction::Init { .. },
        } => match &config.quilt_key_file {
            Some(key_file) => quilt_init_command(key_file),
            None => Err(Error::configuration(anyhow!(
                "quilt init: no --key-file given, and {} sets no QuiltKeyFile",
                config.file.display()
            ))),
        },
        Command::Config {
            action: ConfigAction::Check,
        } => {
            // What SubversionDir and SnapshotsDir find is part of the configuration.
            run_sets(&config, &[])?;
            print!("{}", config::describe::config_text(&config));
            Ok(ExitStatus::Ok)
        }
        Command::Completions { .. } | Command::Man => unreachable!("handled above"),
    }
}

/// clap's page of the command line, with the configuration directives after it.
fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)?;
    config::directives::man_section().to_writer(out)
}

fn check_sets(config: &Config, only: &[String]) -> Result<(), Error> {
    for name in only {
        if config.find_set(name).is_none() {
            return Err(Error::configuration(anyhow!(
                "{}: no set '{name}' is configured",
                config.file.display()
            )));
        }
    }
    Ok(())
}

/// A store that cannot even be set up (unreadable key file, bad endpoint) is a configuration
/// error.
fn open_store(runtime: &tokio::runtime::Runtime, config: &Config) -> Result<DynStore, Error> {
    runtime
        .block_on(crate::connect::open_store(config))
        .map_err(Error::configuration)
}

/// The store deletions go through: with PruneKeyfile's credentials when it is set.
fn open_deleting_store(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
) -> Result<DynStore, Error> {
    runtime
        .block_on(crate::connect::open_deleting_store(config))
        .map_err(Error::configuration)
}

/// The store for `-t`: reads go through, writes are only recorded.
fn open_dry_run_store(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
) -> Result<DynStore, Error> {
    Ok(DryRunStore::wrap(open_store(runtime, config)?))
}

/// Creates DiffDir (owner-only) and takes the configuration's run lock.
fn lock(config: &Config, wait: bool) -> Result<RunLock, Error> {
    backup::prepare_diff_dir(&config.diff_dir)
        .with_context(|| format!("DiffDir {}", config.diff_dir.display()))
        .map_err(Error::configuration)?;
    if wait {
        log::info!("waiting for the run lock in {}", config.diff_dir.display());
    }
    Ok(RunLock::acquire(&config.diff_dir, wait)?)
}

/// What prune and quilt gc delete with: the deleting credentials' store (PruneKeyfile), under
/// the run lock — or, with `-t`, without the lock and recording deletions instead of doing
/// them.
fn deleting(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    test: bool,
    wait: bool,
) -> Result<(Option<RunLock>, DynStore), Error> {
    let lock = if test {
        None
    } else {
        Some(lock(config, wait)?)
    };
    let store = open_deleting_store(runtime, config)?;
    Ok((
        lock,
        if test {
            DryRunStore::wrap(store)
        } else {
            store
        },
    ))
}

/// The sets a run (or `-t`) works on: SubversionDir and SnapshotsDir expanded into theirs.
fn run_sets(config: &Config, only: &[String]) -> Result<Vec<backup::FoundSet>, Error> {
    backup::expand_sets(config.selected_sets(only)).map_err(Error::configuration)
}

/// `Nice`, `IoNice` and `MaxUploadRate`, set before any other thread is started (each applies
/// to the whole process and what it starts). A priority that cannot be set is a warning: the
/// backup matters more.
fn apply_operations(config: &Config) {
    let ops = &config.operations;
    for e in crate::process::set_priority(ops.nice, ops.io_nice) {
        log::warn!(
            "{}: {e}; running at the priority s3nap was started with",
            config.file.display()
        );
    }
    if let Some(rate) = ops.max_upload_rate {
        crate::pipeline::rate::limit_process(rate);
    }
}

/// `-t`: plans every set against the store exactly as a run would, read-only: no lock, and
/// nothing written locally or remotely (DiffDir is only read, for what a DIFF needs).
fn plan_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    (force, take_over): (bool, bool),
    now: DateTime<Utc>,
    only: &[String],
) -> Result<ExitStatus, Error> {
    let sets = run_sets(config, only)?;
    let store = open_dry_run_store(runtime, config)?;
    // Read only: a DiffDir without an identity yet gets an empty one here.
    let (owner, new) = backup::identify(&config.diff_dir, false)?;
    let owner = Some(owner);
    let plans: Vec<_> = runtime.block_on(async {
        let mut planner = backup::Planner::new(&store, config, now, force)
            .owned_by((owner.as_ref(), new), take_over);
        let mut plans = Vec::new();
        for (set, found) in sets {
            // What a DIFF would read is only shown, not kept for all sets at once.
            let plan = planner.plan(&set, found).await.map(|mut p| {
                if let crate::plan::Action::Run { local, .. } = &mut p.action {
                    local.data = crate::plan::BaseData::None;
                }
                p
            });
            plans.push((set, plan));
        }
        plans
    });
    print!("{}", report::plan_text(config, now, &plans));
    // The run starts by finishing what its configuration's interrupted runs left (with
    // PruneAfterRun no, prune does, and the run's retention too).
    let first = if config.prune_after_run {
        "first: finish"
    } else {
        "left for s3nap prune: finish"
    };
    for upload in crate::uploads::Records::new(&config.diff_dir).list()? {
        println!(
            "{first} the clean-up of {} (left by an interrupted run)",
            store.locate(&upload.archive)
        );
    }
    if !config.prune_after_run {
        println!("PruneAfterRun no: the run deletes nothing; s3nap prune retires what \"prune:\" lines name");
    }
    // A set that will fail is part of the plan; a set that could not be planned is a failure.
    let unplanned = |p: &anyhow::Result<_>| {
        p.as_ref()
            .is_err_and(|e: &anyhow::Error| !e.is::<backup::UnreadableDirectory>())
    };
    Ok(if plans.iter().any(|(_, p)| unplanned(p)) {
        ExitStatus::Failed
    } else {
        ExitStatus::Ok
    })
}

struct RunOptions {
    wait: bool,
    force: bool,
    take_over: bool,
    json: bool,
    progress: Option<bool>,
}

fn backup_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    options: &RunOptions,
    now: DateTime<Utc>,
    only: &[String],
) -> Result<ExitStatus, Error> {
    let _lock = lock(config, options.wait)?;
    let sets = run_sets(config, only)?;
    let selected = sets.len();
    log::info!(
        "s3nap {} run started: {} ({selected} set(s){}{})",
        env!("CARGO_PKG_VERSION"),
        config.file.display(),
        if options.force { ", forced" } else { "" },
        if now.timestamp() != Utc::now().timestamp() {
            format!(", as of {}", now.format("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            String::new()
        }
    );
    let certs = backup::load_certs(config).map_err(Error::configuration)?;
    let store = open_store(runtime, config)?;
    // With PruneAfterRun no, nothing is deleted, and PruneKeyfile is not even read.
    let deleter = if config.prune_after_run {
        Some(open_deleting_store(runtime, config)?)
    } else {
        None
    };
    let progress = Progress::new(options.progress);
    let (owner, new_owner) = backup::identify(&config.diff_dir, true)?;
    let ctx = RunContext {
        store,
        deleter,
        certs,
        progress: progress.clone(),
        owner,
        new_owner,
        take_over: options.take_over,
    };
    let outcomes = runtime.block_on(async {
        let records = crate::uploads::Records::new(&config.diff_dir);
        match &ctx.deleter {
            Some(deleter) => {
                crate::uploads::finish_interrupted(deleter, &records).await;
            }
            None => crate::uploads::log_left_to_prune(&ctx.store, &records),
        }
        backup::run_all(config, &ctx, now, options.force, sets).await
    });
    progress.finish();
    crate::connect::remember_lacking(config);
    let code = backup::exit_status(&outcomes);
    let mut summary = String::new();
    for outcome in &outcomes {
        let line = report::outcome_line(outcome);
        match &outcome.outcome {
            Outcome::Failed(_) => log::error!("{line}"),
            o if o.warned() => log::warn!("{line}"),
            _ => log::info!("{line}"),
        }
        summary.push_str(&line);
        summary.push('\n');
    }
    if options.json {
        let mut out = std::io::stdout().lock();
        for outcome in &outcomes {
            writeln!(out, "{}", report::outcome_json(outcome))?;
        }
    }
    if let Some(path) = &config.metrics_file {
        if let Err(e) = metrics::update(path, &outcomes, Utc::now()) {
            log::error!("MetricsFile {}: {e}", path.display());
        }
    }
    if !config.notify.is_empty() {
        summary.push_str(&format!(
            "exit status {} ({})\n",
            code.code(),
            code.meaning()
        ));
        if let Err(e) = notify::notify(&config.notify, &summary, code.code()) {
            log::error!("{e}");
        }
    }
    Ok(code)
}

fn prune_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    test: bool,
    wait: bool,
    now: DateTime<Utc>,
    only: &[String],
) -> Result<ExitStatus, Error> {
    // Everything prune does goes through the deleting credentials (PruneKeyfile).
    let (_lock, store) = deleting(runtime, config, test, wait)?;
    let mut out = std::io::stdout().lock();
    let mut code = ExitStatus::Ok;
    // A set another configuration took over is left to it (see backup::owner::may_prune).
    let mine = backup::pruning_as(config)?;
    for set in config.selected_sets(only) {
        match runtime.block_on(backup::prune_set(&store, config, set, Some(&mine), now)) {
            Ok(pruned) => print_pruned(&mut out, set, &pruned, test)?,
            Err(e) => {
                log::error!("{} [{}]: prune FAILED: {e:#}", set.name, set.cycle_label());
                code = ExitStatus::Failed;
            }
        }
    }
    // This configuration's own interrupted uploads are known exactly: finished at once.
    let records = crate::uploads::Records::new(&config.diff_dir);
    let (verb, finished) = if test {
        let listed = records.list()?.into_iter().map(|u| u.archive).collect();
        ("would finish", listed)
    } else {
        let finished = runtime.block_on(crate::uploads::finish_interrupted(&store, &records));
        ("finished", finished)
    };
    for archive in finished {
        writeln!(
            out,
            "{verb} the clean-up of {} (left by an interrupted run)",
            store.locate(&archive)
        )?;
    }
    let debris = runtime.block_on(prune::clear_debris(&store, &config.host))?;
    print_debris(&mut out, &store, &debris, test)?;
    if !test {
        crate::connect::remember_lacking(config);
    }
    Ok(code)
}

fn quilt_init_command(key_file: &std::path::Path) -> Result<ExitStatus, Error> {
    let secret = quilt::init::create(key_file).map_err(|e| match e {
        // Nothing was done: the file stays as it was.
        quilt::init::InitError::Exists(_) => Error::configuration(e),
        e => Error::from(e),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "created {} (mode 0600)", key_file.display())?;
    writeln!(out, "quilt secret fingerprint: {}", secret.fingerprint())?;
    writeln!(
        out,
        "install this file on every host that shares the quilt (QuiltKeyFile); the bucket keeps \
         only the fingerprint"
    )?;
    Ok(ExitStatus::Ok)
}

fn quilt_gc_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    test: bool,
    wait: bool,
    grace: chrono::Duration,
) -> Result<ExitStatus, Error> {
    let (_lock, store) = deleting(runtime, config, test, wait)?;
    let outcome = runtime.block_on(quilt::gc::collect(&store, grace))?;
    let mut out = std::io::stdout().lock();
    let (verb, abort, done) = if test {
        ("would delete", "would abort", "to be deleted")
    } else {
        ("deleted", "aborted", "deleted")
    };
    for (key, reason) in &outcome.deleted {
        writeln!(out, "{verb} {} ({reason})", store.locate(key))?;
    }
    for (key, reason) in &outcome.kept {
        writeln!(out, "kept {} ({reason})", store.locate(key))?;
    }
    for key in &outcome.aborted {
        writeln!(
            out,
            "{abort} the unfinished upload of {}",
            store.locate(key)
        )?;
    }
    writeln!(
        out,
        "quilt gc: {} content objects, {} referenced ({} manifests read), {} {done}, {} kept",
        outcome.examined,
        outcome.referenced,
        outcome.manifests,
        outcome.deleted.len(),
        outcome.kept.len()
    )?;
    if !test {
        crate::connect::remember_lacking(config);
    }
    if outcome.failures.is_empty() {
        return Ok(ExitStatus::Ok);
    }
    for f in &outcome.failures {
        log::error!("quilt gc: {f}");
    }
    Ok(ExitStatus::Failed)
}

/// Prints the verdicts of one set's prune (and its gc's deletions, for a bucket set).
fn print_pruned(
    out: &mut impl Write,
    set: &SetSpec,
    pruned: &backup::Pruned,
    test: bool,
) -> std::io::Result<()> {
    let verb = if test { "would retire" } else { "retired" };
    for v in &pruned.verdicts {
        if let Reason::Locked { .. } = v.reason {
            writeln!(
                out,
                "{} [{}]: {} {}",
                set.name,
                set.cycle_label(),
                v.run,
                v.reason
            )?;
            continue;
        }
        let what = if v.keep { "keep" } else { verb };
        writeln!(
            out,
            "{} [{}]: {what} {} ({})",
            set.name,
            set.cycle_label(),
            v.run,
            v.reason
        )?;
    }
    let Some(gc) = &pruned.gc else {
        return Ok(());
    };
    let gc_verb = if test { "would delete" } else { "deleted" };
    for d in &gc.deletions {
        writeln!(
            out,
            "{}: {gc_verb} version {} of {} ({})",
            set.name, d.version_id, d.key, d.reason
        )?;
    }
    writeln!(
        out,
        "{}: gc {gc_verb} {} of {} replica versions",
        set.name,
        gc.deletions.len(),
        gc.examined
    )
}

/// Prints what prune removed (or would remove) of objects no manifest names.
fn print_debris(
    out: &mut impl Write,
    store: &DynStore,
    debris: &prune::Debris,
    test: bool,
) -> std::io::Result<()> {
    let verb = if test { "would remove" } else { "removed" };
    for key in &debris.archives {
        writeln!(
            out,
            "{verb} {} (archive without manifest)",
            store.locate(key)
        )?;
    }
    for key in &debris.uploads {
        writeln!(out, "{verb} unfinished upload of {}", store.locate(key))?;
    }
    for (key, until) in &debris.locked {
        writeln!(
            out,
            "kept {}: no manifest, but locked until {}",
            store.locate(key),
            until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )?;
    }
    for key in &debris.young {
        writeln!(
            out,
            "kept {} for now: no manifest, but younger than {} days (perhaps another configuration's live run)",
            store.locate(key),
            prune::DEBRIS_GRACE.num_days()
        )?;
    }
    Ok(())
}

/// The host whose backups `list`, `recover`, `verify` and `bucket restore|diff` read:
/// `--host` — which must name a host something is stored under (else a usage error naming it
/// and the hosts there) —, else this configuration's `Host`. Under the host's prefix those
/// commands only read (and request retrievals from archive classes), whichever host it is.
fn read_host(
    runtime: &tokio::runtime::Runtime,
    store: &DynStore,
    config: &Config,
    given: Option<String>,
) -> Result<String, Error> {
    let Some(host) = given else {
        return Ok(config.host.clone());
    };
    runtime
        .block_on(catalog::require_host(store, &host))
        .map_err(|e| match e {
            e @ catalog::CatalogError::UnknownHost { .. } => Error::configuration(e),
            e => e.into(),
        })?;
    if host != config.host {
        log::info!(
            "reading the backups of host {host} (this configuration's Host is {})",
            config.host
        );
    }
    Ok(host)
}

struct ListRequest {
    set: Option<String>,
    host: Option<String>,
    all_hosts: bool,
}

fn list_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    r: ListRequest,
    json: bool,
) -> Result<ExitStatus, Error> {
    let store = open_store(runtime, config)?;
    let set = r.set.map(|s| set_name(config, &s));
    let mut out = std::io::stdout().lock();
    if r.all_hosts {
        let hosts = runtime.block_on(catalog::load_all_hosts(&store, set.as_deref()))?;
        if json {
            serde_json::to_writer_pretty(&mut out, &report::hosts_json(&hosts))?;
            writeln!(out)?;
        } else {
            write!(out, "{}", report::hosts_table(&hosts))?;
        }
        return Ok(ExitStatus::Ok);
    }
    let host = read_host(runtime, &store, config, r.host)?;
    let runs = runtime.block_on(catalog::load(&store, &host, set.as_deref()))?;
    if json {
        serde_json::to_writer_pretty(&mut out, &report::list_json(&runs))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report::list_table(&runs))?;
    }
    Ok(ExitStatus::Ok)
}

/// `--at TIME` as recover and verify take it.
fn parse_at(at: Option<String>) -> Result<Option<chrono::DateTime<chrono::Utc>>, Error> {
    at.map(|t| catalog::parse_time(&t))
        .transpose()
        .map_err(|e| Error::configuration(anyhow!("--at: {e}")))
}

struct RecoverRequest {
    set: String,
    at: Option<String>,
    identity: Option<std::path::PathBuf>,
    list: bool,
    restore: bool,
    wait_retrieval: bool,
    host: Option<String>,
    paths: Vec<std::path::PathBuf>,
}

fn recover_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    r: RecoverRequest,
) -> Result<ExitStatus, Error> {
    let at = parse_at(r.at)?;
    let decrypt = decrypt_with(r.identity.as_deref())?;
    let stdout = std::io::stdout();
    if stdout.is_terminal() && !r.list && !r.restore {
        return Err(Error::configuration(anyhow!(
            "refusing to write a backup to a terminal; pipe it: s3nap recover {} | tar -x",
            r.set
        )));
    }
    let store = open_store(runtime, config)?;
    let host = read_host(runtime, &store, config, r.host)?;
    let request = recover::Request {
        set: set_name(config, &r.set),
        at,
        paths: r
            .paths
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect(),
    };
    let chain = runtime.block_on(recover::plan(&store, &host, &request))?;
    runtime.block_on(recover::ready(
        &store,
        &chain,
        &config.retrieval,
        r.wait_retrieval,
        r.list,
    ))?;
    if r.restore {
        return restore_through(runtime, config, &store, &request, chain, &decrypt);
    }
    process::widen_pipe(&stdout);
    let summary = recover::stream(
        runtime.handle(),
        &store,
        chain,
        request.paths,
        Some(&decrypt),
        r.list,
        stdout.lock(),
    )?;
    log::info!(
        "{}: recovered {} member(s) from {} run(s)",
        request.set,
        summary.members,
        summary.runs.len()
    );
    Ok(ExitStatus::Ok)
}

struct VerifyRequest {
    sets: Vec<String>,
    at: Option<String>,
    all: bool,
    read: bool,
    sample: Option<f64>,
    deep: bool,
    include_archived: bool,
    identity: Option<std::path::PathBuf>,
    host: Option<String>,
}

fn verify_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    r: VerifyRequest,
    json: bool,
) -> Result<ExitStatus, Error> {
    let at = parse_at(r.at)?;
    let decrypt = r
        .deep
        .then(|| decrypt_with(r.identity.as_deref()))
        .transpose()?;
    let read = match &decrypt {
        Some(how) => Some(recover::Check::Decode(how)),
        None => r.read.then_some(recover::Check::Read),
    };
    let store = open_store(runtime, config)?;
    let host = read_host(runtime, &store, config, r.host)?;
    let request = verify::Request {
        sets: r.sets.iter().map(|s| set_name(config, s)).collect(),
        at,
        read,
        all: r.all,
        sample: r.sample,
        include_archived: r.include_archived.then_some(config.retrieval),
    };
    let report = verify::verify(runtime.handle(), &store, &host, &request)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &verify::json(&report))?;
        writeln!(out)?;
    } else {
        write!(out, "{}", verify::text(&report))?;
    }
    // The MetricsFile speaks for this configuration's Host: another host's sets are not
    // recorded there under the same labels.
    if let Some(path) = config.metrics_file.as_ref().filter(|_| host == config.host) {
        let check = match read {
            None => "objects",
            Some(recover::Check::Read) => "read",
            Some(recover::Check::Decode(_)) => "deep",
        };
        let sets = report.verified_sets();
        if let Err(e) = metrics::update_verified(path, &sets, check, Utc::now()) {
            log::error!("MetricsFile {}: {e}", path.display());
        }
    }
    Ok(report.exit_status())
}

fn decrypt_with(identity: Option<&std::path::Path>) -> Result<DecryptWith, Error> {
    Ok(match identity {
        Some(path) => DecryptWith::Identity(Identity::load(path).map_err(Error::configuration)?),
        None => DecryptWith::Gpg,
    })
}

/// The bucket set `given` names, with its settings.
fn bucket_set<'a>(config: &'a Config, given: &str) -> Result<(&'a SetSpec, &'a BucketSpec), Error> {
    let name = if given.starts_with("bucket/") {
        given.to_string()
    } else {
        format!("bucket/{given}")
    };
    match config.find_set(&name).or_else(|| config.find_set(given)) {
        Some(
            set @ SetSpec {
                source: SourceSpec::Bucket(spec),
                ..
            },
        ) => Ok((set, spec)),
        Some(set) => Err(Error::configuration(anyhow!(
            "{} is not a bucket set",
            set.name
        ))),
        None => Err(Error::configuration(anyhow!(
            "no bucket set '{given}' in {}",
            config.file.display()
        ))),
    }
}

/// The snapshot of `set` current at `at` (the latest without it).
fn snapshot_at(
    runtime: &tokio::runtime::Runtime,
    store: &DynStore,
    config: &Config,
    host: &str,
    set: &SetSpec,
    at: Option<&str>,
) -> Result<crate::schema::manifest::Manifest, Error> {
    let at = at
        .map(catalog::parse_time)
        .transpose()
        .map_err(|e| Error::configuration(anyhow!("{e}")))?;
    let request = recover::Request {
        set: set.name.clone(),
        at,
        paths: Vec::new(),
    };
    let chain = runtime.block_on(recover::plan(store, host, &request))?;
    let snapshot = chain
        .into_iter()
        .next_back()
        .expect("a chain is never empty");
    // Its index is read like a recovery's archive: archived, it must be retrieved first.
    let index = std::slice::from_ref(&snapshot);
    runtime.block_on(recover::ready(
        store,
        index,
        &config.retrieval,
        false,
        false,
    ))?;
    Ok(snapshot)
}

fn bucket_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    action: BucketAction,
    test: bool,
) -> Result<ExitStatus, Error> {
    let store = open_store(runtime, config)?;
    let mut out = std::io::stdout().lock();
    match action {
        BucketAction::Restore {
            set,
            at,
            to,
            prefix,
            delete,
            decrypt,
            host,
        } => {
            let (set, spec) = bucket_set(config, &set)?;
            let host = read_host(runtime, &store, config, host.host)?;
            let target = match &to {
                Some(t) => {
                    BucketUrl::parse(t).map_err(|e| Error::configuration(anyhow!("--to: {e}")))?
                }
                None => spec.master.clone(),
            };
            let decrypt = decrypt_with(decrypt.identity.as_deref())?;
            let snapshot = snapshot_at(runtime, &store, config, &host, set, at.as_deref())?;
            let request = bucket::restore::Request {
                spec,
                s3: &config.s3,
                retry: crate::connect::retry_policy(config),
                snapshot: &snapshot,
                target: &target,
                only: &prefix,
                delete,
                dry_run: test,
            };
            let restored = bucket::restore::restore(runtime.handle(), &store, &decrypt, &request)?;
            print_restore(&mut out, &set.name, &request, &restored)
        }
        BucketAction::Diff {
            set,
            run1,
            run2,
            decrypt,
            host,
        } => {
            let (set, _) = bucket_set(config, &set)?;
            let host = read_host(runtime, &store, config, host.host)?;
            let decrypt = decrypt_with(decrypt.identity.as_deref())?;
            let first = snapshot_at(runtime, &store, config, &host, set, Some(&run1))?;
            let second = snapshot_at(runtime, &store, config, &host, set, Some(&run2))?;
            let before = bucket::load_index(runtime.handle(), &store, &first, &decrypt)?;
            let after = bucket::load_index(runtime.handle(), &store, &second, &decrypt)?;
            let changes = bucket::diff::diff(&before, &after);
            print_changes(&mut out, &changes)?;
            log::info!(
                "{}: {} change(s) from snapshot {} to {}",
                set.name,
                changes.len(),
                first.run,
                second.run
            );
            Ok(ExitStatus::Ok)
        }
    }
}

/// One line per change between two snapshots: `+` added, `-` removed, `~` changed.
fn print_changes(out: &mut impl Write, changes: &[bucket::diff::Change]) -> std::io::Result<()> {
    for change in changes {
        use bucket::diff::Change;
        match change {
            Change::Added(v) => writeln!(out, "+ {} ({} bytes)", v.key, v.size)?,
            Change::Removed(v) => writeln!(out, "- {}", v.key)?,
            Change::Changed {
                before,
                after,
                same_content,
            } => writeln!(
                out,
                "~ {} ({} -> {} bytes{})",
                after.key,
                before.size,
                after.size,
                if *same_content { ", same content" } else { "" }
            )?,
        }
    }
    Ok(())
}

/// Prints what `bucket restore` did (or would do); its failures fail the command.
fn print_restore(
    out: &mut impl Write,
    set: &str,
    request: &bucket::restore::Request,
    restored: &bucket::restore::Restored,
) -> Result<ExitStatus, Error> {
    let bucket::restore::Restored {
        plan,
        outcome,
        replica,
        target,
    } = restored;
    let (verb, copied, deleted, failures) = match outcome {
        Some(o) => ("", o.copied, o.deleted, &o.failures[..]),
        None => {
            for c in &plan.copies {
                writeln!(
                    out,
                    "copy {} (version {}, {} bytes) -> {}",
                    replica.locate(&c.version.key),
                    c.version.version_id,
                    c.version.size,
                    target.locate(&c.to)
                )?;
            }
            for key in &plan.deletes {
                writeln!(out, "delete {}", target.locate(key))?;
            }
            let planned = (plan.copies.len() as u64, plan.deletes.len() as u64);
            ("would ", planned.0, planned.1, &[][..])
        }
    };
    for failure in failures {
        log::error!("restore failed: {failure}");
    }
    writeln!(
        out,
        "{set}: snapshot {} -> {}: {verb}copy {copied}, {verb}delete {deleted}, {} already identical{}",
        request.snapshot.run,
        request.target,
        plan.identical,
        if failures.is_empty() {
            String::new()
        } else {
            format!(", {} FAILED", failures.len())
        }
    )?;
    Ok(if failures.is_empty() {
        ExitStatus::Ok
    } else {
        ExitStatus::Failed
    })
}

/// `recover --restore`: the chain's data into the restore command's stdin; its exit status
/// decides.
fn restore_through(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    store: &DynStore,
    request: &recover::Request,
    chain: Vec<crate::schema::manifest::Manifest>,
    decrypt: &DecryptWith,
) -> Result<ExitStatus, Error> {
    let configured = config
        .find_set(&request.set)
        .map(|s| s.restore.clone())
        .filter(|r| !r.is_empty());
    // A manifest is data: an empty recorded command is no command.
    let recorded = chain.last().and_then(|m| match &m.source {
        crate::schema::manifest::SourceInfo::Program { run, .. } => {
            run.restore.clone().filter(|r| !r.is_empty())
        }
        _ => None,
    });
    let argv = configured.or(recorded).ok_or_else(|| {
        Error::configuration(anyhow!(
            "no restore command for {}: configure Restore, or pipe `s3nap recover {}` into one",
            request.set,
            request.set
        ))
    })?;
    let (program, args) = argv.split_first().expect("non-empty");
    // Its arguments may hold a password (a manifest written before they were refused): the
    // program is named, its arguments only counted.
    let command = match args.len() {
        0 => program.clone(),
        n => format!("{program} (with {n} argument(s))"),
    };
    log::info!("{}: restoring through {command}", request.set);
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let mut child = crate::process::ChildWriter::spawn(cmd, &format!("restore command {program}"))?;
    let streamed = recover::stream(
        runtime.handle(),
        store,
        chain,
        Vec::new(),
        Some(decrypt),
        false,
        &mut child,
    );
    // Closes the pipe, so the command sees the end of its input, and waits for its verdict.
    let status = child
        .finish()
        .map_err(|e| anyhow!("waiting for {program}: {e}"))?;
    let summary = match streamed {
        // The command stopped reading: its own verdict is the news.
        Err(e) if e.downcast_ref::<recover::OutputClosed>().is_some() => {
            return Err(if status.success() {
                anyhow!("restore command {command} exited 0 without reading all the data: {e}")
            } else {
                anyhow!("restore command {command} failed ({status}); {e}")
            }
            .into());
        }
        // The recovery failed (integrity, decryption): the command only got part of the data,
        // so whatever it made of that is a consequence, not the cause.
        Err(e) => {
            return Err(anyhow!(
                "{e:#}; so restore command {command} was given incomplete data ({status})"
            )
            .into())
        }
        Ok(_) if !status.success() => {
            return Err(anyhow!("restore command {command} failed ({status})").into());
        }
        Ok(summary) => summary,
    };
    log::info!(
        "{}: restored {} run(s) through {program}, which exited 0",
        request.set,
        summary.runs.len()
    );
    Ok(ExitStatus::Ok)
}

/// A set given by path (`/etc`) is looked up in the configuration; anything else is a set name.
fn set_name(config: &Config, given: &str) -> String {
    config
        .find_set(given)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| given.trim_end_matches('/').to_string())
}

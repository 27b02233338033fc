//! `s3nap`: parse the command line, call the library, print, map the outcome to an exit status.

use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use chrono::Utc;
use clap::Parser;

use s3nap::backup::{self, Outcome, RunContext};
use s3nap::catalog;
use s3nap::cli::{Cli, Command};
use s3nap::config::Config;
use s3nap::keys::Identity;
use s3nap::lock::{LockError, RunLock};
use s3nap::pipeline::decrypt::DecryptWith;
use s3nap::recover;

const EXIT_WARNINGS: u8 = 1;
const EXIT_FAILED: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_LOCKED: u8 = 4;

/// An error with the exit status it stands for.
struct Failure(u8, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(EXIT_FAILED, e.into())
    }
}

fn config_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure(EXIT_CONFIG, e.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    s3nap::logging::init(cli.debug);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, e)) => {
            // One line: the cause chain joined.
            eprintln!("s3nap: error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let config = Config::load(&cli.config).map_err(config_error)?;
    let now = match &cli.now {
        Some(t) => catalog::parse_time(t).map_err(|e| config_error(anyhow!("--now: {e}")))?,
        None => Utc::now(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Run { sets: Vec::new() }) {
        Command::Run { sets } => {
            check_sets(&config, &sets)?;
            if cli.test {
                return plan_command(&runtime, &config, cli.force, now, &sets);
            }
            backup_command(&runtime, &config, cli.wait, cli.force, now, &sets)
        }
        Command::Prune { sets } => {
            check_sets(&config, &sets)?;
            prune_command(&runtime, &config, cli.test, cli.wait, now, &sets)
        }
        Command::List { set, json } => {
            let store = open_store(&runtime, &config)?;
            let set = set.map(|s| set_name(&config, &s));
            let runs = runtime.block_on(catalog::load(&store, &config.host, set.as_deref()))?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &s3nap::report::list_json(&runs))?;
                writeln!(out)?;
            } else {
                write!(out, "{}", s3nap::report::list_table(&runs))?;
            }
            Ok(0)
        }
        Command::Recover {
            set,
            at,
            identity,
            gpg: _,
            paths,
        } => {
            let at = at
                .map(|t| catalog::parse_time(&t))
                .transpose()
                .map_err(|e| config_error(anyhow!("--at: {e}")))?;
            let decrypt = match identity {
                Some(path) => DecryptWith::Identity(Identity::load(&path).map_err(config_error)?),
                None => DecryptWith::Gpg,
            };
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                return Err(config_error(anyhow!(
                    "refusing to write a tar stream to a terminal; pipe it: s3nap recover {set} | tar -x"
                )));
            }
            let store = open_store(&runtime, &config)?;
            let request = recover::Request {
                set: set_name(&config, &set),
                at,
                paths: paths
                    .iter()
                    .map(|p| p.as_os_str().as_bytes().to_vec())
                    .collect(),
            };
            let chain = runtime.block_on(recover::plan(&store, &config.host, &request))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let summary = recover::stream(
                runtime.handle(),
                &store,
                chain,
                request.paths,
                Some(&decrypt),
                out,
            )?;
            log::info!(
                "{}: recovered {} member(s) from {} run(s)",
                request.set,
                summary.members,
                summary.runs.len()
            );
            Ok(0)
        }
    }
}

/// A store that cannot even be set up (unreadable key file, bad endpoint) is a configuration
/// error.
fn open_store(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
) -> Result<s3nap::store::DynStore, Failure> {
    runtime
        .block_on(s3nap::store::open(
            &config.store,
            &config.s3,
            config.retries,
        ))
        .map_err(|e| config_error(anyhow!(e)))
}

/// A set given by path (`/etc`) is looked up in the configuration; anything else is a set name.
fn set_name(config: &Config, given: &str) -> String {
    config
        .find_set(given)
        .map(|s| s.name.clone())
        .unwrap_or_else(|| given.trim_end_matches('/').to_string())
}

fn check_sets(config: &Config, only: &[String]) -> Result<(), Failure> {
    for name in only {
        if config.find_set(name).is_none() {
            return Err(config_error(anyhow!(
                "{}: no set '{name}' is configured",
                config.file.display()
            )));
        }
    }
    Ok(())
}

/// `-t`: plans every set against the store, read-only; no lock, no DiffDir, no writes.
fn plan_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    force: bool,
    now: chrono::DateTime<Utc>,
    only: &[String],
) -> Result<u8, Failure> {
    let store = open_store(runtime, config)?;
    let plans: Vec<_> = runtime.block_on(async {
        let mut plans = Vec::new();
        for set in config.selected_sets(only) {
            plans.push((
                set.clone(),
                backup::plan(&store, config, set, now, force).await,
            ));
        }
        plans
    });
    print!("{}", s3nap::report::plan_text(config, now, &plans));
    Ok(if plans.iter().any(|(_, p)| p.is_err()) {
        EXIT_FAILED
    } else {
        0
    })
}

/// Creates DiffDir and takes the configuration's run lock.
fn lock(config: &Config, wait: bool) -> Result<RunLock, Failure> {
    std::fs::create_dir_all(&config.diff_dir)
        .with_context(|| format!("DiffDir {}", config.diff_dir.display()))
        .map_err(config_error)?;
    RunLock::acquire(&config.diff_dir, wait).map_err(|e| match e {
        LockError::Held { .. } => Failure(EXIT_LOCKED, e.into()),
        other => Failure(EXIT_FAILED, other.into()),
    })
}

fn backup_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    wait: bool,
    force: bool,
    now: chrono::DateTime<Utc>,
    only: &[String],
) -> Result<u8, Failure> {
    let _lock = lock(config, wait)?;
    let certs = backup::load_certs(config).map_err(config_error)?;
    let store = open_store(runtime, config)?;
    let ctx = RunContext { store, certs };
    let outcomes = runtime.block_on(async {
        backup::abort_stale_uploads(&ctx.store, &config.host, Utc::now()).await;
        backup::run_all(config, &ctx, now, force, only).await
    });
    let mut code = 0;
    for outcome in &outcomes {
        let label = format!("{} [{}]", outcome.set, outcome.cycle);
        match &outcome.outcome {
            Outcome::Committed { manifest, retired } => {
                log::info!("{}", s3nap::report::summary_line(manifest, outcome.seconds));
                if !retired.is_empty() {
                    log::info!("{label}: retired {}", retired.join(", "));
                }
                if outcome.unreadable() > 0 {
                    code = code.max(EXIT_WARNINGS);
                }
            }
            Outcome::Skipped(reason) => log::info!("{label}: skipped: {reason}"),
            Outcome::Failed(e) => {
                log::error!("{label}: FAILED: {e:#}");
                code = EXIT_FAILED;
            }
        }
    }
    Ok(code)
}

fn prune_command(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    test: bool,
    wait: bool,
    now: chrono::DateTime<Utc>,
    only: &[String],
) -> Result<u8, Failure> {
    let _lock = if test {
        None
    } else {
        Some(lock(config, wait)?)
    };
    let store = open_store(runtime, config)?;
    let mut out = std::io::stdout().lock();
    let verb = if test { "would retire" } else { "retired" };
    let mut code = 0;
    for set in config.selected_sets(only) {
        let result = runtime.block_on(async {
            let all = catalog::load(&store, &config.host, Some(&set.name)).await?;
            let runs = s3nap::plan::own_runs(set, &all);
            let refs: Vec<_> = runs.iter().map(s3nap::plan::run_ref).collect();
            let verdicts = s3nap::policy::retention::evaluate(&refs, &s3nap::plan::rules(set), now);
            let retired = s3nap::prune::retire(&store, &runs, &verdicts, test).await?;
            anyhow::Ok((verdicts, retired.len()))
        });
        match result {
            Ok((verdicts, _)) => {
                for v in &verdicts {
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
            }
            Err(e) => {
                log::error!("{} [{}]: prune FAILED: {e:#}", set.name, set.cycle_label());
                code = EXIT_FAILED;
            }
        }
    }
    let debris = runtime.block_on(s3nap::prune::clear_debris(
        &store,
        &config.host,
        Utc::now(),
        test,
    ))?;
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
    Ok(code)
}

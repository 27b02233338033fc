//! Verify: the committed runs in the store in, a verdict per run out (README, "Verifying
//! backups"), changing nothing.
//!
//! Every committed run of the selected sets is checked with HEAD requests only: its manifest
//! parses, every object it names exists (the archive with the size the manifest records, the
//! range hashes with one line per range), every quilt content object it references exists
//! (each HEADed once, however many runs share it), and its chain is complete (every DIFF's
//! base is there). Reading goes further on the runs a recovery would read — the chain
//! `recover` reads now, per set; every run with `--all`; the chain at a time with `--at`;
//! a random part with
//! `--sample` — through recovery's own path ([`recover::check_archive`]): ranged GETs checked
//! against the range SHA-256s, and with `--deep` decryption, decompression and the tar parser
//! (or a dump's length) to the end, into nothing. Debris — objects and uploads of interrupted
//! runs, found as `prune -t` finds them — is listed, never counted as damage.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use crate::catalog::{self, CatalogError};
use crate::error::{Error, ExitStatus, IntegrityError, Kind};
use crate::prune;
use crate::recover::{self, Check};
use crate::schema::layout::{self, Kind as RunKind, RunId};
use crate::schema::manifest::Manifest;
use crate::schema::quilt;
use crate::store::dry_run::DryRunStore;
use crate::store::retrieval::{self, Retrieval};
use crate::store::{DynStore, ErrorKind, ObjectInfo, StoreError};

/// HEAD requests in flight at once (one run's objects each).
const PARALLEL_RUNS: usize = 8;
/// HEAD requests of quilt content in flight at once.
const PARALLEL_CONTENT: usize = 16;

pub struct Request<'a> {
    /// The sets to verify (names as `list` shows them); empty: every set of the host in the
    /// store.
    pub sets: Vec<String>,
    /// Only the chain current at this time (of each set), for every check.
    pub at: Option<DateTime<Utc>>,
    /// How far the runs to read are taken; `None`: HEAD requests only.
    pub read: Option<Check<'a>>,
    /// Read every committed run, not only those a recovery of the latest state needs.
    pub all: bool,
    /// Read only a random part (percent, 0 to 100) of the runs that would be read.
    pub sample: Option<f64>,
    /// Read objects in an archive storage class too (see [`read_decision`]), retrieved as
    /// this says.
    pub include_archived: Option<Retrieval>,
}

/// What was found wrong, naming the object.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The object concerned, as the store names it.
    pub object: String,
    /// What is wrong (naming the object too).
    pub message: String,
    pub kind: Kind,
}

impl Problem {
    fn new(object: String, e: impl Into<anyhow::Error>) -> Self {
        let e = Error::from(e.into());
        Problem {
            object,
            message: e.to_string(),
            kind: e.kind(),
        }
    }

    /// Stored data that failed its check.
    fn damage(object: String, message: String) -> Self {
        Problem::new(object, IntegrityError(message))
    }
}

/// The verdict on one run (or on a set that has none to check).
#[derive(Debug, Clone)]
pub struct RunReport {
    pub set: String,
    /// `None` for a set without any run to check.
    pub run: Option<(RunId, RunKind)>,
    /// What was checked: `manifest`, `objects`, `chain`, `read`, `deep`.
    pub checked: Vec<&'static str>,
    /// Why the run was not read although selected (it is then not counted as read).
    pub not_read: Option<String>,
    /// Stored bytes read and checked.
    pub bytes_read: u64,
    pub problems: Vec<Problem>,
}

impl RunReport {
    fn new(set: &str, run: Option<(RunId, RunKind)>) -> Self {
        RunReport {
            set: set.to_string(),
            run,
            checked: Vec::new(),
            not_read: None,
            bytes_read: 0,
            problems: Vec::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An object or upload without a manifest: what an interrupted (or running) run leaves.
#[derive(Debug, Clone)]
pub struct Debris {
    pub object: String,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub runs: Vec<RunReport>,
    pub debris: Vec<Debris>,
    /// The runs selected for reading before any was skipped (the sample's base).
    pub to_read: usize,
    pub sample: Option<f64>,
    pub include_archived: bool,
}

impl Report {
    /// 0 when every checked run is whole; 2 when anything is damaged or failed, whatever else
    /// was found (an archive waiting for its retrieval must not hide damage elsewhere); else
    /// the status of the problems' kind (5: retrievals requested).
    pub fn exit_status(&self) -> ExitStatus {
        self.runs
            .iter()
            .flat_map(|r| &r.problems)
            .map(|p| p.kind.exit_status())
            .max_by_key(|s| (*s == ExitStatus::Failed, *s))
            .unwrap_or(ExitStatus::Ok)
    }

    /// The sets all of whose checked runs are whole, and were read when reading was asked
    /// (an archived archive skipped is no success of `--read`).
    pub fn verified_sets(&self) -> Vec<String> {
        let mut sets: BTreeMap<&str, bool> = BTreeMap::new();
        for r in &self.runs {
            *sets.entry(&r.set).or_insert(true) &= r.ok() && r.not_read.is_none();
        }
        sets.into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(s, _)| s.to_string())
            .collect()
    }
}

/// Checks the runs `request` selects. Blocking: call it outside the async runtime, whose
/// `handle` runs the requests. An error is a failure to list the store at all; everything
/// found wrong with a run is in the report.
pub fn verify(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    host: &str,
    request: &Request,
) -> anyhow::Result<Report> {
    let only = match request.sets.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    let listed = handle.block_on(catalog::load_each(store, host, only))?;
    let wanted = |set: &str| request.sets.is_empty() || request.sets.iter().any(|s| s == set);
    let mut runs: Vec<Manifest> = Vec::new();
    let mut unreadable: Vec<RunReport> = Vec::new();
    for (key, read) in listed {
        let Some((set, run, kind)) = layout::parse_manifest_key(host, &key) else {
            continue;
        };
        if !wanted(&set) {
            continue;
        }
        match read {
            Ok(m) => runs.push(m),
            // Retired since the listing: no longer a run.
            Err(CatalogError::Store(e)) if e.kind == ErrorKind::NotFound => {}
            Err(e) => {
                // One unreadable manifest stops `recover` of its set at any time: always said.
                let mut report = RunReport::new(&set, Some((run, kind)));
                report.checked.push("manifest");
                let object = store.locate(&key);
                report.problems.push(match e {
                    CatalogError::Store(e) => Problem::new(object, e),
                    e => Problem::damage(object, e.to_string()),
                });
                unreadable.push(report);
            }
        }
    }
    runs.sort_by(|a, b| (&a.set, a.run).cmp(&(&b.set, b.run)));
    let sets: BTreeSet<String> = if request.sets.is_empty() {
        runs.iter()
            .map(|m| m.set.clone())
            .chain(unreadable.iter().map(|r| r.set.clone()))
            .collect()
    } else {
        request.sets.iter().cloned().collect()
    };
    let mut report = Report {
        sample: request.sample,
        include_archived: request.include_archived.is_some(),
        ..Report::default()
    };
    let unreadable_runs: BTreeSet<(String, RunId)> = unreadable
        .iter()
        .filter_map(|r| Some((r.set.clone(), r.run?.0)))
        .collect();

    // Which runs each check covers.
    let mut scope: Vec<&Manifest> = Vec::new();
    let mut to_read: Vec<&Manifest> = Vec::new();
    for set in &sets {
        let latest = match catalog::latest_at(set, &runs, request.at) {
            Ok(m) => m,
            Err(e) => {
                // A set asked for by name without a run (at that time) is what recover would
                // fail on; any other set simply has nothing to check at that time.
                let has_unreadable = unreadable.iter().any(|r| &r.set == set);
                if !request.sets.is_empty() && !has_unreadable {
                    let mut none = RunReport::new(set, None);
                    let object = store.locate(&layout::set_prefix(host, set));
                    none.problems.push(Problem::new(object, e));
                    report.runs.push(none);
                }
                continue;
            }
        };
        // The runs a recovery of that state reads, as far as its chain can be followed (where
        // it breaks is reported on the run whose base is missing).
        let (chain, _) = catalog::walk_chain(&runs, latest);
        let of_set = || runs.iter().filter(|m| &m.set == set);
        match request.at {
            Some(_) => {
                scope.extend(&chain);
                to_read.extend(&chain);
            }
            None => {
                scope.extend(of_set());
                if request.all {
                    to_read.extend(of_set());
                } else {
                    to_read.extend(&chain);
                }
            }
        }
    }
    if request.read.is_none() {
        to_read.clear();
    }
    report.to_read = to_read.len();
    let to_read = sample(to_read, request.sample);

    // HEAD checks, several runs at a time; quilt content, shared by runs, once per object.
    let content = handle.block_on(head_content(store, &scope));
    let checked: Vec<(RunReport, Option<ObjectInfo>)> = handle.block_on(
        stream::iter(&scope)
            .map(|m| check_run(store, &runs, &unreadable_runs, &content, m))
            .buffered(PARALLEL_RUNS)
            .collect(),
    );
    for (manifest, (mut run, archive)) in scope.iter().zip(checked) {
        let selected = to_read
            .iter()
            .any(|m| m.set == manifest.set && m.run == manifest.run);
        if selected {
            read_run(handle, store, request, manifest, archive, &mut run);
        }
        report.runs.push(run);
    }
    report.runs.extend(unreadable);
    report
        .runs
        .sort_by(|a, b| (&a.set, a.run).cmp(&(&b.set, b.run)));
    // Debris is news, not a check: credentials that may read but not list uploads (or a
    // server without ListMultipartUploads) must not cost the report.
    match handle.block_on(debris(store, host, &sets)) {
        Ok(found) => report.debris = found,
        Err(e) => log::warn!("debris not listed: {e:#}"),
    }
    Ok(report)
}

/// A random `percent` of `runs` (at least one when `percent` is above 0); all without it.
fn sample(runs: Vec<&Manifest>, percent: Option<f64>) -> Vec<&Manifest> {
    let Some(percent) = percent else {
        return runs;
    };
    let count = if percent <= 0.0 {
        0
    } else {
        ((runs.len() as f64 * percent / 100.0).ceil() as usize).clamp(1, runs.len().max(1))
    };
    // The standard library's hasher has random keys per process: an ordering by it is a
    // shuffle, without a dependency for one.
    let keys = std::collections::hash_map::RandomState::new();
    let mut shuffled: Vec<(u64, &Manifest)> = runs
        .into_iter()
        .map(|m| (keys.hash_one((&m.set, m.run.0)), m))
        .collect();
    shuffled.sort_by_key(|(h, _)| *h);
    shuffled.into_iter().take(count).map(|(_, m)| m).collect()
}

/// The HEAD checks of one run: its objects and its chain. Also returns what the store said of
/// its archive, for [`read_decision`], when all of its objects are as recorded.
async fn check_run(
    store: &DynStore,
    runs: &[Manifest],
    unreadable: &BTreeSet<(String, RunId)>,
    content: &ContentHeads,
    m: &Manifest,
) -> (RunReport, Option<ObjectInfo>) {
    let mut report = RunReport::new(&m.set, Some((m.run, m.kind)));
    report.checked.extend(["manifest", "objects", "chain"]);
    let own = layout::run_prefix(&m.host, &m.set, m.run, m.kind);
    let mut archive = None;
    for key in m.objects() {
        let object = store.locate(key);
        // A damaged manifest could name another run's object, which would then pass for this
        // run's.
        if !key.starts_with(&own) {
            let manifest = store.locate(&layout::manifest_key(&m.host, &m.set, m.run, m.kind));
            report.problems.push(Problem::damage(
                manifest.clone(),
                format!("{manifest}: names {object}, an object of another run (damaged manifest)"),
            ));
            continue;
        }
        let info = match store.head(key).await {
            Ok(Some(info)) => info,
            Ok(None) => {
                let message = format!("{object}: object is missing");
                report.problems.push(Problem::damage(object, message));
                continue;
            }
            Err(e) => {
                report.problems.push(Problem::new(object, e));
                continue;
            }
        };
        if let Some(want) = recorded_size(m, key) {
            if info.size != want {
                let message = format!(
                    "{object}: object holds {} bytes, its manifest says {want} (truncated or replaced)",
                    info.size
                );
                report.problems.push(Problem::damage(object, message));
                continue;
            }
        }
        if key == m.archive.key {
            archive = Some(info);
        }
    }
    // A run whose own objects are not as recorded is not read (it would only fail again); a
    // broken chain does not stop reading the run's own archive.
    let archive = archive.filter(|_| report.ok());
    // Content the run references lives outside its prefix, shared: missing, it fails the
    // recovery of the files it holds, but the archive itself can still be read.
    check_quilt(store, content, m, &mut report);
    if let Err(e) = catalog::chain_of(runs, m) {
        let object = store.locate(&layout::manifest_key(&m.host, &m.set, m.run, m.kind));
        let mut message = e.to_string();
        if let CatalogError::BrokenChain { base, .. } = &e {
            if unreadable.contains(&(m.set.clone(), *base)) {
                message += " (its manifest is unreadable)";
            }
        }
        report.problems.push(Problem::damage(object, message));
    }
    (report, archive)
}

/// What HEAD said of each quilt content object a checked run references: whether it exists.
type ContentHeads = BTreeMap<String, Result<bool, StoreError>>;

/// HEADs every content object the `runs` reference, each once (runs and hosts share them).
async fn head_content(store: &DynStore, runs: &[&Manifest]) -> ContentHeads {
    let keys: BTreeSet<&str> = runs
        .iter()
        .filter_map(|m| m.quilt.as_ref())
        .flat_map(|q| q.content.iter().map(String::as_str))
        .filter(|k| quilt::is_content_key(k))
        .collect();
    stream::iter(keys)
        .map(|key| async move { (key.to_string(), store.head(key).await.map(|i| i.is_some())) })
        .buffer_unordered(PARALLEL_CONTENT)
        .collect()
        .await
}

/// The checks of the quilt content `m` references (from [`head_content`]): each must be a
/// content key, and exist.
fn check_quilt(store: &DynStore, content: &ContentHeads, m: &Manifest, report: &mut RunReport) {
    let Some(quilt) = &m.quilt else {
        return;
    };
    report.checked.push("quilt");
    let manifest = store.locate(&layout::manifest_key(&m.host, &m.set, m.run, m.kind));
    for key in &quilt.content {
        let object = store.locate(key);
        if !quilt::is_content_key(key) {
            report.problems.push(Problem::damage(
                manifest.clone(),
                format!("{manifest}: names {object} as quilt content, which is not a content key (damaged manifest)"),
            ));
            continue;
        }
        match content.get(key) {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                let message = format!(
                    "{object}: quilt content object is missing; run {} of {} references it",
                    m.run, m.set
                );
                report.problems.push(Problem::damage(object, message));
            }
            Some(Err(e)) => report.problems.push(Problem::new(object, e.clone())),
            None => unreachable!("head_content HEADs every content key of every checked run"),
        }
    }
}

/// The size the manifest records for `key`, one of its run's objects: the archive's stored
/// size, and for the range hashes one line of 64 hex digits per range.
fn recorded_size(m: &Manifest, key: &str) -> Option<u64> {
    if key == m.archive.key {
        return Some(m.archive.stored_size);
    }
    match &m.archive.ranges {
        Some(r) if r.key == key => Some(r.count * 65),
        _ => None,
    }
}

/// Whether the archive described by `archive` (its HEAD) is read, and if not, why: the one
/// place that decides. An object in an archive storage class (GLACIER, DEEP_ARCHIVE, by the
/// configuration or a lifecycle rule) cannot be read before a paid retrieval: it is skipped
/// and listed, unless `include_archived` asks for it; then its retrieval is requested (once)
/// and, until it can be read, the run is reported as waiting for it (exit status 5).
fn read_decision(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    archive: &ObjectInfo,
    include_archived: Option<&Retrieval>,
) -> Result<(), Skip> {
    if !archive.needs_retrieval() {
        return Ok(());
    }
    let class = archive.storage_class.as_deref().unwrap_or("?");
    let Some(how) = include_archived else {
        return Err(Skip::Archived(format!(
            "archived in {class}: reading it starts a paid retrieval (--include-archived)"
        )));
    };
    handle
        .block_on(retrieval::require_readable(
            store,
            std::slice::from_ref(&archive.key),
            how,
        ))
        .map_err(|e| Skip::Pending(Problem::new(store.locate(&archive.key), e)))
}

/// Why a selected archive is not read.
enum Skip {
    /// In an archive class, not asked for.
    Archived(String),
    /// Its retrieval was requested or is pending (or could not be requested).
    Pending(Problem),
}

/// Reads one run's archive as `request` says, unless its objects already failed their checks
/// (`archive` is then `None`) or [`read_decision`] skips it.
fn read_run(
    handle: &tokio::runtime::Handle,
    store: &DynStore,
    request: &Request,
    m: &Manifest,
    archive: Option<ObjectInfo>,
    report: &mut RunReport,
) {
    let Some(how) = request.read else {
        return;
    };
    let Some(archive) = archive else {
        report.not_read = Some("its objects failed their checks".into());
        return;
    };
    match read_decision(handle, store, &archive, request.include_archived.as_ref()) {
        Ok(()) => {}
        Err(Skip::Archived(why)) => {
            report.not_read = Some(why);
            return;
        }
        Err(Skip::Pending(problem)) => {
            report.not_read = Some("waiting for its retrieval".into());
            report.problems.push(problem);
            return;
        }
    }
    report.checked.push(match how {
        Check::Read => "read",
        Check::Decode(_) => "deep",
    });
    let target = store.locate(&m.archive.key);
    match recover::check_archive(handle, store, m, how) {
        Ok(()) => {
            report.bytes_read = m.archive.stored_size;
            log::info!("{} run {}: {target} read and whole", m.set, m.run);
        }
        Err(e) => report.problems.push(Problem::new(target, e)),
    }
}

/// What interrupted runs of `sets` left, found as `prune -t` finds it (through a dry-run
/// store, so nothing is removed).
async fn debris(
    store: &DynStore,
    host: &str,
    sets: &BTreeSet<String>,
) -> anyhow::Result<Vec<Debris>> {
    let dry: DynStore = DryRunStore::wrap(store.clone());
    let found = prune::clear_debris(&dry, host).await?;
    let of_sets = |key: &String| {
        layout::parse_archive_key(host, key).is_some_and(|(set, _, _)| sets.contains(&set))
    };
    let days = prune::DEBRIS_GRACE.num_days();
    let mut out = Vec::new();
    let mut add = |keys: &[String], what: String| {
        for key in keys.iter().filter(|k| of_sets(k)) {
            out.push(Debris {
                object: store.locate(key),
                what: what.clone(),
            });
        }
    };
    add(
        &found.archives,
        format!(
            "no manifest, older than {days} days: an interrupted run's; `s3nap prune` removes it"
        ),
    );
    add(
        &found.uploads,
        format!("unfinished upload, older than {days} days: `s3nap prune` aborts it"),
    );
    add(
        &found.young,
        format!(
            "no manifest yet, younger than {days} days: a run in progress, or an interrupted one's"
        ),
    );
    out.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(out)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Configuration => "configuration",
        Kind::Locked => "locked",
        Kind::Integrity => "integrity",
        Kind::RetrievalPending => "retrieval_pending",
        Kind::Transient => "transient",
        Kind::Failed => "failed",
    }
}

fn run_label(r: &RunReport) -> String {
    match r.run {
        Some((run, kind)) => format!("{} {run} {kind}", r.set),
        None => r.set.clone(),
    }
}

/// One line per run, the debris, and a summary line.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.runs {
        let checked = if r.checked.is_empty() {
            String::new()
        } else {
            format!(" [{}]", r.checked.join(", "))
        };
        let verdict = if r.ok() {
            "OK".to_string()
        } else {
            let word = if r.problems.iter().any(|p| p.kind == Kind::Integrity) {
                "DAMAGED"
            } else if r.problems.iter().all(|p| p.kind == Kind::RetrievalPending) {
                "WAITING"
            } else {
                "FAILED"
            };
            let what: Vec<&str> = r.problems.iter().map(|p| p.message.as_str()).collect();
            format!("{word}: {}", what.join("; "))
        };
        let not_read = match &r.not_read {
            Some(why) => format!(" (not read: {why})"),
            None => String::new(),
        };
        out += &format!("{}{checked}: {verdict}{not_read}\n", run_label(r));
    }
    for d in &report.debris {
        out += &format!("debris (not damage): {}: {}\n", d.object, d.what);
    }
    let sets: BTreeSet<&str> = report.runs.iter().map(|r| r.set.as_str()).collect();
    let checked = report.runs.iter().filter(|r| r.run.is_some()).count();
    let bad = report.runs.iter().filter(|r| !r.ok()).count();
    let read: Vec<&RunReport> = report.runs.iter().filter(|r| r.bytes_read > 0).collect();
    let bytes: u64 = read.iter().map(|r| r.bytes_read).sum();
    let sample = match report.sample {
        Some(p) => format!(", a {p}% sample of {}", report.to_read),
        None => String::new(),
    };
    out += &format!(
        "verify: {checked} run(s) of {} set(s) checked: {} OK, {bad} with problems; {} run(s) read whole ({}{sample}); {} debris object(s)\n",
        sets.len(),
        report.runs.iter().filter(|r| r.ok()).count(),
        read.len(),
        crate::report::human_bytes(bytes),
        report.debris.len(),
    );
    out
}

/// The report as one JSON document (README, "Verifying backups").
pub fn json(report: &Report) -> serde_json::Value {
    let runs: Vec<serde_json::Value> = report
        .runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "set": r.set,
                "run": r.run.map(|(run, _)| run.to_string()),
                "kind": r.run.map(|(_, kind)| kind.to_string()),
                "checked": r.checked,
                "ok": r.ok(),
                "not_read": r.not_read,
                "bytes_read": r.bytes_read,
                "problems": r.problems.iter().map(|p| serde_json::json!({
                    "object": p.object,
                    "kind": kind_name(p.kind),
                    "error": p.message,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let debris: Vec<serde_json::Value> = report
        .debris
        .iter()
        .map(|d| serde_json::json!({"object": d.object, "what": d.what}))
        .collect();
    serde_json::json!({
        "runs": runs,
        "debris": debris,
        "ok": report.exit_status() == ExitStatus::Ok,
        "include_archived": report.include_archived,
    })
}

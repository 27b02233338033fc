//! Planning a set: its runs in the store's catalog and its cycle decide whether it runs, in
//! which slot, and FULL or DIFF; DiffDir then says whether a DIFF can really start from its
//! base. `-t` prints exactly these plans and a run executes them.
//!
//! DiffDir is only read here. A DIFF whose base's state or revision is missing, damaged or not
//! provably this set's is planned as a FULL, with the reason as a warning: never a wrong DIFF.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::sets::UnreadableDirectory;
use crate::catalog;
use crate::config::{Config, SetSpec, SourceSpec};
use crate::plan::{self, Action, BaseData, LocalStart, SetPlan};
use crate::schema::layout::{Kind, RunId};
use crate::schema::manifest::{Manifest, Owner, SourceInfo};
use crate::source::state::{self, Identity, State};
use crate::source::Warning;
use crate::store::DynStore;

/// The one planning `-t` prints and a run executes: each set against the store's catalog of its
/// runs, and what a DIFF needs from DiffDir (reads only; a DIFF whose base's state or revision
/// is missing, damaged or not provably this set's is planned as a FULL, with the reason).
pub struct Planner<'a> {
    store: &'a DynStore,
    config: &'a Config,
    now: DateTime<Utc>,
    force: bool,
    /// Run ids planned so far, by set name: two cycles of one set never get the same one.
    taken: HashMap<String, Vec<RunId>>,
    /// This configuration (`None`: unknown, so every set another configuration made runs of is
    /// refused), and `--take-over`.
    owner: Option<&'a Owner>,
    /// `owner`'s identity was made (or is to be made) by this run (see `owner::identify`).
    new_owner: bool,
    take_over: bool,
}

impl<'a> Planner<'a> {
    pub fn new(store: &'a DynStore, config: &'a Config, now: DateTime<Utc>, force: bool) -> Self {
        Planner {
            store,
            config,
            now,
            force,
            taken: Default::default(),
            owner: None,
            new_owner: false,
            take_over: false,
        }
    }

    /// Plans as `owner` (this configuration): a set whose latest run another configuration
    /// made is not planned, unless `take_over` (see `owner::check`); `new`: its identity is
    /// made by this run.
    pub fn owned_by(mut self, (owner, new): (Option<&'a Owner>, bool), take_over: bool) -> Self {
        self.owner = owner;
        self.new_owner = new;
        self.take_over = take_over;
        self
    }

    /// Plans `set`; `found` is what [`expand_sets`] said of it.
    pub async fn plan(
        &mut self,
        set: &SetSpec,
        found: Result<(), UnreadableDirectory>,
    ) -> anyhow::Result<SetPlan> {
        found?;
        let all = catalog::load(self.store, &self.config.host, Some(&set.name)).await?;
        let mine = (self.owner, self.new_owner);
        super::owner::check(set, &self.config.host, mine, &all, self.take_over)?;
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
            let (mut start_kind, mut start) =
                local_start(&self.config.diff_dir, set, *kind, base.as_deref());
            // A DIFF is only as good as its base: one whose archive is gone (an interrupted
            // commit whose clean-up has not run yet) is no base.
            if let (Kind::Diff, Some(b)) = (start_kind, base.as_deref()) {
                if self.store.head(&b.archive.key).await?.is_none() {
                    (start_kind, start) = fall_back(
                        Path::new(&self.store.locate(&b.archive.key)),
                        format!("the archive of the base run {} is missing", b.run),
                    );
                }
            }
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

/// A DIFF that cannot start from its base's local record becomes a FULL with this warning
/// (also in its manifest): never a wrong DIFF.
fn fall_back(path: &Path, problem: String) -> (Kind, LocalStart) {
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
    diff_dir: &Path,
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
/// which must also be the one the base run's manifest records (when it records one); staged
/// or promoted (see `backup::local`).
fn revision_start(diff_dir: &Path, id: &Identity, base: &Manifest) -> (Kind, LocalStart) {
    let path = state::revision_path(diff_dir, id);
    let recorded = recorded_revision(base);
    let of_base = |run: RunId, rev: u64| run == base.run && recorded.is_none_or(|r| r == rev);
    let staged = state::staged_path(&path);
    if let Ok(Some((run, rev))) = state::load_revision(&staged, id) {
        if of_base(run, rev) {
            return from_staged(BaseData::Revision(rev), staged);
        }
    }
    let problem = match state::load_revision(&path, id) {
        Ok(Some((run, rev))) if of_base(run, rev) => {
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

/// A DIFF needs the state of exactly its base run, of exactly this set and cycle, staged or
/// promoted (see `backup::local`).
fn tree_start(diff_dir: &Path, id: &Identity, root: &Path, base: &Manifest) -> (Kind, LocalStart) {
    let path = state::path(diff_dir, id);
    let describes = |run: Option<RunId>| match run {
        Some(run) if run == base.run => None,
        run => Some(format!(
            "incremental state describes run {}, not the base run {}",
            run.map(|r| r.to_string()).unwrap_or_else(|| "none".into()),
            base.run
        )),
    };
    // Only the headers are read here: the entries are parsed while the tree is walked.
    let file = |path: &Path| BaseData::TreeFile {
        path: path.to_path_buf(),
        run: base.run,
    };
    // Its base was interrupted between its manifest and promoting this file: the store lists
    // the base as committed, so the staged state is as good as a promoted one.
    let staged = state::staged_path(&path);
    if let Ok(Some(run)) = State::peek(&staged, id) {
        if describes(run).is_none() {
            return from_staged(file(&staged), staged);
        }
    }
    let problem = match State::peek(&path, id) {
        Ok(Some(run)) => match describes(run) {
            None => {
                return (
                    Kind::Diff,
                    LocalStart {
                        data: file(&path),
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
                    let problem = match describes(state.run) {
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

/// A DIFF from `data`, read from the staged file `staged` of its base: the base was
/// interrupted between its manifest and promoting the file, and the catalog lists it as
/// committed, so the staged file is as good as a promoted one.
fn from_staged(data: BaseData, staged: std::path::PathBuf) -> (Kind, LocalStart) {
    (
        Kind::Diff,
        LocalStart {
            data,
            staged: Some(staged),
            ..LocalStart::default()
        },
    )
}

/// The member name of a directory set's root, as its state names it (`srv/a_b`; `.` for `/`).
fn member_name(root: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = root.as_os_str().as_bytes();
    let stripped = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if stripped.is_empty() {
        b".".to_vec()
    } else {
        stripped.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::manifest;

    fn run(s: &str) -> RunId {
        s.parse().unwrap()
    }

    fn state_of(r: RunId) -> State {
        State {
            run: Some(r),
            ..State::default()
        }
    }

    #[test]
    fn a_diff_starts_from_the_staged_state_of_its_committed_base() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::new("dir/srv", None);
        let path = state::path(dir.path(), &id);
        let (older, base) = (run("20261101T030000Z"), run("20261102T030000Z"));
        let base_manifest = manifest::sample("dir/srv", base, Kind::Full, None);
        // The base run committed, but was killed before it promoted its state.
        state_of(older).save(&path, &id).unwrap();
        state_of(base)
            .save(&state::staged_path(&path), &id)
            .unwrap();
        let (kind, start) = tree_start(dir.path(), &id, Path::new("/srv"), &base_manifest);
        assert_eq!(kind, Kind::Diff, "{:?}", start.warning);
        assert_eq!(start.staged, Some(state::staged_path(&path)));

        // A staged state of a run that never committed (not the base) is not a start.
        let other = manifest::sample("dir/srv", run("20261103T030000Z"), Kind::Full, None);
        let (kind, start) = tree_start(dir.path(), &id, Path::new("/srv"), &other);
        assert_eq!(kind, Kind::Full);
        assert!(start.staged.is_none());

        // The same for the last revision of a Subversion set.
        let rev = state::revision_path(dir.path(), &id);
        state::save_revision(&rev, &id, older, 3).unwrap();
        state::save_revision(&state::staged_path(&rev), &id, base, 5).unwrap();
        let (kind, start) = revision_start(dir.path(), &id, &base_manifest);
        assert_eq!(kind, Kind::Diff, "{:?}", start.warning);
        assert!(matches!(start.data, BaseData::Revision(5)));
        let (kind, _) = revision_start(dir.path(), &id, &other);
        assert_eq!(kind, Kind::Full);
    }
}

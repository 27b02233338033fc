//! A run's local state, in two phases around its commit: what the next DIFF of its set starts
//! from (the tree's incremental state or the last Subversion revision dumped) is *staged*
//! beside its file before the manifest is stored, and *promoted* over it once the manifest is.
//!
//! A DIFF may build only on a committed run, so only a promoted file counts as such — except a
//! staged file whose run the store lists as committed: the run was interrupted between its
//! manifest and the promotion, and the planner takes the staged file then (and this run
//! promotes it first). A run whose commit failed discards what it staged. Staging or promoting
//! that fails (a full disk) does not undo the commit: it is reported as a problem of the run
//! (exit status 1), and the next run finds no matching state and makes a FULL.
//!
//! DiffDir itself is the owner's only: its state files list every backed-up path name.

use std::path::{Path, PathBuf};

use crate::schema::layout::RunId;
use crate::source::state::{self, Identity, State};

/// Creates DiffDir owner-only (0700) if it is missing; an existing one that group or others
/// may read is logged as a warning (it names every file backed up), and left as it is: its
/// mode is the administrator's to change, and the backup itself is not at fault (the exit
/// status stays as the sets make it).
pub fn prepare_diff_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::atomic::create_dirs(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & 0o044 != 0 {
        log::warn!(
            "DiffDir {} is readable by {} (mode {mode:04o}): its state lists every file backed up; chmod 700 {0}",
            dir.display(),
            if mode & 0o004 != 0 { "others" } else { "its group" },
        );
    }
    Ok(())
}

/// What the committed run leaves for the next one.
pub(super) struct NextStart {
    pub state: Option<State>,
    /// The last Subversion revision dumped.
    pub revision: Option<u64>,
    /// The old-format (shared-name) file the run started from.
    pub legacy: Option<PathBuf>,
    /// The staged file of the base run the run started from (the base was interrupted before
    /// promoting it).
    pub base_staged: Option<PathBuf>,
}

/// Files written beside their targets, waiting for the commit.
pub(super) struct Staged {
    /// (staged file, the file it replaces once the run is committed)
    files: Vec<(PathBuf, PathBuf)>,
    legacy: Option<PathBuf>,
    name: String,
    run: RunId,
}

/// Stages `next` for the set `id` of the run `run`, before its manifest is stored. Returns
/// what to promote or discard, and the problems met (the run still commits).
pub(super) fn stage(
    diff_dir: &Path,
    id: &Identity,
    run: RunId,
    next: NextStart,
) -> (Staged, Vec<String>) {
    let name = &id.set;
    let mut problems = Vec::new();
    // The base's own file first: once this run's staged file replaces it, it could not be.
    if let Some(staged) = &next.base_staged {
        let target = state::committed_path(staged);
        if let Err(e) = crate::atomic::rename(staged, &target) {
            let problem = format!(
                "the base's staged state {} could not replace {} ({e})",
                staged.display(),
                target.display()
            );
            log::error!("{name}: run {run}: {problem}");
            problems.push(problem);
        }
    }
    let mut files = Vec::new();
    let mut fail = |what: &str, path: &Path, e: std::io::Error| {
        let problem = format!(
            "{what} could not be saved to {} ({e}); the next run will be a FULL",
            path.display()
        );
        log::error!("{name}: run {run}: {problem}");
        problems.push(problem);
    };
    if let Some(to) = next.revision {
        let path = state::revision_path(diff_dir, id);
        let staged = state::staged_path(&path);
        match state::save_revision(&staged, id, run, to) {
            Ok(()) => files.push((staged, path)),
            Err(e) => fail("its last revision", &path, e),
        }
    }
    if let Some(mut state) = next.state {
        state.run = Some(run);
        let path = state::path(diff_dir, id);
        let staged = state::staged_path(&path);
        match state.save(&staged, id) {
            Ok(()) => files.push((staged, path)),
            Err(e) => fail("its incremental state", &path, e),
        }
    }
    let staged = Staged {
        files,
        legacy: next.legacy,
        name: name.clone(),
        run,
    };
    (staged, problems)
}

impl Staged {
    /// After the manifest is stored: the staged files replace their targets. Returns the
    /// problems met.
    pub(super) fn promote(self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut promoted = false;
        for (staged, target) in &self.files {
            match crate::atomic::rename(staged, target) {
                Ok(()) => promoted = true,
                Err(e) => {
                    // The staged file still describes this committed run: the next run
                    // takes it from there.
                    let problem = format!(
                        "{} could not replace {} ({e})",
                        staged.display(),
                        target.display()
                    );
                    log::error!("{}: run {} committed, but {problem}", self.name, self.run);
                    problems.push(problem);
                }
            }
        }
        // The old-format file this run started from has been replaced by the set's own.
        if let Some(old) = self.legacy.filter(|_| promoted) {
            match std::fs::remove_file(&old) {
                Ok(()) => log::info!(
                    "{}: migrated {} to the set's own file",
                    self.name,
                    old.display()
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("cannot remove {}: {e}", old.display()),
            }
        }
        problems
    }

    /// The run was not committed: what it staged must never be taken for a start.
    pub(super) fn discard(self) {
        for (staged, _) in self.files {
            if let Err(e) = std::fs::remove_file(&staged) {
                log::warn!("cannot remove {}: {e}", staged.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::layout::RunId;

    fn run(s: &str) -> RunId {
        s.parse().unwrap()
    }

    fn next(entries: &[&str]) -> NextStart {
        let mut state = State::default();
        for e in entries {
            let meta = state::Meta {
                kind: b'f',
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 1,
                mtime_ns: 0,
                ctime_ns: 0,
                ino: 1,
                dev: 1,
                target: Vec::new(),
            };
            state.entries.insert(e.as_bytes().to_vec(), meta);
        }
        NextStart {
            state: Some(state),
            revision: Some(7),
            legacy: None,
            base_staged: None,
        }
    }

    fn saved_run(dir: &Path, id: &Identity) -> Option<RunId> {
        State::load(&state::path(dir, id), id)
            .unwrap()
            .and_then(|s| s.run)
    }

    #[test]
    fn staged_files_replace_the_state_only_when_promoted() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::new("dir/srv", None);
        let (first, problems) = stage(dir.path(), &id, run("20261101T030000Z"), next(&["a"]));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(saved_run(dir.path(), &id), None, "staged is not saved");
        assert!(first.promote().is_empty());
        assert_eq!(saved_run(dir.path(), &id), Some(run("20261101T030000Z")));
        let revision = state::revision_path(dir.path(), &id);
        assert_eq!(
            state::load_revision(&revision, &id).unwrap(),
            Some((run("20261101T030000Z"), 7))
        );

        // A run that did not commit leaves the promoted files, and nothing staged, behind.
        let (second, _) = stage(dir.path(), &id, run("20261102T030000Z"), next(&["b"]));
        let staged = state::staged_path(&state::path(dir.path(), &id));
        assert!(staged.exists());
        second.discard();
        assert!(!staged.exists());
        assert_eq!(saved_run(dir.path(), &id), Some(run("20261101T030000Z")));
    }

    #[test]
    fn a_staged_base_is_promoted_before_the_next_run_stages_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::new("dir/srv", None);
        // Interrupted between its manifest and the promotion: only staged.
        let (_, _) = stage(dir.path(), &id, run("20261101T030000Z"), next(&["a"]));
        let staged = state::staged_path(&state::path(dir.path(), &id));
        let mut following = next(&["a", "b"]);
        following.base_staged = Some(staged.clone());
        let (second, _) = stage(dir.path(), &id, run("20261102T030000Z"), following);
        // The base's state is promoted; this run's own is staged (and if its commit fails, the
        // base's stays).
        assert_eq!(saved_run(dir.path(), &id), Some(run("20261101T030000Z")));
        second.discard();
        assert_eq!(saved_run(dir.path(), &id), Some(run("20261101T030000Z")));
    }

    #[test]
    fn a_state_that_cannot_be_written_is_a_problem_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, "x").unwrap();
        let id = Identity::new("dir/srv", None);
        let (staged, problems) = stage(&file, &id, run("20261101T030000Z"), next(&["a"]));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[1].contains("incremental state could not be saved")
                && problems[1].contains("the next run will be a FULL"),
            "{problems:?}"
        );
        assert!(
            staged.promote().is_empty(),
            "nothing staged, nothing to promote"
        );
    }
}

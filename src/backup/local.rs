//! After a run committed: what the next DIFF of its set starts from, saved to DiffDir — the
//! tree's incremental state or the last Subversion revision dumped — and an old-format file it
//! started from removed.
//!
//! Saved only now: a DIFF may build only on a committed run. A save that fails is logged, not
//! fatal (the run is stored); the next run then finds no matching state and makes a FULL.

use crate::config::Config;
use crate::schema::layout::RunId;
use crate::source::state::{self, Identity, State};

/// What the committed run leaves for the next one.
pub(super) struct NextStart {
    pub state: Option<State>,
    /// The last Subversion revision dumped.
    pub revision: Option<u64>,
    /// The old-format (shared-name) file the run started from.
    pub legacy: Option<std::path::PathBuf>,
}

/// Saves `next` for the set `id` after its run `run` committed.
pub(super) fn save(config: &Config, id: &Identity, run: RunId, next: NextStart) {
    let name = &id.set;
    let mut saved = false;
    if let Some(to) = next.revision {
        let path = state::revision_path(&config.diff_dir, id);
        match state::save_revision(&path, id, run, to) {
            Ok(()) => saved = true,
            Err(e) => log::error!(
                "{name}: run {run} committed, but its last revision could not be saved to {} ({e}); the next run will be a FULL",
                path.display()
            ),
        }
    }
    if let Some(mut state) = next.state {
        state.run = Some(run);
        let path = state::path(&config.diff_dir, id);
        match state.save(&path, id) {
            Ok(()) => saved = true,
            Err(e) => log::error!(
                "{name}: run {run} committed, but its incremental state could not be saved to {} ({e}); the next run will be a FULL",
                path.display()
            ),
        }
    }
    // The old-format file this run started from has been replaced by the set's own.
    if let Some(old) = next.legacy.filter(|_| saved) {
        match std::fs::remove_file(&old) {
            Ok(()) => log::info!(
                "{name}: migrated {} to the set's own file in {}",
                old.display(),
                config.diff_dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove {}: {e}", old.display()),
        }
    }
}

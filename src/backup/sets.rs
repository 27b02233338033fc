//! The sets a run works on: the configured sets in order, with each SubversionDir and
//! SnapshotsDir replaced by one set per repository or executable found in it now.
//!
//! A directory that cannot be read is an error of its set alone (the set fails when the run
//! reaches it). Two sets found under one name in one cycle would share — and prune — each
//! other's runs, so that is a configuration error for the whole run.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::{SetSpec, SourceSpec};

/// A SubversionDir or SnapshotsDir that cannot be read: its set fails when the run reaches it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableDirectory(pub String);

/// A set of a run, and whether it could be found (`Err`: the directory it comes from could
/// not be read).
pub type FoundSet = (SetSpec, Result<(), UnreadableDirectory>);

/// A set's identity: its name and cycle. Two sets with one identity share their runs.
type SetIdentity = (String, Option<String>);

/// The sets a run works on, in order, each with whether it could be found: the configured sets
/// with SubversionDir and SnapshotsDir replaced by one set per repository or executable found
/// now; a directory that cannot be read is an error of that set alone. Two sets found by
/// different directories under one name in one cycle (two SnapshotsDir holding executables of
/// the same name) would share their runs, so the second would never run: that is a
/// configuration error (`Err`), for the whole run, as any other.
pub fn expand_sets<'a>(sets: impl Iterator<Item = &'a SetSpec>) -> anyhow::Result<Vec<FoundSet>> {
    let sets: Vec<&SetSpec> = sets.collect();
    let mut expansion = Expansion {
        // A set configured on its own wins over the same set found by a directory expansion in
        // the same cycle: two sets with one identity would share (and prune) each other's runs.
        explicit: sets
            .iter()
            .map(|s| (s.name.clone(), s.cycle.name.clone()))
            .collect(),
        found: HashMap::new(),
        conflicts: Vec::new(),
        out: Vec::new(),
    };
    for set in sets {
        expansion.add(set);
    }
    if expansion.conflicts.is_empty() {
        Ok(expansion.out)
    } else {
        Err(anyhow::anyhow!(expansion.conflicts.join("\n")))
    }
}

/// The expansion so far.
struct Expansion<'a> {
    explicit: HashSet<SetIdentity>,
    /// Where each expanded set was found, by identity.
    found: HashMap<SetIdentity, (PathBuf, &'a SetSpec)>,
    conflicts: Vec<String>,
    out: Vec<FoundSet>,
}

impl<'a> Expansion<'a> {
    fn add(&mut self, set: &'a SetSpec) {
        let (dir, svn) = match &set.source {
            SourceSpec::SubversionDir { directory } => (directory, true),
            SourceSpec::SnapshotsDir { directory } => (directory, false),
            _ => {
                self.out.push((set.clone(), Ok(())));
                return;
            }
        };
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) => {
                let problem = format!("cannot read {}: {e}", dir.display());
                self.out
                    .push((set.clone(), Err(UnreadableDirectory(problem))));
                return;
            }
        };
        entries.sort();
        for path in entries {
            if let Some(source) = found_source(&path, svn) {
                self.add_found(set, dir, path, source);
            }
        }
    }

    /// Adds the set `source` found at `path` in `set`'s directory `dir`, unless a set of its
    /// identity is configured on its own or was found elsewhere already (a conflict).
    fn add_found(&mut self, set: &'a SetSpec, dir: &Path, path: PathBuf, source: SourceSpec) {
        let name = source.set_name();
        let identity = (name.clone(), set.cycle.name.clone());
        if self.explicit.contains(&identity) {
            log::debug!(
                "{name}: configured on its own; not taken from {}",
                dir.display()
            );
            return;
        }
        if let Some((first, by)) = self.found.get(&identity) {
            self.conflicts.push(format!(
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
            return;
        }
        self.found.insert(identity, (path, set));
        let expanded = SetSpec {
            name,
            source,
            ..set.clone()
        };
        self.out.push((expanded, Ok(())));
    }
}

/// The set source an entry of a SubversionDir (`svn`) or SnapshotsDir stands for, if any.
fn found_source(path: &Path, svn: bool) -> Option<SourceSpec> {
    if svn {
        // Real repositories only: they have a format file and a db directory.
        if !(path.join("format").is_file() && path.join("db").is_dir()) {
            log::debug!("{}: not a Subversion repository", path.display());
            return None;
        }
        return Some(SourceSpec::Subversion {
            repository: path.to_path_buf(),
            full_only: true,
        });
    }
    use std::os::unix::fs::PermissionsExt;
    let executable = std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    executable.then(|| SourceSpec::Command {
        name: path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        run: vec![path.display().to_string()],
        fd: true,
    })
}

/// The directive that configured a directory set.
fn directive(set: &SetSpec) -> &'static str {
    match set.source {
        SourceSpec::SubversionDir { .. } => "SubversionDir",
        _ => "SnapshotsDir",
    }
}

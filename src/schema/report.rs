//! What a run saw of its source, as the manifest records it: counts of entries and the
//! warnings about files that did not stop the run.

use serde::{Deserialize, Serialize};

/// A problem with one file that does not stop the run (README, exit status: a warning makes it 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub path: String,
    pub problem: String,
    /// The file could not be read at all: its content is missing from the archive, and the
    /// run's exit status says so.
    #[serde(default)]
    pub unreadable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub special: u64,
    /// Bytes of file content read.
    pub content_bytes: u64,
    /// Entries left out of a DIFF because they did not change.
    #[serde(default)]
    pub unchanged: u64,
}

//! Sources: what a set reads and turns into the plaintext stream of its archive.
//!
//! A source writes its whole stream into the pipeline's first stage and reports what it saw
//! (counts, warnings, the details the manifest records). It never decides whether the run
//! commits: a source error aborts the run, warnings are recorded and raise the exit status.

pub mod program;
pub mod state;
pub mod tree;
pub mod xattr;

use std::io::Write;

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

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub counts: Counts,
    pub warnings: Vec<Warning>,
    /// For incremental sources: the state to keep for the next DIFF, once the run commits.
    pub state: Option<state::State>,
    /// For program sources: the command, its exit status and output, the restore command.
    pub program: Option<program::ProgramRun>,
    /// For bucket snapshots: what the manifest records of the listing.
    pub bucket: Option<crate::bucket::snapshot::SnapshotInfo>,
}

pub trait Source: Send {
    /// File name layers of the plaintext, e.g. `tar`.
    fn format(&self) -> &'static str;
    /// Writes the complete plaintext stream to `out`.
    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report>;
}

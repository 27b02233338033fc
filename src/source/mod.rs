//! Sources: what a set reads and turns into the plaintext stream of its archive.
//!
//! A source writes its whole stream into the pipeline's first stage and reports what it saw
//! (counts, warnings, the details the manifest records). It never decides whether the run
//! commits: a source error aborts the run, warnings are recorded and raise the exit status.

pub mod program;
pub mod quilt;
pub mod state;
pub mod tree;
pub mod xattr;

use std::io::Write;

pub use crate::schema::report::{Counts, Warning};

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub counts: Counts,
    pub warnings: Vec<Warning>,
    /// For incremental sources: the state to keep for the next DIFF, once the run commits.
    pub state: Option<state::State>,
    /// For program sources: the command, its exit status and output, the restore command.
    pub program: Option<crate::schema::program::ProgramRun>,
    /// For bucket snapshots: what the manifest records of the listing.
    pub bucket: Option<crate::schema::snapshot::SnapshotInfo>,
}

pub trait Source: Send {
    /// File name layers of the plaintext, e.g. `tar`.
    fn format(&self) -> &'static str;
    /// Writes the complete plaintext stream to `out`.
    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report>;
}

//! What the manifest records of a program source's run (a dump, snapshot or picker
//! program): its command, exit status, stderr tail, description and restore command.

use serde::{Deserialize, Serialize};

/// What the manifest records of a program run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRun {
    pub command: Vec<String>,
    pub exit_status: Option<i32>,
    #[serde(default)]
    pub stderr_tail: Vec<String>,
    #[serde(default)]
    pub description: Vec<String>,
    /// The command `recover --restore` pipes the data into.
    #[serde(default)]
    pub restore: Option<Vec<String>>,
    /// Subversion: the revisions this dump holds (`from` may exceed `to`: none).
    #[serde(default)]
    pub revisions: Option<(u64, u64)>,
}

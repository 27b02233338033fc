//! A set's `Before` and `After` commands: the set, its run and (for `After`) its outcome in, as
//! environment variables; the commands' verdicts out.
//!
//! `Before` runs once the set is due, before its source is opened (an LVM or ZFS snapshot to
//! back up, a database put into backup mode); if it fails — non-zero exit, a signal, or past
//! `HookTimeout` — the set fails with its error output and its backup is not attempted.
//! `After` runs whenever the set's run was attempted: after a commit, after a failure, and
//! after a failed `Before` too, which may have done half its work (a snapshot created, its
//! mount failed): what `Before` set up must go in every case, so `After` must cope with
//! finding nothing to undo. Its failure does not undo a commit: it is a problem of the set's
//! run (exit status 1), or part of a failed set's error. Neither runs for a set that is not
//! due, under `-t` (shown only), nor for `list`, `recover`, `verify` or `prune`.
//!
//! The commands run without a shell, with stdin closed and their output logged, through
//! `process::run_to_end` (its own process group, stopped at the deadline), on a blocking
//! thread.

use std::process::Command;

use anyhow::anyhow;

use crate::config::SetSpec;
use crate::schema::layout::{Kind, RunId};

/// What `After` is told of the set's run (`S3NAP_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Committed,
    Failed,
    BeforeFailed,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Committed => "committed",
            Status::Failed => "failed",
            Status::BeforeFailed => "before-failed",
        }
    }
}

/// The hooks of one set's run.
pub struct Hooks<'a> {
    set: &'a SetSpec,
    env: Vec<(&'static str, String)>,
}

impl<'a> Hooks<'a> {
    pub fn of(set: &'a SetSpec, host: &str, run: RunId, kind: Kind) -> Self {
        let env = vec![
            ("S3NAP_SET", set.name.clone()),
            ("S3NAP_CYCLE", set.cycle_label().to_string()),
            ("S3NAP_HOST", host.to_string()),
            ("S3NAP_RUN", run.to_string()),
            ("S3NAP_KIND", kind.to_string()),
        ];
        Hooks { set, env }
    }

    /// Runs `Before`, if any: `Err` (with its error output) fails the set.
    pub async fn before(&self) -> anyhow::Result<()> {
        use anyhow::Context;
        self.run("Before", &self.set.hooks.before, None)
            .await
            .context("not backed up")
    }

    /// Runs `After`, if any, with the run's `status`; its failure, as a message.
    pub async fn after(&self, status: Status) -> Option<String> {
        self.run("After", &self.set.hooks.after, Some(status))
            .await
            .err()
            .map(|e| format!("{e:#}"))
    }

    async fn run(
        &self,
        hook: &'static str,
        argv: &[String],
        status: Option<Status>,
    ) -> anyhow::Result<()> {
        let Some((program, args)) = argv.split_first() else {
            return Ok(());
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("S3NAP_HOOK", hook.to_ascii_lowercase());
        if let Some(s) = status {
            cmd.env("S3NAP_STATUS", s.name());
        }
        // Named by the program alone: its arguments may hold a token.
        let name = format!("{hook} {program}");
        let label = format!("{} [{}]", self.set.name, self.set.cycle_label());
        log::info!("{label}: running {name}");
        let timeout = self.set.hooks.timeout;
        let task_name = name.clone();
        let exit = tokio::task::spawn_blocking(move || {
            crate::process::run_to_end(cmd, &task_name, timeout)
        })
        .await
        .map_err(|e| anyhow!("{name}: {e}"))??;
        for line in crate::process::lines(&exit.stdout)
            .iter()
            .chain(&exit.stderr)
        {
            log::info!("{label}: {hook}: {line}");
        }
        exit.check(&name)?;
        Ok(())
    }
}

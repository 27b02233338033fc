//! Program sources: a dump or snapshot program's output in, the same bytes out, with the
//! program's exit status checked and its stderr kept.
//!
//! mysqldump / mariadb-dump, pg_dump / pg_dumpall, svnadmin dump, s3-sysbackup's snapshotters
//! and any `<Command>` run here without a shell, with stdin closed. The data is the program's
//! stdout, or — in descriptor mode, s3-sysbackup's snapshotter protocol — what it writes to the
//! descriptor whose number is its only argument, its stdout then being the run's description. A
//! line `::restore-through:: CMD` in the description (or on stderr) names the restore command.
//! A non-zero exit, a signal, or no data at all fails the run: a failing dump can never pass for
//! a backup.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::schema::program::ProgramRun;
use anyhow::{bail, Context};

use super::{Report, Source};
use crate::process::{ChildReader, Input};

pub struct ProgramSource {
    pub command: Vec<String>,
    pub format: &'static str,
    pub descriptor_mode: bool,
    /// Recorded as the restore command unless the program names one.
    pub restore: Option<Vec<String>>,
}

/// The first of `names` found on PATH (`mariadb-dump` before `mysqldump`).
pub fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn restore_through(lines: &[String]) -> Option<Vec<String>> {
    lines.iter().find_map(|l| {
        let cmd = l.trim().strip_prefix("::restore-through::")?;
        crate::config::syntax::split_words(cmd.trim())
            .ok()
            .filter(|w| !w.is_empty())
    })
}

impl ProgramSource {
    /// Runs the program, copying its data into `out`; fails unless it exits 0 with data.
    pub fn run(&self, out: &mut dyn Write) -> anyhow::Result<(u64, ProgramRun)> {
        let (program, args) = self.command.split_first().context("empty command")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        // Named by the program alone: its arguments may hold a database password.
        let mut data = if self.descriptor_mode {
            ChildReader::spawn_descriptor(cmd, program, Input::Closed)?
        } else {
            ChildReader::spawn(cmd, program, Input::Closed)?
        };
        let copied = io::copy(&mut data, out);
        let Some(exit) = data.exit() else {
            // Stopped before the program's end (`out` failed): dropping `data` kills it.
            let e = copied.expect_err("a copy ends at the end of the data");
            return Err(e).with_context(|| format!("reading the output of {program}"));
        };
        let stderr_tail = exit.stderr.clone();
        for line in &stderr_tail {
            log::info!("{program}: {line}");
        }
        // A failing exit status is the error at the end of the data.
        let bytes = copied?;
        if bytes == 0 {
            bail!("{program} produced no data; {}", exit.stderr_text());
        }
        let description = if self.descriptor_mode {
            crate::process::lines(&exit.stdout)
        } else {
            stderr_tail.clone()
        };
        let restore = restore_through(&description).or_else(|| self.restore.clone());
        Ok((
            bytes,
            ProgramRun {
                command: self.command.clone(),
                exit_status: exit.status.code(),
                stderr_tail,
                description,
                restore,
                revisions: None,
            },
        ))
    }
}

impl Source for ProgramSource {
    fn format(&self) -> &'static str {
        self.format
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let (_, program) = self.run(out)?;
        Ok(Report {
            program: Some(program),
            ..Report::default()
        })
    }
}

/// `svnadmin dump` of the revisions after `last` (all of them without `last`), in order, so a
/// chain replays with `svnadmin load`. With no new revision the dump is a valid, empty one.
pub struct SubversionSource {
    pub repository: PathBuf,
    pub last: Option<u64>,
}

fn output(program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    let mut name = program.to_string();
    for arg in args {
        name = format!("{name} {}", arg.to_string_lossy());
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = crate::process::output(cmd, name, Input::Closed)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// The youngest revision of a repository.
pub fn youngest(repository: &Path) -> anyhow::Result<u64> {
    let text = output("svnlook", &["youngest".as_ref(), repository.as_os_str()])?;
    text.parse()
        .with_context(|| format!("svnlook youngest said '{text}'"))
}

impl Source for SubversionSource {
    fn format(&self) -> &'static str {
        "svndump"
    }

    fn write_to(&mut self, out: &mut dyn Write) -> anyhow::Result<Report> {
        let repo = &self.repository;
        let young = youngest(repo)?;
        let from = self.last.map_or(0, |l| l + 1);
        let run = if from > young {
            // Nothing new: a dump with a header and no revision loads as a no-op.
            let uuid = output("svnlook", &["uuid".as_ref(), repo.as_os_str()])?;
            out.write_all(format!("SVN-fs-dump-format-version: 2\n\nUUID: {uuid}\n\n").as_bytes())?;
            ProgramRun {
                command: vec!["svnlook".into(), "uuid".into(), repo.display().to_string()],
                exit_status: Some(0),
                ..ProgramRun::default()
            }
        } else {
            let mut command = vec!["svnadmin".to_string(), "dump".into(), "-q".into()];
            if from > 0 {
                command.push("--incremental".into());
            }
            command.push(format!("-r{from}:{young}"));
            command.push(repo.display().to_string());
            ProgramSource {
                command,
                format: "svndump",
                descriptor_mode: false,
                restore: None,
            }
            .run(out)?
            .1
        };
        Ok(Report {
            program: Some(ProgramRun {
                revisions: Some((from, young)),
                ..run
            }),
            ..Report::default()
        })
    }
}

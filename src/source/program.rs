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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use crate::schema::program::ProgramRun;
use anyhow::{bail, Context};

use super::{Report, Source};

/// Lines of stderr kept in the manifest and the error message.
const STDERR_TAIL: usize = 20;

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

fn collect_lines<R: Read + Send + 'static>(
    reader: R,
    keep_all: bool,
) -> JoinHandle<VecDeque<String>> {
    std::thread::spawn(move || {
        let mut lines = VecDeque::new();
        for line in BufReader::new(reader).split(b'\n').map_while(Result::ok) {
            lines.push_back(String::from_utf8_lossy(&line).into_owned());
            if !keep_all && lines.len() > STDERR_TAIL {
                lines.pop_front();
            }
        }
        lines
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
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut data_pipe: Option<(OwnedFd, OwnedFd)> = None;
        if self.descriptor_mode {
            let (read, write) = nix::unistd::pipe().context("creating the data pipe")?;
            nix::fcntl::fcntl(
                read.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )?;
            cmd.arg(write.as_raw_fd().to_string());
            data_pipe = Some((read, write));
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {program}"))?;
        let stderr = collect_lines(child.stderr.take().expect("piped"), false);
        let stdout = child.stdout.take().expect("piped");
        let (mut data, description): (Box<dyn Read>, Option<JoinHandle<VecDeque<String>>>) =
            match data_pipe {
                Some((read, write)) => {
                    // Only the child may hold the write end now, or the data never ends.
                    drop(write);
                    (
                        Box::new(File::from(read)),
                        Some(collect_lines(stdout, true)),
                    )
                }
                None => (Box::new(stdout), None),
            };
        let copied = io::copy(&mut data, out);
        drop(data);
        let status = child
            .wait()
            .with_context(|| format!("waiting for {program}"))?;
        let stderr_tail: Vec<String> = stderr.join().unwrap_or_default().into();
        for line in &stderr_tail {
            log::info!("{program}: {line}");
        }
        let description: Vec<String> = description
            .map(|h| h.join().unwrap_or_default().into())
            .unwrap_or_else(|| stderr_tail.clone());
        let shown = || {
            if stderr_tail.is_empty() {
                "no error output".to_string()
            } else {
                format!("its last error output: {}", stderr_tail.join(" | "))
            }
        };
        if !status.success() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "failed".to_string(),
            };
            bail!("{program} {how}; {}", shown());
        }
        let bytes = copied.with_context(|| format!("reading the output of {program}"))?;
        if bytes == 0 {
            bail!("{program} produced no data; {}", shown());
        }
        let restore = restore_through(&description).or_else(|| self.restore.clone());
        Ok((
            bytes,
            ProgramRun {
                command: self.command.clone(),
                exit_status: status.code(),
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
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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

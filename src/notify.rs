//! Notification: the run's summary in, on the stdin of the configured `NotifyCommand` (the
//! "NotifyEmail" s3napback documented but never built — s3nap sends no mail itself, a program
//! like `mail` or a webhook client does). No shell is involved; the command's own output and
//! exit status are logged, and its failure is reported but does not change the run's outcome.

use std::io::{self, Read};
use std::process::Command;

use crate::process::{ChildReader, Input};

/// Runs `argv` with `summary` on stdin and S3NAP_EXIT_STATUS in its environment.
pub fn notify(argv: &[String], summary: &str, exit_status: u8) -> anyhow::Result<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("NotifyCommand is empty"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("S3NAP_EXIT_STATUS", exit_status.to_string());
    // Named by the program alone: its arguments may hold a token.
    let name = format!("NotifyCommand {program}");
    let input = Input::Feed(Box::new(io::Cursor::new(summary.as_bytes().to_vec())));
    let mut child = ChildReader::spawn(cmd, &name, input)?;
    let mut stdout = Vec::new();
    let read = child.read_to_end(&mut stdout);
    let exit = child.exit();
    let stderr = exit.map(|e| e.stderr.as_slice()).unwrap_or_default();
    for line in crate::process::lines(&stdout).iter().chain(stderr) {
        log::debug!("NotifyCommand: {line}");
    }
    match (read, exit) {
        (Ok(_), _) => Ok(()),
        // Its last line only, as the message of a command that may echo its arguments.
        (Err(_), Some(exit)) if !exit.status.success() => Err(anyhow::anyhow!(
            "{name} failed ({}): {}",
            exit.status,
            stderr.last().map_or("", |l| l.trim())
        )),
        (Err(e), _) => Err(anyhow::anyhow!("{name}: {e}")),
    }
}

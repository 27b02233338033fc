//! Notification: the run's summary in, on the stdin of the configured `NotifyCommand` (the
//! "NotifyEmail" s3napback documented but never built — s3nap sends no mail itself, a program
//! like `mail` or a webhook client does). No shell is involved; the command's own output and
//! exit status are logged, and its failure is reported but does not change the run's outcome.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `argv` with `summary` on stdin and S3NAP_EXIT_STATUS in its environment.
pub fn notify(argv: &[String], summary: &str, exit_status: u8) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("NotifyCommand is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .env("S3NAP_EXIT_STATUS", exit_status.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("NotifyCommand {program}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let text = summary.to_string();
    let feeder = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("NotifyCommand {program}: {e}"))?;
    let _ = feeder.join();
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        log::debug!("NotifyCommand: {line}");
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "NotifyCommand {program} failed ({}): {}",
            out.status,
            stderr.lines().last().unwrap_or("").trim()
        ));
    }
    Ok(())
}

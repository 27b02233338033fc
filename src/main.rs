//! `s3nap`: parse the command line, run the command, turn its outcome into the exit status.

use std::process::ExitCode;

use clap::Parser;

use s3nap::cli::Cli;
use s3nap::commands;
use s3nap::error::ExitStatus;

fn main() -> ExitCode {
    keep_large_buffers_mapped();
    // clap exits 2 on a usage error, which the exit-status contract reserves for a failed set.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` arrive as "errors" that go to stdout: those succeeded.
            let status = if e.use_stderr() {
                ExitStatus::Configuration
            } else {
                ExitStatus::Ok
            };
            let _ = e.print();
            return ExitCode::from(status.code());
        }
    };
    let debug = cli.debug;
    commands::install_panic_hook(debug);
    let logging = s3nap::logging::init(debug);
    match commands::dispatch(cli, logging) {
        Ok(status) => ExitCode::from(status.code()),
        Err(e) => {
            if debug {
                eprintln!("s3nap: error: {e:?}");
            } else {
                // One line: the cause chain joined.
                eprintln!("s3nap: error: {e}");
            }
            ExitCode::from(e.exit_status().code())
        }
    }
}

/// Buffers of 8 MiB and more — parts (16 MiB at the default `ChunkSize`) and recovery's
/// 8 MiB ranges, filled on one thread and freed on another — are mapped and unmapped, not
/// kept. glibc raises its mmap threshold whenever a mapped block is freed,
/// after which such buffers come from its arenas and their memory stays with the process: a
/// backup's peak RSS was a third higher for it. A fixed threshold also turns that raising off.
fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
    }
}

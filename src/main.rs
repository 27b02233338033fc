//! `s3nap`: parse the command line, run the command, turn its outcome into the exit status.

use std::process::ExitCode;

use clap::Parser;

use s3nap::cli::Cli;
use s3nap::commands::{self, Failure, EXIT_CONFIG, EXIT_OK};

fn main() -> ExitCode {
    // clap exits 2 on a usage error, which the exit-status contract reserves for a failed set.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` arrive as "errors" that go to stdout: those succeeded.
            let code = if e.use_stderr() { EXIT_CONFIG } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let debug = cli.debug;
    commands::install_panic_hook(debug);
    let logging = s3nap::logging::init(debug);
    match commands::dispatch(cli, logging) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, e)) => {
            if debug {
                eprintln!("s3nap: error: {e:?}");
            } else {
                // One line: the cause chain joined.
                eprintln!("s3nap: error: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}

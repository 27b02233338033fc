//! `s3nap`: parse the command line, run the command, turn its outcome into the exit status.

use std::process::ExitCode;

use clap::Parser;

use s3nap::cli::Cli;
use s3nap::commands::{self, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
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

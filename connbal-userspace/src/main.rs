//! The `connbal` binary: parse the command line, run the command, and turn
//! its error into one line on stderr and an exit status.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser as _;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Replay(args) => connbal::replay::run(args.options()),
        Command::Trace(args) => connbal::trace::run(args.options()).map_err(Into::into),
        Command::Completions { shell } => {
            cli::completions(shell).map_err(|e| connbal::output::OutputError::Stdout(e).into())
        }
        Command::Man { page } => {
            cli::man(page).map_err(|e| connbal::output::OutputError::Stdout(e).into())
        }
        Command::LibcProber {
            entry_id,
            return_id,
        } => connbal::trace::run_libc_prober(entry_id, return_id).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("connbal: {error}");
            ExitCode::from(connbal::EXIT_FAILURE)
        }
    }
}

//! `connbal completions` and `connbal man`: generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use super::Cli;
use clap::CommandFactory as _;
use std::io;

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "connbal", &mut io::stdout());
}

pub fn man() -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut io::stdout())
}

//! `connbal completions` and `connbal man`: generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use super::Cli;
use clap::CommandFactory as _;
use std::io::{self, Write};

pub fn completions(shell: clap_complete::Shell) -> io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "connbal", &mut script);
    to_stdout(&script)
}

pub fn man() -> io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    to_stdout(&page)
}

/// Written whole, and a reader that stops early (`| head -1`) ends it
/// quietly: the generators' own writers panic on a closed stdout.
fn to_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

//! `connbal completions` and `connbal man`: generated from the same clap
//! definitions as the parser, so they cannot drift from it.

use super::{Cli, ManPage};
use clap::CommandFactory as _;
use std::io::{self, Write};

pub fn completions(shell: clap_complete::Shell) -> io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "connbal", &mut script);
    to_stdout(&script)
}

/// connbal(1), or with `page` the subcommand's own connbal-COMMAND(1),
/// which the top-level page points to: every option, the examples and the
/// exit status.
pub fn man(page: Option<ManPage>) -> io::Result<()> {
    let command = Cli::command();
    let command = match page {
        None => command,
        Some(page) => {
            let (sub, title) = match page {
                ManPage::Trace => ("trace", "connbal-trace"),
                ManPage::Replay => ("replay", "connbal-replay"),
                ManPage::Completions => ("completions", "connbal-completions"),
                ManPage::Man => ("man", "connbal-man"),
            };
            command
                .find_subcommand(sub)
                .cloned()
                .expect("every page is a subcommand")
                .name(title)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(command).render(&mut text)?;
    to_stdout(&text)
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

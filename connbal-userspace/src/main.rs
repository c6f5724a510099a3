use anyhow::Context as _;
use clap::Parser as _;
use connbal::aggregator::{Aggregator, Config, Counters, Report};
use connbal::capture::CaptureReader;
use connbal::cli::{Cli, Command, ReplayArgs};
use connbal::decode::InputStats;
use connbal::replay::{self, ReplayOutcome};
use connbal::report::{self, Format, JsonReport};
use connbal::signals;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay_command(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("connbal: {error:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn replay_command(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let reads_stdin = args.input.as_deref().is_none_or(|p| p.as_os_str() == "-");
    if reads_stdin && io::stdin().is_terminal() {
        anyhow::bail!("no capture given and standard input is a terminal; pass FILE or pipe a capture in (see --help)");
    }
    let stop = signals::install_stop_flag().context("setting up signal handling")?;
    let (stream, name) = replay::open_input(args.input.as_deref(), stop.clone())?;
    let mut reader = CaptureReader::open(stream, name)?;
    let mut aggregator = Aggregator::new(Config {
        all_tcp: args.all_tcp,
        filter: args.filter.clone(),
    });
    let outcome = replay::run(&mut reader, &mut aggregator, args.all_tcp, &stop);
    let report = aggregator.report();
    print_report(&args, &report, &outcome)?;
    print_warnings(&report.counters);
    if args.verbose {
        let mut err = io::stderr().lock();
        report::write_counters(&mut err, &outcome.input, &report.counters)?;
        if outcome.interrupted {
            writeln!(err, "stopped by signal after {} bytes", reader.offset())?;
        }
    }
    match outcome.error {
        Some(error) => {
            eprintln!("connbal: {error}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn print_report(args: &ReplayArgs, report: &Report, outcome: &ReplayOutcome) -> anyhow::Result<()> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = match args.format {
        Format::Tsv => report::write_tsv(&mut out, &report.rows),
        Format::Json => {
            let error = outcome.error.as_ref().map(ToString::to_string);
            let json = JsonReport::<InputStats> {
                rows: &report.rows,
                input: &outcome.input,
                counters: &report.counters,
                error: error.as_deref(),
                interrupted: outcome.interrupted,
            };
            report::write_json(&mut out, &json)
        }
    };
    match written.and_then(|()| out.flush()) {
        // A reader that went away (`| head`) has all it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the report to stdout"),
    }
}

/// Spec 2: ignored messages come "with a warning"; one line per kind, with
/// a count, instead of one per message.
fn print_warnings(counters: &Counters) {
    let warnings = [
        (
            counters.ignored_multiple_questions,
            "DNS messages with more than one question were ignored",
        ),
        (
            counters.ignored_too_many_answers,
            "DNS responses with more than 1000 answers were ignored",
        ),
        (
            counters.pending_dropped_table_full,
            "DNS queries were not tracked: too many pending at once",
        ),
    ];
    for (count, what) in warnings {
        if count > 0 {
            eprintln!("connbal: warning: {count} {what}");
        }
    }
}

#![forbid(unsafe_code)]
use anyhow::Context as _;
use clap::Parser as _;
use connbal::aggregator::{Aggregator, Config};
use connbal::capture::CaptureReader;
use connbal::cli::{Cli, Command, ReplayArgs, TraceArgs};
use connbal::replay;
use connbal::trace::{self, TraceOptions};
use connbal::{output, report, signals};
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay_command(args),
        Command::Trace(args) => trace_command(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "connbal", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut io::stdout())
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("connbal: {error:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn trace_command(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let (format, style) = output::report_style(args.report.format, args.report.events);
    trace::run(TraceOptions {
        interfaces: args.interfaces,
        duration: args.duration,
        interval: args.interval,
        config: Config {
            all_tcp: args.report.all_tcp,
            filter: args.report.filter,
            events: args.report.events,
        },
        format,
        style,
        ring_size: args.ring_size,
        verbose: args.report.verbose,
        attach: args.attach,
        kernel_debug: args.kernel_debug,
        user: args.user,
        noop_program: args.noop_program,
        metrics: args.metrics,
        metrics_max_series: args.metrics_max_series,
    })
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
        all_tcp: args.report.all_tcp,
        filter: args.report.filter.clone(),
        events: args.report.events,
    });
    let mut events = args.report.events.then(output::EventSink::default);
    let progress = replay::regular_file_size(args.input.as_deref())
        .filter(|_| io::stderr().is_terminal())
        .map(connbal::progress::Progress::for_file);
    let outcome = replay::run(
        &mut reader,
        &mut aggregator,
        args.report.all_tcp,
        &stop,
        progress.as_ref(),
        events.as_mut(),
    );
    let report = aggregator.report();
    let (format, style) = output::report_style(args.report.format, args.report.events);
    output::print_report(&output::Printed {
        format,
        report: &report,
        input: &outcome.input,
        error: outcome.error.as_ref().map(ToString::to_string),
        interrupted: outcome.interrupted,
        compact: false,
        style,
        to_stderr: args.report.events,
    })?;
    output::print_warnings(&report.counters);
    if args.report.verbose {
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

//! `connbal replay`: a capture file or pipe through the pipeline, then the
//! report.

use crate::aggregator::Config;
use crate::capture::stream::ByteStream;
use crate::capture::{CaptureError, CaptureReader, Problem};
use crate::decode::{FrameDecoder, InputStats};
use crate::error::Error;
use crate::output::{self, Coverage, Finish, Format, Printed, Style};
use crate::pipeline::Pipeline;
use crate::progress::{Progress, UPDATE_EVERY_PACKETS};
use crate::signals;
use std::fs::File;
use std::io::IsTerminal as _;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const STDIN_NAME: &str = "<stdin>";
/// After Ctrl-C, how long a pipe's writer has to hand over its tail
/// (`tcpdump -U` flushes as it exits on the same signal).
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// What `connbal replay` was asked to do.
#[derive(Debug, Default)]
pub struct ReplayOptions {
    /// A capture file; `None` or `-` reads standard input.
    pub input: Option<PathBuf>,
    pub config: Config,
    /// `None`: the table on a terminal, TSV otherwise.
    pub format: Option<Format>,
    pub verbose: bool,
}

pub fn run(options: ReplayOptions) -> Result<(), Error> {
    let path = options.input.as_deref().filter(|p| p.as_os_str() != "-");
    if path.is_none() && std::io::stdin().is_terminal() {
        return Err(Error::StdinIsTerminal);
    }
    let flags = signals::install_stop_flags()?;
    let (stream, name) = open_input(path, &flags)?;
    let mut reader = CaptureReader::open(stream, name)?;
    let style = Style::decide(options.format, options.config.events);
    let mut decoder = FrameDecoder::new(options.config.all_tcp);
    let mut pipeline = Pipeline::new(options.config);
    let progress = regular_file_size(path)
        .filter(|_| std::io::stderr().is_terminal())
        .map(Progress::for_file);
    let mut outcome = read_all(&mut reader, &mut decoder, &mut pipeline, progress.as_ref());
    outcome.input = InputStats {
        capture_blocks_skipped: reader.blocks_skipped(),
        ..decoder.stats()
    };
    let mut source_warnings = decoder.link_warnings();
    let input = &outcome.input;
    if outcome.error.is_none()
        && input.packets > 0
        && input.unsupported_link_packets == input.packets
    {
        // Idle interfaces of other types are fine; a file of nothing else
        // is not what the user meant to read: one error line, not warnings.
        outcome.error = Some(CaptureError {
            path: reader.path().to_string(),
            offset: 0,
            problem: Problem::NothingReadable(std::mem::take(&mut source_warnings).join("; ")),
        });
    }
    let report = pipeline.report();
    output::finish(
        &style,
        &Finish {
            printed: Printed {
                report: &report,
                input: &outcome.input,
                error: outcome.error.as_ref().map(ToString::to_string),
                interrupted: outcome.interrupted,
                periodic: false,
                coverage: Coverage {
                    packets: outcome.input.packets,
                    span: decoder.span(),
                },
            },
            source_warnings,
            verbose: options.verbose,
        },
    )?;
    if options.verbose && outcome.interrupted {
        eprintln!("stopped by signal after {} bytes", reader.offset());
    }
    match outcome.error {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Pipes hand over at most their buffer (64 KiB by default) per read; a
/// larger one means fewer reads and wakeups for `tcpdump -w - | connbal`.
/// 1 MiB is the default /proc/sys/fs/pipe-max-size; failing is harmless.
fn enlarge_pipe(stdin: &std::io::Stdin) {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::os::fd::AsFd;
    let _ = fcntl(stdin.as_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
}

/// Opens a file, or stdin for `None`. Returns the name errors use.
fn open_input(
    path: Option<&Path>,
    flags: &signals::StopFlags,
) -> Result<(ByteStream, String), CaptureError> {
    match path {
        None => {
            let stdin = std::io::stdin();
            enlarge_pipe(&stdin);
            // Read unbuffered from fd 0, so that waiting on the fd (after
            // Ctrl-C) never misses bytes held in a buffer.
            let open_error = |e: std::io::Error| CaptureError {
                path: STDIN_NAME.to_string(),
                offset: 0,
                problem: Problem::Open(e),
            };
            let fd = stdin.as_fd().try_clone_to_owned().map_err(open_error)?;
            let watched = fd.try_clone().map_err(open_error)?;
            let stream = ByteStream::new(Box::new(File::from(fd)), flags.stop.clone())
                .draining_after_stop(watched, PIPE_DRAIN, flags.hurry.clone());
            Ok((stream, STDIN_NAME.to_string()))
        }
        Some(p) => {
            let name = p.display().to_string();
            let file = File::open(p).map_err(|e| CaptureError {
                path: name.clone(),
                offset: 0,
                problem: Problem::Open(e),
            })?;
            let is_file = file.metadata().is_ok_and(|m| m.is_file());
            let stream = ByteStream::new(Box::new(file), flags.stop.clone());
            // A FIFO or a device named on the command line reads as a pipe.
            let stream = if is_file {
                stream.reading_ahead()
            } else {
                stream
            };
            Ok((stream, name))
        }
    }
}

#[derive(Debug, Default)]
struct ReplayOutcome {
    /// Filled in from the decoder once the reading is done.
    input: InputStats,
    /// Container damage that ended the read; the report covers what came
    /// before it.
    error: Option<CaptureError>,
    interrupted: bool,
}

/// The size of `path` when it is a regular file (something a progress bar
/// can measure against), not a pipe, socket or stdin.
fn regular_file_size(path: Option<&Path>) -> Option<u64> {
    let meta = std::fs::metadata(path?).ok()?;
    meta.is_file().then_some(meta.len())
}

fn read_all(
    reader: &mut CaptureReader,
    decoder: &mut FrameDecoder,
    pipeline: &mut Pipeline,
    progress: Option<&Progress>,
) -> ReplayOutcome {
    let mut outcome = ReplayOutcome::default();
    let mut next_update = UPDATE_EVERY_PACKETS;
    loop {
        if let Some(progress) = progress {
            if decoder.packets() >= next_update {
                next_update += UPDATE_EVERY_PACKETS;
                progress.update(reader.offset(), decoder.packets());
            }
        }
        if reader.stopped() {
            outcome.interrupted = true;
            break;
        }
        match reader.next_frame() {
            Ok(Some(frame)) => decoder.frame(&frame, |event| pipeline.event(event)),
            Ok(None) => break,
            Err(e) if e.is_interrupted() => {
                outcome.interrupted = true;
                break;
            }
            Err(e) => {
                outcome.error = Some(e);
                break;
            }
        }
    }
    decoder.finish();
    if let Some(progress) = progress {
        progress.finish(reader.offset(), decoder.packets());
    }
    pipeline.flush_events();
    outcome
}

//! `connbal replay`: a capture file or pipe through the decoder into the
//! aggregator.

use crate::aggregator::Aggregator;
use crate::capture::stream::ByteStream;
use crate::capture::{CaptureError, CaptureReader, Problem};
use crate::decode::{decode, InputStats};
use crate::output::EventSink;
use crate::progress::{Progress, UPDATE_EVERY_PACKETS};
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub const STDIN_NAME: &str = "<stdin>";

/// Pipes hand over at most their buffer (64 KiB by default) per read; a
/// larger one means fewer reads and wakeups for `tcpdump -w - | connbal`.
/// 1 MiB is the default /proc/sys/fs/pipe-max-size; failing is harmless.
fn enlarge_pipe(stdin: &std::io::Stdin) {
    use nix::fcntl::{fcntl, FcntlArg};
    use std::os::fd::AsFd;
    let _ = fcntl(stdin.as_fd(), FcntlArg::F_SETPIPE_SZ(1 << 20));
}

fn stdin_stream(stop: Arc<AtomicBool>) -> (ByteStream, String) {
    let stdin = std::io::stdin();
    enlarge_pipe(&stdin);
    (
        ByteStream::new(Box::new(stdin), stop),
        STDIN_NAME.to_string(),
    )
}

/// Opens a file, or stdin for `None` or `-`. Returns the name errors use.
pub fn open_input(
    path: Option<&Path>,
    stop: Arc<AtomicBool>,
) -> Result<(ByteStream, String), CaptureError> {
    match path {
        None => Ok(stdin_stream(stop)),
        Some(p) if p.as_os_str() == "-" => Ok(stdin_stream(stop)),
        Some(p) => {
            let name = p.display().to_string();
            let file = File::open(p).map_err(|e| CaptureError {
                path: name.clone(),
                offset: 0,
                problem: Problem::Open(e),
            })?;
            Ok((ByteStream::new(Box::new(file), stop), name))
        }
    }
}

#[derive(Debug, Default)]
pub struct ReplayOutcome {
    pub input: InputStats,
    /// Container damage that ended the read; the report covers what came
    /// before it.
    pub error: Option<CaptureError>,
    pub interrupted: bool,
}

/// The size of `path` when it is a regular file (something a progress bar
/// can measure against), not a pipe, socket or stdin.
pub fn regular_file_size(path: Option<&Path>) -> Option<u64> {
    let path = path.filter(|p| p.as_os_str() != "-")?;
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then_some(meta.len())
}

pub fn run(
    reader: &mut CaptureReader,
    aggregator: &mut Aggregator,
    all_tcp: bool,
    stop: &AtomicBool,
    progress: Option<&Progress>,
    mut events: Option<&mut EventSink>,
) -> ReplayOutcome {
    let mut outcome = ReplayOutcome::default();
    let mut next_update = UPDATE_EVERY_PACKETS;
    loop {
        if let Some(progress) = progress {
            if outcome.input.packets >= next_update {
                next_update += UPDATE_EVERY_PACKETS;
                progress.update(reader.offset(), outcome.input.packets);
            }
        }
        if stop.load(Ordering::Relaxed) {
            outcome.interrupted = true;
            break;
        }
        match reader.next_frame() {
            Ok(Some(frame)) => {
                outcome.input.packets += 1;
                outcome.input.bytes += frame.data.len() as u64;
                if let Some(event) = decode(&frame, all_tcp, &mut outcome.input) {
                    aggregator.process(&event);
                    if let Some(sink) = events.as_deref_mut() {
                        sink.write(aggregator.take_observations());
                    }
                }
            }
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
    if let Some(progress) = progress {
        progress.finish(reader.offset(), outcome.input.packets);
    }
    if let Some(sink) = events {
        sink.flush();
    }
    outcome
}

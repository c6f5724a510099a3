//! The library's error: what `main` prints, as one line, before exiting
//! with [`EXIT_FAILURE`]. Every command prints its report before returning
//! an error, so data already read is never lost.

use crate::capture::CaptureError;
use crate::output::OutputError;
use crate::signals::SignalError;
use crate::trace::TraceError;

/// Bad usage, an unreadable or damaged input, a vanished interface, or a
/// program the kernel would not load.
pub const EXIT_FAILURE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no capture given and standard input is a terminal; pass FILE or pipe a capture in (see --help)")]
    StdinIsTerminal,
    #[error("setting up signal handling: {0}")]
    Signals(#[from] SignalError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

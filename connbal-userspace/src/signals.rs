//! SIGINT/SIGTERM: stop reading and print the report for what was read.
//!
//! The first signal sets a flag; a second one exits at once (exit 130), for a
//! user whose input never ends. The flag alone is not enough when the
//! process sits in a blocking `read` on an idle pipe: signal-hook installs
//! handlers with SA_RESTART, so the kernel would resume the read and the
//! report would wait for the writer. Clearing SA_RESTART makes the read
//! return EINTR, which the byte stream turns into a clean stop.
#![expect(
    unsafe_code,
    reason = "sigaction has no safe wrapper in libc or signal-hook"
)]

use signal_hook::consts::{SIGINT, SIGTERM};
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("installing a handler for signal {signal}: {source}")]
    Register { signal: i32, source: io::Error },
    #[error("sigaction({signal}) failed: {source}")]
    Sigaction { signal: i32, source: io::Error },
}

/// Returns the flag that turns true on the first SIGINT or SIGTERM.
pub fn install_stop_flag() -> Result<Arc<AtomicBool>, SignalError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the conditional shutdown sees the flag still clear
        // on the first signal and exits only on the second.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .map_err(|source| SignalError::Register { signal, source })?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|source| SignalError::Register { signal, source })?;
        interrupt_blocking_calls(signal)?;
    }
    Ok(stop)
}

fn interrupt_blocking_calls(signal: i32) -> Result<(), SignalError> {
    // SAFETY: `sigaction` is plain data; all-zero is a valid value to be
    // overwritten by the query below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: querying the current action into a valid, exclusively borrowed
    // struct; a null new action means "do not change".
    if unsafe { libc::sigaction(signal, std::ptr::null(), &raw mut action) } != 0 {
        return Err(SignalError::Sigaction {
            signal,
            source: io::Error::last_os_error(),
        });
    }
    action.sa_flags &= !libc::SA_RESTART;
    // SAFETY: re-installing the handler signal-hook just registered, with the
    // same handler, mask and flags except SA_RESTART.
    if unsafe { libc::sigaction(signal, &raw const action, std::ptr::null_mut()) } != 0 {
        return Err(SignalError::Sigaction {
            signal,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

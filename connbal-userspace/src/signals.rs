//! SIGINT/SIGTERM: stop reading and print the report for what was read.
//!
//! The first signal sets `stop`; a second sets `hurry` (stop waiting for a
//! pipe's writer to hand over its tail, and print); a third exits at once
//! (exit 130), for a user whose process is stuck elsewhere. The flag alone is not enough when the
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("installing a handler for signal {signal}: {source}")]
    Register { signal: i32, source: io::Error },
    #[error("sigaction({signal}) failed: {source}")]
    Sigaction { signal: i32, source: io::Error },
}

/// What the signals said so far.
pub struct StopFlags {
    /// The first SIGINT or SIGTERM: stop reading.
    pub stop: Arc<AtomicBool>,
    /// The second: stop waiting, print now.
    pub hurry: Arc<AtomicBool>,
}

/// Installs the handlers; their flags turn true on the first and second
/// SIGINT or SIGTERM.
pub fn install_stop_flags() -> Result<StopFlags, SignalError> {
    let stop = Arc::new(AtomicBool::new(false));
    let hurry = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        let register = |result: io::Result<_>| {
            result
                .map(drop)
                .map_err(|source| SignalError::Register { signal, source })
        };
        // Order matters: signal-hook runs a signal's actions in the order
        // they were registered, so each sees the flags the signals before
        // it left. Third signal: exit.
        register(signal_hook::flag::register_conditional_shutdown(
            signal,
            130,
            Arc::clone(&hurry),
        ))?;
        // Second: hurry, when stop was already set.
        let (stopped, hurried) = (Arc::clone(&stop), Arc::clone(&hurry));
        // SAFETY: the action only loads and stores atomics, which is
        // async-signal-safe; it allocates nothing and takes no lock.
        register(unsafe {
            signal_hook::low_level::register(signal, move || {
                if stopped.load(Ordering::SeqCst) {
                    hurried.store(true, Ordering::SeqCst);
                }
            })
        })?;
        // First: stop.
        register(signal_hook::flag::register(signal, Arc::clone(&stop)))?;
        interrupt_blocking_calls(signal)?;
    }
    Ok(StopFlags { stop, hurry })
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

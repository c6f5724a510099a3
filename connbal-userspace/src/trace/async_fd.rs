//! Registering the kernel log's ring buffer with tokio (the records' ring
//! has a reader thread of its own, `ring_reader`). Unsafe: tokio's
//! `AsyncFd::register_with_interest` cannot check that the fd stays valid,
//! so the function here states why it does.
#![expect(
    unsafe_code,
    reason = "AsyncFd registration is an unsafe API since tokio 1.54 (I/O safety)"
)]

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub fn logger<L: log::Log>(
    logger: aya_log::EbpfLogger<L>,
) -> std::io::Result<AsyncFd<aya_log::EbpfLogger<L>>> {
    // SAFETY: the logger owns its ring buffer's map fd (MapData holds an
    // OwnedFd), which stays open and unchanged until the AsyncFd, which
    // owns the logger, is dropped; as_raw_fd always returns that fd.
    unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(std::io::Error::from)
}

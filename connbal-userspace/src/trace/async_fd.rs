//! Registering the kernel's ring buffers with tokio. The only unsafe code in
//! tracing: tokio's `AsyncFd::register_with_interest` cannot check that the
//! fd stays valid, so each function here states why it does.
#![expect(
    unsafe_code,
    reason = "AsyncFd registration is an unsafe API since tokio 1.54 (I/O safety)"
)]

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub fn ring(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd (MapData holds an OwnedFd),
    // which stays open and unchanged until the AsyncFd, which owns the ring,
    // is dropped; as_raw_fd always returns that fd.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(std::io::Error::from)
}

pub fn logger<L: log::Log>(
    logger: aya_log::EbpfLogger<L>,
) -> std::io::Result<AsyncFd<aya_log::EbpfLogger<L>>> {
    // SAFETY: as for `ring`: the logger owns its ring buffer's map fd.
    unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(std::io::Error::from)
}

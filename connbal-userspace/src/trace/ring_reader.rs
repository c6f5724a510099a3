//! The kernel's ring buffer, drained by a thread of its own into batches
//! the trace's loop aggregates. Building a report for a scrape or an
//! `--interval` takes the loop away for as long as the report takes (whole
//! seconds on a busy host); were the loop also the ring's reader, the ring
//! would fill meanwhile and the kernel would drop records. Here the reader
//! only copies records out, so the ring empties at the rate it fills while
//! the loop is busy, and what the loop has not yet taken waits in memory,
//! up to `QUEUED_MAX`; past that the reader stops and the kernel counts
//! what it then drops, as it would have.

use aya::maps::{MapData, RingBuf};
use std::os::fd::AsFd as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// Record bytes waiting for the loop, at most (about 1.5 s of the highest
/// record rate measured, 223k records/s).
const QUEUED_MAX: usize = 64 << 20;
/// A batch is handed over at this size, or when the ring is empty.
const BATCH_BYTES: usize = 256 << 10;
/// The kernel wakes a reader only when a quarter of the ring is full; below
/// that, records wait at most this long.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Records copied out of the ring, each with its length before it.
pub(super) struct Batch {
    bytes: Vec<u8>,
}

impl Batch {
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_ne_bytes(*len) as usize;
            let (record, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(record)
        })
    }

    fn push(&mut self, record: &[u8]) {
        self.bytes
            .extend_from_slice(&(record.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(record);
    }
}

pub(super) struct RingReader {
    batches: mpsc::UnboundedReceiver<Batch>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Dropped to wake the thread at once: its end then polls readable,
    /// so a stopping trace does not wait out `POLL_EVERY`.
    wake: Option<UnixStream>,
    thread: Option<JoinHandle<RingBuf<MapData>>>,
}

impl RingReader {
    pub fn start(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        let (to_loop, batches) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = UnixStream::pair()?;
        let thread = std::thread::Builder::new()
            .name("connbal-ring".into())
            .spawn({
                let (queued, stop) = (Arc::clone(&queued), Arc::clone(&stop));
                move || read(ring, &to_loop, &queued, (&stop, &woken))
            })?;
        Ok(Self {
            batches,
            queued,
            stop,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// The next batch, when one comes; `None` once the reader has stopped.
    pub async fn next(&mut self) -> Option<Batch> {
        let batch = self.batches.recv().await?;
        self.queued.fetch_sub(batch.bytes.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// Every batch already handed over, without waiting.
    pub fn ready(&mut self) -> Vec<Batch> {
        let mut ready = Vec::new();
        while let Ok(batch) = self.batches.try_recv() {
            self.queued.fetch_sub(batch.bytes.len(), Ordering::Relaxed);
            ready.push(batch);
        }
        ready
    }

    /// Stops the reader and returns every record not yet aggregated: the
    /// batches handed over, then what the ring still holds.
    pub fn stop(&mut self) -> Vec<Batch> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.wake.take());
        let ring = self.thread.take().and_then(|thread| thread.join().ok());
        let mut rest = self.ready();
        if let Some(mut ring) = ring {
            let mut batch = Batch { bytes: Vec::new() };
            while let Some(record) = ring.next() {
                batch.push(&record);
            }
            rest.push(batch);
        }
        rest
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.wake.take());
    }
}

/// The reader thread: waits for the ring (or `POLL_EVERY`), copies every
/// record out in batches, and hands them over while the loop keeps up.
fn read(
    mut ring: RingBuf<MapData>,
    to_loop: &mpsc::UnboundedSender<Batch>,
    queued: &AtomicUsize,
    (stop, woken): (&AtomicBool, &UnixStream),
) -> RingBuf<MapData> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let timeout = PollTimeout::try_from(POLL_EVERY).unwrap_or(PollTimeout::NONE);
    while !stop.load(Ordering::Relaxed) {
        // Readable or not, the ring is read after the timeout: the kernel
        // wakes readers late on purpose.
        let mut fds = [
            PollFd::new(ring.as_fd(), PollFlags::POLLIN),
            PollFd::new(woken.as_fd(), PollFlags::POLLIN),
        ];
        let _ = poll(&mut fds, timeout);
        loop {
            if queued.load(Ordering::Relaxed) >= QUEUED_MAX {
                // The loop is behind by the whole queue: leave the rest in
                // the ring, whose drops the kernel counts, and let the
                // loop catch up rather than spin on a readable ring.
                std::thread::sleep(POLL_EVERY / 10);
                break;
            }
            let mut batch = Batch {
                bytes: Vec::with_capacity(BATCH_BYTES),
            };
            while batch.bytes.len() < BATCH_BYTES {
                let Some(record) = ring.next() else {
                    break;
                };
                batch.push(&record);
            }
            if batch.bytes.is_empty() {
                break;
            }
            let full = batch.bytes.len() >= BATCH_BYTES;
            queued.fetch_add(batch.bytes.len(), Ordering::Relaxed);
            if to_loop.send(batch).is_err() {
                return ring;
            }
            if !full {
                break;
            }
        }
    }
    ring
}

#[cfg(test)]
mod tests {
    use super::Batch;

    #[test]
    fn a_batch_gives_back_its_records_whole_and_in_order() {
        let mut batch = Batch { bytes: Vec::new() };
        let records: [&[u8]; 3] = [b"first", b"", &[7; 300]];
        for record in records {
            batch.push(record);
        }
        assert_eq!(batch.records().collect::<Vec<_>>(), records);
    }
}

//! A streaming window over the input: works the same on files and pipes,
//! reads in large chunks, and never holds more than the largest record the
//! readers allow (they bound every length before asking for it).
//!
//! With `reading_ahead`, a regular file's reads run on a thread of their
//! own: the kernel's copy of the file into our buffers (a fifth of replay's
//! time in a profile) then takes the other core while this one frames and
//! decodes. Chunks come over a bounded channel with room before their data,
//! so that the few bytes of a record cut by a chunk's end are moved in
//! front of the next chunk instead of the chunk being copied. (Mapping the
//! file instead was measured and rejected: reading the page cache through
//! 4 KiB mappings stalled on cache and TLB misses that cost more than the
//! copy, and every mapped page counted in the peak RSS.)

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;
/// Room before each read-ahead chunk's data for the tail of the chunk
/// before it; a longer tail (a record larger than this) is joined by
/// copying instead.
const HEADROOM: usize = 64 << 10;
/// Chunks read ahead and not yet taken.
const CHUNKS_AHEAD: usize = 2;
/// How often a wait for the reading thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

pub struct ByteStream {
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Input offset of `buf[start]`, for error messages.
    offset: u64,
    eof: bool,
    stop: Arc<AtomicBool>,
    /// For a pipe: how long to go on reading after a stop.
    drain: Option<Drain>,
    /// Present when a thread reads ahead (`reader` is then unused).
    ahead: Option<ReadAhead>,
}

/// The consuming end of the reading thread.
struct ReadAhead {
    /// Each chunk holds its data from `HEADROOM` to the end given with
    /// it; one with no data is the end of the input.
    chunks: mpsc::Receiver<io::Result<(Vec<u8>, usize)>>,
    /// Chunks handed back for reuse.
    spent: mpsc::Sender<Vec<u8>>,
}

/// The reading thread: reads `reader` into chunks until the end of the
/// input, an error, a stop, or the consumer going away.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the thread's entry point: it owns its channels and stop flag for as long as it runs"
)]
fn read_ahead(
    mut reader: Box<dyn Read + Send>,
    stop: Arc<AtomicBool>,
    chunks: mpsc::SyncSender<io::Result<(Vec<u8>, usize)>>,
    spent: mpsc::Receiver<Vec<u8>>,
) {
    // A fixed pool: the chunks in the channel, the one being read into,
    // and the consumer's; then each new one waits for a spent one.
    let mut allocated = 0;
    loop {
        let mut chunk = if allocated < CHUNKS_AHEAD + 1 {
            allocated += 1;
            Vec::new()
        } else {
            match spent.recv() {
                Ok(chunk) => chunk,
                Err(_) => return,
            }
        };
        // Chunks keep their full length between uses, so that a short
        // read costs no zeroing of the rest.
        if chunk.len() < HEADROOM + CHUNK {
            chunk.resize(HEADROOM + CHUNK, 0);
        }
        let read = read_once(&mut reader, &stop, &mut chunk[HEADROOM..]);
        let last = !matches!(read, Ok(n) if n > 0);
        let handed_over = chunks.send(read.map(|n| (chunk, HEADROOM + n)));
        if last || handed_over.is_err() {
            return;
        }
    }
}

/// One read, retried when a signal interrupts it, unless it was a stop.
fn read_once(
    reader: &mut Box<dyn Read + Send>,
    stop: &AtomicBool,
    into: &mut [u8],
) -> io::Result<usize> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        match reader.read(into) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// `tcpdump -w - | connbal replay -` stopped with Ctrl-C: both get SIGINT,
/// and tcpdump writes what it still holds as it exits. Reading on until
/// the writer closes the pipe, within a bound, counts that tail instead of
/// losing it.
struct Drain {
    fd: OwnedFd,
    limit: Duration,
    /// Set by a second Ctrl-C: stop waiting.
    hurry: Arc<AtomicBool>,
    /// Set at the first look after the stop.
    deadline: Option<Instant>,
}

impl ByteStream {
    /// `stop` is checked when a read is interrupted by a signal: set, the
    /// read gives up with `ErrorKind::Interrupted`; clear, it is retried.
    pub fn new(reader: Box<dyn Read + Send>, stop: Arc<AtomicBool>) -> Self {
        Self {
            reader,
            buf: vec![0; CHUNK],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            stop,
            drain: None,
            ahead: None,
        }
    }

    /// Moves the reading of a regular file onto a thread of its own (see
    /// the module's documentation). Not for pipes: their writer already
    /// keeps the other core busy, and a third thread measured slower (a
    /// context switch per write handed over).
    pub fn reading_ahead(mut self) -> Self {
        let (chunk_tx, chunk_rx) = mpsc::sync_channel(CHUNKS_AHEAD);
        let (spent_tx, spent_rx) = mpsc::channel();
        let reader = std::mem::replace(&mut self.reader, Box::new(io::empty()));
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("connbal-read".into())
            .spawn(move || read_ahead(reader, stop, chunk_tx, spent_rx));
        if spawned.is_ok() {
            self.ahead = Some(ReadAhead {
                chunks: chunk_rx,
                spent: spent_tx,
            });
        }
        // Without a thread (none could be made), `reader` is gone with the
        // closure: an empty input, which the reader reports as such. A
        // process that cannot start a thread has worse problems.
        self
    }

    /// After a stop, go on reading `fd` (the pipe `reader` reads) until
    /// its writer closes it, for at most `limit`, or until `hurry`.
    pub fn draining_after_stop(
        mut self,
        fd: OwnedFd,
        limit: Duration,
        hurry: Arc<AtomicBool>,
    ) -> Self {
        self.drain = Some(Drain {
            fd,
            limit,
            hurry,
            deadline: None,
        });
        self
    }

    /// Whether reading should end now: at once after a stop, or for a
    /// draining pipe once its time after the stop is up.
    pub fn stopped(&mut self) -> bool {
        if !self.stop.load(Ordering::Relaxed) {
            return false;
        }
        match &mut self.drain {
            None => true,
            Some(drain) => {
                let deadline = *drain
                    .deadline
                    .get_or_insert_with(|| Instant::now() + drain.limit);
                Instant::now() >= deadline || drain.hurry.load(Ordering::Relaxed)
            }
        }
    }

    /// Draining: waits, within the deadline, for the pipe to have data (or
    /// be closed). False when the time is up with nothing to read.
    fn drain_ready(&mut self) -> bool {
        if self.stopped() {
            return false;
        }
        let Some(drain) = &self.drain else {
            return true;
        };
        let left = drain
            .deadline
            .map_or(drain.limit, |d| d.saturating_duration_since(Instant::now()));
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [nix::poll::PollFd::new(
            drain.fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let timeout =
            nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX);
        // A signal while waiting only shortens the wait.
        matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self::new(
            Box::new(io::Cursor::new(bytes)),
            Arc::new(AtomicBool::new(false)),
        )
    }

    /// Returns at least `n` buffered bytes, or fewer only at end of input.
    pub fn fill(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.start < n && !self.eof {
            self.refill(n)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn refill(&mut self, n: usize) -> io::Result<()> {
        if self.ahead.is_some() {
            return self.refill_ahead(n);
        }
        if self.start + n > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if n > self.buf.len() {
                self.buf.resize(n.next_multiple_of(CHUNK), 0);
            }
        }
        while self.end - self.start < n {
            let draining = self.drain.is_some() && self.stop.load(Ordering::Relaxed);
            if draining && !self.drain_ready() {
                return Err(io::ErrorKind::Interrupted.into());
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(read) => self.end += read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    // A draining pipe goes round again, to wait for the
                    // writer's tail; anything else stops.
                    if self.stop.load(Ordering::Relaxed) && self.drain.is_none() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes chunks from the reading thread until `n` bytes are held or
    /// the input ends.
    fn refill_ahead(&mut self, n: usize) -> io::Result<()> {
        while self.end - self.start < n && !self.eof {
            let Some((mut chunk, chunk_end)) = self.next_chunk()? else {
                self.eof = true;
                break;
            };
            let tail = self.end - self.start;
            let spent = if tail <= HEADROOM {
                // The usual case: the tail moves in front of the new data.
                let at = HEADROOM - tail;
                chunk[at..HEADROOM].copy_from_slice(&self.buf[self.start..self.end]);
                let spent = std::mem::replace(&mut self.buf, chunk);
                self.start = at;
                self.end = chunk_end;
                spent
            } else {
                // A record longer than the headroom: join by copying.
                self.buf.copy_within(self.start..self.end, 0);
                self.buf.truncate(tail);
                self.buf.extend_from_slice(&chunk[HEADROOM..chunk_end]);
                self.start = 0;
                self.end = self.buf.len();
                chunk
            };
            if let Some(ahead) = &self.ahead {
                // The thread may be gone (at the end); then so is the use.
                let _ = ahead.spent.send(spent);
            }
        }
        Ok(())
    }

    /// The next chunk with data, `None` at the end of the input. Waits
    /// for the thread, but not past a stop.
    fn next_chunk(&mut self) -> io::Result<Option<(Vec<u8>, usize)>> {
        loop {
            let Some(ahead) = &self.ahead else {
                return Ok(None);
            };
            match ahead.chunks.recv_timeout(STOP_POLL) {
                Ok(Ok((chunk, end))) if end > HEADROOM => return Ok(Some((chunk, end))),
                Ok(Ok(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.stopped() {
                        return Err(io::ErrorKind::Interrupted.into());
                    }
                }
            }
        }
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
        self.offset += n as u64;
    }

    /// Skips `n` bytes without holding them all; returns how many were
    /// there (fewer only at end of input).
    pub fn skip(&mut self, n: usize) -> io::Result<usize> {
        let mut skipped = 0;
        while skipped < n {
            let step = (n - skipped).min(CHUNK);
            let available = self.fill(step)?.len().min(step);
            if available == 0 {
                break;
            }
            self.consume(available);
            skipped += available;
        }
        Ok(skipped)
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most 3 bytes per read, like a slow pipe.
    struct Trickle(io::Cursor<Vec<u8>>);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn fills_across_short_reads_and_reports_offsets() {
        let data: Vec<u8> = (0..=255).collect();
        let mut s = ByteStream::new(Box::new(Trickle(io::Cursor::new(data))), Arc::default());
        assert_eq!(
            &s.fill(10).unwrap()[..10],
            &(0..10).collect::<Vec<u8>>()[..]
        );
        s.consume(10);
        assert_eq!(s.offset(), 10);
        assert_eq!(
            s.fill(300).unwrap().len(),
            246,
            "short only at end of input"
        );
    }

    #[test]
    fn grows_for_a_record_larger_than_the_chunk() {
        let data = vec![7u8; CHUNK + 5];
        let mut s = ByteStream::from_bytes(data);
        s.fill(1).unwrap();
        s.consume(1);
        assert_eq!(s.fill(CHUNK + 4).unwrap().len(), CHUNK + 4);
    }

    /// Reads of uneven sizes, as a file system may return near its end.
    struct Uneven(io::Cursor<Vec<u8>>, usize);

    impl Read for Uneven {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 += 1;
            let n = buf.len().min(1 + (self.1 * 7919) % (CHUNK + 3));
            self.0.read(&mut buf[..n])
        }
    }

    #[test]
    fn reading_ahead_hands_over_every_byte_in_order() {
        // Steps of up to 2*HEADROOM bytes, so that tails both shorter and
        // longer than the headroom cross chunk boundaries.
        let data: Vec<u8> = (0..5 * CHUNK + 12_345).map(|i| (i % 251) as u8).collect();
        let reader = Uneven(io::Cursor::new(data.clone()), 0);
        let mut s = ByteStream::new(Box::new(reader), Arc::default()).reading_ahead();
        let (mut at, mut step) = (0, 1usize);
        while at < data.len() {
            step = (step * 31 + 17) % (2 * HEADROOM) + 1;
            let got = s.fill(step).unwrap();
            let want = step.min(data.len() - at);
            assert!(got.len() >= want, "at {at}: {} < {want}", got.len());
            assert_eq!(&got[..want], &data[at..at + want], "at {at}");
            s.consume(want);
            at += want;
            assert_eq!(s.offset(), at as u64);
        }
        assert!(s.fill(1).unwrap().is_empty());
    }

    #[test]
    fn reading_ahead_stops_when_asked() {
        let stop = Arc::new(AtomicBool::new(true));
        let reader = io::Cursor::new(vec![1u8; 3 * CHUNK]);
        let mut s = ByteStream::new(Box::new(reader), stop).reading_ahead();
        let e = s.fill(10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    }
}

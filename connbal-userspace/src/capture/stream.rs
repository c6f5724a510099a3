//! A streaming window over the input: works the same on files and pipes,
//! reads in large chunks, and never holds more than the largest record the
//! readers allow (they bound every length before asking for it).

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

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
}

/// `tcpdump -w - | connbal replay -` stopped with Ctrl-C: both get SIGINT,
/// and tcpdump writes what it still holds as it exits. Reading on until
/// the writer closes the pipe, within a bound, counts that tail instead of
/// losing it.
struct Drain {
    fd: OwnedFd,
    limit: Duration,
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
        }
    }

    /// After a stop, go on reading `fd` (the pipe `reader` reads) until
    /// its writer closes it, for at most `limit`.
    pub fn draining_after_stop(mut self, fd: OwnedFd, limit: Duration) -> Self {
        self.drain = Some(Drain {
            fd,
            limit,
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
                Instant::now() >= deadline
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
}

//! A streaming window over the input: works the same on files and pipes,
//! reads in large chunks, and never holds more than the largest record the
//! readers allow (they bound every length before asking for it).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
        }
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
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(read) => self.end += read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if self.stop.load(Ordering::Relaxed) {
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

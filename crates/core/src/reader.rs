//! A positional reader with sequential readahead.
//!
//! Python file objects, PyTorch datasets and `pyarrow` streams read a file in
//! many small, mostly sequential pieces. Sending each piece to a worker as
//! its own request would pay a round trip per read; fetching the whole file
//! would waste memory and bandwidth on random access. The reader keeps a
//! *window* of background fetches ahead of the caller, in the manner of
//! mountpoint-s3's prefetcher:
//!
//! - **Segments.** The window is a queue of contiguous segments
//!   `[start, end)`, each fetched by a background task
//!   (`tokio::spawn` of [`Client::read_into`] into its own buffer). A read
//!   inside the window awaits the segment(s) it needs and copies out of them.
//! - **Growth.** The first segment of a sequential run is
//!   `readahead_initial` bytes; each next one is twice the previous, up to
//!   `readahead_max`. A new segment is started when the bytes fetched ahead
//!   of the caller drop to half of the last segment's size, so the next
//!   segment is in flight before the caller reaches it.
//! - **Sequential or not.** A read is sequential when it starts where the
//!   previous one ended, or lands inside the window (small skips forward or
//!   back within what is buffered). Any other read is a seek: pending
//!   fetches are aborted, the window shrinks back to `readahead_initial`,
//!   and the read goes straight to the client with no readahead, so random
//!   access (Parquet footers and column chunks) costs no wasted bytes. The
//!   first read of a reader counts as sequential.
//! - **Large reads.** A sequential read at least as large as the next
//!   window bypasses the buffers: it is read straight into the caller's
//!   buffer, and only the following window is prefetched.
//! - **Memory bound.** Segments behind the caller are dropped at once. A
//!   new segment starts only when at most half of the last one is left
//!   ahead of the caller, so the bytes ahead never exceed
//!   `1.5 × readahead_max`, and a reader holds at most `2.5 ×
//!   readahead_max` (with the segment the caller is in) plus, for a large
//!   read, the caller's own buffer.
//! - **Failures.** Holes (ranges no worker could serve) are passed through
//!   with their absolute offsets, exactly as [`Client::read_into`] reports
//!   them. An error of a background fetch is returned by the read that needs
//!   that segment, and the window is reset. Dropping the reader aborts its
//!   pending fetches.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::client::{Client, ReadOutcome};
use crate::error::{Error, Result};

/// Bytes of one finished background fetch.
struct Fetched {
    data: Vec<u8>,
    /// Valid prefix of `data` (short at the end of the file).
    filled: usize,
    /// Absolute ranges inside the valid prefix that must come from the UFS.
    holes: Vec<Range<u64>>,
}

enum SegmentState {
    Pending(JoinHandle<Result<Fetched>>),
    Ready(Fetched),
}

struct Segment {
    start: u64,
    end: u64,
    state: SegmentState,
}

impl Segment {
    fn abort(&self) {
        if let SegmentState::Pending(h) = &self.state {
            h.abort();
        }
    }
}

/// A reader of one file (one object version) with sequential readahead.
pub struct Reader {
    client: Arc<Client>,
    url: Arc<str>,
    size: u64,
    version: Option<Arc<str>>,
    segments: VecDeque<Segment>,
    /// Size of the next segment to start.
    next_size: u64,
    /// Size of the segment started last (0 after a reset).
    last_size: u64,
    /// Where the previous read ended.
    last_end: Option<u64>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("url", &self.url)
            .field("size", &self.size)
            .field("version", &self.version)
            .field("segments", &self.segments.len())
            .field("next_size", &self.next_size)
            .finish()
    }
}

impl Reader {
    /// A reader of `url` (normalized) of `size` bytes. With `version` set,
    /// every fetch asks the workers for that object version, and a read
    /// fails with [`Error::ObjectChanged`] if the object changed.
    pub fn new(client: Arc<Client>, url: String, size: u64, version: Option<String>) -> Self {
        let next_size = client.config().readahead_initial.max(1);
        Reader {
            client,
            url: url.into(),
            size,
            version: version.map(Into::into),
            segments: VecDeque::new(),
            next_size,
            last_size: 0,
            last_end: None,
        }
    }

    /// The size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Read up to `buf.len()` bytes at `offset` (short at the end of the
    /// file). Served from the readahead window when possible; sequential
    /// reads start the next window's fetch in the background (on the
    /// current tokio runtime). Holes as in [`ReadOutcome`] (absolute
    /// offsets): their bytes in `buf` are not written.
    pub async fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
        if offset >= self.size || buf.is_empty() {
            self.last_end = Some(offset);
            return Ok(ReadOutcome::default());
        }
        let len = (buf.len() as u64).min(self.size - offset);
        let end = offset + len;
        let buf = &mut buf[..len as usize];
        let in_window = matches!(
            (self.segments.front(), self.segments.back()),
            (Some(f), Some(b)) if f.start <= offset && offset < b.end
        );
        let sequential = in_window || self.last_end.is_none_or(|e| e == offset);
        if !sequential {
            // A seek: no readahead until the reads turn sequential again.
            self.reset();
            let out = self.direct(offset, buf).await?;
            self.last_end = Some(offset + out.filled as u64);
            return Ok(out);
        }
        if !in_window {
            self.clear();
            if len >= self.next_size {
                let out = self.direct(offset, buf).await?;
                let read_end = offset + out.filled as u64;
                self.last_end = Some(read_end);
                if out.filled as u64 == len {
                    self.prefetch(read_end);
                }
                return Ok(out);
            }
            self.spawn(offset);
        }
        let mut pos = offset;
        let mut holes: Vec<Range<u64>> = Vec::new();
        let mut eof = false;
        while pos < end {
            while self.segments.front().is_some_and(|s| s.end <= pos) {
                self.segments.pop_front();
            }
            let Some(seg) = self.segments.front_mut() else {
                break;
            };
            if seg.start > pos {
                break;
            }
            if let SegmentState::Pending(h) = &mut seg.state {
                let res = h.await.map_err(|e| {
                    Error::Io(std::io::Error::other(format!("readahead task failed: {e}")))
                });
                match res.and_then(|r| r) {
                    Ok(f) => seg.state = SegmentState::Ready(f),
                    Err(e) => {
                        self.reset();
                        return Err(e);
                    }
                }
            }
            let SegmentState::Ready(f) = &seg.state else {
                unreachable!("segment was just made ready");
            };
            let avail_end = seg.start + f.filled as u64;
            if pos >= avail_end {
                eof = true;
                break;
            }
            let upto = end.min(avail_end);
            let src = &f.data[(pos - seg.start) as usize..(upto - seg.start) as usize];
            buf[(pos - offset) as usize..(upto - offset) as usize].copy_from_slice(src);
            for h in &f.holes {
                let r = h.start.max(pos)..h.end.min(upto);
                if r.start < r.end {
                    push_hole(&mut holes, r);
                }
            }
            pos = upto;
            if avail_end < seg.end && pos == avail_end {
                eof = true;
                break;
            }
        }
        if pos < end && !eof {
            // The window ran out (a read larger than what was buffered).
            let out = self
                .direct(pos, &mut buf[(pos - offset) as usize..])
                .await?;
            for h in out.holes {
                push_hole(&mut holes, h);
            }
            pos += out.filled as u64;
        }
        self.last_end = Some(pos);
        if !eof {
            self.prefetch(pos);
        }
        Ok(ReadOutcome {
            filled: (pos - offset) as usize,
            holes,
        })
    }

    async fn direct(&self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
        self.client
            .read_into(&self.url, self.version.as_deref(), offset, buf)
            .await
    }

    /// Start the next segment if what is fetched ahead of `read_end` has
    /// dropped to half of the last segment.
    fn prefetch(&mut self, read_end: u64) {
        while self.segments.front().is_some_and(|s| s.end <= read_end) {
            self.segments.pop_front();
        }
        let covered = self
            .segments
            .back()
            .map_or(read_end, |s| s.end.max(read_end));
        if covered < self.size && covered - read_end <= self.last_size / 2 {
            self.spawn(covered);
        }
    }

    /// Start a background fetch of the next segment at `start` and grow the
    /// window.
    fn spawn(&mut self, start: u64) {
        let end = start.saturating_add(self.next_size).min(self.size);
        if start >= end {
            return;
        }
        let client = self.client.clone();
        let url = self.url.clone();
        let version = self.version.clone();
        let handle = tokio::spawn(async move {
            let mut data = vec![0u8; (end - start) as usize];
            let out = client
                .read_into(&url, version.as_deref(), start, &mut data)
                .await?;
            Ok(Fetched {
                data,
                filled: out.filled,
                holes: out.holes,
            })
        });
        self.segments.push_back(Segment {
            start,
            end,
            state: SegmentState::Pending(handle),
        });
        self.last_size = self.next_size;
        let max = self.client.config().readahead_max.max(1);
        self.next_size = self.next_size.saturating_mul(2).min(max);
    }

    /// Drop the window (aborting pending fetches), keeping its size.
    fn clear(&mut self) {
        for s in self.segments.drain(..) {
            s.abort();
        }
    }

    /// Drop the window and shrink it back to `readahead_initial`.
    fn reset(&mut self) {
        self.clear();
        self.next_size = self.client.config().readahead_initial.max(1);
        self.last_size = 0;
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.clear();
    }
}

fn push_hole(holes: &mut Vec<Range<u64>>, r: Range<u64>) {
    match holes.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => holes.push(r),
    }
}

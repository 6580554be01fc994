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
//!
//! - **Same node.** When the file's worker is on this node
//!   ([`Client::prefers_local`]), a read outside the window goes straight
//!   to [`Client::read_into`], which reads the worker's page files into the
//!   caller's buffer: the page cache is the readahead, and a window would
//!   only add a copy. A read that was not wholly served from page files (a
//!   cold page) turns the window back on until the next seek.
//!
//! ## Parquet-aware prefetch
//!
//! Enabled with [`Reader::with_parquet_prefetch`] (depth > 0). A Parquet
//! reader first reads the file's tail (the footer), then the column chunks
//! it needs, row group by row group, at offsets the sequential heuristics
//! above see as seeks. So:
//!
//! - **Footer.** When a read that ends at the end of the file holds the
//!   whole footer (a `PAR1` trailer), the footer is parsed
//!   ([`crate::parquet`]) with no extra request (one extra request only
//!   when the reader's tail read was shorter than the footer). The footer
//!   and those tail bytes are kept per process ([`crate::parquet::FOOTERS`],
//!   keyed by URL and version): a later reader of the same object version
//!   serves its tail read from memory and knows the layout from its first
//!   read.
//! - **Column reads.** A read that lies inside the chunks of one row group
//!   `k` (one chunk, or several adjacent ones as pyarrow's `pre_buffer`
//!   coalesces them) names the columns wanted. The same columns of row
//!   groups `k+1 ..= k+depth` that nobody asked for yet are fetched in the
//!   background, adjacent chunks (touching: [`PARQUET_GAP`]) merged into
//!   one fetch; no other column is ever fetched. Column reads bypass the
//!   sequential window entirely.
//! - **Serving.** A column read copies what prefetches cover (awaiting a
//!   pending one rather than asking again) and reads only the uncovered
//!   gaps directly. A prefetch is dropped once all its bytes were read;
//!   prefetched bytes held at once are bounded by `readahead_max`, beyond
//!   which no new prefetch starts. A failed prefetch is not an error: its
//!   range is read directly.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::client::{Client, ReadOutcome};
use crate::error::{Error, Result};
use crate::parquet::{self, Footer, FOOTERS};

/// Column chunks closer than this are prefetched as one range. Zero: only
/// chunks that touch are merged, so the prefetch never reads a byte of a
/// column nobody asked for (pyarrow's own coalescing allows 8 KiB holes).
pub const PARQUET_GAP: u64 = 0;

/// At most this much of a file's tail (or the footer, if larger) is kept with
/// its footer: PyArrow's first read of a Parquet file is its last 64 KiB.
const KEPT_TAIL: u64 = 64 << 10;

/// Bytes of one finished background fetch.
struct Fetched {
    data: Vec<u8>,
    /// Valid prefix of `data` (short at the end of the file).
    filled: usize,
    /// Absolute ranges inside the valid prefix that must come from the UFS.
    holes: Vec<Range<u64>>,
    /// Why (see [`ReadOutcome::fault`]).
    fault: Option<Error>,
}

/// Fetch `range` of the file in a background task (window segments and
/// Parquet column prefetches alike).
fn spawn_fetch(
    client: &Arc<Client>,
    url: &Arc<str>,
    version: &Option<Arc<str>>,
    range: Range<u64>,
) -> JoinHandle<Result<Fetched>> {
    let (client, url, version) = (client.clone(), url.clone(), version.clone());
    tokio::spawn(async move {
        let mut data = vec![0u8; (range.end - range.start) as usize];
        let out = client
            .read_into(&url, version.as_deref(), range.start, &mut data)
            .await?;
        Ok(Fetched {
            data,
            filled: out.filled,
            holes: out.holes,
            fault: out.fault,
        })
    })
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
    /// Parquet-aware prefetch state (None: off).
    parquet: Option<ParquetState>,
    /// Whether reads bypass the window for a same-node worker: until one
    /// is not served wholly from its page files (then until a seek).
    local_ok: bool,
}

/// One background fetch of column chunks nobody asked for yet.
struct ColumnFetch {
    range: Range<u64>,
    /// Bytes of `range` already handed to the caller.
    consumed: u64,
    state: SegmentState,
}

struct ParquetState {
    depth: usize,
    /// The footer once known.
    footer: Option<Arc<Footer>>,
    /// The footer could not be read (not Parquet): stop looking.
    gave_up: bool,
    /// (row group, column) asked for or prefetched already.
    seen: HashSet<(usize, usize)>,
    fetches: Vec<ColumnFetch>,
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
            parquet: None,
            local_ok: true,
        }
    }

    /// Turn on the Parquet-aware prefetch (see the module notes): after a
    /// read of the column chunks of row group `k`, the same columns of row
    /// groups `k+1 ..= k+depth` are fetched in the background. 0 leaves it
    /// off. A footer kept from an earlier reader of the same object version
    /// is used at once.
    pub fn with_parquet_prefetch(mut self, depth: usize) -> Self {
        if depth > 0 {
            let footer = FOOTERS.get(&self.url, self.version.as_deref());
            self.parquet = Some(ParquetState {
                depth,
                footer,
                gave_up: false,
                seen: HashSet::new(),
                fetches: Vec::new(),
            });
        }
        self
    }

    /// Whether the Parquet layout of this file is known (prefetch active).
    pub fn parquet_layout_known(&self) -> bool {
        self.parquet.as_ref().is_some_and(|p| p.footer.is_some())
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
        if self.parquet.is_none() || offset >= self.size || buf.is_empty() {
            return self.read_window(offset, buf).await;
        }
        let len = (buf.len() as u64).min(self.size - offset);
        if let Some(out) = self.read_parquet(offset, &mut buf[..len as usize]).await? {
            self.last_end = Some(offset + out.filled as u64);
            return Ok(out);
        }
        let out = self.read_window(offset, buf).await?;
        if out.holes.is_empty() && offset + out.filled as u64 == self.size {
            self.learn_footer(offset, &buf[..out.filled]).await;
        }
        Ok(out)
    }

    async fn read_window(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
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
        if !in_window && self.local_ok && self.client.prefers_local(&self.url) {
            // The worker is on this node: its page files are read straight
            // into `buf`; a readahead window would only add a copy. A read
            // not wholly served locally turns the window back on.
            self.clear();
            let out = self.direct(offset, buf).await?;
            self.local_ok = out.local == out.filled as u64;
            self.last_end = Some(offset + out.filled as u64);
            return Ok(out);
        }
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
        let mut fault: Option<Error> = None;
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
                    if fault.is_none() {
                        fault = f.fault.clone();
                    }
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
            fault = fault.or(out.fault);
            pos += out.filled as u64;
        }
        self.last_end = Some(pos);
        if !eof {
            self.prefetch(pos);
        }
        Ok(ReadOutcome {
            filled: (pos - offset) as usize,
            holes,
            fault,
            local: 0,
        })
    }

    /// Serve `buf` (at `offset`, inside the file) from the kept footer tail
    /// or as a column read; `None` when it is neither.
    async fn read_parquet(&mut self, offset: u64, buf: &mut [u8]) -> Result<Option<ReadOutcome>> {
        let Some(pq) = self.parquet.as_mut() else {
            return Ok(None);
        };
        let Some(footer) = pq.footer.clone() else {
            return Ok(None);
        };
        let end = offset + buf.len() as u64;
        if footer.copy_tail(offset, buf) {
            return Ok(Some(ReadOutcome {
                filled: buf.len(),
                holes: Vec::new(),
                fault: None,
                local: 0,
            }));
        }
        let Some((rg, cols)) = columns_of(&footer.layout, offset, end) else {
            return Ok(None);
        };
        for &c in &cols {
            pq.seen.insert((rg, c));
        }
        self.schedule(&footer, rg, &cols);
        Ok(Some(self.serve_columns(offset, buf).await?))
    }

    /// Start background fetches of columns `cols` of the row groups after `rg`.
    fn schedule(&mut self, footer: &Footer, rg: usize, cols: &[usize]) {
        let budget = self.client.config().readahead_max;
        let Some(pq) = self.parquet.as_mut() else {
            return;
        };
        let mut held: u64 = pq.fetches.iter().map(|f| f.range.end - f.range.start).sum();
        let mut want: Vec<Range<u64>> = Vec::new();
        for next in rg + 1..=rg + pq.depth {
            for &c in cols {
                if pq.seen.contains(&(next, c)) {
                    continue;
                }
                let Some(r) = footer.layout.chunk(next, c) else {
                    continue;
                };
                if r.is_empty() || held + (r.end - r.start) > budget {
                    continue;
                }
                held += r.end - r.start;
                pq.seen.insert((next, c));
                want.push(r);
            }
        }
        want.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in want {
            match merged.last_mut() {
                Some(m) if r.start <= m.end + PARQUET_GAP => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        for range in merged {
            let handle = spawn_fetch(&self.client, &self.url, &self.version, range.clone());
            pq.fetches.push(ColumnFetch {
                range,
                consumed: 0,
                state: SegmentState::Pending(handle),
            });
        }
    }

    /// A column read: copy what prefetches hold, read the rest directly.
    async fn serve_columns(&mut self, offset: u64, buf: &mut [u8]) -> Result<ReadOutcome> {
        let end = offset + buf.len() as u64;
        let mut holes: Vec<Range<u64>> = Vec::new();
        let mut fault: Option<Error> = None;
        let mut gaps: Vec<Range<u64>> = Vec::new();
        let mut pos = offset;
        if let Some(pq) = self.parquet.as_mut() {
            pq.fetches.sort_by_key(|f| f.range.start);
            for f in pq.fetches.iter_mut() {
                let (s, e) = (f.range.start.max(pos), f.range.end.min(end));
                if s >= e {
                    continue;
                }
                if let SegmentState::Pending(h) = &mut f.state {
                    let got = match h.await {
                        Ok(Ok(done)) => Some(done),
                        _ => None,
                    };
                    match got {
                        Some(done) => f.state = SegmentState::Ready(done),
                        None => {
                            // Failed prefetch: read its part directly below,
                            // and forget it.
                            f.consumed = u64::MAX;
                            continue;
                        }
                    }
                }
                let SegmentState::Ready(data) = &f.state else {
                    continue;
                };
                let avail_end = f.range.start + data.filled as u64;
                let e2 = e.min(avail_end);
                if s < e2 {
                    if pos < s {
                        gaps.push(pos..s);
                    }
                    let src =
                        &data.data[(s - f.range.start) as usize..(e2 - f.range.start) as usize];
                    buf[(s - offset) as usize..(e2 - offset) as usize].copy_from_slice(src);
                    for h in &data.holes {
                        let r = h.start.max(s)..h.end.min(e2);
                        if r.start < r.end {
                            push_hole(&mut holes, r);
                            if fault.is_none() {
                                fault = data.fault.clone();
                            }
                        }
                    }
                    f.consumed = f.consumed.saturating_add(e2 - s);
                    pos = e2;
                }
            }
            pq.fetches
                .retain(|f| f.consumed < f.range.end - f.range.start);
        }
        if pos < end {
            gaps.push(pos..end);
        }
        for g in gaps {
            let out = self
                .direct(
                    g.start,
                    &mut buf[(g.start - offset) as usize..(g.end - offset) as usize],
                )
                .await?;
            holes.extend(out.holes);
            fault = fault.or(out.fault);
        }
        holes.sort_by_key(|h| h.start);
        Ok(ReadOutcome {
            filled: buf.len(),
            holes,
            fault,
            local: 0,
        })
    }

    /// After a read that ended at the end of the file: parse the footer from
    /// its bytes (fetching the rest of the footer if the read was shorter)
    /// and keep it for this process.
    async fn learn_footer(&mut self, offset: u64, data: &[u8]) {
        let Some(pq) = self.parquet.as_ref() else {
            return;
        };
        if pq.footer.is_some() || pq.gave_up {
            return;
        }
        let Some(flen) = parquet::footer_len(data) else {
            self.give_up();
            return;
        };
        let need = flen + 8;
        let (tail_start, tail) = if need <= data.len() as u64 {
            // Keep the footer, or the last KEPT_TAIL bytes read if more (what
            // PyArrow's footer read asks for), never a whole file read at once.
            let keep = (need.max(KEPT_TAIL) as usize).min(data.len());
            let from = data.len() - keep;
            (offset + from as u64, data[from..].to_vec())
        } else if need <= self.size && need <= 64 << 20 {
            let start = self.size - need;
            let mut t = vec![0u8; need as usize];
            match self.direct(start, &mut t).await {
                Ok(o) if o.holes.is_empty() && o.filled == t.len() => (start, t),
                _ => return,
            }
        } else {
            self.give_up();
            return;
        };
        match parquet::parse_tail(&tail, self.size) {
            Ok(layout) => {
                let footer = Arc::new(Footer {
                    layout,
                    tail_start,
                    tail,
                });
                FOOTERS.put(self.url.clone(), self.version.clone(), footer.clone());
                if let Some(pq) = self.parquet.as_mut() {
                    pq.footer = Some(footer);
                }
            }
            Err(e) => {
                tracing::debug!(url = %self.url, error = %e, "no Parquet prefetch");
                self.give_up();
            }
        }
    }

    fn give_up(&mut self) {
        if let Some(pq) = self.parquet.as_mut() {
            pq.gave_up = true;
        }
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
        let handle = spawn_fetch(&self.client, &self.url, &self.version, start..end);
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
        self.local_ok = true;
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.clear();
        if let Some(pq) = &self.parquet {
            for f in &pq.fetches {
                if let SegmentState::Pending(h) = &f.state {
                    h.abort();
                }
            }
        }
    }
}

/// The row group whose chunks hold all of `[start, end)`, and the columns
/// the range touches (one chunk, or adjacent ones coalesced by the caller).
fn columns_of(layout: &parquet::Layout, start: u64, end: u64) -> Option<(usize, Vec<usize>)> {
    for (rg, chunks) in layout.row_groups.iter().enumerate() {
        let lo = chunks.iter().map(|r| r.start).min()?;
        let hi = chunks.iter().map(|r| r.end).max()?;
        if start < lo || end > hi {
            continue;
        }
        let cols: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, r)| r.start < end && start < r.end)
            .map(|(c, _)| c)
            .collect();
        if !cols.is_empty() {
            return Some((rg, cols));
        }
    }
    None
}

fn push_hole(holes: &mut Vec<Range<u64>>, r: Range<u64>) {
    match holes.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => holes.push(r),
    }
}

//! Chunked reads of a byte range into the caller's buffer.
//!
//! - **Parallelism.** A read larger than `max_chunk` is cut into page-aligned
//!   chunks ([`crate::pages::split_aligned`]) fetched concurrently (at most
//!   `max_parallel` requests in flight per call). Each response body is
//!   streamed straight into its slice of the caller's buffer: no
//!   intermediate copy of the chunk.
//! - **Failover per chunk.** Each chunk walks the path's preferred workers
//!   (`failover`). A retry after a broken body asks only for the bytes still
//!   missing, so what arrived is kept.
//! - **Fail open.** What no preferred worker could serve becomes the chunk's
//!   *hole* (absolute file offsets) for the caller to read from the UFS; it
//!   is counted in [`super::Stats::fallbacks`], and the fault that left it
//!   is reported with it ([`ReadOutcome::fault`]).
//! - **Assembly.** The chunk outcomes say where the file ends (a short body
//!   or the size header) and which holes lie before that end.
//!
//! Whole-file reads (`files`) and coalesced reads of many ranges (`ranges`)
//! are built on the same chunk machinery.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use super::failover::{exhausted, Walk};
use super::{Client, WorkerAddr};
use crate::error::{Error, Result};
use crate::pages::split_aligned;
use crate::protocol::FILE_SIZE_HEADER;

/// What [`Client::read_into`] did.
#[derive(Clone, Debug, Default)]
pub struct ReadOutcome {
    /// Length of the prefix of the buffer that the read covers: bytes served
    /// by workers plus the holes inside it. Shorter than the buffer only at
    /// the end of the file.
    pub filled: usize,
    /// Ranges (absolute file offsets, inside the covered prefix, sorted,
    /// disjoint) that no worker could serve: their bytes in the buffer are
    /// not written and must be read from the UFS. When the end of the file
    /// is unknown (no worker answered at all), the covered prefix is the
    /// whole buffer and the UFS read of the last hole may come back short.
    pub holes: Vec<Range<u64>>,
    /// Why the first hole was left to the UFS: the last worker fault for its
    /// bytes ([`Error::Timeout`] when the request timed out, else
    /// [`Error::WorkerUnavailable`] or [`Error::NoWorkers`]). `None` when
    /// there are no holes. A caller that cannot read the UFS raises it.
    pub fault: Option<Error>,
    /// Of the bytes served, those read from a same-node worker's page files
    /// (the rest came over HTTP).
    pub local: u64,
}

/// One result of [`Client::read_ranges`] (and of [`Client::read_range`],
/// [`Client::read_files`]).
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    /// The bytes of the range (shorter at the end of the file); bytes inside
    /// `holes` are zero. As for [`ReadOutcome`], when no worker answered for
    /// the file its end is unknown: `data` spans the whole range and the UFS
    /// read of the last hole may come back short (then cut `data` there).
    pub data: Bytes,
    /// Ranges (absolute file offsets, inside the range) to read from the UFS.
    pub holes: Vec<Range<u64>>,
    /// Why the holes were left to the UFS, as [`ReadOutcome::fault`].
    pub fault: Option<Error>,
}

/// One page-aligned piece of a read: which file, which bytes, where to.
pub(super) struct ChunkJob<'a> {
    url: &'a str,
    version: Option<&'a str>,
    prefs: &'a [WorkerAddr],
    range: Range<u64>,
    buf: &'a mut [u8],
}

/// What happened to one chunk.
#[derive(Debug, Clone)]
pub(super) struct ChunkOutcome {
    range: Range<u64>,
    /// Bytes written from `range.start` on, contiguous.
    written: u64,
    /// The body ended short without error: the file ends at start+written.
    eof: bool,
    /// The part no worker served.
    hole: Option<Range<u64>>,
    /// The object's size, when a worker said it.
    file_size: Option<u64>,
    /// Why `hole` was left (the last worker fault for it).
    fault: Option<Error>,
    /// Of `written`, the bytes read from a same-node worker's page files.
    local: u64,
}

/// One successful range request.
struct RangeOnce {
    eof: bool,
    file_size: Option<u64>,
}

impl Client {
    /// Read `[offset, offset + buf.len())` of `url` (normalized) into `buf`.
    ///
    /// The range is split into page-aligned chunks of at most `max_chunk`
    /// bytes, fetched in parallel (at most `max_parallel` at once) from the
    /// first live preferred worker, the next replica on a worker fault. Each
    /// body is streamed straight into its slice of `buf`. Bytes past the end
    /// of the file are not written ([`ReadOutcome::filled`] is short).
    /// Ranges that no worker could serve are returned as
    /// [`ReadOutcome::holes`] for the caller to read from the UFS; if a
    /// worker dies mid-body, the bytes already written stay and only the
    /// rest of that chunk is a hole. Errors that are not worker faults
    /// (404, 403, 412, 400) are returned as `Err`.
    ///
    /// `version` (the object's ETag or `mtime-size`) makes the worker answer
    /// 412 ([`Error::ObjectChanged`]) if the object has changed.
    pub async fn read_into(
        &self,
        url: &str,
        version: Option<&str>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<ReadOutcome> {
        if buf.is_empty() {
            return Ok(ReadOutcome::default());
        }
        let len = buf.len() as u64;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::InvalidArgument(format!("{url}: range end overflows")))?;
        let prefs = self.workers_for(url);
        let jobs = carve(
            url,
            version,
            &prefs,
            offset,
            buf,
            split_aligned(offset, end, self.config.page_size, self.config.max_chunk),
        );
        let jobs = jobs.into_iter().map(|j| (0, j)).collect();
        let mut outcomes = Vec::new();
        for (_, r) in self.fetch_all(jobs, true).await {
            outcomes.push(r?);
        }
        Ok(assemble(offset, len, outcomes))
    }

    /// Read `[start, end)` of `url` (normalized) into a new buffer: a
    /// convenience over [`Client::read_into`] (for `cat_file`). The data is
    /// cut at the end of the file; holes as in [`RangeResult`].
    pub async fn read_range(
        &self,
        url: &str,
        version: Option<&str>,
        start: u64,
        end: u64,
    ) -> Result<RangeResult> {
        if start >= end {
            return Ok(RangeResult::default());
        }
        let len = usize::try_from(end - start)
            .map_err(|_| Error::InvalidArgument(format!("{url}: range too large")))?;
        let mut buf = vec![0u8; len];
        let out = self.read_into(url, version, start, &mut buf).await?;
        buf.truncate(out.filled);
        Ok(RangeResult {
            data: Bytes::from(buf),
            holes: out.holes,
            fault: out.fault,
        })
    }

    /// Fetch `jobs` (each tagged by the caller) with at most `max_parallel`
    /// in flight. With `stop_on_error`, the first error ends the call (the
    /// other fetches are dropped) and is the last result returned.
    pub(super) async fn fetch_all<'a>(
        &'a self,
        jobs: Vec<(usize, ChunkJob<'a>)>,
        stop_on_error: bool,
    ) -> Vec<(usize, Result<ChunkOutcome>)> {
        let deadline = Instant::now() + self.config.retry_deadline;
        let limit = self.config.max_parallel.max(1);
        let mut pending = jobs.into_iter();
        let mut running = FuturesUnordered::new();
        let mut out = Vec::with_capacity(pending.len());
        for (tag, job) in pending.by_ref().take(limit) {
            running.push(self.fetch_tagged(tag, job, deadline));
        }
        while let Some((tag, r)) = running.next().await {
            let failed = r.is_err();
            out.push((tag, r));
            if failed && stop_on_error {
                break;
            }
            if let Some((tag, job)) = pending.next() {
                running.push(self.fetch_tagged(tag, job, deadline));
            }
        }
        out
    }

    async fn fetch_tagged(
        &self,
        tag: usize,
        job: ChunkJob<'_>,
        deadline: Instant,
    ) -> (usize, Result<ChunkOutcome>) {
        (tag, self.fetch_chunk(job, deadline).await)
    }

    /// Fetch one chunk from the preferred workers in order, retrying worker
    /// faults; what no worker serves becomes the chunk's hole.
    async fn fetch_chunk(&self, job: ChunkJob<'_>, deadline: Instant) -> Result<ChunkOutcome> {
        let ChunkJob {
            url,
            version,
            prefs,
            range,
            buf,
        } = job;
        let mut cur = range.start;
        let mut file_size = None;
        let mut local = 0;
        let mut pinned = version.map(str::to_string);
        let mut walk = Walk::new(self, prefs, deadline);
        while let Some(w) = walk.worker() {
            let small_slice =
                range.end - cur < self.config.page_size / 4 && cur % self.config.page_size != 0;
            // A small slice inside a page would be sent to HTTP after the
            // socket's answer anyway (`worth_verifying`): skip the round trip.
            let ch = if small_slice {
                None
            } else {
                self.local_channel(w).await
            };
            if let Some(ch) = ch {
                let at = (cur - range.start) as usize;
                let got = self.read_local(
                    w,
                    &ch,
                    url,
                    pinned.as_deref(),
                    cur,
                    range.end,
                    &mut buf[at..],
                );
                cur += got.written;
                local += got.written;
                if got.written > 0 {
                    pinned = got.version.or(pinned);
                }
                if let Some(size) = got.file_size {
                    file_size = Some(size);
                    if cur >= range.end.min(size) {
                        return Ok(ChunkOutcome {
                            written: cur - range.start,
                            eof: size < range.end,
                            hole: None,
                            file_size,
                            fault: None,
                            local,
                            range,
                        });
                    }
                }
            }
            let at = (cur - range.start) as usize;
            let (res, written) = self
                .get_range_once(w, url, pinned.as_deref(), cur, range.end, &mut buf[at..])
                .await;
            cur += written;
            match walk.settle(res).await {
                Some(Ok(once)) => {
                    file_size = once.file_size.or(file_size);
                    return Ok(ChunkOutcome {
                        written: cur - range.start,
                        eof: once.eof,
                        hole: None,
                        file_size,
                        fault: None,
                        local,
                        range,
                    });
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        let last = walk.last_fault();
        let owner = self.count_fallback(prefs);
        tracing::debug!(url, start = cur, end = range.end, "range left to the UFS");
        let fault = if prefs.is_empty() {
            Error::NoWorkers(format!("no worker known for {url}"))
        } else {
            exhausted(owner, last)
        };
        Ok(ChunkOutcome {
            written: cur - range.start,
            eof: false,
            hole: Some(cur..range.end),
            file_size,
            fault: Some(fault),
            local,
            range,
        })
    }

    /// One GET of `/v1/range` for `[start, end)`, streamed into `dst`.
    /// Returns the outcome and, in every case, how many bytes were written
    /// to `dst` (a broken body keeps what arrived).
    async fn get_range_once(
        &self,
        w: &WorkerAddr,
        url: &str,
        version: Option<&str>,
        start: u64,
        end: u64,
        dst: &mut [u8],
    ) -> (Result<RangeOnce>, u64) {
        let answer = match self.get_range(w, url, version, start, end - start).await {
            Ok(a) => a,
            Err(e) => return (Err(e), 0),
        };
        let file_size = answer
            .header(FILE_SIZE_HEADER)
            .and_then(|v| v.parse::<u64>().ok());
        let (result, written) = answer.fill(dst).await;
        self.count_bytes(written as u64);
        let result = result.map(|eof| RangeOnce { eof, file_size });
        (result, written as u64)
    }
}

/// Cut `buf` (holding `[offset, offset + buf.len())`) into the disjoint
/// slices of `chunks`.
pub(super) fn carve<'a>(
    url: &'a str,
    version: Option<&'a str>,
    prefs: &'a [WorkerAddr],
    offset: u64,
    buf: &'a mut [u8],
    chunks: Vec<Range<u64>>,
) -> Vec<ChunkJob<'a>> {
    let mut rest = buf;
    let mut pos = offset;
    let mut jobs = Vec::with_capacity(chunks.len());
    for range in chunks {
        debug_assert_eq!(range.start, pos);
        let (head, tail) =
            std::mem::take(&mut rest).split_at_mut((range.end - range.start) as usize);
        rest = tail;
        pos = range.end;
        jobs.push(ChunkJob {
            url,
            version,
            prefs,
            range,
            buf: head,
        });
    }
    jobs
}

/// Combine the chunk outcomes of a read of `[offset, offset + len)`: where
/// the file ends (a short body or the size header) and the holes before it.
pub(super) fn assemble(offset: u64, len: u64, mut outcomes: Vec<ChunkOutcome>) -> ReadOutcome {
    outcomes.sort_by_key(|o| o.range.start);
    let mut end = offset + len;
    for o in &outcomes {
        if let Some(size) = o.file_size {
            end = end.min(size.max(offset));
        }
        if o.eof {
            end = end.min(o.range.start + o.written);
        }
    }
    let mut holes: Vec<Range<u64>> = Vec::new();
    let mut fault = None;
    let local = outcomes.iter().map(|o| o.local).sum();
    for o in &mut outcomes {
        if let Some(h) = &o.hole {
            let h = h.start..h.end.min(end);
            if h.start >= h.end {
                continue;
            }
            if fault.is_none() {
                fault = o.fault.take();
            }
            match holes.last_mut() {
                Some(last) if last.end == h.start => last.end = h.end,
                _ => holes.push(h),
            }
        }
    }
    ReadOutcome {
        filled: (end - offset) as usize,
        holes,
        fault,
        local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(range: Range<u64>, written: u64, eof: bool, hole: bool) -> ChunkOutcome {
        ChunkOutcome {
            hole: hole.then(|| range.start + written..range.end),
            fault: hole.then(|| Error::NoWorkers(format!("test {}", range.start))),
            range,
            written,
            eof,
            file_size: None,
            local: 0,
        }
    }

    #[test]
    fn assemble_eof_and_holes() {
        // Three chunks of 10; the second is a hole, the third ends at 25.
        let out = assemble(
            0,
            30,
            vec![
                outcome(20..30, 5, true, false),
                outcome(0..10, 10, false, false),
                outcome(10..20, 3, false, true),
            ],
        );
        assert_eq!(out.filled, 25);
        assert_eq!(out.holes, vec![13..20]);
        assert!(matches!(&out.fault, Some(Error::NoWorkers(m)) if m == "test 10"));
        // Adjacent holes merge, and a hole past the known size is cut; the
        // fault is the first hole's.
        let mut last = outcome(10..20, 0, false, true);
        last.file_size = Some(15);
        let out = assemble(0, 20, vec![last, outcome(0..10, 4, false, true)]);
        assert_eq!(out.filled, 15);
        assert_eq!(out.holes, vec![4..15]);
        assert!(matches!(&out.fault, Some(Error::NoWorkers(m)) if m == "test 0"));
        // No hole, no fault.
        let out = assemble(0, 10, vec![outcome(0..10, 10, false, false)]);
        assert!(out.holes.is_empty() && out.fault.is_none());
    }
}

//! Reads of many ranges of many files at once, coalesced.
//!
//! Columnar readers ask for many small ranges (a Parquet file's column
//! chunks); one request each would pay a round trip per range. Ranges of a
//! file closer than `coalesce_gap` are merged ([`crate::pages::coalesce`]),
//! the merged ranges are cut into page-aligned chunks and all chunks of all
//! files are fetched concurrently with the machinery of `read` (failover,
//! holes). Each input is then sliced back out of its merged range without
//! copying. An error of one file (not found, changed) fails only that
//! file's inputs.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;

use super::read::{assemble, carve, ChunkOutcome};
use super::{Client, RangeResult, ReadOutcome, WorkerAddr};
use crate::error::{Error, Result};
use crate::pages::{coalesce, split_aligned};

impl Client {
    /// Read many ranges of many files: `(url, start, end)` with `end`
    /// exclusive, already resolved and clamped by the caller.
    ///
    /// Ranges are grouped per file and coalesced (`coalesce_gap`); the merged
    /// ranges are split into page-aligned chunks and all chunks of all files
    /// are fetched concurrently (at most `max_parallel` at once). Each input
    /// gets a zero-copy slice of its merged range. One result per input, in
    /// input order; an error of one file (e.g. not found) fails only that
    /// file's inputs.
    pub async fn read_ranges(&self, reqs: &[(String, u64, u64)]) -> Vec<Result<RangeResult>> {
        // Group non-empty ranges per file.
        let mut files: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut file_of: HashMap<&str, usize> = HashMap::new();
        for (i, (url, start, end)) in reqs.iter().enumerate() {
            if start >= end {
                continue;
            }
            let f = *file_of.entry(url.as_str()).or_insert_with(|| {
                files.push((url.as_str(), Vec::new()));
                files.len() - 1
            });
            files[f].1.push(i);
        }
        // Plan: merged fetch ranges per file.
        struct Fetch {
            file: usize,
            range: Range<u64>,
        }
        let mut fetches: Vec<Fetch> = Vec::new();
        let mut fetch_of_req: Vec<usize> = vec![usize::MAX; reqs.len()];
        let mut prefs: Vec<Vec<WorkerAddr>> = Vec::with_capacity(files.len());
        for (f, (url, idxs)) in files.iter().enumerate() {
            prefs.push(self.workers_for(url));
            let ranges: Vec<Range<u64>> = idxs.iter().map(|&i| reqs[i].1..reqs[i].2).collect();
            let (merged, owner) = coalesce(&ranges, self.config.coalesce_gap);
            let base = fetches.len();
            fetches.extend(merged.into_iter().map(|range| Fetch { file: f, range }));
            for (k, &i) in idxs.iter().enumerate() {
                fetch_of_req[i] = base + owner[k];
            }
        }
        // Fetch every merged range, all chunks of all files in one stream.
        let mut bufs: Vec<Vec<u8>> = fetches
            .iter()
            .map(|f| vec![0u8; (f.range.end - f.range.start) as usize])
            .collect();
        let mut jobs = Vec::new();
        for (k, (fetch, buf)) in fetches.iter().zip(bufs.iter_mut()).enumerate() {
            let url = files[fetch.file].0;
            let chunks = split_aligned(
                fetch.range.start,
                fetch.range.end,
                self.config.page_size,
                self.config.max_chunk,
            );
            for job in carve(
                url,
                None,
                &prefs[fetch.file],
                fetch.range.start,
                buf,
                chunks,
            ) {
                jobs.push((k, job));
            }
        }
        let results = self.fetch_all(jobs, false).await;
        let mut per_fetch: Vec<Vec<ChunkOutcome>> = vec![Vec::new(); fetches.len()];
        let mut file_err: Vec<Option<Error>> = (0..files.len()).map(|_| None).collect();
        for (k, r) in results {
            match r {
                Ok(o) => per_fetch[k].push(o),
                Err(e) => {
                    file_err[fetches[k].file].get_or_insert(e);
                }
            }
        }
        let fetched: Vec<(Bytes, ReadOutcome)> = bufs
            .into_iter()
            .zip(per_fetch)
            .zip(&fetches)
            .map(|((buf, outs), f)| {
                let out = assemble(f.range.start, f.range.end - f.range.start, outs);
                (Bytes::from(buf), out)
            })
            .collect();
        // Slice each input back out.
        reqs.iter()
            .enumerate()
            .map(|(i, (_, start, end))| {
                if start >= end {
                    return Ok(RangeResult::default());
                }
                let k = fetch_of_req[i];
                if let Some(e) = &file_err[fetches[k].file] {
                    return Err(e.clone());
                }
                let (bytes, out) = &fetched[k];
                let base = fetches[k].range.start;
                let covered_end = base + out.filled as u64;
                let s = (*start).min(covered_end);
                let e = (*end).min(covered_end);
                let holes: Vec<Range<u64>> = out
                    .holes
                    .iter()
                    .filter_map(|h| {
                        let r = h.start.max(s)..h.end.min(e);
                        (r.start < r.end).then_some(r)
                    })
                    .collect();
                Ok(RangeResult {
                    data: bytes.slice((s - base) as usize..(e - base) as usize),
                    fault: (!holes.is_empty()).then(|| out.fault.clone()).flatten(),
                    holes,
                })
            })
            .collect()
    }
}

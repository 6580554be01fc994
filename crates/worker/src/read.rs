//! Read-through: pages from the cache, missing runs from the UFS.
//!
//! Design:
//! - A read names a file *version* ([`ObjectVersion`]); every page key
//!   includes it, and every UFS GET is checked against it, so bytes of two
//!   versions never mix.
//! - A range is cut into pages. Each page is either *cached* (read and
//!   verified from the store) or *missing*; adjacent missing pages form a
//!   run fetched with one page-aligned ranged GET (runs are capped at
//!   [`MAX_RUN_BYTES`] so a huge range still streams with bounded memory).
//! - **Single flight.** Missing pages are registered in an in-flight map
//!   keyed by page before any request is sent; a second reader of the same
//!   page awaits the first reader's fetch (a shared future) instead of
//!   asking the UFS again. The fetch runs in its own task, so it finishes
//!   and fills the cache even if the reader that started it goes away.
//! - **Streaming.** Segments (a cached page or a missing run) are loaded in
//!   order with at most [`READ_AHEAD`] in flight and sent as they arrive;
//!   the first segment is loaded before the answer starts, so the common
//!   small read still gets a real status (404, 412) when something fails.

use crate::app::AppState;
use crate::error::{Result, WorkerError};
use crate::meta::CachedInfo;
use crate::metrics::Metrics;
use crate::store::PageKey;
use crate::ufs::ObjectVersion;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, BoxStream, StreamExt};
use std::ops::Range;
use std::sync::Arc;

/// Largest UFS GET of one run of missing pages.
pub const MAX_RUN_BYTES: u64 = 8 << 20;
/// Segments loaded ahead of the one being sent.
pub const READ_AHEAD: usize = 4;

type SharedErr = Arc<WorkerError>;
/// A page being fetched, awaited by every reader that needs it.
pub(crate) type SharedPage = Shared<BoxFuture<'static, std::result::Result<Bytes, SharedErr>>>;
/// A metadata lookup in flight, awaited by every request that needs it.
pub(crate) type SharedInfo = Shared<BoxFuture<'static, std::result::Result<CachedInfo, SharedErr>>>;

/// One piece of a range plan.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Cached(u64),
    Missing(Range<u64>),
}

fn share(e: SharedErr) -> WorkerError {
    WorkerError::Shared(e)
}

impl AppState {
    fn page_key(&self, v: &ObjectVersion, index: u64) -> PageKey {
        PageKey::new(v.url.clone(), v.version.clone(), index)
    }

    /// Bytes of page `index` of `v` (the last page may be short).
    pub fn page_len(&self, v: &ObjectVersion, index: u64) -> u64 {
        let p = self.store.page_size();
        match index.checked_mul(p) {
            Some(start) => v.size.saturating_sub(start).min(p),
            None => 0,
        }
    }

    /// Metadata of `url`, from the cache unless `fresh` or expired.
    /// Concurrent misses of one URL share one UFS lookup (a `fresh` lookup,
    /// made after a change was detected, never joins an older one).
    pub async fn lookup_info(self: &Arc<Self>, url: &str, fresh: bool) -> Result<CachedInfo> {
        if fresh {
            Metrics::add(&self.metrics.metadata_misses, 1);
            return self.fetch_info(url).await;
        }
        if let Some(c) = self.meta.info(url) {
            Metrics::add(&self.metrics.metadata_hits, 1);
            return Ok(c);
        }
        Metrics::add(&self.metrics.metadata_misses, 1);
        let lookup = {
            let mut inflight = self.meta_inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(url) {
                Some(f) => f.clone(),
                None => {
                    let state = self.clone();
                    let u = url.to_string();
                    let f = async move {
                        let r = state.fetch_info(&u).await;
                        state
                            .meta_inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&u);
                        r.map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    inflight.insert(url.to_string(), f.clone());
                    f
                }
            }
        };
        lookup.await.map_err(share)
    }

    /// Ask the UFS for the metadata of `url` and cache it. A new version
    /// drops the pages of older ones.
    async fn fetch_info(&self, url: &str) -> Result<CachedInfo> {
        let (info, version) = self.ufs.info(url).await?;
        if let Some(v) = &version {
            let store = self.store.clone();
            let (u, keep) = (v.url.clone(), v.version.clone());
            // Best effort, off the request path.
            tokio::task::spawn_blocking(move || {
                let n = store.remove_url(&u, Some(&keep));
                if n > 0 {
                    tracing::info!(url = %u, pages = n, "dropped pages of an older version");
                }
            });
        }
        let cached = CachedInfo { info, version };
        self.meta.put_info(url, cached.clone());
        Ok(cached)
    }

    /// The version of `url` to read: `pinned` when given (412 when the
    /// object no longer has it), else the current one.
    pub async fn file_version(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
    ) -> Result<ObjectVersion> {
        let mut cached = self.lookup_info(url, false).await?;
        if let Some(p) = pinned {
            if cached.version.as_ref().is_some_and(|v| v.version != p) {
                cached = self.lookup_info(url, true).await?;
            }
        }
        let v = cached.version.ok_or_else(|| WorkerError::IsADirectory {
            path: url.to_string(),
        })?;
        if let Some(p) = pinned {
            if v.version != p {
                return Err(WorkerError::Changed {
                    path: url.to_string(),
                    expected: p.to_string(),
                    found: v.version,
                });
            }
        }
        Ok(v)
    }

    /// After a read found the object changed: refresh its metadata and
    /// return the new version (or 412 when the caller pinned one).
    pub async fn refresh_after_change(
        self: &Arc<Self>,
        url: &str,
        pinned: Option<&str>,
        err: WorkerError,
    ) -> Result<ObjectVersion> {
        tracing::info!(url, "object changed while reading: {err}");
        self.meta.invalidate(url, false);
        let cached = self.lookup_info(url, true).await?;
        let v = cached.version.ok_or_else(|| WorkerError::not_found(url))?;
        match pinned {
            Some(p) if v.version != p => Err(WorkerError::Changed {
                path: url.to_string(),
                expected: p.to_string(),
                found: v.version,
            }),
            _ => Ok(v),
        }
    }

    /// Page `index` of `v`: from the cache, else read through.
    pub async fn read_page(self: &Arc<Self>, v: &ObjectVersion, index: u64) -> Result<Bytes> {
        let mut pages = self.load_segment(v, Segment::Cached(index)).await?;
        pages
            .pop()
            .ok_or_else(|| WorkerError::Internal("empty page fetch".into()))
    }

    async fn load_segment(self: &Arc<Self>, v: &ObjectVersion, seg: Segment) -> Result<Vec<Bytes>> {
        match seg {
            Segment::Cached(i) => match self.get_cached(v, i).await? {
                Some(b) => Ok(vec![b]),
                None => self.fetch_pages(v, i..i + 1).await,
            },
            Segment::Missing(r) => self.fetch_pages(v, r).await,
        }
    }

    /// Fetch pages `range` of `v`, joining fetches already in flight and
    /// starting one GET per run of pages nobody is fetching yet.
    async fn fetch_pages(
        self: &Arc<Self>,
        v: &ObjectVersion,
        range: Range<u64>,
    ) -> Result<Vec<Bytes>> {
        enum Slot {
            Wait(SharedPage),
            Cached(u64),
            Lead(u64),
        }
        let mut slots: Vec<Slot> = Vec::with_capacity((range.end - range.start) as usize);
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let mut lead: Option<u64> = None;
            let mut runs: Vec<Range<u64>> = Vec::new();
            for i in range.clone() {
                let key = self.page_key(v, i);
                if let Some(f) = inflight.get(&key) {
                    Metrics::add(&self.metrics.coalesced_pages, 1);
                    slots.push(Slot::Wait(f.clone()));
                } else if self.store.contains(&key) {
                    // Stored by a fetch that finished since the range was planned.
                    slots.push(Slot::Cached(i));
                } else {
                    lead.get_or_insert(i);
                    slots.push(Slot::Lead(i));
                    continue;
                }
                if let Some(s) = lead.take() {
                    runs.push(s..i);
                }
            }
            if let Some(s) = lead {
                runs.push(s..range.end);
            }
            for run in runs {
                self.start_run(&mut inflight, v, run);
            }
            for slot in slots.iter_mut() {
                if let Slot::Lead(i) = *slot {
                    let f = inflight.get(&self.page_key(v, i)).ok_or_else(|| {
                        WorkerError::Internal(format!("page {i} of {} lost in flight", v.url))
                    })?;
                    *slot = Slot::Wait(f.clone());
                }
            }
        }
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let page = match slot {
                Slot::Wait(f) => f.await.map_err(share)?,
                Slot::Cached(i) => match self.get_cached(v, i).await? {
                    Some(b) => b,
                    None => self.join_or_start(v, i).await.map_err(share)?,
                },
                Slot::Lead(_) => return Err(WorkerError::Internal("unassigned page".into())),
            };
            out.push(page);
        }
        Ok(out)
    }

    /// Page `i` of `v` from the store (verified), counting a hit.
    async fn get_cached(&self, v: &ObjectVersion, i: u64) -> Result<Option<Bytes>> {
        let key = self.page_key(v, i);
        let got = match self.store.get_memory(&key) {
            Some(b) => Some(b),
            None => {
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.get(&key))
                    .await
                    .map_err(|e| WorkerError::Internal(format!("page read task: {e}")))?
            }
        };
        match got {
            Some(b) if b.len() as u64 == self.page_len(v, i) => {
                Metrics::add(&self.metrics.cache_hits, 1);
                Ok(Some(b))
            }
            Some(b) => Err(WorkerError::Internal(format!(
                "{}: cached page {i} has {} bytes, expected {}",
                v.url,
                b.len(),
                self.page_len(v, i)
            ))),
            None => Ok(None),
        }
    }

    /// Join the fetch of page `i` in flight, or start one.
    fn join_or_start(self: &Arc<Self>, v: &ObjectVersion, i: u64) -> SharedPage {
        let key = self.page_key(v, i);
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = inflight.get(&key) {
            Metrics::add(&self.metrics.coalesced_pages, 1);
            return f.clone();
        }
        self.start_run(&mut inflight, v, i..i + 1);
        match inflight.get(&key) {
            Some(f) => f.clone(),
            None => futures::future::ready(Err(Arc::new(WorkerError::Internal(
                "page lost in flight".into(),
            ))))
            .boxed()
            .shared(),
        }
    }

    /// Register `run` in the in-flight map and spawn its fetch.
    fn start_run(
        self: &Arc<Self>,
        inflight: &mut std::collections::HashMap<PageKey, SharedPage>,
        v: &ObjectVersion,
        run: Range<u64>,
    ) {
        let state = self.clone();
        let version = v.clone();
        let r = run.clone();
        let handle = tokio::spawn(async move {
            let result = state.fetch_run(&version, r.clone()).await;
            let mut inflight = state.inflight.lock().unwrap_or_else(|p| p.into_inner());
            for i in r {
                inflight.remove(&state.page_key(&version, i));
            }
            result.map(Arc::new).map_err(Arc::new)
        });
        let whole = async move {
            match handle.await {
                Ok(r) => r,
                Err(e) => Err(Arc::new(WorkerError::Internal(format!(
                    "page fetch task: {e}"
                )))),
            }
        }
        .boxed()
        .shared();
        for i in run.clone() {
            let at = (i - run.start) as usize;
            let page = whole
                .clone()
                .map(move |r| {
                    r.and_then(|pages| {
                        pages.get(at).cloned().ok_or_else(|| {
                            Arc::new(WorkerError::Internal("page missing from run".into()))
                        })
                    })
                })
                .boxed()
                .shared();
            inflight.insert(self.page_key(v, i), page);
        }
    }

    /// One ranged GET for pages `run` of `v`; stores the pages.
    async fn fetch_run(&self, v: &ObjectVersion, run: Range<u64>) -> Result<Vec<Bytes>> {
        let p = self.store.page_size();
        let start = run.start * p;
        let end = (run.end * p).min(v.size);
        if start >= end {
            return Ok(Vec::new());
        }
        tracing::debug!(url = %v.url, pages = ?run, bytes = end - start, "UFS read");
        let data = self.ufs.read(v, start..end).await?;
        let n = run.end - run.start;
        Metrics::add(&self.metrics.cache_misses, n);
        let pages: Vec<Bytes> = (0..n)
            .map(|k| {
                let s = (k * p) as usize;
                let e = ((k + 1) * p).min(end - start) as usize;
                data.slice(s..e)
            })
            .collect();
        let store = self.store.clone();
        let keys: Vec<PageKey> = run.map(|i| self.page_key(v, i)).collect();
        let to_store = pages.clone();
        let stored = tokio::task::spawn_blocking(move || {
            for (k, d) in keys.iter().zip(&to_store) {
                if let Err(e) = store.put(k, d) {
                    tracing::warn!("page not cached: {e}");
                }
            }
        })
        .await;
        if let Err(e) = stored {
            tracing::warn!("page store task failed: {e}");
        }
        Ok(pages)
    }

    /// Plan `range` (non-empty, inside the file) as segments.
    fn plan(&self, v: &ObjectVersion, range: &Range<u64>) -> Vec<Segment> {
        let p = self.store.page_size();
        let first = range.start / p;
        let last = (range.end - 1) / p;
        let max_run = (MAX_RUN_BYTES / p).max(1);
        let mut out = Vec::new();
        let mut run: Option<u64> = None;
        for i in first..=last {
            let cached = self.store.contains(&self.page_key(v, i));
            match (cached, run) {
                (true, Some(s)) => {
                    out.push(Segment::Missing(s..i));
                    run = None;
                    out.push(Segment::Cached(i));
                }
                (true, None) => out.push(Segment::Cached(i)),
                (false, Some(s)) if i - s >= max_run => {
                    out.push(Segment::Missing(s..i));
                    run = Some(i);
                }
                (false, Some(_)) => {}
                (false, None) => run = Some(i),
            }
        }
        if let Some(s) = run {
            out.push(Segment::Missing(s..last + 1));
        }
        out
    }

    /// Stream bytes `range` of `v` (already cut to the file size). The first
    /// segment is loaded before this returns, so its errors come back here.
    pub async fn read_range(
        self: &Arc<Self>,
        v: &ObjectVersion,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        if range.is_empty() {
            return Ok(stream::empty().boxed());
        }
        let p = self.store.page_size();
        let segments = self.plan(v, &range);
        let state = self.clone();
        let version = v.clone();
        let mut loads = stream::iter(segments)
            .map(move |seg| {
                let state = state.clone();
                let version = version.clone();
                let first = match &seg {
                    Segment::Cached(i) => *i,
                    Segment::Missing(r) => r.start,
                };
                async move { (first, state.load_segment(&version, seg).await) }
            })
            .buffered(READ_AHEAD);
        let head = loads
            .next()
            .await
            .ok_or_else(|| WorkerError::Internal("empty range plan".into()))?;
        let (first_index, first_pages) = (head.0, head.1?);
        let metrics = self.metrics.clone();
        let head_slices = slice_pages(&range, p, first_index, first_pages, &metrics);
        let rest = loads.flat_map(move |(first, r)| match r {
            Ok(pages) => stream::iter(slice_pages(&range, p, first, pages, &metrics)).boxed(),
            Err(e) => {
                tracing::warn!("range stream aborted: {e}");
                stream::once(async move { Err(e) }).boxed()
            }
        });
        Ok(stream::iter(head_slices).chain(rest).boxed())
    }
}

/// Cut pages `first..` down to the parts inside `range`.
fn slice_pages(
    range: &Range<u64>,
    page_size: u64,
    first: u64,
    pages: Vec<Bytes>,
    metrics: &Metrics,
) -> Vec<Result<Bytes>> {
    let mut out = Vec::with_capacity(pages.len());
    for (k, page) in pages.into_iter().enumerate() {
        let page_start = (first + k as u64) * page_size;
        let s = range.start.max(page_start) - page_start;
        let e = range.end.min(page_start + page.len() as u64);
        if e > page_start + s {
            let e = e - page_start;
            Metrics::add(&metrics.bytes_served, e - s);
            out.push(Ok(page.slice(s as usize..e as usize)));
        }
    }
    out
}

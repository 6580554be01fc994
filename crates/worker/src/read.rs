//! Page read-through: pages of a known version from the cache, missing runs
//! from the UFS. Knows nothing of metadata (which version to read is the
//! caller's question, see [`crate::cache`]) nor of HTTP.
//!
//! Design:
//! - A read names a file *version* ([`ObjectVersion`]); every page key
//!   includes it, and every UFS GET is checked against it, so bytes of two
//!   versions never mix.
//! - **One key per page.** A page's [`PageKey`] is built once, when the
//!   read is planned, and passed down to every store and in-flight lookup
//!   of that page (the key is what the store hashes).
//! - A range is cut into pages. Each page is *ready* (taken from the memory
//!   tier while planning, the one store probe a warm page costs), *cached*
//!   (on disk: read and verified on the blocking pool) or *missing*;
//!   adjacent missing pages form a run fetched with one page-aligned ranged
//!   GET (runs are capped at [`MAX_RUN_BYTES`] so a huge range still streams
//!   with bounded memory). Ready pages are reference-counted slices of the
//!   memory tier, not copies.
//! - **Single flight.** Missing pages are registered in an in-flight map
//!   keyed by page before any request is sent; a second reader of the same
//!   page awaits the first reader's fetch (a shared future) instead of
//!   asking the UFS again. The fetch runs in its own task, so it finishes
//!   and fills the cache even if the reader that started it goes away.
//! - **Streaming.** Segments (a cached page or a missing run) are loaded in
//!   order with at most [`READ_AHEAD`] in flight and sent as they arrive;
//!   the first segment is loaded before the answer starts, so the common
//!   small read still gets a real status (404, 412) when something fails.

use crate::error::{Result, WorkerError};
use crate::metrics::Metrics;
use crate::store::{PageKey, PageStore};
use crate::ufs::{ObjectVersion, Ufs};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Largest UFS GET of one run of missing pages.
pub const MAX_RUN_BYTES: u64 = 8 << 20;
/// Segments loaded ahead of the one being sent.
pub const READ_AHEAD: usize = 4;

/// An error shared by every reader waiting on the same fetch.
pub(crate) type SharedErr = Arc<WorkerError>;
/// A page being fetched, awaited by every reader that needs it.
type SharedPage = Shared<BoxFuture<'static, std::result::Result<Bytes, SharedErr>>>;

/// One piece of a range plan.
#[derive(Debug, Clone)]
enum Segment {
    /// Page `.0` (key `.1`), taken from the memory tier while planning.
    Ready(u64, PageKey, Bytes),
    /// Page `.0`, held on disk.
    Cached(u64, PageKey),
    /// Pages not in the cache, with their keys.
    Missing(Range<u64>, Vec<PageKey>),
}

pub(crate) fn share(e: SharedErr) -> WorkerError {
    WorkerError::Shared(e)
}

/// Reads pages of object versions through the page store.
#[derive(Debug)]
pub struct PageReader {
    ufs: Arc<Ufs>,
    store: Arc<PageStore>,
    metrics: Arc<Metrics>,
    page_size: u64,
    inflight: Mutex<HashMap<PageKey, SharedPage>>,
    /// How the next servings of pages a cold lookup stored are counted
    /// (see [`Owed`]). Bounded by [`MAX_OWED`].
    owed: Mutex<HashMap<PageKey, Owed>>,
}

/// The counting owed for a page a cold lookup stored: it was read from the
/// UFS once (its first serving is that miss, not a hit), and the requests
/// that waited on that lookup serve it as coalesced, as if they had waited
/// on a page fetch. Later servings are hits.
#[derive(Debug, Clone, Copy)]
struct Owed {
    miss: bool,
    coalesced: u64,
}

/// Bound of [`PageReader`]'s owed counts (pages stored but never served,
/// say evicted first, would otherwise pile up); past it they are cleared.
const MAX_OWED: usize = 100_000;

impl PageReader {
    /// A reader over `store`, fetching misses from `ufs`.
    pub fn new(ufs: Arc<Ufs>, store: Arc<PageStore>, metrics: Arc<Metrics>) -> Self {
        PageReader {
            page_size: store.page_size(),
            ufs,
            store,
            metrics,
            inflight: Mutex::new(HashMap::new()),
            owed: Mutex::new(HashMap::new()),
        }
    }

    /// The key of page `index` of `v`, hashed here once: every store and
    /// in-flight lookup of this page reuses it.
    fn key(&self, v: &ObjectVersion, index: u64) -> PageKey {
        self.store.key(v.url.clone(), v.version.clone(), index)
    }

    /// Bytes of page `index` of `v` (the last page may be short, pages past
    /// the end are empty).
    pub fn page_len(&self, v: &ObjectVersion, index: u64) -> u64 {
        let p = self.page_size;
        match index.checked_mul(p) {
            Some(start) => v.size.saturating_sub(start).min(p),
            None => 0,
        }
    }

    /// Page `index` of `v`: from the cache, else read through. Past the end
    /// of the file: empty.
    pub async fn read_page(self: &Arc<Self>, v: &ObjectVersion, index: u64) -> Result<Bytes> {
        if self.page_len(v, index) == 0 {
            return Ok(Bytes::new());
        }
        let key = self.key(v, index);
        if let Some(b) = self.get_cached(v, index, &key).await? {
            return Ok(b);
        }
        let mut pages = self.fetch_pages(v, index, vec![key]).await?;
        pages
            .pop()
            .ok_or_else(|| WorkerError::Internal("empty page fetch".into()))
    }

    async fn load_segment(self: &Arc<Self>, v: &ObjectVersion, seg: Segment) -> Result<Vec<Bytes>> {
        match seg {
            Segment::Ready(i, key, b) => Ok(vec![self.counted(v, i, &key, b)?]),
            Segment::Cached(i, key) => match self.get_disk(v, i, &key).await? {
                Some(b) => Ok(vec![b]),
                None => self.fetch_pages(v, i, vec![key]).await,
            },
            Segment::Missing(r, keys) => self.fetch_pages(v, r.start, keys).await,
        }
    }

    /// Fetch the pages `first..` whose keys are `keys`, joining fetches
    /// already in flight and starting one GET per run of pages nobody is
    /// fetching yet.
    async fn fetch_pages(
        self: &Arc<Self>,
        v: &ObjectVersion,
        first: u64,
        keys: Vec<PageKey>,
    ) -> Result<Vec<Bytes>> {
        enum Slot {
            Wait(SharedPage),
            Cached,
            Lead,
        }
        let mut slots: Vec<Slot> = Vec::with_capacity(keys.len());
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let mut lead: Option<usize> = None;
            let mut runs: Vec<Range<usize>> = Vec::new();
            for (k, key) in keys.iter().enumerate() {
                if let Some(f) = inflight.get(key) {
                    Metrics::add(&self.metrics.coalesced_pages, 1);
                    slots.push(Slot::Wait(f.clone()));
                } else if self.store.contains(key) {
                    // Stored by a fetch that finished since the range was planned.
                    slots.push(Slot::Cached);
                } else {
                    lead.get_or_insert(k);
                    slots.push(Slot::Lead);
                    continue;
                }
                if let Some(s) = lead.take() {
                    runs.push(s..k);
                }
            }
            if let Some(s) = lead {
                runs.push(s..keys.len());
            }
            for run in runs {
                let start = first + run.start as u64;
                self.start_run(&mut inflight, v, start, keys[run].to_vec());
            }
            for (slot, key) in slots.iter_mut().zip(&keys) {
                if let Slot::Lead = *slot {
                    let f = inflight.get(key).ok_or_else(|| {
                        WorkerError::Internal(format!(
                            "page {} of {} lost in flight",
                            key.index(),
                            v.url
                        ))
                    })?;
                    *slot = Slot::Wait(f.clone());
                }
            }
        }
        let mut out = Vec::with_capacity(slots.len());
        for (k, (slot, key)) in slots.into_iter().zip(&keys).enumerate() {
            let i = first + k as u64;
            let page = match slot {
                Slot::Wait(f) => f.await.map_err(share)?,
                Slot::Cached => match self.get_cached(v, i, key).await? {
                    Some(b) => b,
                    None => self.join_or_start(v, i, key).await.map_err(share)?,
                },
                Slot::Lead => return Err(WorkerError::Internal("unassigned page".into())),
            };
            out.push(page);
        }
        Ok(out)
    }

    /// Page `i` of `v` from the store (memory tier first, then disk,
    /// verified), counting a hit.
    async fn get_cached(&self, v: &ObjectVersion, i: u64, key: &PageKey) -> Result<Option<Bytes>> {
        match self.store.get_memory(key) {
            Some(b) => self.counted(v, i, key, b).map(Some),
            None => self.get_disk(v, i, key).await,
        }
    }

    /// Page `i` of `v` from the store on the blocking pool (the memory tier
    /// was tried already, `get` looks there again first), counting a hit.
    async fn get_disk(&self, v: &ObjectVersion, i: u64, key: &PageKey) -> Result<Option<Bytes>> {
        let store = self.store.clone();
        let owned = key.clone();
        let got = tokio::task::spawn_blocking(move || store.get(&owned))
            .await
            .map_err(|e| WorkerError::Internal(format!("page read task: {e}")))?;
        got.map(|b| self.counted(v, i, key, b)).transpose()
    }

    /// A cached page `b` of page `i` of `v` (key `key`), checked for its
    /// length and counted as a hit; the first serving of a page a cold
    /// lookup stored counts as the miss it is (see [`Self::store_fetched`]).
    fn counted(&self, v: &ObjectVersion, i: u64, key: &PageKey, b: Bytes) -> Result<Bytes> {
        let expected = self.page_len(v, i);
        if b.len() as u64 == expected {
            let m = &self.metrics;
            let counter = {
                let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
                match owed.get_mut(key) {
                    None => &m.cache_hits,
                    Some(o) => {
                        let counter = if o.miss {
                            o.miss = false;
                            &m.cache_misses
                        } else if o.coalesced > 0 {
                            o.coalesced -= 1;
                            &m.coalesced_pages
                        } else {
                            &m.cache_hits
                        };
                        if !o.miss && o.coalesced == 0 {
                            owed.remove(key);
                        }
                        counter
                    }
                }
            };
            Metrics::add(counter, 1);
            Ok(b)
        } else {
            Err(WorkerError::Internal(format!(
                "{}: cached page {i} has {} bytes, expected {expected}",
                v.url,
                b.len(),
            )))
        }
    }

    /// Join the fetch of page `i` (key `key`) in flight, or start one.
    fn join_or_start(self: &Arc<Self>, v: &ObjectVersion, i: u64, key: &PageKey) -> SharedPage {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = inflight.get(key) {
            Metrics::add(&self.metrics.coalesced_pages, 1);
            return f.clone();
        }
        self.start_run(&mut inflight, v, i, vec![key.clone()]);
        match inflight.get(key) {
            Some(f) => f.clone(),
            None => futures::future::ready(Err(Arc::new(WorkerError::Internal(
                "page lost in flight".into(),
            ))))
            .boxed()
            .shared(),
        }
    }

    /// Register the run of pages `first..` with keys `keys` in the
    /// in-flight map and spawn its fetch.
    fn start_run(
        self: &Arc<Self>,
        inflight: &mut HashMap<PageKey, SharedPage>,
        v: &ObjectVersion,
        first: u64,
        keys: Vec<PageKey>,
    ) {
        let reader = self.clone();
        let version = v.clone();
        let run = first..first + keys.len() as u64;
        let task_keys = keys.clone();
        let handle = tokio::spawn(async move {
            let result = reader.fetch_run(&version, run, &task_keys).await;
            let mut inflight = reader.inflight.lock().unwrap_or_else(|p| p.into_inner());
            for k in &task_keys {
                inflight.remove(k);
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
        for (at, key) in keys.into_iter().enumerate() {
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
            inflight.insert(key, page);
        }
    }

    /// One ranged GET for pages `run` of `v` (keys `keys`); stores the pages.
    async fn fetch_run(
        &self,
        v: &ObjectVersion,
        run: Range<u64>,
        keys: &[PageKey],
    ) -> Result<Vec<Bytes>> {
        let p = self.page_size;
        let start = run.start * p;
        let end = (run.end * p).min(v.size);
        if start >= end {
            return Ok(Vec::new());
        }
        tracing::debug!(url = %v.url, pages = ?run, bytes = end - start, "UFS read");
        let data = self.ufs.read(v, start..end).await?;
        let pages = self.cut(v, run.start, &data);
        if pages.len() as u64 != run.end - run.start {
            return Err(WorkerError::Internal(format!(
                "{}: read of pages {run:?} cut into {} pages",
                v.url,
                pages.len()
            )));
        }
        self.put_pages(keys.to_vec(), pages.clone()).await;
        Ok(pages)
    }

    /// Cut `data`, the bytes of `v` from the start of page `first`, into
    /// pages: whole pages, and a short last one only where it ends the file
    /// (a partial page elsewhere is dropped, never stored).
    fn cut(&self, v: &ObjectVersion, first: u64, data: &Bytes) -> Vec<Bytes> {
        let mut pages = Vec::new();
        let mut at = 0u64;
        let mut index = first;
        while at < data.len() as u64 {
            let len = self.page_len(v, index);
            if len == 0 || at + len > data.len() as u64 {
                break;
            }
            pages.push(data.slice(at as usize..(at + len) as usize));
            at += len;
            index += 1;
        }
        pages
    }

    /// Store `pages` under `keys` on the blocking pool, counting them as
    /// misses (each came from the UFS). Best effort: a page the store
    /// refuses is only read again later.
    async fn put_pages(&self, keys: Vec<PageKey>, pages: Vec<Bytes>) {
        Metrics::add(&self.metrics.cache_misses, pages.len() as u64);
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || {
            for (k, d) in keys.iter().zip(&pages) {
                if let Err(e) = store.put(k, d) {
                    not_cached(&e);
                }
            }
        })
        .await;
        if let Err(e) = stored {
            tracing::warn!("page store task failed: {e}");
        }
    }

    /// Store bytes of `v` that a metadata lookup already fetched (the cold
    /// GET of [`Ufs::info_and_read`]): `data` starts at byte `start`, a page
    /// boundary. Pages not whole are dropped. Returns the keys stored.
    ///
    /// The read that follows finds them cached; so that each page from the
    /// UFS still counts as one miss and no hit, the first serving of each
    /// stored page is counted as the miss (`Owed`).
    pub async fn store_fetched(&self, v: &ObjectVersion, start: u64, data: &Bytes) -> Vec<PageKey> {
        let p = self.page_size;
        if data.is_empty() || !start.is_multiple_of(p) {
            return Vec::new();
        }
        let first = start / p;
        let pages = self.cut(v, first, data);
        let keys: Vec<PageKey> = (first..first + pages.len() as u64)
            .map(|i| self.key(v, i))
            .collect();
        {
            // Before the pages are visible, so no serving is missed.
            let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
            if owed.len() + keys.len() > MAX_OWED {
                owed.clear();
            }
            let first_miss = Owed {
                miss: true,
                coalesced: 0,
            };
            owed.extend(keys.iter().map(|k| (k.clone(), first_miss)));
        }
        let store = self.store.clone();
        let all = keys.clone();
        let stored = tokio::task::spawn_blocking(move || {
            keys.into_iter()
                .zip(&pages)
                .filter(|(k, d)| match store.put(k, d) {
                    Ok(stored) => !stored,
                    Err(e) => {
                        not_cached(&e);
                        true
                    }
                })
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        })
        .await;
        let refused = stored.unwrap_or_else(|e| {
            tracing::warn!("page store task failed: {e}");
            all.clone()
        });
        // A page not stored (refused, or there already) was still read
        // from the UFS: its miss is counted now, not at a serving.
        let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
        for k in &refused {
            owed.remove(k);
        }
        Metrics::add(&self.metrics.cache_misses, refused.len() as u64);
        all.into_iter().filter(|k| !refused.contains(k)).collect()
    }

    /// `waiters` requests waited on the cold lookup that stored `keys`:
    /// each serving of these pages by one of them counts as coalesced.
    pub fn owe_coalesced(&self, keys: &[PageKey], waiters: u64) {
        if waiters == 0 {
            return;
        }
        let mut owed = self.owed.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if let Some(o) = owed.get_mut(k) {
                o.coalesced += waiters;
            }
        }
    }

    /// Plan `range` (non-empty, inside the file) as segments, building each
    /// page's key once.
    fn plan(&self, v: &ObjectVersion, range: &Range<u64>) -> Vec<Segment> {
        let p = self.page_size;
        let first = range.start / p;
        let last = (range.end - 1) / p;
        let max_run = (MAX_RUN_BYTES / p).max(1);
        let mut out = Vec::new();
        let mut run: Option<(u64, Vec<PageKey>)> = None;
        for i in first..=last {
            let key = self.key(v, i);
            let held = match self.store.get_memory(&key) {
                Some(b) => Some(Segment::Ready(i, key, b)),
                None if self.store.contains(&key) => Some(Segment::Cached(i, key)),
                None => {
                    match run.take() {
                        Some((s, keys)) if i - s >= max_run => {
                            out.push(Segment::Missing(s..i, keys));
                            run = Some((i, vec![key]));
                        }
                        Some((s, mut keys)) => {
                            keys.push(key);
                            run = Some((s, keys));
                        }
                        None => run = Some((i, vec![key])),
                    }
                    None
                }
            };
            if let Some(seg) = held {
                if let Some((s, keys)) = run.take() {
                    out.push(Segment::Missing(s..i, keys));
                }
                out.push(seg);
            }
        }
        if let Some((s, keys)) = run {
            out.push(Segment::Missing(s..last + 1, keys));
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
        let p = self.page_size;
        let segments = self.plan(v, &range);
        let reader = self.clone();
        let version = v.clone();
        let mut loads = stream::iter(segments)
            .map(move |seg| {
                let reader = reader.clone();
                let version = version.clone();
                let first = match &seg {
                    Segment::Ready(i, _, _) | Segment::Cached(i, _) => *i,
                    Segment::Missing(r, _) => r.start,
                };
                async move { (first, reader.load_segment(&version, seg).await) }
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
/// Log a page the store could not keep: the first at warn level, then at
/// most one warning per [`NOT_CACHED_EVERY`] with how many went unlogged
/// (a full disk fails every page written, and a line per page drowned the
/// log: 61,275 lines in 10 minutes of the soak). Every one is counted in
/// `alluxiofs_cache_write_errors_total` and logged at debug level.
fn not_cached(e: &crate::error::WorkerError) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1;
    let last = LAST_MS.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= NOT_CACHED_EVERY.as_millis() as u64;
    if due
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        match QUIET.swap(0, Ordering::Relaxed) {
            0 => tracing::warn!("page not cached: {e}"),
            n => tracing::warn!("page not cached: {e} (and {n} more since the last such line)"),
        }
    } else {
        QUIET.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("page not cached: {e}");
    }
}

/// At most one "page not cached" warning per this interval.
const NOT_CACHED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

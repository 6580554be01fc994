//! Counter history for per-job reports (what `GET /v1/stats?since=<unix
//! seconds>` answers, see `routes/stats.rs`).
//!
//! Design:
//! - A sampler task snapshots the worker's counters every
//!   [`SAMPLE_INTERVAL`] and keeps the last [`MAX_SAMPLES`] snapshots (24 h
//!   at the regular rate). Each `/v1/stats` request also takes a snapshot
//!   when the newest one is at least [`MIN_GAP`] old, so a job that asks
//!   for the stats at its start and again at its end gets exact deltas.
//! - The answer for `since` is *now* minus the newest snapshot taken at or
//!   before `since` (the first snapshot, taken when the worker started,
//!   when `since` is older than the history). The baseline's time is
//!   returned as `from`, so a caller sees how much earlier than `since`
//!   the window really begins.
//! - "Saved" numbers are what the cache spared the UFS: `bytes_saved` is
//!   bytes served minus bytes read from the UFS, `ufs_requests_saved` is
//!   data requests answered minus UFS GETs (both at least zero).

use crate::metrics::{Metrics, UfsOp};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time between regular snapshots.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Snapshots kept (24 h of regular ones).
pub const MAX_SAMPLES: usize = 8640;
/// A `/v1/stats` request adds a snapshot when the newest is at least this old.
pub const MIN_GAP: Duration = Duration::from_secs(1);

/// Data endpoints counted as "data requests" (the route patterns).
const DATA_ENDPOINTS: [&str; 2] = ["/v1/range/{path_id}", "/v1/file/{path_id}/page/{index}"];

/// The counters of one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Pages served from the cache.
    pub hits: u64,
    /// Pages read from the UFS.
    pub misses: u64,
    /// Pages served from the memory tier.
    pub memory_hits: u64,
    /// Body bytes of range and page answers.
    pub bytes_served: u64,
    /// Range and page requests answered with 200.
    pub data_requests: u64,
    /// UFS data GETs.
    pub ufs_get_requests: u64,
    /// UFS requests of all kinds (GET, HEAD, LIST).
    pub ufs_requests: u64,
    /// Bytes read from the UFS.
    pub ufs_bytes: u64,
    /// Files written through this worker (`/v1/write`).
    pub writes: u64,
    /// Bytes written through this worker.
    pub write_bytes: u64,
    /// Pages of written files stored in the cache.
    pub write_pages_cached: u64,
    /// UFS outages begun ([`crate::outage`]).
    pub ufs_outages: u64,
    /// UFS requests answered at once with `ufs_unreachable` in an outage.
    pub ufs_fail_fast: u64,
    /// Lookups answered with the last verified metadata while the UFS was
    /// unreachable (`stale_if_error`).
    pub stale_served: u64,
}

impl Counters {
    fn minus(&self, o: &Counters) -> Counters {
        Counters {
            hits: self.hits.saturating_sub(o.hits),
            misses: self.misses.saturating_sub(o.misses),
            memory_hits: self.memory_hits.saturating_sub(o.memory_hits),
            bytes_served: self.bytes_served.saturating_sub(o.bytes_served),
            data_requests: self.data_requests.saturating_sub(o.data_requests),
            ufs_get_requests: self.ufs_get_requests.saturating_sub(o.ufs_get_requests),
            ufs_requests: self.ufs_requests.saturating_sub(o.ufs_requests),
            ufs_bytes: self.ufs_bytes.saturating_sub(o.ufs_bytes),
            writes: self.writes.saturating_sub(o.writes),
            write_bytes: self.write_bytes.saturating_sub(o.write_bytes),
            write_pages_cached: self.write_pages_cached.saturating_sub(o.write_pages_cached),
            ufs_outages: self.ufs_outages.saturating_sub(o.ufs_outages),
            ufs_fail_fast: self.ufs_fail_fast.saturating_sub(o.ufs_fail_fast),
            stale_served: self.stale_served.saturating_sub(o.stale_served),
        }
    }
}

/// The `/v1/stats` answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatsWindow {
    /// Start of the window (the baseline snapshot), unix seconds.
    pub from: f64,
    /// End of the window (now), unix seconds.
    pub to: f64,
    /// Counter deltas over the window.
    #[serde(flatten)]
    pub delta: Counters,
    /// Data requests answered without a UFS GET (at least zero).
    pub ufs_requests_saved: u64,
    /// Bytes served that were not read from the UFS (at least zero).
    pub bytes_saved: u64,
}

/// Snapshots of one worker's counters, plus the write counters.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<(f64, Counters)>>,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    write_pages_cached: AtomicU64,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl History {
    /// An empty history whose first snapshot is all zeros, taken now.
    pub fn new() -> Self {
        let h = History::default();
        h.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((now_secs(), Counters::default()));
        h
    }

    /// Count one file of `bytes` written through.
    pub fn note_write(&self, bytes: u64) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count pages of a written file stored in the cache.
    pub fn note_pages(&self, pages: u64) {
        self.write_pages_cached.fetch_add(pages, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn current(&self, m: &Metrics) -> Counters {
        Counters {
            hits: Metrics::get(&m.cache_hits),
            misses: Metrics::get(&m.cache_misses),
            memory_hits: Metrics::get(&m.memory_hits),
            bytes_served: Metrics::get(&m.bytes_served),
            data_requests: DATA_ENDPOINTS.iter().map(|e| m.requests(e, 200)).sum(),
            ufs_get_requests: m.ufs_requests(UfsOp::Get),
            ufs_requests: m.ufs_requests_total(),
            ufs_bytes: Metrics::get(&m.ufs_bytes),
            writes: self.writes.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
            write_pages_cached: self.write_pages_cached.load(Ordering::Relaxed),
            ufs_outages: Metrics::get(&m.ufs_outages),
            ufs_fail_fast: Metrics::get(&m.ufs_fail_fast),
            stale_served: Metrics::get(&m.ufs_stale_served),
        }
    }

    /// Take a snapshot now (only when the newest is at least `min_gap` old).
    pub fn sample(&self, m: &Metrics, min_gap: Duration) {
        let c = self.current(m);
        let now = now_secs();
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.back()
            .is_some_and(|(t, _)| now - t < min_gap.as_secs_f64())
        {
            return;
        }
        s.push_back((now, c));
        while s.len() > MAX_SAMPLES {
            s.pop_front();
        }
    }

    /// Deltas from the newest snapshot at or before `since` to now.
    pub fn since(&self, m: &Metrics, since: f64) -> StatsWindow {
        let now = self.current(m);
        let to = now_secs();
        let (from, base) = {
            let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            s.iter()
                .rev()
                .find(|(t, _)| *t <= since)
                .or_else(|| s.front())
                .copied()
                .unwrap_or((to, now))
        };
        let delta = now.minus(&base);
        StatsWindow {
            from,
            to,
            ufs_requests_saved: delta.data_requests.saturating_sub(delta.ufs_get_requests),
            bytes_saved: delta.bytes_served.saturating_sub(delta.ufs_bytes),
            delta,
        }
    }
}

/// Snapshot `history` (with the counters of `metrics`) every
/// [`SAMPLE_INTERVAL`] until the history is dropped. Needs a tokio runtime;
/// does nothing without one.
pub fn spawn_sampler(history: &Arc<History>, metrics: Arc<Metrics>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<History> = Arc::downgrade(history);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(history) = weak.upgrade() else { break };
            history.sample(&metrics, Duration::ZERO);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_from_the_newest_snapshot_before_since() {
        let m = Metrics::new();
        let h = History::new();
        Metrics::add(&m.cache_hits, 5);
        Metrics::add(&m.bytes_served, 500);
        std::thread::sleep(Duration::from_millis(20));
        h.sample(&m, Duration::ZERO);
        let mark = now_secs();
        Metrics::add(&m.cache_hits, 2);
        Metrics::add(&m.cache_misses, 1);
        Metrics::add(&m.bytes_served, 300);
        Metrics::add(&m.ufs_bytes, 100);
        m.ufs_request(UfsOp::Get);
        let w = h.since(&m, mark);
        assert_eq!((w.delta.hits, w.delta.misses), (2, 1));
        assert_eq!(w.delta.bytes_served, 300);
        assert_eq!(w.bytes_saved, 200);
        assert_eq!(w.delta.ufs_get_requests, 1);
        // Older than the history: everything since the start.
        let all = h.since(&m, 0.0);
        assert_eq!(all.delta.hits, 7);
        assert!(all.from <= w.from);
    }

    #[test]
    fn min_gap_limits_snapshots() {
        let m = Metrics::new();
        let h = History::new();
        for _ in 0..5 {
            h.sample(&m, Duration::from_secs(60));
        }
        assert_eq!(h.samples.lock().unwrap().len(), 1);
    }
}

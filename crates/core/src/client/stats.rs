//! The client's counters since it was built.
//!
//! One mutex-guarded [`Stats`], bumped by small helpers so that what counts
//! as a request, a retry, an error or a fallback is decided in one place
//! each: a request when the read, metadata or write path sends it (manage
//! and load requests are not counted; their summaries count them), an error
//! per failed attempt that was a worker fault, a fallback per range (or
//! whole file) given up and left to the UFS, booked on the path's primary.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Client, WorkerAddr};

/// The [`Stats::fallbacks`] key of ranges read while no worker is known.
pub const NO_WORKER: &str = "(no worker)";

/// Counters of a client since it was built.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Bytes received from workers into read buffers (both paths).
    pub bytes_read: u64,
    /// Of `bytes_read`, those read from a same-node worker's page files.
    pub bytes_local: u64,
    /// Of `bytes_read`, those received over HTTP.
    pub bytes_remote: u64,
    /// HTTP requests sent to workers.
    pub worker_requests: u64,
    /// Retries after worker faults.
    pub retries: u64,
    /// Per worker `host:port` (the path's primary): ranges given up and left
    /// to the UFS ([`NO_WORKER`] while the worker list is empty).
    pub fallbacks: BTreeMap<String, u64>,
    /// Per worker `host:port`: failed requests (worker faults).
    pub errors: BTreeMap<String, u64>,
}

impl Client {
    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn with_stats(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(super) fn count_request(&self) {
        self.with_stats(|s| s.worker_requests += 1);
    }

    pub(super) fn count_bytes(&self, n: u64) {
        self.with_stats(|s| {
            s.bytes_read += n;
            s.bytes_remote += n;
        });
    }

    pub(super) fn count_local_bytes(&self, n: u64) {
        self.with_stats(|s| {
            s.bytes_read += n;
            s.bytes_local += n;
        });
    }

    pub(super) fn count_retry(&self) {
        self.with_stats(|s| s.retries += 1);
    }

    pub(super) fn count_error(&self, w: &WorkerAddr) {
        self.with_stats(|s| *s.errors.entry(w.addr()).or_default() += 1);
    }

    /// Count a fallback to the UFS of a path whose preferred workers are
    /// `prefs`; returns the worker it is booked on (the primary, or
    /// [`NO_WORKER`]).
    pub(super) fn count_fallback(&self, prefs: &[WorkerAddr]) -> String {
        let owner = prefs
            .first()
            .map(WorkerAddr::addr)
            .unwrap_or_else(|| NO_WORKER.to_string());
        self.with_stats(|s| *s.fallbacks.entry(owner.clone()).or_default() += 1);
        owner
    }
}

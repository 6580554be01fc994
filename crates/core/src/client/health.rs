//! Which workers failed, and for how long they are left alone.
//!
//! A worker that a request gave up on (`failover`) is marked down and
//! skipped for a while (1 s, doubling per failure up to 30 s; cleared by any
//! success) so that a dead worker does not cost a connect timeout on every
//! read; the next preferred worker serves its paths meanwhile. A request
//! that finds a worker skipped reports the fault that marked it down (so a
//! hung worker keeps giving [`Error::Timeout`], not a vaguer error). The
//! first failure of an outage is logged once.
//!
//! A background probe asks the failed worker `GET /healthz` (after 0.5 s,
//! doubling up to 30 s) and clears the mark as soon as it answers, so a
//! restarted worker is used again promptly. The probe ends when the worker
//! answers, leaves the membership or the client is dropped: it holds only a
//! weak reference to the marks, which is why it sends its request on its
//! own (with the same auth header) rather than through the client.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::request::authorized;
use super::{Client, WorkerAddr};
use crate::error::Error;

/// First skip interval of a worker after a failure; doubles per failure.
const SKIP_BASE: Duration = Duration::from_secs(1);
/// Longest skip interval of a failed worker.
const SKIP_MAX: Duration = Duration::from_secs(30);
/// First wait before a failed worker is probed; doubles per failed probe.
const PROBE_BASE: Duration = Duration::from_millis(500);
/// Longest wait between two probes of a failed worker.
const PROBE_MAX: Duration = Duration::from_secs(30);
/// Timeout of one health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub(super) struct Health {
    failures: u32,
    skip_until: Option<Instant>,
    warned: bool,
    /// A background health probe of this worker is running.
    probing: bool,
    /// The fault that marked the worker down (reported for skipped requests).
    fault: Option<Error>,
}

/// The marks, per worker `host:port`.
pub(super) type HealthMap = Mutex<HashMap<String, Health>>;

impl Client {
    /// Drop the failure marks of workers not in `workers` (their probes
    /// stop); a worker that comes back starts with a clean slate.
    pub(super) fn forget_health_of_others(&self, workers: &[WorkerAddr]) {
        let keep: HashSet<String> = workers.iter().map(|w| w.addr()).collect();
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|addr, _| keep.contains(addr));
    }

    /// Whether `worker` failed and has not answered since (neither a
    /// request nor its health probe). Reads skip it during its skip
    /// interval and retry it after.
    pub fn is_marked_down(&self, worker: &WorkerAddr) -> bool {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&worker.addr())
            .is_some_and(|h| h.failures > 0)
    }

    pub(crate) fn is_skipped(&self, w: &WorkerAddr) -> bool {
        self.skip_fault(w).is_some()
    }

    /// When `w` is in its skip interval: the fault that marked it down, for
    /// the request that skips it to report.
    pub(super) fn skip_fault(&self, w: &WorkerAddr) -> Option<Error> {
        let map = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.get(&w.addr())?;
        if !matches!(h.skip_until, Some(t) if t > Instant::now()) {
            return None;
        }
        Some(match &h.fault {
            Some(Error::Timeout(d, what)) => {
                Error::Timeout(*d, format!("{what} (skipped after this recent failure)"))
            }
            Some(e) => Error::WorkerUnavailable {
                worker: w.addr(),
                reason: format!("skipped after a recent failure: {e}"),
            },
            None => Error::WorkerUnavailable {
                worker: w.addr(),
                reason: "skipped after recent failures".into(),
            },
        })
    }

    pub(crate) fn mark_ok(&self, w: &WorkerAddr) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.get_mut(&w.addr()) {
            if h.failures > 0 {
                tracing::info!(worker = %w.addr(), "cache worker answers again");
            }
            h.failures = 0;
            h.skip_until = None;
            // Log the next outage again, once.
            h.warned = false;
        }
    }

    /// A worker was given up on: skip it for a while and log its first
    /// failure.
    pub(super) fn mark_failed(&self, w: &WorkerAddr, e: &Error) {
        let start_probe = {
            let mut map = self.health.lock().unwrap_or_else(|e| e.into_inner());
            let h = map.entry(w.addr()).or_default();
            h.failures = h.failures.saturating_add(1);
            let skip = SKIP_BASE
                .saturating_mul(1u32 << (h.failures - 1).min(8))
                .min(SKIP_MAX);
            h.skip_until = Some(Instant::now() + skip);
            h.fault = Some(e.clone());
            if !h.warned {
                h.warned = true;
                tracing::warn!(worker = %w.addr(), error = %e,
                    "cache worker failed; its paths go to the next preferred worker, \
                     else the UFS, while it is down");
            }
            // Probing needs a runtime to run on; without one (never the
            // case in an async read) the skip interval alone applies.
            let can = !h.probing && tokio::runtime::Handle::try_current().is_ok();
            if can {
                h.probing = true;
            }
            can
        };
        if start_probe {
            tokio::spawn(probe_until_healthy(
                Arc::downgrade(&self.health),
                self.http.clone(),
                self.config.auth_token.clone(),
                w.url_with(self.config.tls.scheme()),
                w.clone(),
            ));
        }
    }

    /// Count and log a failure of a request that is not retried per chunk
    /// (invalidate).
    pub(crate) fn note_failure(&self, w: &WorkerAddr, e: &Error) {
        self.count_error(w);
        self.mark_failed(w, e);
    }
}

/// Probe a failed worker with `GET /healthz` until it answers, then clear
/// its failure mark. Ends early when the mark is cleared otherwise (a read
/// succeeded), the worker left the membership, or the client is gone.
async fn probe_until_healthy(
    health: Weak<HealthMap>,
    http: reqwest::Client,
    token: Option<String>,
    base_url: String,
    w: WorkerAddr,
) {
    let addr = w.addr();
    let url = format!("{base_url}/healthz");
    let mut delay = PROBE_BASE;
    loop {
        tokio::time::sleep(delay).await;
        {
            let Some(health) = health.upgrade() else {
                return;
            };
            let mut map = health.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(&addr) {
                Some(h) if h.failures > 0 => {}
                Some(h) => {
                    h.probing = false;
                    return;
                }
                None => return,
            }
        }
        let req = authorized(http.get(&url).timeout(PROBE_TIMEOUT), token.as_deref());
        let healthy = match req.send().await {
            // A worker that does not know /healthz (an Alluxio Java worker
            // answers 404) is up; one shutting down says so in its body.
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.unwrap_or_default();
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(|s| s == "ok"))
                    .unwrap_or(true)
            }
            Ok(r) => r.status() == reqwest::StatusCode::NOT_FOUND,
            Err(_) => false,
        };
        let Some(health) = health.upgrade() else {
            return;
        };
        let mut map = health.lock().unwrap_or_else(|e| e.into_inner());
        let Some(h) = map.get_mut(&addr) else {
            return;
        };
        if healthy || h.failures == 0 {
            if h.failures > 0 {
                tracing::info!(worker = %addr, "cache worker answers its health probe again");
            }
            h.failures = 0;
            h.skip_until = None;
            h.warned = false;
            h.probing = false;
            return;
        }
        delay = (delay * 2).min(PROBE_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;

    #[test]
    fn a_skipped_worker_reports_the_fault_that_marked_it_down() {
        let w = WorkerAddr::from_host_port("127.0.0.1", 1);
        let c = Client::new(ClientConfig::default(), vec![w.clone()]).unwrap();
        assert!(c.skip_fault(&w).is_none());
        c.mark_failed(
            &w,
            &Error::Timeout(Duration::from_millis(300), "request".into()),
        );
        assert!(matches!(c.skip_fault(&w), Some(Error::Timeout(d, _)) if d.as_millis() == 300));
        c.mark_ok(&w);
        assert!(c.skip_fault(&w).is_none());
        c.mark_failed(
            &w,
            &Error::WorkerUnavailable {
                worker: w.addr(),
                reason: "connection refused".into(),
            },
        );
        match c.skip_fault(&w) {
            Some(Error::WorkerUnavailable { reason, .. }) => {
                assert!(reason.contains("connection refused"), "{reason}")
            }
            other => panic!("expected WorkerUnavailable, got {other:?}"),
        }
    }
}

//! The one walk over a path's preferred workers, used by metadata calls,
//! chunked reads and whole-file reads alike.
//!
//! - **Order.** The preferred workers are tried in placement order, primary
//!   first. A worker in its skip interval (`health`) is passed over; the
//!   fault that marked it down is remembered as the walk's last fault.
//! - **Retries.** Only worker faults (connect error, timeout, broken body,
//!   5xx, 408, 429) are retried: up to `retries` times per worker with
//!   jittered exponential backoff (`retry_base`, doubling), never past the
//!   deadline (`retry_deadline` from the start of the call). Then the worker
//!   is marked failed and the next one is tried.
//! - **One path's UFS failure** (a worker's `ufs_failure`) moves on to the
//!   next worker at once: no retry (the worker retried its UFS) and no
//!   mark, so the worker keeps serving every other path.
//! - **Ends.** A success, or an answer that is the request's fault (400,
//!   403, 404, 412: no other worker would answer differently), ends the walk
//!   at once and clears the worker's mark. A walk that runs out of workers
//!   ends with [`exhausted`]: the last worker fault, as the error that says
//!   what happened.
//!
//! The walk is a small state machine ([`Walk`]) rather than a loop taking a
//! closure so that a caller can carry state from one attempt to the next (a
//! chunked read resumes after the bytes that already arrived); the
//! closure form ([`Client::on_preferred`]) is built on it.

use std::time::Instant;

use super::{Client, WorkerAddr};
use crate::error::{Error, Result};

/// A walk over the preferred workers of one request; see the module
/// documentation. Use: `while let Some(w) = walk.worker() { ...;
/// if let Some(r) = walk.settle(attempt_result).await { return r } }`,
/// then [`Walk::last_fault`].
pub(super) struct Walk<'a> {
    client: &'a Client,
    prefs: &'a [WorkerAddr],
    /// Index of the next worker to try after the current one.
    next: usize,
    /// The worker being tried, while it may be retried.
    current: Option<&'a WorkerAddr>,
    /// Retries on the current worker so far.
    attempt: u32,
    deadline: Instant,
    last: Option<Error>,
}

impl<'a> Walk<'a> {
    /// A walk over `prefs` whose retries end at `deadline`.
    pub(super) fn new(client: &'a Client, prefs: &'a [WorkerAddr], deadline: Instant) -> Self {
        Walk {
            client,
            prefs,
            next: 0,
            current: None,
            attempt: 0,
            deadline,
            last: None,
        }
    }

    /// The worker for the next attempt: the current one while it is being
    /// retried, else the next preferred worker that is not skipped. `None`
    /// when every worker has been tried.
    pub(super) fn worker(&mut self) -> Option<&'a WorkerAddr> {
        if let Some(w) = self.current {
            return Some(w);
        }
        while let Some(w) = self.prefs.get(self.next) {
            self.next += 1;
            if let Some(fault) = self.client.skip_fault(w) {
                self.last = Some(fault);
                continue;
            }
            self.current = Some(w);
            self.attempt = 0;
            return Some(w);
        }
        None
    }

    /// Book the result of an attempt on the worker [`Walk::worker`] gave.
    /// `Some` ends the walk (success, or an error that is the request's
    /// fault); `None` means: ask [`Walk::worker`] again (after the backoff
    /// of a retry, which this sleeps).
    pub(super) async fn settle<T>(&mut self, result: Result<T>) -> Option<Result<T>> {
        let w = self.current.expect("settle follows worker()");
        match result {
            Ok(v) => {
                self.client.mark_ok(w);
                Some(Ok(v))
            }
            Err(e) if !e.is_worker_fault() => {
                self.client.mark_ok(w);
                Some(Err(e))
            }
            Err(e) if e.is_path_fault() => {
                // The worker is fine; its UFS failed for this path (and was
                // retried there). Next worker, without marking this one.
                self.client.count_error(w);
                self.last = Some(e);
                self.current = None;
                None
            }
            Err(e) => {
                self.client.count_error(w);
                if self.client.backoff(self.attempt, self.deadline).await {
                    self.attempt += 1;
                    return None;
                }
                self.client.mark_failed(w, &e);
                self.last = Some(e);
                self.current = None;
                None
            }
        }
    }

    /// The last worker fault of a walk that ran out of workers (`None` when
    /// there were no workers).
    pub(super) fn last_fault(self) -> Option<Error> {
        self.last
    }
}

/// How [`Client::on_preferred`] ended without success.
pub(super) enum Failover {
    /// The request itself is at fault (404, 403, 412, 400): no other worker
    /// would answer differently.
    Request(Error),
    /// Every preferred worker failed or was skipped; the last fault, if any.
    Exhausted(Option<Error>),
}

impl Client {
    /// Run `op` on the preferred workers `prefs` with a [`Walk`] whose
    /// deadline is `retry_deadline` from now.
    pub(super) async fn on_preferred<'w, T, F, Fut>(
        &'w self,
        prefs: &'w [WorkerAddr],
        mut op: F,
    ) -> std::result::Result<T, Failover>
    where
        F: FnMut(&'w WorkerAddr) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut walk = Walk::new(self, prefs, Instant::now() + self.config.retry_deadline);
        while let Some(w) = walk.worker() {
            match walk.settle(op(w).await).await {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) => return Err(Failover::Request(e)),
                None => {}
            }
        }
        Err(Failover::Exhausted(walk.last_fault()))
    }

    /// Sleep before retry number `attempt + 1` if the policy allows it:
    /// fewer than `retries` retries so far and the jittered backoff ends
    /// before `deadline`. Returns whether to retry.
    async fn backoff(&self, attempt: u32, deadline: Instant) -> bool {
        if attempt >= self.config.retries {
            return false;
        }
        let full = self
            .config
            .retry_base
            .saturating_mul(1u32 << attempt.min(16));
        let delay = full.mul_f64(rand::random_range(0.5..=1.0));
        if Instant::now() + delay >= deadline {
            return false;
        }
        self.count_retry();
        tokio::time::sleep(delay).await;
        true
    }
}

/// The error of a request that no preferred worker served: the last worker
/// fault as it is when it says what happened (unavailable, timed out), else
/// wrapped as [`Error::WorkerUnavailable`] of `owner` (the primary).
pub(super) fn exhausted(owner: String, last: Option<Error>) -> Error {
    match last {
        Some(
            e @ (Error::WorkerUnavailable { .. }
            | Error::UfsFailure { .. }
            | Error::UfsUnreachable { .. }
            | Error::Timeout(..)),
        ) => e,
        Some(e) => Error::WorkerUnavailable {
            worker: owner,
            reason: e.to_string(),
        },
        None => Error::WorkerUnavailable {
            worker: owner,
            reason: "skipped after recent failures".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;
    use std::time::Duration;

    fn down(w: &WorkerAddr) -> Error {
        Error::WorkerUnavailable {
            worker: w.addr(),
            reason: "down".into(),
        }
    }

    /// The walk in placement order: a marked worker is passed over, a
    /// failing one retried then marked, a request fault ends it at once.
    #[tokio::test]
    async fn the_walk_skips_retries_and_moves_on() {
        let ws: Vec<WorkerAddr> = (0..3)
            .map(|i| WorkerAddr::from_host_port("127.0.0.1", 7200 + i))
            .collect();
        let cfg = ClientConfig {
            retries: 1,
            retry_base: Duration::from_millis(1),
            retry_deadline: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        let c = Client::new(cfg, ws.clone()).unwrap();
        c.mark_failed(
            &ws[0],
            &Error::Timeout(Duration::from_millis(7), "t".into()),
        );
        let mut tried = Vec::new();
        let r = c
            .on_preferred(&ws, |w| {
                tried.push(w.port);
                let r = if w.port == 7202 {
                    Ok(w.port)
                } else {
                    Err(down(w))
                };
                async move { r }
            })
            .await;
        assert!(matches!(r, Ok(7202)));
        assert_eq!(tried, vec![7201, 7201, 7202]);
        let s = c.stats();
        assert_eq!(s.retries, 1);
        assert_eq!(s.errors.get(&ws[1].addr()), Some(&2));
        assert!(c.is_marked_down(&ws[1]) && !c.is_marked_down(&ws[2]));

        // A request fault is not retried and not a worker failure.
        let r = c
            .on_preferred(&ws[2..], |_| async {
                Err::<(), _>(Error::NotFound { path: "p".into() })
            })
            .await;
        assert!(matches!(r, Err(Failover::Request(Error::NotFound { .. }))));
        assert!(!c.is_marked_down(&ws[2]));

        // Every worker skipped: the fault that marked the last one down.
        let r = c.on_preferred(&ws[..1], |_| async { Ok(()) }).await;
        match r {
            Err(Failover::Exhausted(Some(Error::Timeout(d, _)))) => {
                assert_eq!(d, Duration::from_millis(7))
            }
            _ => panic!("expected the skipped worker's timeout"),
        }
    }

    #[test]
    fn exhausted_keeps_timeouts_and_unavailability() {
        let t = exhausted(
            "h:1".into(),
            Some(Error::Timeout(Duration::from_secs(1), "x".into())),
        );
        assert!(matches!(t, Error::Timeout(d, _) if d == Duration::from_secs(1)));
        let u = exhausted(
            "h:1".into(),
            Some(Error::WorkerUnavailable {
                worker: "h:2".into(),
                reason: "refused".into(),
            }),
        );
        assert!(matches!(u, Error::WorkerUnavailable { worker, .. } if worker == "h:2"));
        let other = exhausted("h:1".into(), Some(Error::NoWorkers("none".into())));
        assert!(matches!(other, Error::WorkerUnavailable { worker, .. } if worker == "h:1"));
        assert!(matches!(
            exhausted("h:1".into(), None),
            Error::WorkerUnavailable { .. }
        ));
    }
}

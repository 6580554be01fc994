//! UFS outages: telling one apart from an answer, and waiting one out
//! without making every request pay for it.
//!
//! - **What is an outage.** A UFS request that failed without the UFS
//!   answering it (connection refused or reset, a timeout, a broken
//!   answer), or that kept getting 5xx or 429 (`SlowDown`) until
//!   `object_store`'s retries gave up. A 404, a 403, a failed precondition
//!   (the object changed) or any other 4xx is an answer, never an outage:
//!   the cache must follow it.
//! - **Fail fast.** After an outage of one store (one scheme and bucket or
//!   host), requests to that store fail at once with
//!   [`WorkerError::UfsUnreachable`] for a while ([`FIRST_WAIT`], doubling
//!   while the outage goes on, at most [`MAX_WAIT`]); then ONE request goes
//!   out as a probe while the others keep failing fast: its failure starts
//!   the next wait, any answer of the store ends the outage. The waits are
//!   short because the cost of a probe is one request, and every moment the
//!   worker keeps failing after the store is back fails reads the store
//!   could serve (the soak in docs/reliability.md measured 2.7 s of that
//!   with waits that doubled up to 30 s).
//! - **Serving through it** is the cache's part (`stale_if_error`, see
//!   [`crate::cache`]): the last verified metadata of a cached object is
//!   served while its store is in an outage.

use crate::error::WorkerError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The first wait after an outage begins.
pub const FIRST_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between two probes of a store in an outage.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// Whether `e` means the UFS could not be reached (see the module doc).
pub fn is_outage(e: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = e else {
        return false;
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            return matches!(
                h.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            );
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::TimedOut
                    | K::BrokenPipe
            );
        }
        // object_store keeps its retry errors private; their text names
        // the status that was retried until it gave up.
        let text = err.to_string();
        if let Some(at) = text.find("non-2xx status code: ") {
            let code = &text[at + "non-2xx status code: ".len()..];
            return code.starts_with('5') || code.starts_with("429");
        }
        if text.contains("Server returned error response") {
            return true;
        }
        cur = err.source();
    }
    false
}

#[derive(Debug, Clone)]
struct Outage {
    /// When it began.
    since: Instant,
    /// No request goes out before this.
    until: Instant,
    /// The current wait.
    wait: Duration,
    /// The error that began or last extended it.
    reason: String,
    /// A probe went out at the end of the last wait and has not failed yet.
    probing: bool,
}

/// The outages of a worker's stores, keyed by `scheme://authority`.
#[derive(Debug, Default)]
pub struct Outages {
    by_store: Mutex<HashMap<String, Outage>>,
}

impl Outages {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outage>> {
        self.by_store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request for `url` to `store` may go out now; else the
    /// error to answer at once.
    pub fn admit(&self, store: &str, url: &str) -> Result<(), WorkerError> {
        let mut map = self.map();
        let now = Instant::now();
        match map.get_mut(store) {
            // The wait is over: this request is the probe; the others fail
            // fast while it is out (for one more wait, in case it hangs).
            Some(o) if now >= o.until => {
                o.probing = true;
                o.until = now + o.wait;
                Ok(())
            }
            Some(o) => Err(WorkerError::UfsUnreachable {
                path: url.to_string(),
                reason: format!(
                    "{store} has been unreachable for {:.1} s (last error: {}); next try in {:.1} s",
                    o.since.elapsed().as_secs_f64(),
                    o.reason,
                    o.until.saturating_duration_since(Instant::now()).as_secs_f64()
                ),
            }),
            None => Ok(()),
        }
    }

    /// A request to `store` failed as an outage: begin one, or make the
    /// wait of the current one longer. Returns true when it began now.
    pub fn failed(&self, store: &str, reason: &str) -> bool {
        let now = Instant::now();
        let mut map = self.map();
        match map.get_mut(store) {
            // The probe failed: wait longer.
            Some(o) if o.probing || now >= o.until => {
                o.probing = false;
                o.wait = (o.wait * 2).min(MAX_WAIT);
                o.until = now + o.wait;
                o.reason = reason.to_string();
                false
            }
            // Requests that were in flight when the outage began fail too:
            // they do not make the wait longer.
            Some(_) => false,
            None => {
                map.insert(
                    store.to_string(),
                    Outage {
                        since: now,
                        until: now + FIRST_WAIT,
                        wait: FIRST_WAIT,
                        reason: reason.to_string(),
                        probing: false,
                    },
                );
                true
            }
        }
    }

    /// `store` answered: its outage (if any) is over. Returns how long it
    /// lasted.
    pub fn answered(&self, store: &str) -> Option<Duration> {
        let mut map = self.map();
        if map.is_empty() {
            return None;
        }
        map.remove(store).map(|o| o.since.elapsed())
    }

    /// How many stores are in an outage now.
    pub fn count(&self) -> usize {
        self.map().len()
    }

    /// Whether `store` is in an outage (waiting or being tried again).
    pub fn is_down(&self, store: &str) -> bool {
        self.map().contains_key(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_fails_fast_then_lets_requests_try_again_with_a_longer_wait() {
        let o = Outages::default();
        assert!(o.admit("s3://b", "s3://b/x").is_ok());
        assert!(o.failed("s3://b", "connection refused"));
        let e = o.admit("s3://b", "s3://b/x").unwrap_err();
        assert!(matches!(e, WorkerError::UfsUnreachable { .. }), "{e}");
        assert!(e.to_string().contains("connection refused"), "{e}");
        // Another store is not affected.
        assert!(o.admit("s3://other", "s3://other/x").is_ok());
        // A failure while waiting does not extend the wait.
        assert!(!o.failed("s3://b", "again"));
        // Past the wait, one probe goes out and the others fail fast; its
        // failure doubles the wait.
        {
            let mut map = o.map();
            map.get_mut("s3://b").unwrap().until = Instant::now();
        }
        assert!(o.admit("s3://b", "s3://b/x").is_ok());
        assert!(
            o.admit("s3://b", "s3://b/y").is_err(),
            "one probe at a time"
        );
        assert!(!o.failed("s3://b", "still down"));
        assert_eq!(o.map()["s3://b"].wait, FIRST_WAIT * 2);
        assert!(o.admit("s3://b", "s3://b/x").is_err());
        // The wait stops growing at MAX_WAIT.
        for _ in 0..10 {
            o.map().get_mut("s3://b").unwrap().until = Instant::now();
            assert!(o.admit("s3://b", "s3://b/x").is_ok());
            o.failed("s3://b", "down");
        }
        assert_eq!(o.map()["s3://b"].wait, MAX_WAIT);
        assert!(o.answered("s3://b").is_some());
        assert!(o.admit("s3://b", "s3://b/x").is_ok());
        assert_eq!(o.count(), 0);
    }

    #[test]
    fn answers_are_not_outages() {
        let not_found = object_store::Error::NotFound {
            path: "x".into(),
            source: "gone".into(),
        };
        assert!(!is_outage(&not_found));
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert!(is_outage(&refused));
        let denied = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 403 Forbidden: no".into(),
        };
        assert!(!is_outage(&denied));
        let slow = object_store::Error::Generic {
            store: "S3",
            source: "Error performing GET in 2s - Server returned non-2xx status code: 503 Service Unavailable: SlowDown".into(),
        };
        assert!(is_outage(&slow));
        let local = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::other("disk on fire")),
        };
        assert!(!is_outage(&local));
    }
}

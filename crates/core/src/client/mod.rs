//! Parallel range reads from cache workers over HTTP.
//!
//! A [`Client`] holds the worker list, the placement over it and one pooled
//! HTTP client (keep-alive, `TCP_NODELAY`). Every read is planned in pages
//! ([`crate::pages`]) and fetched from the workers that own the path. The
//! parts, one job per file, from what callers ask for down to the state
//! they share (the read files use those below them, never each other, but
//! `read` whose chunk machinery `files` and `ranges` reuse):
//!
//! - `meta`, `read`, `files`, `ranges`: what callers ask for: metadata
//!   (info, list, invalidate), chunked reads into a buffer, whole files in
//!   one request per owner worker (`batch`: the per-owner dispatch), and
//!   coalesced reads of many ranges.
//! - `failover`: the one walk over a path's preferred workers (skip marks,
//!   retries with backoff, the error when every worker failed) that all of
//!   them use.
//! - `health`: which workers failed, how long they are skipped, and the
//!   background probes that clear the marks.
//! - `request`: the one request path (URL, auth header, timeouts, transport
//!   and status error mapping, body streaming) that every request to a
//!   worker goes through, the crate's manage, load and write included.
//! - `workers`: worker addresses, the membership snapshot and placement.
//! - `local`: same-node reads through page file descriptors the local
//!   worker passes (`crate::local`), tried before HTTP for each chunk.
//! - `stats`: the counters.
//!
//! What happens when workers fail is the same for every read: bytes that no
//! preferred worker could serve are reported as *holes* (absolute file
//! offsets) for the caller to read from the UFS (a whole file that no worker
//! started to serve, and metadata, as [`Error::WorkerUnavailable`] for the
//! caller to ask the UFS); only answers that are the request's fault (400,
//! 403, 404, 412) are errors the caller raises.
//! The details sit with their code: retries in `failover`, skipping and
//! probing in `health`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

mod batch;
mod failover;
mod files;
mod health;
mod local;
mod meta;
mod ranges;
mod read;
mod request;
mod stats;
mod workers;

pub use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::placement::Placement;
pub use crate::protocol::{DEFAULT_WORKER_PORT, FILE_SIZE_HEADER, VERSION_HEADER};
use health::HealthMap;
pub use read::{RangeResult, ReadOutcome};
pub(crate) use request::{enc, error_message, parse_answer, Req};
pub use stats::{Stats, NO_WORKER};
use workers::Membership;
pub use workers::WorkerAddr;

/// The client core: worker list, hash ring, pooled HTTP client, counters.
/// `Send + Sync`; share it in an `Arc`.
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
    members: RwLock<Membership>,
    health: Arc<HealthMap>,
    stats: Mutex<Stats>,
    local: local::LocalPlane,
    batch: batch::BatchSupport,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("workers", &self.workers())
            .finish()
    }
}

impl Client {
    /// Build a client for `workers`. [`Error::NoWorkers`] if the list is
    /// empty; [`Error::InvalidArgument`] for a zero page size.
    pub fn new(config: ClientConfig, workers: Vec<WorkerAddr>) -> Result<Self> {
        if workers.is_empty() {
            return Err(Error::NoWorkers("the worker list is empty".into()));
        }
        if config.page_size == 0 {
            return Err(Error::InvalidArgument("page_size must be positive".into()));
        }
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(config.max_parallel.max(32))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout);
        let http = config
            .tls
            .apply(builder)?
            .build()
            .map_err(|e| Error::InvalidArgument(format!("cannot build HTTP client: {e}")))?;
        let placement = config.effective_placement();
        if let Placement::Alluxio { vnodes: 0 } = placement {
            return Err(Error::InvalidArgument("vnodes must be at least 1".into()));
        }
        let members = RwLock::new(Membership::new(workers, placement));
        let local_reads = config.local_reads;
        Ok(Client {
            config,
            http,
            members,
            health: Arc::new(Mutex::new(HashMap::new())),
            stats: Mutex::new(Stats::default()),
            local: local::LocalPlane::new(local_reads),
            batch: batch::BatchSupport::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }
}

#[cfg(test)]
mod send_tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}

    /// The binding shares one client across threads and may spawn its
    /// futures on a multi-threaded runtime.
    #[test]
    fn client_and_its_futures_are_send() {
        assert_send_sync::<Client>();
        let c = Client::new(
            ClientConfig::default(),
            vec![WorkerAddr::from_host_port("127.0.0.1", 1)],
        )
        .unwrap();
        let reqs = vec![("s3://b/k".to_string(), 0u64, 1u64)];
        let mut buf = [0u8; 4];
        assert_send(&c.read_ranges(&reqs));
        assert_send(&c.read_into("s3://b/k", None, 0, &mut buf));
        assert_send(&c.info("s3://b/k"));
        assert_send(&c.list("s3://b/k"));
        assert_send(&c.invalidate("s3://b/k", false));
    }
}

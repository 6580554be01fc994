//! [`AppState`]: what the HTTP front end shares between requests, built once
//! from the [`WorkerConfig`] at start.
//!
//! The cache itself is the [`ReadThrough`] engine, held behind an `Arc` so
//! that other front ends can share it; everything else here belongs to the
//! HTTP server: the auth token, the shutdown flag, the worker's identity and
//! etcd registration (`/healthz`), the counter history (`/v1/stats`) and
//! the load job table (`/v1/load`).

use crate::cache::ReadThrough;
use crate::cluster::Peers;
use crate::config::WorkerConfig;
use crate::error::Result;
use crate::history::{spawn_sampler, History};
use crate::load::LoadJobs;
use crate::membership::{resolve_identity, Registration};
use alluxiofs_core::ring::WorkerIdentity;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;

/// Everything a request handler needs.
pub struct AppState {
    /// The merged configuration.
    pub config: Arc<WorkerConfig>,
    /// The read-through cache: UFS, page store, metadata, counters.
    pub cache: Arc<ReadThrough>,
    /// Bearer token required on every endpoint but `/healthz`.
    pub auth_token: Option<String>,
    /// Set when shutdown begins: new requests get 503.
    pub shutting_down: AtomicBool,
    /// This worker's persistent identity (see [`crate::membership`]).
    pub identity: WorkerIdentity,
    /// Where the worker stands with etcd.
    pub registration: watch::Sender<Registration>,
    /// Counter snapshots for `/v1/stats` (see [`crate::history`]).
    pub history: Arc<History>,
    /// Load jobs and the load bandwidth limit (see [`crate::load`]).
    pub loads: LoadJobs,
    /// The same-node read socket, once it listens ([`crate::local`]).
    pub local_socket: OnceLock<PathBuf>,
    /// The S3 endpoint's port, once it listens ([`crate::s3`]).
    pub s3_port: OnceLock<u16>,
    /// The HTTP API's port, once it listens.
    pub http_port: OnceLock<u16>,
    /// The cluster view ([`crate::cluster`]), started on first use.
    cluster: OnceLock<Arc<Peers>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Build the state: check mounts, open (and scan) the cache directories,
    /// read the auth token. Blocking (disk scan).
    pub fn new(config: WorkerConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let cache = ReadThrough::open(&config)?;
        let auth_token = config.resolve_auth_token()?;
        let identity = resolve_identity(&config)?;
        let registration = watch::Sender::new(if config.etcd.is_empty() {
            Registration::Disabled
        } else {
            Registration::Connecting
        });
        let config = Arc::new(config);
        let history = Arc::new(History::new());
        spawn_sampler(&history, cache.metrics().clone());
        Ok(Arc::new(AppState {
            identity,
            registration,
            loads: LoadJobs::new(config.clone(), auth_token.clone()),
            config,
            cache,
            auth_token,
            shutting_down: AtomicBool::new(false),
            history,
            local_socket: OnceLock::new(),
            s3_port: OnceLock::new(),
            http_port: OnceLock::new(),
            cluster: OnceLock::new(),
        }))
    }

    /// This worker's view of the cluster: with etcd, discovery starts in
    /// the background on the first call (inside a tokio runtime); until
    /// it succeeds, and without etcd, every path is this worker's.
    pub fn cluster(&self) -> Result<Arc<Peers>> {
        if let Some(c) = self.cluster.get() {
            return Ok(c.clone());
        }
        let started = Peers::start(&self.config, self.identity, self.auth_token.clone())?;
        // Two first calls at once: one view is kept, the other dropped
        // (its discovery task holds only a weak reference and ends).
        Ok(self.cluster.get_or_init(|| started).clone())
    }
}

//! The cluster as a worker sees it: who owns a path (the S3 endpoint and
//! `GET /v1/node` ask), and the worker-to-worker calls that serve it from
//! the owner's page store.
//!
//! - **Owner.** With etcd, the endpoint follows the membership as every
//!   client does (the core [`Client`]: discovery, then a watch) and places
//!   each URL with the cluster's placement; the first worker of the path
//!   is its owner. Without etcd, or until discovery succeeds (retried with
//!   backoff in the background), every path is this worker's.
//! - **Forwarding.** A read of a path another worker owns streams the
//!   owner's `GET /v1/range` (pinned to the version this worker looked up,
//!   so a change in between is a 412, not mixed bytes); a write streams to
//!   the owner's `PUT /v1/write`. When the owner cannot be reached, the
//!   read is served here (read-through from the UFS), as any client's
//!   failover would.
//! - **Redirects** (`s3_redirect`) name the owner's S3 port, which its
//!   `/healthz` tells (asked once per worker and remembered).

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};
use alluxiofs_core::client::{Client, WorkerAddr};
use alluxiofs_core::config::ClientConfig;
use alluxiofs_core::discovery::{discover, spawn_watch, WatchHandle};
use alluxiofs_core::path::path_id;
use alluxiofs_core::protocol::{FILE_SIZE_HEADER, VERSION_HEADER};
use alluxiofs_core::ring::WorkerIdentity;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a worker-to-worker request may take to answer (the body then
/// streams for as long as it takes).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster view of one worker's S3 endpoint.
pub struct Peers {
    me: WorkerIdentity,
    client: OnceLock<Arc<Client>>,
    watch: Mutex<Option<WatchHandle>>,
    http: reqwest::Client,
    /// `https` when the cluster speaks TLS.
    scheme: &'static str,
    token: Option<String>,
    s3_ports: Mutex<HashMap<String, u16>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.me)
            .field("cluster", &self.client.get().map(|c| c.workers().len()))
            .finish_non_exhaustive()
    }
}

fn enc(v: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(v, NON_ALPHANUMERIC)
}

impl Peers {
    /// The view of the worker `me` of `config`; with etcd, discovery starts
    /// in the background (inside a tokio runtime).
    pub fn start(
        config: &WorkerConfig,
        me: WorkerIdentity,
        token: Option<String>,
    ) -> Result<Arc<Self>> {
        let tls = config.peer_tls();
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(FORWARD_TIMEOUT);
        let http = tls
            .apply(builder)
            .map_err(|e| WorkerError::Config(e.to_string()))?
            .build()
            .map_err(|e| WorkerError::Internal(format!("HTTP client: {e}")))?;
        let peers = Arc::new(Peers {
            me,
            client: OnceLock::new(),
            watch: Mutex::new(None),
            http,
            scheme: tls.scheme(),
            token: token.clone(),
            s3_ports: Mutex::new(HashMap::new()),
        });
        if !config.etcd.is_empty() {
            let etcd = config.etcd_client_config()?;
            let client_config = ClientConfig {
                page_size: config.page_size,
                placement: config.placement,
                auth_token: token,
                tls: tls.clone(),
                ..ClientConfig::default()
            };
            let weak = Arc::downgrade(&peers);
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(200);
                loop {
                    match discover(&etcd).await {
                        Ok(found) => {
                            let Some(p) = weak.upgrade() else { return };
                            let mut cfg = client_config.clone();
                            if let Some(pl) = found.placement {
                                cfg.placement = pl;
                            }
                            let client = match Client::new(cfg, found.workers) {
                                Ok(c) => c,
                                // No worker registered yet (this one soon is).
                                Err(e) => {
                                    tracing::debug!("S3 endpoint: cluster not ready: {e}");
                                    tokio::time::sleep(wait).await;
                                    wait = (wait * 2).min(Duration::from_secs(5));
                                    continue;
                                }
                            };
                            let client = Arc::new(client);
                            let handle = spawn_watch(client.clone(), etcd, found.revision);
                            *p.watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
                            let _ = p.client.set(client);
                            tracing::debug!("S3 endpoint follows the cluster membership");
                            return;
                        }
                        Err(e) => {
                            tracing::debug!("S3 endpoint: cluster membership not read yet: {e}");
                            if weak.strong_count() == 0 {
                                return;
                            }
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
        Ok(peers)
    }

    /// The worker that owns `url` when it is another one; `None` when this
    /// worker owns it (or knows no cluster).
    pub fn owner(&self, url: &str) -> Option<WorkerAddr> {
        let client = self.client.get()?;
        let first = client.workers_for(url).into_iter().next()?;
        (first.identity != self.me).then_some(first)
    }

    /// The cluster client, once membership is known.
    pub fn client(&self) -> Option<&Arc<Client>> {
        self.client.get()
    }

    fn get(&self, url: String) -> reqwest::RequestBuilder {
        let r = self.http.get(url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Stream bytes `[start, end)` of `url` at `version` from `owner`'s
    /// page store. An error means nothing was sent yet (so the caller can
    /// serve the range itself).
    pub async fn read(
        &self,
        owner: &WorkerAddr,
        url: &str,
        version: &str,
        start: u64,
        end: u64,
    ) -> Result<BoxStream<'static, std::result::Result<Bytes, std::io::Error>>> {
        let target = format!(
            "{}/v1/range/{}?ufsFullPath={}&offset={start}&length={}&version={}",
            owner.url_with(self.scheme),
            path_id(url),
            enc(url),
            end - start,
            enc(version)
        );
        let fail =
            |what: String| WorkerError::Unavailable(format!("owner {}: {what}", owner.addr()));
        let resp = tokio::time::timeout(FORWARD_TIMEOUT, self.get(target).send())
            .await
            .map_err(|_| fail("no answer in time".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("answered {}", resp.status())));
        }
        let got_version = resp
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok());
        if got_version != Some(version) {
            return Err(fail(format!("version {got_version:?}, not {version:?}")));
        }
        let size_ok = resp
            .headers()
            .get(FILE_SIZE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= end);
        if !size_ok {
            return Err(fail("a different file size".into()));
        }
        Ok(resp
            .bytes_stream()
            .map(|r| r.map_err(std::io::Error::other))
            .boxed())
    }

    /// Write `body` as `url` through `owner`'s write-through path; answers
    /// the owner's outcome (JSON).
    pub async fn write(
        &self,
        owner: &WorkerAddr,
        url: &str,
        body: reqwest::Body,
    ) -> Result<serde_json::Value> {
        let target = format!("{}/v1/write?path={}", owner.url_with(self.scheme), enc(url));
        let mut r = self.http.put(target).body(body);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| WorkerError::Unavailable(format!("owner {}: {e}", owner.addr())))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| WorkerError::Unavailable(format!("owner {}: {e}", owner.addr())))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or(text);
            return Err(match status.as_u16() {
                400 => WorkerError::BadRequest(msg),
                403 => WorkerError::Forbidden {
                    path: url.to_string(),
                    reason: msg,
                },
                404 => WorkerError::not_found(url),
                409 => WorkerError::Conflict(msg),
                507 => WorkerError::QuotaExceeded(msg),
                _ => WorkerError::Unavailable(format!("owner {}: {status}: {msg}", owner.addr())),
            });
        }
        serde_json::from_str(&text)
            .map_err(|e| WorkerError::Internal(format!("owner {}: bad answer: {e}", owner.addr())))
    }

    /// The S3 port of `owner` (from its `/healthz`), remembered.
    pub async fn s3_port_of(&self, owner: &WorkerAddr) -> Option<u16> {
        let key = owner.addr();
        if let Some(p) = self
            .s3_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Some(*p);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(2),
            self.http
                .get(format!("{}/healthz", owner.url_with(self.scheme)))
                .send(),
        )
        .await
        .ok()?
        .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
        let port = u16::try_from(v.get("s3_port")?.as_u64()?).ok()?;
        self.s3_ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, port);
        Some(port)
    }

    /// Tell the workers of the cluster but `keep` (the one that just
    /// wrote `url`; `None`: this worker) to forget `url`. Best effort: a
    /// worker that cannot be told keeps the old metadata until its TTL.
    pub async fn invalidate_except(&self, url: &str, keep: Option<&WorkerAddr>) {
        let Some(c) = self.client.get() else { return };
        let keep = match keep {
            Some(k) => Some(k.clone()),
            None => c.workers().into_iter().find(|w| w.identity == self.me),
        };
        let r = match &keep {
            Some(k) => c.invalidate_others(url, k).await,
            None => c.invalidate(url, false).await,
        };
        if let Err(e) = r {
            tracing::warn!(
                url,
                "S3: could not tell the workers to forget the path: {e}"
            );
        }
    }
}

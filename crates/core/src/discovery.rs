//! Worker discovery through etcd: one read, then a watch.
//!
//! Workers register under `/ServiceDiscovery/<cluster>/worker-<uuid>` (see
//! [`crate::membership`]); the cluster may publish its placement setting at
//! [`crate::membership::placement_key`]. A client:
//!
//! 1. [`discover`]: reads the live prefix and the placement key in one
//!    consistent snapshot (same revision). Records that do not parse are
//!    logged and skipped; no worker at all is [`Error::NoWorkers`], naming
//!    the cluster and the endpoints, so a typo in either is obvious.
//! 2. [`spawn_watch`]: watches the prefix and the placement key from the
//!    revision after that snapshot, so nothing between the read and the
//!    watch is missed and nothing is polled. Each batch of events is applied
//!    to the worker set and handed to [`Client::set_membership`] at once:
//!    the ring follows a join or a leave within the time etcd takes to
//!    deliver the event (milliseconds).
//! 3. When etcd fails (connection lost, watch cancelled, revision
//!    compacted), the client keeps its last good worker set and retries in
//!    the background with jittered exponential backoff (0.2 s doubling to
//!    10 s). Each retry reconnects, re-reads the whole prefix (the resync
//!    replaces the set: events missed while away do not matter) and watches
//!    again from the new snapshot. HTTP/2 keep-alive pings detect a silent
//!    network partition.
//!
//! The published placement wins over the client's own setting (every client
//! of a cluster must compute the same placement); when none is published the
//! client's [`ClientConfig::effective_placement`] applies.
//!
//! [`ClientConfig::effective_placement`]: crate::client::ClientConfig::effective_placement

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{ConnectOptions, EventType, GetOptions, WatchOptions};

use crate::client::{Client, WorkerAddr};
use crate::error::{Error, Result};
use crate::membership::{live_key, live_prefix, placement_key, WorkerRecord, DEFAULT_CLUSTER};
use crate::placement::Placement;

/// etcd's default client port.
pub const DEFAULT_ETCD_PORT: u16 = 2379;

/// First wait before reconnecting to etcd; doubles per failure.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where the cluster's membership lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd endpoints, `http://host:port` or `host:port`.
    pub endpoints: Vec<String>,
    /// Alluxio cluster name (`alluxio.cluster.name`).
    pub cluster: String,
    /// etcd user, when etcd has authentication on.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// Timeout to connect and for each read. Default 5 s.
    pub connect_timeout: Duration,
    /// TLS to etcd (`https://` endpoints). Default none.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd: the CA that signed etcd's certificate, and the client
/// certificate etcd asks for when it runs with `--client-cert-auth`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM bundle of the certificate authorities to trust; none: the
    /// system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate.
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<std::path::PathBuf>,
}

impl EtcdTls {
    /// The TLS options of an etcd connection; files that cannot be read
    /// are errors naming the setting.
    pub fn options(&self) -> Result<etcd_client::TlsOptions> {
        let read = |p: &std::path::Path, setting: &str| {
            std::fs::read(p)
                .map_err(|e| Error::InvalidArgument(format!("{setting} {}: {e}", p.display())))
        };
        let mut o = etcd_client::TlsOptions::new();
        match &self.ca {
            Some(ca) => {
                o = o.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "etcd_tls_ca")?))
            }
            None => o = o.with_enabled_roots(),
        }
        match (&self.cert, &self.key) {
            (None, None) => {}
            (Some(c), Some(k)) => {
                o = o.identity(etcd_client::Identity::from_pem(
                    read(c, "etcd_tls_cert")?,
                    read(k, "etcd_tls_key")?,
                ))
            }
            _ => {
                return Err(Error::InvalidArgument(
                    "etcd_tls_cert and etcd_tls_key go together: set both or neither".into(),
                ))
            }
        }
        Ok(o)
    }
}

/// `endpoints` with `https://` when `tls` is set, so that setting a CA is
/// enough (a mix of schemes is refused by etcd's client anyway).
pub fn with_scheme(endpoints: &[String], tls: bool) -> Vec<String> {
    endpoints
        .iter()
        .map(|e| {
            let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r);
            format!("{}://{rest}", if tls { "https" } else { "http" })
        })
        .collect()
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{DEFAULT_ETCD_PORT}")],
            cluster: DEFAULT_CLUSTER.to_string(),
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

impl EtcdConfig {
    /// A configuration for `hosts` (as [`parse_endpoints`]) and `cluster`,
    /// other fields at their defaults.
    pub fn new(hosts: &str, cluster: &str) -> Result<Self> {
        Ok(EtcdConfig {
            endpoints: parse_endpoints(hosts, DEFAULT_ETCD_PORT)?,
            cluster: cluster.to_string(),
            ..EtcdConfig::default()
        })
    }

    /// The connect options: timeouts, keep-alive, user, TLS.
    pub fn options(&self) -> Result<ConnectOptions> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some(user) = &self.username {
            o = o.with_user(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o = o.with_tls(tls.options()?);
        }
        Ok(o)
    }

    /// The endpoints with the scheme TLS asks for.
    pub fn urls(&self) -> Vec<String> {
        with_scheme(&self.endpoints, self.tls.is_some())
    }

    fn describe(&self) -> String {
        format!(
            "cluster {:?} in etcd at {}",
            self.cluster,
            self.endpoints.join(",")
        )
    }
}

/// Parse `"h1:2379,h2,http://h3:2380"` into endpoint URLs: comma separated,
/// `default_port` where none is given, `http://` where no scheme is given.
/// An IPv6 address needs brackets (`[::1]:2379`).
pub fn parse_endpoints(hosts: &str, default_port: u16) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (scheme, rest) = match h.split_once("://") {
            Some((s, r)) => (s, r),
            None => ("http", h),
        };
        if scheme != "http" && scheme != "https" {
            return Err(Error::InvalidArgument(format!(
                "etcd endpoint {h:?}: scheme must be http or https"
            )));
        }
        let rest = rest.trim_end_matches('/');
        let has_port = match rest.rfind(']') {
            Some(i) => rest[i..].contains(':'),
            None => rest.contains(':'),
        };
        if rest.is_empty() || rest.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "etcd endpoint {h:?}: expected host[:port]"
            )));
        }
        if has_port {
            out.push(format!("{scheme}://{rest}"));
        } else {
            out.push(format!("{scheme}://{rest}:{default_port}"));
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument("no etcd endpoint given".into()));
    }
    Ok(out)
}

/// What [`discover`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// The live workers, in key order.
    pub workers: Vec<WorkerAddr>,
    /// The placement the cluster publishes, if any.
    pub placement: Option<Placement>,
    /// The etcd revision of the snapshot; watch from the one after it.
    pub revision: i64,
}

/// The worker a live record describes.
pub fn worker_of(record: &WorkerRecord) -> Result<WorkerAddr> {
    Ok(WorkerAddr {
        host: record.worker_net_address.host.clone(),
        port: record.worker_net_address.http_server_port,
        identity: record.worker_identity()?,
    })
}

fn etcd_error(cfg: &EtcdConfig, what: &str, e: impl std::fmt::Display) -> Error {
    Error::NoWorkers(format!("{what} {}: {e}", cfg.describe()))
}

async fn connect(cfg: &EtcdConfig) -> Result<etcd_client::Client> {
    let fut = etcd_client::Client::connect(cfg.urls(), Some(cfg.options()?));
    match tokio::time::timeout(cfg.connect_timeout, fut).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(etcd_error(cfg, "cannot connect to", e)),
        Err(_) => Err(etcd_error(cfg, "cannot connect to", "timed out")),
    }
}

/// The workers of a live key's value; `None` (logged) when it does not
/// parse.
fn parse_worker(key: &str, value: &[u8]) -> Option<WorkerAddr> {
    match WorkerRecord::from_json(value).and_then(|r| worker_of(&r)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(key, error = %e, "skipping a worker record that does not parse");
            None
        }
    }
}

/// A published placement: the setting text (`rendezvous`, `alluxio:5`) or
/// the JSON object `{"placement": "<name>", "vnodes": N}`.
fn parse_placement(value: &[u8]) -> Option<Placement> {
    let text = String::from_utf8_lossy(value);
    let parsed = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(o)) => {
            let name = o.get("placement").and_then(|v| v.as_str()).unwrap_or("");
            let vnodes = o
                .get("vnodes")
                .and_then(|v| v.as_u64())
                .map_or(crate::placement::DEFAULT_VNODES, |v| {
                    u32::try_from(v).unwrap_or(0)
                });
            Placement::parse(name, vnodes)
        }
        _ => Placement::from_setting(&text),
    };
    match parsed {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(value = %text, error = %e,
                "ignoring the cluster's placement setting in etcd");
            None
        }
    }
}

/// The full snapshot: live workers by key, published placement, revision.
struct Snapshot {
    workers: BTreeMap<String, WorkerAddr>,
    placement: Option<Placement>,
    revision: i64,
}

async fn read_snapshot(cfg: &EtcdConfig, etcd: &mut etcd_client::Client) -> Result<Snapshot> {
    let prefix = live_prefix(&cfg.cluster);
    let pkey = placement_key(&cfg.cluster);
    let read = async {
        let live = etcd
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = live.header().map_or(0, |h| h.revision());
        // The placement key at the same revision: one consistent snapshot.
        let placed = etcd
            .get(
                pkey.as_str(),
                Some(GetOptions::new().with_revision(revision)),
            )
            .await?;
        Ok::<_, etcd_client::Error>((live, placed, revision))
    };
    let (live, placed, revision) = match tokio::time::timeout(cfg.connect_timeout, read).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(etcd_error(cfg, "cannot read", e)),
        Err(_) => return Err(etcd_error(cfg, "cannot read", "timed out")),
    };
    let mut workers = BTreeMap::new();
    for kv in live.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        if let Some(w) = parse_worker(&key, kv.value()) {
            workers.insert(key, w);
        }
    }
    let placement = placed
        .kvs()
        .first()
        .and_then(|kv| parse_placement(kv.value()));
    Ok(Snapshot {
        workers,
        placement,
        revision,
    })
}

/// Read the live workers and the published placement of `cfg.cluster`.
/// [`Error::NoWorkers`] when etcd cannot be reached or no worker is
/// registered (the message names the cluster and the endpoints).
pub async fn discover(cfg: &EtcdConfig) -> Result<Discovered> {
    let mut etcd = connect(cfg).await?;
    let snap = read_snapshot(cfg, &mut etcd).await?;
    if snap.workers.is_empty() {
        return Err(Error::NoWorkers(format!(
            "no worker is registered under {} for {}; are the workers started \
             with the same --etcd and cluster name?",
            live_prefix(&cfg.cluster),
            cfg.describe()
        )));
    }
    Ok(Discovered {
        workers: snap.workers.into_values().collect(),
        placement: snap.placement,
        revision: snap.revision,
    })
}

/// Discover the workers of a cluster, build a [`Client`] over them with the
/// published placement (else `config`'s), and keep it up to date with
/// [`spawn_watch`]. Call inside a multi-threaded tokio runtime that outlives
/// the client: the watch runs on it. Keep the handle as long as the client.
pub async fn connect_client(
    config: crate::client::ClientConfig,
    etcd: EtcdConfig,
) -> Result<(Arc<Client>, WatchHandle)> {
    let found = discover(&etcd).await?;
    let placement = found
        .placement
        .unwrap_or_else(|| config.effective_placement());
    let client = Arc::new(Client::new(config, found.workers)?);
    client.set_placement(placement);
    let handle = spawn_watch(client.clone(), etcd, found.revision);
    Ok((client, handle))
}

/// The background watch of [`spawn_watch`]; dropping it stops the watch.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl WatchHandle {
    /// Stop watching (also done on drop).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Whether the watch task has ended (it ends only when stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch the membership of `cfg.cluster` from `start_revision + 1` (the
/// revision of a [`discover`] snapshot) and apply every change to `client`.
/// Must be called inside a tokio runtime.
pub fn spawn_watch(client: Arc<Client>, cfg: EtcdConfig, start_revision: i64) -> WatchHandle {
    let workers: BTreeMap<String, WorkerAddr> = client
        .workers()
        .into_iter()
        .map(|w| (live_key(&cfg.cluster, &w.identity), w))
        .collect();
    let task = tokio::spawn(watch_loop(client, cfg, workers, start_revision));
    WatchHandle { task }
}

/// Membership as the watch knows it.
struct WatchState {
    client: Arc<Client>,
    cfg: EtcdConfig,
    workers: BTreeMap<String, WorkerAddr>,
    revision: i64,
    /// Set once a watch is established (resets the backoff).
    watching: bool,
}

impl WatchState {
    fn publish_workers(&self) {
        self.client
            .set_workers(self.workers.values().cloned().collect());
    }

    fn fallback_placement(&self) -> Placement {
        self.client.config().effective_placement()
    }

    /// Replace everything with a fresh snapshot.
    fn apply_snapshot(&mut self, snap: Snapshot) {
        let before: Vec<&WorkerAddr> = self.workers.values().collect();
        let after: Vec<&WorkerAddr> = snap.workers.values().collect();
        if before != after {
            tracing::info!(cluster = %self.cfg.cluster, workers = after.len(),
                "worker set resynchronized from etcd");
        }
        self.workers = snap.workers;
        self.revision = snap.revision;
        let placement = snap.placement.unwrap_or_else(|| self.fallback_placement());
        self.client
            .set_membership(self.workers.values().cloned().collect(), placement);
    }

    /// Apply one watch response to the worker set and the placement.
    fn apply(&mut self, resp: &etcd_client::WatchResponse) {
        let prefix = live_prefix(&self.cfg.cluster);
        let pkey = placement_key(&self.cfg.cluster);
        let mut changed = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            self.revision = self.revision.max(kv.mod_revision());
            if key == pkey {
                let p = match ev.event_type() {
                    EventType::Put => parse_placement(kv.value()),
                    EventType::Delete => None,
                }
                .unwrap_or_else(|| self.fallback_placement());
                if p != self.client.placement() {
                    tracing::info!(cluster = %self.cfg.cluster, placement = %p,
                        "placement changed");
                    self.client.set_placement(p);
                }
            } else if key.starts_with(&prefix) {
                match ev.event_type() {
                    EventType::Put => {
                        if let Some(w) = parse_worker(&key, kv.value()) {
                            if self.workers.get(&key) != Some(&w) {
                                tracing::info!(worker = %w.addr(), key, "worker joined");
                                self.workers.insert(key, w);
                                changed = true;
                            }
                        }
                    }
                    EventType::Delete => {
                        if let Some(w) = self.workers.remove(&key) {
                            tracing::info!(worker = %w.addr(), key, "worker left");
                            changed = true;
                        }
                    }
                }
            }
        }
        if let Some(h) = resp.header() {
            self.revision = self.revision.max(h.revision());
        }
        if changed {
            self.publish_workers();
        }
    }

    /// Connect, optionally resync, then follow events until an error.
    async fn follow(&mut self, resync: bool) -> Result<std::convert::Infallible> {
        let mut etcd = connect(&self.cfg).await?;
        if resync {
            let snap = read_snapshot(&self.cfg, &mut etcd).await?;
            self.apply_snapshot(snap);
        }
        let from = self.revision + 1;
        let prefix = live_prefix(&self.cfg.cluster);
        let pkey = placement_key(&self.cfg.cluster);
        let open = async {
            let mut stream = etcd
                .watch(
                    prefix.as_str(),
                    Some(WatchOptions::new().with_prefix().with_start_revision(from)),
                )
                .await?;
            stream
                .watch(
                    pkey.as_str(),
                    Some(WatchOptions::new().with_start_revision(from)),
                )
                .await?;
            Ok::<_, etcd_client::Error>(stream)
        };
        let mut stream = match tokio::time::timeout(self.cfg.connect_timeout, open).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(etcd_error(&self.cfg, "cannot watch", e)),
            Err(_) => return Err(etcd_error(&self.cfg, "cannot watch", "timed out")),
        };
        tracing::debug!(cluster = %self.cfg.cluster, from, "watching etcd");
        self.watching = true;
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        return Err(etcd_error(
                            &self.cfg,
                            "watch cancelled on",
                            format!(
                                "{} (compacted at {})",
                                resp.cancel_reason(),
                                resp.compact_revision()
                            ),
                        ));
                    }
                    self.apply(&resp);
                }
                Ok(None) => return Err(etcd_error(&self.cfg, "watch ended on", "stream closed")),
                Err(e) => return Err(etcd_error(&self.cfg, "lost the watch on", e)),
            }
        }
    }
}

async fn watch_loop(
    client: Arc<Client>,
    cfg: EtcdConfig,
    workers: BTreeMap<String, WorkerAddr>,
    start_revision: i64,
) {
    let mut state = WatchState {
        client,
        cfg,
        workers,
        revision: start_revision,
        watching: false,
    };
    // The caller's snapshot is the starting point: no resync the first time.
    let mut resync = false;
    let mut failures: u32 = 0;
    loop {
        state.watching = false;
        let Err(err) = state.follow(resync).await;
        resync = true;
        if state.watching {
            // The watch was up for a while: start the backoff afresh.
            failures = 0;
        }
        failures = failures.saturating_add(1);
        if failures == 1 {
            tracing::warn!(error = %err,
                "etcd unavailable; keeping the last known workers and retrying");
        } else {
            tracing::debug!(error = %err, failures, "etcd still unavailable");
        }
        let full = RETRY_BASE
            .saturating_mul(1u32 << (failures - 1).min(10))
            .min(RETRY_MAX);
        tokio::time::sleep(full.mul_f64(rand::random_range(0.5..=1.0))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoints("h1:2379, h2 ,http://h3:2380/", 2379).unwrap(),
            vec!["http://h1:2379", "http://h2:2379", "http://h3:2380"]
        );
        assert_eq!(
            parse_endpoints("[::1]:3000,[::1]", 2379).unwrap(),
            vec!["http://[::1]:3000", "http://[::1]:2379"]
        );
        assert!(parse_endpoints(" , ", 2379).is_err());
        assert!(parse_endpoints("ftp://h", 2379).is_err());
        assert!(parse_endpoints("h/x", 2379).is_err());
        let c = EtcdConfig::new("a,b:1", "c1").unwrap();
        assert_eq!(c.endpoints, vec!["http://a:2379", "http://b:1"]);
        assert_eq!(c.cluster, "c1");
    }

    #[test]
    fn a_record_gives_its_worker() {
        let id = crate::ring::WorkerIdentity::from_hostname("w1");
        let rec = WorkerRecord::new(&id, "10.1.2.3", 28081);
        let w = worker_of(&rec).unwrap();
        assert_eq!(w.host, "10.1.2.3");
        assert_eq!(w.port, 28081);
        assert_eq!(w.identity, id);
        assert!(parse_worker("k", b"not json").is_none());
        assert_eq!(parse_placement(b"rendezvous"), Some(Placement::Rendezvous));
        assert_eq!(parse_placement(b"bogus"), None);
        assert_eq!(
            parse_placement(br#"{"placement": "alluxio", "vnodes": 7}"#),
            Some(Placement::Alluxio { vnodes: 7 })
        );
        assert_eq!(
            parse_placement(br#"{"placement": "rendezvous"}"#),
            Some(Placement::Rendezvous)
        );
        assert_eq!(parse_placement(br#"{"vnodes": 7}"#), None);
    }
}

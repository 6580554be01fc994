//! Cluster membership: the worker's registration in etcd.
//!
//! Design (the layout Alluxio uses: `docs/protocol.md`, section 4):
//!
//! - **Identity** is persistent: the configured UUID, else the UUID in
//!   `<first cache dir>/worker_identity`, else a new random one written
//!   there (temp file + rename), so that a restarted worker owns the same
//!   ring positions and finds its pages where clients expect them.
//! - **Registration** runs in one background task and never stops the
//!   worker from serving HTTP. One attempt, on a fresh connection, is:
//!   1. the cluster placement: put-if-absent (a transaction on the key's
//!      create revision) of this worker's setting; when another setting is
//!      already published, refuse (clients would compute a different
//!      placement than this worker's peers);
//!   2. grant a lease of the configured TTL;
//!   3. in one transaction, the live key (attached to the lease) and the
//!      persistent `AUTHORIZED` key, both holding the worker record;
//!   4. open the keep-alive stream.
//! - **Keep-alive** every TTL/3. The lease is lost when the stream fails or
//!   ends, when etcd answers TTL 0 (expired), or when no answer came for a
//!   whole TTL; the task then starts over with a new lease (the previous one
//!   is revoked best-effort, so its keys cannot outlive the new ones).
//! - **Retries** back off exponentially with jitter from 200 ms to 5 s
//!   (30 s while refused). Each state change is logged once, not each retry.
//! - **Shutdown** deletes the live key and revokes the lease within
//!   [`SHUTDOWN_BUDGET`], before the HTTP server stops, so clients route
//!   elsewhere at once instead of after the TTL.
//!
//! Every etcd call is bounded by a timeout: the etcd client's balanced
//! channel would otherwise wait forever for an endpoint that is down.

use crate::config::{WorkerConfig, IDENTITY_FILE};
use crate::error::{Result, WorkerError};
use alluxiofs_core::membership::{authorized_key, live_key, placement_key, WorkerRecord};
use alluxiofs_core::placement::Placement;
use alluxiofs_core::ring::WorkerIdentity;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse,
};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// How long graceful shutdown may spend deregistering.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);
/// Bound on one etcd request.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// Where the worker stands with etcd (shown by `/healthz` as `registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// No etcd configured.
    Disabled,
    /// Trying to register (etcd unreachable, or the lease was lost).
    Connecting,
    /// The live key is in etcd and its lease is kept alive.
    Registered,
    /// The cluster publishes a placement other than this worker's.
    Refused,
    /// Deregistered at shutdown.
    Stopped,
}

impl Registration {
    /// Lowercase name: `disabled`, `connecting`, `registered`, `refused`, `stopped`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Registration::Disabled => "disabled",
            Registration::Connecting => "connecting",
            Registration::Registered => "registered",
            Registration::Refused => "refused",
            Registration::Stopped => "stopped",
        }
    }
}

/// The worker's persistent identity: `config.worker_id`, else the UUID in
/// `<first cache dir>/worker_identity`, else a new random UUID written
/// there atomically. A file that exists but holds no UUID is an error (a
/// silent new identity would move every path this worker owns).
pub fn resolve_identity(config: &WorkerConfig) -> Result<WorkerIdentity> {
    if let Some(id) = config.worker_id {
        return Ok(WorkerIdentity::from_uuid(id));
    }
    let dir = config
        .cache_dirs
        .first()
        .map(|d| d.path.clone())
        .ok_or_else(|| WorkerError::Config("no cache directory configured".into()))?;
    load_or_create_identity(&dir.join(IDENTITY_FILE)).map(WorkerIdentity::from_uuid)
}

/// Read the UUID in `path`, or create the file with a new random UUID.
pub fn load_or_create_identity(path: &Path) -> Result<uuid::Uuid> {
    match std::fs::read_to_string(path) {
        Ok(text) => uuid::Uuid::parse_str(text.trim()).map_err(|e| {
            WorkerError::Config(format!(
                "identity file {} does not hold a UUID ({e}); fix it, remove it to get a new \
                 identity, or pass --worker-id",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4();
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| WorkerError::io(format!("cannot create {}", dir.display()), e))?;
            }
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".tmp.{}", std::process::id()));
            let tmp = std::path::PathBuf::from(tmp);
            let written = (|| {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(format!("{id}\n").as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)
            })();
            written.map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                WorkerError::io(format!("cannot write identity file {}", path.display()), e)
            })?;
            tracing::info!("new worker identity {id} written to {}", path.display());
            Ok(id)
        }
        Err(e) => Err(WorkerError::io(
            format!("cannot read identity file {}", path.display()),
            e,
        )),
    }
}

/// Everything registration needs, resolved from the configuration.
#[derive(Clone)]
pub struct MembershipSettings {
    /// etcd endpoints, `http://host:port`.
    pub endpoints: Vec<String>,
    /// The cluster name.
    pub cluster: String,
    /// Lease TTL, whole seconds (at least 1).
    pub lease_ttl: Duration,
    /// etcd user and password.
    pub user: Option<(String, String)>,
    /// The placement this worker agrees to.
    pub placement: Placement,
    /// TLS to etcd.
    pub tls: Option<alluxiofs_core::discovery::EtcdTls>,
}

impl std::fmt::Debug for MembershipSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipSettings")
            .field("endpoints", &self.endpoints)
            .field("cluster", &self.cluster)
            .field("lease_ttl", &self.lease_ttl)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("placement", &self.placement)
            .field("tls", &self.tls)
            .finish()
    }
}

impl MembershipSettings {
    /// The settings of `config`; `None` when no etcd endpoint is configured.
    pub fn from_config(config: &WorkerConfig) -> Result<Option<Self>> {
        if config.etcd.is_empty() {
            return Ok(None);
        }
        Ok(Some(MembershipSettings {
            endpoints: config.etcd.clone(),
            cluster: config.cluster_name.clone(),
            lease_ttl: config.etcd_lease_ttl,
            user: config.resolve_etcd_user()?,
            placement: config.placement,
            tls: config.etcd_tls(),
        }))
    }

    fn ttl_secs(&self) -> i64 {
        let ms = self.lease_ttl.as_millis().max(1000);
        ms.div_ceil(1000).min(i64::MAX as u128) as i64
    }
}

/// The placement value as stored under [`placement_key`]: the setting text
/// (`alluxio:5`, `rendezvous`), see [`Placement::to_setting`].
pub fn placement_value(p: &Placement) -> String {
    p.to_setting()
}

/// Parse a stored placement value: the setting text, or the JSON object
/// `{"placement": "<name>", "vnodes": N}`.
pub fn parse_placement_value(bytes: &[u8]) -> Option<Placement> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let name = v.get("placement")?.as_str()?;
        let vnodes = match v.get("vnodes") {
            Some(n) => u32::try_from(n.as_u64()?).ok()?,
            None => alluxiofs_core::placement::DEFAULT_VNODES,
        };
        return Placement::parse(name, vnodes).ok();
    }
    Placement::from_setting(text).ok()
}

/// A running registration: a background task keeping this worker listed.
#[derive(Debug)]
pub struct Membership {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    key: String,
}

impl Membership {
    /// Start registering `record` (the worker with `id`) in the background;
    /// progress is published on `status`.
    pub fn start(
        settings: MembershipSettings,
        id: &WorkerIdentity,
        record: WorkerRecord,
        status: watch::Sender<Registration>,
    ) -> Membership {
        let key = live_key(&settings.cluster, id);
        let (stop, stopped) = oneshot::channel();
        let task = Registrar {
            live: key.clone(),
            authorized: authorized_key(&settings.cluster, id),
            placement_key: placement_key(&settings.cluster),
            value: record.to_json(),
            settings,
            status,
            pending_lease: AtomicI64::new(0),
        };
        let task = tokio::spawn(task.run(stopped));
        Membership {
            stop: Some(stop),
            task,
            key,
        }
    }

    /// The live key this worker registers.
    pub fn live_key(&self) -> &str {
        &self.key
    }

    /// Deregister (delete the live key, revoke the lease) within
    /// [`SHUTDOWN_BUDGET`], and stop the task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The task bounds its own cleanup; this outer bound is a safety net.
        if timeout(SHUTDOWN_BUDGET + Duration::from_millis(500), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }

    /// Stop keeping the lease alive without deregistering, as if the process
    /// had died: the live key disappears when the lease expires.
    pub fn abandon(self) {
        self.task.abort();
    }
}

enum Failure {
    /// etcd unreachable or an operation failed: retry soon.
    Failed(String),
    /// The cluster's placement differs: retry rarely.
    Refused(String),
}

struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

enum End {
    Stopped,
    Lost(String),
}

struct Registrar {
    settings: MembershipSettings,
    live: String,
    authorized: String,
    placement_key: String,
    value: String,
    status: watch::Sender<Registration>,
    /// The lease of an attempt in progress (0 = none), revoked when a stop
    /// interrupts the attempt, so its keys do not linger for a TTL.
    pending_lease: AtomicI64,
}

/// Run `f` within `limit`, mapping both failure kinds to a message.
async fn bounded<T, F>(what: &str, limit: Duration, f: F) -> std::result::Result<T, String>
where
    F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    match timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {limit:?}")),
    }
}

impl Registrar {
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let endpoints = self.settings.endpoints.join(",");
        let mut backoff = BACKOFF_MIN;
        let mut previous_lease: Option<i64> = None;
        // The kind of the last failure logged, so a retry loop logs once.
        let mut logged: Option<Registration> = None;
        loop {
            let attempt = tokio::select! {
                r = self.register() => r,
                _ = &mut stop => {
                    self.revoke_pending().await;
                    break;
                }
            };
            let wait = match attempt {
                Ok(mut session) => {
                    tracing::info!(
                        key = %self.live,
                        lease = session.lease,
                        ttl_s = self.settings.ttl_secs(),
                        "registered in etcd ({endpoints})"
                    );
                    if let Some(old) = previous_lease.take() {
                        let mut c = session.client.clone();
                        tokio::spawn(async move {
                            let _ = timeout(OP_TIMEOUT, c.lease_revoke(old)).await;
                        });
                    }
                    self.status.send_replace(Registration::Registered);
                    logged = None;
                    backoff = BACKOFF_MIN;
                    match self.keep_alive(&mut session, &mut stop).await {
                        End::Stopped => {
                            self.deregister(&mut session).await;
                            self.status.send_replace(Registration::Stopped);
                            return;
                        }
                        End::Lost(why) => {
                            tracing::warn!(
                                key = %self.live,
                                "etcd registration lost ({why}); registering again"
                            );
                            previous_lease = Some(session.lease);
                            self.status.send_replace(Registration::Connecting);
                            Duration::ZERO
                        }
                    }
                }
                Err(Failure::Failed(why)) => {
                    if logged != Some(Registration::Connecting) {
                        tracing::warn!(
                            "cannot register in etcd ({endpoints}): {why}; serving anyway and \
                             retrying in the background"
                        );
                        logged = Some(Registration::Connecting);
                    } else {
                        tracing::debug!("etcd registration retry failed: {why}");
                    }
                    self.status.send_replace(Registration::Connecting);
                    let w = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    w
                }
                Err(Failure::Refused(why)) => {
                    if logged != Some(Registration::Refused) {
                        tracing::error!("{why}");
                        logged = Some(Registration::Refused);
                    }
                    self.status.send_replace(Registration::Refused);
                    jitter(REFUSED_RETRY)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => break,
            }
        }
        self.status.send_replace(Registration::Stopped);
    }

    async fn connect(&self) -> std::result::Result<Client, String> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_auto_token_refresh(true);
        if let Some((user, password)) = &self.settings.user {
            options = options.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.settings.tls {
            options = options.with_tls(tls.options().map_err(|e| e.to_string())?);
        }
        let endpoints = alluxiofs_core::discovery::with_scheme(
            &self.settings.endpoints,
            self.settings.tls.is_some(),
        );
        bounded(
            "connect",
            CONNECT_TIMEOUT + OP_TIMEOUT,
            Client::connect(endpoints, Some(options)),
        )
        .await
    }

    async fn register(&self) -> std::result::Result<Session, Failure> {
        let mut client = self.connect().await.map_err(Failure::Failed)?;
        self.check_placement(&mut client).await?;
        let ttl = self.settings.ttl_secs();
        let lease = bounded("lease grant", OP_TIMEOUT, client.lease_grant(ttl, None))
            .await
            .map_err(Failure::Failed)?
            .id();
        self.pending_lease.store(lease, Ordering::SeqCst);
        let result = self.put_keys(&mut client, lease).await;
        self.pending_lease.store(0, Ordering::SeqCst);
        let (keeper, stream) = match result {
            Ok(k) => k,
            Err(e) => {
                let _ = timeout(OP_TIMEOUT, client.lease_revoke(lease)).await;
                return Err(Failure::Failed(e));
            }
        };
        Ok(Session {
            client,
            lease,
            keeper,
            stream,
        })
    }

    /// The live key (on `lease`) and the authorized key in one transaction,
    /// then the keep-alive stream.
    async fn put_keys(
        &self,
        client: &mut Client,
        lease: i64,
    ) -> std::result::Result<(LeaseKeeper, LeaseKeepAliveStream), String> {
        let put = Txn::new().and_then(vec![
            TxnOp::put(
                self.live.as_str(),
                self.value.as_str(),
                Some(PutOptions::new().with_lease(lease).with_prev_key()),
            ),
            TxnOp::put(self.authorized.as_str(), self.value.as_str(), None),
        ]);
        let resp = bounded("put worker keys", OP_TIMEOUT, client.txn(put)).await?;
        let previous = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().cloned(),
            _ => None,
        });
        // A live record of this identity with another address: a previous
        // run that died without deregistering, or (a configuration error)
        // another worker with the same identity.
        if let Some(prev) = previous {
            if prev.value() != self.value.as_bytes() {
                tracing::warn!(
                    key = %self.live,
                    previous = %String::from_utf8_lossy(prev.value()),
                    "replaced a live record of this worker identity with another address: a \
                     previous run, or another worker with the same identity (give each worker \
                     its own --worker-id or cache directory)"
                );
            }
        }
        bounded(
            "lease keep-alive",
            OP_TIMEOUT,
            client.lease_keep_alive(lease),
        )
        .await
    }

    /// Revoke the lease of an attempt a stop interrupted (its keys go with
    /// it), within [`SHUTDOWN_BUDGET`].
    async fn revoke_pending(&self) {
        let lease = self.pending_lease.swap(0, Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let _ = timeout(SHUTDOWN_BUDGET, async {
            if let Ok(mut c) = self.connect().await {
                let _ = c.lease_revoke(lease).await;
            }
        })
        .await;
    }

    /// Publish this worker's placement unless the cluster has one; refuse
    /// when the cluster's differs.
    async fn check_placement(&self, client: &mut Client) -> std::result::Result<(), Failure> {
        let mine = self.settings.placement;
        let key = self.placement_key.as_str();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, placement_value(&mine), None)])
            .or_else(vec![TxnOp::get(key, None)]);
        let resp = bounded("placement", OP_TIMEOUT, client.txn(txn))
            .await
            .map_err(Failure::Failed)?;
        if resp.succeeded() {
            tracing::info!(
                "published the placement of cluster {:?}: {mine}",
                self.settings.cluster
            );
            return Ok(());
        }
        let stored = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        // Deleted between the compare and the get: the next attempt writes it.
        let Some(stored) = stored else {
            return Err(Failure::Failed("placement key changed concurrently".into()));
        };
        match parse_placement_value(&stored) {
            Some(theirs) if theirs == mine => Ok(()),
            theirs => Err(Failure::Refused(format!(
                "refusing to register in etcd: cluster {:?} uses placement {} (key {key}) but \
                 this worker is configured with {mine}; all workers of a cluster must agree \
                 (set --placement {}, or delete the key if no worker of the old setting remains)",
                self.settings.cluster,
                theirs.map_or_else(
                    || format!("{:?} (unreadable)", String::from_utf8_lossy(&stored)),
                    |p| p.to_string()
                ),
                theirs.map_or_else(|| "...".to_string(), |p| p.to_string()),
            ))),
        }
    }

    async fn keep_alive(&self, s: &mut Session, stop: &mut oneshot::Receiver<()>) -> End {
        let ttl = Duration::from_secs(self.settings.ttl_secs() as u64);
        let mut tick = tokio::time::interval(ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_ok = Instant::now();
        loop {
            tokio::select! {
                _ = &mut *stop => return End::Stopped,
                _ = tick.tick() => {
                    if last_ok.elapsed() >= ttl {
                        return End::Lost(format!("no keep-alive answer for {ttl:?}"));
                    }
                    match timeout(OP_TIMEOUT, s.keeper.keep_alive()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return End::Lost(format!("keep-alive: {e}")),
                        Err(_) => return End::Lost("keep-alive: send blocked".into()),
                    }
                }
                msg = s.stream.message() => match msg {
                    Ok(Some(r)) if r.ttl() > 0 => last_ok = Instant::now(),
                    Ok(Some(_)) => return End::Lost("the lease expired".into()),
                    Ok(None) => return End::Lost("keep-alive stream closed".into()),
                    Err(e) => return End::Lost(format!("keep-alive: {e}")),
                },
            }
        }
    }

    async fn deregister(&self, s: &mut Session) {
        let started = Instant::now();
        let work = async {
            let deleted = s.client.delete(self.live.as_str(), None).await;
            let revoked = s.client.lease_revoke(s.lease).await;
            (deleted, revoked)
        };
        match timeout(SHUTDOWN_BUDGET, work).await {
            Ok((Ok(_), Ok(_))) => tracing::info!(
                key = %self.live,
                "deregistered from etcd in {:?}",
                started.elapsed()
            ),
            Ok((d, r)) => tracing::warn!(
                key = %self.live,
                "deregistering from etcd failed (delete: {:?}, revoke: {:?}); the key expires \
                 with its lease",
                d.err().map(|e| e.to_string()),
                r.err().map(|e| e.to_string())
            ),
            Err(_) => tracing::warn!(
                key = %self.live,
                "deregistering from etcd took over {SHUTDOWN_BUDGET:?}; the key expires with \
                 its lease"
            ),
        }
    }
}

/// `d` scaled by a random factor in [0.5, 1.0).
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(IDENTITY_FILE);
        let a = load_or_create_identity(&path).unwrap();
        assert_eq!(a.get_version_num(), 4);
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            a.to_string()
        );
        let other = tempfile::tempdir().unwrap();
        let c = load_or_create_identity(&other.path().join(IDENTITY_FILE)).unwrap();
        assert_ne!(a, c, "two stores, two identities");
    }

    #[test]
    fn corrupt_identity_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        std::fs::write(&path, "not-a-uuid\n").unwrap();
        let err = load_or_create_identity(&path).unwrap_err();
        assert!(err.to_string().contains("does not hold a UUID"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not-a-uuid\n");
    }

    #[test]
    fn configured_identity_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WorkerConfig::with_mounts(["/data"]);
        cfg.cache_dirs = vec![crate::config::CacheDirConfig::new(dir.path())];
        let from_file = resolve_identity(&cfg).unwrap();
        assert_eq!(resolve_identity(&cfg).unwrap(), from_file);
        let id = uuid::Uuid::parse_str("b785d1f0-9886-3821-a4eb-6bee226c35b7").unwrap();
        cfg.worker_id = Some(id);
        let configured = resolve_identity(&cfg).unwrap();
        assert_eq!(configured.uuid(), id);
        assert_eq!(configured.version, 1);
    }

    #[test]
    fn placement_values_round_trip_and_accept_json() {
        for p in [
            Placement::default(),
            Placement::Alluxio { vnodes: 100 },
            Placement::Rendezvous,
        ] {
            assert_eq!(
                parse_placement_value(placement_value(&p).as_bytes()),
                Some(p)
            );
        }
        assert_eq!(
            parse_placement_value(br#"{"placement": "alluxio", "vnodes": 7}"#),
            Some(Placement::Alluxio { vnodes: 7 })
        );
        assert_eq!(
            parse_placement_value(br#"{"placement":"rendezvous","vnodes":5}"#),
            Some(Placement::Rendezvous)
        );
        assert_eq!(parse_placement_value(b"maglev"), None);
        assert_eq!(parse_placement_value(b"\xff"), None);
    }

    #[test]
    fn lease_ttl_rounds_up_to_whole_seconds() {
        let mut s = MembershipSettings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            cluster: "c".into(),
            lease_ttl: Duration::from_millis(2500),
            user: Some(("u".into(), "secret-pw".into())),
            placement: Placement::default(),
            tls: None,
        };
        assert_eq!(s.ttl_secs(), 3);
        s.lease_ttl = Duration::from_secs(10);
        assert_eq!(s.ttl_secs(), 10);
        assert!(!format!("{s:?}").contains("secret-pw"));
    }
}

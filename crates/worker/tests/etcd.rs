//! The worker's registration in a real etcd (`/usr/bin/etcd`, Debian's
//! etcd-server) started on loopback ports chosen at run time. Skipped, with
//! a note, where etcd is not installed.

use alluxiofs_core::membership::{authorized_key, live_key, live_prefix, placement_key};
use alluxiofs_core::ring::WorkerIdentity;
use alluxiofs_worker::config::{CacheDirConfig, IDENTITY_FILE};
use alluxiofs_worker::membership::Registration;
use alluxiofs_worker::{start, RunningWorker, WorkerConfig};
use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ETCD: &str = "/usr/bin/etcd";
const BIN: &str = env!("CARGO_BIN_EXE_alluxiofs-worker");

/// One etcd server with its data in a temporary directory; killed on drop.
/// Its ports are chosen when it is created, so a test can point a worker at
/// it before [`Etcd::launch`], and launch it again after [`Etcd::kill`].
struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// An etcd not yet running (a test without it fails: it would test nothing).
    fn reserve() -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} not found: these tests need a real etcd (`make system-deps` installs etcd-server)"
        );
        // Hold both listeners at once so the two ports differ.
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        Etcd {
            dir: tempfile::tempdir().unwrap(),
            client_port: a.local_addr().unwrap().port(),
            peer_port: b.local_addr().unwrap().port(),
            child: None,
        }
    }

    /// A running etcd.
    async fn start() -> Etcd {
        let mut etcd = Etcd::reserve();
        etcd.launch().await;
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Start the server (again: the data directory is kept) and wait until
    /// it answers.
    async fn launch(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_secs(1),
                Client::connect([client.as_str()], None),
            )
            .await
            {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(1), c.get("probe", None)).await
                {
                    return;
                }
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || started.elapsed() > Duration::from_secs(15) {
                let log = std::fs::read_to_string(self.dir.path().join("etcd.log"));
                panic!("etcd did not start ({exited:?}): {log:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kill the server (SIGKILL) and reap it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None).await.unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A worker configuration: a local mount, its own cache directory under
/// `dir`, any free port, registered in `etcd` with a lease of `ttl`.
fn worker_config(dir: &Path, etcd: &str, ttl: Duration) -> WorkerConfig {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut cfg = WorkerConfig::with_mounts([data.to_str().unwrap()]);
    cfg.port = 0;
    cfg.cache_dirs = vec![CacheDirConfig::new(dir.join("cache"))];
    cfg.memory_capacity = 1 << 20;
    cfg.etcd = vec![etcd.to_string()];
    cfg.etcd_lease_ttl = ttl;
    cfg
}

async fn get(c: &mut Client, key: &str) -> Option<KeyValue> {
    c.get(key, None).await.unwrap().kvs().first().cloned()
}

async fn live_keys(c: &mut Client, cluster: &str) -> Vec<String> {
    let resp = c
        .get(live_prefix(cluster), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect()
}

/// Poll `check` every 50 ms until it holds or `limit` passes.
async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_registered(w: &RunningWorker, limit: Duration) -> bool {
    eventually(limit, async || w.registration() == Registration::Registered).await
}

async fn healthz(w: &RunningWorker) -> serde_json::Value {
    let body = reqwest::get(format!("{}/healthz", w.url()))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_in_the_alluxio_layout_and_keeps_the_lease_alive() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(2));
    cfg.cluster_name = "test-cluster".into();
    let w = start(cfg).await.unwrap();
    assert!(wait_registered(&w, Duration::from_secs(10)).await);
    let id = w.identity();
    let uuid = id.uuid().to_string();
    let port = w.addr().port();

    let mut c = etcd.client().await;
    let key = format!("/ServiceDiscovery/test-cluster/worker-{uuid}");
    assert_eq!(live_key("test-cluster", &id), key);
    assert_eq!(live_keys(&mut c, "test-cluster").await, vec![key.clone()]);
    let live = get(&mut c, &key).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(live.value()).unwrap();
    let expected = serde_json::json!({
        "Identity": {"version": 1, "identifier": uuid.replace('-', "")},
        "WorkerNetAddress": {
            "Host": "127.0.0.1", "ContainerHost": "", "RpcPort": 29999, "DataPort": 29997,
            "SecureRpcPort": 0, "NettyDataPort": 29997, "WebPort": 30000,
            // The same-node read socket (an alluxiofs addition in Alluxio's field).
            "DomainSocketPath": alluxiofs_worker::config::LocalSocket::Auto
                .resolve("127.0.0.1", port).unwrap().display().to_string(),
            "HttpServerPort": port
        },
        "State": "AUTHORIZED",
        "GenerationNumber": -1,
        "ServiceEntityName": format!("worker-{uuid}"),
    });
    assert_eq!(v, expected);
    assert_ne!(live.lease(), 0, "the live key is leased");
    let ttl = c.lease_time_to_live(live.lease(), None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 2);

    let auth = get(
        &mut c,
        &format!("/DHT/test-cluster/AUTHORIZED/worker-{uuid}"),
    )
    .await
    .expect("authorized key");
    assert_eq!(authorized_key("test-cluster", &id), auth.key_str().unwrap());
    assert_eq!(auth.lease(), 0, "the authorized key is persistent");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(auth.value()).unwrap(),
        expected
    );
    let placement = get(&mut c, &placement_key("test-cluster")).await.unwrap();
    assert_eq!(placement.value_str().unwrap(), "alluxio:5");

    let h = healthz(&w).await;
    assert_eq!(h["worker_id"], uuid);
    assert_eq!(h["cluster"], "test-cluster");
    assert_eq!(h["registration"], "registered");
    let file = std::fs::read_to_string(dir.path().join("cache").join(IDENTITY_FILE)).unwrap();
    assert_eq!(file.trim(), uuid);

    // Twice the TTL later the key is still there on the same lease: the
    // keep-alive works.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again = get(&mut c, &key).await.expect("key kept alive");
    assert_eq!(again.lease(), live.lease());
    assert_eq!(w.registration(), Registration::Registered);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_persists_across_restarts_with_the_same_cache_dir() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = "DefaultAlluxioCluster";
    let mut c = etcd.client().await;
    let cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(5));

    let first = start(cfg.clone()).await.unwrap();
    assert!(wait_registered(&first, Duration::from_secs(10)).await);
    let id = first.identity();
    assert_eq!(live_keys(&mut c, cluster).await, [live_key(cluster, &id)]);
    first.shutdown().await.unwrap();
    assert!(live_keys(&mut c, cluster).await.is_empty());

    let second = start(cfg.clone()).await.unwrap();
    assert!(wait_registered(&second, Duration::from_secs(10)).await);
    assert_eq!(second.identity(), id, "same cache dir, same identity");
    assert_eq!(live_keys(&mut c, cluster).await, [live_key(cluster, &id)]);

    // Another cache directory is another worker.
    let other_dir = tempfile::tempdir().unwrap();
    let other = start(worker_config(
        other_dir.path(),
        &etcd.endpoint(),
        Duration::from_secs(5),
    ))
    .await
    .unwrap();
    assert!(wait_registered(&other, Duration::from_secs(10)).await);
    assert_ne!(other.identity(), id);
    let mut keys = live_keys(&mut c, cluster).await;
    keys.sort();
    let mut want = vec![live_key(cluster, &id), live_key(cluster, &other.identity())];
    want.sort();
    assert_eq!(keys, want);
    second.shutdown().await.unwrap();
    other.shutdown().await.unwrap();

    // A configured identity wins over the file.
    let configured = uuid::Uuid::new_v4();
    let mut cfg3 = cfg;
    cfg3.worker_id = Some(configured);
    let third = start(cfg3).await.unwrap();
    assert!(wait_registered(&third, Duration::from_secs(10)).await);
    assert_eq!(third.identity(), WorkerIdentity::from_uuid(configured));
    assert_eq!(
        live_keys(&mut c, cluster).await,
        [live_key(cluster, &third.identity())]
    );
    third.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_removes_the_live_key_at_once() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A long TTL: expiry cannot explain the key going away.
    let cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(60));
    let w = start(cfg).await.unwrap();
    assert!(wait_registered(&w, Duration::from_secs(10)).await);
    let cluster = "DefaultAlluxioCluster";
    let id = w.identity();
    let mut c = etcd.client().await;
    let lease = get(&mut c, &live_key(cluster, &id)).await.unwrap().lease();

    let started = Instant::now();
    w.shutdown().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    assert!(get(&mut c, &live_key(cluster, &id)).await.is_none());
    let ttl = c.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "the lease is revoked");
    assert!(
        get(&mut c, &authorized_key(cluster, &id)).await.is_some(),
        "the authorized key stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_disappears_after_the_lease_ttl() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = Command::new(BIN)
        .args([
            "--port",
            "0",
            "--etcd-lease-ttl",
            "2s",
            "--cluster-name",
            "kill",
        ])
        .arg("--etcd")
        .arg(format!("127.0.0.1:{}", etcd.client_port))
        .arg("--mount")
        .arg(&data)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--ready-file")
        .arg(&ready)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = etcd.client().await;
    let registered = eventually(Duration::from_secs(20), async || {
        live_keys(&mut c, "kill").await.len() == 1
    })
    .await;
    if !registered {
        let _ = child.kill();
        panic!("the worker binary did not register");
    }
    let uuid = std::fs::read_to_string(dir.path().join("cache").join(IDENTITY_FILE)).unwrap();
    let id = WorkerIdentity::from_uuid(uuid::Uuid::parse_str(uuid.trim()).unwrap());
    let key = live_key("kill", &id);
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let record = get(&mut c, &key).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(record.value()).unwrap();
    assert_eq!(v["WorkerNetAddress"]["HttpServerPort"], info["port"]);

    child.kill().unwrap(); // SIGKILL: no deregistration
    child.wait().unwrap();
    let killed = Instant::now();
    assert!(
        get(&mut c, &key).await.is_some(),
        "the key outlives the process until its lease expires"
    );
    let gone = eventually(Duration::from_secs(8), async || {
        get(&mut c, &key).await.is_none()
    })
    .await;
    let after = killed.elapsed();
    assert!(gone, "the key did not expire");
    assert!(
        after <= Duration::from_secs(4),
        "expired only after {after:?}"
    );
    assert!(
        get(&mut c, &authorized_key("kill", &id)).await.is_some(),
        "the authorized key stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_abandoning_its_lease_disappears_after_the_ttl() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(2));
    let mut w = start(cfg).await.unwrap();
    assert!(wait_registered(&w, Duration::from_secs(10)).await);
    let key = live_key("DefaultAlluxioCluster", &w.identity());
    let mut c = etcd.client().await;
    assert!(get(&mut c, &key).await.is_some());
    w.abandon_registration();
    let stopped = Instant::now();
    let gone = eventually(Duration::from_secs(8), async || {
        get(&mut c, &key).await.is_none()
    })
    .await;
    assert!(gone);
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "gone after {:?}: before the lease could expire",
        stopped.elapsed()
    );
    // HTTP still serves.
    assert_eq!(healthz(&w).await["status"], "ok");
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_once_etcd_comes_up() {
    let mut etcd = Etcd::reserve();
    let dir = tempfile::tempdir().unwrap();
    let cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(2));
    let w = start(cfg)
        .await
        .expect("etcd down must not stop the worker");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let h = healthz(&w).await;
    assert_eq!(h["status"], "ok", "serves HTTP without etcd");
    assert_eq!(h["registration"], "connecting");

    etcd.launch().await;
    let up = Instant::now();
    assert!(
        wait_registered(&w, Duration::from_secs(15)).await,
        "not registered after etcd came up"
    );
    let mut c = etcd.client().await;
    assert_eq!(
        live_keys(&mut c, "DefaultAlluxioCluster").await,
        [live_key("DefaultAlluxioCluster", &w.identity())]
    );
    eprintln!("registered {:?} after etcd came up", up.elapsed());
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_after_an_etcd_outage_longer_than_the_ttl() {
    let mut etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(2));
    let w = start(cfg).await.unwrap();
    assert!(wait_registered(&w, Duration::from_secs(10)).await);
    let key = live_key("DefaultAlluxioCluster", &w.identity());
    let first_lease = {
        let mut c = etcd.client().await;
        get(&mut c, &key).await.unwrap().lease()
    };

    etcd.kill();
    assert!(
        eventually(Duration::from_secs(5), async || {
            w.registration() == Registration::Connecting
        })
        .await,
        "the worker did not notice etcd going away"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.launch().await;
    assert!(wait_registered(&w, Duration::from_secs(15)).await);
    let mut c = etcd.client().await;
    let kv = get(&mut c, &key).await.expect("registered again");
    assert_ne!(kv.lease(), first_lease, "on a new lease");
    // And that lease is kept alive.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kv2 = get(&mut c, &key).await.expect("kept alive");
    assert_eq!(kv2.lease(), kv.lease());
    assert_eq!(
        c.lease_time_to_live(first_lease, None).await.unwrap().ttl(),
        -1
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_mismatch_refuses_registration() {
    let etcd = Etcd::start().await;
    let cluster = "DefaultAlluxioCluster";
    let mut c = etcd.client().await;
    c.put(placement_key(cluster), "rendezvous", None)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(2));
    let refused = start(cfg).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            refused.registration() == Registration::Refused
        })
        .await
    );
    assert!(live_keys(&mut c, cluster).await.is_empty());
    assert!(get(&mut c, &authorized_key(cluster, &refused.identity()))
        .await
        .is_none());
    let p = get(&mut c, &placement_key(cluster)).await.unwrap();
    assert_eq!(p.value_str().unwrap(), "rendezvous", "left as it was");
    assert_eq!(healthz(&refused).await["registration"], "refused");

    // A worker with the cluster's setting joins.
    let dir2 = tempfile::tempdir().unwrap();
    let mut cfg2 = worker_config(dir2.path(), &etcd.endpoint(), Duration::from_secs(2));
    cfg2.placement = "rendezvous".parse().unwrap();
    let agreeing = start(cfg2).await.unwrap();
    assert!(wait_registered(&agreeing, Duration::from_secs(10)).await);
    assert_eq!(
        live_keys(&mut c, cluster).await,
        [live_key(cluster, &agreeing.identity())]
    );
    refused.shutdown().await.unwrap();
    agreeing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_worker_publishes_its_placement_and_others_must_match() {
    let etcd = Etcd::start().await;
    let cluster = "vn";
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let cfg = |d: &tempfile::TempDir, p: &str| {
        let mut cfg = worker_config(d.path(), &etcd.endpoint(), Duration::from_secs(2));
        cfg.cluster_name = cluster.into();
        cfg.placement = p.parse().unwrap();
        cfg
    };
    let first = start(cfg(&dirs[0], "alluxio:100")).await.unwrap();
    assert!(wait_registered(&first, Duration::from_secs(10)).await);
    let mut c = etcd.client().await;
    let p = get(&mut c, &placement_key(cluster)).await.unwrap();
    assert_eq!(p.value_str().unwrap(), "alluxio:100");
    // Same name, other virtual node count: another placement.
    let second = start(cfg(&dirs[1], "alluxio:5")).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || {
            second.registration() == Registration::Refused
        })
        .await
    );
    assert_eq!(live_keys(&mut c, cluster).await.len(), 1);
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_etcd_authentication() {
    let etcd = Etcd::start().await;
    let mut admin = etcd.client().await;
    admin.user_add("root", "root-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let mut c = Client::connect(
        [etcd.endpoint()],
        Some(ConnectOptions::new().with_user("root", "root-pw")),
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let pw: PathBuf = dir.path().join("etcd-password");
    std::fs::write(&pw, "root-pw\n").unwrap();
    let mut cfg = worker_config(dir.path(), &etcd.endpoint(), Duration::from_secs(2));
    cfg.etcd_username = Some("root".into());
    cfg.etcd_password_file = Some(pw);
    let w = start(cfg).await.unwrap();
    assert!(wait_registered(&w, Duration::from_secs(10)).await);
    assert_eq!(
        live_keys(&mut c, "DefaultAlluxioCluster").await,
        [live_key("DefaultAlluxioCluster", &w.identity())]
    );

    let dir2 = tempfile::tempdir().unwrap();
    let mut bad = worker_config(dir2.path(), &etcd.endpoint(), Duration::from_secs(2));
    bad.etcd_username = Some("root".into());
    bad.etcd_password = Some("wrong".into());
    let denied = start(bad).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(denied.registration(), Registration::Connecting);
    assert_eq!(live_keys(&mut c, "DefaultAlluxioCluster").await.len(), 1);
    w.shutdown().await.unwrap();
    denied.shutdown().await.unwrap();
    assert!(live_keys(&mut c, "DefaultAlluxioCluster").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_before_the_binary_exits() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--etcd-lease-ttl", "60s"])
        .args(["--host", "0.0.0.0", "--advertise-host", "w1.test"])
        .arg("--etcd")
        .arg(etcd.endpoint())
        .arg("--mount")
        .arg(&data)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = etcd.client().await;
    let cluster = "DefaultAlluxioCluster";
    let registered = eventually(Duration::from_secs(20), async || {
        live_keys(&mut c, cluster).await.len() == 1
    })
    .await;
    if !registered {
        let _ = child.kill();
        panic!("the worker binary did not register");
    }
    let key = live_keys(&mut c, cluster).await.remove(0);
    let v: serde_json::Value =
        serde_json::from_slice(get(&mut c, &key).await.unwrap().value()).unwrap();
    assert_eq!(v["WorkerNetAddress"]["Host"], "w1.test");

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        get(&mut c, &key).await.is_none(),
        "the live key is gone when the process has exited (TTL 60 s)"
    );
}

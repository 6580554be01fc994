//! Discovery and watch against a real etcd (`/usr/bin/etcd`, Debian's
//! etcd-server) on loopback ports chosen at run time. Records are written
//! by hand with etcd-client, the way a worker registers itself. Skipped,
//! with a note, where etcd is not installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alluxiofs_core::discovery::{connect_client, discover, spawn_watch, EtcdConfig};
use alluxiofs_core::membership::{live_key, placement_key, WorkerRecord};
use alluxiofs_core::placement::Placement;
use alluxiofs_core::ring::WorkerIdentity;
use alluxiofs_core::{Client, ClientConfig, Error, WorkerAddr};
use etcd_client::PutOptions;

const ETCD: &str = "/usr/bin/etcd";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd server in a temporary data directory; killed on drop.
struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Etcd {
    /// Start etcd (a test without it fails: it would test nothing).
    async fn start() -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} not found: these tests need a real etcd (`make system-deps` installs etcd-server)"
        );
        let mut e = Etcd {
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        e.spawn().await;
        e
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// (Re)start the server on the same data directory and ports; wait
    /// until it answers.
    async fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let child = Command::new(ETCD)
            .arg("--data-dir")
            .arg(self.data_dir())
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
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let up = match etcd_client::Client::connect([self.url()], None).await {
                Ok(mut c) => tokio::time::timeout(Duration::from_secs(1), c.get("x", None))
                    .await
                    .is_ok_and(|r| r.is_ok()),
                Err(_) => false,
            };
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become healthy; log:\n{log}");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn config(&self, cluster: &str) -> EtcdConfig {
        EtcdConfig {
            connect_timeout: Duration::from_secs(2),
            ..EtcdConfig::new(&self.url(), cluster).unwrap()
        }
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.url()], None)
            .await
            .unwrap()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn identity(i: u32) -> WorkerIdentity {
    WorkerIdentity::from_uuid(uuid::Uuid::from_u128(0x1000 + i as u128))
}

fn worker(i: u32) -> WorkerAddr {
    WorkerAddr {
        host: format!("10.0.0.{i}"),
        port: 28000 + i as u16,
        identity: identity(i),
    }
}

/// Register worker `i` as a worker does: its record under a lease, plus
/// the persistent admission key. Returns the lease id.
async fn register(etcd: &mut etcd_client::Client, cluster: &str, i: u32) -> i64 {
    let w = worker(i);
    let rec = WorkerRecord::new(&w.identity, &w.host, w.port);
    let lease = etcd.lease_grant(30, None).await.unwrap().id();
    etcd.put(
        live_key(cluster, &w.identity),
        rec.to_json(),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .unwrap();
    etcd.put(
        alluxiofs_core::membership::authorized_key(cluster, &w.identity),
        rec.to_json(),
        None,
    )
    .await
    .unwrap();
    lease
}

fn sorted(mut ws: Vec<WorkerAddr>) -> Vec<WorkerAddr> {
    ws.sort_by_key(|w| w.identity);
    ws
}

/// Wait up to `within` for `cond` on the client.
async fn eventually(client: &Client, within: Duration, cond: impl Fn(&Client) -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond(client) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_reads_records_and_placement() {
    let server = Etcd::start().await;
    let mut etcd = server.client().await;
    for i in 1..=3 {
        register(&mut etcd, "c1", i).await;
    }
    // A record that does not parse is skipped, not fatal.
    etcd.put("/ServiceDiscovery/c1/worker-garbage", "{not json", None)
        .await
        .unwrap();
    // Another cluster's worker is not ours.
    register(&mut etcd, "other", 9).await;

    let found = discover(&server.config("c1")).await.unwrap();
    assert_eq!(sorted(found.workers), sorted((1..=3).map(worker).collect()));
    assert_eq!(found.placement, None);
    assert!(found.revision > 0);

    etcd.put(placement_key("c1"), "rendezvous", None)
        .await
        .unwrap();
    let found = discover(&server.config("c1")).await.unwrap();
    assert_eq!(found.placement, Some(Placement::Rendezvous));

    // A client built from it uses the published placement over its own.
    let (client, _watch) = connect_client(ClientConfig::default(), server.config("c1"))
        .await
        .unwrap();
    assert_eq!(client.placement(), Placement::Rendezvous);
    let ids: Vec<WorkerIdentity> = (1..=3).map(identity).collect();
    let expect = Placement::Rendezvous.build(&ids).pick("s3://b/k", 1);
    assert_eq!(client.workers_for("s3://b/k")[0].identity, expect[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_workers_is_a_clear_error() {
    let server = Etcd::start().await;
    let mut etcd = server.client().await;
    register(&mut etcd, "somewhere-else", 1).await;
    let err = discover(&server.config("empty-cluster")).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NoWorkers(_)), "{err:?}");
    assert!(msg.contains("empty-cluster"), "{msg}");
    assert!(msg.contains(&server.url()), "{msg}");
    assert!(msg.contains("no worker is registered"), "{msg}");

    // An etcd that does not answer fails in about the connect timeout.
    let dead = EtcdConfig {
        connect_timeout: Duration::from_millis(500),
        ..EtcdConfig::new(&format!("127.0.0.1:{}", free_port()), "c").unwrap()
    };
    let start = Instant::now();
    let err = discover(&dead).await.unwrap_err();
    assert!(matches!(err, Error::NoWorkers(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_joins_leaves_and_placement() {
    let server = Etcd::start().await;
    let mut etcd = server.client().await;
    let lease1 = register(&mut etcd, "c2", 1).await;
    register(&mut etcd, "c2", 2).await;
    let (client, watch) = connect_client(ClientConfig::default(), server.config("c2"))
        .await
        .unwrap();
    assert_eq!(client.workers().len(), 2);
    assert_eq!(client.placement(), Placement::default());

    // A join is seen within a second.
    let t = Instant::now();
    register(&mut etcd, "c2", 3).await;
    assert!(
        eventually(&client, Duration::from_secs(1), |c| c.workers().len() == 3).await,
        "join not seen"
    );
    eprintln!("join seen after {:?}", t.elapsed());
    assert_eq!(
        sorted(client.workers()),
        sorted((1..=3).map(worker).collect())
    );

    // A graceful leave (the worker revokes its lease) too.
    etcd.lease_revoke(lease1).await.unwrap();
    assert!(
        eventually(&client, Duration::from_secs(1), |c| c.workers().len() == 2).await,
        "leave not seen"
    );
    assert_eq!(sorted(client.workers()), sorted(vec![worker(2), worker(3)]));
    // The ring follows: every path maps to a live worker.
    for i in 0..50 {
        let w = &client.workers_for(&format!("s3://b/{i}"))[0];
        assert_ne!(w.identity, identity(1));
    }

    // A plain delete of a live key.
    etcd.delete(live_key("c2", &identity(2)), None)
        .await
        .unwrap();
    assert!(
        eventually(&client, Duration::from_secs(1), |c| c.workers()
            == vec![worker(3)])
        .await
    );

    // The published placement is applied, and its removal restores the
    // client's own.
    etcd.put(placement_key("c2"), "rendezvous", None)
        .await
        .unwrap();
    assert!(
        eventually(&client, Duration::from_secs(1), |c| c.placement()
            == Placement::Rendezvous)
        .await
    );
    etcd.put(placement_key("c2"), "alluxio:50", None)
        .await
        .unwrap();
    assert!(
        eventually(&client, Duration::from_secs(1), |c| c.placement()
            == Placement::Alluxio { vnodes: 50 })
        .await
    );
    etcd.delete(placement_key("c2"), None).await.unwrap();
    assert!(
        eventually(&client, Duration::from_secs(1), |c| c.placement()
            == Placement::default())
        .await
    );

    // Dropping the handle stops the watch: later changes are not applied.
    drop(watch);
    tokio::time::sleep(Duration::from_millis(50)).await;
    register(&mut etcd, "c2", 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.workers(), vec![worker(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_workers_while_etcd_is_down_and_resyncs() {
    let mut server = Etcd::start().await;
    {
        let mut etcd = server.client().await;
        register(&mut etcd, "c3", 1).await;
        register(&mut etcd, "c3", 2).await;
    }
    let (client, _watch) = connect_client(ClientConfig::default(), server.config("c3"))
        .await
        .unwrap();
    let before = sorted(client.workers());
    assert_eq!(before.len(), 2);

    server.kill();
    // Long enough for several failed reconnections.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sorted(client.workers()), before, "workers lost with etcd");
    assert_eq!(client.workers_for("s3://b/x").len(), 1);

    server.spawn().await;
    let mut etcd = server.client().await;
    // Changes made right after the restart (most likely before the client
    // reconnects: its backoff is at 0.8 s or more by now) are seen.
    etcd.delete(live_key("c3", &identity(2)), None)
        .await
        .unwrap();
    register(&mut etcd, "c3", 3).await;
    let want = sorted(vec![worker(1), worker(3)]);
    let t = Instant::now();
    assert!(
        eventually(&client, Duration::from_secs(15), |c| sorted(c.workers())
            == want)
        .await,
        "changes after the restart not seen: {:?}",
        client.workers()
    );
    eprintln!("resynced {:?} after the restart", t.elapsed());
    // And the watch is live again: a join is seen within a second.
    register(&mut etcd, "c3", 4).await;
    assert!(eventually(&client, Duration::from_secs(1), |c| c.workers().len() == 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_revision_resyncs_from_a_fresh_read() {
    let server = Etcd::start().await;
    let mut etcd = server.client().await;
    register(&mut etcd, "c4", 1).await;
    let cfg = server.config("c4");
    let found = discover(&cfg).await.unwrap();
    let client = Arc::new(Client::new(ClientConfig::default(), found.workers).unwrap());
    // The cluster changes and etcd forgets the history since the read, so
    // the watch cannot start where the read ended.
    register(&mut etcd, "c4", 2).await;
    etcd.delete(live_key("c4", &identity(1)), None)
        .await
        .unwrap();
    etcd.put(placement_key("c4"), "rendezvous", None)
        .await
        .unwrap();
    let now = etcd
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    etcd.compact(now, None).await.unwrap();

    let _watch = spawn_watch(client.clone(), cfg, found.revision);
    assert!(
        eventually(&client, Duration::from_secs(3), |c| c.workers()
            == vec![worker(2)]
            && c.placement() == Placement::Rendezvous)
        .await,
        "no resync after compaction: {:?} {:?}",
        client.workers(),
        client.placement()
    );
    // And it watches from the fresh read on.
    register(&mut etcd, "c4", 3).await;
    assert!(eventually(&client, Duration::from_secs(1), |c| c.workers().len() == 2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_are_used() {
    let server = Etcd::start().await;
    let mut etcd = server.client().await;
    register(&mut etcd, "c5", 1).await;
    // etcd 3.4 needs the root user (with the root role) to turn auth on.
    etcd.user_add("root", "rootpw", None).await.unwrap();
    etcd.user_grant_role("root", "root").await.unwrap();
    etcd.auth_enable().await.unwrap();

    let anonymous = server.config("c5");
    let err = discover(&anonymous).await.unwrap_err();
    assert!(matches!(err, Error::NoWorkers(_)), "{err:?}");
    assert!(
        !err.to_string().contains("no worker is registered"),
        "{err}"
    );

    let wrong = EtcdConfig {
        username: Some("root".into()),
        password: Some("nope".into()),
        ..server.config("c5")
    };
    assert!(discover(&wrong).await.is_err());

    let good = EtcdConfig {
        username: Some("root".into()),
        password: Some("rootpw".into()),
        ..server.config("c5")
    };
    let (client, _watch) = connect_client(ClientConfig::default(), good).await.unwrap();
    assert_eq!(client.workers(), vec![worker(1)]);
    // The watch is authenticated too.
    let mut admin = etcd_client::Client::connect(
        [server.url()],
        Some(etcd_client::ConnectOptions::new().with_user("root", "rootpw")),
    )
    .await
    .unwrap();
    register(&mut admin, "c5", 2).await;
    assert!(eventually(&client, Duration::from_secs(1), |c| c.workers().len() == 2).await);
}

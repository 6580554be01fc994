//! Who the workers are and which of them serve a path.
//!
//! The client keeps one membership snapshot: the worker list, the lookup
//! from ring identity to address, and the placement built over them
//! ([`crate::placement`]: Alluxio's ring by default). The placement gives
//! each path an ordered list of `replicas` preferred workers; a request goes
//! to the first live one and moves to the next on a worker fault
//! (`failover`). The snapshot is rebuilt whole, under one lock, when the
//! workers or the placement change, so no reader sees new workers under an
//! old placement.

use std::collections::HashMap;

use super::Client;
use crate::placement::{Placement, Placer};
use crate::protocol::DEFAULT_WORKER_PORT;
use crate::ring::WorkerIdentity;

/// A cache worker: where to reach it and its identity on the hash ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerAddr {
    /// Host name or IP address.
    pub host: String,
    /// HTTP port of the worker API.
    pub port: u16,
    /// The worker's identity on the hash ring.
    pub identity: WorkerIdentity,
}

impl WorkerAddr {
    /// A worker of a static host list.
    ///
    /// On Alluxio's default port 28080 the identity is
    /// [`WorkerIdentity::from_hostname`]`(host)`, exactly what Alluxio derives
    /// for a static worker list, so both agree on placement. On any other
    /// port it is `from_hostname("host:port")`, so that several workers on
    /// one host (tests, a single-machine cluster) get distinct identities.
    pub fn from_host_port(host: &str, port: u16) -> Self {
        let identity = if port == DEFAULT_WORKER_PORT {
            WorkerIdentity::from_hostname(host)
        } else {
            WorkerIdentity::from_hostname(&format!("{host}:{port}"))
        };
        WorkerAddr {
            host: host.to_string(),
            port,
            identity,
        }
    }

    /// `host:port` (an IPv6 address in brackets); the key of
    /// [`super::Stats`] maps.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        self.url_with("http")
    }

    /// `<scheme>://host:port`.
    pub fn url_with(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr())
    }
}

/// The workers and the placement over them, rebuilt together.
pub(super) struct Membership {
    workers: Vec<WorkerAddr>,
    by_id: HashMap<WorkerIdentity, WorkerAddr>,
    placement: Placement,
    placer: Placer,
}

impl Membership {
    pub(super) fn new(workers: Vec<WorkerAddr>, placement: Placement) -> Self {
        let ids: Vec<WorkerIdentity> = workers.iter().map(|w| w.identity).collect();
        let by_id = workers.iter().map(|w| (w.identity, w.clone())).collect();
        Membership {
            placer: placement.build(&ids),
            placement,
            by_id,
            workers,
        }
    }
}

impl Client {
    /// The current workers.
    pub fn workers(&self) -> Vec<WorkerAddr> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .workers
            .clone()
    }

    /// Replace the worker list and rebuild the ring. An empty list is
    /// allowed (every read becomes a hole, metadata calls fail with
    /// [`crate::Error::NoWorkers`]) so that membership can follow a cluster
    /// that is momentarily empty.
    pub fn set_workers(&self, workers: Vec<WorkerAddr>) {
        self.forget_health_of_others(&workers);
        let mut guard = self.members.write().unwrap_or_else(|e| e.into_inner());
        let m = Membership::new(workers, guard.placement);
        *guard = m;
    }

    /// The placement in use.
    pub fn placement(&self) -> Placement {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .placement
    }

    /// Switch to another placement (the one a cluster publishes) and
    /// rebuild the lookup structure over the current workers.
    pub fn set_placement(&self, placement: Placement) {
        let mut guard = self.members.write().unwrap_or_else(|e| e.into_inner());
        if guard.placement != placement {
            let workers = std::mem::take(&mut guard.workers);
            *guard = Membership::new(workers, placement);
        }
    }

    /// Replace the workers and the placement at once (one rebuild, and no
    /// reader sees the new workers under the old placement).
    pub fn set_membership(&self, workers: Vec<WorkerAddr>, placement: Placement) {
        self.forget_health_of_others(&workers);
        let m = Membership::new(workers, placement);
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// The ordered preferred workers of `url` (normalized):
    /// `min(replicas, number of workers)` of them, primary first.
    pub fn workers_for(&self, url: &str) -> Vec<WorkerAddr> {
        let m = self.members.read().unwrap_or_else(|e| e.into_inner());
        let n = self.config.replicas.max(1).min(m.workers.len());
        m.placer
            .pick(url, n)
            .iter()
            .filter_map(|id| m.by_id.get(id).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;
    use crate::error::Error;

    #[test]
    fn identity_depends_on_port_only_off_default() {
        let a = WorkerAddr::from_host_port("h1", DEFAULT_WORKER_PORT);
        assert_eq!(a.identity, WorkerIdentity::from_hostname("h1"));
        let b = WorkerAddr::from_host_port("h1", 9000);
        let c = WorkerAddr::from_host_port("h1", 9001);
        assert_ne!(b.identity, c.identity);
        assert_eq!(b.identity, WorkerIdentity::from_hostname("h1:9000"));
        assert_eq!(b.addr(), "h1:9000");
        assert_eq!(b.base_url(), "http://h1:9000");
        assert_eq!(WorkerAddr::from_host_port("::1", 5).addr(), "[::1]:5");
    }

    #[test]
    fn workers_for_follows_the_ring() {
        use crate::ring::HashRing;
        let ws: Vec<WorkerAddr> = (0..5)
            .map(|i| WorkerAddr::from_host_port("127.0.0.1", 7000 + i))
            .collect();
        let cfg = ClientConfig {
            replicas: 3,
            ..ClientConfig::default()
        };
        let c = Client::new(cfg, ws.clone()).unwrap();
        let ids: Vec<WorkerIdentity> = ws.iter().map(|w| w.identity).collect();
        let ring = HashRing::new(&ids, 5);
        let got: Vec<WorkerIdentity> = c
            .workers_for("s3://b/x")
            .iter()
            .map(|w| w.identity)
            .collect();
        assert_eq!(got, ring.get_multiple("s3://b/x", 3));
        c.set_workers(ws[..1].to_vec());
        assert_eq!(c.workers_for("s3://b/x"), ws[..1].to_vec());
        assert!(matches!(
            Client::new(ClientConfig::default(), vec![]),
            Err(Error::NoWorkers(_))
        ));
    }

    #[test]
    fn placement_is_configurable_and_switchable() {
        let ws: Vec<WorkerAddr> = (0..6)
            .map(|i| WorkerAddr::from_host_port("127.0.0.1", 7100 + i))
            .collect();
        let ids: Vec<WorkerIdentity> = ws.iter().map(|w| w.identity).collect();
        let cfg = ClientConfig {
            replicas: 2,
            placement: Placement::Rendezvous,
            ..ClientConfig::default()
        };
        let c = Client::new(cfg, ws.clone()).unwrap();
        assert_eq!(c.placement(), Placement::Rendezvous);
        let hrw = Placement::Rendezvous.build(&ids);
        let ring = Placement::Alluxio { vnodes: 5 }.build(&ids);
        let keys: Vec<String> = (0..50).map(|i| format!("s3://b/f{i}")).collect();
        let ids_of = |c: &Client, k: &str| -> Vec<WorkerIdentity> {
            c.workers_for(k).iter().map(|w| w.identity).collect()
        };
        for k in &keys {
            assert_eq!(ids_of(&c, k), hrw.pick(k, 2));
        }
        // The two placements differ somewhere, and switching follows.
        assert!(keys.iter().any(|k| hrw.pick(k, 2) != ring.pick(k, 2)));
        c.set_placement(Placement::default());
        assert_eq!(c.workers().len(), 6);
        for k in &keys {
            assert_eq!(ids_of(&c, k), ring.pick(k, 2));
        }
        c.set_membership(ws[..3].to_vec(), Placement::Rendezvous);
        let hrw3 = Placement::Rendezvous.build(&ids[..3]);
        for k in &keys {
            assert_eq!(ids_of(&c, k), hrw3.pick(k, 2));
        }
        // The legacy vnodes knob still sets the Alluxio ring.
        let legacy = ClientConfig {
            vnodes: 50,
            ..ClientConfig::default()
        };
        assert_eq!(
            legacy.effective_placement(),
            Placement::Alluxio { vnodes: 50 }
        );
    }
}

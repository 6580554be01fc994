//! Cluster membership records in etcd, in the layout Alluxio uses.
//!
//! A live worker holds the key `/ServiceDiscovery/<cluster>/worker-<uuid>`
//! attached to a lease it keeps alive; its value is [`WorkerRecord`] as JSON.
//! Every worker ever admitted also has the persistent key
//! `/DHT/<cluster>/AUTHORIZED/<id>`. Clients read the live prefix and watch it.
//! The cluster's placement setting (not an Alluxio key) lives at
//! `/alluxiofs/<cluster>/placement`, outside the prefix Alluxio clients parse.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ring::WorkerIdentity;

/// Alluxio's default cluster name (`alluxio.cluster.name`).
pub const DEFAULT_CLUSTER: &str = "DefaultAlluxioCluster";

/// The prefix of live worker keys of `cluster`.
pub fn live_prefix(cluster: &str) -> String {
    format!("/ServiceDiscovery/{cluster}/")
}

/// The live key of a worker.
pub fn live_key(cluster: &str, id: &WorkerIdentity) -> String {
    format!("{}{}", live_prefix(cluster), entity_name(id))
}

/// The persistent admission key of a worker.
pub fn authorized_key(cluster: &str, id: &WorkerIdentity) -> String {
    format!("/DHT/{cluster}/AUTHORIZED/{}", entity_name(id))
}

/// The key holding the cluster's placement setting.
pub fn placement_key(cluster: &str) -> String {
    format!("/alluxiofs/{cluster}/placement")
}

/// `worker-<uuid>`, Alluxio's service entity name.
pub fn entity_name(id: &WorkerIdentity) -> String {
    format!("worker-{}", id.uuid())
}

/// Identity as Alluxio writes it in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityJson {
    /// 1 = UUID based.
    pub version: i32,
    /// 32 lowercase hex digits.
    pub identifier: String,
}

/// Network address of a worker, with Alluxio's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WorkerNetAddress {
    /// Host clients connect to.
    pub host: String,
    /// Host of the container, if any.
    #[serde(default)]
    pub container_host: String,
    /// Alluxio RPC port (not served by alluxiofs; kept for compatibility).
    #[serde(default)]
    pub rpc_port: u16,
    /// Alluxio data port (not served by alluxiofs).
    #[serde(default)]
    pub data_port: u16,
    /// Alluxio secure RPC port.
    #[serde(default)]
    pub secure_rpc_port: u16,
    /// Alluxio netty data port.
    #[serde(default)]
    pub netty_data_port: u16,
    /// Alluxio web port.
    #[serde(default)]
    pub web_port: u16,
    /// Domain socket path.
    #[serde(default)]
    pub domain_socket_path: String,
    /// The HTTP port of the worker REST API: what alluxiofs clients use.
    pub http_server_port: u16,
}

/// The value of a live worker key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WorkerRecord {
    /// The worker's persistent identity.
    pub identity: IdentityJson,
    /// Where to reach it.
    pub worker_net_address: WorkerNetAddress,
    /// `AUTHORIZED` for a serving worker.
    pub state: String,
    /// Alluxio writes -1.
    pub generation_number: i64,
    /// `worker-<uuid>`.
    pub service_entity_name: String,
}

impl WorkerRecord {
    /// The record a worker with `id` serving HTTP on `host:http_port` registers.
    pub fn new(id: &WorkerIdentity, host: &str, http_port: u16) -> Self {
        WorkerRecord {
            identity: IdentityJson {
                version: id.version,
                identifier: id.hex(),
            },
            worker_net_address: WorkerNetAddress {
                host: host.to_string(),
                container_host: String::new(),
                rpc_port: 29999,
                data_port: 29997,
                secure_rpc_port: 0,
                netty_data_port: 29997,
                web_port: 30000,
                domain_socket_path: String::new(),
                http_server_port: http_port,
            },
            state: "AUTHORIZED".into(),
            generation_number: -1,
            service_entity_name: entity_name(id),
        }
    }

    /// The identity, parsed.
    pub fn worker_identity(&self) -> Result<WorkerIdentity> {
        WorkerIdentity::parse_hex(self.identity.version, &self.identity.identifier)
    }

    /// Parse a record from an etcd value.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidArgument(format!("bad worker record in etcd: {e}")))
    }

    /// The record as the JSON value stored in etcd.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alluxio_layout() {
        let id = WorkerIdentity::parse_hex(1, "b785d1f098863821a4eb6bee226c35b7").unwrap();
        let rec = WorkerRecord::new(&id, "10.0.0.5", 28080);
        let v: serde_json::Value = serde_json::from_str(&rec.to_json()).unwrap();
        assert_eq!(v["Identity"]["version"], 1);
        assert_eq!(
            v["Identity"]["identifier"],
            "b785d1f098863821a4eb6bee226c35b7"
        );
        assert_eq!(v["WorkerNetAddress"]["Host"], "10.0.0.5");
        assert_eq!(v["WorkerNetAddress"]["HttpServerPort"], 28080);
        assert_eq!(v["State"], "AUTHORIZED");
        assert_eq!(v["GenerationNumber"], -1);
        assert_eq!(
            v["ServiceEntityName"],
            "worker-b785d1f0-9886-3821-a4eb-6bee226c35b7"
        );
        assert_eq!(
            live_key(DEFAULT_CLUSTER, &id),
            "/ServiceDiscovery/DefaultAlluxioCluster/worker-b785d1f0-9886-3821-a4eb-6bee226c35b7"
        );
        let back = WorkerRecord::from_json(rec.to_json().as_bytes()).unwrap();
        assert_eq!(back.worker_identity().unwrap(), id);
    }

    #[test]
    fn parses_an_alluxio_java_record() {
        let java = r#"{"Identity":{"version":1,"identifier":"3e05246f5a4b37e7bd9a0b09b1706b95"},
            "WorkerNetAddress":{"Host":"10.0.0.5","ContainerHost":"","RpcPort":29999,"DataPort":29997,
            "SecureRpcPort":0,"NettyDataPort":29997,"WebPort":30000,"DomainSocketPath":"",
            "HttpServerPort":28080},"State":"AUTHORIZED","GenerationNumber":-1,
            "ServiceEntityName":"worker-3e05246f-5a4b-37e7-bd9a-0b09b1706b95"}"#;
        let rec = WorkerRecord::from_json(java.as_bytes()).unwrap();
        assert_eq!(rec.worker_net_address.http_server_port, 28080);
        assert_eq!(
            rec.worker_identity().unwrap().hex(),
            "3e05246f5a4b37e7bd9a0b09b1706b95"
        );
    }
}

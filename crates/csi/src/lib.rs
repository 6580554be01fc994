//! The alluxiofs CSI node plugin: Kubernetes volumes served as alluxiofs
//! FUSE mounts.
//!
//! kubelet calls the plugin over a Unix socket (gRPC, CSI v1): each
//! `NodePublishVolume` mounts the volume's UFS URL(s) at the pod's target
//! path with `alluxiofs mount --daemon` (one daemon per volume, in its own
//! session, so restarting the plugin leaves running mounts alone), and
//! `NodeUnpublishVolume` unmounts it. The plugin is node-only: no
//! controller, no staging; volumes are static PersistentVolumes or inline
//! ephemeral volumes whose attributes carry the URL and the cluster
//! ([`volume`]).
//!
//! Both calls are idempotent, as CSI requires: publishing a target that
//! already holds the same volume answers OK; one holding another volume (or
//! the same volume with other options) answers `ALREADY_EXISTS`; a target
//! whose daemon died (the kernel answers "Transport endpoint is not
//! connected") is mounted again. Unpublishing a target that holds nothing
//! answers OK. What the plugin mounted is recorded under its state
//! directory, so a restarted plugin still knows its mounts.

#![warn(missing_docs)]

pub mod node;
pub mod volume;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;

/// The generated CSI v1 messages and service traits (`proto/csi.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

pub use volume::{Cluster, MountPlan};

/// How the plugin runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The Unix socket kubelet connects to (a stale one is replaced).
    pub socket: PathBuf,
    /// This node's name (`NodeGetInfo`).
    pub node_id: String,
    /// The CSI driver name (`GetPluginInfo`; the CSIDriver object's name).
    pub driver_name: String,
    /// Where the plugin keeps its records of mounts and the daemons' logs.
    pub state_dir: PathBuf,
    /// The command that runs `alluxiofs` (e.g. `python3 -m alluxiofs`).
    pub launcher: Vec<String>,
    /// The cluster of volumes that name none.
    pub default_cluster: Option<Cluster>,
    /// Seconds a mount may take to answer before the publish fails.
    pub mount_timeout_s: u64,
}

/// Why the plugin could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad `--endpoint`.
    #[error("endpoint {0:?}: only unix:///path or an absolute socket path is supported")]
    Endpoint(String),
    /// The socket or state directory could not be prepared.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being prepared.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The socket path of a CSI endpoint (`unix:///csi/csi.sock` or `/csi/csi.sock`).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, Error> {
    let p = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !p.starts_with('/') || p.len() < 2 {
        return Err(Error::Endpoint(endpoint.to_string()));
    }
    Ok(PathBuf::from(p))
}

struct IdentitySvc {
    driver_name: String,
}

#[tonic::async_trait]
impl proto::identity_server::Identity for IdentitySvc {
    async fn get_plugin_info(
        &self,
        _req: tonic::Request<proto::GetPluginInfoRequest>,
    ) -> Result<tonic::Response<proto::GetPluginInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: tonic::Request<proto::GetPluginCapabilitiesRequest>,
    ) -> Result<tonic::Response<proto::GetPluginCapabilitiesResponse>, tonic::Status> {
        // Node service only: no controller, no topology constraints.
        Ok(tonic::Response::new(proto::GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(
        &self,
        _req: tonic::Request<proto::ProbeRequest>,
    ) -> Result<tonic::Response<proto::ProbeResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ProbeResponse {
            ready: Some(true),
        }))
    }
}

/// Serve the Identity and Node services on `opts.socket` until `shutdown`
/// completes. The socket's directory and the state directory are created;
/// a socket file left by a previous run is replaced.
pub async fn serve(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let io = |what, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { what, path, source }
    };
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir).map_err(io("socket directory", dir))?;
    }
    match std::fs::remove_file(&opts.socket) {
        Ok(()) => {
            tracing::info!(socket = %opts.socket.display(), "replaced a socket left by an earlier run")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("socket", &opts.socket)(e)),
    }
    let listener =
        tokio::net::UnixListener::bind(&opts.socket).map_err(io("socket", &opts.socket))?;
    let node = node::NodeSvc::new(Arc::new(opts.clone()))
        .map_err(io("state directory", &opts.state_dir))?;
    tracing::info!(
        socket = %opts.socket.display(),
        driver = %opts.driver_name,
        node = %opts.node_id,
        "CSI node plugin serving"
    );
    tonic::transport::Server::builder()
        .add_service(proto::identity_server::IdentityServer::new(IdentitySvc {
            driver_name: opts.driver_name.clone(),
        }))
        .add_service(proto::node_server::NodeServer::new(node))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    let _ = std::fs::remove_file(&opts.socket);
    tracing::info!("CSI node plugin stopped (mounts stay)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("/run/a.sock").unwrap(),
            PathBuf::from("/run/a.sock")
        );
        for bad in ["tcp://127.0.0.1:1", "unix://relative.sock", "", "unix://"] {
            assert!(socket_path(bad).is_err(), "{bad}");
        }
    }
}

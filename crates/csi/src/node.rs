//! The Node service: publish (mount) and unpublish (unmount) volumes.
//!
//! One call at a time per target path (kubelet may retry a slow publish
//! while the first is still mounting); calls on different targets run side
//! by side. A mount's record (`<state dir>/volumes/<target hash>.json`)
//! says which volume, with which options, and which daemon serves a target.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alluxiofs_fuse::MountState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::proto::volume_capability::access_mode::Mode;
use crate::proto::volume_capability::AccessType;
use crate::proto::{self, node_server::Node};
use crate::volume::{hex, MountPlan};
use crate::Options;

/// What the plugin mounted at a target.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The volume's id.
    pub volume_id: String,
    /// The target path.
    pub target: PathBuf,
    /// [`MountPlan::fingerprint`] of the mount.
    pub fingerprint: String,
    /// The daemon's pid (0 when unknown).
    pub pid: u32,
    /// The daemon's log.
    pub log: PathBuf,
}

/// The Node service.
pub struct NodeSvc {
    opts: Arc<Options>,
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl NodeSvc {
    /// The service, its state directories created.
    pub fn new(opts: Arc<Options>) -> std::io::Result<Self> {
        std::fs::create_dir_all(opts.state_dir.join("volumes"))?;
        std::fs::create_dir_all(opts.state_dir.join("logs"))?;
        Ok(Self {
            opts,
            locks: Mutex::new(HashMap::new()),
        })
    }

    fn lock_for(&self, target: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(target.to_path_buf()).or_default().clone()
    }

    fn key(target: &Path) -> String {
        hex(&Sha256::digest(target.as_os_str().as_encoded_bytes())[..12])
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        self.opts
            .state_dir
            .join("volumes")
            .join(format!("{}.json", Self::key(target)))
    }

    fn read_record(&self, target: &Path) -> Option<Record> {
        let text = std::fs::read(self.record_path(target)).ok()?;
        match serde_json::from_slice::<Record>(&text) {
            Ok(r) if r.target == target => Some(r),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(target = %target.display(), "unreadable mount record, ignored: {e}");
                None
            }
        }
    }

    fn write_record(&self, r: &Record) -> std::io::Result<()> {
        let path = self.record_path(&r.target);
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)
    }

    fn remove_record(&self, target: &Path) {
        let _ = std::fs::remove_file(self.record_path(target));
    }

    async fn publish(&self, req: proto::NodePublishVolumeRequest) -> Result<(), Status> {
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let target = target_path(&req.target_path)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        match &cap.access_type {
            Some(AccessType::Mount(m)) => {
                if !m.fs_type.is_empty() && m.fs_type != "fuse" && m.fs_type != "alluxiofs" {
                    return Err(Status::invalid_argument(format!(
                        "fs_type {:?}: the volume is an alluxiofs FUSE mount (leave fsType empty)",
                        m.fs_type
                    )));
                }
                if !m.mount_flags.is_empty() {
                    tracing::info!(flags = ?m.mount_flags, "mount flags are ignored (volume attributes set the options)");
                }
            }
            Some(AccessType::Block(_)) => {
                return Err(Status::invalid_argument(
                    "block volumes are not supported: alluxiofs volumes are filesystems (volumeMode: Filesystem)",
                ))
            }
            None => return Err(Status::invalid_argument("volume_capability has no access type")),
        }
        let mode = cap
            .access_mode
            .as_ref()
            .map(|m| m.mode())
            .unwrap_or(Mode::Unknown);
        let reader_only = matches!(mode, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly);
        let plan = MountPlan::parse(
            &req.volume_context,
            &req.secrets,
            req.readonly || reader_only,
            self.opts.default_cluster.as_ref(),
        )
        .map_err(|e| Status::invalid_argument(format!("volume {}: {e}", req.volume_id)))?;
        let fingerprint = plan.fingerprint();

        let lock = self.lock_for(&target);
        let _held = lock.lock().await;
        match state_of(&target).await {
            MountState::Mounted => {
                return match self.read_record(&target) {
                    Some(r) if r.volume_id == req.volume_id && r.fingerprint == fingerprint => {
                        tracing::info!(volume = %req.volume_id, target = %target.display(), "already published");
                        Ok(())
                    }
                    Some(r) if r.volume_id == req.volume_id => {
                        Err(Status::already_exists(format!(
                            "volume {} is published at {} with other options; unpublish it first",
                            req.volume_id,
                            target.display()
                        )))
                    }
                    Some(r) => Err(Status::already_exists(format!(
                        "{} holds volume {}, not {}",
                        target.display(),
                        r.volume_id,
                        req.volume_id
                    ))),
                    None => Err(Status::already_exists(format!(
                        "{} is a FUSE mount this plugin did not make",
                        target.display()
                    ))),
                };
            }
            MountState::Stale => tracing::warn!(
                volume = %req.volume_id,
                target = %target.display(),
                "the mount's daemon is gone (transport endpoint not connected): mounting again"
            ),
            MountState::NotMounted => {}
        }
        if let Err(e) = std::fs::create_dir_all(&target) {
            // A stale FUSE mount answers ENOTCONN here; `alluxiofs mount`
            // clears it, so only other errors stop the publish.
            if e.raw_os_error() != Some(rustix::io::Errno::NOTCONN.raw_os_error()) {
                return Err(Status::internal(format!(
                    "creating {}: {e}",
                    target.display()
                )));
            }
        }
        let log = self
            .opts
            .state_dir
            .join("logs")
            .join(format!("{}.log", Self::key(&target)));
        let args = plan.args(&target, &log);
        let pid = self.run_mount(&args, plan.token.as_deref(), &log).await?;
        if state_of(&target).await != MountState::Mounted {
            return Err(Status::internal(format!(
                "alluxiofs mount answered but {} is not mounted; see {}",
                target.display(),
                log.display()
            )));
        }
        let rec = Record {
            volume_id: req.volume_id.clone(),
            target: target.clone(),
            fingerprint,
            pid,
            log,
        };
        self.write_record(&rec)
            .map_err(|e| Status::internal(format!("recording the mount: {e}")))?;
        tracing::info!(volume = %req.volume_id, target = %target.display(), pid, write = plan.write, "published");
        Ok(())
    }

    /// Run `alluxiofs mount --daemon ...`: it returns once the mount
    /// answers. The daemon's pid, from its answer.
    async fn run_mount(
        &self,
        args: &[String],
        token: Option<&str>,
        log: &Path,
    ) -> Result<u32, Status> {
        let Some((prog, pre)) = self.opts.launcher.split_first() else {
            return Err(Status::internal("no alluxiofs launcher configured"));
        };
        let mut cmd = std::process::Command::new(prog);
        cmd.args(pre).args(args);
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(t) = token {
            cmd.env("ALLUXIOFS_AUTH_TOKEN", t);
        }
        let timeout = Duration::from_secs(self.opts.mount_timeout_s);
        let log = log.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<u32, Status> {
            let mut child = cmd
                .spawn()
                .map_err(|e| Status::internal(format!("starting alluxiofs mount: {e}")))?;
            let deadline = Instant::now() + timeout;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(s)) => break s,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(Status::deadline_exceeded(format!(
                            "the mount did not answer in {} s; see {}",
                            timeout.as_secs(),
                            log.display()
                        )));
                    }
                    Err(e) => {
                        return Err(Status::internal(format!(
                            "waiting for alluxiofs mount: {e}"
                        )))
                    }
                }
            };
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut s) = child.stdout.take() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            if !status.success() {
                let tail: Vec<&str> = err
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(Status::internal(format!(
                    "alluxiofs mount failed ({status}): {}",
                    tail.join(" | ")
                )));
            }
            Ok(out
                .split("(pid ")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0))
        })
        .await
        .map_err(|e| Status::internal(format!("mount task: {e}")))?
    }

    async fn unpublish(&self, req: proto::NodeUnpublishVolumeRequest) -> Result<(), Status> {
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let target = target_path(&req.target_path)?;
        let lock = self.lock_for(&target);
        let _held = lock.lock().await;
        let rec = self.read_record(&target);
        if let Some(r) = &rec {
            if r.volume_id != req.volume_id {
                tracing::warn!(
                    target = %target.display(),
                    recorded = %r.volume_id,
                    asked = %req.volume_id,
                    "unpublishing a target recorded for another volume id"
                );
            }
        }
        let t = target.clone();
        let unmounted = tokio::task::spawn_blocking(move || alluxiofs_fuse::unmount(&t))
            .await
            .map_err(|e| Status::internal(format!("unmount task: {e}")))?
            .map_err(|e| Status::internal(format!("unmounting {}: {e}", target.display())))?;
        if let Some(r) = &rec {
            stop_daemon(r).await;
        }
        match std::fs::remove_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Status::internal(format!(
                    "{} is unmounted but could not be removed: {e}",
                    target.display()
                )))
            }
        }
        self.remove_record(&target);
        tracing::info!(volume = %req.volume_id, target = %target.display(), unmounted, "unpublished");
        Ok(())
    }
}

fn target_path(p: &str) -> Result<PathBuf, Status> {
    if p.is_empty() {
        return Err(Status::invalid_argument("target_path is required"));
    }
    let path = PathBuf::from(p);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Status::invalid_argument(format!(
            "target_path {p:?} must be absolute, without '..'"
        )));
    }
    Ok(path)
}

/// The mount state of `target`, off the async threads (a hung FUSE daemon
/// would block `statfs`); a target that does not answer in 10 s counts as
/// stale.
async fn state_of(target: &Path) -> MountState {
    let t = target.to_path_buf();
    let probe = tokio::task::spawn_blocking(move || alluxiofs_fuse::mount_state(&t));
    match tokio::time::timeout(Duration::from_secs(10), probe).await {
        Ok(Ok(s)) => s,
        _ => MountState::Stale,
    }
}

/// After an unmount the daemon ends by itself; one still running after 10 s
/// (files were open) gets SIGTERM. The pid is checked to still be that
/// mount's daemon (pids are reused).
async fn stop_daemon(r: &Record) {
    if r.pid == 0 {
        return;
    }
    let target = r.target.display().to_string();
    let pid = r.pid;
    let ours = move || {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.contains(&b"mount".as_slice()) && args.contains(&target.as_bytes())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ours() {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            tracing::warn!(
                pid,
                "the mount's daemon is still running after the unmount: SIGTERM"
            );
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
    }
}

#[tonic::async_trait]
impl Node for NodeSvc {
    async fn node_publish_volume(
        &self,
        req: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let req = req.into_inner();
        let (volume, target) = (req.volume_id.clone(), req.target_path.clone());
        let r = self.publish(req).await;
        if let Err(s) = &r {
            tracing::warn!(%volume, %target, code = ?s.code(), "NodePublishVolume refused: {}", s.message());
        }
        r.map(|()| Response::new(proto::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let req = req.into_inner();
        let (volume, target) = (req.volume_id.clone(), req.target_path.clone());
        let r = self.unpublish(req).await;
        if let Err(s) = &r {
            tracing::warn!(%volume, %target, code = ?s.code(), "NodeUnpublishVolume refused: {}", s.message());
        }
        r.map(|()| Response::new(proto::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_capabilities(
        &self,
        _req: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        // No staging, stats or expansion: publish and unpublish are all.
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn node_get_info(
        &self,
        _req: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.opts.node_id.clone(),
            max_volumes_per_node: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(dir: &Path) -> NodeSvc {
        NodeSvc::new(Arc::new(Options {
            socket: dir.join("csi.sock"),
            node_id: "n1".into(),
            driver_name: "csi.alluxiofs.io".into(),
            state_dir: dir.join("state"),
            launcher: vec!["false".into()],
            default_cluster: None,
            mount_timeout_s: 5,
        }))
        .unwrap()
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let s = svc(d.path());
        let t = d.path().join("target");
        assert_eq!(s.read_record(&t), None);
        let r = Record {
            volume_id: "v".into(),
            target: t.clone(),
            fingerprint: "f".into(),
            pid: 7,
            log: d.path().join("l"),
        };
        s.write_record(&r).unwrap();
        assert_eq!(s.read_record(&t), Some(r));
        std::fs::write(s.record_path(&t), b"{not json").unwrap();
        assert_eq!(s.read_record(&t), None);
        s.remove_record(&t);
        assert!(!s.record_path(&t).exists());
    }

    #[test]
    fn target_paths_must_be_absolute() {
        assert!(target_path("/var/lib/kubelet/pods/x/mount").is_ok());
        for bad in ["", "relative/mount", "/a/../b"] {
            assert_eq!(
                target_path(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_failing_mount_command_is_an_internal_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let s = svc(d.path());
        let err = s
            .run_mount(&["x".into()], None, &d.path().join("l"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(
            err.message().contains("alluxiofs mount failed"),
            "{}",
            err.message()
        );
    }
}

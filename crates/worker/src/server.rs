//! The listening server: bind, `TCP_NODELAY` on every accepted socket, the
//! ready file, graceful shutdown.

use crate::app::app;
use crate::config::{LogFormat, WorkerConfig};
use crate::error::{Result, WorkerError};
use crate::local::{Access, Identity, LocalServer};
use crate::membership::{Membership, MembershipSettings, Registration};
use crate::state::AppState;
use alluxiofs_core::membership::WorkerRecord;
use alluxiofs_core::ring::WorkerIdentity;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A worker serving on a bound address; [`RunningWorker::shutdown`] stops it.
#[derive(Debug)]
pub struct RunningWorker {
    addr: SocketAddr,
    host: String,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    ready_file: Option<PathBuf>,
    membership: Option<Membership>,
    local: Option<LocalServer>,
    s3: Option<crate::s3::S3Server>,
    tls_reload: Option<JoinHandle<()>>,
}

impl RunningWorker {
    /// The bound socket address (the real port when `port` was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` (`https://` with TLS) of this worker.
    pub fn url(&self) -> String {
        base_url(self.state.config.scheme(), &self.host, self.addr.port())
    }

    /// The S3 endpoint's address, when it listens.
    pub fn s3_addr(&self) -> Option<SocketAddr> {
        self.s3.as_ref().map(crate::s3::S3Server::addr)
    }

    /// The shared state (metrics, page store) of this worker.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// This worker's persistent identity.
    pub fn identity(&self) -> WorkerIdentity {
        self.state.identity
    }

    /// Where the worker stands with etcd.
    pub fn registration(&self) -> Registration {
        *self.state.registration.borrow()
    }

    /// Stop keeping the etcd lease alive without deregistering, as a crashed
    /// worker would (its live key expires with the lease); HTTP goes on.
    pub fn abandon_registration(&mut self) {
        if let Some(m) = self.membership.take() {
            m.abandon();
        }
    }

    /// Whether the server task has ended (it only ends on shutdown or a
    /// fatal listener error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Deregister from etcd (bounded by
    /// [`crate::membership::SHUTDOWN_BUDGET`]), then stop accepting
    /// connections, let requests in progress finish, write the page index
    /// out, remove the ready file.
    pub async fn shutdown(mut self) -> Result<()> {
        // Leave the cluster first, so that clients route elsewhere while
        // the requests in progress finish.
        if let Some(m) = self.membership.take() {
            m.shutdown().await;
        }
        self.state.shutting_down.store(true, Ordering::Relaxed);
        if let Some(t) = self.tls_reload.take() {
            t.abort();
        }
        if let Some(local) = self.local.take() {
            local.stop();
        }
        if let Some(s3) = self.s3.take() {
            s3.stop().await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.task).await;
        // The page index as it is now, whoever still holds the store.
        let store = self.state.cache.store().clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
        if let Some(f) = &self.ready_file {
            let _ = std::fs::remove_file(f);
        }
        tracing::info!("worker stopped");
        match served {
            Ok(r) => r.map_err(|e| WorkerError::io("server", e)),
            Err(e) => Err(WorkerError::Internal(format!("server task: {e}"))),
        }
    }
}

fn base_url(scheme: &str, host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

/// Build the state, bind, write the ready file and serve in a background
/// task of the current runtime.
pub async fn start(config: WorkerConfig) -> Result<RunningWorker> {
    let host = config.host.clone();
    let port = config.port;
    let ready_file = config.ready_file.clone();
    let scheme = config.scheme();
    let tls = match crate::tls::TlsFiles::of(&config) {
        Some(files) => Some(crate::tls::TlsServer::load(files)?),
        None => None,
    };
    let state = tokio::task::spawn_blocking(move || AppState::new(config))
        .await
        .map_err(|e| WorkerError::Internal(format!("startup task: {e}")))??;
    let bind_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let listener = tokio::net::TcpListener::bind((bind_host.as_str(), port))
        .await
        .map_err(|e| {
            WorkerError::io(
                format!("cannot listen on {}", base_url(scheme, &host, port)),
                e,
            )
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| WorkerError::io("local address", e))?;
    let url = base_url(scheme, &host, addr.port());
    let _ = state.http_port.set(addr.port());
    // Follow the membership from the start (the S3 endpoint and /v1/node
    // place paths with it).
    state.cluster()?;
    let local = start_local(&state, addr.port());
    let s3 = crate::s3::start(&state, addr.port(), tls.clone()).await?;
    if let Some(f) = &ready_file {
        write_ready_file(
            f,
            &host,
            addr.port(),
            &url,
            local.as_ref().map(LocalServer::path),
            s3.as_ref().map(|s| s.addr().port()),
        )?;
    }
    tracing::info!(
        mounts = ?state.cache.ufs().mounts(),
        page_size = state.cache.page_size(),
        "listening on {url}"
    );
    for d in &state.config.cache_dirs {
        let cap = d.capacity.unwrap_or(state.config.capacity);
        tracing::info!(
            dir = %d.path.display(),
            capacity = %alluxiofs_core::info::human_size(cap),
            share = ?state.config.capacity_share.map(|s| format!("{}%", f64::from(s) / 100.0)),
            "cache directory"
        );
    }
    for w in state.config.capacity_warnings() {
        tracing::warn!("{w}");
    }
    let membership = match MembershipSettings::from_config(&state.config)? {
        None => None,
        Some(settings) => {
            let advertise = state.config.resolve_advertise_host();
            let mut record = WorkerRecord::new(&state.identity, &advertise, addr.port());
            if let Some(l) = &local {
                record.worker_net_address.domain_socket_path = l.path().display().to_string();
            }
            tracing::info!(
                worker_id = %state.identity.uuid(),
                cluster = %settings.cluster,
                "registering in etcd as {advertise}:{}",
                addr.port()
            );
            Some(Membership::start(
                settings,
                &state.identity,
                record,
                state.registration.clone(),
            ))
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let tls_reload = tls.as_ref().map(crate::tls::TlsServer::reload_on_sighup);
    let task = crate::tls::serve(listener, tls, app(state.clone()), async move {
        let _ = stopped.await;
    });
    // Load jobs the worker was running when it stopped start again.
    let this = alluxiofs_core::client::WorkerAddr::from_host_port(
        &state.config.resolve_advertise_host(),
        addr.port(),
    );
    state.loads.resume(&state.cache, this);
    // Multipart uploads a killed run left open at the UFS are aborted.
    state.cache.abort_leftover_uploads();
    Ok(RunningWorker {
        addr,
        host,
        state,
        stop: Some(stop),
        task,
        ready_file,
        membership,
        local,
        s3,
        tls_reload,
    })
}

/// Start the same-node read socket ([`crate::local`]) unless it is off;
/// a socket that cannot be bound is logged and left out (HTTP serves
/// every read anyway).
fn start_local(state: &Arc<AppState>, port: u16) -> Option<LocalServer> {
    let advertise = state.config.resolve_advertise_host();
    let path = state.config.local_socket.resolve(&advertise, port)?;
    let Some(boot_id) = alluxiofs_core::local::boot_id() else {
        tracing::info!("no boot id on this system: same-node reads are off");
        return None;
    };
    let mut uids = vec![rustix::process::geteuid().as_raw()];
    uids.extend(state.config.local_uids.iter().copied());
    let access = Access {
        uids,
        token: state.auth_token.clone(),
    };
    let identity = Identity {
        worker_id: state.identity.uuid().to_string(),
        boot_id,
    };
    match LocalServer::start(&path, state.cache.clone(), access, identity) {
        Ok(server) => {
            tracing::info!(socket = %path.display(), "same-node reads on the local socket");
            let _ = state.local_socket.set(path);
            Some(server)
        }
        Err(e) => {
            tracing::warn!("same-node reads are off: {e}");
            None
        }
    }
}

/// Write `{"host","port","pid","url","local_socket","boot_id"}` to `path`
/// atomically (temp + rename).
pub fn write_ready_file(
    path: &Path,
    host: &str,
    port: u16,
    url: &str,
    local_socket: Option<&Path>,
    s3_port: Option<u16>,
) -> Result<()> {
    let body = serde_json::json!({
        "s3_port": s3_port,
        "host": host,
        "port": port,
        "pid": std::process::id(),
        "url": url,
        "local_socket": local_socket.map(|p| p.display().to_string()),
        "boot_id": alluxiofs_core::local::boot_id(),
    });
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        std::fs::create_dir_all(dir)
            .map_err(|e| WorkerError::io(format!("ready file directory {}", dir.display()), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, body.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            WorkerError::io(format!("cannot write ready file {}", path.display()), e)
        })
}

/// Install the log subscriber unless the process already has one.
pub fn init_logging(config: &WorkerConfig) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|e| {
        eprintln!("invalid log level {:?} ({e}); using info", config.log_level);
        EnvFilter::new("info")
    });
    // The S3 protocol crate logs every refused request (a missing key, a
    // bad signature) at ERROR; the endpoint logs its own line per failed
    // request instead (`crate::s3`). Named in the level, s3s logs as asked.
    if !config.log_level.contains("s3s") {
        if let Ok(quiet) = "s3s::ops=off".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Resolve when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

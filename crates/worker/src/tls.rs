//! HTTPS for the worker's listeners (the HTTP API and the S3 endpoint).
//!
//! - **Certificates from files.** `tls_cert` (a PEM chain) and `tls_key`
//!   (PEM, PKCS#8, PKCS#1 or SEC1) are read at start; a file that cannot be
//!   read or parsed, or a key that does not match the certificate, is a
//!   start error naming the file.
//! - **Reload on SIGHUP** ([`TlsServer::reload`]): the files are read
//!   again and the new configuration serves every connection accepted
//!   after it. A reload that fails keeps the old configuration and says
//!   why in the log, so a half-written certificate never takes a worker
//!   off the air.
//! - **Client certificates** (mutual TLS): with `tls_client_ca`, a client
//!   must present a certificate signed by that CA or the handshake fails.
//! - **Handshakes off the accept loop** ([`TlsListener`]): a connection is
//!   handed to the server only once its handshake is done, and a handshake
//!   has [`HANDSHAKE_TIMEOUT`], so a client that connects and says nothing
//!   holds one pending future, never the listener.
//!
//! rustls with the aws-lc-rs provider, the same library and provider the
//! worker's HTTP client (reqwest) already links, so TLS adds no second
//! crypto library. ALPN offers `http/1.1` only: the server speaks HTTP/1.1.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::WorkerConfig;
use crate::error::{Result, WorkerError};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files a TLS configuration is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA bundle of required client certificates (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `config`; `None` when it serves plain HTTP.
    pub fn of(config: &WorkerConfig) -> Option<Self> {
        Some(TlsFiles {
            cert: config.tls_cert.clone()?,
            key: config.tls_key.clone()?,
            client_ca: config.tls_client_ca.clone(),
        })
    }
}

/// The current TLS configuration of a worker's listeners, replaced whole
/// on reload.
#[derive(Debug)]
pub struct TlsServer {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    /// Read `files` into a server configuration.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>> {
        let config = server_config(&files)?;
        Ok(Arc::new(TlsServer {
            files,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Read the files again; on success new connections use them, on
    /// failure the configuration in use stays.
    pub fn reload(&self) -> Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Reload on every SIGHUP for as long as the returned task runs.
    pub fn reload_on_sighup(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGHUP, certificates are not reloaded: {e}");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                let Some(tls) = weak.upgrade() else { return };
                match tls.reload() {
                    Ok(()) => tracing::info!(
                        cert = %tls.files.cert.display(),
                        "SIGHUP: TLS certificate reloaded"
                    ),
                    Err(e) => {
                        tracing::error!("SIGHUP: TLS reload failed, the old certificate stays: {e}")
                    }
                }
            }
        })
    }
}

fn tls_err(what: &str, path: &Path, why: impl std::fmt::Display) -> WorkerError {
    WorkerError::Config(format!("{what} {}: {why}", path.display()))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| tls_err(what, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err(what, path, e))?;
    if certs.is_empty() {
        return Err(tls_err(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig> {
    let certs = read_certs(&files.cert, "tls_cert")?;
    let key_bytes = std::fs::read(&files.key).map_err(|e| tls_err("tls_key", &files.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        tls_err(
            "tls_key",
            &files.key,
            format!("no usable PEM private key ({e})"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| WorkerError::Internal(format!("TLS versions: {e}")))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "tls_client_ca")? {
                roots.add(c).map_err(|e| tls_err("tls_client_ca", ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| tls_err("tls_client_ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        tls_err(
            "tls_cert",
            &files.cert,
            format!("does not fit tls_key: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

type Handshake =
    Pin<Box<dyn Future<Output = (io::Result<TlsStream<TcpStream>>, SocketAddr)> + Send>>;

/// A TCP listener whose connections come out after their TLS handshake
/// (`axum::serve` takes it like a plain listener). `TCP_NODELAY` is set on
/// every accepted socket.
pub struct TlsListener {
    tcp: TcpListener,
    tls: Arc<TlsServer>,
    pending: FuturesUnordered<Handshake>,
}

impl TlsListener {
    /// Serve TLS on `tcp` with the configuration `tls` has at each accept.
    pub fn new(tcp: TcpListener, tls: Arc<TlsServer>) -> Self {
        TlsListener {
            tcp,
            tls,
            pending: FuturesUnordered::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        let _ = tcp.set_nodelay(true);
                        let acceptor = self.tls.acceptor();
                        self.pending.push(Box::pin(async move {
                            let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
                                });
                            (done, addr)
                        }));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: wait, as axum's
                        // own listener does, instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some((done, addr)) = self.pending.next(), if !self.pending.is_empty() => match done {
                    Ok(stream) => return (stream, addr),
                    Err(e) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Serve `router` on `listener` (TLS when `tls` is set) until `stop`
/// resolves, letting requests in progress finish.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<TlsServer>>,
    router: axum::Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<io::Result<()>> {
    use axum::serve::ListenerExt;
    tokio::spawn(async move {
        match tls {
            Some(tls) => {
                axum::serve(TlsListener::new(listener, tls), router)
                    .with_graceful_shutdown(stop)
                    .await
            }
            None => {
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    /// Whether a client trusting only `ca` gets an answer from `port`.
    async fn served(port: u16, ca: &Path) -> bool {
        let pem = std::fs::read(ca).unwrap();
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap();
        match client
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap() == "ok",
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn reload_serves_new_files_and_keeps_the_old_ones_when_they_are_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let first_ca = dir.path().join("first.pem");
        std::fs::copy(&cert, &first_ca).unwrap();
        let tls = TlsServer::load(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        })
        .unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        // A client that connects and never says a word must not hold up
        // the others.
        let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = serve(tcp, Some(tls.clone()), router, async move {
            let _ = stopped.await;
        });
        assert!(served(port, &first_ca).await);
        let (cert2, key2) = write_pair(dir.path(), "b");
        std::fs::copy(&cert2, &cert).unwrap();
        std::fs::copy(&key2, &key).unwrap();
        assert!(
            served(port, &first_ca).await,
            "nothing changes before a reload"
        );
        tls.reload().unwrap();
        assert!(served(port, &cert2).await, "the new certificate serves");
        assert!(!served(port, &first_ca).await, "the old one no longer does");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("tls_key"), "{e}");
        assert!(
            served(port, &cert2).await,
            "a failed reload keeps the certificate in use"
        );
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");
        let e = TlsServer::load(TlsFiles {
            cert,
            key: other_key,
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not fit tls_key"), "{e}");
    }
}

//! Worker configuration: one struct, four layers.
//!
//! Every knob has a documented default (`docs/configuration.md`) and can be
//! set from a YAML file, from `ALLUXIOFS_WORKER_*` environment variables and
//! from command-line flags. Precedence, lowest first:
//! default < YAML file < environment < flag.
//!
//! Each setting is declared once, in `settings`: its flag, variable, YAML
//! key, check and default. Each layer is read into a [`ConfigLayer`] (every
//! field optional) and the layers are applied over
//! [`WorkerConfig::default`], so that a layer only overrides what it names.
//! This file holds the merged [`WorkerConfig`], the value syntaxes (sizes,
//! durations, mounts, cache directories, etcd endpoints) and validation.

use crate::error::WorkerError;
use alluxiofs_core::membership::DEFAULT_CLUSTER;
use alluxiofs_core::placement::Placement;
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

// The rows' help texts are the flags' `--help` text (clap reads them from the
// generated doc comments), not Markdown: `[:VNODES]`, `<first cache dir>`.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
mod settings;
pub use crate::units::{parse_duration, parse_size};
pub use settings::{Cli, ConfigLayer, Setting, SETTINGS};

/// Default HTTP port of an Alluxio worker.
pub use alluxiofs_core::protocol::DEFAULT_WORKER_PORT as DEFAULT_PORT;
/// Default capacity of each cache directory: 10 GiB.
pub const DEFAULT_CAPACITY: u64 = 10 << 30;
/// Default size of the memory tier: 256 MiB.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 256 << 20;
/// Default page size: 1 MiB (Alluxio's `alluxio.worker.page.store.page.size`).
pub use alluxiofs_core::protocol::DEFAULT_PAGE_SIZE;
/// Default metadata TTL: 60 s.
pub const DEFAULT_METADATA_TTL: Duration = Duration::from_secs(60);
/// Default [`WorkerConfig::stale_if_error`].
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(3600);
/// Default memory budget of the metadata cache: 512 MiB (about 270,000
/// file infos; at 64 MiB a warm pass over 100,000 small files missed its
/// infos and ran 6.7x slower, one HEAD per file).
pub const DEFAULT_METADATA_CAPACITY: u64 = 512 << 20;

/// Default lease TTL in etcd: how long a worker that died without
/// deregistering stays listed.
pub const DEFAULT_ETCD_LEASE_TTL: Duration = Duration::from_secs(10);
/// Default port of an etcd endpoint given without one.
pub const DEFAULT_ETCD_PORT: u16 = 2379;
/// Name of the identity file in the first cache directory.
pub const IDENTITY_FILE: &str = "worker_identity";

/// Prefix of every environment variable the worker reads.
pub const ENV_PREFIX: &str = "ALLUXIOFS_WORKER_";

/// One mount: a UFS URL prefix the worker may read, with its own
/// `object_store` options (which override `ufs_options`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "MountSpec")]
pub struct MountConfig {
    /// The UFS URL prefix, e.g. `s3://bucket/datasets` or `/data`.
    pub url: String,
    /// `object_store` configuration keys (`endpoint`, `region`, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MountSpec {
    Url(String),
    Full {
        url: String,
        #[serde(default)]
        options: BTreeMap<String, String>,
    },
}

impl From<MountSpec> for MountConfig {
    fn from(spec: MountSpec) -> Self {
        match spec {
            MountSpec::Url(url) => MountConfig {
                url,
                options: BTreeMap::new(),
            },
            MountSpec::Full { url, options } => MountConfig { url, options },
        }
    }
}

impl MountConfig {
    /// A mount of `url` with no extra options.
    pub fn new(url: impl Into<String>) -> Self {
        MountConfig {
            url: url.into(),
            options: BTreeMap::new(),
        }
    }
}

/// One cache directory, with its own capacity (else the global `capacity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CacheDirSpec")]
pub struct CacheDirConfig {
    /// Directory holding the pages (created when missing).
    pub path: PathBuf,
    /// Bytes this directory may use; `None` = the global `capacity`.
    pub capacity: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CacheDirSpec {
    Path(PathBuf),
    Full {
        path: PathBuf,
        #[serde(default)]
        capacity: Option<SizeValue>,
    },
}

impl TryFrom<CacheDirSpec> for CacheDirConfig {
    type Error = String;
    fn try_from(spec: CacheDirSpec) -> Result<Self, String> {
        Ok(match spec {
            CacheDirSpec::Path(path) => CacheDirConfig {
                path,
                capacity: None,
            },
            CacheDirSpec::Full { path, capacity } => CacheDirConfig {
                path,
                capacity: capacity.map(|c| c.bytes()).transpose()?,
            },
        })
    }
}

impl CacheDirConfig {
    /// A cache directory using the global capacity.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CacheDirConfig {
            path: path.into(),
            capacity: None,
        }
    }
}

/// A size in YAML: a number of bytes or a string such as `64KiB`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t),
        }
    }
}

/// A duration in YAML: seconds as a number or a string such as `500ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Secs(u64),
    Text(String),
}

impl DurationValue {
    fn duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Secs(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse_duration(t),
        }
    }
}

/// Where the same-node read socket lives (`crate::local`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalSocket {
    /// `/tmp/alluxiofs-<uid>/<host>-<port>.sock`.
    #[default]
    Auto,
    /// No same-node reads.
    Off,
    /// This path.
    Path(PathBuf),
}

impl LocalSocket {
    /// `auto`, `off` or a path.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "" | "auto" => Ok(LocalSocket::Auto),
            "off" | "none" | "false" => Ok(LocalSocket::Off),
            p if p.len() > 100 => Err(format!(
                "socket path {p:?} is longer than a Unix socket path may be (100 bytes)"
            )),
            p => Ok(LocalSocket::Path(PathBuf::from(p))),
        }
    }

    /// The socket path of a worker advertised as `host` on `port`; `None`
    /// when off.
    pub fn resolve(&self, host: &str, port: u16) -> Option<PathBuf> {
        match self {
            LocalSocket::Off => None,
            LocalSocket::Path(p) => Some(p.clone()),
            LocalSocket::Auto => {
                let uid = rustix::process::geteuid().as_raw();
                let host: String = host
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(48)
                    .collect();
                Some(PathBuf::from(format!(
                    "/tmp/alluxiofs-{uid}/{host}-{port}.sock"
                )))
            }
        }
    }
}

/// Where the S3 endpoint listens (`crate::s3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S3Port {
    /// Port 29998 (Alluxio's, which its Python client assumes), or a free
    /// port when the worker's own port is 0. The endpoint is an extra
    /// here: a busy 29998, or a mount that cannot be a bucket, is logged
    /// and the worker serves without it.
    #[default]
    Auto,
    /// No S3 endpoint.
    Off,
    /// This port (0: a free one); a busy port is an error.
    Port(u16),
}

/// Alluxio's S3 port.
pub const DEFAULT_S3_PORT: u16 = 29998;

impl S3Port {
    /// `auto`, `off` or a port number.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "" | "auto" => Ok(S3Port::Auto),
            "off" | "none" | "false" => Ok(S3Port::Off),
            p => p
                .parse::<u16>()
                .map(S3Port::Port)
                .map_err(|_| format!("invalid S3 port {p:?} (a port number, auto or off)")),
        }
    }

    /// The port to bind for a worker on `http_port`, and whether a busy
    /// port is an error; `None` when off.
    pub fn resolve(&self, http_port: u16) -> Option<(u16, bool)> {
        match *self {
            S3Port::Off => None,
            S3Port::Port(p) => Some((p, true)),
            S3Port::Auto if http_port == 0 => Some((0, false)),
            S3Port::Auto => Some((DEFAULT_S3_PORT, false)),
        }
    }
}

/// S3 access keys (`ACCESS_KEY:SECRET_KEY` lines, as s3fs-fuse's password
/// file holds them; `#` starts a comment). Never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Keys(pub Vec<(String, String)>);

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.0.iter().map(|(a, _)| a.as_str()).collect();
        write!(f, "S3Keys({ids:?}, secrets hidden)")
    }
}

impl S3Keys {
    /// Parse the lines of a key file.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((a, s)) if !a.trim().is_empty() && !s.trim().is_empty() => {
                    keys.push((a.trim().to_string(), s.trim().to_string()))
                }
                // The line itself may hold a secret: name the line only.
                _ => return Err(format!("line {}: expected ACCESS_KEY:SECRET_KEY", n + 1)),
            }
        }
        Ok(S3Keys(keys))
    }
}

/// A comma separated list of uids.
pub fn parse_uids(text: &str) -> std::result::Result<Vec<u32>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && *t != "none")
        .map(|t| t.parse::<u32>().map_err(|_| format!("invalid uid {t:?}")))
        .collect()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// The complete, merged configuration of a worker. Its `Debug` output hides
/// the auth token and secret-looking UFS options.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 = any free port.
    pub port: u16,
    /// UFS URL prefixes the worker serves; at least one.
    pub mounts: Vec<MountConfig>,
    /// Page directories.
    pub cache_dirs: Vec<CacheDirConfig>,
    /// Default capacity of each cache directory, bytes.
    pub capacity: u64,
    /// `capacity` given as a share (`90%`), in hundredths of a percent
    /// (9000): each cache directory without a capacity of its own gets that
    /// share of its filesystem's size, set when the configuration is built
    /// (and `capacity` the first one's).
    pub capacity_share: Option<u32>,
    /// Memory tier size, bytes; 0 = no memory tier.
    pub memory_capacity: u64,
    /// Page size, bytes.
    pub page_size: u64,
    /// How long file metadata is cached; zero = ask the UFS every time.
    pub metadata_ttl: Duration,
    /// How long past `metadata_ttl` the last verified metadata of a file
    /// may be served while its UFS is unreachable ([`crate::outage`]);
    /// zero = never.
    pub stale_if_error: Duration,
    /// Memory budget of the metadata cache, bytes (estimated, see
    /// [`crate::meta`]); 0 = cache no metadata.
    pub metadata_capacity: u64,
    /// `object_store` options applied to every mount.
    pub ufs_options: BTreeMap<String, String>,
    /// Bearer token required on every endpoint but `/healthz`.
    pub auth_token: Option<String>,
    /// File holding the auth token (read at start, whitespace trimmed).
    pub auth_token_file: Option<PathBuf>,
    /// PEM certificate chain of the HTTPS listeners (`crate::tls`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle of the client certificates the HTTP API requires.
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA bundle trusted for requests to peer workers.
    pub tls_ca: Option<PathBuf>,
    /// PEM CA bundle of etcd's certificate.
    pub etcd_tls_ca: Option<PathBuf>,
    /// PEM client certificate for etcd.
    pub etcd_tls_cert: Option<PathBuf>,
    /// PEM private key of `etcd_tls_cert`.
    pub etcd_tls_key: Option<PathBuf>,
    /// Where to write `{"host","port","pid","url"}` once listening.
    pub ready_file: Option<PathBuf>,
    /// The Unix socket of same-node reads (`crate::local`).
    pub local_socket: LocalSocket,
    /// Uids besides the worker's own that may read through it.
    pub local_uids: Vec<u32>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log level or `tracing` filter directive (`info`, `alluxiofs_worker=debug`).
    pub log_level: String,
    /// etcd endpoints as `http://host:port`; empty = no cluster membership.
    pub etcd: Vec<String>,
    /// Cluster name: the etcd keys live under `/ServiceDiscovery/<name>/`.
    pub cluster_name: String,
    /// Persistent identity; `None` = read (or create) the identity file
    /// `<first cache dir>/worker_identity`.
    pub worker_id: Option<uuid::Uuid>,
    /// TTL of the etcd lease holding the live key (whole seconds, at least 1):
    /// how long a worker that died without deregistering stays listed.
    pub etcd_lease_ttl: Duration,
    /// etcd user name (etcd authentication).
    pub etcd_username: Option<String>,
    /// etcd password.
    pub etcd_password: Option<String>,
    /// File holding the etcd password (trailing newline ignored).
    pub etcd_password_file: Option<PathBuf>,
    /// Host written in etcd for clients to connect to; `None` = `host`,
    /// or the machine's host name when `host` is a wildcard address.
    pub advertise_host: Option<String>,
    /// Placement of paths on workers that this worker agrees to (published
    /// in etcd; every worker of a cluster must use the same).
    pub placement: Placement,
    /// Eviction policy of the page store (`docs/eviction.md`).
    pub eviction_policy: crate::policy::PolicyKind,
    /// Most bytes pinned pages may use (bytes or a share of the capacity).
    pub pin_quota: crate::rules::PinQuota,
    /// Capacity quotas of mounts (or prefixes inside them): (URL, bytes).
    pub mount_quotas: Vec<(String, u64)>,
    /// Bytes per second of UFS fetches for all cache loads together
    /// (`docs/load.md`); `None` = unlimited. Reads are never limited.
    pub load_bandwidth: Option<u64>,
    /// Where the S3 endpoint listens.
    pub s3_port: S3Port,
    /// Bucket names of mounts (mount URL → name), besides the derived ones.
    pub s3_buckets: BTreeMap<String, String>,
    /// Answer S3 GETs of objects another worker owns with a 307 to it.
    pub s3_redirect: bool,
    /// Serve unsigned S3 requests.
    pub s3_anonymous: bool,
    /// One S3 access key id (environment or YAML, never a flag).
    pub s3_access_key: Option<String>,
    /// Its secret key (environment or YAML, never a flag).
    pub s3_secret_key: Option<String>,
    /// File of S3 access keys.
    pub s3_keys_file: Option<PathBuf>,
}

/// Whether an option value looks secret (keys naming a secret, token,
/// password or key, but not a key id).
fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "key", "credential", "sas"]
        .iter()
        .any(|w| k.contains(w))
        && !k.ends_with("_id")
}

/// Options with secret-looking values replaced, for logs and `Debug`.
pub fn redacted(options: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    options
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_option(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect()
}

impl std::fmt::Debug for MountConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountConfig")
            .field("url", &self.url)
            .field("options", &redacted(&self.options))
            .finish()
    }
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("mounts", &self.mounts)
            .field("cache_dirs", &self.cache_dirs)
            .field("capacity", &self.capacity)
            .field("capacity_share", &self.capacity_share)
            .field("memory_capacity", &self.memory_capacity)
            .field("page_size", &self.page_size)
            .field("metadata_ttl", &self.metadata_ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("metadata_capacity", &self.metadata_capacity)
            .field("ufs_options", &redacted(&self.ufs_options))
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("auth_token_file", &self.auth_token_file)
            .field("ready_file", &self.ready_file)
            .field("log_format", &self.log_format)
            .field("log_level", &self.log_level)
            .field("etcd", &self.etcd)
            .field("cluster_name", &self.cluster_name)
            .field("worker_id", &self.worker_id)
            .field("etcd_lease_ttl", &self.etcd_lease_ttl)
            .field("etcd_username", &self.etcd_username)
            .field(
                "etcd_password",
                &self.etcd_password.as_ref().map(|_| "<redacted>"),
            )
            .field("etcd_password_file", &self.etcd_password_file)
            .field("advertise_host", &self.advertise_host)
            .field("placement", &self.placement)
            .field("eviction_policy", &self.eviction_policy)
            .field("pin_quota", &self.pin_quota)
            .field("mount_quotas", &self.mount_quotas)
            .field("load_bandwidth", &self.load_bandwidth)
            .field("s3_port", &self.s3_port)
            .field("s3_buckets", &self.s3_buckets)
            .field("s3_redirect", &self.s3_redirect)
            .field("s3_anonymous", &self.s3_anonymous)
            .field("s3_access_key", &self.s3_access_key)
            .field(
                "s3_secret_key",
                &self.s3_secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("s3_keys_file", &self.s3_keys_file)
            .finish()
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/alluxiofs/pages`, else
/// `~/.cache/alluxiofs/pages`, else `./alluxiofs-cache/pages`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(|| PathBuf::from("alluxiofs-cache"));
    base.join("alluxiofs").join("pages")
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            mounts: Vec::new(),
            cache_dirs: vec![CacheDirConfig::new(default_cache_dir())],
            capacity: DEFAULT_CAPACITY,
            capacity_share: None,
            memory_capacity: DEFAULT_MEMORY_CAPACITY,
            page_size: DEFAULT_PAGE_SIZE,
            metadata_ttl: DEFAULT_METADATA_TTL,
            stale_if_error: DEFAULT_STALE_IF_ERROR,
            metadata_capacity: DEFAULT_METADATA_CAPACITY,
            ufs_options: BTreeMap::new(),
            auth_token: None,
            auth_token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_ca: None,
            etcd_tls_ca: None,
            etcd_tls_cert: None,
            etcd_tls_key: None,
            ready_file: None,
            local_socket: LocalSocket::Auto,
            local_uids: Vec::new(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            etcd: Vec::new(),
            cluster_name: DEFAULT_CLUSTER.into(),
            worker_id: None,
            etcd_lease_ttl: DEFAULT_ETCD_LEASE_TTL,
            etcd_username: None,
            etcd_password: None,
            etcd_password_file: None,
            advertise_host: None,
            placement: Placement::default(),
            eviction_policy: crate::policy::PolicyKind::default(),
            pin_quota: crate::rules::PinQuota::default(),
            mount_quotas: Vec::new(),
            load_bandwidth: None,
            s3_port: S3Port::Auto,
            s3_buckets: BTreeMap::new(),
            s3_redirect: false,
            s3_anonymous: false,
            s3_access_key: None,
            s3_secret_key: None,
            s3_keys_file: None,
        }
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`, else
/// `/etc/hostname`, else `$HOSTNAME`, else `localhost`).
pub fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .chain(std::env::var("HOSTNAME").ok())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// etcd endpoints in YAML: a list or one comma-separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EtcdEndpoints {
    One(String),
    Many(Vec<String>),
}

impl EtcdEndpoints {
    fn normalized(&self) -> Result<Vec<String>, String> {
        let items: Vec<&str> = match self {
            EtcdEndpoints::One(s) => s.split(',').collect(),
            EtcdEndpoints::Many(v) => v.iter().flat_map(|s| s.split(',')).collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(normalize_etcd_endpoint)
            .collect()
    }
}

/// An etcd endpoint as `http://host:port`: `host`, `host:port` and
/// `http://host[:port]` are accepted (port 2379 when missing).
pub fn normalize_etcd_endpoint(text: &str) -> Result<String, String> {
    let t = text.trim().trim_end_matches('/');
    let with_scheme = if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| format!("invalid etcd endpoint {text:?}: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "invalid etcd endpoint {text:?}: the scheme must be http:// or https://"
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("invalid etcd endpoint {text:?}: no host"))?;
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Err(format!(
            "invalid etcd endpoint {text:?}: expected host:port, without a path"
        ));
    }
    let port = url.port().unwrap_or(DEFAULT_ETCD_PORT);
    Ok(format!("{}://{host}:{port}", url.scheme()))
}

fn parse_worker_id(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text.trim())
        .map_err(|e| format!("invalid worker id {text:?}: expected a UUID ({e})"))
}

fn parse_placement(text: &str) -> Result<Placement, String> {
    Placement::from_setting(text).map_err(|e| e.to_string())
}

/// `advertise_host` is what clients connect to, so it must be a host name
/// or an IP address: an unexpanded `$(POD_IP)` from a manifest, a URL or a
/// host with a port would register an address no client can reach.
fn check_advertise_host(h: &str) -> Result<(), WorkerError> {
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    if h.trim().is_empty() {
        return Err(cfg_err("advertise_host is empty"));
    }
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.len() <= 253 && h.trim_end_matches('.').split('.').all(label_ok) {
        return Ok(());
    }
    Err(cfg_err(format!(
        "advertise_host {h:?} is not a host name or an IP address (give the bare host, without \
         a scheme or a port; from Kubernetes, an unexpanded $(VAR) means the variable is not \
         defined in the container's env)"
    )))
}

fn cfg_err(msg: impl Into<String>) -> WorkerError {
    WorkerError::Config(msg.into())
}

impl WorkerConfig {
    /// A configuration with defaults and the given mounts.
    pub fn with_mounts<S: Into<String>>(mounts: impl IntoIterator<Item = S>) -> Self {
        WorkerConfig {
            mounts: mounts.into_iter().map(|m| MountConfig::new(m)).collect(),
            ..Default::default()
        }
    }

    /// Parse a command line (`args[0]` is the program name) and the process
    /// environment into a validated configuration.
    pub fn from_args<I, T>(args: I) -> Result<Self, WorkerError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args).map_err(WorkerError::Cli)?;
        Self::from_cli_and_env(&cli, &|k| std::env::var(k).ok())
    }

    /// Merge default < YAML (`--config` or `ALLUXIOFS_WORKER_CONFIG`) < env
    /// (read through `env`) < flags, then validate.
    pub fn from_cli_and_env(
        cli: &Cli,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, WorkerError> {
        let mut cfg = Self::merged(cli, env)?;
        cfg.resolve_capacity_share()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// With `capacity_share`, give each cache directory without a capacity
    /// of its own that share of its filesystem's size (the directory is
    /// created to measure it), in whole pages; `capacity` becomes the
    /// first directory's.
    pub fn resolve_capacity_share(&mut self) -> Result<(), WorkerError> {
        let Some(share) = self.capacity_share else {
            return Ok(());
        };
        let share = f64::from(share) / 10_000.0;
        let page = self.page_size.max(1);
        for d in &mut self.cache_dirs {
            if d.capacity.is_some() {
                continue;
            }
            std::fs::create_dir_all(&d.path).map_err(|e| {
                cfg_err(format!(
                    "cache dir {}: cannot create it to size it: {e}",
                    d.path.display()
                ))
            })?;
            let fs = rustix::fs::statvfs(&d.path).map_err(|e| {
                cfg_err(format!(
                    "cache dir {}: cannot measure its filesystem: {e}",
                    d.path.display()
                ))
            })?;
            let size = fs.f_blocks.saturating_mul(fs.f_frsize);
            let bytes = ((size as f64 * share) as u64) / page * page;
            d.capacity = Some(bytes);
        }
        if let Some(first) = self.cache_dirs.first().and_then(|d| d.capacity) {
            self.capacity = first;
        }
        Ok(())
    }

    /// The layers applied over the defaults, lowest first; not validated.
    /// The one place precedence is decided.
    fn merged(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, WorkerError> {
        let mut cfg = WorkerConfig::default();
        // The file is named by the flag, else the variable (even an empty
        // one, which then fails to read).
        let config_file = cli
            .config
            .clone()
            .or_else(|| env(&format!("{ENV_PREFIX}CONFIG")).map(PathBuf::from));
        if let Some(path) = config_file {
            ConfigLayer::from_yaml_file(&path)?.apply(&mut cfg)?;
        }
        ConfigLayer::from_env(env)?.apply(&mut cfg)?;
        ConfigLayer::from_cli(cli).apply(&mut cfg)?;
        Ok(cfg)
    }

    /// Check the merged configuration.
    pub fn validate(&self) -> Result<(), WorkerError> {
        if self.mounts.is_empty() {
            return Err(cfg_err(
                "no mount configured: pass at least one --mount URL (e.g. --mount s3://bucket/prefix or --mount /data), \
                 or set mounts in the config file or ALLUXIOFS_WORKER_MOUNTS",
            ));
        }
        if self.cache_dirs.is_empty() {
            return Err(cfg_err("no cache directory configured"));
        }
        if self.page_size < 4096 || self.page_size > (1 << 30) {
            return Err(cfg_err(format!(
                "page_size {} out of range (4KiB to 1GiB)",
                self.page_size
            )));
        }
        for m in &self.mounts {
            alluxiofs_core::path::normalize_mount(&m.url)
                .map_err(|e| cfg_err(format!("mount {:?}: {e}", m.url)))?;
        }
        let name = &self.cluster_name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(cfg_err(format!(
                "cluster_name {name:?}: use letters, digits, '-', '_' and '.' only"
            )));
        }
        if self.etcd_lease_ttl < Duration::from_secs(1) {
            return Err(cfg_err(format!(
                "etcd_lease_ttl {:?} is too short (at least 1s)",
                self.etcd_lease_ttl
            )));
        }
        if self.etcd_username.is_none()
            && (self.etcd_password.is_some() || self.etcd_password_file.is_some())
        {
            return Err(cfg_err(
                "an etcd password is set but no etcd_username (--etcd-username)",
            ));
        }
        if let Some(h) = &self.advertise_host {
            check_advertise_host(h)?;
        }
        let pair = |a: &Option<PathBuf>, b: &Option<PathBuf>, names: &str| {
            if a.is_some() != b.is_some() {
                Err(cfg_err(format!("{names} go together: set both or neither")))
            } else {
                Ok(())
            }
        };
        pair(&self.tls_cert, &self.tls_key, "tls_cert and tls_key")?;
        pair(
            &self.etcd_tls_cert,
            &self.etcd_tls_key,
            "etcd_tls_cert and etcd_tls_key",
        )?;
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(cfg_err(
                "tls_client_ca needs tls_cert and tls_key (client certificates are asked for over TLS)",
            ));
        }
        Ok(())
    }

    /// The etcd user and password: `etcd_password`, else the contents of
    /// `etcd_password_file` (one trailing newline dropped); `None` without a
    /// user name.
    pub fn resolve_etcd_user(&self) -> Result<Option<(String, String)>, WorkerError> {
        let Some(user) = &self.etcd_username else {
            return Ok(None);
        };
        if let Some(p) = &self.etcd_password {
            return Ok(Some((user.clone(), p.clone())));
        }
        let Some(path) = &self.etcd_password_file else {
            return Err(cfg_err(format!(
                "etcd_username {user:?} is set but no etcd password \
                 (--etcd-password-file FILE or ALLUXIOFS_WORKER_ETCD_PASSWORD)"
            )));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            cfg_err(format!(
                "cannot read etcd password file {}: {e}",
                path.display()
            ))
        })?;
        let password = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        Ok(Some((user.clone(), password.to_string())))
    }

    /// Cache directories whose capacity is more than their filesystem's
    /// size, as warnings to log at start: the worker would meet ENOSPC
    /// before its capacity and serve those pages from the UFS. Directories
    /// that cannot be measured are skipped.
    pub fn capacity_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in &self.cache_dirs {
            let cap = d.capacity.unwrap_or(self.capacity);
            let Ok(fs) = rustix::fs::statvfs(&d.path) else {
                continue;
            };
            let size = fs.f_blocks.saturating_mul(fs.f_frsize);
            if cap > size {
                out.push(format!(
                    "cache dir {}: capacity {} is more than its filesystem holds ({}); \
                     lower the capacity or give it a bigger disk",
                    d.path.display(),
                    alluxiofs_core::info::human_size(cap),
                    alluxiofs_core::info::human_size(size)
                ));
            }
        }
        out
    }

    /// The host written in etcd: `advertise_host`, else `host` unless it is
    /// a wildcard address (`0.0.0.0`, `::`), then the machine's host name.
    pub fn resolve_advertise_host(&self) -> String {
        if let Some(h) = &self.advertise_host {
            return h.trim().to_string();
        }
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => machine_hostname(),
            _ => host.to_string(),
        }
    }

    /// Where clients of this worker's cluster find its membership (etcd
    /// endpoints, cluster, credentials), for the worker's own client calls.
    pub fn etcd_client_config(&self) -> Result<alluxiofs_core::discovery::EtcdConfig, WorkerError> {
        let user = self.resolve_etcd_user()?;
        Ok(alluxiofs_core::discovery::EtcdConfig {
            endpoints: self.etcd.clone(),
            cluster: self.cluster_name.clone(),
            username: user.as_ref().map(|u| u.0.clone()),
            password: user.map(|u| u.1),
            tls: self.etcd_tls(),
            ..Default::default()
        })
    }

    /// TLS to etcd: on when a file of it is set or an endpoint is
    /// `https://`.
    pub fn etcd_tls(&self) -> Option<alluxiofs_core::discovery::EtcdTls> {
        let on = self.etcd_tls_ca.is_some()
            || self.etcd_tls_cert.is_some()
            || self.etcd.iter().any(|e| e.starts_with("https://"));
        on.then(|| alluxiofs_core::discovery::EtcdTls {
            ca: self.etcd_tls_ca.clone(),
            cert: self.etcd_tls_cert.clone(),
            key: self.etcd_tls_key.clone(),
        })
    }

    /// Whether the listeners speak HTTPS.
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// `https` when the listeners speak TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.serves_tls() {
            "https"
        } else {
            "http"
        }
    }

    /// How this worker's own requests to its peers use TLS: HTTPS when it
    /// serves HTTPS (a cluster speaks one scheme), trusting `tls_ca`, and
    /// presenting its own certificate when the cluster requires client
    /// certificates.
    pub fn peer_tls(&self) -> alluxiofs_core::tls::ClientTls {
        let mtls = self.tls_client_ca.is_some();
        alluxiofs_core::tls::ClientTls {
            enabled: self.serves_tls(),
            ca: self.tls_ca.clone(),
            verify: true,
            cert: self.tls_cert.clone().filter(|_| mtls),
            key: self.tls_key.clone().filter(|_| mtls),
        }
    }

    /// The S3 access keys: `s3_access_key` with `s3_secret_key`, then the
    /// lines of `s3_keys_file`.
    pub fn resolve_s3_keys(&self) -> Result<S3Keys, WorkerError> {
        let mut keys = match (&self.s3_access_key, &self.s3_secret_key) {
            (Some(a), Some(s)) => S3Keys(vec![(a.clone(), s.clone())]),
            (None, None) => S3Keys::default(),
            _ => {
                return Err(cfg_err(
                    "s3_access_key and s3_secret_key go together: set both or neither",
                ))
            }
        };
        if let Some(path) = &self.s3_keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| cfg_err(format!("cannot read S3 key file {}: {e}", path.display())))?;
            let more = S3Keys::parse(&text)
                .map_err(|e| cfg_err(format!("S3 key file {}: {e}", path.display())))?;
            keys.0.extend(more.0);
        }
        Ok(keys)
    }

    /// The auth token: `auth_token`, else the trimmed contents of
    /// `auth_token_file`, else none.
    pub fn resolve_auth_token(&self) -> Result<Option<String>, WorkerError> {
        if let Some(t) = &self.auth_token {
            return Ok(Some(t.clone()));
        }
        match &self.auth_token_file {
            None => Ok(None),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    cfg_err(format!(
                        "cannot read auth token file {}: {e}",
                        path.display()
                    ))
                })?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    return Err(cfg_err(format!(
                        "auth token file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(token))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn capacities_can_be_shares_of_the_disk_and_of_the_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let fs = rustix::fs::statvfs(dir.path()).unwrap();
        let disk = fs.f_blocks * fs.f_frsize;
        let cli = Cli::try_parse_from([
            "w",
            "--mount",
            "s3://b",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--capacity",
            "50%",
            "--memory-capacity",
            "10%",
        ])
        .unwrap();
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env_of(&[])).unwrap();
        let want = disk / 2 / cfg.page_size * cfg.page_size;
        assert_eq!(cfg.cache_dirs[0].capacity, Some(want));
        assert_eq!(cfg.capacity, want);
        assert!(cache.is_dir(), "created to be measured");
        let mem = crate::units::memory_limit().unwrap();
        assert!(cfg.memory_capacity > 0 && cfg.memory_capacity <= mem / 10 + 1);
        // The environment and YAML take shares too; a size after a share wins.
        let cfg = WorkerConfig::from_cli_and_env(
            &Cli::try_parse_from([
                "w",
                "--mount",
                "s3://b",
                "--cache-dir",
                cache.to_str().unwrap(),
            ])
            .unwrap(),
            &env_of(&[("ALLUXIOFS_WORKER_CAPACITY", "25%")]),
        )
        .unwrap();
        assert_eq!(cfg.capacity, disk / 4 / cfg.page_size * cfg.page_size);
        let cfg = WorkerConfig::from_cli_and_env(
            &Cli::try_parse_from([
                "w",
                "--mount",
                "s3://b",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--capacity",
                "1GiB",
            ])
            .unwrap(),
            &env_of(&[("ALLUXIOFS_WORKER_CAPACITY", "25%")]),
        )
        .unwrap();
        assert_eq!((cfg.capacity, cfg.capacity_share), (1 << 30, None));
        for bad in ["0%", "150%", "x%", "-5%"] {
            assert!(
                Cli::try_parse_from(["w", "--capacity", bad]).is_err(),
                "{bad}"
            );
            let e = WorkerConfig::from_cli_and_env(
                &Cli::try_parse_from(["w", "--mount", "s3://b"]).unwrap(),
                &env_of(&[("ALLUXIOFS_WORKER_MEMORY_CAPACITY", bad)]),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("memory_capacity") && e.contains("percentage"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_capacity_beyond_the_disk_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WorkerConfig {
            cache_dirs: vec![CacheDirConfig {
                path: dir.path().to_path_buf(),
                capacity: None,
            }],
            capacity: 1 << 60,
            ..WorkerConfig::default()
        };
        let w = cfg.capacity_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("1.0 EiB") || w[0].contains("more than its filesystem holds"),
            "{w:?}"
        );
        cfg.capacity = 4096;
        assert!(cfg.capacity_warnings().is_empty());
        cfg.cache_dirs[0].path = dir.path().join("not-yet");
        cfg.capacity = 1 << 60;
        assert!(
            cfg.capacity_warnings().is_empty(),
            "an unmeasurable dir is skipped"
        );
    }

    #[test]
    fn advertise_host_must_be_a_host_or_an_ip() {
        for ok in [
            "10.0.0.7",
            "::1",
            "[fd00::1]",
            "w1.example",
            "worker_1.local.",
            "node-3",
        ] {
            assert!(check_advertise_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "$(POD_IP)",
            "http://w1:28080",
            "w1:28080",
            "a b",
            "-w1",
            "w1..x",
        ] {
            let e = check_advertise_host(bad).unwrap_err().to_string();
            assert!(e.contains("advertise_host"), "{bad}: {e}");
        }
    }

    #[test]
    fn mount_required() {
        let cli = Cli::try_parse_from(["w"]).unwrap();
        let err = WorkerConfig::from_cli_and_env(&cli, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("--mount"), "{err}");
    }

    #[test]
    fn precedence_flag_env_yaml_default() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("w.yaml");
        std::fs::write(
            &yaml,
            "host: 0.0.0.0\nport: 1111\npage_size: 64KiB\nmetadata_ttl: 5s\n\
             mounts:\n  - s3://b/x\n  - url: s3://c\n    options: {endpoint: 'http://127.0.0.1:9000'}\n\
             cache_dirs:\n  - /tmp/a\n  - {path: /tmp/b, capacity: 1GiB}\n\
             ufs_options: {region: eu-west-1}\nmemory_capacity: 0\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "w",
            "--config",
            yaml.to_str().unwrap(),
            "--port",
            "3333",
            "--ufs-option",
            "allow_http=true",
        ])
        .unwrap();
        let env = env_of(&[
            ("ALLUXIOFS_WORKER_PORT", "2222"),
            ("ALLUXIOFS_WORKER_HOST", "10.0.0.1"),
            ("ALLUXIOFS_WORKER_CAPACITY", "2GiB"),
        ]);
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env).unwrap();
        assert_eq!(cfg.port, 3333, "flag beats env and yaml");
        assert_eq!(cfg.host, "10.0.0.1", "env beats yaml");
        assert_eq!(cfg.capacity, 2 << 30, "env beats default");
        assert_eq!(cfg.page_size, 64 << 10, "yaml beats default");
        assert_eq!(cfg.metadata_ttl, Duration::from_secs(5));
        assert_eq!(cfg.memory_capacity, 0);
        assert_eq!(cfg.mounts.len(), 2);
        assert_eq!(cfg.mounts[1].options["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(cfg.cache_dirs[1].capacity, Some(1 << 30));
        assert_eq!(cfg.cache_dirs[0].capacity, None);
        assert_eq!(cfg.ufs_options["region"], "eu-west-1");
        assert_eq!(cfg.ufs_options["allow_http"], "true");
        assert_eq!(cfg.log_level, "info");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut cfg = WorkerConfig::with_mounts(["s3://b"]);
        cfg.auth_token = Some("tok-123".into());
        cfg.mounts[0]
            .options
            .insert("secret_access_key".into(), "sk-456".into());
        cfg.mounts[0]
            .options
            .insert("access_key_id".into(), "AKID".into());
        cfg.ufs_options.insert("token".into(), "st-789".into());
        let text = format!("{cfg:?}");
        for secret in ["tok-123", "sk-456", "st-789"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("AKID") && text.contains("s3://b"));
    }

    #[test]
    fn membership_keys_from_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("w.yaml");
        std::fs::write(
            &yaml,
            "mounts: [/data]\netcd: [h1, 'http://h2:2380', 'h3:2381']\ncluster_name: yaml-c\n\
             etcd_lease_ttl: 4s\nplacement: rendezvous\nworker_id: b785d1f098863821a4eb6bee226c35b7\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from(["w", "--config", yaml.to_str().unwrap()]).unwrap();
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env_of(&[])).unwrap();
        assert_eq!(
            cfg.etcd,
            ["http://h1:2379", "http://h2:2380", "http://h3:2381"]
        );
        assert_eq!(cfg.cluster_name, "yaml-c");
        assert_eq!(cfg.etcd_lease_ttl, Duration::from_secs(4));
        assert_eq!(cfg.placement, Placement::Rendezvous);
        assert_eq!(
            cfg.worker_id.unwrap().to_string(),
            "b785d1f0-9886-3821-a4eb-6bee226c35b7"
        );

        let env = env_of(&[
            ("ALLUXIOFS_WORKER_ETCD", "127.0.0.1:1, 127.0.0.2"),
            ("ALLUXIOFS_WORKER_CLUSTER_NAME", "env-c"),
            ("ALLUXIOFS_WORKER_PLACEMENT", "alluxio:50"),
            ("ALLUXIOFS_WORKER_ETCD_USERNAME", "root"),
            ("ALLUXIOFS_WORKER_ETCD_PASSWORD", "pw-env"),
        ]);
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env).unwrap();
        assert_eq!(cfg.etcd, ["http://127.0.0.1:1", "http://127.0.0.2:2379"]);
        assert_eq!(cfg.cluster_name, "env-c");
        assert_eq!(cfg.placement, Placement::Alluxio { vnodes: 50 });
        assert_eq!(
            cfg.resolve_etcd_user().unwrap(),
            Some(("root".into(), "pw-env".into()))
        );
        assert!(!format!("{cfg:?}").contains("pw-env"));

        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from file\n").unwrap();
        let cli = Cli::try_parse_from([
            "w",
            "--config",
            yaml.to_str().unwrap(),
            "--etcd",
            "http://10.1.1.1:2379,10.1.1.2:2379",
            "--etcd-lease-ttl",
            "2s",
            "--placement",
            "alluxio",
            "--etcd-username",
            "u",
            "--etcd-password-file",
            pw.to_str().unwrap(),
            "--advertise-host",
            "w1.example",
            "--worker-id",
            "3e05246f-5a4b-37e7-bd9a-0b09b1706b95",
        ])
        .unwrap();
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env_of(&[])).unwrap();
        assert_eq!(cfg.etcd, ["http://10.1.1.1:2379", "http://10.1.1.2:2379"]);
        assert_eq!(cfg.etcd_lease_ttl, Duration::from_secs(2));
        assert_eq!(cfg.placement, Placement::default());
        assert_eq!(
            cfg.resolve_etcd_user().unwrap(),
            Some(("u".into(), "from file".into()))
        );
        assert_eq!(cfg.resolve_advertise_host(), "w1.example");
        assert_eq!(
            cfg.worker_id.unwrap().to_string(),
            "3e05246f-5a4b-37e7-bd9a-0b09b1706b95"
        );
    }

    #[test]
    fn membership_defaults_and_bad_values() {
        let cfg = WorkerConfig::with_mounts(["/data"]);
        assert!(cfg.etcd.is_empty());
        assert_eq!(cfg.cluster_name, "DefaultAlluxioCluster");
        assert_eq!(cfg.etcd_lease_ttl, Duration::from_secs(10));
        assert_eq!(cfg.placement, Placement::Alluxio { vnodes: 5 });
        assert_eq!(cfg.resolve_advertise_host(), "127.0.0.1");
        let wildcard = WorkerConfig {
            host: "0.0.0.0".into(),
            ..cfg.clone()
        };
        assert_eq!(wildcard.resolve_advertise_host(), machine_hostname());
        let v6 = WorkerConfig {
            host: "[::]".into(),
            ..cfg.clone()
        };
        assert_eq!(v6.resolve_advertise_host(), machine_hostname());

        assert_eq!(
            normalize_etcd_endpoint("https://h").unwrap(),
            "https://h:2379"
        );
        for bad in [
            "ftp://h:2379",
            "http://h:2379/v3",
            "h:notaport",
            "http://:2379",
        ] {
            assert!(normalize_etcd_endpoint(bad).is_err(), "{bad}");
        }
        let parse = |args: &[&str]| {
            let mut all = vec!["w", "--mount", "/data"];
            all.extend_from_slice(args);
            WorkerConfig::from_args(all)
        };
        assert!(parse(&["--placement", "maglev"]).is_err());
        assert!(parse(&["--worker-id", "worker-1"]).is_err());
        let err = parse(&["--etcd-lease-ttl", "500ms"]).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
        let err = parse(&["--etcd-password", "x"]).unwrap_err();
        assert!(err.to_string().contains("etcd_username"), "{err}");
        let err = parse(&["--cluster-name", "a/b"]).unwrap_err();
        assert!(err.to_string().contains("cluster_name"), "{err}");
        let no_pw = parse(&["--etcd-username", "u"]).unwrap();
        assert!(no_pw.resolve_etcd_user().is_err());
    }

    #[test]
    fn env_lists_and_unknown_yaml_keys() {
        let cli = Cli::try_parse_from(["w"]).unwrap();
        let env = env_of(&[
            ("ALLUXIOFS_WORKER_MOUNTS", "s3://a, /data"),
            ("ALLUXIOFS_WORKER_CACHE_DIRS", "/x,/y"),
            ("ALLUXIOFS_WORKER_METADATA_TTL", "0"),
        ]);
        let cfg = WorkerConfig::from_cli_and_env(&cli, &env).unwrap();
        assert_eq!(cfg.mounts[1].url, "/data");
        assert_eq!(cfg.cache_dirs.len(), 2);
        assert_eq!(cfg.metadata_ttl, Duration::ZERO);
        assert!(ConfigLayer::from_yaml("hots: x\n").is_err());
    }
}

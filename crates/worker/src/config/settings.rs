//! The worker's settings, each declared once.
//!
//! One `settings!` row per setting names everything about it: its flag
//! (the clap attributes, its help, the type clap parses into), its
//! environment variable and how that text becomes the setting's raw value,
//! its YAML key (if a file may set it), how a raw value is checked
//! into the [`WorkerConfig`] field, and its documented default. From the
//! rows the macro generates the `alluxiofs-worker` command line ([`Cli`]),
//! the layer type ([`ConfigLayer`], every field optional) read from YAML,
//! from the environment or from the flags, the one generic `apply` that
//! merges a layer over a configuration, and [`SETTINGS`], the table the
//! tests hold `docs/configuration.md` and the precedence rule against.
//!
//! Why not clap's `env` attribute: clap reads the process environment
//! itself, at flag precedence and with clap's error messages (exit status
//! 2). The worker reads the environment through an injected function
//! ([`WorkerConfig::from_cli_and_env`], so tests and embedders need not
//! touch the process environment), reports bad environment values as
//! configuration errors naming the setting (exit status 1), and ignores
//! empty variables. So the environment is a layer of its own, read here.
//!
//! Precedence is applied in one place ([`WorkerConfig::from_cli_and_env`]):
//! the layers are applied over the defaults lowest first, YAML, environment,
//! flags, so a layer only overrides what it sets. A raw value is checked
//! when its layer is applied (a bad value in a lower layer is an error even
//! when a higher one overrides it).

use super::*;

/// What the tests and docs need to know about one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The field of [`Cli`] and [`ConfigLayer`] (and, but for `config`,
    /// of [`WorkerConfig`]).
    pub name: &'static str,
    /// Its YAML key, if a YAML file may set it.
    pub yaml: Option<&'static str>,
    /// Whether a flag sets it (its spelling is clap's: see [`Cli`]).
    pub flag: bool,
    /// Its environment variable, if any.
    pub env: Option<&'static str>,
    /// The default as `docs/configuration.md` states it.
    pub default: &'static str,
}

macro_rules! settings {
    (@opt) => { None };
    (@opt $e:expr) => { Some($e) };
    (@has) => { false };
    (@has $e:expr) => { true };
    (
        $(#[$cli_meta:meta])*
        pub struct Cli;
        $(
            $field:ident: $raw:ty {
                $(flag: $doc:literal [$($arg:tt)*] $cli_ty:ty => $from_flag:expr,)?
                $(env: $env:literal => $from_env:expr,)?
                $(yaml: $yaml:ident,)?
                check: $check:expr,
                set: $set:expr,
                default: $default:literal,
            }
        )*
    ) => {
        $(#[$cli_meta])*
        pub struct Cli {
            $($(
                #[doc = $doc]
                #[arg($($arg)*)]
                pub $field: $cli_ty,
            )?)*
        }

        /// One configuration layer (YAML file, environment or flags): every
        /// field optional, `None` = not set in this layer.
        #[derive(Clone, Default)]
        pub struct ConfigLayer {
            $($field: Option<$raw>,)*
        }

        /// The keys a YAML file may hold.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct YamlLayer {
            $($(
                $yaml: Option<$raw>,
            )?)*
        }

        impl From<YamlLayer> for ConfigLayer {
            #[allow(clippy::needless_update)]
            fn from(y: YamlLayer) -> Self {
                ConfigLayer {
                    $($($field: y.$yaml,)?)*
                    ..Default::default()
                }
            }
        }

        /// Every setting, in declaration order.
        pub const SETTINGS: &[Setting] = &[
            $(Setting {
                name: stringify!($field),
                yaml: settings!(@opt $(stringify!($yaml))?),
                flag: settings!(@has $($doc)?),
                env: settings!(@opt $($env)?),
                default: $default,
            },)*
        ];

        // Each row's functions are bound to typed `fn` pointers (so that its
        // closures get their types) and called once.
        #[allow(clippy::redundant_closure_call)]
        impl ConfigLayer {
            /// Read the `ALLUXIOFS_WORKER_*` variables through `get` (empty
            /// ones count as unset).
            pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, WorkerError> {
                #[allow(unused_mut)]
                let mut layer = ConfigLayer::default();
                $($(
                    if let Some(text) = get($env).filter(|v| !v.trim().is_empty()) {
                        let parse: fn(&str) -> Result<$raw, String> = $from_env;
                        layer.$field = Some(
                            parse(&text).map_err(|e| cfg_err(format!("{}: {e}", $env)))?,
                        );
                    }
                )?)*
                Ok(layer)
            }

            /// The layer of the command-line flags.
            pub fn from_cli(cli: &Cli) -> Self {
                #[allow(unused_mut)]
                let mut layer = ConfigLayer::default();
                $($(
                    let from: fn(&$cli_ty) -> Option<$raw> = $from_flag;
                    layer.$field = from(&cli.$field);
                    let _ = $doc;
                )?)*
                layer
            }

            /// Apply this layer over `cfg`: every field set here replaces the
            /// one there (`ufs_options` are merged key by key). Raw values are
            /// checked here; an error names the setting.
            pub fn apply(self, cfg: &mut WorkerConfig) -> Result<(), WorkerError> {
                $(
                    if let Some(raw) = self.$field {
                        let check: fn(&str, $raw) -> Result<_, String> = $check;
                        let value = check(stringify!($field), raw).map_err(cfg_err)?;
                        let set: fn(&mut WorkerConfig, _) = $set;
                        set(cfg, value);
                    }
                )*
                Ok(())
            }
        }
    };
}

// Checks: the raw value of a layer into the value of a WorkerConfig field;
// `name` is the setting's, for the error message.

impl ConfigLayer {
    /// Read a YAML configuration file.
    pub fn from_yaml_file(path: &Path) -> Result<Self, WorkerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| cfg_err(format!("cannot read config file {}: {e}", path.display())))?;
        Self::from_yaml(&text).map_err(|e| cfg_err(format!("config file {}: {e}", path.display())))
    }

    /// Parse YAML text (an empty document is an empty layer).
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str::<YamlLayer>(text)
            .map(Into::into)
            .map_err(|e| e.to_string())
    }
}

fn ok<T>(_: &str, v: T) -> Result<T, String> {
    Ok(v)
}

fn some<T>(_: &str, v: T) -> Result<Option<T>, String> {
    Ok(Some(v))
}

fn size(name: &str, v: SizeValue) -> Result<u64, String> {
    v.bytes().map_err(|e| format!("{name}: {e}"))
}

fn duration(name: &str, v: DurationValue) -> Result<Duration, String> {
    v.duration().map_err(|e| format!("{name}: {e}"))
}

fn parsed<T: std::str::FromStr<Err = String>>(name: &str, v: String) -> Result<T, String> {
    v.parse().map_err(|e| format!("{name}: {e}"))
}

// Environment texts into raw values (an error is prefixed with the
// variable's name).

fn text(t: &str) -> Result<String, String> {
    Ok(t.to_string())
}

fn parse_bool(t: &str) -> Result<bool, String> {
    match t.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, not {other:?}")),
    }
}

fn path(t: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(t))
}

fn size_text(t: &str) -> Result<SizeValue, String> {
    Ok(SizeValue::Text(t.to_string()))
}

fn duration_text(t: &str) -> Result<DurationValue, String> {
    Ok(DurationValue::Text(t.to_string()))
}

/// A comma-separated list, items trimmed, empty items dropped.
fn list(t: &str) -> Vec<String> {
    t.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

// Flags into raw values.

fn cloned<T: Clone>(v: &Option<T>) -> Option<T> {
    v.clone()
}

fn text_flag(v: &Option<String>) -> Option<SizeValue> {
    v.clone().map(SizeValue::Text)
}

/// A size or a share (`90%`) as a flag: checked by clap, kept as text.
fn parse_size_or_share(t: &str) -> Result<String, String> {
    size_or_share("value", SizeValue::Text(t.to_string())).map(|_| t.to_string())
}

/// A size in bytes, or a share of something the setting names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeOrShare {
    /// Bytes.
    Bytes(u64),
    /// A share, above 0 and at most 1.
    Share(f64),
}

fn size_or_share(name: &str, v: SizeValue) -> Result<SizeOrShare, String> {
    match &v {
        SizeValue::Text(t) if t.trim().ends_with('%') => {
            let n = t.trim().trim_end_matches('%').trim();
            match n.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(SizeOrShare::Share(p / 100.0)),
                _ => Err(format!(
                    "{name}: {t:?}: a share is a percentage above 0 and at most 100%"
                )),
            }
        }
        _ => size(name, v).map(SizeOrShare::Bytes),
    }
}

fn size_flag(v: &Option<u64>) -> Option<SizeValue> {
    v.map(SizeValue::Bytes)
}

fn duration_flag(v: &Option<Duration>) -> Option<DurationValue> {
    v.map(|d| DurationValue::Text(format!("{}ms", d.as_millis())))
}

fn string_flag<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

settings! {
    /// The `alluxiofs worker` command line.
    #[derive(Debug, Clone, Default, Parser)]
    #[command(
        name = "alluxiofs-worker",
        version,
        about = "alluxiofs cache worker: serves UFS files (S3, GCS, Azure, HTTP, local) from a page cache on local disk and memory",
        long_about = "alluxiofs cache worker.\n\nServes files of the mounted UFS prefixes over the Alluxio worker HTTP API, reading \
through to the UFS on a miss and keeping pages on local disks and in memory.\n\nEvery option can also be set in a YAML \
file (--config, keys in snake_case) or an ALLUXIOFS_WORKER_* environment variable. Precedence: flag > environment > \
YAML > default.",
        after_help = "Sizes: 1048576, 64KiB, 1MiB, 10GiB (MB/GB are read as MiB/GiB). Durations: 60s, 500ms, 0.\n\
Environment: ALLUXIOFS_WORKER_HOST, _PORT, _MOUNTS (comma separated), _CACHE_DIRS (comma separated), _CAPACITY, \
_MEMORY_CAPACITY, _PAGE_SIZE, _METADATA_TTL, _STALE_IF_ERROR, _METADATA_CAPACITY, _AUTH_TOKEN, _AUTH_TOKEN_FILE, _TLS_CERT, _TLS_KEY, \
_TLS_CLIENT_CA, _TLS_CA, _CONFIG, _LOG_FORMAT, _LOG_LEVEL, \
_ETCD, _CLUSTER_NAME, _WORKER_ID, _ETCD_LEASE_TTL, _ETCD_USERNAME, _ETCD_PASSWORD, _ETCD_PASSWORD_FILE, _ETCD_TLS_CA, _ETCD_TLS_CERT, _ETCD_TLS_KEY, \
_ADVERTISE_HOST, _PLACEMENT, _EVICTION_POLICY, _PIN_QUOTA, _MOUNT_QUOTAS (comma separated URL=SIZE), _LOAD_BANDWIDTH, _LOCAL_SOCKET, _LOCAL_UIDS, _S3_PORT, _S3_BUCKETS (comma separated URL=NAME), _S3_REDIRECT, \
_S3_ANONYMOUS, _S3_ACCESS_KEY, _S3_SECRET_KEY, _S3_KEYS_FILE.\n\
Example: alluxiofs-worker --mount s3://bucket/datasets --cache-dir /nvme/alluxiofs --capacity 500GiB"
    )]
    pub struct Cli;

    host: String {
        flag: "Address to listen on [default: 127.0.0.1]."
            [long, value_name = "H"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_HOST" => text,
        yaml: host,
        check: ok,
        set: |c, v| c.host = v,
        default: "`127.0.0.1`",
    }
    port: u16 {
        flag: "Port to listen on; 0 picks a free port [default: 28080]."
            [long, value_name = "P"] Option<u16> => cloned,
        env: "ALLUXIOFS_WORKER_PORT" => |p| p.trim().parse().map_err(|_| format!("invalid port {p:?}")),
        yaml: port,
        check: ok,
        set: |c, v| c.port = v,
        default: "`28080`",
    }
    mounts: Vec<MountConfig> {
        flag: "UFS URL prefix to serve (repeatable; at least one): s3://bucket/prefix, gs://..., az://..., \
               https://host/prefix, file:///dir or /dir."
            [long = "mount", value_name = "URL"] Vec<String> =>
            |v| (!v.is_empty()).then(|| v.iter().cloned().map(MountConfig::new).collect()),
        env: "ALLUXIOFS_WORKER_MOUNTS" => |t| Ok(list(t).into_iter().map(MountConfig::new).collect()),
        yaml: mounts,
        check: ok,
        set: |c, v| c.mounts = v,
        default: "none: **required**",
    }
    cache_dirs: Vec<CacheDirConfig> {
        flag: "Page cache directory (repeatable) [default: $XDG_CACHE_HOME/alluxiofs/pages]."
            [long = "cache-dir", value_name = "DIR"] Vec<PathBuf> =>
            |v| (!v.is_empty()).then(|| v.iter().cloned().map(CacheDirConfig::new).collect()),
        env: "ALLUXIOFS_WORKER_CACHE_DIRS" =>
            |t| Ok(list(t).into_iter().map(CacheDirConfig::new).collect()),
        yaml: cache_dirs,
        check: ok,
        set: |c, v| c.cache_dirs = v,
        default: "`$XDG_CACHE_HOME/alluxiofs/pages` (else `~/.cache/alluxiofs/pages`)",
    }
    capacity: SizeValue {
        flag: "Capacity of each cache directory: a size, or a share of the directory's filesystem such as 90% [default: 10GiB]."
            [long, value_name = "SIZE|PCT", value_parser = parse_size_or_share] Option<String> => text_flag,
        env: "ALLUXIOFS_WORKER_CAPACITY" => size_text,
        yaml: capacity,
        check: size_or_share,
        set: |c, v| match v {
            SizeOrShare::Bytes(b) => {
                c.capacity = b;
                c.capacity_share = None;
            }
            SizeOrShare::Share(s) => c.capacity_share = Some((s * 10_000.0).round() as u32),
        },
        default: "`10GiB`",
    }
    memory_capacity: SizeValue {
        flag: "Memory tier for hot pages: a size, or a share of the memory this process may use (its cgroup's limit, else the machine's RAM) such as 60%; 0 turns it off [default: 256MiB]."
            [long, value_name = "SIZE|PCT", value_parser = parse_size_or_share] Option<String> => text_flag,
        env: "ALLUXIOFS_WORKER_MEMORY_CAPACITY" => size_text,
        yaml: memory_capacity,
        check: |name, v| match size_or_share(name, v)? {
            SizeOrShare::Bytes(b) => Ok(b),
            SizeOrShare::Share(s) => {
                let limit = crate::units::memory_limit()
                    .map_err(|e| format!("{name}: a share of the memory limit: {e}"))?;
                Ok((limit as f64 * s) as u64)
            }
        },
        set: |c, v| c.memory_capacity = v,
        default: "`256MiB`",
    }
    page_size: SizeValue {
        flag: "Page size; clients must use the same [default: 1MiB]."
            [long, value_name = "SIZE", value_parser = parse_size] Option<u64> => size_flag,
        env: "ALLUXIOFS_WORKER_PAGE_SIZE" => size_text,
        yaml: page_size,
        check: size,
        set: |c, v| c.page_size = v,
        default: "`1MiB`",
    }
    metadata_ttl: DurationValue {
        flag: "How long file metadata is cached; 0 asks the UFS every time [default: 60s]."
            [long, value_name = "DURATION", value_parser = parse_duration] Option<Duration> => duration_flag,
        env: "ALLUXIOFS_WORKER_METADATA_TTL" => duration_text,
        yaml: metadata_ttl,
        check: duration,
        set: |c, v| c.metadata_ttl = v,
        default: "`60s`",
    }
    stale_if_error: DurationValue {
        flag: "While the UFS is unreachable, serve cached files whose metadata expired at most this long ago; 0 never [default: 1h]."
            [long, value_name = "DURATION", value_parser = parse_duration] Option<Duration> => duration_flag,
        env: "ALLUXIOFS_WORKER_STALE_IF_ERROR" => duration_text,
        yaml: stale_if_error,
        check: duration,
        set: |c, v| c.stale_if_error = v,
        default: "`1h`",
    }
    metadata_capacity: SizeValue {
        flag: "Memory for cached file metadata; 0 caches none [default: 512MiB]."
            [long, value_name = "SIZE", value_parser = parse_size] Option<u64> => size_flag,
        env: "ALLUXIOFS_WORKER_METADATA_CAPACITY" => size_text,
        yaml: metadata_capacity,
        check: size,
        set: |c, v| c.metadata_capacity = v,
        default: "`512MiB`",
    }
    ufs_options: BTreeMap<String, String> {
        flag: "object_store option for every mount, e.g. endpoint=http://127.0.0.1:3900 (repeatable)."
            [long = "ufs-option", value_name = "KEY=VALUE", value_parser = parse_key_value]
            Vec<(String, String)> => |v| (!v.is_empty()).then(|| v.iter().cloned().collect()),
        yaml: ufs_options,
        check: ok,
        set: |c, v| c.ufs_options.extend(v),
        default: "empty",
    }
    auth_token: String {
        env: "ALLUXIOFS_WORKER_AUTH_TOKEN" => text,
        yaml: auth_token,
        check: some,
        set: |c, v| c.auth_token = v,
        default: "none",
    }
    auth_token_file: PathBuf {
        flag: "File holding a bearer token required on every endpoint but /healthz."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_AUTH_TOKEN_FILE" => path,
        yaml: auth_token_file,
        check: some,
        set: |c, v| c.auth_token_file = v,
        default: "none",
    }
    tls_cert: PathBuf {
        flag: "PEM certificate chain: serve HTTPS (the HTTP API and the S3 endpoint); reloaded on SIGHUP."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_TLS_CERT" => path,
        yaml: tls_cert,
        check: some,
        set: |c, v| c.tls_cert = v,
        default: "none",
    }
    tls_key: PathBuf {
        flag: "PEM private key of --tls-cert; reloaded on SIGHUP."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_TLS_KEY" => path,
        yaml: tls_key,
        check: some,
        set: |c, v| c.tls_key = v,
        default: "none",
    }
    tls_client_ca: PathBuf {
        flag: "PEM CA bundle: require a client certificate signed by it on the HTTP API (mutual TLS); the worker presents --tls-cert to its peers."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_TLS_CLIENT_CA" => path,
        yaml: tls_client_ca,
        check: some,
        set: |c, v| c.tls_client_ca = v,
        default: "none",
    }
    tls_ca: PathBuf {
        flag: "PEM CA bundle trusted for requests to other workers [default: the system's roots]."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_TLS_CA" => path,
        yaml: tls_ca,
        check: some,
        set: |c, v| c.tls_ca = v,
        default: "none",
    }
    etcd_tls_ca: PathBuf {
        flag: "PEM CA bundle of etcd's certificate: connect to etcd over TLS."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_ETCD_TLS_CA" => path,
        yaml: etcd_tls_ca,
        check: some,
        set: |c, v| c.etcd_tls_ca = v,
        default: "none",
    }
    etcd_tls_cert: PathBuf {
        flag: "PEM client certificate for etcd (etcd --client-cert-auth)."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_ETCD_TLS_CERT" => path,
        yaml: etcd_tls_cert,
        check: some,
        set: |c, v| c.etcd_tls_cert = v,
        default: "none",
    }
    etcd_tls_key: PathBuf {
        flag: "PEM private key of --etcd-tls-cert."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_ETCD_TLS_KEY" => path,
        yaml: etcd_tls_key,
        check: some,
        set: |c, v| c.etcd_tls_key = v,
        default: "none",
    }
    local_socket: String {
        flag: "Unix socket for same-node reads (page file descriptors passed to clients on this node): a path, `auto` (/tmp/alluxiofs-<uid>/<host>-<port>.sock) or `off`."
            [long, value_name = "PATH"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_LOCAL_SOCKET" => text,
        yaml: local_socket,
        check: |_, v: String| crate::config::LocalSocket::parse(&v),
        set: |c, v| c.local_socket = v,
        default: "`auto`",
    }
    local_uids: String {
        flag: "Uids besides the worker's own that may read through the local socket, comma separated (a client with the auth token may too)."
            [long, value_name = "UIDS"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_LOCAL_UIDS" => text,
        yaml: local_uids,
        check: |_, v: String| crate::config::parse_uids(&v),
        set: |c, v| c.local_uids = v,
        default: "none",
    }
    ready_file: PathBuf {
        flag: "Once listening, write {\"host\",\"port\",\"pid\",\"url\"} as JSON to this file."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        yaml: ready_file,
        check: some,
        set: |c, v| c.ready_file = v,
        default: "none",
    }
    // Not a layer value: it names the YAML file (see
    // `WorkerConfig::from_cli_and_env`), so it has no YAML key and applying
    // it does nothing.
    config: PathBuf {
        flag: "YAML configuration file."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_CONFIG" => path,
        check: ok,
        set: |_, _| {},
        default: "none",
    }
    log_format: LogFormat {
        flag: "Log format [default: text]."
            [long, value_name = "FORMAT"] Option<LogFormat> => cloned,
        env: "ALLUXIOFS_WORKER_LOG_FORMAT" => |f| f.parse(),
        yaml: log_format,
        check: ok,
        set: |c, v| c.log_format = v,
        default: "`text`",
    }
    log_level: String {
        flag: "Log level or tracing filter, e.g. debug or alluxiofs_worker=debug [default: info]."
            [long, value_name = "LEVEL"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_LOG_LEVEL" => text,
        yaml: log_level,
        check: ok,
        set: |c, v| c.log_level = v,
        default: "`info`",
    }
    etcd: EtcdEndpoints {
        flag: "Register in etcd for discovery by clients: comma-separated endpoints, \
               http://host:port or host:port [default: no etcd]."
            [long, value_name = "URLS"] Option<String> => |v| v.clone().map(EtcdEndpoints::One),
        env: "ALLUXIOFS_WORKER_ETCD" => |t| Ok(EtcdEndpoints::One(t.to_string())),
        yaml: etcd,
        check: |name, e: EtcdEndpoints| e.normalized().map_err(|e| format!("{name}: {e}")),
        set: |c, v| c.etcd = v,
        default: "none",
    }
    cluster_name: String {
        flag: "Cluster name, the etcd key prefix [default: DefaultAlluxioCluster]."
            [long, value_name = "NAME"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_CLUSTER_NAME" => text,
        yaml: cluster_name,
        check: ok,
        set: |c, v| c.cluster_name = v,
        default: "`DefaultAlluxioCluster`",
    }
    worker_id: String {
        flag: "Persistent worker identity (a UUID) [default: read or create <first cache dir>/worker_identity]."
            [long, value_name = "UUID", value_parser = parse_worker_id] Option<uuid::Uuid> => string_flag,
        env: "ALLUXIOFS_WORKER_WORKER_ID" => text,
        yaml: worker_id,
        check: |name, id: String| {
            parse_worker_id(&id).map(Some).map_err(|e| format!("{name}: {e}"))
        },
        set: |c, v| c.worker_id = v,
        default: "from the identity file",
    }
    etcd_lease_ttl: DurationValue {
        flag: "TTL of the etcd lease: how long a dead worker stays listed [default: 10s]."
            [long, value_name = "DURATION", value_parser = parse_duration] Option<Duration> => duration_flag,
        env: "ALLUXIOFS_WORKER_ETCD_LEASE_TTL" => duration_text,
        yaml: etcd_lease_ttl,
        check: duration,
        set: |c, v| c.etcd_lease_ttl = v,
        default: "`10s`",
    }
    etcd_username: String {
        flag: "etcd user name."
            [long, value_name = "USER"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_ETCD_USERNAME" => text,
        yaml: etcd_username,
        check: some,
        set: |c, v| c.etcd_username = v,
        default: "none",
    }
    etcd_password: String {
        flag: "etcd password (visible to other local users: prefer --etcd-password-file \
               or ALLUXIOFS_WORKER_ETCD_PASSWORD)."
            [long, value_name = "PASSWORD"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_ETCD_PASSWORD" => text,
        yaml: etcd_password,
        check: some,
        set: |c, v| c.etcd_password = v,
        default: "none",
    }
    etcd_password_file: PathBuf {
        flag: "File holding the etcd password."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_ETCD_PASSWORD_FILE" => path,
        yaml: etcd_password_file,
        check: some,
        set: |c, v| c.etcd_password_file = v,
        default: "none",
    }
    advertise_host: String {
        flag: "Host written in etcd for clients [default: --host, or the host name when --host is 0.0.0.0 or ::]."
            [long, value_name = "HOST"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_ADVERTISE_HOST" => text,
        yaml: advertise_host,
        check: some,
        set: |c, v| c.advertise_host = v,
        default: "`host`, or the machine's host name when `host` is `0.0.0.0` or `::`",
    }
    placement: String {
        flag: "Placement of paths on workers, the same for every worker of a cluster: \
               alluxio[:VNODES] (Alluxio-compatible ring) or rendezvous (balanced; alluxiofs \
               workers only) [default: alluxio:5]."
            [long, value_name = "NAME", value_parser = parse_placement] Option<Placement> =>
            |v| v.map(|p| p.to_setting()),
        env: "ALLUXIOFS_WORKER_PLACEMENT" => text,
        yaml: placement,
        check: |name, p: String| parse_placement(&p).map_err(|e| format!("{name}: {e}")),
        set: |c, v| c.placement = v,
        default: "`alluxio:5`",
    }
    eviction_policy: String {
        flag: "Eviction policy: s3fifo (scan resistant) or lru [default: s3fifo]."
            [long, value_name = "POLICY"] Option<crate::policy::PolicyKind> => string_flag,
        env: "ALLUXIOFS_WORKER_EVICTION_POLICY" => text,
        yaml: eviction_policy,
        check: parsed,
        set: |c, v| c.eviction_policy = v,
        default: "`s3fifo`",
    }
    pin_quota: SizeValue {
        flag: "Most bytes pinned pages may use: a size or a share of the total capacity [default: 50%]."
            [long, value_name = "SIZE|PCT", value_parser = crate::rules::PinQuota::parse]
            Option<crate::rules::PinQuota> => |v| v.map(|q| SizeValue::Text(q.to_setting())),
        env: "ALLUXIOFS_WORKER_PIN_QUOTA" => size_text,
        yaml: pin_quota,
        check: |name, q: SizeValue| match q {
            SizeValue::Bytes(b) => Ok(crate::rules::PinQuota::Bytes(b)),
            SizeValue::Text(t) => {
                crate::rules::PinQuota::parse(&t).map_err(|e| format!("{name}: {e}"))
            }
        },
        set: |c, v| c.pin_quota = v,
        default: "`50%`",
    }
    mount_quotas: BTreeMap<String, SizeValue> {
        flag: "Capacity quota of a mount (or a prefix inside one), e.g. s3://bucket/tmp=10GiB (repeatable)."
            [long = "mount-quota", value_name = "URL=SIZE", value_parser = crate::rules::parse_mount_quota]
            Vec<(String, u64)> => |v| (!v.is_empty())
                .then(|| v.iter().map(|(u, b)| (u.clone(), SizeValue::Bytes(*b))).collect()),
        env: "ALLUXIOFS_WORKER_MOUNT_QUOTAS" => |t| list(t)
            .iter()
            .map(|item| crate::rules::parse_mount_quota(item).map(|(u, b)| (u, SizeValue::Bytes(b))))
            .collect(),
        yaml: mount_quotas,
        check: |name, quotas: BTreeMap<String, SizeValue>| quotas
            .into_iter()
            .map(|(url, size)| {
                size.bytes()
                    .map(|b| (url.clone(), b))
                    .map_err(|e| format!("{name} {url:?}: {e}"))
            })
            .collect(),
        set: |c, v| c.mount_quotas = v,
        default: "none",
    }
    load_bandwidth: SizeValue {
        flag: "Bytes per second of UFS fetches for all cache loads together, e.g. 200MiB [default: unlimited]."
            [long, value_name = "SIZE", value_parser = parse_size] Option<u64> => size_flag,
        env: "ALLUXIOFS_WORKER_LOAD_BANDWIDTH" => size_text,
        yaml: load_bandwidth,
        check: |name, v: SizeValue| size(name, v).map(|b| (b > 0).then_some(b)),
        set: |c, v| c.load_bandwidth = v,
        default: "unlimited",
    }
    s3_port: String {
        flag: "Port of the S3 endpoint: a number (0 picks a free port), `auto` or `off` \
               [default: auto: 29998, or a free port when --port is 0]."
            [long, value_name = "PORT"] Option<String> => cloned,
        env: "ALLUXIOFS_WORKER_S3_PORT" => text,
        yaml: s3_port,
        check: |name, v: String| crate::config::S3Port::parse(&v).map_err(|e| format!("{name}: {e}")),
        set: |c, v| c.s3_port = v,
        default: "`auto`: 29998, or a free port when `port` is 0",
    }
    s3_buckets: BTreeMap<String, String> {
        flag: "S3 bucket name of a mount, e.g. file:///data/train=train (repeatable) \
               [default: s3://, gs://, az:// mounts keep their bucket; others are named by their first path segment]."
            [long = "s3-bucket", value_name = "URL=NAME", value_parser = parse_key_value]
            Vec<(String, String)> => |v| (!v.is_empty()).then(|| v.iter().cloned().collect()),
        env: "ALLUXIOFS_WORKER_S3_BUCKETS" => |t| list(t)
            .iter()
            .map(|item| parse_key_value(item))
            .collect(),
        yaml: s3_buckets,
        check: ok,
        set: |c, v| c.s3_buckets = v,
        default: "derived from the mounts",
    }
    s3_redirect: bool {
        flag: "Answer S3 GETs of objects another worker owns with a 307 redirect to it \
               (for clients that follow redirects) instead of forwarding."
            [long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true"] Option<bool> => cloned,
        env: "ALLUXIOFS_WORKER_S3_REDIRECT" => parse_bool,
        yaml: s3_redirect,
        check: ok,
        set: |c, v| c.s3_redirect = v,
        default: "`false`",
    }
    s3_anonymous: bool {
        flag: "Serve unsigned S3 requests (without it, requests must be signed with a configured key)."
            [long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true"] Option<bool> => cloned,
        env: "ALLUXIOFS_WORKER_S3_ANONYMOUS" => parse_bool,
        yaml: s3_anonymous,
        check: ok,
        set: |c, v| c.s3_anonymous = v,
        default: "`false`",
    }
    s3_access_key: String {
        env: "ALLUXIOFS_WORKER_S3_ACCESS_KEY" => text,
        yaml: s3_access_key,
        check: some,
        set: |c, v| c.s3_access_key = v,
        default: "none",
    }
    s3_secret_key: String {
        env: "ALLUXIOFS_WORKER_S3_SECRET_KEY" => text,
        yaml: s3_secret_key,
        check: some,
        set: |c, v| c.s3_secret_key = v,
        default: "none",
    }
    s3_keys_file: PathBuf {
        flag: "File of S3 access keys, one ACCESS_KEY:SECRET_KEY per line."
            [long, value_name = "FILE"] Option<PathBuf> => cloned,
        env: "ALLUXIOFS_WORKER_S3_KEYS_FILE" => path,
        yaml: s3_keys_file,
        check: some,
        set: |c, v| c.s3_keys_file = v,
        default: "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::HashMap;

    /// The flag of a setting, as clap spells it.
    fn long_flag(name: &str) -> Option<String> {
        Cli::command()
            .get_arguments()
            .find(|a| a.get_id() == name)
            .and_then(|a| a.get_long().map(|l| format!("--{l}")))
    }

    /// Three distinct valid values of each setting, one per layer: (YAML,
    /// environment, flag). Two-valued settings repeat one; a new setting
    /// without samples fails [`precedence_holds_for_every_setting`].
    fn samples(name: &str) -> (&'static str, &'static str, &'static str) {
        match name {
            "host" => ("y.example", "e.example", "f.example"),
            "port" => ("1111", "2222", "3333"),
            "mounts" => ("[/y]", "/e", "/f"),
            "cache_dirs" => ("[/y]", "/e", "/f"),
            "capacity" | "memory_capacity" => ("1GiB", "2GiB", "3GiB"),
            "metadata_capacity" => ("1MiB", "2MiB", "0"),
            "page_size" => ("64KiB", "128KiB", "256KiB"),
            "metadata_ttl" | "etcd_lease_ttl" | "stale_if_error" => ("2s", "3s", "4s"),
            "ufs_options" => ("{k: y}", "", "k=f"),
            "auth_token" => ("ty", "te", ""),
            "auth_token_file" | "ready_file" | "etcd_password_file" | "tls_cert" | "tls_key"
            | "tls_client_ca" | "tls_ca" | "etcd_tls_ca" | "etcd_tls_cert" | "etcd_tls_key" => {
                ("/y", "/e", "/f")
            }
            "log_format" => ("json", "text", "json"),
            "log_level" => ("debug", "warn", "error"),
            "etcd" => ("y:1", "e:2", "f:3"),
            "cluster_name" => ("cy", "ce", "cf"),
            "worker_id" => (
                "b785d1f0-9886-3821-a4eb-6bee226c35b7",
                "3e05246f-5a4b-37e7-bd9a-0b09b1706b95",
                "0b0b0b0b-5a4b-37e7-bd9a-0b09b1706b95",
            ),
            "etcd_username" | "etcd_password" | "advertise_host" => ("vy", "ve", "vf"),
            "placement" => ("rendezvous", "alluxio:7", "alluxio:9"),
            "eviction_policy" => ("lru", "s3fifo", "lru"),
            "pin_quota" => ("10%", "20%", "30%"),
            "mount_quotas" => ("{/y: 1MiB}", "/e=2MiB", "/f=3MiB"),
            "s3_port" => ("1111", "off", "3333"),
            "s3_buckets" => ("{/y: by}", "/e=be", "/f=bf"),
            "s3_redirect" | "s3_anonymous" => ("true", "false", "true"),
            "s3_access_key" | "s3_secret_key" => ("ky", "ke", ""),
            "s3_keys_file" => ("/y", "/e", "/f"),
            "load_bandwidth" => ("1MiB", "2MiB", "3MiB"),
            "local_socket" => ("/y.sock", "off", "/f.sock"),
            "local_uids" => ("'1'", "2,3", "4"),
            other => panic!("no sample values for setting {other}: add them here"),
        }
    }

    #[test]
    fn precedence_holds_for_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let yaml_file = dir.path().join("w.yaml");
        for s in SETTINGS {
            if s.name == "config" {
                continue; // It names the YAML layer, it is not a value of one.
            }
            let (y, e, f) = samples(s.name);
            let flag = long_flag(s.name);
            let merged = |yaml: bool, env: bool, flag_set: bool| {
                let mut args = vec!["w".to_string()];
                if yaml {
                    let key = s.yaml.expect("a YAML key");
                    std::fs::write(&yaml_file, format!("{key}: {y}\n")).unwrap();
                    args.push("--config".into());
                    args.push(yaml_file.display().to_string());
                }
                if flag_set {
                    args.push(flag.clone().expect("a flag"));
                    args.push(f.to_string());
                }
                let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
                let var = s.env.filter(|_| env);
                let get = move |k: &str| (Some(k) == var).then(|| e.to_string());
                WorkerConfig::merged(&cli, &get).unwrap_or_else(|e| panic!("{}: {e}", s.name))
            };
            let (has_yaml, has_env, has_flag) = (s.yaml.is_some(), s.env.is_some(), flag.is_some());
            assert_eq!(has_flag, s.flag, "{}", s.name);
            let default = merged(false, false, false);
            assert_eq!(default, WorkerConfig::default(), "{}: default", s.name);
            let yaml_only = merged(has_yaml, false, false);
            let env_only = merged(false, has_env, false);
            let flag_only = merged(false, false, has_flag);
            if has_yaml {
                assert_ne!(yaml_only, default, "{}: YAML beats the default", s.name);
            }
            if has_env {
                assert_eq!(
                    merged(has_yaml, true, false),
                    env_only,
                    "{}: env beats YAML",
                    s.name
                );
                assert_ne!(
                    env_only,
                    if has_yaml {
                        yaml_only.clone()
                    } else {
                        default.clone()
                    }
                );
            }
            if has_flag {
                assert_eq!(
                    merged(has_yaml, has_env, true),
                    flag_only,
                    "{}: flag wins",
                    s.name
                );
                let below = if has_env {
                    &env_only
                } else if has_yaml {
                    &yaml_only
                } else {
                    &default
                };
                assert_ne!(&flag_only, below, "{}: samples must differ", s.name);
            }
        }
    }

    /// The cells of the rows of the table under `## Keys`, split at `|`
    /// (not at `\|`).
    fn docs_rows(doc: &str) -> Vec<Vec<String>> {
        let table = &doc[doc.find("## Keys").expect("a ## Keys section")..];
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                let mut cells = Vec::new();
                let mut cell = String::new();
                let mut prev = ' ';
                for c in l.trim().trim_matches('|').chars() {
                    if c == '|' && prev != '\\' {
                        cells.push(cell.trim().to_string());
                        cell.clear();
                    } else {
                        cell.push(c);
                    }
                    prev = c;
                }
                cells.push(cell.trim().to_string());
                cells
            })
            .collect()
    }

    #[test]
    fn docs_configuration_md_matches_the_declaration() {
        let doc = include_str!("../../../../docs/configuration.md");
        let rows: HashMap<String, Vec<String>> = docs_rows(doc)
            .into_iter()
            .map(|r| (r[0].trim_matches('`').to_string(), r))
            .collect();
        for s in SETTINGS {
            let flag = long_flag(s.name);
            let Some(key) = s.yaml else {
                // No YAML key: no row; the text must still name it.
                for name in flag.iter().map(String::as_str).chain(s.env) {
                    assert!(doc.contains(name), "docs/configuration.md lacks {name}");
                }
                continue;
            };
            let row = rows
                .get(key)
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
            let (flag_cell, env_cell, default_cell) = (&row[1], &row[2], &row[3]);
            match &flag {
                Some(f) => assert!(
                    flag_cell.starts_with(&format!("`{f} ")) || flag_cell == &format!("`{f}`"),
                    "`{key}`: flag cell {flag_cell:?}, declared {f}"
                ),
                None => assert!(
                    !flag_cell.contains("`--"),
                    "`{key}` has no flag: {flag_cell:?}"
                ),
            }
            match s.env {
                Some(e) => assert!(
                    env_cell.starts_with(&format!("`{e}`")),
                    "`{key}`: environment cell {env_cell:?}, declared {e}"
                ),
                None => assert!(
                    !env_cell.contains(ENV_PREFIX),
                    "`{key}` has no variable: {env_cell:?}"
                ),
            }
            assert_eq!(default_cell, s.default, "`{key}`: default");
        }
        for key in rows.keys() {
            assert!(
                SETTINGS.iter().any(|s| s.yaml == Some(key.as_str())),
                "docs/configuration.md documents `{key}`, which is no setting"
            );
        }
    }

    #[test]
    fn documented_defaults_are_the_defaults_and_help_names_every_variable() {
        let words: Vec<String> = Cli::command()
            .get_after_help()
            .expect("after_help")
            .to_string()
            .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .map(str::to_string)
            .collect();
        for s in SETTINGS {
            if let Some(env) = s.env {
                let short = &env[ENV_PREFIX.len() - 1..];
                assert!(
                    words.iter().any(|w| w == env || w == short),
                    "--help does not list {env}"
                );
            }
            // A default that is one value in backticks reads back as the
            // default of the code.
            let Some(value) = s
                .default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
            else {
                continue;
            };
            if value.contains('`') {
                continue;
            }
            let env = s
                .env
                .expect("a setting with a plain default has a variable");
            let get = |k: &str| (k == env).then(|| value.to_string());
            let mut cfg = WorkerConfig::default();
            ConfigLayer::from_env(&get)
                .unwrap()
                .apply(&mut cfg)
                .unwrap();
            assert_eq!(
                cfg,
                WorkerConfig::default(),
                "{}: documented default {value}",
                s.name
            );
        }
    }
}

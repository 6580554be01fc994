//! What a volume is: its attributes (`volume_context`) and secrets checked
//! and turned into the `alluxiofs mount` command that serves it.
//!
//! Attributes (the PersistentVolume's `csi.volumeAttributes`, or an inline
//! volume's `volumeAttributes`):
//!
//! | key | value |
//! |---|---|
//! | `url` | the UFS URL the volume shows (`s3://bucket/train`) |
//! | `urls` | instead of `url`: several `NAME=URL` (or `URL`), separated by whitespace; each is a directory of the volume |
//! | `etcdHosts` | the cluster, by its etcd (`host:port,...`) |
//! | `workerHosts` | the cluster, by its workers (`host:port,...`) |
//! | `clusterName` | with `etcdHosts`: the cluster's name in etcd (default `DefaultAlluxioCluster`) |
//! | `write` | `"true"`: whole-file writes of new files, unlink, mkdir, rename (default read-only) |
//! | `attrTimeout`, `entryTimeout` | seconds the kernel trusts attributes and names |
//! | `noFallback` | `"true"`: never read the UFS from the node; what no worker serves fails |
//!
//! Keys under `csi.storage.k8s.io/` (pod information kubelet adds) are
//! ignored; any other key is refused, so a misspelt attribute is an error
//! at the first publish rather than a silently different volume. The only
//! secret (`nodePublishSecretRef`) key is `token`, the cluster's auth token:
//! it reaches the mount daemon in its environment, never its command line.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Attribute keys this plugin reads.
pub const KEYS: [&str; 9] = [
    "url",
    "urls",
    "etcdHosts",
    "workerHosts",
    "clusterName",
    "write",
    "attrTimeout",
    "entryTimeout",
    "noFallback",
];

/// Secret keys this plugin reads.
pub const SECRET_KEYS: [&str; 1] = ["token"];

/// How the mount reaches the cache workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cluster {
    /// `--etcd-hosts`: the workers registered in this etcd.
    Etcd(String),
    /// `--worker-hosts`: these workers.
    Workers(String),
}

/// A volume, checked: what `alluxiofs mount` gets.
#[derive(Clone, Debug, PartialEq)]
pub struct MountPlan {
    /// The mount's URL arguments (`URL` or `NAME=URL`).
    pub urls: Vec<String>,
    /// The workers it reads through.
    pub cluster: Cluster,
    /// `--cluster-name`, when set (with an etcd cluster).
    pub cluster_name: Option<String>,
    /// Writes allowed (`write: "true"` and the publish is not read-only).
    pub write: bool,
    /// `--attr-timeout` (seconds), when set.
    pub attr_timeout: Option<f64>,
    /// `--entry-timeout` (seconds), when set.
    pub entry_timeout: Option<f64>,
    /// `--no-fallback`: never read the UFS from the node.
    pub no_fallback: bool,
    /// The cluster's auth token (a secret).
    pub token: Option<String>,
}

impl MountPlan {
    /// The volume from its attributes and secrets. `readonly` is the
    /// publish request's read-only flag (or a reader-only access mode);
    /// `default_cluster` is the plugin's own `--etcd-hosts` /
    /// `--worker-hosts`, for volumes that name none.
    pub fn parse(
        attrs: &HashMap<String, String>,
        secrets: &HashMap<String, String>,
        readonly: bool,
        default_cluster: Option<&Cluster>,
    ) -> Result<Self, String> {
        let mut unknown: Vec<&str> = attrs
            .keys()
            .map(String::as_str)
            .filter(|k| !KEYS.contains(k) && !k.starts_with("csi.storage.k8s.io/"))
            .collect();
        unknown.sort_unstable();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown volume attribute(s) {} (known: {})",
                unknown.join(", "),
                KEYS.join(", ")
            ));
        }
        let mut bad_secrets: Vec<&str> = secrets
            .keys()
            .map(String::as_str)
            .filter(|k| !SECRET_KEYS.contains(k))
            .collect();
        bad_secrets.sort_unstable();
        if !bad_secrets.is_empty() {
            // Names only: a secret's value never goes into an answer.
            return Err(format!(
                "unknown secret key(s) {} (known: {})",
                bad_secrets.join(", "),
                SECRET_KEYS.join(", ")
            ));
        }
        let get = |k: &str| attrs.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let urls: Vec<String> = match (get("url"), get("urls")) {
            (Some(_), Some(_)) => return Err("give either url or urls, not both".into()),
            (None, None) => return Err("the volume attribute url (or urls) is required".into()),
            (Some(u), None) => vec![u.to_string()],
            (None, Some(list)) => list.split_whitespace().map(str::to_string).collect(),
        };
        let mut names = Vec::new();
        for u in &urls {
            let (name, url) = match u.split_once('=') {
                Some((n, rest)) if !n.contains("://") => (Some(n), rest),
                _ => (None, u.as_str()),
            };
            check_url(url)?;
            if let Some(n) = name {
                if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                    return Err(format!("bad directory name {n:?} in urls"));
                }
                if names.contains(&n) {
                    return Err(format!("directory name {n:?} is given twice in urls"));
                }
                names.push(n);
            }
        }
        let cluster = match (get("etcdHosts"), get("workerHosts")) {
            (Some(_), Some(_)) => {
                return Err("give either etcdHosts or workerHosts, not both".into())
            }
            (Some(h), None) => Cluster::Etcd(check_hosts("etcdHosts", h)?),
            (None, Some(h)) => Cluster::Workers(check_hosts("workerHosts", h)?),
            (None, None) => default_cluster.cloned().ok_or_else(|| {
                "no cluster: set the volume attribute etcdHosts or workerHosts, or start the \
                 plugin with --etcd-hosts or --worker-hosts"
                    .to_string()
            })?,
        };
        let cluster_name = match get("clusterName") {
            None => None,
            Some(_) if matches!(cluster, Cluster::Workers(_)) => {
                return Err("clusterName names a cluster in etcd: give it with etcdHosts".into())
            }
            Some(n)
                if n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Some(n.to_string())
            }
            Some(n) => {
                return Err(format!(
                    "clusterName {n:?}: letters, digits, '-', '_', '.' only"
                ))
            }
        };
        let write = flag(attrs, "write")?;
        if write && readonly {
            tracing::info!(
                "volume has write: \"true\" but is published read-only: mounting read-only"
            );
        }
        let token = secrets
            .get("token")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        Ok(Self {
            urls,
            cluster,
            cluster_name,
            write: write && !readonly,
            attr_timeout: seconds(attrs, "attrTimeout")?,
            entry_timeout: seconds(attrs, "entryTimeout")?,
            no_fallback: flag(attrs, "noFallback")?,
            token,
        })
    }

    /// The `alluxiofs` arguments that mount this volume at `target` as a
    /// daemon logging to `log` (no secret among them).
    pub fn args(&self, target: &Path, log: &Path) -> Vec<String> {
        let mut a = match &self.cluster {
            Cluster::Etcd(h) => vec!["--etcd-hosts".to_string(), h.clone()],
            Cluster::Workers(h) => vec!["--worker-hosts".to_string(), h.clone()],
        };
        if let Some(n) = &self.cluster_name {
            a.extend(["--cluster-name".to_string(), n.clone()]);
        }
        a.extend(["mount", "--daemon", "--allow-other", "--log-file"].map(String::from));
        a.push(log.display().to_string());
        if self.write {
            a.push("--write".into());
        }
        if self.no_fallback {
            a.push("--no-fallback".into());
        }
        if let Some(t) = self.attr_timeout {
            a.extend(["--attr-timeout".to_string(), t.to_string()]);
        }
        if let Some(t) = self.entry_timeout {
            a.extend(["--entry-timeout".to_string(), t.to_string()]);
        }
        a.push(target.display().to_string());
        a.extend(self.urls.iter().cloned());
        a
    }

    /// What makes two publishes of one target the same mount: everything
    /// but the target, the log and the token (a re-publish with a rotated
    /// token keeps the running mount).
    pub fn fingerprint(&self) -> String {
        let args = self.args(Path::new(""), Path::new(""));
        let mut h = Sha256::new();
        for a in &args {
            h.update(a.as_bytes());
            h.update([0]);
        }
        hex(&h.finalize()[..16])
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL (scheme://...)"));
    };
    if !alluxiofs_worker::ufs::SUPPORTED_SCHEMES.contains(&scheme) {
        return Err(format!(
            "{url:?}: the scheme {scheme:?} is not supported (supported: {})",
            alluxiofs_worker::ufs::SUPPORTED_SCHEMES.join(", ")
        ));
    }
    if rest.is_empty() || rest == "/" {
        return Err(format!("{url:?} names no bucket or directory"));
    }
    if url.chars().any(char::is_control) {
        return Err(format!("{url:?} has control characters"));
    }
    if rest.split('/').any(|seg| seg == "..") {
        return Err(format!("{url:?} has a '..' segment"));
    }
    Ok(())
}

fn check_hosts(key: &str, hosts: &str) -> Result<String, String> {
    let ok = hosts.split(',').all(|h| {
        let h = h.trim();
        let h = h
            .strip_prefix("http://")
            .or_else(|| h.strip_prefix("https://"))
            .unwrap_or(h);
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
    });
    if ok {
        Ok(hosts.to_string())
    } else {
        Err(format!("{key} {hosts:?} is not a list of host:port"))
    }
}

fn flag(attrs: &HashMap<String, String>, key: &str) -> Result<bool, String> {
    match attrs
        .get(key)
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(format!("{key} is {v:?}: use \"true\" or \"false\"")),
    }
}

fn seconds(attrs: &HashMap<String, String>, key: &str) -> Result<Option<f64>, String> {
    let Some(v) = attrs.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0 * 365.0).contains(&s) => Ok(Some(s)),
        _ => Err(format!("{key} is {v:?}: a number of seconds, 0 or more")),
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(kv: &[(&str, &str)]) -> Result<MountPlan, String> {
        MountPlan::parse(&attrs(kv), &HashMap::new(), false, None)
    }

    #[test]
    fn a_volume_becomes_a_mount_command() {
        let p = parse(&[
            ("url", "s3://bucket/train"),
            ("etcdHosts", "etcd-0:2379,etcd-1:2379"),
            ("clusterName", "train-cluster"),
            ("attrTimeout", "5"),
            ("csi.storage.k8s.io/pod.name", "trainer-0"),
        ])
        .unwrap();
        let args = p.args(Path::new("/t"), Path::new("/l.log"));
        assert_eq!(
            args,
            [
                "--etcd-hosts",
                "etcd-0:2379,etcd-1:2379",
                "--cluster-name",
                "train-cluster",
                "mount",
                "--daemon",
                "--allow-other",
                "--log-file",
                "/l.log",
                "--attr-timeout",
                "5",
                "/t",
                "s3://bucket/train"
            ]
        );
        assert!(!p.write);
    }

    #[test]
    fn several_urls_and_writes() {
        let p = parse(&[
            ("urls", "train=s3://b/train\n val=s3://b/val"),
            ("workerHosts", "10.0.0.1:28080"),
            ("write", "TRUE"),
            ("noFallback", "true"),
        ])
        .unwrap();
        assert_eq!(p.urls, ["train=s3://b/train", "val=s3://b/val"]);
        assert_eq!(p.cluster, Cluster::Workers("10.0.0.1:28080".into()));
        assert!(p.write && p.no_fallback);
        // A read-only publish wins over write.
        let ro = MountPlan::parse(
            &attrs(&[
                ("url", "s3://b/x"),
                ("workerHosts", "h:1"),
                ("write", "true"),
            ]),
            &HashMap::new(),
            true,
            None,
        )
        .unwrap();
        assert!(!ro.write);
    }

    #[test]
    fn bad_attributes_are_refused_with_the_reason() {
        let cases: [(&[(&str, &str)], &str); 15] = [
            (
                &[
                    ("url", "s3://b/x"),
                    ("workerHosts", "h:1"),
                    ("clusterName", "c"),
                ],
                "with etcdHosts",
            ),
            (
                &[
                    ("url", "s3://b/x"),
                    ("etcdHosts", "e:1"),
                    ("clusterName", "a b"),
                ],
                "letters, digits",
            ),
            (&[("workerHosts", "h:1")], "url (or urls) is required"),
            (
                &[("url", "s3://b/x"), ("workerHost", "h:1")],
                "unknown volume attribute(s) workerHost",
            ),
            (
                &[("url", "ftp://b/x"), ("workerHosts", "h:1")],
                "not supported",
            ),
            (&[("url", "bucket/x"), ("workerHosts", "h:1")], "not a URL"),
            (
                &[("url", "s3://"), ("workerHosts", "h:1")],
                "names no bucket",
            ),
            (
                &[("url", "file:///data/../etc"), ("workerHosts", "h:1")],
                "'..'",
            ),
            (
                &[
                    ("url", "s3://b/x"),
                    ("urls", "s3://b/y"),
                    ("workerHosts", "h:1"),
                ],
                "not both",
            ),
            (&[("url", "s3://b/x")], "no cluster"),
            (
                &[
                    ("url", "s3://b/x"),
                    ("etcdHosts", "e:1"),
                    ("workerHosts", "h:1"),
                ],
                "not both",
            ),
            (
                &[("url", "s3://b/x"), ("workerHosts", "h:1; rm -rf /")],
                "not a list of host:port",
            ),
            (
                &[
                    ("url", "s3://b/x"),
                    ("workerHosts", "h:1"),
                    ("write", "yes"),
                ],
                "\"true\" or \"false\"",
            ),
            (
                &[
                    ("url", "s3://b/x"),
                    ("workerHosts", "h:1"),
                    ("attrTimeout", "-1"),
                ],
                "seconds",
            ),
            (
                &[("urls", "a=s3://b/x a=s3://b/y"), ("workerHosts", "h:1")],
                "given twice",
            ),
        ];
        for (kv, want) in cases {
            let err = parse(kv).unwrap_err();
            assert!(err.contains(want), "{kv:?}: {err}");
        }
    }

    #[test]
    fn secrets_stay_out_of_arguments_and_errors() {
        let secrets: HashMap<String, String> =
            [("token".to_string(), "s3cr3t-t0ken".to_string())].into();
        let p = MountPlan::parse(
            &attrs(&[("url", "s3://b/x"), ("workerHosts", "h:1")]),
            &secrets,
            false,
            None,
        )
        .unwrap();
        assert_eq!(p.token.as_deref(), Some("s3cr3t-t0ken"));
        assert!(!p
            .args(Path::new("/t"), Path::new("/l"))
            .iter()
            .any(|a| a.contains("s3cr3t")));
        let other = MountPlan::parse(&HashMap::new(), &secrets, false, None).unwrap_err();
        assert!(!other.contains("s3cr3t"));
        let bad: HashMap<String, String> =
            [("awsSecret".to_string(), "hidden-value".to_string())].into();
        let err = MountPlan::parse(
            &attrs(&[("url", "s3://b/x"), ("workerHosts", "h:1")]),
            &bad,
            false,
            None,
        )
        .unwrap_err();
        assert!(
            err.contains("awsSecret") && !err.contains("hidden-value"),
            "{err}"
        );
    }

    #[test]
    fn the_fingerprint_ignores_the_token_but_not_the_options() {
        let a = parse(&[("url", "s3://b/x"), ("workerHosts", "h:1")]).unwrap();
        let mut b = a.clone();
        b.token = Some("other".into());
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = parse(&[
            ("url", "s3://b/x"),
            ("workerHosts", "h:1"),
            ("write", "true"),
        ])
        .unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn the_plugin_default_cluster_applies_when_the_volume_names_none() {
        let d = Cluster::Etcd("etcd:2379".into());
        let p = MountPlan::parse(
            &attrs(&[("url", "s3://b/x")]),
            &HashMap::new(),
            false,
            Some(&d),
        )
        .unwrap();
        assert_eq!(p.cluster, d);
    }
}

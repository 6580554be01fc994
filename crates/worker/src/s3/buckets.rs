//! Which bucket is which mount: the names the S3 endpoint answers to and
//! the UFS URL an `(bucket, key)` pair stands for.
//!
//! Every mount is reachable as a bucket:
//! - a mount named in `s3_buckets` (`file:///data/train=train`) is that
//!   bucket, its keys relative to the mount (`train/x.jpg` is
//!   `file:///data/train/x.jpg`);
//! - otherwise the bucket is the first segment of the mount's Alluxio
//!   namespace path: the bucket of `s3://`, `gs://` and `az://` mounts
//!   (`s3://b/prefix` is bucket `b`, keys as in the UFS bucket), the host of
//!   `http(s)://` mounts, the first directory of `file://` mounts
//!   (`file:///data/train` is bucket `data`, key `train/x.jpg`). So the
//!   path Alluxio's client asks for, `/<namespace path>` as `/v1/info`
//!   names a file, is the same object.
//!
//! A bucket whose root is above its mount (bucket `b` of the mount
//! `s3://b/prefix`) holds only the keys under the mount: the URL of every
//! key goes through [`crate::ufs::Ufs::confine`], so nothing outside the
//! mounts is reachable, whatever the key.

use crate::error::{Result, WorkerError};
use alluxiofs_core::path::{is_under, normalize_mount, split_url};
use std::collections::BTreeMap;

/// One bucket: its name and the URL its keys are relative to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket name.
    pub name: String,
    /// URL of key `""`, without a trailing slash (`s3://b`, `file:///data`).
    pub root: String,
    /// The mounts inside it.
    pub mounts: Vec<String>,
}

impl Bucket {
    /// The URL (not yet confined) of `key` in this bucket.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{}", self.root.trim_end_matches('/'), key)
    }

    /// The key of `url` (a URL under [`Bucket::root`]).
    pub fn key_of<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(self.root.trim_end_matches('/'))
            .unwrap_or(url)
            .trim_start_matches('/')
    }
}

/// The bucket table of a worker.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    by_name: BTreeMap<String, Bucket>,
}

/// Whether `name` may be a bucket here: not empty, no `/`, no control
/// characters, at most 255 bytes (looser than AWS's rules, since the
/// names come from hosts and directories).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control())
}

impl Buckets {
    /// The buckets of `mounts` (normalized URLs), with the names of
    /// `named` (mount URL → bucket name) first. Two mounts whose derived
    /// names collide with different roots are a configuration error
    /// naming both.
    pub fn new(mounts: &[String], named: &BTreeMap<String, String>) -> Result<Self> {
        let cfg = |m: String| WorkerError::Config(m);
        let mut b = Buckets::default();
        let mut named_mounts = BTreeMap::new();
        for (url, name) in named {
            let url = normalize_mount(url).map_err(|e| cfg(format!("s3_buckets: {url:?}: {e}")))?;
            if !mounts.contains(&url) {
                return Err(cfg(format!(
                    "s3_buckets: {url:?} is not a mount (mounts: {mounts:?})"
                )));
            }
            if !valid_name(name) {
                return Err(cfg(format!("s3_buckets: {name:?} is not a bucket name")));
            }
            named_mounts.insert(url, name.clone());
        }
        for m in mounts {
            let (name, root) = match named_mounts.get(m) {
                Some(n) => (n.clone(), m.clone()),
                None => derived(m),
            };
            if !valid_name(&name) {
                return Err(cfg(format!(
                    "mount {m:?} gives no usable S3 bucket name ({name:?}): name it in s3_buckets"
                )));
            }
            match b.by_name.get_mut(&name) {
                Some(existing) if existing.root == root => existing.mounts.push(m.clone()),
                Some(existing) => {
                    return Err(cfg(format!(
                        "mounts {:?} and {m:?} both make S3 bucket {name:?}: name one of them in s3_buckets \
                         (e.g. --s3-bucket {m}=another-name)",
                        existing.mounts[0]
                    )))
                }
                None => {
                    b.by_name.insert(
                        name.clone(),
                        Bucket {
                            name,
                            root,
                            mounts: vec![m.clone()],
                        },
                    );
                }
            }
        }
        Ok(b)
    }

    /// The bucket named `name`.
    pub fn get(&self, name: &str) -> Option<&Bucket> {
        self.by_name.get(name)
    }

    /// Every bucket, by name.
    pub fn all(&self) -> impl Iterator<Item = &Bucket> {
        self.by_name.values()
    }

    /// The bucket and key of `url` (a confined URL), if some bucket
    /// holds it.
    pub fn locate<'a>(&'a self, url: &'a str) -> Option<(&'a Bucket, &'a str)> {
        self.by_name
            .values()
            .filter(|b| b.mounts.iter().any(|m| is_under(url, m)))
            .max_by_key(|b| b.root.len())
            .map(|b| (b, b.key_of(url)))
    }
}

/// The derived (name, root) of a mount: the first segment of its
/// namespace path.
fn derived(mount: &str) -> (String, String) {
    let p = split_url(mount);
    if !p.authority.is_empty() {
        return (
            p.authority.to_string(),
            format!("{}://{}", p.scheme, p.authority),
        );
    }
    let first = p.key.split('/').find(|s| !s.is_empty()).unwrap_or("");
    (first.to_string(), format!("{}:///{first}", p.scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| normalize_mount(s).unwrap()).collect()
    }

    #[test]
    fn names_come_from_the_namespace_path() {
        let b = Buckets::new(
            &mounts(&["s3://bkt/datasets", "file:///data/train", "gs://g"]),
            &BTreeMap::new(),
        )
        .unwrap();
        let names: Vec<&str> = b.all().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["bkt", "data", "g"]);
        assert_eq!(
            b.get("bkt").unwrap().url_of("datasets/a"),
            "s3://bkt/datasets/a"
        );
        assert_eq!(
            b.get("data").unwrap().url_of("train/x"),
            "file:///data/train/x"
        );
        let (bucket, key) = b.locate("file:///data/train/x/y.jpg").unwrap();
        assert_eq!((bucket.name.as_str(), key), ("data", "train/x/y.jpg"));
    }

    #[test]
    fn a_named_mount_is_its_own_root() {
        let named = BTreeMap::from([("/data/train".to_string(), "train".to_string())]);
        let b = Buckets::new(&mounts(&["file:///data/train"]), &named).unwrap();
        let t = b.get("train").unwrap();
        assert_eq!(t.url_of("x.jpg"), "file:///data/train/x.jpg");
        assert!(b.get("data").is_none());
        assert_eq!(b.locate("file:///data/train/x.jpg").unwrap().1, "x.jpg");
    }

    #[test]
    fn collisions_are_refused_and_shared_roots_merged() {
        let e = Buckets::new(
            &mounts(&["s3://data/x", "file:///data/y"]),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("s3_buckets"), "{e}");
        let b = Buckets::new(&mounts(&["s3://b/p1", "s3://b/p2"]), &BTreeMap::new()).unwrap();
        assert_eq!(b.get("b").unwrap().mounts.len(), 2);
        let bad = BTreeMap::from([("s3://elsewhere".to_string(), "e".to_string())]);
        assert!(Buckets::new(&mounts(&["s3://b/p1"]), &bad).is_err());
        let bad = BTreeMap::from([("s3://b/p1".to_string(), "a/b".to_string())]);
        assert!(Buckets::new(&mounts(&["s3://b/p1"]), &bad).is_err());
    }
}

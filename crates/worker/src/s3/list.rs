//! ListObjectsV2 over the UFS listings: one directory listing per level
//! (from the worker's metadata cache), keys in S3's order.
//!
//! - With the delimiter `/` a page costs one directory listing: the
//!   directory of the prefix (`train/img_` lists `train/`).
//! - Without a delimiter (or with another one) the listing walks every
//!   directory under the prefix's directory that can hold a matching key.
//! - Above a mount (bucket `b` of the mount `s3://b/datasets`) nothing is
//!   listed from the UFS: the mounts below show as common prefixes
//!   (`datasets/`), so a client can walk down to them and no further up.
//! - Pages: entries (keys and common prefixes together) sorted by their
//!   UTF-8 bytes, as S3 sorts; a page starts after `start-after` and after
//!   the continuation token, which is the last entry of the previous page
//!   (hex encoded). Each page lists again (cached listings make that cheap),
//!   so no state is kept between pages.

use super::buckets::Bucket;
use crate::cache::ReadThrough;
use crate::error::{Result, WorkerError};
use alluxiofs_core::path::is_under;
use std::collections::BTreeMap;

/// Most keys one page holds (S3's limit; a larger `max-keys` gets this).
pub const MAX_KEYS: usize = 1000;

/// Most entries a walk without delimiter gathers before refusing.
pub const MAX_WALK: usize = 10_000_000;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An object.
    Object {
        /// Bytes.
        size: u64,
        /// Last modification, ms since the epoch.
        mtime_ms: i64,
        /// The version (UFS ETag, else `<mtime>-<size>`).
        etag: String,
    },
    /// A common prefix (ends with the delimiter).
    Prefix,
}

/// What a page asks for.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Keys start with this.
    pub prefix: String,
    /// Group keys by this (usually `/`).
    pub delimiter: Option<String>,
    /// Entries after this key only (the later of start-after and the token).
    pub after: Option<String>,
    /// Most entries in the page.
    pub max_keys: usize,
}

/// One page.
#[derive(Debug, Default)]
pub struct ListPage {
    /// Entries by key.
    pub entries: Vec<(String, Entry)>,
    /// Whether more entries follow.
    pub truncated: bool,
}

/// The continuation token after `key`.
pub fn token_of(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a continuation token stands for.
pub fn key_of_token(token: &str) -> Result<String> {
    let bad = || WorkerError::BadRequest("the continuation token is not valid".into());
    if !token.len().is_multiple_of(2) || !token.is_ascii() {
        return Err(bad());
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes.ok_or_else(bad)?).map_err(|_| bad())
}

/// The directory key a listing of `prefix` starts from: `prefix` up to
/// its last `/` (`""` for the bucket's top).
fn dir_of(prefix: &str) -> &str {
    match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    }
}

/// The children of directory `dir_key` (`""` or ending in `/`) of
/// `bucket`: `(name, entry)`, `Entry::Prefix` for directories.
async fn children(
    cache: &ReadThrough,
    bucket: &Bucket,
    dir_key: &str,
) -> Result<Vec<(String, Entry)>> {
    let url = bucket.url_of(dir_key.trim_end_matches('/'));
    let url = url.trim_end_matches('/');
    match cache.confine(url) {
        Ok(confined) => {
            let listed = match cache.list(&confined).await {
                Ok(l) => l,
                Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            Ok(listed
                .into_iter()
                // A file lists as itself: it is no directory.
                .filter(|c| c.ufs_path != confined)
                .map(|c| {
                    let entry = if c.is_dir() {
                        Entry::Prefix
                    } else {
                        Entry::Object {
                            size: c.length,
                            mtime_ms: c.mtime_ms,
                            etag: c.content_hash.clone(),
                        }
                    };
                    (c.name, entry)
                })
                .collect())
        }
        // Above the mounts: the next segment of each mount below.
        Err(_) => {
            let base = format!("{url}/");
            let mut names: Vec<(String, Entry)> = bucket
                .mounts
                .iter()
                .filter(|m| is_under(m, url) && m.as_str() != url)
                .filter_map(|m| m.strip_prefix(&base))
                .filter_map(|rest| rest.split('/').next())
                .map(|seg| (seg.to_string(), Entry::Prefix))
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            names.dedup_by(|a, b| a.0 == b.0);
            Ok(names)
        }
    }
}

/// Every object under directory `dir_key` whose key could start with
/// `prefix`, as `(key, entry)`.
async fn walk(
    cache: &ReadThrough,
    bucket: &Bucket,
    dir_key: &str,
    prefix: &str,
) -> Result<Vec<(String, Entry)>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir_key.to_string()];
    while let Some(d) = dirs.pop() {
        for (name, entry) in children(cache, bucket, &d).await? {
            match entry {
                Entry::Prefix => {
                    let key = format!("{d}{name}/");
                    if key.starts_with(prefix) || prefix.starts_with(&key) {
                        dirs.push(key);
                    }
                }
                obj => {
                    let key = format!("{d}{name}");
                    if key.starts_with(prefix) {
                        out.push((key, obj));
                    }
                }
            }
        }
        if out.len() > MAX_WALK {
            return Err(WorkerError::BadRequest(format!(
                "more than {MAX_WALK} keys under {prefix:?}: list with the delimiter '/'"
            )));
        }
    }
    Ok(out)
}

/// One page of the listing `req` of `bucket`.
pub async fn list(cache: &ReadThrough, bucket: &Bucket, req: &ListRequest) -> Result<ListPage> {
    let prefix = req.prefix.as_str();
    let dir = dir_of(prefix);
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    match req.delimiter.as_deref() {
        Some("/") => {
            for (name, entry) in children(cache, bucket, dir).await? {
                let key = match entry {
                    Entry::Prefix => format!("{dir}{name}/"),
                    _ => format!("{dir}{name}"),
                };
                if key.starts_with(prefix) {
                    all.insert(key, entry);
                }
            }
        }
        delimiter => {
            let delimiter = delimiter.filter(|d| !d.is_empty());
            for (key, entry) in walk(cache, bucket, dir, prefix).await? {
                let grouped = delimiter.and_then(|d| {
                    key[prefix.len()..]
                        .find(d)
                        .map(|i| key[..prefix.len() + i + d.len()].to_string())
                });
                match grouped {
                    Some(p) => {
                        all.insert(p, Entry::Prefix);
                    }
                    None => {
                        all.insert(key, entry);
                    }
                }
            }
        }
    }
    let mut page = ListPage::default();
    let after = req.after.as_deref().unwrap_or("");
    let mut rest = all.into_iter().filter(|(k, _)| k.as_str() > after);
    for (k, e) in rest.by_ref().take(req.max_keys) {
        page.entries.push((k, e));
    }
    page.truncated = rest.next().is_some();
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_any_key() {
        for k in ["", "a/b", "ünï/😀 x%2F+?&", "\u{7f}"] {
            assert_eq!(key_of_token(&token_of(k)).unwrap(), k);
        }
        assert!(key_of_token("zz").is_err());
        assert!(key_of_token("abc").is_err());
        assert!(key_of_token("ff").is_err(), "not UTF-8");
    }

    #[test]
    fn the_directory_of_a_prefix() {
        assert_eq!(dir_of(""), "");
        assert_eq!(dir_of("img_"), "");
        assert_eq!(dir_of("train/"), "train/");
        assert_eq!(dir_of("train/img_1"), "train/");
    }
}

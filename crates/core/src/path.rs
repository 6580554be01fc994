//! UFS URLs: normalization, `path_id`, confinement checks.
//!
//! Everything that names a file (the hash ring key, the page key, the
//! `path_id` of the Alluxio REST API) uses the *normalized* URL, so that
//! `s3://b//x/` and `s3://b/x` are one file. Normalization also refuses
//! dot segments, percent-encoded ones included, so that no later step can be
//! tricked into leaving a mount.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

/// Normalize a UFS URL.
///
/// - a plain absolute path `/data/x` means `file:///data/x`;
/// - the scheme is lower-cased, `gcs` becomes `gs` and `s3a` becomes `s3`;
/// - `//` inside the path collapses, a trailing `/` is dropped;
/// - a segment that is `.` or `..`, also when percent-encoded, or that holds a
///   backslash or a NUL (raw or encoded) is refused with
///   [`Error::PermissionDenied`];
/// - control characters and URLs without a scheme are refused with
///   [`Error::InvalidArgument`].
///
/// The file system root normalizes to `file:///`, a bucket root to
/// `s3://bucket`.
pub fn normalize_url(input: &str) -> Result<String> {
    if input.is_empty() {
        return Err(Error::InvalidArgument("empty path".into()));
    }
    if input.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "{input:?}: control characters are not allowed in paths"
        )));
    }
    let (scheme, rest) = if let Some(stripped) = input.strip_prefix('/') {
        ("file".to_string(), format!("/{stripped}"))
    } else {
        match input.split_once("://") {
            Some((s, r)) if is_scheme(s) => (canonical_scheme(s), r.to_string()),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "{input:?} is not a URL: expected scheme://bucket/key or an absolute path"
                )))
            }
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest.as_str(), ""),
    };
    let authority = if scheme == "file" && authority.eq_ignore_ascii_case("localhost") {
        ""
    } else {
        authority
    };
    if scheme == "file" && !authority.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{input:?}: file URLs must be file:///absolute/path"
        )));
    }
    if scheme != "file" && authority.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{input:?}: missing bucket or host after {scheme}://"
        )));
    }
    if !authority.is_empty() {
        check_segment(input, authority)?;
    }
    let mut out = format!("{scheme}://{authority}");
    let mut any = false;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        check_segment(input, seg)?;
        out.push('/');
        out.push_str(seg);
        any = true;
    }
    if !any && scheme == "file" {
        out.push('/');
    }
    Ok(out)
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn canonical_scheme(s: &str) -> String {
    match s.to_ascii_lowercase().as_str() {
        "gcs" => "gs".into(),
        "s3a" => "s3".into(),
        other => other.into(),
    }
}

fn check_segment(input: &str, seg: &str) -> Result<()> {
    let decoded = percent_decode_fully(seg);
    let bad = decoded == "."
        || decoded == ".."
        || decoded.contains('/')
        || decoded.contains('\\')
        || decoded.contains('\0');
    if bad {
        return Err(Error::PermissionDenied {
            path: input.to_string(),
            reason: format!("path segment {seg:?} is not allowed (dot segment or separator)"),
        });
    }
    Ok(())
}

/// Decode percent escapes repeatedly (at most a few rounds) so that doubly
/// encoded dot segments such as `%252e%252e` are seen for what they are.
fn percent_decode_fully(seg: &str) -> String {
    let mut cur = seg.to_string();
    for _ in 0..4 {
        let next = percent_encoding::percent_decode_str(&cur)
            .decode_utf8_lossy()
            .into_owned();
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

/// Normalize the root URL of a worker mount: any URL [`normalize_url`]
/// accepts, or a bare `scheme://` (`s3://`, `gs://`) meaning every bucket of
/// that scheme (what the embedded local worker mounts). [`is_under`] treats
/// such a root as a prefix of every URL of its scheme.
pub fn normalize_mount(input: &str) -> Result<String> {
    if let Some(scheme) = input.strip_suffix("://") {
        if is_scheme(scheme) && canonical_scheme(scheme) != "file" {
            return Ok(format!("{}://", canonical_scheme(scheme)));
        }
    }
    normalize_url(input)
}

/// The Alluxio `path_id` of a normalized URL: lowercase hex SHA-256 of its
/// UTF-8 bytes.
pub fn path_id(normalized_url: &str) -> String {
    let digest = Sha256::digest(normalized_url.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Whether normalized `url` is `root` itself or lies below it.
/// Both must be normalized (see [`normalize_url`]).
pub fn is_under(url: &str, root: &str) -> bool {
    if url == root {
        return true;
    }
    let root = root.strip_suffix('/').unwrap_or(root);
    url.len() > root.len() && url.starts_with(root) && url.as_bytes()[root.len()] == b'/'
}

/// The parts of a normalized URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// `s3`, `file`, `gs`, `az`, `http`, ...
    pub scheme: &'a str,
    /// Bucket, container or host; empty for `file`.
    pub authority: &'a str,
    /// The key or path inside the authority, without a leading `/`.
    pub key: &'a str,
}

/// Split a normalized URL into scheme, authority and key.
pub fn split_url(normalized: &str) -> UrlParts<'_> {
    let (scheme, rest) = normalized.split_once("://").unwrap_or(("file", normalized));
    let (authority, key) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    UrlParts {
        scheme,
        authority,
        key,
    }
}

/// The last segment of a normalized URL (the file name).
pub fn file_name(normalized: &str) -> &str {
    let parts = split_url(normalized);
    if parts.key.is_empty() {
        return parts.authority;
    }
    parts.key.rsplit('/').next().unwrap_or(parts.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_url("s3://b//x/y/").unwrap(), "s3://b/x/y");
        assert_eq!(normalize_url("S3://b/x").unwrap(), "s3://b/x");
        assert_eq!(normalize_url("gcs://b/x").unwrap(), "gs://b/x");
        assert_eq!(normalize_url("/tmp//a/").unwrap(), "file:///tmp/a");
        assert_eq!(normalize_url("file:///tmp/a").unwrap(), "file:///tmp/a");
        assert_eq!(
            normalize_url("file://localhost/tmp/a").unwrap(),
            "file:///tmp/a"
        );
        assert_eq!(normalize_url("file:///").unwrap(), "file:///");
        assert_eq!(normalize_url("s3://bucket/").unwrap(), "s3://bucket");
    }

    #[test]
    fn refuses_traversal_and_garbage() {
        for bad in [
            "s3://b/../x",
            "s3://b/a/./x",
            "/tmp/%2e%2e/etc",
            "/tmp/%252E%252E/etc",
            "s3://b/a%2fb/../c",
            "/tmp/a%2F..%2Fb",
            "/tmp/a\\b",
            "/tmp/%00x",
            "s3://../x",
            "s3://%2e%2e/x",
        ] {
            assert!(
                matches!(normalize_url(bad), Err(Error::PermissionDenied { .. })),
                "{bad} must be refused"
            );
        }
        for bad in ["", "relative/path", "s3://", "file://host/x", "/tmp/a\nb"] {
            assert!(
                matches!(normalize_url(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} must be invalid"
            );
        }
    }

    #[test]
    fn path_id_is_sha256_hex() {
        // `printf 's3://bucket/file' | sha256sum`
        assert_eq!(
            path_id("s3://bucket/file"),
            "28a6428f416f30b5b972c2842bff8c692a02d53b871c027d8f1395b7923e0411"
        );
    }

    #[test]
    fn confinement() {
        assert!(is_under("s3://b/data/x", "s3://b/data"));
        assert!(is_under("s3://b/data", "s3://b/data"));
        assert!(!is_under("s3://b/database", "s3://b/data"));
        assert!(is_under("file:///tmp/x", "file:///"));
        assert!(!is_under("s3://c/x", "s3://b"));
        // Scheme-wide mounts.
        assert_eq!(normalize_mount("S3://").unwrap(), "s3://");
        assert_eq!(normalize_mount("file:///").unwrap(), "file:///");
        assert_eq!(normalize_mount("s3://b/x/").unwrap(), "s3://b/x");
        assert!(normalize_mount("s3://../").is_err());
        assert!(is_under("s3://any/x", "s3://"));
        assert!(!is_under("gs://any/x", "s3://"));
        assert!(!is_under("s3x://a/b", "s3://"));
    }

    #[test]
    fn splits() {
        let p = split_url("s3://b/x/y");
        assert_eq!((p.scheme, p.authority, p.key), ("s3", "b", "x/y"));
        let p = split_url("file:///tmp/a");
        assert_eq!((p.scheme, p.authority, p.key), ("file", "", "tmp/a"));
        assert_eq!(file_name("s3://b/x/y.parquet"), "y.parquet");
        assert_eq!(file_name("s3://b"), "b");
    }
}

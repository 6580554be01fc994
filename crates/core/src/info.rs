//! File metadata as the Alluxio worker REST API spells it (`mType`, `mLength`,
//! ...), shared by the worker (which answers it) and the client (which reads
//! it), plus the JSON error body of every non-2xx answer.

use serde::{Deserialize, Serialize};

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file (object).
    File,
    /// A directory (common prefix).
    Directory,
}

/// One file info of `/v1/info` and `/v1/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// `file` or `directory`.
    #[serde(rename = "mType")]
    pub kind: FileType,
    /// Last segment of the path.
    #[serde(rename = "mName", default)]
    pub name: String,
    /// Path without the scheme: `/bucket/key` (Alluxio's namespace path).
    #[serde(rename = "mPath", default)]
    pub path: String,
    /// The normalized UFS URL.
    #[serde(rename = "mUfsPath")]
    pub ufs_path: String,
    /// Last modification, milliseconds since the epoch (0 when unknown).
    #[serde(rename = "mLastModificationTimeMs", default)]
    pub mtime_ms: i64,
    /// Size in bytes (0 for directories).
    #[serde(rename = "mLength", default)]
    pub length: u64,
    /// Size for humans, e.g. `128.00MB`.
    #[serde(rename = "mHumanReadableFileSize", default)]
    pub human_size: String,
    /// The object version: ETag when the UFS has one, else `<mtime_ms>-<size>`.
    /// Empty for directories.
    #[serde(rename = "mContentHash", default)]
    pub content_hash: String,
    /// Share of the file's pages in this worker's cache, 0-100.
    #[serde(rename = "mInAlluxioPercentage", default)]
    pub in_cache_percent: u8,
}

impl FileInfo {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == FileType::Directory
    }
}

/// The JSON body of every error answer: `{"message": "...", "code": "..."}`.
///
/// `code` is the [`crate::error::ErrorKind`] code of the error; optional
/// both ways, so that old workers and old clients still talk to new ones:
/// a body without it maps by HTTP status, and an old client ignores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for humans; includes the path.
    pub message: String,
    /// The machine-readable kind (`not_found`, `is_a_directory`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl ErrorBody {
    /// A body without a code (an answer that is no [`crate::error::ErrorKind`]).
    pub fn new(message: impl Into<String>) -> Self {
        ErrorBody {
            message: message.into(),
            code: None,
        }
    }
}

/// Format a byte count the way Alluxio's `mHumanReadableFileSize` does
/// (`1023B`, `1.00KB`, `128.00MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alluxio_field_names() {
        let info = FileInfo {
            kind: FileType::File,
            name: "x".into(),
            path: "/b/x".into(),
            ufs_path: "s3://b/x".into(),
            mtime_ms: 5,
            length: 2048,
            human_size: human_size(2048),
            content_hash: "\"e\"".into(),
            in_cache_percent: 0,
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["mType"], "file");
        assert_eq!(v["mLength"], 2048);
        assert_eq!(v["mUfsPath"], "s3://b/x");
        assert_eq!(v["mHumanReadableFileSize"], "2.00KB");
        let back: FileInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
        // Older workers omit the newer fields.
        let old: FileInfo =
            serde_json::from_str(r#"{"mType":"directory","mUfsPath":"s3://b/d"}"#).unwrap();
        assert!(old.is_dir());
    }

    #[test]
    fn error_body_code_is_optional_both_ways() {
        let old: ErrorBody = serde_json::from_str(r#"{"message": "m"}"#).unwrap();
        assert_eq!(old.code, None);
        let plain = ErrorBody {
            message: "m".into(),
            code: None,
        };
        assert_eq!(serde_json::to_string(&plain).unwrap(), r#"{"message":"m"}"#);
        let coded = ErrorBody {
            message: "m".into(),
            code: Some("not_found".into()),
        };
        let text = serde_json::to_string(&coded).unwrap();
        assert_eq!(text, r#"{"message":"m","code":"not_found"}"#);
        assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), coded);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1023), "1023B");
        assert_eq!(human_size(1024), "1.00KB");
        assert_eq!(human_size(128 << 20), "128.00MB");
    }
}

//! Keeping rules: pins and TTLs on URL prefixes, and the quotas that bound
//! what the page store keeps.
//!
//! - A **pin** on a prefix keeps every cached page of a URL at or under it
//!   out of eviction (capacity, mount quota). Pinned bytes of a worker are
//!   bounded by the pin quota: a pin that would exceed it is refused, and a
//!   page of a pinned path that would exceed it is served but not cached.
//! - A **TTL** on a prefix makes pages older than it (since they were
//!   cached) a miss: they are removed when read and by a periodic sweep.
//!   The most specific (longest) prefix wins.
//! - Rules persist in `<first cache dir>/rules.json` (fsynced to a temporary
//!   file and renamed, [`crate::atomic`]), so they survive restarts.

use crate::atomic::{write_atomically, Durability};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// File name of the rules in the first cache directory.
pub const RULES_FILE: &str = "rules.json";

/// The pin quota: a byte count or a share of the total disk capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinQuota {
    /// Bytes.
    Bytes(u64),
    /// Percent of the sum of the cache directory capacities (0-100).
    Percent(u8),
}

impl Default for PinQuota {
    fn default() -> Self {
        PinQuota::Percent(50)
    }
}

impl PinQuota {
    /// Parse `50%` or a size (`8GiB`, `1048576`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let n: u8 = p
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| format!("invalid pin quota {text:?}: expected 0% to 100%"))?;
            return Ok(PinQuota::Percent(n));
        }
        crate::units::parse_size(t)
            .map(PinQuota::Bytes)
            .map_err(|e| format!("invalid pin quota: {e}"))
    }

    /// The quota in bytes for a worker of `total_capacity` bytes.
    pub fn bytes(self, total_capacity: u64) -> u64 {
        match self {
            PinQuota::Bytes(b) => b,
            PinQuota::Percent(p) => (total_capacity as u128 * p as u128 / 100) as u64,
        }
    }

    /// The setting text (`50%`, `1048576`).
    pub fn to_setting(self) -> String {
        match self {
            PinQuota::Bytes(b) => b.to_string(),
            PinQuota::Percent(p) => format!("{p}%"),
        }
    }
}

/// Parse one `--mount-quota URL=SIZE`.
pub fn parse_mount_quota(text: &str) -> Result<(String, u64), String> {
    let (url, size) = text
        .rsplit_once('=')
        .ok_or_else(|| format!("expected MOUNT=SIZE, got {text:?}"))?;
    if url.trim().is_empty() {
        return Err(format!("expected MOUNT=SIZE, got {text:?}"));
    }
    let bytes = crate::units::parse_size(size)?;
    Ok((url.trim().to_string(), bytes))
}

/// Pins and TTLs, keyed by normalized URL prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Pinned prefixes.
    #[serde(default)]
    pub pins: Vec<String>,
    /// TTL in seconds per prefix.
    #[serde(default)]
    pub ttls: BTreeMap<String, u64>,
}

impl Rules {
    /// Whether `url` is at or under a pinned prefix.
    pub fn is_pinned(&self, url: &str) -> bool {
        self.pins
            .iter()
            .any(|p| alluxiofs_core::path::is_under(url, p))
    }

    /// The TTL of `url`: that of the longest prefix holding it.
    pub fn ttl_of(&self, url: &str) -> Option<Duration> {
        self.ttls
            .iter()
            .filter(|(p, _)| alluxiofs_core::path::is_under(url, p))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, s)| Duration::from_secs(*s))
    }

    /// Add a pin; `false` when it was there already.
    pub fn pin(&mut self, prefix: &str) -> bool {
        if self.pins.iter().any(|p| p == prefix) {
            return false;
        }
        self.pins.push(prefix.to_string());
        self.pins.sort();
        true
    }

    /// Remove the pin of exactly `prefix`; returns how many (0 or 1).
    pub fn unpin_exact(&mut self, prefix: &str) -> usize {
        let before = self.pins.len();
        self.pins.retain(|p| p != prefix);
        before - self.pins.len()
    }

    /// Remove the pins at or under `prefix`; returns how many.
    pub fn unpin(&mut self, prefix: &str) -> usize {
        let before = self.pins.len();
        self.pins
            .retain(|p| !alluxiofs_core::path::is_under(p, prefix));
        before - self.pins.len()
    }

    /// Set (`Some`) or clear (`None`) the TTL of `prefix`.
    pub fn set_ttl(&mut self, prefix: &str, ttl: Option<Duration>) {
        match ttl {
            Some(d) => {
                self.ttls.insert(prefix.to_string(), d.as_secs().max(1));
            }
            None => {
                self.ttls.remove(prefix);
            }
        }
    }

    /// Read the rules file; a missing file is no rules.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read(path) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map_err(|e| format!("rules file {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Rules::default()),
            Err(e) => Err(format!("cannot read rules file {}: {e}", path.display())),
        }
    }

    /// Write the rules file atomically and durably (fsynced, then renamed
    /// into place; see [`crate::atomic`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomically(path, &[&body], Durability::Sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_ttls_and_persistence() {
        let mut r = Rules::default();
        assert!(r.pin("s3://b/data"));
        assert!(!r.pin("s3://b/data"));
        assert!(r.pin("s3://b/data/x/y"));
        assert!(r.is_pinned("s3://b/data/f"));
        assert!(!r.is_pinned("s3://b/database"));
        r.set_ttl("s3://b", Some(Duration::from_secs(60)));
        r.set_ttl("s3://b/tmp", Some(Duration::from_secs(2)));
        assert_eq!(r.ttl_of("s3://b/tmp/a"), Some(Duration::from_secs(2)));
        assert_eq!(r.ttl_of("s3://b/other"), Some(Duration::from_secs(60)));
        assert_eq!(r.ttl_of("s3://c/x"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RULES_FILE);
        assert_eq!(Rules::load(&path).unwrap(), Rules::default());
        r.save(&path).unwrap();
        assert_eq!(Rules::load(&path).unwrap(), r);
        assert_eq!(r.unpin("s3://b/data"), 2);
        r.set_ttl("s3://b", None);
        assert_eq!(r.ttl_of("s3://b/other"), None);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(Rules::load(&path).is_err());
    }

    #[test]
    fn quotas_parse() {
        assert_eq!(PinQuota::parse("50%").unwrap().bytes(1000), 500);
        assert_eq!(PinQuota::parse("1KiB").unwrap(), PinQuota::Bytes(1024));
        assert!(PinQuota::parse("150%").is_err());
        assert_eq!(
            parse_mount_quota("s3://b/x=2MiB").unwrap(),
            ("s3://b/x".to_string(), 2 << 20)
        );
        assert!(parse_mount_quota("2MiB").is_err());
    }
}

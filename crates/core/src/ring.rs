//! The Alluxio-compatible consistent hash ring.
//!
//! Placement is a pure function of (key, workers): every client computes the
//! owner of a path itself, with no master. This module reproduces Alluxio's
//! DORA ring bit for bit (see `docs/protocol.md`, section 1), so that a
//! mixed cluster of Alluxio and alluxiofs clients agrees on page owners:
//!
//! - hash: MurmurHash3 x86_32 with seed 0, read as a signed `i32`;
//!   integers are appended little-endian;
//! - each worker owns `vnodes` points `murmur3(identifier ‖ LE32(version) ‖
//!   LE32(i))` for `i in 0..vnodes`; a later worker wins a point collision
//!   (Java's `NavigableMap::put`);
//! - the workers of a key are found by probing attempt `a = 1, 2, ...`:
//!   `h = murmur3(utf8(key) ‖ LE32(a))`, take the ring entry with the smallest
//!   point `>= h` (wrapping to the first), keep it if not already chosen,
//!   until `n` distinct workers or 100 attempts.
//!
//! Static host lists derive a worker's identity as Java's
//! `UUID.nameUUIDFromBytes(hostname)` (UUID version 3 over md5 of the name
//! with no namespace).

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// How many probes [`HashRing::get_multiple`] makes at most (Alluxio's bound).
pub const MAX_ATTEMPTS: u32 = 100;

/// The Alluxio worker identity: `version` (1 = UUID based) plus 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerIdentity {
    /// Identity kind; 1 for UUID-based identities.
    pub version: i32,
    /// The UUID, big-endian.
    pub identifier: [u8; 16],
}

impl WorkerIdentity {
    /// The identity Alluxio derives for a host of a static worker list:
    /// UUID v3 of md5(host name), as Java's `UUID.nameUUIDFromBytes`.
    pub fn from_hostname(host: &str) -> Self {
        let digest: [u8; 16] = Md5::digest(host.as_bytes()).into();
        Self::from_uuid(uuid::Builder::from_md5_bytes(digest).into_uuid())
    }

    /// A version-1 (UUID based) identity.
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        WorkerIdentity {
            version: 1,
            identifier: *u.as_bytes(),
        }
    }

    /// The identifier as 32 lowercase hex digits (as in etcd and the golden files).
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.identifier {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parse 32 hex digits (dashes, as in a UUID's text form, are ignored).
    pub fn parse_hex(version: i32, hex: &str) -> Result<Self> {
        let digits: Vec<u8> = hex.bytes().filter(|&b| b != b'-').collect();
        if digits.len() != 32 {
            return Err(Error::InvalidArgument(format!(
                "worker identifier {hex:?}: expected 32 hex digits"
            )));
        }
        let mut identifier = [0u8; 16];
        for (i, pair) in digits.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).unwrap_or("");
            identifier[i] = u8::from_str_radix(s, 16).map_err(|_| {
                Error::InvalidArgument(format!("worker identifier {hex:?}: not hex"))
            })?;
        }
        Ok(WorkerIdentity {
            version,
            identifier,
        })
    }

    /// The UUID of this identity.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.identifier)
    }
}

/// MurmurHash3 x86_32, seed 0, read as a signed int (Guava's `asInt`).
fn murmur(bytes: &[u8]) -> i32 {
    // Reading from a slice cannot fail.
    let h = murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), 0).unwrap_or(0);
    h as i32
}

/// The consistent hash ring: points → worker identities.
#[derive(Clone, Debug, Default)]
pub struct HashRing {
    ring: BTreeMap<i32, WorkerIdentity>,
}

impl HashRing {
    /// Build the ring of `workers` with `vnodes` points each.
    pub fn new(workers: &[WorkerIdentity], vnodes: u32) -> Self {
        let mut ring = BTreeMap::new();
        let mut buf = Vec::with_capacity(24);
        for w in workers {
            for i in 0..vnodes {
                buf.clear();
                buf.extend_from_slice(&w.identifier);
                buf.extend_from_slice(&w.version.to_le_bytes());
                buf.extend_from_slice(&(i as i32).to_le_bytes());
                ring.insert(murmur(&buf), *w);
            }
        }
        HashRing { ring }
    }

    /// All points of the ring, sorted by point.
    pub fn points(&self) -> Vec<(i32, WorkerIdentity)> {
        self.ring.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Whether the ring has no workers.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The ordered preferred workers of `key` (the full, normalized UFS URL):
    /// at most `n` distinct workers, fewer when the ring has fewer or 100
    /// probes did not find more. The first is the primary.
    pub fn get_multiple(&self, key: &str, n: usize) -> Vec<WorkerIdentity> {
        let mut out: Vec<WorkerIdentity> = Vec::with_capacity(n);
        if self.ring.is_empty() || n == 0 {
            return out;
        }
        let mut buf = Vec::with_capacity(key.len() + 4);
        for attempt in 1..=MAX_ATTEMPTS {
            buf.clear();
            buf.extend_from_slice(key.as_bytes());
            buf.extend_from_slice(&(attempt as i32).to_le_bytes());
            let h = murmur(&buf);
            let w = self
                .ring
                .range(h..)
                .next()
                .or_else(|| self.ring.iter().next())
                .map(|(_, w)| *w);
            if let Some(w) = w {
                if !out.contains(&w) {
                    out.push(w);
                    if out.len() == n {
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let w = WorkerIdentity::from_hostname("worker-a");
        assert_eq!(w.version, 1);
        let back = WorkerIdentity::parse_hex(1, &w.hex()).unwrap();
        assert_eq!(back, w);
        let dashed = WorkerIdentity::parse_hex(1, &w.uuid().to_string()).unwrap();
        assert_eq!(dashed, w);
        assert!(WorkerIdentity::parse_hex(1, "abc").is_err());
        assert!(WorkerIdentity::parse_hex(1, &"zz".repeat(16)).is_err());
    }

    #[test]
    fn name_uuid_is_version_3() {
        let u = WorkerIdentity::from_hostname("localhost").uuid();
        assert_eq!(u.get_version_num(), 3);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn get_multiple_is_distinct_and_bounded() {
        let ws: Vec<_> = (0..4)
            .map(|i| WorkerIdentity::from_hostname(&format!("h{i}")))
            .collect();
        let ring = HashRing::new(&ws, 5);
        let got = ring.get_multiple("s3://b/k", 10);
        assert_eq!(got.len(), 4);
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        // The first choice is stable when asking for fewer.
        assert_eq!(ring.get_multiple("s3://b/k", 1)[0], got[0]);
        assert!(HashRing::new(&[], 5).get_multiple("x", 3).is_empty());
    }
}

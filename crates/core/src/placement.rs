//! Placement: which workers hold a path, in order of preference.
//!
//! Placement is a pure function of (key, worker identities, setting), so
//! every client computes it alone; two clients agree as long as they see
//! the same workers and use the same [`Placement`]. In etcd mode the cluster
//! publishes its setting (see [`crate::membership::placement_key`]), so
//! clients cannot disagree.
//!
//! Two placements are offered:
//!
//! - [`Placement::Alluxio`]: Alluxio's consistent hash ring
//!   ([`crate::ring::HashRing`]), bit-exact with Alluxio clients and
//!   workers. With Alluxio's default of 5 virtual nodes it is badly
//!   balanced: `cargo bench -p alluxiofs-core --bench placement` measures
//!   the busiest of 100 workers at 2.3x the mean load. Keep it whenever
//!   an Alluxio client or worker shares the cluster.
//! - [`Placement::Rendezvous`]: highest random weight hashing, for clusters
//!   of alluxiofs workers only. Each worker gets a score per key and the
//!   key's preferred workers are the workers sorted by descending score.
//!   Every key lands on a uniformly random worker, so the load is as even as
//!   independent choices allow (max/mean 1.02 for 100 workers and 1 M
//!   keys, measured by the benchmark), and when a worker joins or leaves only
//!   the keys it gains or loses move: 1/N of them, the minimum. Multi-pick
//!   is the same sort, so the second choice of a key is exactly where the
//!   key goes when its first choice leaves. Cost: O(N) hashes per lookup,
//!   0.8 µs for 3 picks among 100 workers (the benchmark), negligible next
//!   to a network request. Measured against the ring with 100 and 1000 virtual
//!   nodes (max/mean 1.25 and 1.13 for 100 workers) and Maglev (as
//!   balanced, but 1.5x the ideal movement at 100 workers): see
//!   `docs/placement.md`.
//!
//! The rendezvous score is fixed forever (clients of different versions must
//! agree): `k = xxh3_64(utf8(key))`, `w = xxh3_64(identifier ‖ LE32(version))`
//! per worker, `score = mix64(k ^ w)` where `mix64` is the splitmix64
//! finalizer; ties (never seen in practice) go to the smaller identity.

use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::ring::{HashRing, WorkerIdentity};

/// Alluxio's default virtual nodes per worker.
pub const DEFAULT_VNODES: u32 = 5;

/// How the preferred workers of a path are chosen. The default is
/// Alluxio's ring with 5 virtual nodes (compatible with Alluxio).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Alluxio's consistent hash ring with `vnodes` points per worker.
    Alluxio {
        /// Virtual nodes per worker (Alluxio's default is 5).
        vnodes: u32,
    },
    /// Rendezvous (highest random weight) hashing: balanced, moves the
    /// minimum of keys; alluxiofs workers only.
    Rendezvous,
}

impl Default for Placement {
    fn default() -> Self {
        Placement::Alluxio {
            vnodes: DEFAULT_VNODES,
        }
    }
}

impl Placement {
    /// The placement called `name` (`alluxio` or `rendezvous`, any case);
    /// `vnodes` is used by `alluxio` only and must be at least 1.
    pub fn parse(name: &str, vnodes: u32) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "alluxio" | "ring" => {
                if vnodes == 0 {
                    return Err(Error::InvalidArgument(
                        "placement alluxio: vnodes must be at least 1".into(),
                    ));
                }
                Ok(Placement::Alluxio { vnodes })
            }
            "rendezvous" | "hrw" => Ok(Placement::Rendezvous),
            other => Err(Error::InvalidArgument(format!(
                "unknown placement {other:?}: expected \"alluxio\" or \"rendezvous\""
            ))),
        }
    }

    /// The name [`Placement::parse`] accepts: `alluxio` or `rendezvous`.
    pub fn name(&self) -> &str {
        match self {
            Placement::Alluxio { .. } => "alluxio",
            Placement::Rendezvous => "rendezvous",
        }
    }

    /// The setting as published in etcd: `alluxio:<vnodes>` or
    /// `rendezvous` (the [`fmt::Display`] form).
    pub fn to_setting(&self) -> String {
        self.to_string()
    }

    /// Parse a published setting: `<name>` or `<name>:<vnodes>` (vnodes
    /// default 5), surrounding whitespace ignored.
    pub fn from_setting(s: &str) -> Result<Self> {
        let s = s.trim();
        match s.split_once(':') {
            Some((name, v)) => {
                let vnodes = v.trim().parse::<u32>().map_err(|_| {
                    Error::InvalidArgument(format!("placement {s:?}: bad vnodes {v:?}"))
                })?;
                Placement::parse(name, vnodes)
            }
            None => Placement::parse(s, DEFAULT_VNODES),
        }
    }

    /// Prepare the placement of `workers` for lookups.
    pub fn build(&self, workers: &[WorkerIdentity]) -> Placer {
        match *self {
            Placement::Alluxio { vnodes } => Placer::Ring(HashRing::new(workers, vnodes)),
            Placement::Rendezvous => {
                let mut ws: Vec<(u64, WorkerIdentity)> =
                    workers.iter().map(|w| (worker_hash(w), *w)).collect();
                ws.sort_by_key(|a| a.1);
                ws.dedup_by(|a, b| a.1 == b.1);
                Placer::Rendezvous(ws)
            }
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Alluxio { vnodes } => write!(f, "alluxio:{vnodes}"),
            Placement::Rendezvous => f.write_str("rendezvous"),
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Placement::from_setting(s)
    }
}

/// A placement prepared for one worker set: answers lookups.
#[derive(Clone, Debug)]
pub enum Placer {
    /// Alluxio's ring.
    Ring(HashRing),
    /// Rendezvous: each worker with its precomputed hash, sorted by identity.
    Rendezvous(Vec<(u64, WorkerIdentity)>),
}

impl Default for Placer {
    fn default() -> Self {
        Placer::Ring(HashRing::default())
    }
}

impl Placer {
    /// The ordered preferred workers of `key` (the normalized UFS URL): at
    /// most `n` distinct workers, primary first. Asking for fewer gives a
    /// prefix of the longer answer.
    pub fn pick(&self, key: &str, n: usize) -> Vec<WorkerIdentity> {
        match self {
            Placer::Ring(r) => r.get_multiple(key, n),
            Placer::Rendezvous(ws) => rendezvous_pick(ws, key, n),
        }
    }

    /// The primary worker of `key`, if there is any worker.
    pub fn primary(&self, key: &str) -> Option<WorkerIdentity> {
        match self {
            Placer::Ring(r) => r.get_multiple(key, 1).first().copied(),
            Placer::Rendezvous(ws) => rendezvous_primary(ws, key_hash(key)),
        }
    }
}

/// splitmix64's finalizer: a bijection with full avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous hash of a key.
pub fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// The rendezvous hash of a worker identity.
pub fn worker_hash(w: &WorkerIdentity) -> u64 {
    let mut buf = [0u8; 20];
    buf[..16].copy_from_slice(&w.identifier);
    buf[16..].copy_from_slice(&w.version.to_le_bytes());
    xxh3_64(&buf)
}

/// The rendezvous score of worker hash `w` for key hash `k`.
pub fn score(k: u64, w: u64) -> u64 {
    mix64(k ^ w)
}

/// The best worker of key hash `k`: highest score, then smallest identity
/// (`ws` is sorted by identity, so the first of equal scores wins).
pub fn rendezvous_primary(ws: &[(u64, WorkerIdentity)], k: u64) -> Option<WorkerIdentity> {
    let mut best: Option<(u64, WorkerIdentity)> = None;
    for &(h, id) in ws {
        let s = score(k, h);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, id));
        }
    }
    best.map(|(_, id)| id)
}

fn rendezvous_pick(ws: &[(u64, WorkerIdentity)], key: &str, n: usize) -> Vec<WorkerIdentity> {
    let n = n.min(ws.len());
    if n == 0 {
        return Vec::new();
    }
    let k = key_hash(key);
    if n == 1 {
        return rendezvous_primary(ws, k).into_iter().collect();
    }
    let mut scored: Vec<(u64, WorkerIdentity)> =
        ws.iter().map(|&(h, id)| (score(k, h), id)).collect();
    // Descending score, ascending identity on ties.
    let order = |a: &(u64, WorkerIdentity), b: &(u64, WorkerIdentity)| {
        b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1))
    };
    if n < scored.len() {
        scored.select_nth_unstable_by(n - 1, order);
        scored.truncate(n);
    }
    scored.sort_unstable_by(order);
    scored.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> Vec<WorkerIdentity> {
        (0..n)
            .map(|i| WorkerIdentity::from_hostname(&format!("worker-{i}")))
            .collect()
    }

    #[test]
    fn names_round_trip() {
        for p in [
            Placement::Alluxio { vnodes: 5 },
            Placement::Alluxio { vnodes: 200 },
            Placement::Rendezvous,
        ] {
            assert_eq!(Placement::from_setting(&p.to_setting()).unwrap(), p);
            assert_eq!(Placement::parse(p.name(), 5).unwrap().name(), p.name());
        }
        assert_eq!(
            Placement::from_setting(" rendezvous\n").unwrap(),
            Placement::Rendezvous
        );
        assert_eq!(
            Placement::from_setting("alluxio").unwrap(),
            Placement::default()
        );
        assert_eq!(
            Placement::parse("Alluxio", 7).unwrap(),
            Placement::Alluxio { vnodes: 7 }
        );
        assert!(Placement::parse("maglev", 5).is_err());
        assert!(Placement::parse("alluxio", 0).is_err());
        assert!(Placement::from_setting("alluxio:x").is_err());
    }

    #[test]
    fn alluxio_placement_is_the_ring() {
        let ws = workers(20);
        let ring = HashRing::new(&ws, 5);
        let p = Placement::default().build(&ws);
        for i in 0..200 {
            let key = format!("s3://b/train/part-{i:06}.parquet");
            assert_eq!(p.pick(&key, 3), ring.get_multiple(&key, 3));
            assert_eq!(p.primary(&key), ring.get_multiple(&key, 1).first().copied());
        }
    }

    #[test]
    fn rendezvous_picks_are_distinct_and_prefix_stable() {
        let ws = workers(10);
        let p = Placement::Rendezvous.build(&ws);
        for i in 0..500 {
            let key = format!("s3://b/k{i}");
            let all = p.pick(&key, 100);
            assert_eq!(all.len(), 10);
            let mut sorted = all.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 10, "picks must be distinct");
            for n in 1..=10 {
                assert_eq!(p.pick(&key, n), all[..n].to_vec());
            }
            assert_eq!(p.primary(&key), Some(all[0]));
        }
        assert!(Placement::Rendezvous.build(&[]).pick("x", 3).is_empty());
        assert_eq!(Placement::Rendezvous.build(&[]).primary("x"), None);
    }

    #[test]
    fn rendezvous_ignores_worker_order_and_duplicates() {
        let ws = workers(8);
        let mut rev = ws.clone();
        rev.reverse();
        rev.push(ws[3]);
        let a = Placement::Rendezvous.build(&ws);
        let b = Placement::Rendezvous.build(&rev);
        for i in 0..300 {
            let key = format!("s3://b/k{i}");
            assert_eq!(a.pick(&key, 8), b.pick(&key, 8));
        }
    }

    #[test]
    fn rendezvous_removal_moves_only_the_removed_workers_keys() {
        let ws = workers(12);
        let gone = ws[5];
        let rest: Vec<_> = ws.iter().copied().filter(|w| *w != gone).collect();
        let before = Placement::Rendezvous.build(&ws);
        let after = Placement::Rendezvous.build(&rest);
        let mut moved = 0;
        for i in 0..20_000 {
            let key = format!("s3://bucket/train/part-{i:06}.parquet");
            let old = before.pick(&key, 3);
            let new = after.pick(&key, 3);
            if old[0] == gone {
                moved += 1;
                // The key goes to its former second choice.
                assert_eq!(new[0], old[1]);
            } else {
                assert_eq!(new[0], old[0], "a key not on the removed worker moved");
            }
            // The preference order of the survivors is unchanged.
            let kept: Vec<_> = old.iter().copied().filter(|w| *w != gone).collect();
            assert_eq!(new[..kept.len()], kept[..]);
        }
        // About 1/12 of the keys were on it.
        assert!((1200..2200).contains(&moved), "moved {moved}");
    }

    #[test]
    fn rendezvous_spreads_keys_evenly() {
        let ws = workers(10);
        let p = Placement::Rendezvous.build(&ws);
        let mut counts = std::collections::HashMap::new();
        for i in 0..100_000 {
            let key = format!("s3://bucket/train/part-{i:06}.parquet");
            *counts.entry(p.primary(&key).unwrap()).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 10);
        let max = *counts.values().max().unwrap() as f64;
        // Mean 10,000, standard deviation ~95: 3% is over 3 sigma.
        assert!(max / 10_000.0 < 1.03, "max/mean {}", max / 10_000.0);
    }

    #[test]
    fn rendezvous_score_is_pinned() {
        // The score is part of the protocol between clients: changing it
        // silently would split a cluster's placement between versions.
        let w = WorkerIdentity::parse_hex(1, "b785d1f098863821a4eb6bee226c35b7").unwrap();
        let k = key_hash("s3://bucket/train/part-000001.parquet");
        assert_eq!(k, xxh3_64(b"s3://bucket/train/part-000001.parquet"));
        let mut buf = w.identifier.to_vec();
        buf.extend_from_slice(&1i32.to_le_bytes());
        assert_eq!(worker_hash(&w), xxh3_64(&buf));
        // splitmix64's finalizer of 0 is 0, of 1 is a known constant.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
    }
}

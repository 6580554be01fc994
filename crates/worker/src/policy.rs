//! Eviction policies of the page store: which evictable page goes first.
//!
//! Design:
//! - A [`Policy`] orders the *evictable* pages of one cache directory. The
//!   store tells it about inserts, hits and removals and asks it for a
//!   victim; pages being written (pending) and pinned pages are never handed
//!   to it, so they can never be chosen. A victim may be restricted by a
//!   predicate (per-mount quotas evict only pages of their mount).
//! - [`Lru`]: least recently used first. Every hit moves the page to the
//!   front. A loop over data larger than the cache evicts each page just
//!   before it is needed again: 0% hits from the second epoch on.
//! - [`S3Fifo`] (Yang et al., SOSP 2023): a small FIFO (10% of the bytes)
//!   that new pages enter, a main FIFO, and a ghost FIFO that remembers the
//!   keys (not data) recently dropped from the small one. A hit only bumps
//!   a 2-bit counter (no reordering). A page leaving the small FIFO moves to
//!   main if it was hit while there, else it is dropped and remembered as a
//!   ghost; a miss on a ghost key enters main directly. Main is a CLOCK:
//!   a page with a non-zero counter is reinserted with the counter
//!   decremented. Pages read once are thus filtered out by the small FIFO
//!   while a working set that recurs (multi-epoch training) settles in
//!   main, so a loop over 1.5x the cache keeps most of main instead of
//!   thrashing. It was chosen over ARC and 2Q because it is the simplest
//!   scan-resistant policy (two FIFOs and a set), needs no list reordering
//!   on hits, and matches or beats both on published traces.
//!
//! Both keep their order in `BTreeMap`s keyed by a sequence number, so a
//! removal from the middle (free, TTL, invalidation, pin) is O(log n).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// Which eviction policy a worker uses (`eviction_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum PolicyKind {
    /// Least recently used.
    Lru,
    /// S3-FIFO: scan resistant; the default (see `docs/eviction.md`).
    #[default]
    S3Fifo,
}

impl PolicyKind {
    /// The setting name: `lru` or `s3fifo`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::S3Fifo => "s3fifo",
        }
    }

    /// A fresh policy of this kind for a directory of `capacity` bytes.
    pub fn build(self, capacity: u64) -> Box<dyn Policy> {
        match self {
            PolicyKind::Lru => Box::new(Lru::default()),
            PolicyKind::S3Fifo => Box::new(S3Fifo::new(capacity)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_'], "")
            .as_str()
        {
            "lru" => Ok(PolicyKind::Lru),
            "s3fifo" => Ok(PolicyKind::S3Fifo),
            other => Err(format!(
                "unknown eviction policy {other:?} (expected lru or s3fifo)"
            )),
        }
    }
}

/// An eviction order over the evictable pages of one directory, named by
/// their key hash.
pub trait Policy: Send + Sync + fmt::Debug {
    /// A page became evictable (written, or unpinned). Inserting a page
    /// already tracked is a no-op.
    fn insert(&mut self, hash: u128, size: u64);
    /// A tracked page was read.
    fn hit(&mut self, hash: u128);
    /// A page left for another reason (removed, pinned); untracked is a no-op.
    fn remove(&mut self, hash: u128);
    /// Choose a victim among the tracked pages for which `eligible` holds,
    /// and stop tracking it. `None` when there is none.
    fn victim(&mut self, eligible: &dyn Fn(u128) -> bool) -> Option<u128>;
    /// Pages tracked.
    fn len(&self) -> usize;
    /// Whether no page is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Least recently used.
#[derive(Debug, Default)]
pub struct Lru {
    seq: u64,
    order: BTreeMap<u64, u128>,
    pos: HashMap<u128, u64>,
}

impl Lru {
    fn bump(&mut self, hash: u128) {
        self.seq += 1;
        if let Some(old) = self.pos.insert(hash, self.seq) {
            self.order.remove(&old);
        }
        self.order.insert(self.seq, hash);
    }
}

impl Policy for Lru {
    fn insert(&mut self, hash: u128, _size: u64) {
        if !self.pos.contains_key(&hash) {
            self.bump(hash);
        }
    }

    fn hit(&mut self, hash: u128) {
        if self.pos.contains_key(&hash) {
            self.bump(hash);
        }
    }

    fn remove(&mut self, hash: u128) {
        if let Some(s) = self.pos.remove(&hash) {
            self.order.remove(&s);
        }
    }

    fn victim(&mut self, eligible: &dyn Fn(u128) -> bool) -> Option<u128> {
        let (&s, &h) = self.order.iter().find(|(_, h)| eligible(**h))?;
        self.order.remove(&s);
        self.pos.remove(&h);
        Some(h)
    }

    fn len(&self) -> usize {
        self.pos.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    queue: Queue,
    seq: u64,
    freq: u8,
    size: u64,
}

/// Highest value of the access counter (2 bits).
const MAX_FREQ: u8 = 3;

/// S3-FIFO: small FIFO, main CLOCK-like FIFO, ghost FIFO of keys.
#[derive(Debug)]
pub struct S3Fifo {
    capacity: u64,
    seq: u64,
    nodes: HashMap<u128, Node>,
    small: BTreeMap<u64, u128>,
    main: BTreeMap<u64, u128>,
    small_bytes: u64,
    ghost: VecDeque<(u64, u128, u64)>,
    ghost_pos: HashMap<u128, u64>,
    ghost_bytes: u64,
}

impl S3Fifo {
    /// A policy for a directory of `capacity` bytes (the small FIFO targets
    /// a tenth of it, the ghost FIFO remembers the rest's worth of keys).
    pub fn new(capacity: u64) -> Self {
        S3Fifo {
            capacity,
            seq: 0,
            nodes: HashMap::new(),
            small: BTreeMap::new(),
            main: BTreeMap::new(),
            small_bytes: 0,
            ghost: VecDeque::new(),
            ghost_pos: HashMap::new(),
            ghost_bytes: 0,
        }
    }

    fn small_target(&self) -> u64 {
        (self.capacity / 10).max(1)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push(&mut self, hash: u128, queue: Queue, freq: u8, size: u64) {
        let seq = self.next_seq();
        match queue {
            Queue::Small => {
                self.small.insert(seq, hash);
                self.small_bytes += size;
            }
            Queue::Main => {
                self.main.insert(seq, hash);
            }
        }
        self.nodes.insert(
            hash,
            Node {
                queue,
                seq,
                freq,
                size,
            },
        );
    }

    fn unlink(&mut self, hash: u128) -> Option<Node> {
        let n = self.nodes.remove(&hash)?;
        match n.queue {
            Queue::Small => {
                self.small.remove(&n.seq);
                self.small_bytes -= n.size;
            }
            Queue::Main => {
                self.main.remove(&n.seq);
            }
        }
        Some(n)
    }

    fn remember_ghost(&mut self, hash: u128, size: u64) {
        let seq = self.next_seq();
        self.ghost.push_back((seq, hash, size));
        self.ghost_pos.insert(hash, seq);
        self.ghost_bytes += size;
        let limit = self.capacity.saturating_sub(self.small_target());
        while self.ghost_bytes > limit {
            let Some((s, h, sz)) = self.ghost.pop_front() else {
                break;
            };
            self.ghost_bytes -= sz;
            if self.ghost_pos.get(&h) == Some(&s) {
                self.ghost_pos.remove(&h);
            }
        }
    }

    /// Walk the small FIFO oldest first: eligible pages hit while there
    /// move to main; the first eligible page never hit is the victim (and
    /// becomes a ghost).
    fn victim_small(&mut self, eligible: &dyn Fn(u128) -> bool) -> Option<u128> {
        let mut cursor = 0;
        loop {
            let (&seq, &hash) = self.small.range(cursor..).next()?;
            cursor = seq + 1;
            if !eligible(hash) {
                continue;
            }
            let node = self.unlink(hash)?;
            if node.freq >= 1 {
                self.push(hash, Queue::Main, 0, node.size);
            } else {
                self.remember_ghost(hash, node.size);
                return Some(hash);
            }
        }
    }

    /// Walk main oldest first: an eligible page with a non-zero counter is
    /// reinserted with the counter decremented; the first at zero is the
    /// victim. Terminates: each reinsertion lowers a counter.
    fn victim_main(&mut self, eligible: &dyn Fn(u128) -> bool) -> Option<u128> {
        let mut cursor = 0;
        loop {
            let (&seq, &hash) = self.main.range(cursor..).next()?;
            cursor = seq + 1;
            if !eligible(hash) {
                continue;
            }
            let node = self.unlink(hash)?;
            if node.freq > 0 {
                self.push(hash, Queue::Main, node.freq - 1, node.size);
            } else {
                return Some(hash);
            }
        }
    }
}

impl Policy for S3Fifo {
    fn insert(&mut self, hash: u128, size: u64) {
        if self.nodes.contains_key(&hash) {
            return;
        }
        if self.ghost_pos.remove(&hash).is_some() {
            self.push(hash, Queue::Main, 0, size);
        } else {
            self.push(hash, Queue::Small, 0, size);
        }
    }

    fn hit(&mut self, hash: u128) {
        if let Some(n) = self.nodes.get_mut(&hash) {
            n.freq = (n.freq + 1).min(MAX_FREQ);
        }
    }

    fn remove(&mut self, hash: u128) {
        self.unlink(hash);
    }

    fn victim(&mut self, eligible: &dyn Fn(u128) -> bool) -> Option<u128> {
        if self.small_bytes >= self.small_target() || self.main.is_empty() {
            if let Some(h) = self.victim_small(eligible) {
                return Some(h);
            }
            self.victim_main(eligible)
        } else {
            if let Some(h) = self.victim_main(eligible) {
                return Some(h);
            }
            self.victim_small(eligible)
        }
    }

    fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Simulate a cache of `cap` unit pages under `kind` over `trace`;
    /// returns hits.
    fn simulate(kind: PolicyKind, cap: u64, trace: &[u128]) -> usize {
        let mut p = kind.build(cap);
        let mut cached = std::collections::HashSet::new();
        let mut hits = 0;
        for &k in trace {
            if cached.contains(&k) {
                hits += 1;
                p.hit(k);
                continue;
            }
            if cached.len() as u64 >= cap {
                let v = p.victim(&|_| true).expect("a victim");
                assert!(cached.remove(&v));
            }
            p.insert(k, 1);
            cached.insert(k);
            assert_eq!(p.len(), cached.len());
        }
        hits
    }

    fn epochs(n_pages: u128, epochs: usize) -> Vec<u128> {
        (0..epochs).flat_map(|_| 0..n_pages).collect()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!("lru".parse::<PolicyKind>().unwrap(), PolicyKind::Lru);
        assert_eq!("S3-FIFO".parse::<PolicyKind>().unwrap(), PolicyKind::S3Fifo);
        assert_eq!(PolicyKind::S3Fifo.to_string(), "s3fifo");
        assert!("arc".parse::<PolicyKind>().is_err());
    }

    #[test]
    fn lru_evicts_least_recent_and_respects_eligibility() {
        let mut p = Lru::default();
        for h in 0..4 {
            p.insert(h, 1);
        }
        p.hit(0);
        assert_eq!(p.victim(&|_| true), Some(1));
        assert_eq!(p.victim(&|h| h != 2), Some(3));
        p.remove(2);
        assert_eq!(p.victim(&|_| true), Some(0));
        assert_eq!(p.victim(&|_| true), None);
    }

    #[test]
    fn lru_thrashes_on_a_loop_larger_than_the_cache() {
        let trace = epochs(96, 4);
        assert_eq!(simulate(PolicyKind::Lru, 64, &trace), 0);
    }

    #[test]
    fn s3fifo_keeps_most_of_a_loop_larger_than_the_cache() {
        let trace = epochs(96, 4);
        let hits = simulate(PolicyKind::S3Fifo, 64, &trace);
        // Epochs 3 and 4 keep most of main (about 55 of 96 pages each).
        assert!(hits >= 80, "hits {hits}");
    }

    #[test]
    fn s3fifo_one_hit_wonders_do_not_flush_the_hot_set() {
        let mut p = S3Fifo::new(10);
        let mut cached = std::collections::HashSet::new();
        let mut access = |p: &mut S3Fifo, k: u128| -> bool {
            if cached.contains(&k) {
                p.hit(k);
                return true;
            }
            if cached.len() >= 10 {
                let v = p.victim(&|_| true).unwrap();
                cached.remove(&v);
            }
            p.insert(k, 1);
            cached.insert(k);
            false
        };
        // A hot set of 5 pages, read three times, then a scan of 100 pages
        // interleaved with the hot set.
        for _ in 0..3 {
            for k in 0..5 {
                access(&mut p, k);
            }
        }
        let mut hot_hits = 0;
        for s in 100..200 {
            access(&mut p, s);
            if s % 10 == 0 {
                for k in 0..5 {
                    hot_hits += access(&mut p, k) as usize;
                }
            }
        }
        assert_eq!(hot_hits, 50, "the hot set survives the scan");
    }

    #[test]
    fn s3fifo_ghost_hits_enter_main() {
        let mut p = S3Fifo::new(10);
        for h in 0..10 {
            p.insert(h, 1);
        }
        assert_eq!(p.victim(&|_| true), Some(0));
        p.insert(0, 1);
        assert_eq!(p.nodes[&0].queue, Queue::Main);
        p.remove(0);
        assert_eq!(p.len(), 9);
    }

    proptest! {
        #[test]
        fn policies_track_exactly_the_inserted_pages(
            ops in proptest::collection::vec((0u8..4, 0u128..20), 1..200),
            lru in any::<bool>(),
        ) {
            let kind = if lru { PolicyKind::Lru } else { PolicyKind::S3Fifo };
            let mut p = kind.build(8);
            let mut model = std::collections::HashSet::new();
            for (op, h) in ops {
                match op {
                    0 => { p.insert(h, 1); model.insert(h); }
                    1 => p.hit(h),
                    2 => { p.remove(h); model.remove(&h); }
                    _ => {
                        let odd = h % 2 == 1;
                        match p.victim(&|x| (x % 2 == 1) == odd) {
                            Some(v) => {
                                prop_assert!(model.remove(&v), "victim {} not tracked", v);
                                prop_assert_eq!(v % 2 == 1, odd);
                            }
                            None => prop_assert!(!model.iter().any(|x| (x % 2 == 1) == odd)),
                        }
                    }
                }
                prop_assert_eq!(p.len(), model.len());
            }
        }
    }
}

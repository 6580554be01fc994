//! Eviction policies of the page store: which evictable page goes first.
//!
//! Design:
//! - A [`Policy`] orders the *evictable* pages of one cache directory. The
//!   store tells it about inserts, hits and removals and asks it for a
//!   victim; pages being written (pending) and pinned pages are never handed
//!   to it, so they can never be chosen. A victim may be restricted by a
//!   predicate (per-mount quotas evict only pages of their mount).
//! - [`PolicyKind::Lru`]: least recently used first. Every hit moves the
//!   page to the back. A loop over data larger than the cache evicts each
//!   page just before it is needed again: 0% hits from the second epoch on.
//! - [`PolicyKind::S3Fifo`] (Yang et al., SOSP 2023): a small FIFO (10% of
//!   the bytes) that new pages enter, a main FIFO, and a ghost FIFO that
//!   remembers the keys (not data) recently dropped from the small one. A
//!   hit only bumps a 2-bit counter (no reordering). A page leaving the
//!   small FIFO moves to main if it was hit while there, else it is dropped
//!   and remembered as a ghost; a miss on a ghost key enters main directly.
//!   Main is a CLOCK: a page with a non-zero counter is reinserted with the
//!   counter decremented. Pages read once are thus filtered out by the small
//!   FIFO while a working set that recurs (multi-epoch training) settles in
//!   main, so a loop over 1.5x the cache keeps most of main instead of
//!   thrashing. It was chosen over ARC and 2Q because it is the simplest
//!   scan-resistant policy (two FIFOs and a set), needs no list reordering
//!   on hits, and matches or beats both on published traces.
//!
//! **Memory.** A store holds tens of millions of pages, so a policy keeps
//! no map of its own: its queues are doubly linked lists threaded through
//! the store's page slots ([`Nodes`]: two `u32` links, a 2-bit queue tag
//! and a 2-bit counter per page), and every operation, a removal from the
//! middle included, is O(1). The ghost FIFO keeps 32-bit fingerprints of
//! keys, not keys, for at most 90% as many pages as the policy tracks (a
//! ring of 4 bytes and a table of 5 to 11 bytes per ghost; nothing until
//! pages are evicted); a fingerprint collision only lets a new page skip
//! the small FIFO.

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
    pub fn build(self, capacity: u64) -> Policy {
        Policy::new(self, capacity)
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

/// No page: the end of a list.
pub const NIL: u32 = u32::MAX;

/// The per-page state a policy threads its queues through, kept by the
/// store in its page slots (see the module note).
pub trait Nodes {
    /// The previous page in the page's queue.
    fn prev(&self, i: u32) -> u32;
    /// The next page in the page's queue.
    fn next(&self, i: u32) -> u32;
    /// Set both links.
    fn set_links(&mut self, i: u32, prev: u32, next: u32);
    /// The page's queue tag (0: in none).
    fn queue(&self, i: u32) -> u8;
    /// Set the queue tag.
    fn set_queue(&mut self, i: u32, q: u8);
    /// The page's access counter (0-3).
    fn freq(&self, i: u32) -> u8;
    /// Set the access counter.
    fn set_freq(&mut self, i: u32, f: u8);
    /// The page's bytes.
    fn size(&self, i: u32) -> u64;
    /// A key naming the page for the ghost filter.
    fn ghost_key(&self, i: u32) -> u64;
}

const SMALL: u8 = 1;
const MAIN: u8 = 2;

/// Highest value of the access counter (2 bits).
pub const MAX_FREQ: u8 = 3;

/// A doubly linked list through [`Nodes`]: oldest at the head.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

impl List {
    fn push_back<N: Nodes + ?Sized>(&mut self, n: &mut N, i: u32) {
        n.set_links(i, self.tail, NIL);
        if self.tail == NIL {
            self.head = i;
        } else {
            let p = n.prev(self.tail);
            n.set_links(self.tail, p, i);
        }
        self.tail = i;
        self.len += 1;
    }

    fn unlink<N: Nodes + ?Sized>(&mut self, n: &mut N, i: u32) {
        let (p, x) = (n.prev(i), n.next(i));
        if p == NIL {
            self.head = x;
        } else {
            let pp = n.prev(p);
            n.set_links(p, pp, x);
        }
        if x == NIL {
            self.tail = p;
        } else {
            let xn = n.next(x);
            n.set_links(x, p, xn);
        }
        n.set_links(i, NIL, NIL);
        self.len -= 1;
    }
}

/// The ghost FIFO: 32-bit fingerprints of recently dropped keys, in
/// insertion order (a ring) and in a linear-probing table for lookups. It
/// remembers at most `GHOST_SHARE` of the pages the policy tracks; a hit
/// removes the fingerprint (the page re-enters through main once).
#[derive(Debug, Default)]
struct Ghost {
    ring: std::collections::VecDeque<u32>,
    table: Vec<u32>,
    len: usize,
}

/// The ghost remembers this share of the tracked pages (the S3-FIFO paper
/// keeps as many ghosts as main holds, 90% of the pages; with half as many
/// the loop test below keeps nothing: a page's reuse distance there is the
/// whole loop).
const GHOST_SHARE: f64 = 0.9;

fn fingerprint(key: u64) -> u32 {
    ((key ^ (key >> 32)) as u32) | 1
}

impl Ghost {
    fn home(&self, fp: u32) -> usize {
        (fp.wrapping_mul(0x9E37_79B9) as usize) & (self.table.len() - 1)
    }

    fn find(&self, fp: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.table.len() - 1;
        let mut at = self.home(fp);
        loop {
            match self.table[at] {
                0 => return None,
                x if x == fp => return Some(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Whether `key` is a ghost; a hit forgets it.
    fn take(&mut self, key: u64) -> bool {
        let fp = fingerprint(key);
        match self.find(fp) {
            Some(at) => {
                self.delete_at(at);
                true
            }
            None => false,
        }
    }

    fn delete_at(&mut self, mut at: usize) {
        // Backward-shift deletion keeps probe sequences unbroken.
        let mask = self.table.len() - 1;
        self.table[at] = 0;
        self.len -= 1;
        let mut next = (at + 1) & mask;
        while self.table[next] != 0 {
            let fp = self.table[next];
            let home = self.home(fp);
            // Move it back when its home is not within (at, next].
            let dist_next = next.wrapping_sub(home) & mask;
            let dist_at = at.wrapping_sub(home) & mask;
            if dist_at < dist_next {
                self.table[at] = fp;
                self.table[next] = 0;
                at = next;
            }
            next = (next + 1) & mask;
        }
    }

    fn insert_fp(&mut self, fp: u32) {
        let mask = self.table.len() - 1;
        let mut at = self.home(fp);
        while self.table[at] != 0 {
            if self.table[at] == fp {
                return;
            }
            at = (at + 1) & mask;
        }
        self.table[at] = fp;
        self.len += 1;
    }

    /// Remember `key`, forgetting the oldest ghosts beyond `GHOST_SHARE` of
    /// `tracked`.
    fn add(&mut self, key: u64, tracked: usize) {
        let limit = ((tracked as f64 * GHOST_SHARE) as usize).max(8);
        let want = (limit * 4 / 3 + 1).next_power_of_two();
        if self.table.len() < want || self.table.len() > 4 * want {
            // Resize (rare: the tracked count moves slowly).
            let old = std::mem::take(&mut self.table);
            self.table = vec![0; want];
            self.len = 0;
            for fp in old.into_iter().filter(|f| *f != 0) {
                self.insert_fp(fp);
            }
        }
        while self.ring.len() >= limit {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            if let Some(at) = self.find(old) {
                self.delete_at(at);
            }
        }
        let fp = fingerprint(key);
        self.ring.push_back(fp);
        self.insert_fp(fp);
    }

    fn heap_bytes(&self) -> usize {
        (self.ring.capacity() + self.table.capacity()) * 4
    }
}

/// An eviction order over the evictable pages of one directory (see the
/// module note). Pages are the store's slot numbers; their links live in
/// the store's [`Nodes`].
#[derive(Debug)]
pub struct Policy {
    kind: PolicyKind,
    capacity: u64,
    /// LRU: the only list (least recent at the head). S3-FIFO: main.
    main: List,
    small: List,
    small_bytes: u64,
    ghost: Ghost,
}

impl Policy {
    /// An empty policy of `kind` for a directory of `capacity` bytes (the
    /// small FIFO of S3-FIFO targets a tenth of it).
    pub fn new(kind: PolicyKind, capacity: u64) -> Self {
        Policy {
            kind,
            capacity,
            main: List::default(),
            small: List::default(),
            small_bytes: 0,
            ghost: Ghost::default(),
        }
    }

    fn small_target(&self) -> u64 {
        (self.capacity / 10).max(1)
    }

    /// Pages tracked.
    pub fn len(&self) -> usize {
        self.main.len + self.small.len
    }

    /// Whether no page is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the policy's own state (the ghost filter).
    pub fn heap_bytes(&self) -> usize {
        self.ghost.heap_bytes()
    }

    /// Page `i` became evictable (written, or unpinned). A page already
    /// tracked is left as it is.
    pub fn insert<N: Nodes + ?Sized>(&mut self, n: &mut N, i: u32) {
        if n.queue(i) != 0 {
            return;
        }
        n.set_freq(i, 0);
        match self.kind {
            PolicyKind::Lru => {
                n.set_queue(i, MAIN);
                self.main.push_back(n, i);
            }
            PolicyKind::S3Fifo => {
                if self.ghost.take(n.ghost_key(i)) {
                    n.set_queue(i, MAIN);
                    self.main.push_back(n, i);
                } else {
                    n.set_queue(i, SMALL);
                    self.small.push_back(n, i);
                    self.small_bytes += n.size(i);
                }
            }
        }
    }

    /// Page `i` was read.
    pub fn hit<N: Nodes + ?Sized>(&mut self, n: &mut N, i: u32) {
        if n.queue(i) == 0 {
            return;
        }
        match self.kind {
            PolicyKind::Lru => {
                self.main.unlink(n, i);
                self.main.push_back(n, i);
            }
            PolicyKind::S3Fifo => n.set_freq(i, (n.freq(i) + 1).min(MAX_FREQ)),
        }
    }

    /// Page `i` left for another reason (removed, pinned); untracked is a
    /// no-op.
    pub fn remove<N: Nodes + ?Sized>(&mut self, n: &mut N, i: u32) {
        match n.queue(i) {
            SMALL => {
                self.small.unlink(n, i);
                self.small_bytes -= n.size(i);
            }
            MAIN => self.main.unlink(n, i),
            _ => return,
        }
        n.set_queue(i, 0);
    }

    /// Choose a victim among the tracked pages for which `eligible` holds,
    /// and stop tracking it. `None` when there is none.
    pub fn victim<N: Nodes + ?Sized>(
        &mut self,
        n: &mut N,
        eligible: &dyn Fn(&N, u32) -> bool,
    ) -> Option<u32> {
        match self.kind {
            PolicyKind::Lru => {
                let mut c = self.main.head;
                while c != NIL {
                    if eligible(n, c) {
                        self.remove(n, c);
                        return Some(c);
                    }
                    c = n.next(c);
                }
                None
            }
            PolicyKind::S3Fifo => {
                if self.small_bytes >= self.small_target() || self.main.len == 0 {
                    self.victim_small(n, eligible)
                        .or_else(|| self.victim_main(n, eligible))
                } else {
                    self.victim_main(n, eligible)
                        .or_else(|| self.victim_small(n, eligible))
                }
            }
        }
    }

    /// Walk the small FIFO oldest first: eligible pages hit while there
    /// move to main; the first eligible page never hit is the victim (and
    /// becomes a ghost).
    fn victim_small<N: Nodes + ?Sized>(
        &mut self,
        n: &mut N,
        eligible: &dyn Fn(&N, u32) -> bool,
    ) -> Option<u32> {
        let mut c = self.small.head;
        while c != NIL {
            let next = n.next(c);
            if eligible(n, c) {
                self.remove(n, c);
                if n.freq(c) >= 1 {
                    n.set_freq(c, 0);
                    n.set_queue(c, MAIN);
                    self.main.push_back(n, c);
                } else {
                    let tracked = self.len();
                    self.ghost.add(n.ghost_key(c), tracked);
                    return Some(c);
                }
            }
            c = next;
        }
        None
    }

    /// Walk main oldest first: an eligible page with a non-zero counter is
    /// reinserted with the counter decremented; the first at zero is the
    /// victim. Terminates: each reinsertion lowers a counter.
    fn victim_main<N: Nodes + ?Sized>(
        &mut self,
        n: &mut N,
        eligible: &dyn Fn(&N, u32) -> bool,
    ) -> Option<u32> {
        let mut c = self.main.head;
        // Pages reinserted behind the walk are met again; stop after a
        // full round with nothing eligible.
        let mut budget = self.main.len * (MAX_FREQ as usize + 1) + 1;
        while c != NIL && budget > 0 {
            budget -= 1;
            let next = n.next(c);
            if eligible(n, c) {
                let f = n.freq(c);
                if f > 0 {
                    self.main.unlink(n, c);
                    n.set_freq(c, f - 1);
                    self.main.push_back(n, c);
                    // The walk goes on from `next`; the reinserted page is
                    // now at the tail and is met again (at once, when it
                    // was the tail).
                    c = if next == NIL { c } else { next };
                    continue;
                }
                self.remove(n, c);
                return Some(c);
            }
            c = next;
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Nodes in a plain vector, for testing policies alone.
    #[derive(Debug, Default)]
    pub(crate) struct VecNodes {
        pub(crate) links: Vec<(u32, u32, u8, u8)>,
    }

    impl VecNodes {
        pub(crate) fn with(n: usize) -> Self {
            VecNodes {
                links: vec![(NIL, NIL, 0, 0); n],
            }
        }
    }

    impl Nodes for VecNodes {
        fn prev(&self, i: u32) -> u32 {
            self.links[i as usize].0
        }
        fn next(&self, i: u32) -> u32 {
            self.links[i as usize].1
        }
        fn set_links(&mut self, i: u32, prev: u32, next: u32) {
            let l = &mut self.links[i as usize];
            l.0 = prev;
            l.1 = next;
        }
        fn queue(&self, i: u32) -> u8 {
            self.links[i as usize].2
        }
        fn set_queue(&mut self, i: u32, q: u8) {
            self.links[i as usize].2 = q;
        }
        fn freq(&self, i: u32) -> u8 {
            self.links[i as usize].3
        }
        fn set_freq(&mut self, i: u32, f: u8) {
            self.links[i as usize].3 = f;
        }
        fn size(&self, _i: u32) -> u64 {
            1
        }
        fn ghost_key(&self, i: u32) -> u64 {
            (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }
    }

    fn all(_: &VecNodes, _: u32) -> bool {
        true
    }

    /// Simulate a cache of `cap` unit pages under `kind` over `trace`;
    /// returns hits.
    fn simulate(kind: PolicyKind, cap: u64, trace: &[u32]) -> usize {
        let mut p = kind.build(cap);
        let mut n = VecNodes::with(trace.iter().max().map_or(0, |m| *m as usize + 1));
        let mut cached = std::collections::HashSet::new();
        let mut hits = 0;
        for &k in trace {
            if cached.contains(&k) {
                hits += 1;
                p.hit(&mut n, k);
                continue;
            }
            if cached.len() as u64 >= cap {
                let v = p.victim(&mut n, &all).expect("a victim");
                assert!(cached.remove(&v));
            }
            p.insert(&mut n, k);
            cached.insert(k);
            assert_eq!(p.len(), cached.len());
        }
        hits
    }

    fn epochs(n_pages: u32, epochs: usize) -> Vec<u32> {
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
        let mut p = Policy::new(PolicyKind::Lru, 100);
        let mut n = VecNodes::with(4);
        for h in 0..4 {
            p.insert(&mut n, h);
        }
        p.hit(&mut n, 0);
        assert_eq!(p.victim(&mut n, &all), Some(1));
        assert_eq!(p.victim(&mut n, &|_, h| h != 2), Some(3));
        p.remove(&mut n, 2);
        assert_eq!(p.victim(&mut n, &all), Some(0));
        assert_eq!(p.victim(&mut n, &all), None);
        assert!(p.is_empty());
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
        let mut p = Policy::new(PolicyKind::S3Fifo, 10);
        let mut n = VecNodes::with(200);
        let mut cached = std::collections::HashSet::new();
        let mut access = |p: &mut Policy, n: &mut VecNodes, k: u32| -> bool {
            if cached.contains(&k) {
                p.hit(n, k);
                return true;
            }
            if cached.len() >= 10 {
                let v = p.victim(n, &all).unwrap();
                cached.remove(&v);
            }
            p.insert(n, k);
            cached.insert(k);
            false
        };
        // A hot set of 5 pages, read three times, then a scan of 100 pages
        // interleaved with the hot set.
        for _ in 0..3 {
            for k in 0..5 {
                access(&mut p, &mut n, k);
            }
        }
        let mut hot_hits = 0;
        for s in 100..200 {
            access(&mut p, &mut n, s);
            if s % 10 == 0 {
                for k in 0..5 {
                    hot_hits += access(&mut p, &mut n, k) as usize;
                }
            }
        }
        assert_eq!(hot_hits, 50, "the hot set survives the scan");
    }

    #[test]
    fn s3fifo_ghost_hits_enter_main() {
        let mut p = Policy::new(PolicyKind::S3Fifo, 10);
        let mut n = VecNodes::with(10);
        for h in 0..10 {
            p.insert(&mut n, h);
        }
        assert_eq!(p.victim(&mut n, &all), Some(0));
        p.insert(&mut n, 0);
        assert_eq!(n.queue(0), MAIN);
        p.remove(&mut n, 0);
        assert_eq!(p.len(), 9);
        assert_eq!(n.queue(0), 0);
    }

    #[test]
    fn a_main_page_hit_many_times_is_chosen_once_its_counter_runs_out() {
        let mut p = Policy::new(PolicyKind::S3Fifo, 1000);
        let mut n = VecNodes::with(1);
        p.insert(&mut n, 0);
        assert_eq!(p.victim(&mut n, &all), Some(0), "never hit: a ghost");
        p.insert(&mut n, 0);
        assert_eq!(n.queue(0), MAIN);
        for _ in 0..5 {
            p.hit(&mut n, 0);
        }
        assert_eq!(n.freq(0), MAX_FREQ);
        assert_eq!(p.victim(&mut n, &all), Some(0), "alone, at the tail");
        assert!(p.is_empty());
    }

    proptest! {
        #[test]
        fn policies_track_exactly_the_inserted_pages(
            ops in proptest::collection::vec((0u8..4, 0u32..20), 1..200),
            lru in any::<bool>(),
        ) {
            let kind = if lru { PolicyKind::Lru } else { PolicyKind::S3Fifo };
            let mut p = kind.build(8);
            let mut n = VecNodes::with(20);
            let mut model = std::collections::HashSet::new();
            for (op, h) in ops {
                match op {
                    0 => { p.insert(&mut n, h); model.insert(h); }
                    1 => p.hit(&mut n, h),
                    2 => { p.remove(&mut n, h); model.remove(&h); }
                    _ => {
                        let odd = h % 2 == 1;
                        match p.victim(&mut n, &|_, x| (x % 2 == 1) == odd) {
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

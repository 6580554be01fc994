//! The in-memory index of the pages on disk and its accounting, in a few
//! dozen bytes per page.
//!
//! - **Slots.** Every page has a [`Slot`] of 44 bytes in one vector: its
//!   key (URL hash, page index), version hash, where it is (segment and
//!   offset, or a file of its own), its length on disk, when it was cached,
//!   its two eviction-queue links, and a word of flags (directory,
//!   pending, pinned, queue, access counter, mount quota, TTL rule). No
//!   URL, version or per-page heap allocation: the memory per page does not
//!   depend on URL length. Free slots are chained through `next` and
//!   reused.
//! - **Table.** A `hashbrown::HashTable<u32>` of slot numbers, placed by
//!   the slot key: about 5 bytes per page at full load, 10 just after it
//!   doubles.
//! - **Pages of a URL.** The index keeps one page per (URL, page index); a
//!   small map remembers, for URLs with pages past the first, one past the
//!   highest page index cached (rebuilt at every checkpoint). So the pages
//!   of a URL are found by probing its indices, with no per-URL set.
//! - **Eviction state** lives in the slots' links ([`crate::policy`]).
//! - **Accounting**: per directory (bytes on disk, segments and their live
//!   bytes), per mount quota, pinned bytes. Every change goes through
//!   [`Index::insert`], [`Index::settle`], [`Index::set_pinned`] and
//!   [`Index::remove`], which update all of it together.
//!
//! A page is *pending* while it is written (invisible to readers, its bytes
//! reserved, not a victim); *pinned* pages are out of the policy
//! altogether. The index does no I/O: the store writes and deletes files
//! and the journal ([`super::journal`]) records what the index did.

use super::key::SlotKey;
use super::segments::Segments;
use crate::policy::{Nodes, Policy, NIL};
use crate::rules::Rules;
use hashbrown::HashTable;
use std::collections::HashMap;

/// `seg` of a page stored as a file of its own.
pub(super) const LARGE: u32 = u32::MAX;

const DIR_MASK: u32 = 0xF;
const PENDING: u32 = 1 << 4;
const PINNED: u32 = 1 << 5;
const QUEUE_SHIFT: u32 = 6;
const FREQ_SHIFT: u32 = 8;
const MOUNT_SHIFT: u32 = 10;
const TTL_SHIFT: u32 = 18;
const FREE: u32 = 1 << 26;
/// Most cache directories a store has (the directory is 4 bits of flags).
pub(super) const MAX_DIRS: usize = 16;
/// Most mount quotas and TTL rules told apart per page (8 bits each);
/// further ones are still applied, by a lookup of the URL.
pub(super) const MAX_CLASSES: usize = 254;

/// One page on disk (see the module note). 4-byte aligned: 44 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    hash_lo: u32,
    hash_hi: u32,
    pub(super) index: u32,
    pub(super) version_hash: u32,
    /// Segment number, or [`LARGE`].
    pub(super) seg: u32,
    /// Offset in the segment.
    pub(super) off: u32,
    /// Bytes on disk (the record or the file).
    pub(super) len: u32,
    /// When the page was cached, in [`now_ds`] units.
    pub(super) created: u32,
    prev: u32,
    next: u32,
    flags: u32,
}

impl Slot {
    pub(super) fn key(&self) -> SlotKey {
        SlotKey {
            url_hash: u64::from(self.hash_lo) | (u64::from(self.hash_hi) << 32),
            index: self.index,
        }
    }
    pub(super) fn dir(&self) -> usize {
        (self.flags & DIR_MASK) as usize
    }
    pub(super) fn pending(&self) -> bool {
        self.flags & PENDING != 0
    }
    pub(super) fn pinned(&self) -> bool {
        self.flags & PINNED != 0
    }
    /// The mount quota the page counts against.
    pub(super) fn mount(&self) -> Option<usize> {
        match (self.flags >> MOUNT_SHIFT) & 0xFF {
            0 => None,
            m => Some(m as usize - 1),
        }
    }
    /// The TTL rule class of the page (see [`super::keep`]); 0: none.
    pub(super) fn ttl_class(&self) -> u8 {
        ((self.flags >> TTL_SHIFT) & 0xFF) as u8
    }
    pub(super) fn set_ttl_class(&mut self, c: u8) {
        self.flags = (self.flags & !(0xFF << TTL_SHIFT)) | (u32::from(c) << TTL_SHIFT);
    }
    pub(super) fn set_mount(&mut self, m: Option<usize>) {
        let v = m.map_or(0, |m| (m.min(MAX_CLASSES) + 1) as u32);
        self.flags = (self.flags & !(0xFF << MOUNT_SHIFT)) | (v << MOUNT_SHIFT);
    }
    pub(super) fn is_large(&self) -> bool {
        self.seg == LARGE
    }
    fn free(&self) -> bool {
        self.flags & FREE != 0
    }
}

/// A page to add to the index.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewPage {
    pub(super) key: SlotKey,
    pub(super) version_hash: u32,
    pub(super) dir: usize,
    pub(super) seg: u32,
    pub(super) off: u32,
    pub(super) len: u32,
    pub(super) created: u32,
    pub(super) pending: bool,
    pub(super) pinned: bool,
    pub(super) mount: Option<usize>,
    pub(super) ttl_class: u8,
}

/// Deciseconds since 2026-01-01 UTC: the time unit of `created` (u32
/// lasts until 2039).
pub(super) fn now_ds() -> u32 {
    const EPOCH_2026: u64 = 1_767_225_600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ds = now
        .as_millis()
        .saturating_sub(u128::from(EPOCH_2026) * 1000)
        / 100;
    ds.min(u128::from(u32::MAX)) as u32
}

/// Per cache directory.
#[derive(Debug)]
pub(super) struct DirState {
    /// Bytes on disk: segment files (whole) and one-file pages, and the
    /// bytes reserved for pages being written (`writing`), which are not
    /// on disk yet.
    pub(super) used: u64,
    /// Of `used`, the bytes of pending pages: reserved, not written yet.
    pub(super) writing: u64,
    /// Pages indexed in this directory (pending ones included).
    pub(super) pages: u64,
    pub(super) policy: Policy,
    pub(super) segments: Segments,
    /// Journal records not yet written ([`super::journal`]).
    pub(super) log: Vec<u8>,
    /// Names records not yet written.
    pub(super) names: Vec<u8>,
    /// The disk filled up (ENOSPC) when this many bytes were used, at that
    /// moment: the directory's limit until [`DISK_FULL_FOR`] has passed
    /// (then the configured capacity is tried again), so that eviction makes
    /// room on a disk smaller than the capacity instead of every new page
    /// failing.
    pub(super) disk_full: Option<(u64, std::time::Instant)>,
}

/// How long a directory's disk-full limit holds.
pub(super) const DISK_FULL_FOR: std::time::Duration = std::time::Duration::from_secs(60);

impl DirState {
    /// Bytes of pages that are on disk: `used` less what writes in flight
    /// reserved (what `du` finds, give or take the blocks of those writes
    /// already landed).
    pub(super) fn on_disk(&self) -> u64 {
        self.used.saturating_sub(self.writing)
    }

    /// The bytes this directory may hold now: `capacity`, or less while its
    /// disk is full.
    pub(super) fn limit(&mut self, capacity: u64) -> u64 {
        match self.disk_full {
            Some((at, when)) if when.elapsed() < DISK_FULL_FOR => capacity.min(at),
            Some(_) => {
                self.disk_full = None;
                capacity
            }
            None => capacity,
        }
    }
}

impl DirState {
    /// An empty directory evicting by `policy`.
    pub(super) fn new(policy: Policy, segments: Segments) -> Self {
        DirState {
            used: 0,
            writing: 0,
            pages: 0,
            policy,
            segments,
            log: Vec::new(),
            names: Vec::new(),
            disk_full: None,
        }
    }
}

/// The pages, their accounting, and the keeping rules in force.
#[derive(Debug)]
pub(super) struct Index {
    slots: Vec<Slot>,
    free_head: u32,
    table: HashTable<u32>,
    /// URL hash -> one past the highest page index cached, for URLs with a
    /// page past index 0 (an upper bound; rebuilt by [`Index::rebuild_multi`]).
    multi: HashMap<u64, u32>,
    pub(super) dirs: Vec<DirState>,
    pub(super) mount_used: Vec<u64>,
    pub(super) pinned_bytes: u64,
    live: usize,
    pub(super) rules: Rules,
    /// Numbers the writes of page files (see [`Index::next_write`]).
    writes: u32,
}

/// The slots as [`Nodes`] for the policies.
struct SlotNodes<'a>(&'a mut [Slot]);

impl Nodes for SlotNodes<'_> {
    fn prev(&self, i: u32) -> u32 {
        self.0[i as usize].prev
    }
    fn next(&self, i: u32) -> u32 {
        self.0[i as usize].next
    }
    fn set_links(&mut self, i: u32, prev: u32, next: u32) {
        let s = &mut self.0[i as usize];
        s.prev = prev;
        s.next = next;
    }
    fn queue(&self, i: u32) -> u8 {
        ((self.0[i as usize].flags >> QUEUE_SHIFT) & 3) as u8
    }
    fn set_queue(&mut self, i: u32, q: u8) {
        let s = &mut self.0[i as usize];
        s.flags = (s.flags & !(3 << QUEUE_SHIFT)) | (u32::from(q & 3) << QUEUE_SHIFT);
    }
    fn freq(&self, i: u32) -> u8 {
        ((self.0[i as usize].flags >> FREQ_SHIFT) & 3) as u8
    }
    fn set_freq(&mut self, i: u32, f: u8) {
        let s = &mut self.0[i as usize];
        s.flags = (s.flags & !(3 << FREQ_SHIFT)) | (u32::from(f & 3) << FREQ_SHIFT);
    }
    fn size(&self, i: u32) -> u64 {
        u64::from(self.0[i as usize].len)
    }
    fn ghost_key(&self, i: u32) -> u64 {
        let s = &self.0[i as usize];
        s.key().table_hash() ^ u64::from(s.version_hash)
    }
}

impl Index {
    /// An empty index over `dirs` and `mounts` mount quotas.
    pub(super) fn new(dirs: Vec<DirState>, mounts: usize, rules: Rules) -> Self {
        Index {
            slots: Vec::new(),
            free_head: NIL,
            table: HashTable::new(),
            multi: HashMap::new(),
            dirs,
            mount_used: vec![0; mounts],
            pinned_bytes: 0,
            live: 0,
            rules,
            writes: 0,
        }
    }

    /// A number for a write of a page file, kept in its slot's offset
    /// field (unused for page files) so the write can tell its own pending
    /// slot from a later write's of the same page. It wraps after 2^32
    /// writes; two writes of one page that far apart are never both
    /// pending.
    pub(super) fn next_write(&mut self) -> u32 {
        self.writes = self.writes.wrapping_add(1);
        self.writes
    }

    /// Pages indexed (pending ones included).
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Room for `n` more pages: a replay knows how many records come, so
    /// the slots and the table grow once instead of doubling (and
    /// rehashing) all the way.
    pub(super) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        let slots = &self.slots;
        self.table
            .reserve(n, |&j| slots[j as usize].key().table_hash());
    }

    /// Give back what [`Index::reserve`] took beyond the pages kept.
    pub(super) fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        let slots = &self.slots;
        self.table
            .shrink_to_fit(|&j| slots[j as usize].key().table_hash());
    }

    /// Heap bytes of the index (slots, table, URL map, ghost filters).
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.table.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.multi.capacity() * 16
            + self
                .dirs
                .iter()
                .map(|d| d.policy.heap_bytes())
                .sum::<usize>()
    }

    pub(super) fn slot(&self, i: u32) -> &Slot {
        &self.slots[i as usize]
    }

    pub(super) fn slot_mut(&mut self, i: u32) -> &mut Slot {
        &mut self.slots[i as usize]
    }

    /// The slot of `key`, if indexed.
    pub(super) fn find(&self, key: SlotKey) -> Option<u32> {
        let slots = &self.slots;
        self.table
            .find(key.table_hash(), |&i| slots[i as usize].key() == key)
            .copied()
    }

    /// Whether any page of the URL hashed `url_hash` is indexed.
    pub(super) fn has_url(&self, url_hash: u64) -> bool {
        self.pages_of(url_hash).next().is_some()
    }

    /// The slots of the pages of the URL hashed `url_hash`.
    pub(super) fn pages_of(&self, url_hash: u64) -> impl Iterator<Item = u32> + '_ {
        let end = self.multi.get(&url_hash).copied().unwrap_or(1);
        (0..end).filter_map(move |index| self.find(SlotKey { url_hash, index }))
    }

    /// Every used slot number.
    pub(super) fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.free())
            .map(|(i, _)| i as u32)
    }

    /// Index a page; its key must not be indexed. Returns its slot.
    pub(super) fn insert(&mut self, p: NewPage) -> u32 {
        debug_assert!(self.find(p.key).is_none());
        let mut flags = (p.dir as u32) & DIR_MASK;
        if p.pending {
            flags |= PENDING;
        }
        if p.pinned {
            flags |= PINNED;
        }
        let mut slot = Slot {
            hash_lo: p.key.url_hash as u32,
            hash_hi: (p.key.url_hash >> 32) as u32,
            index: p.key.index,
            version_hash: p.version_hash,
            seg: p.seg,
            off: p.off,
            len: p.len,
            created: p.created,
            prev: NIL,
            next: NIL,
            flags,
        };
        slot.set_mount(p.mount);
        slot.set_ttl_class(p.ttl_class);
        let i = if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.slots[i as usize].next;
            self.slots[i as usize] = slot;
            i
        } else {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        let slots = &self.slots;
        self.table.insert_unique(p.key.table_hash(), i, |&j| {
            slots[j as usize].key().table_hash()
        });
        if p.key.index > 0 {
            let e = self.multi.entry(p.key.url_hash).or_insert(1);
            *e = (*e).max(p.key.index + 1);
        }
        let len = u64::from(p.len);
        let d = &mut self.dirs[p.dir];
        d.pages += 1;
        if p.pending {
            d.writing += len;
        }
        if p.seg == LARGE {
            d.used += len;
        } else {
            d.segments.add_live(p.seg, p.len, p.pending);
        }
        if p.pinned {
            self.pinned_bytes += len;
        }
        if let Some(m) = p.mount.filter(|m| *m < self.mount_used.len()) {
            self.mount_used[m] += len;
        }
        self.live += 1;
        if !p.pending && !p.pinned {
            let (dirs, slots) = (&mut self.dirs, &mut self.slots);
            dirs[p.dir].policy.insert(&mut SlotNodes(slots), i);
        }
        i
    }

    /// A read of slot `i`, for its policy.
    pub(super) fn touch(&mut self, i: u32) {
        let dir = self.slots[i as usize].dir();
        let (dirs, slots) = (&mut self.dirs, &mut self.slots);
        dirs[dir].policy.hit(&mut SlotNodes(slots), i);
    }

    /// A pending page was written: it becomes visible (and evictable unless
    /// pinned).
    pub(super) fn settle(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        if !s.pending() {
            return;
        }
        s.flags &= !PENDING;
        let (dir, seg, pinned) = (s.dir(), s.seg, s.pinned());
        self.dirs[dir].writing -= u64::from(s.len);
        if seg != LARGE {
            self.dirs[dir].segments.settle(seg);
        }
        if !pinned {
            let (dirs, slots) = (&mut self.dirs, &mut self.slots);
            dirs[dir].policy.insert(&mut SlotNodes(slots), i);
        }
    }

    /// Pin or unpin a page; returns its bytes when that changed anything.
    pub(super) fn set_pinned(&mut self, i: u32, pinned: bool) -> u64 {
        let s = &mut self.slots[i as usize];
        if s.pinned() == pinned {
            return 0;
        }
        let (dir, len, pending) = (s.dir(), u64::from(s.len), s.pending());
        let (dirs, slots) = (&mut self.dirs, &mut self.slots);
        if pinned {
            slots[i as usize].flags |= PINNED;
            self.pinned_bytes += len;
            dirs[dir].policy.remove(&mut SlotNodes(slots), i);
        } else {
            slots[i as usize].flags &= !PINNED;
            self.pinned_bytes -= len;
            if !pending {
                dirs[dir].policy.insert(&mut SlotNodes(slots), i);
            }
        }
        len
    }

    /// Move slot `i` to another place in its directory (compaction).
    pub(super) fn relocate(&mut self, i: u32, seg: u32, off: u32) {
        let s = self.slots[i as usize];
        let d = &mut self.dirs[s.dir()];
        d.segments.remove_live(s.seg, s.len, false);
        d.segments.add_live(seg, s.len, false);
        let s = &mut self.slots[i as usize];
        s.seg = seg;
        s.off = off;
    }

    /// Remove slot `i`; returns what it was. A one-file page's bytes leave
    /// the directory's use here (the caller deletes the file); a packed
    /// record's become dead bytes of its segment.
    pub(super) fn remove(&mut self, i: u32) -> Slot {
        let s = self.slots[i as usize];
        debug_assert!(!s.free());
        {
            let (dirs, slots) = (&mut self.dirs, &mut self.slots);
            dirs[s.dir()].policy.remove(&mut SlotNodes(slots), i);
        }
        let key = s.key();
        if let Ok(e) = self.table.find_entry(key.table_hash(), |&j| j == i) {
            e.remove();
        }
        let len = u64::from(s.len);
        let d = &mut self.dirs[s.dir()];
        d.pages -= 1;
        if s.pending() {
            d.writing -= len;
        }
        if s.seg == LARGE {
            d.used -= len;
        } else {
            d.segments.remove_live(s.seg, s.len, s.pending());
        }
        if s.pinned() {
            self.pinned_bytes -= len;
        }
        if let Some(m) = s.mount().filter(|m| *m < self.mount_used.len()) {
            self.mount_used[m] -= len;
        }
        self.live -= 1;
        let slot = &mut self.slots[i as usize];
        slot.flags = FREE;
        slot.next = self.free_head;
        self.free_head = i;
        s
    }

    /// A policy victim of directory `dir` among the slots `eligible`
    /// accepts.
    pub(super) fn victim(&mut self, dir: usize, eligible: &dyn Fn(&Slot) -> bool) -> Option<u32> {
        let (dirs, slots) = (&mut self.dirs, &mut self.slots);
        dirs[dir]
            .policy
            .victim(&mut SlotNodes(slots), &|n: &SlotNodes<'_>, i| {
                eligible(&n.0[i as usize])
            })
    }

    /// Forget the page-index bounds of URLs that have no pages past the
    /// first any more (at checkpoints).
    pub(super) fn rebuild_multi(&mut self) {
        let mut multi: HashMap<u64, u32> = HashMap::new();
        for s in self.slots.iter().filter(|s| !s.free() && s.index > 0) {
            let e = multi.entry(s.key().url_hash).or_insert(1);
            *e = (*e).max(s.index + 1);
        }
        multi.shrink_to_fit();
        self.multi = multi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_44_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 44);
    }
}

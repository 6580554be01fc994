//! Page math and range planning.
//!
//! Workers cache files in fixed-size pages (1 MiB by default; page `i` covers
//! `[i*P, min((i+1)*P, size))`). The client plans every read in terms of
//! those pages:
//!
//! - [`split_aligned`] cuts one large read into chunks that can be fetched in
//!   parallel. Every boundary *between* chunks is a multiple of the page
//!   size, so no page is requested by two chunks (a worker reads each page
//!   from the UFS at most once, and no two requests race on one page). The
//!   chunk length is `max_chunk` rounded down to whole pages, at least one
//!   page; the first and last chunk may be shorter because the read itself
//!   need not be aligned.
//! - [`coalesce`] is the other direction, for many small reads (Parquet
//!   column chunks, `cat_ranges`): ranges whose gap is at most `max_gap` are
//!   merged into one fetch, trading a few unneeded bytes for fewer round
//!   trips, and each input remembers which merged range holds it so the
//!   caller can slice its bytes back out without copying.
//!
//! All ranges are half-open byte ranges `[start, end)` of absolute file
//! offsets. An empty or inverted range plans to nothing.

use std::ops::Range;

pub use crate::protocol::DEFAULT_PAGE_SIZE;

/// The indexes of the pages touching `[start, end)`; empty when the range is.
///
/// `page_size` must be positive.
pub fn page_range(start: u64, end: u64, page_size: u64) -> Range<u64> {
    assert!(page_size > 0, "page size must be positive");
    if start >= end {
        let p = start / page_size;
        return p..p;
    }
    start / page_size..end.div_ceil(page_size)
}

/// Split `[start, end)` into chunks for parallel fetch.
///
/// Chunk boundaries inside the range are aligned to `page_size`; each chunk
/// is at most `max_chunk` bytes rounded down to whole pages (at least one
/// page). The chunks are in order, do not overlap and cover the range
/// exactly. An empty range gives no chunks.
pub fn split_aligned(start: u64, end: u64, page_size: u64, max_chunk: u64) -> Vec<Range<u64>> {
    assert!(page_size > 0, "page size must be positive");
    if start >= end {
        return Vec::new();
    }
    let chunk = (max_chunk / page_size).max(1) * page_size;
    let mut out = Vec::with_capacity(((end - start) / chunk + 2) as usize);
    // Boundaries at aligned_start + k*chunk: all page-aligned, and the first
    // chunk (which starts inside a page) is still at most `chunk` long.
    let aligned_start = start - start % page_size;
    let mut boundary = aligned_start;
    let mut cur = start;
    while cur < end {
        boundary = boundary.saturating_add(chunk);
        let next = boundary.min(end);
        out.push(cur..next);
        cur = next;
    }
    out
}

/// Coalesce `ranges` (in any order, overlapping allowed) into fetch ranges:
/// two ranges are merged when the gap between them is at most `max_gap`
/// (overlapping and touching ranges always merge).
///
/// Returns the merged ranges, sorted and disjoint, with gaps larger than
/// `max_gap` between them, and for each input range (in input order) the
/// index of the merged range that contains it. Empty input ranges are
/// assigned like any other range (an isolated one yields an empty merged
/// range); callers that do not want to fetch nothing should drop them first.
pub fn coalesce(ranges: &[Range<u64>], max_gap: u64) -> (Vec<Range<u64>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
    let mut merged: Vec<Range<u64>> = Vec::new();
    let mut owner = vec![0usize; ranges.len()];
    for i in order {
        let r = ranges[i].start..ranges[i].end.max(ranges[i].start);
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(max_gap) => {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
        owner[i] = merged.len() - 1;
    }
    (merged, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: u64 = 16;

    #[test]
    fn page_ranges() {
        assert_eq!(page_range(0, 1, P), 0..1);
        assert_eq!(page_range(0, 16, P), 0..1);
        assert_eq!(page_range(15, 17, P), 0..2);
        assert_eq!(page_range(16, 48, P), 1..3);
        assert!(page_range(5, 5, P).is_empty());
        assert!(page_range(9, 3, P).is_empty());
    }

    #[test]
    fn split_examples() {
        assert_eq!(split_aligned(0, 40, P, 32), vec![0..32, 32..40]);
        assert_eq!(split_aligned(5, 40, P, 32), vec![5..32, 32..40]);
        // max_chunk below one page still moves a page at a time.
        assert_eq!(split_aligned(5, 40, P, 3), vec![5..16, 16..32, 32..40]);
        // Rounded down to whole pages.
        assert_eq!(split_aligned(0, 64, P, 40), vec![0..32, 32..64]);
        assert!(split_aligned(7, 7, P, 32).is_empty());
    }

    #[test]
    fn coalesce_examples() {
        let (m, idx) = coalesce(&[50..60, 0..10, 12..20, 100..101], 2);
        assert_eq!(m, vec![0..20, 50..60, 100..101]);
        assert_eq!(idx, vec![1, 0, 0, 2]);
        let (m, idx) = coalesce(&[0..10, 5..8, 9..30], 0);
        assert_eq!(m, vec![0..30]);
        assert_eq!(idx, vec![0, 0, 0]);
        let (m, idx) = coalesce(&[0..10, 11..12], 0);
        assert_eq!(m, vec![0..10, 11..12]);
        assert_eq!(idx, vec![0, 1]);
        assert_eq!(coalesce(&[], 5), (vec![], vec![]));
    }

    fn buffer(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed ^ (i >> 8) as u8)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn split_reassembles_source(
            len in 0usize..4000,
            a in 0usize..4200,
            b in 0usize..4200,
            page in 1u64..300,
            max_chunk in 0u64..2000,
            seed in any::<u8>(),
        ) {
            let src = buffer(len, seed);
            let (start, end) = (a.min(b).min(len) as u64, a.max(b).min(len) as u64);
            let chunks = split_aligned(start, end, page, max_chunk);
            let limit = (max_chunk / page).max(1) * page;
            let mut out = Vec::new();
            let mut cur = start;
            for (i, c) in chunks.iter().enumerate() {
                prop_assert_eq!(c.start, cur, "chunks must be contiguous");
                prop_assert!(c.start < c.end, "no empty chunks");
                prop_assert!(c.end - c.start <= limit);
                if i > 0 {
                    prop_assert_eq!(c.start % page, 0, "inner boundaries aligned");
                }
                out.extend_from_slice(&src[c.start as usize..c.end as usize]);
                cur = c.end;
            }
            prop_assert_eq!(cur, end);
            prop_assert_eq!(&out[..], &src[start as usize..end as usize]);
            // Each page is requested by exactly one chunk.
            let mut pages: Vec<u64> = chunks.iter().flat_map(|c| page_range(c.start, c.end, page)).collect();
            let n = pages.len();
            pages.dedup();
            prop_assert_eq!(pages.len(), n);
            prop_assert_eq!(n as u64, page_range(start, end, page).count() as u64);
        }

        #[test]
        fn coalesce_slices_back_source(
            len in 1usize..5000,
            raw in proptest::collection::vec((0usize..5000, 0usize..400), 0..40),
            gap in 0u64..300,
            seed in any::<u8>(),
        ) {
            let src = buffer(len, seed);
            let ranges: Vec<Range<u64>> = raw
                .iter()
                .map(|&(s, l)| {
                    let s = s.min(len);
                    s as u64..(s + l).min(len) as u64
                })
                .collect();
            let (merged, owner) = coalesce(&ranges, gap);
            prop_assert_eq!(owner.len(), ranges.len());
            for w in merged.windows(2) {
                prop_assert!(w[0].end + gap < w[1].start, "merged ranges disjoint with big gaps");
            }
            // Fetch each merged range once, slice inputs back out.
            let fetched: Vec<&[u8]> = merged.iter().map(|m| &src[m.start as usize..m.end as usize]).collect();
            for (r, &o) in ranges.iter().zip(&owner) {
                let m = &merged[o];
                prop_assert!(m.start <= r.start && r.end <= m.end);
                let got = &fetched[o][(r.start - m.start) as usize..(r.end - m.start) as usize];
                prop_assert_eq!(got, &src[r.start as usize..r.end as usize]);
            }
            // Every merged range is needed: each holds at least one input.
            for i in 0..merged.len() {
                prop_assert!(owner.contains(&i));
            }
        }
    }
}

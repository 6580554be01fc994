//! Worker metrics, rendered in the Prometheus text exposition format.
//!
//! Plain atomics (no registry crate): counters only grow, gauges are read
//! from the page store and the metadata cache when `/metrics` is rendered. Request counts and
//! latencies are kept per (endpoint, status) in a small locked map; the
//! latency histogram uses fixed buckets from 100 µs to 10 s.
//! Every metric is documented in `docs/metrics.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Kinds of UFS request, the `op` label of `alluxiofs_ufs_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UfsOp {
    /// A (ranged) data GET.
    Get,
    /// A metadata HEAD.
    Head,
    /// A listing.
    List,
}

impl UfsOp {
    fn index(self) -> usize {
        match self {
            UfsOp::Get => 0,
            UfsOp::Head => 1,
            UfsOp::List => 2,
        }
    }
    const ALL: [(UfsOp, &'static str); 3] = [
        (UfsOp::Get, "get"),
        (UfsOp::Head, "head"),
        (UfsOp::List, "list"),
    ];
}

/// Upper bounds (seconds) of the request latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Why pages left the disk cache: the `reason` label of
/// `alluxiofs_evictions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// To make room within a directory's capacity.
    Capacity,
    /// To stay within a mount's capacity quota.
    MountQuota,
    /// Older than the TTL of its path.
    Ttl,
    /// Freed on request (`/v1/free`).
    Free,
    /// Invalidated on request (`/v1/invalidate`).
    Invalidate,
    /// A page of an older version of the object.
    Stale,
    /// Failed verification or was unreadable.
    Corrupt,
}

impl EvictReason {
    /// Every reason with its label.
    pub const ALL: [(EvictReason, &'static str); 7] = [
        (EvictReason::Capacity, "capacity"),
        (EvictReason::MountQuota, "mount_quota"),
        (EvictReason::Ttl, "ttl"),
        (EvictReason::Free, "free"),
        (EvictReason::Invalidate, "invalidate"),
        (EvictReason::Stale, "stale"),
        (EvictReason::Corrupt, "corrupt"),
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Usage of one cache directory, sampled at render time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirGauge {
    /// The directory.
    pub path: String,
    /// Bytes used (headers and data).
    pub used_bytes: u64,
    /// Its capacity.
    pub capacity_bytes: u64,
}

/// Page store gauges, sampled at render time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Bytes used on disk (headers + data), all directories.
    pub used_bytes: u64,
    /// Total disk capacity, all directories.
    pub capacity_bytes: u64,
    /// Pages on disk.
    pub pages: u64,
    /// Bytes held by the memory tier.
    pub memory_used_bytes: u64,
    /// Capacity of the memory tier.
    pub memory_capacity_bytes: u64,
    /// Pages held by the memory tier.
    pub memory_pages: u64,
    /// Bytes of pinned pages on disk.
    pub pinned_bytes: u64,
    /// The pin quota in bytes.
    pub pin_quota_bytes: u64,
    /// Heap bytes of the page index (slots, table, eviction state).
    pub index_memory_bytes: u64,
    /// Bytes of the persisted page index (journal and names files).
    pub index_disk_bytes: u64,
    /// Per directory usage.
    pub dirs: Vec<DirGauge>,
}

/// Metadata cache gauges ([`crate::meta::MetaCache::gauges`]), sampled at
/// render time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaGauges {
    /// Bytes charged for the entries held (an estimate of their heap use).
    pub used_bytes: u64,
    /// Entries held, all maps.
    pub entries: u64,
    /// The budget (`metadata_capacity`).
    pub capacity_bytes: u64,
}

/// All counters of one worker.
#[derive(Debug, Default)]
pub struct Metrics {
    ufs_requests: [AtomicU64; 3],
    ufs_errors: [AtomicU64; 3],
    /// Bytes read from the UFS by data GETs.
    pub ufs_bytes: AtomicU64,
    /// Pages served from the cache (disk or memory).
    pub cache_hits: AtomicU64,
    /// Pages served from the memory tier (a subset of `cache_hits`).
    pub memory_hits: AtomicU64,
    /// Pages that had to be read from the UFS.
    pub cache_misses: AtomicU64,
    /// Pages evicted to make room (capacity and mount quota).
    pub evictions: AtomicU64,
    evictions_by_reason: [AtomicU64; 7],
    /// Pages of pinned paths not cached because the pin quota was full.
    pub pin_refused: AtomicU64,
    /// Page files found corrupt (and deleted).
    pub corrupt_pages: AtomicU64,
    /// Page writes that failed (the page was still served).
    pub page_write_errors: AtomicU64,
    /// Segments whose live records were copied out to reclaim dead bytes.
    pub segments_compacted: AtomicU64,
    /// Body bytes of range and page answers.
    pub bytes_served: AtomicU64,
    /// Requests the S3 endpoint answered by an operation of its own.
    pub s3_requests: AtomicU64,
    /// Of those, the ones answered with an S3 error.
    pub s3_errors: AtomicU64,
    /// Object bytes the S3 endpoint sent.
    pub s3_bytes_out: AtomicU64,
    /// Object bytes the S3 endpoint received (PutObject, UploadPart).
    pub s3_bytes_in: AtomicU64,
    /// S3 reads streamed from the path's owner worker.
    pub s3_forwarded: AtomicU64,
    /// S3 reads answered with a redirect to the owner.
    pub s3_redirected: AtomicU64,
    /// S3 reads of another worker's path served here (owner unreachable).
    pub s3_owner_failovers: AtomicU64,
    /// UFS outages begun (a store that could not be reached, see
    /// [`crate::outage`]).
    pub ufs_outages: AtomicU64,
    /// UFS multipart uploads left open by an earlier run (a killed
    /// worker) and aborted at start ([`crate::ufs_uploads`]).
    pub ufs_uploads_aborted: AtomicU64,
    /// Requests answered at once with `ufs_unreachable` during an outage.
    pub ufs_fail_fast: AtomicU64,
    /// Lookups answered with the last verified metadata because the UFS
    /// was unreachable (`stale_if_error`).
    pub ufs_stale_served: AtomicU64,
    /// Metadata lookups answered from the metadata cache.
    pub metadata_hits: AtomicU64,
    /// Metadata lookups that asked the UFS.
    pub metadata_misses: AtomicU64,
    /// Requests that joined a UFS fetch already in flight for the same page.
    pub coalesced_pages: AtomicU64,
    /// Same-node read requests answered on the local socket.
    pub local_requests: AtomicU64,
    /// Page file descriptors passed to same-node readers.
    pub local_pages: AtomicU64,
    /// Data bytes of the pages passed to same-node readers.
    pub local_bytes: AtomicU64,
    /// Hellos on the local socket refused (uid not allowed, no token).
    pub local_refused: AtomicU64,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    /// A fresh set of counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one UFS request of kind `op`.
    pub fn ufs_request(&self, op: UfsOp) {
        self.ufs_requests[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one failed UFS request of kind `op`.
    pub fn ufs_error(&self, op: UfsOp) {
        self.ufs_errors[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// UFS requests of kind `op` so far.
    pub fn ufs_requests(&self, op: UfsOp) -> u64 {
        self.ufs_requests[op.index()].load(Ordering::Relaxed)
    }

    /// Failed UFS requests of kind `op` so far.
    pub fn ufs_errors(&self, op: UfsOp) -> u64 {
        self.ufs_errors[op.index()].load(Ordering::Relaxed)
    }

    /// UFS requests of all kinds so far.
    pub fn ufs_requests_total(&self) -> u64 {
        UfsOp::ALL
            .iter()
            .map(|(op, _)| self.ufs_requests(*op))
            .sum()
    }

    /// Read a plain counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Add to a plain counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Count `n` pages that left the disk cache for `reason`.
    pub fn evicted(&self, reason: EvictReason, n: u64) {
        if n == 0 {
            return;
        }
        self.evictions_by_reason[reason.index()].fetch_add(n, Ordering::Relaxed);
        if matches!(reason, EvictReason::Capacity | EvictReason::MountQuota) {
            self.evictions.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Pages that left the disk cache for `reason` so far.
    pub fn evictions(&self, reason: EvictReason) -> u64 {
        self.evictions_by_reason[reason.index()].load(Ordering::Relaxed)
    }

    /// Record one finished HTTP request.
    pub fn request(&self, endpoint: &str, status: u16, elapsed: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((endpoint.to_string(), status)).or_insert(0) += 1;
        }
        if let Ok(mut map) = self.latency.lock() {
            let h = map.entry(endpoint.to_string()).or_default();
            let secs = elapsed.as_secs_f64();
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// Requests answered for `endpoint` with `status` so far.
    pub fn requests(&self, endpoint: &str, status: u16) -> u64 {
        self.requests
            .lock()
            .ok()
            .and_then(|m| m.get(&(endpoint.to_string(), status)).copied())
            .unwrap_or(0)
    }

    /// Render every metric in the Prometheus text format.
    pub fn render(&self, gauges: StoreGauges, meta: MetaGauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "alluxiofs_ufs_bytes_total",
            "Bytes read from the UFS by data requests.",
            Self::get(&self.ufs_bytes),
        );
        counter(
            "alluxiofs_cache_hits_total",
            "Pages served from the cache (disk or memory).",
            Self::get(&self.cache_hits),
        );
        counter(
            "alluxiofs_cache_memory_hits_total",
            "Pages served from the memory tier.",
            Self::get(&self.memory_hits),
        );
        counter(
            "alluxiofs_cache_misses_total",
            "Pages read through from the UFS.",
            Self::get(&self.cache_misses),
        );
        counter(
            "alluxiofs_cache_coalesced_total",
            "Page misses that joined a UFS fetch already in flight.",
            Self::get(&self.coalesced_pages),
        );
        counter(
            "alluxiofs_cache_evictions_total",
            "Pages evicted from disk to make room.",
            Self::get(&self.evictions),
        );
        counter(
            "alluxiofs_cache_pin_refused_total",
            "Pages of pinned paths served but not cached: the pin quota was full.",
            Self::get(&self.pin_refused),
        );
        counter(
            "alluxiofs_cache_corrupt_pages_total",
            "Page files that failed verification and were deleted.",
            Self::get(&self.corrupt_pages),
        );
        counter(
            "alluxiofs_cache_write_errors_total",
            "Page writes to disk that failed.",
            Self::get(&self.page_write_errors),
        );
        counter(
            "alluxiofs_segments_compacted_total",
            "Segments whose live records were copied out to reclaim dead bytes.",
            Self::get(&self.segments_compacted),
        );
        counter(
            "alluxiofs_bytes_served_total",
            "Body bytes of range and page answers, and data bytes of pages passed to same-node readers.",
            Self::get(&self.bytes_served),
        );
        counter(
            "alluxiofs_s3_requests_total",
            "Requests the S3 endpoint answered by an operation (errors included).",
            Self::get(&self.s3_requests),
        );
        counter(
            "alluxiofs_s3_errors_total",
            "S3 requests answered with an S3 error.",
            Self::get(&self.s3_errors),
        );
        counter(
            "alluxiofs_s3_bytes_out_total",
            "Object bytes sent by the S3 endpoint.",
            Self::get(&self.s3_bytes_out),
        );
        counter(
            "alluxiofs_s3_bytes_in_total",
            "Object bytes received by the S3 endpoint (PutObject, UploadPart).",
            Self::get(&self.s3_bytes_in),
        );
        counter(
            "alluxiofs_s3_forwarded_total",
            "S3 reads streamed from the owner worker of the path.",
            Self::get(&self.s3_forwarded),
        );
        counter(
            "alluxiofs_s3_redirected_total",
            "S3 reads answered with a 307 redirect to the owner worker.",
            Self::get(&self.s3_redirected),
        );
        counter(
            "alluxiofs_s3_owner_failovers_total",
            "S3 reads of another worker's path served here because the owner did not answer.",
            Self::get(&self.s3_owner_failovers),
        );
        counter(
            "alluxiofs_ufs_outages_total",
            "UFS outages begun: a store that could not be reached (refused, reset, timed out, 5xx or 429 after retries).",
            Self::get(&self.ufs_outages),
        );
        counter(
            "alluxiofs_ufs_uploads_aborted_total",
            "UFS multipart uploads an earlier run left unfinished (a killed worker), aborted at start.",
            Self::get(&self.ufs_uploads_aborted),
        );
        counter(
            "alluxiofs_ufs_fail_fast_total",
            "UFS requests not sent during an outage, answered at once with ufs_unreachable.",
            Self::get(&self.ufs_fail_fast),
        );
        counter(
            "alluxiofs_ufs_stale_served_total",
            "Metadata lookups answered with the last verified version while the UFS was unreachable (stale_if_error).",
            Self::get(&self.ufs_stale_served),
        );
        counter(
            "alluxiofs_local_requests_total",
            "Same-node read requests answered on the local socket.",
            Self::get(&self.local_requests),
        );
        counter(
            "alluxiofs_local_pages_total",
            "Page file descriptors passed to same-node readers.",
            Self::get(&self.local_pages),
        );
        counter(
            "alluxiofs_local_bytes_total",
            "Data bytes of the pages passed to same-node readers.",
            Self::get(&self.local_bytes),
        );
        counter(
            "alluxiofs_local_refused_total",
            "Connections to the local socket refused (uid not allowed and no valid token).",
            Self::get(&self.local_refused),
        );
        counter(
            "alluxiofs_metadata_hits_total",
            "Metadata lookups answered from the metadata cache.",
            Self::get(&self.metadata_hits),
        );
        counter(
            "alluxiofs_metadata_misses_total",
            "Metadata lookups that asked the UFS.",
            Self::get(&self.metadata_misses),
        );
        let mut labelled = |name: &str, help: &str, values: &[AtomicU64; 3]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (op, label) in UfsOp::ALL {
                let v = values[op.index()].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{op=\"{label}\"}} {v}");
            }
        };
        labelled(
            "alluxiofs_ufs_requests_total",
            "Requests sent to the UFS, by operation.",
            &self.ufs_requests,
        );
        labelled(
            "alluxiofs_ufs_errors_total",
            "UFS requests that failed, by operation.",
            &self.ufs_errors,
        );
        let name = "alluxiofs_evictions_total";
        let _ = writeln!(
            out,
            "# HELP {name} Pages removed from the disk cache, by reason.\n# TYPE {name} counter"
        );
        for (reason, label) in EvictReason::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{label}\"}} {}",
                self.evictions(reason)
            );
        }
        for (name, help, pick) in [
            (
                "alluxiofs_cache_dir_used_bytes",
                "Bytes used by pages in one cache directory.",
                (|d: &DirGauge| d.used_bytes) as fn(&DirGauge) -> u64,
            ),
            (
                "alluxiofs_cache_dir_capacity_bytes",
                "Capacity of one cache directory.",
                |d: &DirGauge| d.capacity_bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for d in &gauges.dirs {
                let dir = d.path.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(out, "{name}{{dir=\"{dir}\"}} {}", pick(d));
            }
        }
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "alluxiofs_cache_used_bytes",
            "Bytes used by pages on disk (headers included).",
            gauges.used_bytes,
        );
        gauge(
            "alluxiofs_cache_capacity_bytes",
            "Disk capacity of all cache directories.",
            gauges.capacity_bytes,
        );
        gauge("alluxiofs_cache_pages", "Pages on disk.", gauges.pages);
        gauge(
            "alluxiofs_cache_memory_used_bytes",
            "Bytes held by the memory tier.",
            gauges.memory_used_bytes,
        );
        gauge(
            "alluxiofs_cache_memory_capacity_bytes",
            "Capacity of the memory tier.",
            gauges.memory_capacity_bytes,
        );
        gauge(
            "alluxiofs_cache_memory_pages",
            "Pages held by the memory tier.",
            gauges.memory_pages,
        );
        gauge(
            "alluxiofs_pinned_bytes",
            "Bytes of pinned pages on disk.",
            gauges.pinned_bytes,
        );
        gauge(
            "alluxiofs_pin_quota_bytes",
            "Most bytes pinned pages may use.",
            gauges.pin_quota_bytes,
        );
        gauge(
            "alluxiofs_index_memory_bytes",
            "Heap bytes of the page index (slots, table, eviction state).",
            gauges.index_memory_bytes,
        );
        gauge(
            "alluxiofs_index_disk_bytes",
            "Bytes of the persisted page index (journal and URL names).",
            gauges.index_disk_bytes,
        );
        gauge(
            "alluxiofs_metadata_bytes",
            "Estimated heap bytes of the metadata cache's entries.",
            meta.used_bytes,
        );
        gauge(
            "alluxiofs_metadata_entries",
            "Entries of the metadata cache (infos, listings, versions seen, path ids).",
            meta.entries,
        );
        gauge(
            "alluxiofs_metadata_capacity_bytes",
            "Most bytes the metadata cache may hold (metadata_capacity).",
            meta.capacity_bytes,
        );
        let _ = writeln!(
            out,
            "# HELP alluxiofs_requests_total HTTP requests answered, by endpoint and status.\n\
             # TYPE alluxiofs_requests_total counter"
        );
        if let Ok(map) = self.requests.lock() {
            for ((endpoint, status), v) in map.iter() {
                let _ = writeln!(
                    out,
                    "alluxiofs_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {v}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP alluxiofs_request_duration_seconds HTTP request latency (to the response head), by endpoint.\n\
             # TYPE alluxiofs_request_duration_seconds histogram"
        );
        if let Ok(map) = self.latency.lock() {
            for (endpoint, h) in map.iter() {
                let name = "alluxiofs_request_duration_seconds";
                for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{endpoint=\"{endpoint}\",le=\"{le}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}\n\
                     {name}_sum{{endpoint=\"{endpoint}\"}} {}\n\
                     {name}_count{{endpoint=\"{endpoint}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::new();
        m.ufs_request(UfsOp::Get);
        m.ufs_request(UfsOp::Get);
        m.ufs_request(UfsOp::Head);
        Metrics::add(&m.cache_hits, 5);
        m.request("/v1/range", 200, Duration::from_millis(3));
        m.request("/v1/range", 200, Duration::from_secs(20));
        m.evicted(EvictReason::Ttl, 2);
        m.evicted(EvictReason::Capacity, 3);
        let text = m.render(
            StoreGauges {
                used_bytes: 7,
                capacity_bytes: 9,
                pinned_bytes: 4,
                dirs: vec![DirGauge {
                    path: "/c/\"x\"".into(),
                    used_bytes: 7,
                    capacity_bytes: 9,
                }],
                ..Default::default()
            },
            MetaGauges {
                used_bytes: 11,
                entries: 2,
                capacity_bytes: 64,
            },
        );
        assert!(text.contains("alluxiofs_evictions_total{reason=\"ttl\"} 2\n"));
        assert!(text.contains("alluxiofs_evictions_total{reason=\"capacity\"} 3\n"));
        assert!(text.contains("alluxiofs_evictions_total{reason=\"free\"} 0\n"));
        assert!(text.contains("alluxiofs_cache_evictions_total 3\n"));
        assert!(text.contains("alluxiofs_cache_dir_used_bytes{dir=\"/c/\\\"x\\\"\"} 7\n"));
        assert!(text.contains("alluxiofs_pinned_bytes 4\n"));
        assert!(
            text.contains("# TYPE alluxiofs_metadata_bytes gauge\nalluxiofs_metadata_bytes 11\n")
        );
        assert!(text.contains("alluxiofs_metadata_entries 2\n"));
        assert!(text.contains("alluxiofs_metadata_capacity_bytes 64\n"));
        assert!(text.contains("alluxiofs_ufs_requests_total{op=\"get\"} 2\n"));
        assert!(text.contains("alluxiofs_ufs_requests_total{op=\"head\"} 1\n"));
        assert!(text.contains("alluxiofs_cache_hits_total 5\n"));
        assert!(text.contains("alluxiofs_cache_used_bytes 7\n"));
        assert!(text.contains("alluxiofs_cache_capacity_bytes 9\n"));
        assert!(
            text.contains("alluxiofs_requests_total{endpoint=\"/v1/range\",status=\"200\"} 2\n")
        );
        assert!(text.contains(
            "alluxiofs_request_duration_seconds_bucket{endpoint=\"/v1/range\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "alluxiofs_request_duration_seconds_bucket{endpoint=\"/v1/range\",le=\"+Inf\"} 2\n"
        ));
        assert_eq!(m.ufs_requests_total(), 3);
        assert_eq!(m.requests("/v1/range", 200), 2);
    }
}

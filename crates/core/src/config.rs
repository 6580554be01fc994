//! The settings of the client core ([`ClientConfig`]), with their defaults.
//!
//! One struct holds every knob a [`crate::Client`] and its
//! [`crate::Reader`]s use, and [`ClientConfig::default`] is the one place
//! their defaults are written: the Python binding fills the struct from an
//! options mapping and shows these defaults to Python (`client_defaults()`,
//! `src/conversions.rs`) instead of typing them again.

use std::time::Duration;

use crate::placement::{Placement, DEFAULT_VNODES};
use crate::protocol::DEFAULT_PAGE_SIZE;

/// Every knob of the client, with its default.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Page size; must match the workers'. Default 1 MiB.
    pub page_size: u64,
    /// How paths are placed on workers. Default Alluxio's ring with 5
    /// virtual nodes, compatible with Alluxio. In etcd mode the setting the
    /// cluster publishes replaces it.
    pub placement: Placement,
    /// Legacy knob: virtual nodes of the Alluxio ring. Used only when
    /// `placement` is left at its default and this is not 5; set
    /// `placement` instead.
    pub vnodes: u32,
    /// Ordered preferred workers per path (0 counts as 1). Default 1.
    pub replicas: usize,
    /// TCP connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Whole-request timeout, body included. Default 30 s.
    pub request_timeout: Duration,
    /// Retries per worker on worker faults. Default 2.
    pub retries: u32,
    /// First backoff before a retry (doubles, jittered). Default 50 ms.
    pub retry_base: Duration,
    /// No retry starts later than this after the call began. Default 5 s.
    pub retry_deadline: Duration,
    /// Reads larger than this are split into page-aligned chunks fetched in
    /// parallel. Default 8 MiB.
    pub max_chunk: u64,
    /// Concurrent requests per call. Default 16.
    pub max_parallel: usize,
    /// [`crate::Client::read_ranges`] merges ranges of a file whose gap is at most
    /// this. Default 1 MiB.
    pub coalesce_gap: u64,
    /// Sent as `Authorization: Bearer <token>` when set. Default none.
    pub auth_token: Option<String>,
    /// First readahead window of a [`crate::reader::Reader`]. Default 1 MiB.
    pub readahead_initial: u64,
    /// Largest readahead window. Default 64 MiB.
    pub readahead_max: u64,
    /// Read warm pages of a worker on this node through the descriptors it
    /// passes over its Unix socket instead of HTTP (`crate::local`).
    /// Default true.
    pub local_reads: bool,
    /// HTTPS to workers: trusted roots, verification, client certificate
    /// ([`crate::tls`]). Default off.
    pub tls: crate::tls::ClientTls,
}

impl ClientConfig {
    /// The placement in effect: `placement`, or the Alluxio ring with the
    /// legacy `vnodes` when only that was changed.
    pub fn effective_placement(&self) -> Placement {
        match self.placement {
            p if p == Placement::default() && self.vnodes != DEFAULT_VNODES && self.vnodes > 0 => {
                Placement::Alluxio {
                    vnodes: self.vnodes,
                }
            }
            p => p,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            page_size: DEFAULT_PAGE_SIZE,
            placement: Placement::default(),
            vnodes: DEFAULT_VNODES,
            replicas: 1,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            retries: 2,
            retry_base: Duration::from_millis(50),
            retry_deadline: Duration::from_secs(5),
            max_chunk: 8 << 20,
            max_parallel: 16,
            coalesce_gap: 1 << 20,
            auth_token: None,
            readahead_initial: 1 << 20,
            readahead_max: 64 << 20,
            local_reads: true,
            tls: crate::tls::ClientTls::default(),
        }
    }
}

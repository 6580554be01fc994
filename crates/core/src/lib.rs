//! alluxiofs client core: pure Rust, no Python.
//!
//! - [`path`]: UFS URL normalization, `path_id`, confinement.
//! - [`info`]: the Alluxio file-info JSON shared with the worker.
//! - [`ring`]: the Alluxio-compatible consistent hash ring.
//! - [`placement`]: which workers hold a path (Alluxio ring or rendezvous).
//! - [`pages`]: page math and range planning.
//! - [`client`]: parallel range reads from cache workers; [`config`]: its settings.
//! - [`protocol`]: the HTTP API constants worker and client share; [`batch`]: the
//!   wire format of many small files in one request.
//! - [`discovery`]: worker discovery and watch through etcd.
//! - [`reader`]: a sequential reader with readahead.
//! - [`manage`]: pin, unpin, TTL and free on every worker.
//! - [`load`]: preloading a file or prefix into the owners' caches.
//! - [`parquet`]: Parquet footers (column chunk ranges) for the reader's prefetch.
//! - [`write`](mod@write): write-through to the owner worker, which fills its cache.
//! - [`local`]: the same-node read protocol (page file descriptors over a Unix socket);
//!   [`page_file`]: the page file format both ends verify.

#![warn(missing_docs)]

pub mod batch;
pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
pub mod info;
pub mod load;
pub mod local;
pub mod manage;
pub mod membership;
pub mod page_file;
pub mod pages;
pub mod parquet;
pub mod path;
pub mod placement;
pub mod protocol;
pub mod reader;
pub mod ring;
pub mod tls;
pub mod write;

pub use client::{Client, ClientConfig, RangeResult, ReadOutcome, Stats, WorkerAddr};
pub use error::{Error, Result};
pub use placement::Placement;
pub use reader::Reader;
pub use ring::{HashRing, WorkerIdentity};

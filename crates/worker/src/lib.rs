//! alluxiofs cache worker.
//!
//! Serves files of the mounted UFS prefixes over the Alluxio worker HTTP API
//! (`docs/http-api.md`), reading through to the UFS on a miss and keeping
//! pages on local disks and in memory.
//!
//! - [`config`]: [`WorkerConfig`], from defaults, YAML, env and flags.
//! - [`ufs`]: `object_store` access, confinement, versions; [`units`]: size and duration syntax.
//! - [`store`]: the checksummed page store (disk + memory, LRU).
//! - [`meta`]: metadata cache and the `path_id` map.
//! - [`read`]: page read-through with single-flight UFS fetches.
//! - [`cache`]: the read-through engine ([`cache::ReadThrough`]): versions,
//!   metadata, pages; what every front end calls. No HTTP in it.
//! - [`load`]: preloading (synchronous per file, Alluxio load jobs) and
//!   [`write`](mod@write): write-through uploads that fill the cache, both over the engine.
//! - [`history`]: counter snapshots for per-job stats.
//! - [`metrics`]: Prometheus text metrics.
//! - [`membership`]: identity and registration in etcd.
//! - [`policy`]: eviction policies (LRU, S3-FIFO); [`rules`]: pins, TTLs, quotas.
//! - [`s3`]: the S3 endpoint (its own listener, the `s3s` crate for the
//!   protocol) over the same engine.
//! - The HTTP front end: [`state`] (the shared [`state::AppState`]),
//!   [`http`] (query parsing, JSON and data answers), [`routes`] (one module
//!   per endpoint group), [`app`] (the router and its guard), [`server`]
//!   (the listener).
//!
//! Dependencies point one way: `server -> app -> routes -> {state, http}`,
//! `routes/state -> {load, write, history} -> cache -> read -> {store, meta,
//! ufs, metrics}`; nothing below the routes knows HTTP.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod atomic;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod error;
pub mod history;
pub mod http;
pub mod load;
pub mod local;
pub mod membership;
pub mod meta;
pub mod metrics;
pub mod outage;
pub mod policy;
pub mod read;
pub mod routes;
pub mod rules;
pub mod s3;
pub mod server;
pub mod state;
pub mod store;
pub mod tls;
pub mod ufs;
pub mod ufs_uploads;
pub mod units;
pub mod write;

pub use config::WorkerConfig;
pub use error::WorkerError;
pub use server::{start, RunningWorker};

use clap::error::ErrorKind;
use clap::Parser;

/// Parse `args` (`args[0]` is the program name, like `std::env::args`) as
/// the `alluxiofs worker` command line, build a tokio runtime and serve
/// until SIGTERM or SIGINT. `--help` and `--version` print and return `Ok`.
///
/// Safe to call from any thread of an embedding process (the Python package
/// calls it with the GIL released): it owns its runtime and installs a log
/// subscriber only if none is installed yet.
pub fn run_cli<I, T>(args: I) -> Result<(), WorkerError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match config::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return Ok(());
        }
        Err(e) => return Err(WorkerError::Cli(e)),
    };
    let config = WorkerConfig::from_cli_and_env(&cli, &|k| std::env::var(k).ok())?;
    server::init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("alluxiofs-worker")
        .build()
        .map_err(|e| WorkerError::io("cannot start the tokio runtime", e))?;
    runtime.block_on(async move {
        let worker = start(config).await?;
        server::shutdown_signal().await;
        worker.shutdown().await
    })
}

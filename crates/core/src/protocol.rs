//! The constants of the worker HTTP API that the worker and the client must
//! agree on, defined once for both (`docs/http-api.md`).
//!
//! A client and a worker of different builds talk to each other, so none of
//! these may change without a note in `docs/protocol.md`.

/// Alluxio's default worker HTTP port (`alluxio.worker.http.server.port`).
pub const DEFAULT_WORKER_PORT: u16 = 28080;

/// The default page size, 1 MiB (`alluxio.worker.page.store.page.size`).
/// Client and workers must use the same page size.
pub const DEFAULT_PAGE_SIZE: u64 = 1 << 20;

/// The response header carrying the object's size.
pub const FILE_SIZE_HEADER: &str = "x-alluxiofs-file-size";

/// The response header carrying the object version that was served.
pub const VERSION_HEADER: &str = "x-alluxiofs-version";

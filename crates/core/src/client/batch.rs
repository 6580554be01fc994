//! The per-owner dispatch of whole-file reads: one `POST /v1/batch` to a
//! worker carries all the files it owns ([`crate::batch`] is the wire
//! format), and its frames become the files' heads.
//!
//! [`Client::fetch_heads`] is the one function from (worker, files) to
//! [`Head`]s; `files` groups a `cat` by owner and calls it once per owner,
//! then finishes each file (the rest of a large file, or the per-file path
//! for a file the batch did not serve). A same-node variant (a Unix
//! socket to a local worker) fits in at the same place.
//!
//! - **Split.** A batch over [`MAX_FILES`] files or [`MAX_BODY_BYTES`] of
//!   body is sent as several requests, concurrently.
//! - **Failures.** The request is retried like any other on its worker
//!   (`failover`'s walk over that one worker: backoff, then the mark). A
//!   batch that fails, or breaks off, leaves every file it had not
//!   delivered [`Head::Unserved`]: the caller reads those through the
//!   per-file path, which walks their preferred workers (a worker that
//!   broke off a batch is marked down first, so they go to the next
//!   replica, else to the UFS). A file's own worker-fault frame (its UFS
//!   failed) is unserved the same way; a request-fault frame (404, 403,
//!   is a directory, 412) is that file's final error.
//! - **Old workers.** A worker without the route answers 404 (405, 501):
//!   it is remembered for the client's life and its files take the
//!   per-file path from then on, silently.
//! - **Time.** No piece of the answer may take longer than
//!   `request_timeout` to arrive; the whole answer may take one
//!   `request_timeout` per [`FILES_PER_TIMEOUT`] files.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use futures::stream::StreamExt;
use reqwest::Method;

use super::failover::Failover;
use super::request::{status_error, Answer};
use super::{Client, Req, WorkerAddr};
use crate::batch::{
    BatchFile, BatchRequest, FrameDecoder, FrameHeader, BATCH_PATH, MAX_BODY_BYTES, MAX_FILES,
};
use crate::error::{Error, Result};
use crate::info::ErrorBody;

/// Files per `request_timeout` a whole batch answer may take.
pub(super) const FILES_PER_TIMEOUT: usize = 256;

/// Bytes of request body per file beyond its URL (JSON punctuation).
const FILE_OVERHEAD: usize = 16;

/// What a dispatch got of one file.
#[derive(Debug)]
pub(super) enum Head {
    /// The first bytes of the file (all of it when `size` says so), with
    /// the size and version the worker served.
    Served {
        /// Bytes `[0, data.len())` of the file.
        data: Vec<u8>,
        /// The file's size.
        size: Option<u64>,
        /// The version `data` belongs to.
        version: Option<String>,
    },
    /// The request's fault for this file (not found, a directory, ...):
    /// no other worker would answer differently.
    Failed(Error),
    /// Not served by this dispatch: read it through the per-file path.
    Unserved,
}

/// The workers known to lack the batch route (by `host:port`).
#[derive(Debug, Default)]
pub(super) struct BatchSupport {
    unsupported: Mutex<HashSet<String>>,
}

impl BatchSupport {
    fn lacks(&self, w: &WorkerAddr) -> bool {
        self.unsupported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&w.addr())
    }

    fn remember_lacks(&self, w: &WorkerAddr) {
        let new = self
            .unsupported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.addr());
        if new {
            tracing::debug!(worker = %w.addr(), "no {BATCH_PATH} route: per-file reads from now on");
        }
    }
}

/// Cut `urls` into batches within the request bounds; each batch is the
/// index of its first file and its length.
fn split(urls: &[&str]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 64usize);
    for (i, u) in urls.iter().enumerate() {
        // JSON escaping can at most double a URL's bytes (non-ASCII passes
        // through as UTF-8; control characters cannot occur in one).
        let cost = 2 * u.len() + FILE_OVERHEAD;
        if i > start && (i - start >= MAX_FILES || bytes + cost > MAX_BODY_BYTES) {
            out.push((start, i - start));
            start = i;
            bytes = 64;
        }
        bytes += cost;
    }
    if start < urls.len() {
        out.push((start, urls.len() - start));
    }
    out
}

impl Client {
    /// Whether whole-file reads of `w`'s files should go per file (`w`
    /// lacks the batch route).
    pub(super) fn lacks_batch(&self, w: &WorkerAddr) -> bool {
        self.batch.lacks(w)
    }

    /// The heads of `urls` (whole-file reads) from worker `w`, in one
    /// batch request (or a few, past the bounds): one [`Head`] per URL, in
    /// order. See the module documentation for what is unserved.
    pub(super) async fn fetch_heads(&self, w: &WorkerAddr, urls: &[&str]) -> Vec<Head> {
        let mut out: Vec<Head> = urls.iter().map(|_| Head::Unserved).collect();
        if self.lacks_batch(w) {
            return out;
        }
        let parts = split(urls);
        let mut pending =
            futures::stream::iter(parts)
                .map(|(start, n)| async move {
                    (start, self.fetch_batch(w, &urls[start..start + n]).await)
                })
                .buffer_unordered(self.config.max_parallel.max(1));
        while let Some((start, heads)) = pending.next().await {
            for (k, h) in heads.into_iter().enumerate() {
                out[start + k] = h;
            }
        }
        out
    }

    /// One batch request (within the bounds) to `w`.
    async fn fetch_batch(&self, w: &WorkerAddr, urls: &[&str]) -> Vec<Head> {
        let mut out: Vec<Head> = urls.iter().map(|_| Head::Unserved).collect();
        let req = BatchRequest {
            files: urls
                .iter()
                .map(|u| BatchFile {
                    path: (*u).to_string(),
                    version: None,
                })
                .collect(),
            limit: Some(self.config.max_chunk),
        };
        let body = match serde_json::to_vec(&req) {
            Ok(b) => Bytes::from(b),
            Err(_) => return out,
        };
        let answer = self
            .on_preferred(std::slice::from_ref(w), |w| {
                self.start_batch(w, body.clone(), urls.len())
            })
            .await;
        let answer = match answer {
            Ok(Some(a)) => a,
            Ok(None) => {
                self.batch.remember_lacks(w);
                return out;
            }
            // Refused (auth, bounds) or the worker failed (marked down by
            // the walk): the per-file path gives each file its answer.
            Err(Failover::Request(_)) | Err(Failover::Exhausted(_)) => return out,
        };
        if let Err(e) = self.read_frames(w, answer, urls, &mut out).await {
            self.count_error(w);
            self.mark_failed(w, &e);
            tracing::debug!(worker = %w.addr(), "batch broke off: {e}");
        }
        out
    }

    /// Send the batch `body` of `n` files to `w`: the answer to stream, or
    /// `None` when `w` has no batch route.
    async fn start_batch<'w>(
        &self,
        w: &'w WorkerAddr,
        body: Bytes,
        n: usize,
    ) -> Result<Option<Answer<'w>>> {
        let whole = self
            .config
            .request_timeout
            .saturating_mul(n.div_ceil(FILES_PER_TIMEOUT).max(1) as u32);
        let req = Req::new(Method::POST, BATCH_PATH, BATCH_PATH)
            .timeout(whole)
            .body(reqwest::Body::from(body));
        let answer = self.send_raw(w, req).await?;
        match answer.status() {
            200..=299 => Ok(Some(answer)),
            404 | 405 | 501 => Ok(None),
            status => {
                let text = answer.text().await.unwrap_or_default();
                Err(status_error(w, status, BATCH_PATH, &text))
            }
        }
    }

    /// Stream the frames of `answer` into `out`. An error when the answer
    /// breaks off, stalls, is malformed or ends before every file.
    async fn read_frames(
        &self,
        w: &WorkerAddr,
        mut answer: Answer<'_>,
        urls: &[&str],
        out: &mut [Head],
    ) -> Result<()> {
        let idle = self.config.request_timeout;
        let mut dec = FrameDecoder::new();
        let mut seen = vec![false; urls.len()];
        let mut left = urls.len();
        while left > 0 {
            let piece = tokio::time::timeout(idle, answer.chunk())
                .await
                .map_err(|_| {
                    Error::Timeout(
                        idle,
                        format!("batch from worker {}: no data for {idle:?}", w.addr()),
                    )
                })??;
            let Some(piece) = piece else {
                return Err(self.batch_fault(
                    w,
                    format!("ended after {} of {} files", urls.len() - left, urls.len()),
                ));
            };
            dec.push(&piece);
            while let Some((h, data)) = dec.next_frame().map_err(|m| self.batch_fault(w, m))? {
                let i = h.index;
                if i >= urls.len() || seen[i] {
                    return Err(self.batch_fault(w, format!("unexpected frame for file {i}")));
                }
                seen[i] = true;
                left -= 1;
                out[i] = self.head_of(w, urls[i], h, data);
            }
        }
        Ok(())
    }

    /// The [`Head`] of one frame of `w` about `url`.
    fn head_of(&self, w: &WorkerAddr, url: &str, h: FrameHeader, data: Bytes) -> Head {
        if h.status == 200 {
            self.count_bytes(data.len() as u64);
            return Head::Served {
                data: data.to_vec(),
                size: h.size,
                version: h.version,
            };
        }
        let body = ErrorBody {
            message: h.message.unwrap_or_default(),
            code: h.code,
        };
        let text = serde_json::to_string(&body).unwrap_or_default();
        let e = Error::from_response(&w.addr(), h.status, url, &text);
        if e.is_worker_fault() {
            self.count_error(w);
            Head::Unserved
        } else {
            Head::Failed(e)
        }
    }

    fn batch_fault(&self, w: &WorkerAddr, what: String) -> Error {
        Error::WorkerUnavailable {
            worker: w.addr(),
            reason: format!("batch answer: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_split_at_the_bounds() {
        let short: Vec<String> = (0..MAX_FILES + 10).map(|i| format!("s3://b/{i}")).collect();
        let refs: Vec<&str> = short.iter().map(String::as_str).collect();
        assert_eq!(split(&refs), vec![(0, MAX_FILES), (MAX_FILES, 10)]);
        assert_eq!(split(&refs[..3]), vec![(0, 3)]);
        assert!(split(&[]).is_empty());

        let long = format!("s3://b/{}", "x".repeat(100_000));
        let refs: Vec<&str> = (0..12).map(|_| long.as_str()).collect();
        let parts = split(&refs);
        assert!(parts.len() > 1);
        assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), 12);
        for (start, n) in parts {
            let req = BatchRequest {
                files: refs[start..start + n]
                    .iter()
                    .map(|u| BatchFile {
                        path: u.to_string(),
                        version: None,
                    })
                    .collect(),
                limit: Some(8 << 20),
            };
            assert!(serde_json::to_vec(&req).unwrap().len() <= MAX_BODY_BYTES);
        }
    }
}

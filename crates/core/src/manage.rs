//! Keeping and letting go across the cluster: pin, unpin, TTL and free.
//!
//! A path's pages may sit on any worker (replicas, a ring that changed,
//! loads with several replicas), so every request goes to *every* worker
//! the client knows, concurrently. Each worker answers for its own cache;
//! [`ManageSummary`] keeps one [`WorkerAnswer`] per worker (its JSON answer
//! or its error) and sums the counts. Whether a refusal by one worker (a
//! full pin quota) is fatal is the caller's choice, except for a pin: a pin
//! holds on every worker or on none, so one that some worker refused or
//! could not take is undone on the workers that took it ([`ManageSummary::undone`]).
//!
//! Requests go through the client's request path (auth header, transport
//! error mapping) with a limit of `REQUEST_TIMEOUT` per worker (pinning or
//! freeing a large prefix takes a while), and are not counted in the
//! client's [`crate::Stats`].

use crate::client::{enc, error_message, Client, Req, WorkerAddr};
use crate::error::{Error, Result};
use serde::Serialize;
use std::time::Duration;

/// Time allowed for one worker's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What to ask of the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManageOp {
    /// Pin the path: its pages are never evicted (bounded by the pin quota).
    Pin,
    /// Remove the pins at or under the path.
    Unpin,
    /// Pages of the path expire this many seconds after being cached; 0 clears.
    Ttl(u64),
    /// Delete the cached pages of the path now.
    Free {
        /// Every file under the path, not only the path itself.
        recursive: bool,
        /// Also pinned pages.
        force: bool,
    },
}

impl ManageOp {
    /// The operation's name (`pin`, `unpin`, `ttl`, `free`).
    pub fn name(&self) -> &'static str {
        match self {
            ManageOp::Pin => "pin",
            ManageOp::Unpin => "unpin",
            ManageOp::Ttl(_) => "ttl",
            ManageOp::Free { .. } => "free",
        }
    }

    fn path_and_query(&self, url: &str) -> String {
        let p = enc(url);
        match self {
            ManageOp::Pin => format!("/v1/pin?path={p}"),
            ManageOp::Unpin => format!("/v1/unpin?path={p}"),
            ManageOp::Ttl(s) => format!("/v1/ttl?path={p}&seconds={s}"),
            ManageOp::Free { recursive, force } => {
                format!("/v1/free?path={p}&recursive={recursive}&force={force}")
            }
        }
    }
}

/// One worker's answer.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerAnswer {
    /// `host:port` of the worker.
    pub worker: String,
    /// The worker's JSON answer when it succeeded.
    pub result: Option<serde_json::Value>,
    /// HTTP status of a refusal (507: pin quota, 409: pinned pages, ...).
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Every worker's answer to one request.
#[derive(Debug, Clone, Serialize)]
pub struct ManageSummary {
    /// `pin`, `unpin`, `ttl` or `free`.
    pub op: String,
    /// The normalized URL.
    pub path: String,
    /// One answer per worker, in the client's worker order.
    pub workers: Vec<WorkerAnswer>,
    /// Pages affected, summed over workers (pinned, unpinned or freed).
    pub pages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Workers that failed.
    pub failed: usize,
    /// A pin that some worker failed: undone on the workers that took it
    /// (those that had pinned the path before keep their pin); `pages` and
    /// `bytes` are then 0.
    pub undone: bool,
    /// Workers where undoing the pin failed too (they keep it until an
    /// `unpin`).
    pub undo_failed: Vec<WorkerAnswer>,
}

/// Send `op` on `url` to every worker of `client` and gather the answers.
/// `Err` only for a bad URL or no workers; per-worker failures are in the
/// summary.
pub async fn manage(client: &Client, url: &str, op: ManageOp) -> Result<ManageSummary> {
    let url = crate::path::normalize_url(url)?;
    let workers = client.workers();
    if workers.is_empty() {
        return Err(Error::NoWorkers(format!("cannot {} {url}", op.name())));
    }
    let pq = op.path_and_query(&url);
    let answers =
        futures::future::join_all(workers.iter().map(|w| ask(client, w, &pq, &url))).await;
    let (pages_key, bytes_key) = match op {
        ManageOp::Pin => ("pinned_pages", "pinned_bytes_added"),
        ManageOp::Unpin => ("unpinned_pages", "unpinned_bytes"),
        ManageOp::Ttl(_) => ("", ""),
        ManageOp::Free { .. } => ("freed_pages", "freed_bytes"),
    };
    let mut summary = ManageSummary {
        op: op.name().to_string(),
        path: url,
        workers: Vec::with_capacity(answers.len()),
        pages: 0,
        bytes: 0,
        failed: 0,
        undone: false,
        undo_failed: Vec::new(),
    };
    for a in answers {
        match &a.result {
            Some(v) => {
                summary.pages += v.get(pages_key).and_then(|x| x.as_u64()).unwrap_or(0);
                summary.bytes += v.get(bytes_key).and_then(|x| x.as_u64()).unwrap_or(0);
            }
            None => summary.failed += 1,
        }
        summary.workers.push(a);
    }
    if op == ManageOp::Pin && summary.failed > 0 {
        undo_pin(client, &workers, &mut summary).await;
    }
    Ok(summary)
}

/// Undo a pin on the workers that took it as a new rule (`new_rule`), with
/// an exact unpin: pins they held before, at or under the path, stay.
async fn undo_pin(client: &Client, workers: &[WorkerAddr], summary: &mut ManageSummary) {
    let took: Vec<&WorkerAddr> = workers
        .iter()
        .zip(&summary.workers)
        .filter(|(_, a)| {
            a.result
                .as_ref()
                .and_then(|v| v.get("new_rule"))
                .and_then(|b| b.as_bool())
                .unwrap_or(false)
        })
        .map(|(w, _)| w)
        .collect();
    let pq = format!("/v1/unpin?path={}&exact=true", enc(&summary.path));
    let url = summary.path.clone();
    let answers = futures::future::join_all(took.iter().map(|w| ask(client, w, &pq, &url))).await;
    for a in answers {
        if a.result.is_none() {
            tracing::warn!(worker = %a.worker, "undoing the pin of {url} failed: {:?}", a.error);
            summary.undo_failed.push(a);
        }
    }
    summary.undone = true;
    summary.pages = 0;
    summary.bytes = 0;
}

/// One worker's answer to `path_and_query`: its status and message as they
/// are (a refusal's status matters to the caller: 507, 409, 403), so the raw
/// answer is read rather than mapped to an error.
async fn ask(client: &Client, w: &WorkerAddr, path_and_query: &str, url: &str) -> WorkerAnswer {
    let failed = |status: Option<u16>, error: String| WorkerAnswer {
        worker: w.addr(),
        result: None,
        status,
        error: Some(error),
    };
    let req = Req::post(path_and_query, url)
        .timeout(REQUEST_TIMEOUT)
        .uncounted();
    let answer = match client.send_raw(w, req).await {
        Ok(a) => a,
        Err(e) => return failed(None, format!("unreachable: {e}")),
    };
    let status = answer.status();
    let body = match answer.text().await {
        Ok(b) => b,
        Err(e) => return failed(Some(status), e.to_string()),
    };
    if !(200..300).contains(&status) {
        return failed(Some(status), error_message(&body));
    }
    match serde_json::from_str(&body) {
        Ok(v) => WorkerAnswer {
            worker: w.addr(),
            result: Some(v),
            status: Some(status),
            error: None,
        },
        Err(e) => failed(Some(status), format!("malformed answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            ManageOp::Free {
                recursive: true,
                force: false
            }
            .path_and_query("s3://b/a b"),
            "/v1/free?path=s3%3A%2F%2Fb%2Fa%20b&recursive=true&force=false"
        );
        assert_eq!(
            ManageOp::Ttl(5).path_and_query("/x"),
            "/v1/ttl?path=%2Fx&seconds=5"
        );
    }
}

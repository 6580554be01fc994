//! The one request path: every request the crate sends to a worker (reads,
//! metadata, invalidation, writes, manage, load) is built, sent and mapped
//! to errors here, so the auth header, the timeouts and the error mapping
//! cannot drift apart between callers.
//!
//! - **Building.** `base_url + path_and_query` with query values fully
//!   percent-encoded ([`enc`]), the bearer token when one is configured, and
//!   the request's own time limit where it has one (manage, load and writes
//!   allow longer than `request_timeout`).
//! - **Transport errors** (connect, timeout, broken body) are worker faults
//!   ([`transport_error`]): [`Error::Timeout`] with the limit that ran out,
//!   else [`Error::WorkerUnavailable`]. A body that breaks while it is read
//!   maps the same way, through [`Answer`].
//! - **Status errors.** Every non-2xx answer is turned into an error by
//!   [`status_error`], the one place that reads a worker's error body. The
//!   status decides; a body that cannot be read leaves the message empty.
//!   (Manage reports each worker's status and message as they are, so it
//!   takes the raw answer and the same [`error_message`].)
//! - **Bodies** are streamed: [`Answer::fill`] writes straight into the
//!   caller's slice (no intermediate copy of a chunk), [`Answer::bytes`]
//!   collects a body of unknown length.
//!
//! Counting: a request counts in [`super::Stats::worker_requests`] unless
//! it is [`Req::uncounted`] (manage and load keep their own summaries).

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;

use super::{Client, WorkerAddr};
use crate::error::{Error, Result};
use crate::info::ErrorBody;
use crate::path::path_id;

/// Query values are encoded fully: everything but RFC 3986 unreserved bytes.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `v` encoded as a query value.
pub(crate) fn enc(v: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(v, QUERY_VALUE)
}

/// One request to a worker: what to send and under which limits.
pub(crate) struct Req<'a> {
    method: Method,
    path_and_query: &'a str,
    /// The UFS URL (or endpoint) the request is about, for its errors.
    about: &'a str,
    timeout: Option<Duration>,
    counted: bool,
    body: Option<reqwest::Body>,
}

impl<'a> Req<'a> {
    /// `method` of `path_and_query` (starting with `/`) about `about`.
    pub(crate) fn new(method: Method, path_and_query: &'a str, about: &'a str) -> Self {
        Req {
            method,
            path_and_query,
            about,
            timeout: None,
            counted: true,
            body: None,
        }
    }

    /// A GET.
    pub(crate) fn get(path_and_query: &'a str, about: &'a str) -> Self {
        Req::new(Method::GET, path_and_query, about)
    }

    /// A POST without a body.
    pub(crate) fn post(path_and_query: &'a str, about: &'a str) -> Self {
        Req::new(Method::POST, path_and_query, about)
    }

    /// Allow `limit` for the whole request (body included) instead of the
    /// client's `request_timeout`.
    pub(crate) fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Leave the request out of [`super::Stats::worker_requests`].
    pub(crate) fn uncounted(mut self) -> Self {
        self.counted = false;
        self
    }

    /// Send `body` (streamed) with the request.
    pub(crate) fn body(mut self, body: reqwest::Body) -> Self {
        self.body = Some(body);
        self
    }
}

/// `rb` with the bearer token, when there is one.
pub(super) fn authorized(
    rb: reqwest::RequestBuilder,
    token: Option<&str>,
) -> reqwest::RequestBuilder {
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

/// An answer of a worker whose body is still to be read; failures while
/// reading it map like those of the request.
pub(crate) struct Answer<'a> {
    resp: reqwest::Response,
    w: &'a WorkerAddr,
    connect_limit: Duration,
    request_limit: Duration,
}

impl Answer<'_> {
    /// The HTTP status.
    pub(crate) fn status(&self) -> u16 {
        self.resp.status().as_u16()
    }

    /// A header's value, when present and text.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.resp
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    fn fault(&self, e: &reqwest::Error) -> Error {
        transport_error(self.w, e, self.connect_limit, self.request_limit)
    }

    /// The next piece of the body as it arrives (`None` at its end).
    pub(crate) async fn chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let piece = self.resp.chunk().await;
        piece.map_err(|e| self.fault(&e))
    }

    /// The whole body as text.
    pub(crate) async fn text(self) -> Result<String> {
        let (w, connect_limit, request_limit) = (self.w, self.connect_limit, self.request_limit);
        self.resp
            .text()
            .await
            .map_err(|e| transport_error(w, &e, connect_limit, request_limit))
    }

    /// The whole body, at most `max` bytes preallocated (from the
    /// announced length).
    pub(crate) async fn bytes(mut self, max: u64) -> Result<Vec<u8>> {
        let cap = self.resp.content_length().unwrap_or(0).min(max) as usize;
        let mut data = Vec::with_capacity(cap);
        while let Some(chunk) = self.resp.chunk().await.map_err(|e| self.fault(&e))? {
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    /// Stream the body into `dst` until it is full or the body ends.
    /// Returns whether the body ended before `dst` was full (`Ok(true)`),
    /// and in every case how many bytes were written (a broken body keeps
    /// what arrived).
    pub(crate) async fn fill(mut self, dst: &mut [u8]) -> (Result<bool>, usize) {
        let mut written = 0usize;
        let result = loop {
            match self.resp.chunk().await {
                Ok(Some(bytes)) => {
                    let n = bytes.len().min(dst.len() - written);
                    dst[written..written + n].copy_from_slice(&bytes[..n]);
                    written += n;
                    if written == dst.len() {
                        break Ok(false);
                    }
                }
                Ok(None) => break Ok(true),
                Err(e) => break Err(self.fault(&e)),
            }
        };
        (result, written)
    }
}

impl Client {
    /// Send `req` to `w`: an answer of any status. Transport failures are
    /// errors ([`transport_error`]). Callers that do not need the raw status
    /// use [`Client::send`].
    pub(crate) async fn send_raw<'w>(&self, w: &'w WorkerAddr, req: Req<'_>) -> Result<Answer<'w>> {
        let url = format!(
            "{}{}",
            w.url_with(self.config.tls.scheme()),
            req.path_and_query
        );
        let mut rb = authorized(
            self.http.request(req.method, &url),
            self.config.auth_token.as_deref(),
        );
        if let Some(limit) = req.timeout {
            rb = rb.timeout(limit);
        }
        if let Some(body) = req.body {
            rb = rb.body(body);
        }
        let connect_limit = self.config.connect_timeout;
        let request_limit = req.timeout.unwrap_or(self.config.request_timeout);
        if req.counted {
            self.count_request();
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| transport_error(w, &e, connect_limit, request_limit))?;
        Ok(Answer {
            resp,
            w,
            connect_limit,
            request_limit,
        })
    }

    /// Send `req` to `w`; a non-2xx answer is the error of its status
    /// ([`status_error`]).
    pub(crate) async fn send<'w>(&self, w: &'w WorkerAddr, req: Req<'_>) -> Result<Answer<'w>> {
        let about = req.about;
        let answer = self.send_raw(w, req).await?;
        if !answer.resp.status().is_success() {
            let status = answer.status();
            let body = answer.resp.text().await.unwrap_or_default();
            return Err(status_error(w, status, about, &body));
        }
        Ok(answer)
    }

    /// Send `req` to `w`; the body of a 2xx answer as text.
    pub(crate) async fn send_text(&self, w: &WorkerAddr, req: Req<'_>) -> Result<String> {
        self.send(w, req).await?.text().await
    }

    /// `GET /v1/range` of `[offset, offset + length)` of `url` from `w`,
    /// pinned to `version` when given.
    pub(super) async fn get_range<'w>(
        &self,
        w: &'w WorkerAddr,
        url: &str,
        version: Option<&str>,
        offset: u64,
        length: u64,
    ) -> Result<Answer<'w>> {
        let mut q = format!(
            "/v1/range/{}?ufsFullPath={}&offset={offset}&length={length}",
            path_id(url),
            enc(url),
        );
        if let Some(v) = version {
            q.push_str("&version=");
            q.push_str(&enc(v).to_string());
        }
        self.send(w, Req::get(&q, url)).await
    }
}

/// The message of a worker's error body: the `message` of its JSON, else
/// the raw body.
pub(crate) fn error_message(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| body.trim().to_string())
}

/// A non-2xx answer: its JSON body (its `code`, else the status) or raw
/// body mapped by [`Error::from_response`].
pub(crate) fn status_error(w: &WorkerAddr, status: u16, about: &str, body: &str) -> Error {
    Error::from_response(&w.addr(), status, about, body)
}

/// A 2xx body that is not the expected JSON: a fault of the worker
/// ([`Error::WorkerUnavailable`]). `what` names the answer ("answer",
/// "load answer", ...).
pub(crate) fn parse_answer<T: serde::de::DeserializeOwned>(
    w: &WorkerAddr,
    about: &str,
    what: &str,
    body: &str,
) -> Result<T> {
    serde_json::from_str(body).map_err(|e| Error::WorkerUnavailable {
        worker: w.addr(),
        reason: format!("{about}: malformed {what}: {e}"),
    })
}

/// A transport failure (connect, timeout, broken body) is a worker fault:
/// [`Error::Timeout`] when reqwest reports a timeout (`connect_limit` for a
/// connection that was not made in time, else `request_limit`, the limit of
/// the whole request), [`Error::WorkerUnavailable`] otherwise.
pub(crate) fn transport_error(
    w: &WorkerAddr,
    e: &reqwest::Error,
    connect_limit: Duration,
    request_limit: Duration,
) -> Error {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        let (limit, what) = if e.is_connect() {
            (connect_limit, "connecting to")
        } else {
            (request_limit, "request to")
        };
        return Error::Timeout(limit, format!("{what} worker {}: {reason}", w.addr()));
    }
    Error::WorkerUnavailable {
        worker: w.addr(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_fully_encoded() {
        assert_eq!(
            enc("s3://b/a b/c?d=e&f#g%").to_string(),
            "s3%3A%2F%2Fb%2Fa%20b%2Fc%3Fd%3De%26f%23g%25"
        );
        assert_eq!(enc("a-b.c_d~").to_string(), "a-b.c_d~");
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(r#"{"message":"s3://b/k: gone"}"#),
            "s3://b/k: gone"
        );
        assert_eq!(error_message("  plain text\n"), "plain text");
        let w = WorkerAddr::from_host_port("h", 1);
        assert!(matches!(
            status_error(&w, 404, "s3://b/k", "{}"),
            Error::NotFound { path } if path == "s3://b/k"
        ));
    }
}

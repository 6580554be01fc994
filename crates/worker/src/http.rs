//! The HTTP plumbing every route shares: one query-string parser with typed
//! getters, one JSON responder, and the headers of a data answer.
//!
//! Handlers never parse input by hand: a bad or missing parameter becomes a
//! [`WorkerError::BadRequest`] (400, `{"message"}`) naming the parameter
//! and what it should be, so every endpoint refuses bad input the same way
//! and none can panic on it.

use crate::error::{Result, WorkerError};
use crate::ufs::ObjectVersion;
use alluxiofs_core::protocol::{FILE_SIZE_HEADER, VERSION_HEADER};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::convert::Infallible;

/// The decoded query string of a request, parsed once. Empty values count
/// as absent.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Query::parse(parts.uri.query()))
    }
}

impl Query {
    /// Decode `raw` (`a=1&b=x%20y`).
    pub fn parse(raw: Option<&str>) -> Self {
        Query(
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .filter(|(_, v)| !v.is_empty())
                .collect(),
        )
    }

    /// The value of `name`, if given and not empty.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name`; 400 when it is missing.
    pub fn required(&self, name: &str) -> Result<&str> {
        self.str(name)
            .ok_or_else(|| WorkerError::BadRequest(format!("missing query parameter {name:?}")))
    }

    /// `name` as a non-negative integer, if given.
    pub fn u64(&self, name: &str) -> Result<Option<u64>> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                WorkerError::BadRequest(format!(
                    "query parameter {name:?} must be a non-negative integer, got {v:?}"
                ))
            }),
        }
    }

    /// `name` as `true`/`1` or `false`/`0` (any case); `default` when absent.
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool> {
        match self.str(name).map(|s| s.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(WorkerError::BadRequest(format!(
                "query parameter {name:?} must be true or false, got {v:?}"
            ))),
        }
    }

    /// `name` as a size such as `1048576`, `64MiB` or `200MB` (a trailing
    /// `/s` allowed, for rates), if given.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => {
                let t = v.trim().trim_end_matches("/s");
                crate::units::parse_size(t)
                    .map(Some)
                    .map_err(|e| WorkerError::BadRequest(format!("query parameter {name:?}: {e}")))
            }
        }
    }

    /// `name` as unix seconds (finite, at least zero), if given.
    pub fn unix_seconds(&self, name: &str) -> Result<Option<f64>> {
        match self.str(name).map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Some)
                .ok_or_else(|| {
                    WorkerError::BadRequest(format!(
                        "query parameter {name:?} must be unix seconds, got {s:?}"
                    ))
                }),
        }
    }
}

/// `value` as a 200 `application/json` answer.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => WorkerError::Internal(format!("JSON encoding: {e}")).into_response(),
    }
}

/// The headers of a data answer of `len` bytes of version `v`: content type
/// and length, the file size and the version the bytes belong to.
pub fn data_headers(v: &ObjectVersion, len: u64) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(FILE_SIZE_HEADER, HeaderValue::from(v.size));
    let version = HeaderValue::from_str(&v.version).map_err(|_| {
        WorkerError::Internal(format!(
            "version {:?} is not a valid header value",
            v.version
        ))
    })?;
    h.insert(VERSION_HEADER, version);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_refuse_bad_input() {
        let q = Query::parse(Some("a=1&b=x&c=&d=TRUE&e=64MiB/s&f=%20"));
        assert_eq!(q.u64("a").unwrap(), Some(1));
        assert!(q.u64("b").is_err());
        assert_eq!(q.str("c"), None, "empty counts as absent");
        assert!(q.required("c").is_err());
        assert!(q.bool_or("d", false).unwrap());
        assert!(q.bool_or("missing", true).unwrap());
        assert!(q.bool_or("b", false).is_err());
        assert_eq!(q.size("e").unwrap(), Some(64 << 20));
        assert_eq!(q.unix_seconds("f").unwrap(), None);
        assert!(q.unix_seconds("b").is_err());
    }
}

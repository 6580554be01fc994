//! `POST /v1/batch`: many whole (small) files in one request, answered as
//! one stream of frames in the order the files complete. The wire format
//! (request body, frame header, bounds) is the core's
//! [`alluxiofs_core::batch`]; `docs/http-api.md` documents it.
//!
//! - **Bounds.** A body over [`MAX_BODY_BYTES`], unparsable, or naming
//!   more than [`MAX_FILES`] files is a 400 for the whole request, before
//!   any file is touched. Everything after that is per file.
//! - **Per file.** Each file is confined (403 frame outside the mounts,
//!   never touching the UFS or the disk) and read through the engine like
//!   a `GET /v1/range` of `[0, min(size, limit))`: the metadata cache, the
//!   pages, the UFS on a miss, with the engine's retry when the object
//!   changes. An error is that file's frame (the core's code and status),
//!   never the batch's.
//! - **Concurrency.** At most [`CONCURRENT_FILES`] files of a batch are
//!   read at once, so a cold batch is not serialized and a big one does
//!   not flood the UFS. The answer is pulled by the connection: frames are
//!   produced as fast as the client reads them.
//! - **Buffering.** A file's head is read whole before its frame is sent,
//!   so that an error found mid-file is still a clean error frame; a batch
//!   holds at most `CONCURRENT_FILES × limit` bytes (limit at most
//!   [`MAX_FILE_LIMIT`]).
//!
//! Auth, shutdown and the request metrics are the guard's
//! ([`crate::app`]), as for every route; bytes sent count in
//! `bytes_served` through the engine.

use crate::error::{Result, WorkerError};
use crate::state::AppState;
use alluxiofs_core::batch::{
    encode_header, BatchFile, BatchRequest, FrameHeader, BATCH_PATH, CONTENT_TYPE, MAX_BODY_BYTES,
    MAX_FILES, MAX_FILE_LIMIT,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use std::sync::Arc;

/// Files of one batch read at once.
pub const CONCURRENT_FILES: usize = 16;

/// The batch route.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(BATCH_PATH, post(batch))
}

async fn batch(State(state): State<Arc<AppState>>, body: Body) -> Result<Response> {
    let raw = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            WorkerError::BadRequest(format!(
                "batch body unreadable or over {MAX_BODY_BYTES} bytes: {e}"
            ))
        })?;
    let req: BatchRequest = serde_json::from_slice(&raw).map_err(|e| {
        WorkerError::BadRequest(format!(
            "batch body must be {{\"files\": [{{\"path\": URL}}, ...], \"limit\": bytes}}: {e}"
        ))
    })?;
    if req.files.len() > MAX_FILES {
        return Err(WorkerError::BadRequest(format!(
            "batch of {} files (at most {MAX_FILES}; split it)",
            req.files.len()
        )));
    }
    let limit = req.limit.unwrap_or(MAX_FILE_LIMIT).min(MAX_FILE_LIMIT);
    let frames = stream::iter(req.files.into_iter().enumerate())
        .map(move |(index, file)| {
            let state = state.clone();
            async move { frame(&state, index, file, limit).await }
        })
        .buffer_unordered(CONCURRENT_FILES)
        .flat_map(|pieces| stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>)));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        Body::from_stream(frames),
    )
        .into_response())
}

/// The frame of file `index`: its header, then its data pieces.
async fn frame(state: &Arc<AppState>, index: usize, file: BatchFile, limit: u64) -> Vec<Bytes> {
    match head(state, &file, limit).await {
        Ok((size, version, pieces)) => {
            let len = pieces.iter().map(|p| p.len() as u64).sum();
            let h = FrameHeader {
                index,
                status: 200,
                size: Some(size),
                version: Some(version),
                len,
                ..FrameHeader::default()
            };
            let mut out = Vec::with_capacity(pieces.len() + 1);
            out.push(encode_header(&h));
            out.extend(pieces);
            out
        }
        Err(e) => {
            let kind = e.kind();
            if e.status().is_server_error() {
                tracing::warn!(path = %file.path, "batch file failed: {e}");
            }
            let h = FrameHeader {
                index,
                status: kind.status(),
                code: Some(kind.code().to_string()),
                message: Some(e.to_string()),
                ..FrameHeader::default()
            };
            vec![encode_header(&h)]
        }
    }
}

/// The first `limit` bytes of `file`, with its size and version.
async fn head(
    state: &Arc<AppState>,
    file: &BatchFile,
    limit: u64,
) -> Result<(u64, String, Vec<Bytes>)> {
    let cache = &state.cache;
    let url = cache.confine(&file.path)?;
    let (v, pieces) = cache
        // A cold file's head is then one UFS GET that also names its version.
        .with_version_at(
            &url,
            file.version.as_deref(),
            Some(0..limit),
            |v| async move {
                let end = v.size.min(limit);
                let mut stream = cache.read_range(&v, 0..end).await?;
                let mut pieces = Vec::new();
                while let Some(piece) = stream.next().await {
                    pieces.push(piece?);
                }
                Ok(pieces)
            },
        )
        .await?;
    Ok((v.size, v.version, pieces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::app;
    use crate::config::{CacheDirConfig, WorkerConfig};
    use alluxiofs_core::batch::FrameDecoder;
    use axum::http::Request;
    use std::collections::HashMap;
    use tower::ServiceExt;

    struct Env {
        dir: tempfile::TempDir,
        state: Arc<AppState>,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let ufs = dir.path().join("ufs");
        std::fs::create_dir_all(ufs.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), b"top secret").unwrap();
        let config = WorkerConfig {
            cache_dirs: vec![CacheDirConfig::new(dir.path().join("cache"))],
            page_size: 4096,
            port: 0,
            ..WorkerConfig::with_mounts([ufs.to_str().unwrap()])
        };
        let state = AppState::new(config).unwrap();
        Env { dir, state }
    }

    impl Env {
        fn url(&self, name: &str) -> String {
            format!("file://{}/ufs/{name}", self.dir.path().display())
        }

        async fn post(&self, body: Vec<u8>) -> (StatusCode, Bytes) {
            let req = Request::builder()
                .method("POST")
                .uri(BATCH_PATH)
                .body(Body::from(body))
                .unwrap();
            let resp = app(self.state.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, bytes)
        }

        async fn batch(&self, paths: &[String], limit: Option<u64>) -> Vec<(FrameHeader, Bytes)> {
            let req = BatchRequest {
                files: paths
                    .iter()
                    .map(|p| BatchFile {
                        path: p.clone(),
                        version: None,
                    })
                    .collect(),
                limit,
            };
            let (status, body) = self.post(serde_json::to_vec(&req).unwrap()).await;
            assert_eq!(status, StatusCode::OK);
            let mut dec = FrameDecoder::new();
            dec.push(&body);
            let mut frames = Vec::new();
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
            assert!(dec.at_frame_boundary());
            frames
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Every file gets one frame; a bad path is an error frame for that
    /// file only; a big file sends its head and says its size; a second
    /// batch is served from the cache.
    #[tokio::test]
    async fn one_frame_per_file_errors_per_file() {
        let e = env();
        let ufs = e.dir.path().join("ufs");
        let mut paths = Vec::new();
        let mut want = HashMap::new();
        for i in 0..40u8 {
            let d = data(100 * i as usize, i);
            std::fs::write(ufs.join(format!("f{i}")), &d).unwrap();
            want.insert(paths.len(), d);
            paths.push(e.url(&format!("f{i}")));
        }
        std::fs::write(ufs.join("big"), data(20_000, 9)).unwrap();
        let big = paths.len();
        paths.push(e.url("big"));
        let missing = paths.len();
        paths.push(e.url("nope"));
        let dir = paths.len();
        paths.push(e.url("sub"));
        let outside = paths.len();
        paths.push(format!("file://{}/secret", e.dir.path().display()));

        let frames = e.batch(&paths, Some(10_000)).await;
        assert_eq!(frames.len(), paths.len());
        let by_index: HashMap<usize, (FrameHeader, Bytes)> =
            frames.into_iter().map(|f| (f.0.index, f)).collect();
        assert_eq!(by_index.len(), paths.len());
        for (i, d) in &want {
            let (h, got) = &by_index[i];
            assert_eq!(
                (h.status, h.size, h.len),
                (200, Some(d.len() as u64), d.len() as u64)
            );
            assert!(h.version.is_some());
            assert_eq!(&got[..], &d[..], "file {i}");
        }
        let (h, got) = &by_index[&big];
        assert_eq!((h.size, h.len), (Some(20_000), 10_000));
        assert_eq!(&got[..], &data(20_000, 9)[..10_000]);
        let codes = |i: usize| (by_index[&i].0.status, by_index[&i].0.code.clone().unwrap());
        assert_eq!(codes(missing), (404, "not_found".into()));
        assert_eq!(codes(dir), (400, "is_a_directory".into()));
        assert_eq!(codes(outside), (403, "permission_denied".into()));
        assert!(by_index[&outside].1.is_empty());

        let m = e.state.cache.metrics();
        let gets = m.ufs_requests(crate::metrics::UfsOp::Get);
        let again = e.batch(&paths[..40], None).await;
        assert_eq!(again.len(), 40);
        assert_eq!(m.ufs_requests(crate::metrics::UfsOp::Get), gets, "warm");
        assert_eq!(m.requests(BATCH_PATH, 200), 2);
    }

    /// A pinned version that is not the file's is a 412 frame.
    #[tokio::test]
    async fn a_pinned_version_is_checked_per_file() {
        let e = env();
        std::fs::write(e.dir.path().join("ufs/a"), b"abc").unwrap();
        let req = BatchRequest {
            files: vec![BatchFile {
                path: e.url("a"),
                version: Some("not-the-version".into()),
            }],
            limit: None,
        };
        let (status, body) = e.post(serde_json::to_vec(&req).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let mut dec = FrameDecoder::new();
        dec.push(&body);
        let (h, _) = dec.next_frame().unwrap().unwrap();
        assert_eq!((h.status, h.code.as_deref()), (412, Some("object_changed")));
    }

    /// Bad and oversized requests are a 400 for the whole batch.
    #[tokio::test]
    async fn oversized_and_malformed_batches_are_refused() {
        let e = env();
        let (status, body) = e.post(b"not json".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("invalid_argument"));

        let many = BatchRequest {
            files: (0..MAX_FILES + 1)
                .map(|i| BatchFile {
                    path: format!("s3://b/{i}"),
                    version: None,
                })
                .collect(),
            limit: None,
        };
        let (status, body) = e.post(serde_json::to_vec(&many).unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("at most 4096"));

        let (status, body) = e.post(vec![b' '; MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(String::from_utf8_lossy(&body).contains("over 1048576 bytes"));
        assert_eq!(e.state.cache.metrics().requests(BATCH_PATH, 400), 3);
    }
}

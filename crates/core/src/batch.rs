//! The wire format of `POST /v1/batch`: many whole (small) files in one
//! request, answered as one stream of frames (`docs/http-api.md`).
//!
//! Defined once here for both sides, like [`crate::protocol`]: the worker
//! encodes frames ([`encode_header`]), the client decodes them
//! ([`FrameDecoder`]), and a unit test checks that the two agree.
//!
//! - **Request.** A JSON [`BatchRequest`]: the files (URL, optional pinned
//!   version) and a per-file byte limit. At most [`MAX_FILES`] files and
//!   [`MAX_BODY_BYTES`] of body; a client splits larger batches.
//! - **Answer.** `200` with [`CONTENT_TYPE`], then one frame per file in the
//!   order the files complete (not the request's): a 4-byte big-endian
//!   length, that many bytes of JSON [`FrameHeader`] (the file's index in
//!   the request, its status, and for a served file its size, version and
//!   the data length), then `len` bytes of data: the file's first
//!   `min(size, limit)` bytes. An error frame (`status` not 200, with the
//!   core's error `code` and a `message`) has no data.
//! - **Ends.** The stream ends after the last file's frame. A stream that
//!   ends (or breaks) before every index arrived means the worker failed
//!   for the files missing.
//!
//! JSON headers keep the format open: a field added later is ignored by an
//! older reader.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The endpoint.
pub const BATCH_PATH: &str = "/v1/batch";

/// Most files in one batch request.
pub const MAX_FILES: usize = 4096;

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Largest per-file limit a worker honours: a larger one is cut to this (a
/// worker holds up to this much of each file it is sending).
pub const MAX_FILE_LIMIT: u64 = 8 << 20;

/// Largest frame header a reader accepts (a real one is ~100 bytes).
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// The content type of a batch answer.
pub const CONTENT_TYPE: &str = "application/x-alluxiofs-batch";

/// The body of `POST /v1/batch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// The files, in the order the frames' `index` refers to.
    pub files: Vec<BatchFile>,
    /// Bytes to send of each file at most (cut to [`MAX_FILE_LIMIT`]);
    /// absent: [`MAX_FILE_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// One file of a [`BatchRequest`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchFile {
    /// The UFS URL.
    pub path: String,
    /// Serve this version only (else the file's error frame is a 412).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The header of one frame of a batch answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameHeader {
    /// The file's index in the request.
    pub index: usize,
    /// 200, or the HTTP status the file's own `GET /v1/range` would have
    /// answered (the status of `code` in the core's error table).
    pub status: u16,
    /// The file's size (served files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The version the data belongs to (served files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Data bytes following the header (0 for an error frame).
    #[serde(default)]
    pub len: u64,
    /// The error's code ([`crate::error::ErrorKind::code`]), error frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The error's message, error frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The 4-byte length and JSON of `h`: what precedes a frame's data.
pub fn encode_header(h: &FrameHeader) -> Bytes {
    let json = serde_json::to_vec(h).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out.freeze()
}

/// Cuts a batch answer, fed in pieces as they arrive, into frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    /// The header of the frame whose data is still arriving.
    header: Option<FrameHeader>,
}

impl FrameDecoder {
    /// A decoder at the start of an answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the next piece of the answer.
    pub fn push(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
    }

    /// The next complete frame, if one is buffered: its header and data.
    /// An error for a malformed answer (a header too large or not JSON, a
    /// data length over [`MAX_FILE_LIMIT`]).
    pub fn next_frame(&mut self) -> Result<Option<(FrameHeader, Bytes)>, String> {
        if self.header.is_none() {
            if self.buf.len() < 4 {
                return Ok(None);
            }
            let n =
                u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            if n > MAX_HEADER_BYTES {
                return Err(format!(
                    "frame header of {n} bytes (at most {MAX_HEADER_BYTES})"
                ));
            }
            if self.buf.len() < 4 + n {
                return Ok(None);
            }
            self.buf.advance(4);
            let raw = self.buf.split_to(n);
            let h: FrameHeader =
                serde_json::from_slice(&raw).map_err(|e| format!("bad frame header: {e}"))?;
            if h.len > MAX_FILE_LIMIT {
                return Err(format!(
                    "frame of file {} announces {} bytes (at most {MAX_FILE_LIMIT})",
                    h.index, h.len
                ));
            }
            self.buf.reserve(h.len as usize);
            self.header = Some(h);
        }
        let len = self.header.as_ref().map_or(0, |h| h.len as usize);
        if self.buf.len() < len {
            return Ok(None);
        }
        let data = self.buf.split_to(len).freeze();
        Ok(self.header.take().map(|h| (h, data)))
    }

    /// Whether the answer may end here: no partial frame is buffered.
    pub fn at_frame_boundary(&self) -> bool {
        self.header.is_none() && self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(index: usize, data: &[u8]) -> (FrameHeader, Vec<u8>) {
        let h = FrameHeader {
            index,
            status: 200,
            size: Some(data.len() as u64 + 5),
            version: Some(format!("v{index}")),
            len: data.len() as u64,
            ..FrameHeader::default()
        };
        (h, data.to_vec())
    }

    /// Frames cut at every possible piece size come back whole and in order.
    #[test]
    fn frames_round_trip_whatever_the_pieces() {
        let frames = vec![
            served(2, b"hello"),
            (
                FrameHeader {
                    index: 0,
                    status: 404,
                    code: Some("not_found".into()),
                    message: Some("s3://b/x: not found".into()),
                    ..FrameHeader::default()
                },
                Vec::new(),
            ),
            served(1, &[]),
            served(3, &[7u8; 3000]),
        ];
        let mut wire = Vec::new();
        for (h, d) in &frames {
            wire.extend_from_slice(&encode_header(h));
            wire.extend_from_slice(d);
        }
        for piece in [1usize, 3, 4, 5, 17, 1000, wire.len()] {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for p in wire.chunks(piece) {
                dec.push(p);
                while let Some((h, d)) = dec.next_frame().unwrap() {
                    got.push((h, d.to_vec()));
                }
            }
            assert!(dec.at_frame_boundary());
            assert_eq!(got, frames, "pieces of {piece}");
        }
    }

    #[test]
    fn truncated_and_malformed_answers_are_told_apart() {
        let (h, d) = served(0, b"abcdef");
        let mut wire = encode_header(&h).to_vec();
        wire.extend_from_slice(&d[..3]);
        let mut dec = FrameDecoder::new();
        dec.push(&wire);
        assert_eq!(dec.next_frame().unwrap(), None);
        assert!(!dec.at_frame_boundary(), "a cut frame is not an end");

        let mut dec = FrameDecoder::new();
        dec.push(&u32::MAX.to_be_bytes());
        assert!(dec.next_frame().is_err());

        let mut dec = FrameDecoder::new();
        dec.push(&3u32.to_be_bytes());
        dec.push(b"{x}");
        assert!(dec.next_frame().unwrap_err().contains("bad frame header"));

        let big = FrameHeader {
            len: MAX_FILE_LIMIT + 1,
            status: 200,
            ..FrameHeader::default()
        };
        let mut dec = FrameDecoder::new();
        dec.push(&encode_header(&big));
        assert!(dec.next_frame().is_err());
    }

    #[test]
    fn an_older_request_without_limit_or_versions_parses() {
        let r: BatchRequest = serde_json::from_str(r#"{"files":[{"path":"s3://b/k"}]}"#).unwrap();
        assert_eq!(r.limit, None);
        assert_eq!(r.files[0].version, None);
        let j = serde_json::to_string(&BatchRequest {
            files: vec![BatchFile {
                path: "s3://b/k".into(),
                version: None,
            }],
            limit: Some(5),
        })
        .unwrap();
        assert_eq!(j, r#"{"files":[{"path":"s3://b/k"}],"limit":5}"#);
    }
}

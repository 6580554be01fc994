//! The S3 operations over the [`ReadThrough`] engine (see the module
//! documentation of [`crate::s3`]).

use super::buckets::{Bucket, Buckets};
use super::list;
use super::multipart::{self, NamedPart, Uploads};
use crate::cache::ReadThrough;
use crate::cluster::Peers;
use crate::error::WorkerError;
use crate::history::History;
use crate::metrics::Metrics;
use crate::ufs::ObjectVersion;
use crate::write::write_through;
use alluxiofs_core::error::ErrorKind;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use s3s::dto::{self, StreamingBlob, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The S3 operations over one worker's cache.
pub struct S3Front {
    pub(super) cache: Arc<ReadThrough>,
    pub(super) buckets: Buckets,
    pub(super) peers: Arc<Peers>,
    pub(super) uploads: Uploads,
    pub(super) history: Arc<History>,
    pub(super) counters: Arc<Metrics>,
    pub(super) started: SystemTime,
}

impl std::fmt::Debug for S3Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Front")
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

/// An S3 error with our message.
fn s3e(code: S3ErrorCode, msg: impl Into<String>) -> S3Error {
    S3Error::with_message(code, msg.into())
}

/// The S3 error of a worker error, for a request about an object.
fn s3_err(e: WorkerError) -> S3Error {
    let msg = e.to_string();
    let code = match e.kind() {
        ErrorKind::NotFound | ErrorKind::IsADirectory | ErrorKind::NotADirectory => {
            S3ErrorCode::NoSuchKey
        }
        ErrorKind::InvalidArgument => S3ErrorCode::InvalidArgument,
        ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => S3ErrorCode::AccessDenied,
        ErrorKind::ObjectChanged => S3ErrorCode::PreconditionFailed,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => S3ErrorCode::OperationAborted,
        ErrorKind::QuotaExceeded => S3ErrorCode::InvalidRequest,
        ErrorKind::UfsFailure
        | ErrorKind::UfsUnreachable
        | ErrorKind::Unavailable
        | ErrorKind::Timeout => S3ErrorCode::ServiceUnavailable,
        ErrorKind::Internal => S3ErrorCode::InternalError,
    };
    if code == S3ErrorCode::InternalError {
        tracing::error!("S3 request failed: {msg}");
    }
    s3e(code, msg)
}

/// The S3 error of a worker error, for a write of an object: a directory
/// where the object would go is a bad request, not a missing key.
fn s3_write_err(e: WorkerError) -> S3Error {
    match e.kind() {
        ErrorKind::IsADirectory => s3e(S3ErrorCode::InvalidRequest, e.to_string()),
        _ => s3_err(e),
    }
}

/// The S3 ETag of a version (quotes and a weak prefix stripped).
fn etag_of(version: &str) -> dto::ETag {
    dto::ETag::Strong(
        version
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string(),
    )
}

fn timestamp_of(mtime_ms: i64) -> Timestamp {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(mtime_ms).unwrap_or(0));
    Timestamp::from(t)
}

/// Seconds since the epoch of an HTTP date.
fn secs_of(t: &Timestamp) -> i64 {
    let odt: time::OffsetDateTime = t.clone().into();
    odt.unix_timestamp()
}

/// The page size a listing asks for (`max-keys`, `max-parts`,
/// `max-uploads`): at most [`list::MAX_KEYS`], 1000 when not given.
fn page_limit(asked: Option<i32>, what: &str) -> S3Result<usize> {
    match asked {
        None => Ok(list::MAX_KEYS),
        Some(m) if m < 0 => Err(s3e(
            S3ErrorCode::InvalidArgument,
            format!("{what} must not be negative"),
        )),
        Some(m) => Ok(usize::try_from(m).unwrap_or(0).min(list::MAX_KEYS)),
    }
}

fn etag_matches(cond: &dto::ETagCondition, version: &str) -> bool {
    match cond {
        dto::ETagCondition::Any => true,
        dto::ETagCondition::ETag(t) => t.value() == etag_of(version).value(),
    }
}

/// The conditional headers of a read, evaluated as S3 does: If-Match
/// (else If-Unmodified-Since) failing is 412; If-None-Match (else
/// If-Modified-Since) failing is 304.
fn check_conditions(
    v: &ObjectVersion,
    if_match: Option<&dto::ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&dto::ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let mtime = v.mtime_ms.div_euclid(1000);
    let failed = || {
        s3e(
            S3ErrorCode::PreconditionFailed,
            "a precondition does not hold",
        )
    };
    match (if_match, if_unmodified_since) {
        (Some(m), _) if !etag_matches(m, &v.version) => return Err(failed()),
        (None, Some(t)) if mtime > secs_of(t) => return Err(failed()),
        _ => {}
    }
    let not_modified = || S3Error::new(S3ErrorCode::NotModified);
    match (if_none_match, if_modified_since) {
        (Some(m), _) if etag_matches(m, &v.version) => Err(not_modified()),
        (None, Some(t)) if mtime <= secs_of(t) => Err(not_modified()),
        _ => Ok(()),
    }
}

type ByteStream = BoxStream<'static, std::result::Result<Bytes, std::io::Error>>;

impl S3Front {
    fn bucket(&self, name: &str) -> S3Result<&Bucket> {
        self.buckets.get(name).ok_or_else(|| {
            s3e(
                S3ErrorCode::NoSuchBucket,
                format!("no bucket {name:?} (buckets: {})", self.bucket_names()),
            )
        })
    }

    pub(super) fn bucket_names(&self) -> String {
        let names: Vec<&str> = self.buckets.all().map(|b| b.name.as_str()).collect();
        names.join(", ")
    }

    /// The confined URL of `key` in `bucket`.
    pub(super) fn resolve(&self, bucket: &str, key: &str) -> S3Result<String> {
        let b = self.bucket(bucket)?;
        if key.is_empty() || key.len() > 1024 {
            return Err(s3e(
                S3ErrorCode::KeyTooLongError,
                format!("keys are 1 to 1024 bytes ({} given)", key.len()),
            ));
        }
        self.cache
            .confine(&b.url_of(key))
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidArgument => s3e(S3ErrorCode::InvalidArgument, e.to_string()),
                _ => s3e(
                    S3ErrorCode::AccessDenied,
                    format!("key {key:?} of bucket {bucket:?} is outside the worker's mounts"),
                ),
            })
    }

    fn count<T>(&self, r: S3Result<T>) -> S3Result<T> {
        Metrics::add(&self.counters.s3_requests, 1);
        if r.is_err() {
            Metrics::add(&self.counters.s3_errors, 1);
        }
        r
    }

    /// The current version of the object `url` (a directory is no object).
    async fn version(&self, url: &str) -> S3Result<ObjectVersion> {
        self.cache.file_version(url, None).await.map_err(s3_err)
    }

    /// Stream bytes `range` of `v`: from the owner when another worker owns
    /// the path and answers, else from this worker's cache.
    async fn stream(&self, v: &ObjectVersion, range: Range<u64>) -> S3Result<ByteStream> {
        let counters = self.counters.clone();
        let counted = move |s: ByteStream| -> ByteStream {
            s.inspect(move |r| {
                if let Ok(b) = r {
                    Metrics::add(&counters.s3_bytes_out, b.len() as u64);
                }
            })
            .boxed()
        };
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        if let Some(owner) = self.peers.owner(&v.url) {
            match self
                .peers
                .read(&owner, &v.url, &v.version, range.start, range.end)
                .await
            {
                Ok(s) => {
                    Metrics::add(&self.counters.s3_forwarded, 1);
                    return Ok(counted(s));
                }
                Err(e) => {
                    Metrics::add(&self.counters.s3_owner_failovers, 1);
                    tracing::warn!(url = %v.url, "S3 read served here: {e}");
                }
            }
        }
        let cache = &self.cache;
        let (_, s) = cache
            .with_version(&v.url, Some(&v.version), |v| {
                let range = range.clone();
                async move { cache.read_range(&v, range).await }
            })
            .await
            .map_err(s3_err)?;
        let s: ByteStream = s.map(|r| r.map_err(std::io::Error::other)).boxed();
        Ok(counted(s))
    }

    /// Write `body` as `url` through its owner's write-through path, then
    /// make the other workers forget the path. Returns the new version.
    async fn write<S>(&self, url: &str, body: S) -> S3Result<String>
    where
        S: futures::Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let counters = self.counters.clone();
        let body = body.inspect(move |r| {
            if let Ok(b) = r {
                Metrics::add(&counters.s3_bytes_in, b.len() as u64);
            }
        });
        let (version, owner) = match self.peers.owner(url) {
            Some(owner) => {
                let out = self
                    .peers
                    .write(&owner, url, reqwest::Body::wrap_stream(body))
                    .await
                    .map_err(s3_write_err)?;
                let v = out.get("version").and_then(|v| v.as_str()).unwrap_or("");
                // This worker's metadata of the path is stale now.
                let _ = self.cache.invalidate(url, false).await;
                (v.to_string(), Some(owner))
            }
            None => {
                let out = write_through(&self.cache, url, body)
                    .await
                    .map_err(s3_write_err)?;
                self.history.note_write(out.size);
                self.history.note_pages(out.pages_cached);
                (out.version, None)
            }
        };
        self.peers.invalidate_except(url, owner.as_ref()).await;
        Ok(version)
    }
}

fn blob_stream(
    body: Option<StreamingBlob>,
) -> BoxStream<'static, std::result::Result<Bytes, std::io::Error>> {
    match body {
        Some(b) => b.map(|r| r.map_err(std::io::Error::other)).boxed(),
        None => futures::stream::empty().boxed(),
    }
}

/// `s` percent-encoded as S3's `encoding-type=url` does (all but
/// unreserved characters and `/`).
fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[async_trait::async_trait]
impl S3 for S3Front {
    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        let r = async {
            let i = req.input;
            if i.part_number.is_some() {
                return Err(s3e(S3ErrorCode::NotImplemented, "GetObject by part number"));
            }
            let url = self.resolve(&i.bucket, &i.key)?;
            let v = self.version(&url).await?;
            check_conditions(
                &v,
                i.if_match.as_ref(),
                i.if_unmodified_since.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
            )?;
            let (range, content_range) = match i.range {
                None => (0..v.size, None),
                Some(r) => {
                    let r = r.check(v.size).map_err(|_| {
                        s3e(
                            S3ErrorCode::InvalidRange,
                            format!("the range is outside the object's {} bytes", v.size),
                        )
                    })?;
                    // An empty object has no byte to give (S3 answers 416 too).
                    if r.is_empty() {
                        return Err(s3e(
                            S3ErrorCode::InvalidRange,
                            "the object is empty: no range of it is satisfiable",
                        ));
                    }
                    let cr = format!("bytes {}-{}/{}", r.start, r.end - 1, v.size);
                    (r, Some(cr))
                }
            };
            let body = self.stream(&v, range.clone()).await?;
            let out = dto::GetObjectOutput {
                body: Some(StreamingBlob::wrap(sync_wrapper::SyncStream::new(body))),
                content_length: Some((range.end - range.start) as i64),
                content_range,
                accept_ranges: Some("bytes".into()),
                content_type: Some("application/octet-stream".into()),
                e_tag: Some(etag_of(&v.version)),
                last_modified: Some(timestamp_of(v.mtime_ms)),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            let v = self.version(&url).await?;
            check_conditions(
                &v,
                i.if_match.as_ref(),
                i.if_unmodified_since.as_ref(),
                i.if_none_match.as_ref(),
                i.if_modified_since.as_ref(),
            )?;
            let out = dto::HeadObjectOutput {
                content_length: Some(v.size as i64),
                accept_ranges: Some("bytes".into()),
                content_type: Some("application/octet-stream".into()),
                e_tag: Some(etag_of(&v.version)),
                last_modified: Some(timestamp_of(v.mtime_ms)),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let r = async {
            let i = req.input;
            let b = self.bucket(&i.bucket)?;
            let max_keys = page_limit(i.max_keys, "max-keys")?;
            let token_key = match &i.continuation_token {
                Some(t) => Some(
                    list::key_of_token(t)
                        .map_err(|e| s3e(S3ErrorCode::InvalidArgument, e.to_string()))?,
                ),
                None => None,
            };
            let after = match (token_key, i.start_after.clone()) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let lr = list::ListRequest {
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone(),
                after,
                max_keys,
            };
            let page = list::list(&self.cache, b, &lr).await.map_err(s3_err)?;
            let encode = i
                .encoding_type
                .as_ref()
                .is_some_and(|e| e.as_str() == dto::EncodingType::URL);
            let enc = |s: &str| if encode { url_encode(s) } else { s.to_string() };
            let mut contents = Vec::new();
            let mut prefixes = Vec::new();
            for (key, entry) in &page.entries {
                match entry {
                    list::Entry::Object {
                        size,
                        mtime_ms,
                        etag,
                    } => contents.push(dto::Object {
                        key: Some(enc(key)),
                        size: Some(*size as i64),
                        last_modified: Some(timestamp_of(*mtime_ms)),
                        e_tag: Some(etag_of(etag)),
                        storage_class: Some(dto::ObjectStorageClass::from_static(
                            dto::ObjectStorageClass::STANDARD,
                        )),
                        ..Default::default()
                    }),
                    list::Entry::Prefix => prefixes.push(dto::CommonPrefix {
                        prefix: Some(enc(key)),
                    }),
                }
            }
            let next = page
                .truncated
                .then(|| page.entries.last().map(|(k, _)| list::token_of(k)))
                .flatten();
            let out = dto::ListObjectsV2Output {
                name: Some(b.name.clone()),
                prefix: Some(enc(&lr.prefix)),
                delimiter: i.delimiter.as_deref().map(enc),
                start_after: i.start_after.as_deref().map(enc),
                encoding_type: i.encoding_type.clone(),
                max_keys: Some(max_keys as i32),
                key_count: Some(page.entries.len() as i32),
                continuation_token: i.continuation_token.clone(),
                is_truncated: Some(page.truncated),
                next_continuation_token: next,
                contents: Some(contents),
                common_prefixes: Some(prefixes),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    /// ListObjects (version 1, which s3fs-fuse and older SDKs use): the
    /// version 2 listing with `marker` as `start-after`. `NextMarker` is the
    /// last key or common prefix of a truncated page (S3 sends it only with
    /// a delimiter; sending it always lets every client continue).
    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let marker = req.input.marker.clone();
        let v2 = req.map_input(|i| dto::ListObjectsV2Input {
            bucket: i.bucket,
            delimiter: i.delimiter,
            encoding_type: i.encoding_type,
            expected_bucket_owner: i.expected_bucket_owner,
            max_keys: i.max_keys,
            prefix: i.prefix,
            request_payer: i.request_payer,
            start_after: i.marker,
            ..Default::default()
        });
        let o = self.list_objects_v2(v2).await?.output;
        let truncated = o.is_truncated.unwrap_or(false);
        let last_key = o
            .contents
            .as_ref()
            .and_then(|c| c.last())
            .and_then(|c| c.key.clone());
        let last_prefix = o
            .common_prefixes
            .as_ref()
            .and_then(|c| c.last())
            .and_then(|c| c.prefix.clone());
        let next_marker = truncated.then(|| last_key.max(last_prefix)).flatten();
        Ok(S3Response::new(dto::ListObjectsOutput {
            name: o.name,
            prefix: o.prefix,
            delimiter: o.delimiter,
            encoding_type: o.encoding_type,
            marker,
            max_keys: o.max_keys,
            is_truncated: o.is_truncated,
            next_marker,
            contents: o.contents,
            common_prefixes: o.common_prefixes,
            ..Default::default()
        }))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        let buckets = self
            .buckets
            .all()
            .map(|b| dto::Bucket {
                name: Some(b.name.clone()),
                creation_date: Some(Timestamp::from(self.started)),
                ..Default::default()
            })
            .collect();
        let out = dto::ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(dto::Owner {
                display_name: Some("alluxiofs".into()),
                id: Some("alluxiofs".into()),
            }),
            ..Default::default()
        };
        self.count(Ok(S3Response::new(out)))
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        let r = self
            .bucket(&req.input.bucket)
            .map(|_| S3Response::new(dto::HeadBucketOutput::default()));
        self.count(r)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        let r = self
            .bucket(&req.input.bucket)
            .map(|_| S3Response::new(dto::GetBucketLocationOutput::default()));
        self.count(r)
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            if i.key.ends_with('/') {
                return self.put_directory(&url, &i.key, i.body).await;
            }
            let version = self.write(&url, blob_stream(i.body)).await?;
            let out = dto::PutObjectOutput {
                e_tag: (!version.is_empty()).then(|| etag_of(&version)),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            self.delete(&url).await?;
            Ok(S3Response::new(dto::DeleteObjectOutput::default()))
        }
        .await;
        self.count(r)
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        let r = async {
            let i = req.input;
            self.bucket(&i.bucket)?;
            if i.delete.objects.len() > 1000 {
                return Err(s3e(
                    S3ErrorCode::MalformedXML,
                    "at most 1000 keys per DeleteObjects request",
                ));
            }
            let quiet = i.delete.quiet.unwrap_or(false);
            let mut deleted = Vec::new();
            let mut errors = Vec::new();
            for o in i.delete.objects {
                let result = match self.resolve(&i.bucket, &o.key) {
                    Ok(url) => self.delete(&url).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) if quiet => {}
                    Ok(()) => deleted.push(dto::DeletedObject {
                        key: Some(o.key),
                        ..Default::default()
                    }),
                    Err(e) => errors.push(dto::Error {
                        code: Some(e.code().as_str().to_string()),
                        message: e.message().map(String::from),
                        key: Some(o.key),
                        ..Default::default()
                    }),
                }
            }
            let out = dto::DeleteObjectsOutput {
                deleted: Some(deleted),
                errors: Some(errors),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            if i.key.ends_with('/') {
                return Err(s3e(
                    S3ErrorCode::InvalidArgument,
                    "a key ending in '/' names a directory",
                ));
            }
            let id = self
                .uploads
                .create(&url, &i.bucket, &i.key)
                .await
                .map_err(s3_err)?;
            let out = dto::CreateMultipartUploadOutput {
                bucket: Some(i.bucket),
                key: Some(i.key),
                upload_id: Some(id),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            self.upload_of(&i.upload_id, &url).await?;
            let counters = self.counters.clone();
            let body = blob_stream(i.body).inspect(move |r| {
                if let Ok(b) = r {
                    Metrics::add(&counters.s3_bytes_in, b.len() as u64);
                }
            });
            let md5 = self
                .uploads
                .put_part(&i.upload_id, i.part_number, body)
                .await
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => no_such_upload(),
                    _ if e.to_string().starts_with("EntityTooLarge") => {
                        s3e(S3ErrorCode::EntityTooLarge, e.to_string())
                    }
                    _ => s3_err(e),
                })?;
            let out = dto::UploadPartOutput {
                e_tag: Some(dto::ETag::Strong(md5)),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            self.upload_of(&i.upload_id, &url).await?;
            let parts: Vec<NamedPart> = i
                .multipart_upload
                .and_then(|m| m.parts)
                .unwrap_or_default()
                .into_iter()
                .map(|p| NamedPart {
                    number: p.part_number.unwrap_or(0),
                    etag: p.e_tag.map(|t| t.value().to_string()),
                })
                .collect();
            let (paths, multipart_etag) = self
                .uploads
                .check_parts(&i.upload_id, &parts)
                .await
                .map_err(|e| {
                    let m = e.to_string();
                    if m.contains("InvalidPartOrder") {
                        s3e(S3ErrorCode::InvalidPartOrder, m)
                    } else if m.contains("InvalidPart") {
                        s3e(S3ErrorCode::InvalidPart, m)
                    } else {
                        s3_err(e)
                    }
                })?;
            let version = self.write(&url, multipart::concat(paths)).await?;
            if let Err(e) = self.uploads.remove(&i.upload_id).await {
                tracing::warn!(upload = %i.upload_id, "completed, but its parts stay on disk: {e}");
            }
            let etag = if version.is_empty() {
                multipart_etag
            } else {
                version
            };
            let out = dto::CompleteMultipartUploadOutput {
                bucket: Some(i.bucket),
                key: Some(i.key),
                e_tag: Some(etag_of(&etag)),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            self.upload_of(&i.upload_id, &url).await?;
            let max = page_limit(i.max_parts, "max-parts")?;
            let after = i.part_number_marker.unwrap_or(0);
            let stored = self
                .uploads
                .parts(&i.upload_id)
                .await
                .map_err(|_| no_such_upload())?;
            let mut rest = stored.into_iter().filter(|p| p.number > after).peekable();
            let page: Vec<_> = rest.by_ref().take(max).collect();
            let truncated = rest.peek().is_some();
            let next = page.last().map(|p| p.number);
            let parts = page
                .into_iter()
                .map(|p| dto::Part {
                    e_tag: Some(dto::ETag::Strong(p.md5)),
                    last_modified: Some(Timestamp::from(p.modified)),
                    part_number: Some(p.number),
                    size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                    ..Default::default()
                })
                .collect();
            let out = dto::ListPartsOutput {
                bucket: Some(i.bucket),
                key: Some(i.key),
                upload_id: Some(i.upload_id),
                max_parts: Some(max as i32),
                part_number_marker: i.part_number_marker,
                next_part_number_marker: if truncated { next } else { None },
                is_truncated: Some(truncated),
                parts: Some(parts),
                storage_class: Some(dto::StorageClass::from_static(dto::StorageClass::STANDARD)),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let r = async {
            let i = req.input;
            self.bucket(&i.bucket)?;
            let max = page_limit(i.max_uploads, "max-uploads")?;
            let prefix = i.prefix.clone().unwrap_or_default();
            let all = self.uploads.list(&i.bucket, &prefix).await;
            // After the markers: keys after key-marker; with an
            // upload-id-marker, also the uploads of key-marker that come after
            // that upload in the listing's order.
            let key_marker = i.key_marker.clone().unwrap_or_default();
            let start = i
                .upload_id_marker
                .as_deref()
                .filter(|_| !key_marker.is_empty())
                .and_then(|m| all.iter().position(|u| u.key == key_marker && u.id == m))
                .map(|at| at + 1)
                .unwrap_or_else(|| {
                    all.iter()
                        .position(|u| key_marker.is_empty() || u.key > key_marker)
                        .unwrap_or(all.len())
                });
            let rows = all.into_iter().skip(start);
            let mut uploads = Vec::new();
            let mut prefixes: Vec<String> = Vec::new();
            let mut truncated = false;
            let mut last: Option<(String, String)> = None;
            for u in rows {
                let rest = &u.key[prefix.len()..];
                if let Some(d) = i.delimiter.as_deref().filter(|d| !d.is_empty()) {
                    if let Some(at) = rest.find(d) {
                        let cp = format!("{prefix}{}", &rest[..at + d.len()]);
                        // A prefix a page ended on was listed whole on it.
                        if cp != key_marker && prefixes.last() != Some(&cp) {
                            if uploads.len() + prefixes.len() == max {
                                truncated = true;
                                break;
                            }
                            last = Some((cp.clone(), String::new()));
                            prefixes.push(cp);
                        }
                        continue;
                    }
                }
                if uploads.len() + prefixes.len() == max {
                    truncated = true;
                    break;
                }
                last = Some((u.key.clone(), u.id.clone()));
                uploads.push(dto::MultipartUpload {
                    initiated: Some(Timestamp::from(u.initiated)),
                    key: Some(u.key),
                    upload_id: Some(u.id),
                    storage_class: Some(dto::StorageClass::from_static(
                        dto::StorageClass::STANDARD,
                    )),
                    ..Default::default()
                });
            }
            let (next_key, next_id) = match (truncated, last) {
                (true, Some((k, id))) => (Some(k), Some(id).filter(|s| !s.is_empty())),
                _ => (None, None),
            };
            let out = dto::ListMultipartUploadsOutput {
                bucket: Some(i.bucket),
                prefix: i.prefix,
                delimiter: i.delimiter,
                key_marker: i.key_marker,
                upload_id_marker: i.upload_id_marker,
                max_uploads: Some(max as i32),
                is_truncated: Some(truncated),
                next_key_marker: next_key,
                next_upload_id_marker: next_id,
                uploads: Some(uploads),
                common_prefixes: Some(
                    prefixes
                        .into_iter()
                        .map(|p| dto::CommonPrefix { prefix: Some(p) })
                        .collect(),
                ),
                ..Default::default()
            };
            Ok(S3Response::new(out))
        }
        .await;
        self.count(r)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let r = async {
            let i = req.input;
            let url = self.resolve(&i.bucket, &i.key)?;
            self.upload_of(&i.upload_id, &url).await?;
            self.uploads
                .remove(&i.upload_id)
                .await
                .map_err(|_| no_such_upload())?;
            Ok(S3Response::new(dto::AbortMultipartUploadOutput::default()))
        }
        .await;
        self.count(r)
    }
}

fn no_such_upload() -> S3Error {
    s3e(
        S3ErrorCode::NoSuchUpload,
        "no such multipart upload (completed, aborted or never created)",
    )
}

impl S3Front {
    /// Check that upload `id` writes `url`.
    async fn upload_of(&self, id: &str, url: &str) -> S3Result<()> {
        match self.uploads.target(id).await {
            Ok(t) if t == url => Ok(()),
            _ => Err(no_such_upload()),
        }
    }

    /// Delete `url` at the UFS (a missing object is no error, as in S3)
    /// and make every worker forget it.
    async fn delete(&self, url: &str) -> S3Result<()> {
        match self.cache.ufs().delete(url).await {
            Ok(()) => {}
            // A directory of a local UFS is no object: nothing to delete.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::IsADirectory) => {}
            Err(e) => return Err(s3_err(e)),
        }
        let _ = self.cache.invalidate(url, false).await;
        self.peers.invalidate_except(url, None).await;
        Ok(())
    }

    /// PutObject of a key ending in `/` (a "folder" as consoles make
    /// them): a directory on a local UFS; object stores have no
    /// directories, so an empty body there is accepted as a no-op.
    async fn put_directory(
        &self,
        url: &str,
        key: &str,
        body: Option<StreamingBlob>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        let mut body = blob_stream(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| s3e(S3ErrorCode::IncompleteBody, e.to_string()))?;
            if !chunk.is_empty() {
                return Err(s3e(
                    S3ErrorCode::InvalidArgument,
                    format!("key {key:?} ends in '/' (a directory): its body must be empty"),
                ));
            }
        }
        match self.cache.ufs().local_path(url).map_err(s3_err)? {
            Some(path) => tokio::fs::create_dir_all(&path).await.map_err(|e| {
                let what = format!("cannot create the directory {key:?}: {e}");
                match crate::error::client_kind(e.kind()) {
                    // A file stands there, or a name is too long: the request's doing.
                    Some(_) => s3e(S3ErrorCode::InvalidRequest, what),
                    None => s3_err(WorkerError::io(what, e)),
                }
            })?,
            None => tracing::debug!(url, "directory marker on an object store: nothing to do"),
        }
        let _ = self.cache.invalidate(url, false).await;
        Ok(S3Response::new(dto::PutObjectOutput::default()))
    }
}

//! The S3 endpoint of a worker (`docs/s3-api.md`): every mount is a
//! bucket, and S3 clients (boto3, PyArrow's `S3FileSystem`, Polars,
//! obstore, s3fs, DuckDB, Alluxio's own Python client) read through the
//! cache with an endpoint URL and no code change.
//!
//! The protocol (request parsing, SigV4, XML, errors) is the `s3s` crate's;
//! this module answers the operations over the [`ReadThrough`] engine, the
//! way the HTTP routes do:
//! - **Reads** (GetObject, HeadObject) name the version they serve (the
//!   UFS ETag and Last-Modified are in the answer; `If-Match`,
//!   `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since` are
//!   evaluated against it), and the bytes come from the page store of the
//!   path's owner ([`peers`]): here when this worker owns the path, else
//!   streamed from the owner (or, opt-in, a 307 redirect to it).
//! - **Listings** (ListObjectsV2, and ListObjects v1 over it) come from the worker's cached UFS
//!   listings ([`list`]); ListBuckets, HeadBucket and GetBucketLocation
//!   from the bucket table ([`buckets`]).
//! - **Writes** (PutObject, multipart uploads through [`multipart`]) go
//!   through the owner's write-through path (UFS upload and cache pages in
//!   one pass); DeleteObject(s) delete at the UFS and make every worker
//!   forget the path.
//! - Every other operation answers S3's `NotImplemented` (s3s's default).
//! - **Confinement**: a key becomes a URL under its bucket's root and goes
//!   through the same confinement as every HTTP request, so no key
//!   (`..`, encoded slashes, anything) reaches outside the mounts.
//! - **Auth**: SigV4 against the configured access keys; unsigned requests
//!   only with `s3_anonymous`. With neither, every request is refused (the
//!   endpoint still listens, so the refusal explains itself).

pub mod buckets;
pub mod list;
pub mod multipart;
mod ops;

use crate::config::{S3Keys, WorkerConfig};
use crate::error::WorkerError;
use crate::metrics::Metrics;
use crate::state::AppState;
use buckets::{valid_name, Buckets};
use multipart::Uploads;
pub use ops::S3Front;
use s3s::auth::{SecretKey, SimpleAuth};
use s3s::dto;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Request, S3Response, S3Result, S3};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Any bucket name a mount may have ([`valid_name`]).
struct MountNames;

impl s3s::validation::NameValidation for MountNames {
    fn validate_bucket_name(&self, name: &str) -> bool {
        valid_name(name)
    }
}

/// Unsigned requests allowed (signed ones are still verified).
struct Anonymous;

#[async_trait::async_trait]
impl s3s::access::S3Access for Anonymous {
    async fn check(&self, _cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

/// What the S3 listener shares between requests.
struct Shared {
    service: S3Service,
    front: Arc<S3Front>,
    redirect: bool,
    state: Arc<AppState>,
}

/// A running S3 endpoint; [`S3Server::stop`] ends it.
#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let requests in progress finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Build the S3 service of `state` (keys, buckets, cluster view).
fn build(state: &Arc<AppState>) -> crate::error::Result<(S3Service, Arc<S3Front>)> {
    let config: &WorkerConfig = &state.config;
    let cache = state.cache.clone();
    let buckets = Buckets::new(&cache.ufs().mounts(), &config.s3_buckets)?;
    let keys: S3Keys = config.resolve_s3_keys()?;
    let peers = state.cluster()?;
    let uploads = Uploads::open(
        cache.spool_dir().with_file_name(".s3-uploads"),
        Some(cache.store().clone()),
    );
    let front = Arc::new(S3Front {
        cache,
        buckets,
        peers,
        uploads,
        history: state.history.clone(),
        counters: state.cache.metrics().clone(),
        started: SystemTime::now(),
    });
    let mut b = S3ServiceBuilder::new(SharedFront(front.clone()));
    b.set_validation(MountNames);
    if !keys.0.is_empty() || !config.s3_anonymous {
        let mut auth = SimpleAuth::new();
        for (access, secret) in keys.0 {
            auth.register(access, SecretKey::from(secret));
        }
        b.set_auth(auth);
        if config.s3_anonymous {
            b.set_access(Anonymous);
        }
    }
    Ok((b.build(), front))
}

/// The S3 trait on an `Arc` (s3s takes the implementation by value).
struct SharedFront(Arc<S3Front>);

macro_rules! delegate {
    ($($op:ident: $input:ident => $output:ident,)*) => {
        #[async_trait::async_trait]
        impl S3 for SharedFront {
            $(
                async fn $op(&self, req: S3Request<dto::$input>) -> S3Result<S3Response<dto::$output>> {
                    self.0.$op(req).await
                }
            )*
        }
    };
}

delegate! {
    get_object: GetObjectInput => GetObjectOutput,
    head_object: HeadObjectInput => HeadObjectOutput,
    list_objects: ListObjectsInput => ListObjectsOutput,
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
    list_buckets: ListBucketsInput => ListBucketsOutput,
    head_bucket: HeadBucketInput => HeadBucketOutput,
    get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
    put_object: PutObjectInput => PutObjectOutput,
    delete_object: DeleteObjectInput => DeleteObjectOutput,
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
    upload_part: UploadPartInput => UploadPartOutput,
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    list_parts: ListPartsInput => ListPartsOutput,
    list_multipart_uploads: ListMultipartUploadsInput => ListMultipartUploadsOutput,
}

/// Start the S3 endpoint of `state` beside the worker on `http_port`, as
/// `config.s3_port` says; `None` when it is off, or when under `auto` its
/// port is taken or a mount cannot be a bucket (both logged).
pub async fn start(
    state: &Arc<AppState>,
    http_port: u16,
    tls: Option<Arc<crate::tls::TlsServer>>,
) -> crate::error::Result<Option<S3Server>> {
    let Some((port, must)) = state.config.s3_port.resolve(http_port) else {
        return Ok(None);
    };
    let host = state
        .config
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let listener = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
        Ok(l) => l,
        Err(e) if !must => {
            tracing::warn!(
                "S3 endpoint off: cannot listen on {host}:{port} ({e}); set s3_port to another port or off"
            );
            return Ok(None);
        }
        Err(e) => {
            return Err(WorkerError::io(
                format!("cannot listen for S3 on {host}:{port}"),
                e,
            ))
        }
    };
    let addr = listener
        .local_addr()
        .map_err(|e| WorkerError::io("S3 local address", e))?;
    let (service, front) = match build(state) {
        Ok(built) => built,
        // Under `auto` the endpoint is an extra: a mount that cannot be a
        // bucket turns it off, never the worker.
        Err(e) if !must => {
            tracing::warn!(
                "S3 endpoint off: {e}; set s3_port to a port to make this an error, or off"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if state.config.resolve_s3_keys()?.0.is_empty() && !state.config.s3_anonymous {
        tracing::warn!(
            "S3 endpoint on {addr} refuses every request: configure access keys \
             (s3_keys_file, ALLUXIOFS_WORKER_S3_ACCESS_KEY/_SECRET_KEY) or s3_anonymous"
        );
    } else {
        tracing::info!(
            buckets = %front.bucket_names(),
            "S3 endpoint on {}://{addr}",
            state.config.scheme()
        );
    }
    let shared = Arc::new(Shared {
        service,
        front,
        redirect: state.config.s3_redirect,
        state: state.clone(),
    });
    let router = axum::Router::new().fallback(handle).with_state(shared);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = crate::tls::serve(listener, tls, router, async move {
        let _ = stopped.await;
    });
    let task = tokio::spawn(async move {
        match served.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("S3 endpoint stopped: {e}"),
            Err(e) => tracing::error!("S3 endpoint task: {e}"),
        }
    });
    let _ = state.s3_port.set(addr.port());
    Ok(Some(S3Server {
        addr,
        stop: Some(stop),
        task,
    }))
}

/// Every S3 request: a redirect to the owner when configured, else the
/// s3s service.
async fn handle(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if shared.state.shutting_down.load(Ordering::Relaxed) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if shared.redirect && req.method() == axum::http::Method::GET {
        let scheme = shared.state.config.scheme();
        if let Some(to) = redirect_target(&shared.front, scheme, req.uri()).await {
            Metrics::add(&shared.front.counters.s3_redirected, 1);
            return (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, to)],
            )
                .into_response();
        }
    }
    let mut req = req;
    drop_unusable_range(req.headers_mut());
    // s3s answers a body it could not read (cut before its Content-Length,
    // broken chunked encoding) with a bare 500 InternalError: the client's
    // fault is told apart by this flag and answered 400 IncompleteBody.
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let req = req.map(|body| {
        s3s::Body::http_body_unsync(http_body_util::BodyExt::map_err(body, move |e| {
            flag.store(true, Ordering::Relaxed);
            e
        }))
    });
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = call_service(&shared, req, &broken).await;
    // One line per failed request, ours rather than s3s's (which logs every
    // client error at ERROR and is quiet by default, see
    // `crate::server::init_logging`): the client's errors at debug, the
    // endpoint's at warn. The path only: a presigned query holds a signature.
    let status = resp.status();
    if status.is_server_error() {
        tracing::warn!(%method, path, status = status.as_u16(), "S3 request failed");
    } else if status.is_client_error() {
        tracing::debug!(%method, path, status = status.as_u16(), "S3 request refused");
    }
    resp
}

async fn call_service(
    shared: &Shared,
    req: axum::http::Request<s3s::Body>,
    broken: &AtomicBool,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match shared.service.call(req).await {
        Ok(resp)
            if resp.status() == axum::http::StatusCode::INTERNAL_SERVER_ERROR
                && broken.load(Ordering::Relaxed) =>
        {
            Metrics::add(&shared.front.counters.s3_errors, 1);
            incomplete_body()
        }
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => {
            tracing::error!("S3 request failed: {e:?}");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            )
                .into_response()
        }
    }
}

/// The answer to a request whose body could not be read.
fn incomplete_body() -> axum::response::Response {
    use axum::response::IntoResponse;
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>IncompleteBody</Code>\
               <Message>the request body could not be read (cut short, or a broken \
               chunked encoding)</Message></Error>";
    (
        axum::http::StatusCode::BAD_REQUEST,
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        xml,
    )
        .into_response()
}

/// Remove a `Range` header that is no single byte range (`bytes=0--2`,
/// `bytes=0-1,5-9`, `items=0-1`): as S3 (and RFC 9110) does, the answer is
/// then the whole object, not an error. Alluxio's Python client 1.1.17
/// sends `bytes=0--2` for a whole-file read.
fn drop_unusable_range(headers: &mut axum::http::HeaderMap) {
    let usable = match headers.get(axum::http::header::RANGE) {
        None => return,
        Some(v) => v
            .to_str()
            .is_ok_and(|t| dto::Range::parse(t.trim()).is_ok()),
    };
    if !usable {
        headers.remove(axum::http::header::RANGE);
    }
}

/// The query parameter a redirect adds: a request that carries it was
/// redirected once already and is served where it lands, so two workers
/// whose cluster views disagree for a moment cannot bounce a client
/// between them.
const REDIRECTED: &str = "alluxiofs-redirected";

/// Where a GET of an object another worker owns is redirected:
/// `<scheme>://<owner>:<its S3 port><path and query>&alluxiofs-redirected=1`.
async fn redirect_target(front: &S3Front, scheme: &str, uri: &axum::http::Uri) -> Option<String> {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    // Only plain object GETs (not listings, uploads or other subresources).
    if query.split('&').any(|kv| {
        let k = kv.split('=').next().unwrap_or("");
        matches!(
            k,
            "uploadId" | "partNumber" | "list-type" | "location" | "acl" | "tagging" | REDIRECTED
        )
    }) {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(path.strip_prefix('/')?)
        .decode_utf8()
        .ok()?;
    let (bucket, key) = decoded.split_once('/')?;
    if key.is_empty() {
        return None;
    }
    let url = front.resolve(bucket, key).ok()?;
    let owner = front.peers.owner(&url)?;
    let port = front.peers.s3_port_of(&owner).await?;
    let host = if owner.host.contains(':') && !owner.host.starts_with('[') {
        format!("[{}]", owner.host)
    } else {
        owner.host.clone()
    };
    let q = match uri.query() {
        Some(q) if !q.is_empty() => format!("?{q}&{REDIRECTED}=1"),
        _ => format!("?{REDIRECTED}=1"),
    };
    Some(format!("{scheme}://{host}:{port}{path}{q}"))
}

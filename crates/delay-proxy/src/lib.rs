//! A delaying TCP proxy: what `tc netem delay` would do, in user space.
//!
//! The kernels of our benchmark machines lack `netem`, so latency towards the
//! emulated remote object store comes from this proxy. Every connection
//! accepted on the listening socket is forwarded to one target address, and
//! every chunk of bytes is held back by half the configured round trip in each
//! direction.
//!
//! Design: each direction of a connection is a pair of tasks joined by a
//! bounded channel. The reader stamps each chunk with `arrival + delay` the
//! moment it is read and queues it; the writer sleeps until that deadline and
//! writes the chunk. Deadlines grow monotonically, so order is preserved and
//! chunks in flight overlap: the delay is added once per chunk's journey, not
//! once per chunk serially, and throughput is bounded by the link, not by
//! `chunk / delay`. The channel's capacity bounds the memory held per
//! direction (backpressure reaches the sender through TCP). End of stream is
//! forwarded as a write shutdown after the same delay. Sockets on both sides
//! set `TCP_NODELAY`, so the proxy adds no Nagle stalls of its own.
//!
//! [`Stats`] counts connections, bytes in each direction and HTTP/1.1
//! requests (upstream chunks that begin with a request method, which is what
//! a request from a non-pipelining client looks like on the wire).
//!
//! **Faults.** [`Faults`], settable while the proxy runs, makes it misbehave
//! the way an overloaded or failing S3 endpoint does, for the soak tests
//! (`scripts/soak.py`). The decision is taken per HTTP request, where the
//! client-to-target reader sees one begin, with the configured probability;
//! a request picked is not forwarded, and the connection ends after it
//! (the next request of the client opens a new one, which is again subject
//! to the faults, so kept-alive connections get no free pass):
//!
//! - [`FaultMode::SlowDown`] / [`FaultMode::Unavailable`]: the client gets
//!   `503` with the S3 XML error body (`<Code>SlowDown</Code>` or
//!   `<Code>ServiceUnavailable</Code>`) and `Connection: close`;
//! - [`FaultMode::Reset`]: the connection is reset (`SO_LINGER` 0, a RST)
//!   before any byte of an answer;
//! - [`FaultMode::Cut`]: the request is forwarded, the first part of the
//!   target's answer reaches the client, then the connection is reset: a
//!   response dropped mid-body.
//!
//! The reader tells the client-bound writer (which owns the client's write
//! half) through a one-slot channel; the writer acts on it before any later
//! chunk, so an answer of the target to a picked request never leaks through
//! (except the first half of a chunk, for `Cut`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// Size of one read from a socket.
const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction before the reader waits (at most 16 MiB).
const QUEUE: usize = 256;

/// Counters shared by all connections of one proxy.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections currently open.
    pub open: AtomicU64,
    /// Bytes forwarded from clients to the target.
    pub bytes_up: AtomicU64,
    /// Bytes forwarded from the target to clients.
    pub bytes_down: AtomicU64,
    /// Upstream chunks starting with an HTTP request method.
    pub http_requests: AtomicU64,
    /// Requests answered by a fault instead of the target ([`Faults`]).
    pub faults_injected: AtomicU64,
}

impl Stats {
    /// The counters as one JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"connections\":{},\"open\":{},\"bytes_up\":{},\"bytes_down\":{},\"http_requests\":{},\"faults_injected\":{}}}",
            self.connections.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
            self.http_requests.load(Ordering::Relaxed),
            self.faults_injected.load(Ordering::Relaxed),
        )
    }
}

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where every accepted connection is forwarded.
    pub target: SocketAddr,
    /// Full round trip added: half on the way up, half on the way down.
    pub rtt: Duration,
    /// Print each HTTP request line (and its `Range` header) on stderr.
    pub log_requests: bool,
    /// Faults to inject, shared with whoever changes them at run time.
    pub faults: Arc<Faults>,
}

/// What the proxy does with an HTTP request picked for a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Forward everything (no fault).
    Pass,
    /// Answer `503` with the S3 error code `SlowDown`.
    SlowDown,
    /// Answer `503` with the S3 error code `ServiceUnavailable`.
    Unavailable,
    /// Reset the connection before any byte of an answer.
    Reset,
    /// Forward the request, pass part of the answer, then reset.
    Cut,
}

impl FaultMode {
    const ALL: [FaultMode; 5] = [
        FaultMode::Pass,
        FaultMode::SlowDown,
        FaultMode::Unavailable,
        FaultMode::Reset,
        FaultMode::Cut,
    ];

    /// The name used on the command line and in the control file.
    pub fn name(self) -> &'static str {
        match self {
            FaultMode::Pass => "pass",
            FaultMode::SlowDown => "slowdown",
            FaultMode::Unavailable => "unavailable",
            FaultMode::Reset => "reset",
            FaultMode::Cut => "cut",
        }
    }

    fn from_u8(v: u8) -> FaultMode {
        FaultMode::ALL[usize::from(v).min(FaultMode::ALL.len() - 1)]
    }

    fn as_u8(self) -> u8 {
        FaultMode::ALL.iter().position(|m| *m == self).unwrap_or(0) as u8
    }
}

/// A fault mode and the probability that it applies to a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSetting {
    /// What a picked request gets.
    pub mode: FaultMode,
    /// Probability in `[0, 1]` that a request is picked.
    pub probability: f64,
}

impl FaultSetting {
    /// No fault.
    pub const PASS: FaultSetting = FaultSetting {
        mode: FaultMode::Pass,
        probability: 0.0,
    };
}

impl fmt::Display for FaultSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.mode.name(), self.probability)
    }
}

impl FromStr for FaultSetting {
    type Err = String;

    /// `MODE` or `MODE P` or `MODE:P` (P defaults to 1; `pass` takes none).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s
            .trim()
            .split([' ', ':', '\t', '\n'])
            .filter(|p| !p.is_empty());
        let name = parts.next().unwrap_or("pass");
        let mode = FaultMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("unknown fault mode {name:?} (pass, slowdown, unavailable, reset, cut)")
            })?;
        let probability = match parts.next() {
            None => 1.0,
            Some(p) => p
                .parse::<f64>()
                .map_err(|e| format!("fault probability {p:?}: {e}"))?,
        };
        if let Some(extra) = parts.next() {
            return Err(format!("unexpected {extra:?} after the fault probability"));
        }
        if !(0.0..=1.0).contains(&probability) {
            return Err(format!(
                "fault probability must be in [0, 1], got {probability}"
            ));
        }
        if mode == FaultMode::Pass {
            return Ok(FaultSetting::PASS);
        }
        Ok(FaultSetting { mode, probability })
    }
}

/// The faults in force, changed at any time by [`Faults::set`]; connections
/// read them at every request.
#[derive(Debug)]
pub struct Faults {
    mode: AtomicU8,
    /// Probability in millionths.
    ppm: AtomicU32,
    rng: AtomicU64,
}

impl Default for Faults {
    fn default() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        Faults::with_seed(seed)
    }
}

impl Faults {
    /// No fault, with a fixed seed for the probability rolls.
    pub fn with_seed(seed: u64) -> Self {
        Faults {
            mode: AtomicU8::new(FaultMode::Pass.as_u8()),
            ppm: AtomicU32::new(0),
            rng: AtomicU64::new(seed),
        }
    }

    /// Apply `setting` to every request from now on.
    pub fn set(&self, setting: FaultSetting) {
        let ppm = (setting.probability.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.ppm.store(ppm, Ordering::Relaxed);
        self.mode.store(setting.mode.as_u8(), Ordering::Release);
    }

    /// The setting in force.
    pub fn get(&self) -> FaultSetting {
        let mode = FaultMode::from_u8(self.mode.load(Ordering::Acquire));
        if mode == FaultMode::Pass {
            return FaultSetting::PASS;
        }
        let probability = f64::from(self.ppm.load(Ordering::Relaxed)) / 1e6;
        FaultSetting { mode, probability }
    }

    /// The fault for one request, if it is picked.
    fn roll(&self) -> Option<FaultMode> {
        let setting = self.get();
        if setting.mode == FaultMode::Pass {
            return None;
        }
        let ppm = self.ppm.load(Ordering::Relaxed);
        if ppm >= 1_000_000 {
            return Some(setting.mode);
        }
        // splitmix64 over a shared counter: uniform enough, no dependency.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z % 1_000_000) < u64::from(ppm)).then_some(setting.mode)
    }
}

/// The answer of an S3 endpoint that refuses a request with `503`.
fn error_response(mode: FaultMode, head_request: bool) -> Vec<u8> {
    let (code, message) = match mode {
        FaultMode::SlowDown => ("SlowDown", "Please reduce your request rate."),
        _ => (
            "ServiceUnavailable",
            "The service is unavailable. Please retry.",
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>alluxiofs-delay-proxy</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\
         x-amz-request-id: alluxiofs-delay-proxy\r\n\r\n",
        if head_request { 0 } else { body.len() }
    )
    .into_bytes();
    if !head_request {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Accept connections on `listener` forever, forwarding each to the target.
pub async fn serve(listener: TcpListener, config: Config, stats: Arc<Stats>) -> io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let config = config.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            stats.open.fetch_add(1, Ordering::Relaxed);
            // A failed connection to the target simply closes the client's.
            let _ = handle(client, &config, &stats).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn handle(client: TcpStream, config: &Config, stats: &Arc<Stats>) -> io::Result<()> {
    let upstream = TcpStream::connect(config.target).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let half = config.rtt / 2;
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    // The client-to-target reader picks requests for faults; the writer
    // towards the client carries them out.
    let (fault_tx, fault_rx) = mpsc::channel::<Fault>(1);
    // Set once the client's connection was reset: the reader of the client
    // stops, and its half of the socket goes (which is what sends the RST).
    let closed = Arc::new(Notify::new());
    let up = pipe(
        cr,
        uw,
        half,
        stats.clone(),
        Direction::Up {
            log: config.log_requests,
            faults: config.faults.clone(),
            fault_tx,
            closed: closed.clone(),
        },
    );
    let down = pipe(
        ur,
        cw,
        half,
        stats.clone(),
        Direction::Down { fault_rx, closed },
    );
    let (a, b) = tokio::join!(up, down);
    a.and(b)
}

/// A fault picked for one request, sent to the client-bound writer.
#[derive(Debug, Clone, Copy)]
struct Fault {
    mode: FaultMode,
    head_request: bool,
}

enum Direction {
    /// Client to target: counts and logs requests, picks faults.
    Up {
        log: bool,
        faults: Arc<Faults>,
        fault_tx: mpsc::Sender<Fault>,
        closed: Arc<Notify>,
    },
    /// Target to client: carries the faults out.
    Down {
        fault_rx: mpsc::Receiver<Fault>,
        closed: Arc<Notify>,
    },
}

const METHODS: [&[u8]; 7] = [
    b"GET ",
    b"HEAD ",
    b"PUT ",
    b"POST ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
];

/// The request line of an HTTP/1.1 request, plus its `Range` header if any.
fn request_summary(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(&head[..head.len().min(4096)]);
    let mut lines = text.split("\r\n");
    let mut out = lines.next().unwrap_or_default().to_string();
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.len() > 6 && line[..6].eq_ignore_ascii_case("range:") {
            out.push(' ');
            out.push_str(line);
        }
    }
    out
}

/// One direction: read chunks, stamp them, write each at its deadline.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    stats: Arc<Stats>,
    direction: Direction,
) -> io::Result<()> {
    // `None` is end of stream.
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(QUEUE);
    let (upstream, mut fault_rx, closed) = match direction {
        Direction::Up {
            log,
            faults,
            fault_tx,
            closed,
        } => (Some((log, faults, fault_tx)), None, closed),
        Direction::Down { fault_rx, closed } => (None, Some(fault_rx), closed),
    };
    let reset_done = closed.clone();
    let reader_stats = stats.clone();
    let reader = async move {
        let stats = reader_stats;
        loop {
            let mut buf = vec![0u8; CHUNK];
            // A read error ends the stream like an EOF.
            let n = if upstream.is_some() {
                tokio::select! {
                    n = from.read(&mut buf) => n.unwrap_or_default(),
                    () = closed.notified() => return,
                }
            } else {
                from.read(&mut buf).await.unwrap_or_default()
            };
            let due = Instant::now() + delay;
            if n == 0 {
                let _ = tx.send((due, None)).await;
                return;
            }
            buf.truncate(n);
            if let Some((log, faults, fault_tx)) = &upstream {
                stats.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                if METHODS.iter().any(|m| buf.starts_with(m)) {
                    stats.http_requests.fetch_add(1, Ordering::Relaxed);
                    if *log {
                        eprintln!("{}", request_summary(&buf));
                    }
                    if let Some(mode) = faults.roll() {
                        stats.faults_injected.fetch_add(1, Ordering::Relaxed);
                        let fault = Fault {
                            mode,
                            head_request: buf.starts_with(b"HEAD "),
                        };
                        // The writer towards the client learns it first,
                        // then (for `Cut`) the request goes on.
                        let _ = fault_tx.send(fault).await;
                        if mode != FaultMode::Cut {
                            let _ = tx.send((due, None)).await;
                            return;
                        }
                    }
                }
            } else {
                stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
            }
            if tx.send((due, Some(buf))).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        let mut cut = false;
        loop {
            let next = match fault_rx.as_mut() {
                Some(faults) => tokio::select! {
                    biased;
                    Some(fault) = faults.recv() => Err(fault),
                    chunk = rx.recv() => Ok(chunk),
                },
                None => Ok(rx.recv().await),
            };
            match next {
                Err(Fault {
                    mode: FaultMode::Cut,
                    ..
                }) => cut = true,
                Err(fault) => {
                    reset_done.notify_one();
                    return answer_fault(to, fault).await;
                }
                Ok(Some((due, chunk))) => {
                    tokio::time::sleep_until(due).await;
                    match chunk {
                        Some(bytes) if cut => {
                            // Half of what the target answered, then a RST.
                            let keep = bytes.len().div_ceil(2);
                            to.write_all(&bytes[..keep]).await?;
                            reset_done.notify_one();
                            return reset(to);
                        }
                        Some(bytes) => to.write_all(&bytes).await?,
                        None => break,
                    }
                }
                Ok(None) => break,
            }
        }
        to.shutdown().await
    };
    tokio::pin!(reader, writer);
    // Once the writer is done (end of stream, an error or a fault), what the
    // reader still waits for is of no use: it is dropped with its socket half.
    tokio::select! {
        biased;
        res = &mut writer => res,
        () = &mut reader => writer.await,
    }
}

/// Carry out a fault that answers instead of the target.
async fn answer_fault(mut to: OwnedWriteHalf, fault: Fault) -> io::Result<()> {
    match fault.mode {
        FaultMode::SlowDown | FaultMode::Unavailable => {
            to.write_all(&error_response(fault.mode, fault.head_request))
                .await?;
            to.shutdown().await
        }
        _ => reset(to),
    }
}

/// Close the client's connection with a RST, as a crashed server's host does.
fn reset(to: OwnedWriteHalf) -> io::Result<()> {
    to.as_ref().set_zero_linger()?;
    // No FIN on drop: the socket closes (with the RST) when the read half,
    // dropped with the other direction, goes too.
    to.forget();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{error_response, request_summary, FaultMode, FaultSetting, Faults};

    #[test]
    fn summary_keeps_the_request_line_and_range() {
        let head = b"GET /bench/a.parquet HTTP/1.1\r\nhost: x\r\nRange: bytes=0-1048575\r\n\r\n";
        assert_eq!(
            request_summary(head),
            "GET /bench/a.parquet HTTP/1.1 Range: bytes=0-1048575"
        );
        assert_eq!(
            request_summary(b"HEAD /k HTTP/1.1\r\n\r\n"),
            "HEAD /k HTTP/1.1"
        );
    }

    #[test]
    fn fault_settings_parse() {
        let s: FaultSetting = "slowdown".parse().unwrap();
        assert_eq!((s.mode, s.probability), (FaultMode::SlowDown, 1.0));
        let s: FaultSetting = "reset:0.25".parse().unwrap();
        assert_eq!((s.mode, s.probability), (FaultMode::Reset, 0.25));
        let s: FaultSetting = " Cut 0.5\n".parse().unwrap();
        assert_eq!((s.mode, s.probability), (FaultMode::Cut, 0.5));
        assert_eq!("pass".parse::<FaultSetting>().unwrap(), FaultSetting::PASS);
        assert_eq!("".parse::<FaultSetting>().unwrap(), FaultSetting::PASS);
        assert!("slowdown 2".parse::<FaultSetting>().is_err());
        assert!("drop".parse::<FaultSetting>().is_err());
        assert!("reset 0.5 x".parse::<FaultSetting>().is_err());
        let s: FaultSetting = "unavailable 0.1".parse().unwrap();
        assert_eq!(s.to_string().parse::<FaultSetting>().unwrap(), s);
    }

    #[test]
    fn rolls_follow_the_probability() {
        let faults = Faults::with_seed(7);
        assert_eq!(faults.roll(), None);
        faults.set("reset 0.3".parse().unwrap());
        let hits = (0..100_000).filter(|_| faults.roll().is_some()).count();
        assert!((28_000..32_000).contains(&hits), "{hits} of 100000");
        faults.set("slowdown".parse().unwrap());
        assert!((0..1000).all(|_| faults.roll() == Some(FaultMode::SlowDown)));
        faults.set(FaultSetting::PASS);
        assert!((0..1000).all(|_| faults.roll().is_none()));
    }

    #[test]
    fn error_answers_are_s3_errors() {
        let r = String::from_utf8(error_response(FaultMode::SlowDown, false)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        let r = String::from_utf8(error_response(FaultMode::Unavailable, true)).unwrap();
        assert!(
            r.contains("Content-Length: 0") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
    }
}

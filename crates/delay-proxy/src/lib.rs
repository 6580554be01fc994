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

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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
}

impl Stats {
    /// The counters as one JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"connections\":{},\"open\":{},\"bytes_up\":{},\"bytes_down\":{},\"http_requests\":{}}}",
            self.connections.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed),
            self.bytes_up.load(Ordering::Relaxed),
            self.bytes_down.load(Ordering::Relaxed),
            self.http_requests.load(Ordering::Relaxed),
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
    let up = pipe(cr, uw, half, stats.clone(), Some(config.log_requests));
    let down = pipe(ur, cw, half, stats.clone(), None);
    let (a, b) = tokio::join!(up, down);
    a.and(b)
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
    // Some(log requests?) for the client-to-target direction, None for the other.
    upstream: Option<bool>,
) -> io::Result<()> {
    // `None` is end of stream.
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(QUEUE);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            // A read error ends the stream like an EOF.
            let n = from.read(&mut buf).await.unwrap_or_default();
            let due = Instant::now() + delay;
            if n == 0 {
                let _ = tx.send((due, None)).await;
                return;
            }
            buf.truncate(n);
            if let Some(log) = upstream {
                stats.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                if METHODS.iter().any(|m| buf.starts_with(m)) {
                    stats.http_requests.fetch_add(1, Ordering::Relaxed);
                    if log {
                        eprintln!("{}", request_summary(&buf));
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
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => to.write_all(&bytes).await?,
                None => break,
            }
        }
        to.shutdown().await
    };
    let ((), res) = tokio::join!(reader, writer);
    res
}

#[cfg(test)]
mod tests {
    use super::request_summary;

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
}

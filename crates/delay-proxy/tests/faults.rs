//! Faults in front of a small real HTTP/1.1 server on loopback: `503`
//! answers with S3 error bodies, resets before an answer and in the middle of
//! one, on new and kept-alive connections, each changed while the proxy runs,
//! at the configured probability, and no connection task is left behind.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alluxiofs_delay_proxy::{serve, Config, FaultSetting, Faults, Stats};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Bytes of every answer's body: several proxy chunks.
const BODY: usize = 256 * 1024;

/// A keep-alive HTTP server answering every request with `BODY` bytes;
/// counts the requests it saw.
async fn http_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let seen = counter.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match r.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    seen.fetch_add(1, Ordering::Relaxed);
                    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
                    if w.write_all(head.as_bytes()).await.is_err()
                        || w.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn proxy(target: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<Stats>, Arc<Faults>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let faults = Arc::new(Faults::with_seed(11));
    let config = Config {
        target,
        rtt: Duration::ZERO,
        log_requests: false,
        faults: faults.clone(),
    };
    tokio::spawn(serve(listener, config, stats.clone()));
    (addr, stats, faults)
}

/// What came back for one request.
#[derive(Debug)]
enum Answer {
    /// Status, headers and body of a complete answer.
    Complete(u16, String, Vec<u8>),
    /// The connection was reset after this many bytes.
    Reset(usize),
}

/// Send one GET on `s` and read one answer (or the reset that ends it).
async fn get(s: &mut TcpStream) -> Answer {
    s.write_all(b"GET /bucket/key HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = got[end + 4..end + 4 + len].to_vec();
                return Answer::Complete(status, head, body);
            }
        }
        match s.read(&mut buf).await {
            Ok(0) => panic!(
                "EOF after {} bytes: {:?}",
                got.len(),
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Answer::Reset(got.len()),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn set(faults: &Faults, setting: &str) {
    faults.set(setting.parse::<FaultSetting>().unwrap());
}

async fn wait_closed(stats: &Stats) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.open.load(Ordering::Relaxed) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        stats.open.load(Ordering::Relaxed),
        0,
        "connection tasks left"
    );
}

#[tokio::test]
async fn error_answers_reach_new_and_kept_alive_connections() {
    let (target, seen) = http_server().await;
    let (addr, stats, faults) = proxy(target).await;

    // Passing: two requests on one kept-alive connection.
    let mut s = connect(addr).await;
    for _ in 0..2 {
        match get(&mut s).await {
            Answer::Complete(200, _, body) => assert_eq!(body.len(), BODY),
            other => panic!("{other:?}"),
        }
    }
    // Turned on while that connection is open: its next request gets it.
    set(&faults, "unavailable");
    match get(&mut s).await {
        Answer::Complete(503, head, body) => {
            assert!(head.contains("Connection: close"), "{head}");
            let body = String::from_utf8(body).unwrap();
            assert!(body.contains("<Code>ServiceUnavailable</Code>"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    // ... and the proxy closed it.
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);

    set(&faults, "slowdown");
    let mut s = connect(addr).await;
    match get(&mut s).await {
        Answer::Complete(503, _, body) => {
            assert!(String::from_utf8(body)
                .unwrap()
                .contains("<Code>SlowDown</Code>"));
        }
        other => panic!("{other:?}"),
    }
    // The target never saw a picked request.
    assert_eq!(seen.load(Ordering::Relaxed), 2);

    set(&faults, "pass");
    let mut s = connect(addr).await;
    assert!(matches!(get(&mut s).await, Answer::Complete(200, _, _)));
    drop(s);
    assert_eq!(stats.faults_injected.load(Ordering::Relaxed), 2);
    wait_closed(&stats).await;
}

#[tokio::test]
async fn resets_before_and_in_the_middle_of_an_answer() {
    let (target, seen) = http_server().await;
    let (addr, stats, faults) = proxy(target).await;

    set(&faults, "reset");
    let mut s = connect(addr).await;
    match get(&mut s).await {
        Answer::Reset(0) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.load(Ordering::Relaxed), 0);

    // A kept-alive connection, then cut: part of the answer, then the RST.
    set(&faults, "pass");
    let mut s = connect(addr).await;
    assert!(matches!(get(&mut s).await, Answer::Complete(200, _, _)));
    set(&faults, "cut");
    match get(&mut s).await {
        Answer::Reset(n) => assert!(n > 0 && n < BODY, "{n} bytes before the reset"),
        other => panic!("{other:?}"),
    }
    // A cut request did reach the target.
    assert_eq!(seen.load(Ordering::Relaxed), 2);
    assert_eq!(stats.faults_injected.load(Ordering::Relaxed), 2);
    wait_closed(&stats).await;
}

#[tokio::test]
async fn faults_apply_at_their_probability() {
    let (target, _seen) = http_server().await;
    let (addr, stats, faults) = proxy(target).await;
    set(&faults, "slowdown 0.5");
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..200 {
        let mut s = connect(addr).await;
        match get(&mut s).await {
            Answer::Complete(200, _, _) => ok += 1,
            Answer::Complete(503, _, _) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(ok > 60 && refused > 60, "{ok} passed, {refused} refused");
    assert_eq!(stats.faults_injected.load(Ordering::Relaxed), refused);
    wait_closed(&stats).await;
}

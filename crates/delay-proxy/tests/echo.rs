//! The proxy in front of a real echo server on loopback: bytes arrive intact
//! and in order, every round trip takes at least the configured delay, and
//! chunks in flight overlap (a bulk transfer is not delayed per chunk).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alluxiofs_delay_proxy::{serve, Config, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn proxy(target: std::net::SocketAddr, rtt_ms: u64) -> (std::net::SocketAddr, Arc<Stats>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let config = Config {
        target,
        rtt: Duration::from_millis(rtt_ms),
        log_requests: false,
        faults: Default::default(),
    };
    tokio::spawn(serve(listener, config, stats.clone()));
    (addr, stats)
}

#[tokio::test]
async fn round_trips_take_the_configured_delay() {
    let (addr, stats) = proxy(echo_server().await, 40).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut rtts = Vec::new();
    for i in 0..5u8 {
        let msg = [b'G', b'E', b'T', b' ', i];
        let t0 = Instant::now();
        s.write_all(&msg).await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        rtts.push(t0.elapsed());
        assert_eq!(back, msg);
    }
    for rtt in &rtts {
        // Echo adds up + down through the proxy: one full configured round trip.
        assert!(*rtt >= Duration::from_millis(40), "rtt {rtt:?} < 40 ms");
        assert!(
            *rtt < Duration::from_millis(400),
            "rtt {rtt:?} far above 40 ms"
        );
    }
    assert_eq!(stats.connections.load(Ordering::Relaxed), 1);
    assert_eq!(stats.bytes_up.load(Ordering::Relaxed), 25);
    assert_eq!(stats.bytes_down.load(Ordering::Relaxed), 25);
    assert_eq!(stats.http_requests.load(Ordering::Relaxed), 5);
}

#[tokio::test]
async fn bulk_transfer_is_intact_and_pipelined() {
    let (addr, stats) = proxy(echo_server().await, 20).await;
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (mut r, mut w) = s.into_split();
    // 8 MiB of a pattern that shows any reordering or loss.
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let t0 = Instant::now();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(16 * 1024) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    let took = t0.elapsed();
    assert!(back == data, "echoed bytes differ");
    // Over 100 chunks each way: delayed serially this would take seconds.
    assert!(took >= Duration::from_millis(20), "took {took:?}");
    assert!(
        took < Duration::from_millis(1500),
        "not pipelined: {took:?}"
    );
    assert_eq!(stats.bytes_down.load(Ordering::Relaxed), 8 << 20);
    // The connection's task ends just after the last byte went out.
    let deadline = Instant::now() + Duration::from_secs(2);
    while stats.open.load(Ordering::Relaxed) != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stats.open.load(Ordering::Relaxed), 0);
}

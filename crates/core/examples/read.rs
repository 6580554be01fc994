//! Read a range of a file through running cache workers and check it
//! against the file on local disk (a manual interoperability probe).
//!
//! ```sh
//! alluxiofs-worker --port 0 --mount file:///tmp/data --ready-file /tmp/ready &
//! cargo run -p alluxiofs-core --example read -- 127.0.0.1:PORT /tmp/data/file.bin
//! ```
//!
//! With a local path it compares all bytes, reads the whole file through a
//! [`Reader`] in 64 KiB pieces, and prints timings and the client's counters.

use std::sync::Arc;
use std::time::Instant;

use alluxiofs_core::path::normalize_url;
use alluxiofs_core::{Client, ClientConfig, Reader, WorkerAddr};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: read HOST:PORT[,HOST:PORT...] /local/path/or/url");
        std::process::exit(2);
    }
    let workers = args[1]
        .split(',')
        .map(|hp| {
            let (h, p) = hp.rsplit_once(':').expect("HOST:PORT");
            WorkerAddr::from_host_port(h, p.parse().expect("port"))
        })
        .collect();
    let url = normalize_url(&args[2])?;
    let client = Arc::new(Client::new(ClientConfig::default(), workers)?);
    let info = client.info(&url).await?;
    println!(
        "{url}: {} bytes, version {:?}, primary {}",
        info.length,
        info.content_hash,
        client.workers_for(&url)[0].addr()
    );
    let local = args[2]
        .starts_with('/')
        .then(|| std::fs::read(&args[2]))
        .transpose()?;
    for round in ["cold", "warm"] {
        let mut buf = vec![0u8; info.length as usize];
        let t = Instant::now();
        let out = client
            .read_into(&url, Some(&info.content_hash), 0, &mut buf)
            .await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "read_into ({round}): {} bytes, {} holes, {:.1} ms, {:.0} MiB/s",
            out.filled,
            out.holes.len(),
            secs * 1e3,
            out.filled as f64 / secs / (1 << 20) as f64
        );
        if let Some(l) = &local {
            assert!(
                buf[..out.filled] == l[..],
                "bytes differ from the local file"
            );
        }
    }
    let mut r = Reader::new(
        client.clone(),
        url.clone(),
        info.length,
        Some(info.content_hash.clone()),
    );
    let mut piece = vec![0u8; 64 << 10];
    let mut all = Vec::with_capacity(info.length as usize);
    let t = Instant::now();
    loop {
        let out = r.read_at(all.len() as u64, &mut piece).await?;
        if out.filled == 0 {
            break;
        }
        all.extend_from_slice(&piece[..out.filled]);
    }
    println!(
        "reader, 64 KiB reads: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    if let Some(l) = &local {
        assert!(all == *l, "reader bytes differ from the local file");
        println!("all bytes equal the local file");
    }
    println!("{}", serde_json::to_string_pretty(&client.stats())?);
    Ok(())
}

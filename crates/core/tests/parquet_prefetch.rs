//! The reader's Parquet-aware prefetch against the in-process test worker,
//! on a small file written by pyarrow (`tests/fixtures/make_three_rg.py`).

mod common;

use std::ops::Range;
use std::sync::Arc;

use alluxiofs_core::client::{Client, ClientConfig};
use alluxiofs_core::reader::Reader;
use common::TestWorker;

const FILE: &[u8] = include_bytes!("fixtures/three_rg.parquet");

fn ranges() -> Vec<Vec<Range<u64>>> {
    serde_json::from_str(include_str!("fixtures/three_rg.ranges.json")).unwrap()
}

async fn setup(url: &str, version: &str) -> (TestWorker, Arc<Client>) {
    let w = TestWorker::start().await;
    w.state.put(url, FILE.to_vec(), version);
    let cfg = ClientConfig {
        page_size: 4096,
        ..ClientConfig::default()
    };
    let client = Arc::new(Client::new(cfg, vec![w.worker_addr()]).unwrap());
    (w, client)
}

fn lengths(w: &TestWorker) -> Vec<u64> {
    std::mem::take(&mut *w.state.range_lengths.lock().unwrap())
}

async fn read(r: &mut Reader, range: Range<u64>) -> Vec<u8> {
    let mut buf = vec![0u8; (range.end - range.start) as usize];
    let out = r.read_at(range.start, &mut buf).await.unwrap();
    assert!(out.holes.is_empty());
    assert_eq!(out.filled, buf.len());
    assert_eq!(&buf[..], &FILE[range.start as usize..range.end as usize]);
    buf
}

/// Bytes in `range`.
fn len(range: &Range<u64>) -> u64 {
    range.end - range.start
}

#[tokio::test]
async fn next_row_groups_of_the_read_columns_only() {
    let url = "s3://bucket/pq/a.parquet";
    let (w, client) = setup(url, "v1").await;
    let size = FILE.len() as u64;
    let rg = ranges();
    let mut r =
        Reader::new(client.clone(), url.into(), size, Some("v1".into())).with_parquet_prefetch(2);
    // The footer read, as pyarrow does it: the tail of the file.
    read(&mut r, size - 2000..size).await;
    assert!(r.parquet_layout_known());
    lengths(&w);
    // Column 1 of row group 0: read directly, then column 1 of row groups
    // 1 and 2 are fetched in the background; no other column is.
    read(&mut r, rg[0][1].clone()).await;
    read(&mut r, rg[1][1].clone()).await;
    read(&mut r, rg[2][1].clone()).await;
    let got = lengths(&w);
    let asked: u64 = got.iter().sum();
    let needed: u64 = (0..3).map(|g| len(&rg[g][1])).sum();
    assert_eq!(asked, needed, "exactly the chunks of column 1, each once");
    // A second reader of the same version: the tail comes from memory and
    // the layout is known before any read.
    let mut r2 =
        Reader::new(client.clone(), url.into(), size, Some("v1".into())).with_parquet_prefetch(2);
    assert!(r2.parquet_layout_known());
    read(&mut r2, size - 2000..size).await;
    assert!(
        lengths(&w).is_empty(),
        "footer served from the process cache"
    );
    // Another version of the object does not use that footer.
    let r3 = Reader::new(client, url.into(), size, Some("v2".into())).with_parquet_prefetch(2);
    assert!(!r3.parquet_layout_known());
}

#[tokio::test]
async fn coalesced_reads_prefetch_coalesced_ranges() {
    let url = "s3://bucket/pq/b.parquet";
    let (w, client) = setup(url, "v1").await;
    let size = FILE.len() as u64;
    let rg = ranges();
    let mut r = Reader::new(client, url.into(), size, Some("v1".into())).with_parquet_prefetch(1);
    read(&mut r, size - 1400..size).await;
    lengths(&w);
    // Columns 0 and 1 of row group 0 in one read (pyarrow's pre_buffer
    // merges adjacent chunks): the prefetch of row group 1 is one range.
    read(&mut r, rg[0][0].start..rg[0][1].end).await;
    // Served from the prefetch, in pieces.
    read(&mut r, rg[1][0].clone()).await;
    read(&mut r, rg[1][1].clone()).await;
    let got = lengths(&w);
    let merged = rg[1][1].end - rg[1][0].start;
    assert_eq!(
        got.iter().sum::<u64>(),
        len(&(rg[0][0].start..rg[0][1].end)) + merged
    );
    // Row group 1 was read one column at a time, so columns 0 and 1 of row
    // group 2 were prefetched as two ranges; together they serve this read.
    read(&mut r, rg[2][0].start..rg[2][1].end).await;
    let mut got = lengths(&w);
    got.sort();
    assert_eq!(got, vec![len(&rg[2][0]), len(&rg[2][1])]);
}

#[tokio::test]
async fn depth_zero_and_non_parquet_files_are_untouched() {
    let url = "s3://bucket/pq/c.parquet";
    let (w, client) = setup(url, "v1").await;
    let size = FILE.len() as u64;
    let rg = ranges();
    let mut r =
        Reader::new(client.clone(), url.into(), size, Some("v1".into())).with_parquet_prefetch(0);
    read(&mut r, size - 2000..size).await;
    assert!(!r.parquet_layout_known());
    lengths(&w);
    read(&mut r, rg[0][1].clone()).await;
    read(&mut r, rg[1][1].clone()).await;
    assert_eq!(lengths(&w), vec![len(&rg[0][1]), len(&rg[1][1])]);
    // A file that does not end in PAR1: reads as usual, nothing prefetched.
    let other = "s3://bucket/pq/not.bin";
    w.state.put(other, vec![7u8; 20_000], "v1");
    let mut r = Reader::new(client, other.into(), 20_000, None).with_parquet_prefetch(2);
    let mut buf = vec![0u8; 1000];
    r.read_at(19_000, &mut buf).await.unwrap();
    assert!(!r.parquet_layout_known());
}

#[tokio::test]
async fn a_whole_file_read_keeps_only_the_tail() {
    // A file larger than the kept tail: 200 KiB of padding, then the fixture.
    let url = "s3://bucket/pq/padded.parquet";
    let mut file = vec![0u8; 200 << 10];
    file.extend_from_slice(FILE);
    let w = TestWorker::start().await;
    w.state.put(url, file.clone(), "v1");
    let client = Arc::new(Client::new(ClientConfig::default(), vec![w.worker_addr()]).unwrap());
    let size = file.len() as u64;
    let mut r =
        Reader::new(client.clone(), url.into(), size, Some("v1".into())).with_parquet_prefetch(2);
    let mut buf = vec![0u8; file.len()];
    let out = r.read_at(0, &mut buf).await.unwrap();
    assert_eq!(out.filled, file.len());
    // The footer was learnt from the whole-file read, but only the last
    // 64 KiB of it stay in memory (the padding shifts no footer offset
    // past the end, so the layout parses).
    let f = alluxiofs_core::parquet::FOOTERS
        .get(url, Some("v1"))
        .expect("footer kept");
    assert_eq!(f.tail.len(), 64 << 10);
    assert_eq!(f.tail_start + f.tail.len() as u64, size);
}

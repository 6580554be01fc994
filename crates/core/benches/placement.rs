//! Placement quality: balance and movement, not speed.
//!
//! For 3, 10 and 100 workers and 1,000,000 realistic keys, prints per
//! placement the busiest and idlest worker's share relative to the mean,
//! and the fraction of keys whose primary worker changes when one worker
//! joins and when one leaves (the ideal is 1/(N+1) and 1/N). Candidates:
//! Alluxio's ring with 5 virtual nodes (the compatible default), the same
//! ring with more virtual nodes, rendezvous hashing (the library's
//! balanced placement) and Maglev (measured here only, for comparison).
//!
//! Run: `cargo bench -p alluxiofs-core --bench placement`
//! (`-- --keys N` for another key count).

use std::collections::HashMap;
use std::time::Instant;

use alluxiofs_core::placement::{Placement, Placer};
use alluxiofs_core::ring::WorkerIdentity;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Maglev (Eisenbud et al., NSDI 2016) over a prime-sized lookup table.
struct Maglev {
    table: Vec<u32>,
    workers: Vec<WorkerIdentity>,
}

impl Maglev {
    const M: u64 = 65_537;

    fn new(workers: &[WorkerIdentity]) -> Self {
        let mut workers = workers.to_vec();
        workers.sort();
        let n = workers.len();
        let prefs: Vec<(u64, u64)> = workers
            .iter()
            .map(|w| {
                let offset = xxh3_64_with_seed(&w.identifier, 1) % Self::M;
                let skip = xxh3_64_with_seed(&w.identifier, 2) % (Self::M - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; Self::M as usize];
        let mut filled = 0u64;
        'fill: loop {
            for i in 0..n {
                let (offset, skip) = prefs[i];
                let mut c = (offset + next[i] * skip) % Self::M;
                while table[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % Self::M;
                }
                table[c as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == Self::M {
                    break 'fill;
                }
            }
        }
        Maglev { table, workers }
    }

    fn primary(&self, key: &str) -> WorkerIdentity {
        let slot = xxh3_64(key.as_bytes()) % Self::M;
        self.workers[self.table[slot as usize] as usize]
    }
}

enum Candidate {
    Lib(Placement),
    Maglev,
}

impl Candidate {
    fn label(&self) -> String {
        match self {
            Candidate::Lib(Placement::Alluxio { vnodes }) => {
                format!("alluxio ring, {vnodes} vnodes")
            }
            Candidate::Lib(p) => p.name().to_string(),
            Candidate::Maglev => "maglev (M=65537)".into(),
        }
    }

    fn primaries(&self, workers: &[WorkerIdentity], keys: &[String]) -> Vec<WorkerIdentity> {
        match self {
            Candidate::Lib(p) => {
                let placer: Placer = p.build(workers);
                keys.iter()
                    .map(|k| placer.primary(k).expect("workers"))
                    .collect()
            }
            Candidate::Maglev => {
                let m = Maglev::new(workers);
                keys.iter().map(|k| m.primary(k)).collect()
            }
        }
    }
}

fn worker(i: usize) -> WorkerIdentity {
    WorkerIdentity::from_hostname(&format!("10.0.{}.{}", i / 250, i % 250 + 1))
}

fn moved(a: &[WorkerIdentity], b: &[WorkerIdentity]) -> f64 {
    let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
    n as f64 / a.len() as f64
}

fn main() {
    let mut nkeys = 1_000_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--keys") {
        nkeys = args[i + 1].parse().expect("--keys N");
    }
    let keys: Vec<String> = (0..nkeys)
        .map(|i| {
            format!(
                "s3://bucket/train/shard-{:04}/part-{i:07}.parquet",
                i / 1000
            )
        })
        .collect();
    let candidates = [
        Candidate::Lib(Placement::Alluxio { vnodes: 5 }),
        Candidate::Lib(Placement::Alluxio { vnodes: 100 }),
        Candidate::Lib(Placement::Alluxio { vnodes: 1000 }),
        Candidate::Maglev,
        Candidate::Lib(Placement::Rendezvous),
    ];
    println!("{nkeys} keys; moved = fraction of keys whose primary changes (ideal: 1/(N+1) on join, 1/N on leave)");
    println!();
    println!(
        "| placement | workers | max/mean | min/mean | moved on join (ideal) | moved on leave (ideal) | time |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for c in &candidates {
        for &n in &[3usize, 10, 100] {
            let start = Instant::now();
            let base: Vec<WorkerIdentity> = (0..n).map(worker).collect();
            let mut joined = base.clone();
            joined.push(worker(n));
            // The worker that leaves: one from the middle of the list.
            let left: Vec<WorkerIdentity> = base
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != n / 2)
                .map(|(_, w)| *w)
                .collect();
            let p0 = c.primaries(&base, &keys);
            let pj = c.primaries(&joined, &keys);
            let pl = c.primaries(&left, &keys);
            let mut counts: HashMap<WorkerIdentity, u64> = base.iter().map(|w| (*w, 0)).collect();
            for w in &p0 {
                *counts.get_mut(w).expect("a known worker") += 1;
            }
            let mean = nkeys as f64 / n as f64;
            let max = *counts.values().max().unwrap_or(&0) as f64 / mean;
            let min = *counts.values().min().unwrap_or(&0) as f64 / mean;
            println!(
                "| {} | {n} | {max:.3} | {min:.3} | {:.4} ({:.4}) | {:.4} ({:.4}) | {:.1} s |",
                c.label(),
                moved(&p0, &pj),
                1.0 / (n + 1) as f64,
                moved(&p0, &pl),
                1.0 / n as f64,
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!();
    println!("lookup cost, 100 workers, pick(key, 3) with the library's placer:");
    let ws: Vec<WorkerIdentity> = (0..100).map(worker).collect();
    for p in [Placement::Alluxio { vnodes: 5 }, Placement::Rendezvous] {
        let placer = p.build(&ws);
        let start = Instant::now();
        let mut sink = 0usize;
        for k in &keys {
            sink += placer.pick(k, 3).len();
        }
        let ns = start.elapsed().as_nanos() as f64 / keys.len() as f64;
        assert_eq!(sink, 3 * keys.len());
        println!("  {p}: {ns:.0} ns per lookup");
    }
}

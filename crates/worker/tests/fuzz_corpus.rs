//! The fuzz targets' checks on stable, in `make test`: every seed of
//! `fuzz/corpus/<target>/` and a few hundred deterministic mutations of each
//! (bytes flipped, inserted, removed, the input cut short). `make fuzz` runs
//! the same checks under libFuzzer for as long as asked.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seed in {}", dir.display());
    seeds.into_iter().map(|(_, b)| b).collect()
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(b.len() + 1);
                let v = [b'/', b'.', b'%', 0, 0xff, b'\n', b'0', b'9'][rng.below(8)];
                b.insert(i, v);
            }
            2 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            3 => b.truncate(rng.below(b.len() + 1)),
            _ => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
        }
    }
    b
}

#[test]
fn every_target_holds_on_its_corpus_and_mutations_of_it() {
    for (name, check) in harness::TARGETS {
        let seeds = corpus(name);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        let mut tried = 0usize;
        for seed in &seeds {
            check(seed);
            for _ in 0..2000 {
                check(&mutate(seed, &mut rng));
                tried += 1;
            }
        }
        eprintln!("{name}: {} seeds, {tried} mutations", seeds.len());
    }
}

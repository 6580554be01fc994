//! The Alluxio hash ring golden vectors (tests/fixtures/hash_res, produced by
//! the Alluxio Java implementation): identities, ring points and the ordered
//! workers of each URL must match exactly.

use std::collections::BTreeMap;

use alluxiofs_core::ring::{HashRing, WorkerIdentity};
use serde::Deserialize;

#[derive(Deserialize)]
struct Ident {
    version: i32,
    identifier: String,
}

impl Ident {
    fn parse(&self) -> WorkerIdentity {
        WorkerIdentity::parse_hex(self.version, &self.identifier).unwrap()
    }
}

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let p = format!(
        "{}/tests/fixtures/hash_res/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn golden_workers() -> Vec<WorkerIdentity> {
    let hosts: Vec<String> = fixture("workerHostnames.json");
    hosts
        .iter()
        .map(|h| WorkerIdentity::from_hostname(h))
        .collect()
}

#[test]
fn hostnames_give_alluxio_identities() {
    // workerList.json holds the same identities in another (Java set) order.
    let mut expected: Vec<WorkerIdentity> = fixture::<Vec<Ident>>("workerList.json")
        .iter()
        .map(Ident::parse)
        .collect();
    let mut got = golden_workers();
    assert_eq!(got.len(), 50);
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    let mut hexes: Vec<String> = fixture::<Vec<Ident>>("workerList.json")
        .into_iter()
        .map(|i| i.identifier)
        .collect();
    hexes.sort();
    let mut got_hex: Vec<String> = got.iter().map(WorkerIdentity::hex).collect();
    got_hex.sort();
    assert_eq!(got_hex, hexes);
}

#[test]
fn ring_points_match() {
    let expected: BTreeMap<String, Ident> = fixture("activeNodesMap.json");
    let expected: Vec<(i32, WorkerIdentity)> = {
        let mut v: Vec<_> = expected
            .iter()
            .map(|(k, id)| (k.parse::<i32>().unwrap(), id.parse()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(expected.len(), 250);
    let ring = HashRing::new(&golden_workers(), 5);
    assert_eq!(ring.points(), expected);
}

#[test]
fn url_workers_match_in_order() {
    let expected: BTreeMap<String, Vec<Ident>> = fixture("fileUrlWorkers.json");
    assert!(expected.len() >= 20);
    let ring = HashRing::new(&golden_workers(), 5);
    for (url, ids) in &expected {
        let want: Vec<WorkerIdentity> = ids.iter().map(Ident::parse).collect();
        assert_eq!(ring.get_multiple(url, want.len()), want, "{url}");
    }
}

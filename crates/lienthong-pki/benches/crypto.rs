//! What the exchange path pays per message in this crate: detached sign and verify for each key
//! type over a 1 KiB digest input, and peer verification at handshake.
//!
//!     cargo bench -p lienthong-pki --bench crypto
//!
//! Plain `std::time` measurement (no harness dependency): each figure is the median of 15 rounds
//! of N operations, in microseconds per operation, with min and max of the rounds.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use lienthong_pki::tls::{PeerRole, TrustPolicy};
use lienthong_pki::{CertificateAuthority, Csr, KeyAlgorithm, PrivateKey, Validity};
use lienthong_types::{InstanceId, NodeId};

const ROUNDS: usize = 15;

fn measure(name: &str, per_round: usize, mut op: impl FnMut()) {
    for _ in 0..per_round.min(50) {
        op(); // warm-up
    }
    let mut us: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                op();
            }
            start.elapsed().as_secs_f64() * 1e6 / per_round as f64
        })
        .collect();
    us.sort_by(f64::total_cmp);
    println!("{name:<34} {:>9.1} us/op   (min {:.1}, max {:.1})", us[ROUNDS / 2], us[0], us[ROUNDS - 1]);
}

fn main() {
    let msg = vec![0x5au8; 1024];
    println!("{:<34} {:>12}", "operation", "median");
    for alg in KeyAlgorithm::ALL {
        let key = PrivateKey::generate(alg).unwrap();
        let public = key.public_key();
        let sig = key.sign(&msg).unwrap();
        let n = if alg == KeyAlgorithm::RsaPss { 50 } else { 500 };
        measure(&format!("sign 1 KiB, {alg}"), n, || {
            black_box(key.sign(black_box(&msg)).unwrap());
        });
        measure(&format!("verify 1 KiB, {alg}"), 500, || {
            public.verify(black_box(&msg), black_box(&sig)).unwrap();
        });
    }

    let ca_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let ca = CertificateAuthority::init(
        InstanceId::new("VN").unwrap(),
        &ca_key,
        Validity::days(10),
        SystemTime::now(),
    )
    .unwrap();
    let node: NodeId = "VN/GOV/000.00.00.G01/ss1".parse().unwrap();
    let node_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let cert = ca
        .issue_node(&Csr::for_node(&node_key, &node).unwrap(), &node, Validity::days(1), SystemTime::now())
        .unwrap();
    // A registry-sized pin set: 2,000 nodes.
    let mut registered: Vec<(NodeId, _)> = (0..2000)
        .map(|i| (format!("VN/GOV/M{i}/ss1").parse().unwrap(), lienthong_pki::Fingerprint([i as u8; 32])))
        .collect();
    registered.push((node.clone(), cert.fingerprint()));
    let policy = Arc::new(TrustPolicy::new([ca.certificate()], registered).unwrap());
    let now = SystemTime::now();
    measure("verify peer (chain + pin), ed25519", 500, || {
        black_box(policy.verify_peer(cert.der(), &[], PeerRole::Server, Some(&node), now).unwrap());
    });
    measure("issue node certificate from CSR", 100, || {
        let csr = Csr::for_node(&node_key, &node).unwrap();
        black_box(ca.issue_node(&csr, &node, Validity::days(1), now).unwrap());
    });
}

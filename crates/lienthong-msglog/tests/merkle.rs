//! The RFC 6962 Merkle tree: the published proof vectors, exhaustive small trees against a naive
//! recursive `MTH`, frontier rebuilds, and property tests on larger trees.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lienthong_msglog::merkle::{
    EMPTY_ROOT, Frontier, Hash, MemNodes, NodeReader, ProofError, consistency_proof, inclusion_proof,
    leaf_hash, node_hash, root, verify_consistency, verify_inclusion,
};
use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `MTH(D[n])` straight from the recursive definition (RFC 9162 §2.1.1), independent of the
/// module's stored-subtree arithmetic.
fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

/// Distinct leaf hashes for leaf numbers.
fn test_leaf(i: u64) -> Hash {
    leaf_hash(&i.to_be_bytes())
}

/// The leaf hashes `0..n` and a store holding them.
fn tree(n: u64) -> (Vec<Hash>, MemNodes) {
    let leaves: Vec<Hash> = (0..n).map(test_leaf).collect();
    let mut store = MemNodes::default();
    for leaf in &leaves {
        store.push_leaf(*leaf);
    }
    (leaves, store)
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// A bit chosen from the case's coordinates, so that sampled flips cover every bit position.
fn some_bit(a: u64, b: u64, c: usize) -> usize {
    ((a.wrapping_mul(31) ^ b.wrapping_mul(131)) as usize).wrapping_add(c.wrapping_mul(97)) % 256
}

/// The audit path shape of `index` in a tree of `size` leaves: the number of levels with a
/// sibling on either side. Two sizes with the same shape yield the same hashing order, which
/// RFC 6962 does not tell apart (the size is authenticated by the signed tree head instead).
fn inner(index: u64, size: u64) -> u32 {
    64 - (index ^ (size - 1)).leading_zeros()
}

// ---------------------------------------------------------------------------------------------
// Hashing primitives
// ---------------------------------------------------------------------------------------------

#[test]
fn hashing_primitives_follow_rfc6962() {
    let empty: Hash = Sha256::digest(b"").into();
    assert_eq!(EMPTY_ROOT, empty);
    let leaf: Hash = Sha256::digest([0x00, b'a', b'b']).into();
    assert_eq!(leaf_hash(b"ab"), leaf);
    let (l, r) = ([1u8; 32], [2u8; 32]);
    let mut input = vec![0x01];
    input.extend_from_slice(&l);
    input.extend_from_slice(&r);
    let node: Hash = Sha256::digest(&input).into();
    assert_eq!(node_hash(&l, &r), node);
    assert_ne!(node_hash(&l, &r), node_hash(&r, &l));
    assert_eq!(Frontier::new().root(), EMPTY_ROOT);
    assert_eq!(root(&MemNodes::default(), 0), Ok(EMPTY_ROOT));
}

// ---------------------------------------------------------------------------------------------
// Published vectors (tests/data/rfc6962, Apache-2.0, see the LICENSE and README there)
// ---------------------------------------------------------------------------------------------

/// Standard base64 (with padding), enough for the vector files.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {text:?}"),
        }
    };
    let data = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A root or proof hash from a vector. Some negative vectors carry deliberately malformed ones
/// (empty, or a 12-byte "don't care"). They are zero-padded to 32 bytes, which keeps them
/// distinct from every real hash, so that the verifier's own checks must reject the case (one
/// happy path even compares two equal malformed roots).
fn padded(value: &Value) -> Hash {
    let bytes = base64(value.as_str().expect("hash is a string"));
    assert!(bytes.len() <= 32, "hash longer than 32 bytes");
    let mut hash = [0u8; 32];
    hash[..bytes.len()].copy_from_slice(&bytes);
    hash
}

/// A leaf hash from a vector, decoded strictly as a wire decoder does: `None` unless it is 32
/// bytes, and then the case is rejected before it reaches the verifier (padded, an empty leaf
/// would equal an empty root in a one-leaf tree, which only the length tells apart).
fn strict(value: &Value) -> Option<Hash> {
    base64(value.as_str().expect("hash is a string")).try_into().ok()
}

fn vector_proof(value: &Value) -> Vec<Hash> {
    match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().map(padded).collect(),
        other => panic!("proof is neither null nor an array: {other}"),
    }
}

fn vector_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("vector dir readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            vector_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
}

/// The eight leaves the vectors' reference tree is built from (the RFC 6962 reference test
/// inputs), so the happy paths can also be compared with the proofs this module generates.
fn reference_tree() -> MemNodes {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let mut store = MemNodes::default();
    for input in inputs {
        store.push_leaf(leaf_hash(input));
    }
    store
}

#[test]
fn published_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc6962");
    let mut files = Vec::new();
    vector_files(&dir, &mut files);
    files.sort();
    let reference = reference_tree();
    let (mut accepted, mut rejected, mut malformed, mut regenerated) = (0, 0, 0, 0);
    for file in &files {
        let name = file.strip_prefix(&dir).unwrap_or(file).display().to_string();
        let text = std::fs::read_to_string(file).expect("vector readable");
        let v: Value = serde_json::from_str(&text).expect("vector is JSON");
        let want_err = v["wantErr"].as_bool().expect("wantErr is a bool");
        let proof = vector_proof(&v["proof"]);
        let (result, generated) = if v.get("leafIdx").is_some() {
            let index = v["leafIdx"].as_u64().expect("leafIdx");
            let size = v["treeSize"].as_u64().expect("treeSize");
            let tree_root = padded(&v["root"]);
            let Some(leaf) = strict(&v["leafHash"]) else {
                assert!(want_err, "{name}: happy path with a malformed leaf hash");
                // Padded, the verifier rejects these too, unless padding made leaf and root equal.
                let leaf = padded(&v["leafHash"]);
                let result = verify_inclusion(&leaf, index, size, &proof, &tree_root);
                assert!(result.is_err() || leaf == tree_root, "{name}: padded leaf accepted");
                malformed += 1;
                continue;
            };
            let result = verify_inclusion(&leaf, index, size, &proof, &tree_root);
            let generated = (size <= reference.size() && root(&reference, size) == Ok(tree_root))
                .then(|| inclusion_proof(&reference, index, size));
            (result, generated)
        } else {
            let old = v["size1"].as_u64().expect("size1");
            let new = v["size2"].as_u64().expect("size2");
            let (root1, root2) = (padded(&v["root1"]), padded(&v["root2"]));
            let result = verify_consistency(old, new, &root1, &root2, &proof);
            let generated = (new <= reference.size()
                && root(&reference, old) == Ok(root1)
                && root(&reference, new) == Ok(root2))
            .then(|| consistency_proof(&reference, old, new));
            (result, generated)
        };
        match (want_err, result) {
            (false, Ok(())) => accepted += 1,
            (true, Err(_)) => rejected += 1,
            (false, Err(e)) => panic!("{name}: happy path rejected: {e}"),
            (true, Ok(())) => panic!("{name}: bad case accepted"),
        }
        // Where the vector's roots are those of the reference tree, a happy path's proof must
        // be exactly the one generated from stored nodes.
        if let (false, Some(generated)) = (want_err, generated) {
            assert_eq!(generated.as_ref(), Ok(&proof), "{name}: generated proof differs");
            regenerated += 1;
        }
    }
    assert_eq!(files.len(), 196, "every vector file is read");
    assert_eq!((accepted, rejected + malformed), (12, 184));
    assert_eq!(malformed, 11, "only the malformed leaf hashes stop before the verifier");
    assert_eq!(regenerated, 10, "happy paths on the reference tree");
}

// ---------------------------------------------------------------------------------------------
// Exhaustive small trees
// ---------------------------------------------------------------------------------------------

const MAX_ROOT_SIZE: u64 = 300;
const MAX_INCLUSION_SIZE: u64 = 300;
const MAX_CONSISTENCY_SIZE: u64 = 128;
/// Up to this size every bit of every proof hash is flipped; above it one bit per hash,
/// chosen by [`some_bit`] so that the flipped positions vary. (Unoptimised SHA-256 costs about
/// 3 µs a hash, which is what keeps the exhaustive parts this small.)
const ALL_BITS_SIZE: u64 = 8;

/// The inclusion cases that also get the costlier negative checks: every leaf of trees up to
/// 64 leaves; in larger ones the leaves at both ends and one in 32 between.
fn thorough(index: u64, size: u64) -> bool {
    size <= 64 || index < 2 || index + 2 >= size || index % 32 == size % 32
}

/// The bits to flip in proof hash `j` of case `(a, b)` of a tree of `size` leaves.
fn bits_to_flip(size: u64, a: u64, b: u64, j: usize) -> Vec<usize> {
    if size <= ALL_BITS_SIZE { (0..256).collect() } else { vec![some_bit(a, b, j)] }
}

#[test]
fn roots_match_naive_mth_for_every_prefix() {
    let leaves: Vec<Hash> = (0..MAX_ROOT_SIZE).map(test_leaf).collect();
    let naive: Vec<Hash> = (0..=leaves.len()).map(|m| naive_root(&leaves[..m])).collect();
    let mut store = MemNodes::default();
    let mut frontier = Frontier::new();
    for n in 0..=MAX_ROOT_SIZE {
        if n > 0 {
            let leaf = leaves[n as usize - 1];
            assert_eq!(store.push_leaf(leaf), n - 1);
            let completed = frontier.append(leaf);
            assert_eq!(completed[0], (0, n - 1, leaf));
            assert_eq!(completed.len() as u32, 1 + (n - 1).trailing_ones());
        }
        assert_eq!(frontier.size(), n);
        assert_eq!(store.size(), n);
        assert_eq!(frontier.root(), naive[n as usize], "frontier root at {n}");
        assert_eq!(store.root(), naive[n as usize], "store root at {n}");
        for m in 0..=n {
            assert_eq!(root(&store, m), Ok(naive[m as usize]), "root({m}) of {n}");
        }
    }
    assert_eq!(root(&store, MAX_ROOT_SIZE + 1), Err(ProofError::Missing { level: 0, index: MAX_ROOT_SIZE }));
}

#[test]
fn frontier_from_store_matches_appending() {
    let mut store = MemNodes::default();
    let mut frontier = Frontier::new();
    let mut frontiers = vec![frontier.clone()];
    for i in 0..MAX_ROOT_SIZE {
        // The nodes `append` reports are exactly those a store must keep, and new to it.
        let completed = frontier.append(test_leaf(i));
        for &(level, index, _) in &completed {
            assert_eq!(store.node(level, index), Err(ProofError::Missing { level, index }));
        }
        store.push_leaf(test_leaf(i));
        for (level, index, hash) in completed {
            assert_eq!(store.node(level, index), Ok(hash));
        }
        frontiers.push(frontier.clone());
    }
    for (size, expected) in frontiers.iter().enumerate() {
        assert_eq!(&Frontier::from_store(&store, size as u64).unwrap(), expected, "size {size}");
    }
}

#[test]
fn inclusion_proofs_for_every_leaf_of_small_trees() {
    let (leaves, store) = tree(MAX_INCLUSION_SIZE);
    let roots: Vec<Hash> = (0..=MAX_INCLUSION_SIZE).map(|n| root(&store, n).unwrap()).collect();
    let (mut checked, mut flipped) = (0u64, 0u64);
    for n in 1..=MAX_INCLUSION_SIZE {
        let tree_root = &roots[n as usize];
        for index in 0..n {
            let leaf = &leaves[index as usize];
            let proof = inclusion_proof(&store, index, n).unwrap();
            assert_eq!(verify_inclusion(leaf, index, n, &proof, tree_root), Ok(()), "{index} in {n}");
            checked += 1;

            // Truncated, extended or padded proofs have the wrong length (checked before any
            // hashing, so every case gets these).
            let expected = proof.len();
            if let Some((_, shorter)) = proof.split_last() {
                assert_eq!(
                    verify_inclusion(leaf, index, n, shorter, tree_root),
                    Err(ProofError::WrongProofLength { expected, got: expected - 1 })
                );
            }
            for at in [0, expected] {
                let mut longer = proof.clone();
                longer.insert(at, *tree_root);
                assert_eq!(
                    verify_inclusion(leaf, index, n, &longer, tree_root),
                    Err(ProofError::WrongProofLength { expected, got: expected + 1 })
                );
            }

            // Every proof hash of a case gets a flipped bit; the rest is sampled (`thorough`).
            let sampled = thorough(index, n);
            for (j, hash) in proof.iter().enumerate() {
                if !sampled && j != (index as usize + n as usize) % expected {
                    continue;
                }
                for bit in bits_to_flip(n, n, index, j) {
                    let mut bad = proof.clone();
                    bad[j] = flip(hash, bit);
                    assert_eq!(
                        verify_inclusion(leaf, index, n, &bad, tree_root),
                        Err(ProofError::RootMismatch),
                        "{index} in {n}: bit {bit} of hash {j}"
                    );
                    flipped += 1;
                }
            }
            if !sampled {
                continue;
            }
            let bit = some_bit(index, n, 7);
            assert!(verify_inclusion(&flip(leaf, bit), index, n, &proof, tree_root).is_err());
            assert!(verify_inclusion(leaf, index, n, &proof, &flip(tree_root, bit)).is_err());
            if n > 1 {
                let other_leaf = &leaves[(index as usize + 1) % n as usize];
                assert!(verify_inclusion(other_leaf, index, n, &proof, tree_root).is_err());
            }

            // A wrong index never verifies: within a tree, the index decides the hashing order.
            for other in [index ^ 1, index.wrapping_sub(1), index + 1] {
                if other != index {
                    assert!(verify_inclusion(leaf, other, n, &proof, tree_root).is_err());
                }
            }

            // A wrong size fails unless it gives the very same hashing order (see `inner`).
            for other in [n - 1, n + 1] {
                if other <= index {
                    continue;
                }
                let result = verify_inclusion(leaf, index, other, &proof, tree_root);
                let same_order = inner(index, other) == inner(index, n);
                assert_eq!(result.is_ok(), same_order, "{index} in {n} as {other}");
            }
        }
        assert_eq!(inclusion_proof(&store, n, n), Err(ProofError::IndexOutOfRange { index: n, size: n }));
        assert_eq!(
            verify_inclusion(&leaves[0], n, n, &[], &roots[n as usize]),
            Err(ProofError::IndexOutOfRange { index: n, size: n })
        );
    }
    assert_eq!(checked, MAX_INCLUSION_SIZE * (MAX_INCLUSION_SIZE + 1) / 2);
    assert!(flipped > checked, "{flipped} flips");
    assert_eq!(
        verify_inclusion(&leaves[0], 0, 0, &[], &EMPTY_ROOT),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        inclusion_proof(&store, 0, MAX_INCLUSION_SIZE + 1),
        Err(ProofError::Missing { level: 0, index: MAX_INCLUSION_SIZE })
    );
}

#[test]
fn consistency_proofs_for_every_pair_of_small_trees() {
    let (_, store) = tree(MAX_CONSISTENCY_SIZE);
    let roots: Vec<Hash> = (0..=MAX_CONSISTENCY_SIZE).map(|n| root(&store, n).unwrap()).collect();
    let (mut checked, mut flipped) = (0u64, 0u64);
    for n in 1..=MAX_CONSISTENCY_SIZE {
        let new_root = &roots[n as usize];
        for m in 1..=n {
            let old_root = &roots[m as usize];
            let proof = consistency_proof(&store, m, n).unwrap();
            assert_eq!(verify_consistency(m, n, old_root, new_root, &proof), Ok(()), "{m} -> {n}");
            assert_eq!(proof.is_empty(), m == n, "{m} -> {n}");
            checked += 1;

            // Every proof hash of every pair gets a flipped bit.
            for (j, hash) in proof.iter().enumerate() {
                for bit in bits_to_flip(n, n, m, j) {
                    let mut bad = proof.clone();
                    bad[j] = flip(hash, bit);
                    assert_eq!(
                        verify_consistency(m, n, old_root, new_root, &bad),
                        Err(ProofError::RootMismatch),
                        "{m} -> {n}: bit {bit} of hash {j}"
                    );
                    flipped += 1;
                }
            }
            let bit = some_bit(m, n, 3);
            assert_eq!(
                verify_consistency(m, n, &flip(old_root, bit), new_root, &proof),
                Err(ProofError::RootMismatch),
                "{m} -> {n}: old root"
            );
            assert_eq!(
                verify_consistency(m, n, old_root, &flip(new_root, bit), &proof),
                Err(ProofError::RootMismatch),
                "{m} -> {n}: new root"
            );
            if m < n {
                assert!(verify_consistency(m, n, new_root, old_root, &proof).is_err());
                assert_eq!(
                    verify_consistency(n, m, old_root, new_root, &proof),
                    Err(ProofError::SizeOutOfRange { old_size: n, new_size: m })
                );
            }

            let expected = proof.len();
            if let Some((_, shorter)) = proof.split_last() {
                assert_eq!(
                    verify_consistency(m, n, old_root, new_root, shorter),
                    Err(ProofError::WrongProofLength { expected, got: expected - 1 })
                );
            }
            for at in [0, expected] {
                let mut longer = proof.clone();
                longer.insert(at, *old_root);
                assert_eq!(
                    verify_consistency(m, n, old_root, new_root, &longer),
                    Err(ProofError::WrongProofLength { expected, got: expected + 1 })
                );
            }
        }
        // Consistency with the empty tree proves nothing and is refused both ways.
        assert_eq!(consistency_proof(&store, 0, n), Err(ProofError::EmptyOldTree));
        assert_eq!(verify_consistency(0, n, &EMPTY_ROOT, new_root, &[]), Err(ProofError::EmptyOldTree));
        assert_eq!(
            consistency_proof(&store, n + 1, n),
            Err(ProofError::SizeOutOfRange { old_size: n + 1, new_size: n })
        );
    }
    assert_eq!(checked, MAX_CONSISTENCY_SIZE * (MAX_CONSISTENCY_SIZE + 1) / 2);
    assert!(flipped > checked, "{flipped} flips");
    assert_eq!(verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]), Err(ProofError::EmptyOldTree));
    assert_eq!(
        consistency_proof(&store, 1, MAX_CONSISTENCY_SIZE + 1),
        Err(ProofError::Missing { level: 0, index: MAX_CONSISTENCY_SIZE })
    );
}

// ---------------------------------------------------------------------------------------------
// Larger trees
// ---------------------------------------------------------------------------------------------

const LARGE: u64 = 100_000;

/// One shared store of `LARGE` leaves; property cases look at its prefixes.
fn large() -> &'static (Vec<Hash>, MemNodes) {
    static TREE: OnceLock<(Vec<Hash>, MemNodes)> = OnceLock::new();
    TREE.get_or_init(|| tree(LARGE))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// For a random size, the root from stored nodes equals the root of a frontier that
    /// appended the same leaves, and so does the frontier rebuilt from the store; an inclusion
    /// and a consistency proof against those independently computed roots verify.
    #[test]
    fn large_trees_agree_with_appending(size in 1..=LARGE, a in any::<u64>(), b in any::<u64>()) {
        let (leaves, store) = large();
        let old = 1 + b % size;
        let mut frontier = Frontier::new();
        let mut old_root = None;
        for leaf in &leaves[..size as usize] {
            frontier.append(*leaf);
            if frontier.size() == old {
                old_root = Some(frontier.root());
            }
        }
        let new_root = frontier.root();
        prop_assert_eq!(root(store, size), Ok(new_root));
        prop_assert_eq!(Frontier::from_store(store, size), Ok(frontier));

        let index = a % size;
        let proof = inclusion_proof(store, index, size).unwrap();
        prop_assert_eq!(verify_inclusion(&leaves[index as usize], index, size, &proof, &new_root), Ok(()));

        let old_root = old_root.unwrap();
        let proof = consistency_proof(store, old, size).unwrap();
        prop_assert_eq!(verify_consistency(old, size, &old_root, &new_root, &proof), Ok(()));
    }
}

#[test]
fn large_tree_root_matches_naive_mth() {
    let (leaves, store) = large();
    for size in [LARGE, 65_537] {
        assert_eq!(root(store, size), Ok(naive_root(&leaves[..size as usize])), "size {size}");
    }
}

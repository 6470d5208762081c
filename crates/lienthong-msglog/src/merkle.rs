//! The RFC 6962 Merkle tree of the message log: hashing, the append frontier, proof generation
//! from stored subtrees, and proof verification. Pure functions over values, no I/O, so an
//! auditor can verify an evidence bundle offline with exactly the code the node runs.
//!
//! The tree is the one of RFC 9162 §2.1.1 (which keeps RFC 6962's hashing): the hash of `n > 1`
//! leaves is `node_hash(MTH(first k), MTH(rest))` with `k` the largest power of two below `n`.
//! Every subtree of that shape splits into *complete, aligned* subtrees (node `(level, index)`
//! covers leaves `[index << level, (index + 1) << level)`), which is what a store keeps: a node is
//! written once, when its last leaf arrives, and never changes. Hashes over incomplete right
//! edges are recomputed from those nodes on demand, so every root and proof costs O(log n)
//! lookups and hashes.
//!
//! Verification ([`verify_inclusion`], [`verify_consistency`]) never allocates: it hashes into
//! values on the stack, one SHA-256 per proof hash (two for the lower part of a consistency
//! proof), so an auditor or the registry's witness can check proofs in bulk. Keep it that way.

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1, `MTH({})`).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27,
    0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The hash of one leaf: `SHA-256(0x00 || data)`. The prefix byte differs from the one of
/// [`node_hash`] so that no interior node can pass for a leaf (second-preimage resistance,
/// RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(data).finalize().into()
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// Why a root or proof could not be produced, or why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// The old tree is larger than the new one: a log only grows.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizeOutOfRange {
        /// The size of the older tree.
        old_size: u64,
        /// The size of the newer tree.
        new_size: u64,
    },
    /// A consistency proof from the empty tree was asked for or offered. It would prove nothing
    /// (any tree extends the empty one), so it is refused rather than vacuously accepted
    /// (RFC 9162 §2.1.4.2 is defined for `0 < first`; the reference vectors reject it too).
    #[error("a consistency proof needs an old tree of at least one leaf")]
    EmptyOldTree,
    /// The proof has the wrong number of hashes for the given index and sizes.
    #[error("proof has {got} hashes, {expected} expected")]
    WrongProofLength {
        /// How many hashes the index and sizes call for.
        expected: usize,
        /// How many the proof has.
        got: usize,
    },
    /// The proof does not lead to the given root (or roots).
    #[error("proof does not match the tree root")]
    RootMismatch,
    /// A node the computation needs is not in the store (the tree is smaller than asked).
    #[error("node at level {level}, index {index} is not stored")]
    Missing {
        /// The node's level (0 = leaf).
        level: u8,
        /// The node's index within its level.
        index: u64,
    },
    /// The store failed to read a node.
    #[error("node store: {0}")]
    Store(String),
}

/// Stored hashes of complete, aligned subtrees: level 0 = leaf hashes; `(level, index)` covers
/// leaves `[index << level, (index + 1) << level)`. A log keeps these so proofs cost O(log n)
/// lookups.
pub trait NodeReader {
    /// The hash of node `(level, index)`; [`ProofError::Missing`] if it is not (yet) stored.
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError>;
}

/// The right edge of a tree: the roots of the complete subtrees its leaves split into, largest
/// (leftmost) first, one per set bit of the size. Appending is O(log n) and yields the newly
/// completed nodes the caller must store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `edge[i]` is the subtree for the i-th set bit of `size`, from the most significant bit.
    edge: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree root: the edge folded from the right, as the recursive definition nests the
    /// smaller right subtrees inside the larger left ones (RFC 9162 §2.1.1).
    pub fn root(&self) -> Hash {
        fold_edge(self.edge.iter().copied().rev()).unwrap_or(EMPTY_ROOT)
    }

    /// Appends one leaf hash. Returns every node this completes, `(level, index, hash)` from the
    /// leaf `(0, old_size, leaf)` upwards: exactly what a [`NodeReader`] must then serve.
    pub fn append(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let index = self.size;
        let mut done = Vec::with_capacity(1 + index.trailing_ones() as usize);
        done.push((0, index, leaf));
        // Like a binary increment: every trailing one bit of the old size is a complete subtree
        // of the same level as the carry, so the two merge and the carry moves up.
        let mut hash = leaf;
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            let left = self.edge.pop().expect("one edge hash per set bit of the size");
            hash = node_hash(&left, &hash);
            level += 1;
            done.push((level, index >> level, hash));
        }
        self.edge.push(hash);
        self.size += 1;
        done
    }

    /// Rebuilds the frontier of the first `size` leaves from stored nodes (at start-up), with one
    /// lookup per set bit of `size`.
    pub fn from_store(store: &impl NodeReader, size: u64) -> Result<Self, ProofError> {
        let mut edge = pieces_from_right(0, size)
            .map(|(level, index)| store.node(level, index))
            .collect::<Result<Vec<_>, _>>()?;
        edge.reverse();
        Ok(Self { size, edge })
    }
}

/// The root of the first `size` leaves ([`EMPTY_ROOT`] for 0).
pub fn root(store: &impl NodeReader, size: u64) -> Result<Hash, ProofError> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    subtree_hash(store, 0, size)
}

/// The inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves, in
/// the order of RFC 9162 §2.1.3.1: the sibling next to the leaf first, the one next to the root
/// last.
pub fn inclusion_proof(store: &impl NodeReader, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Walk down from the root, as PATH(m, D[lo:hi]) recurses, noting the sibling of each
    // subtree that holds the leaf; the proof lists them bottom-up.
    let mut proof = Vec::with_capacity(64 - size.leading_zeros() as usize);
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let mid = lo + split(hi - lo);
        if index < mid {
            proof.push(subtree_hash(store, mid, hi)?);
            hi = mid;
        } else {
            proof.push(subtree_hash(store, lo, mid)?);
            lo = mid;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The consistency proof between the trees of the first `old_size` and `new_size` leaves,
/// `PROOF(m, D[n])` of RFC 9162 §2.1.4.1. Empty when the sizes are equal.
pub fn consistency_proof(
    store: &impl NodeReader,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError> {
    check_sizes(old_size, new_size)?;
    let mut proof = Vec::with_capacity(2 * (64 - new_size.leading_zeros() as usize));
    // SUBPROOF(m, D[lo:hi], whole) walked from the top: `whole` stays true while the old tree is
    // a prefix subtree of the current one starting at leaf 0, whose hash the verifier already
    // has as the old root and which is therefore left out.
    let (mut lo, mut hi, mut whole) = (0, new_size, true);
    while old_size < hi {
        let mid = lo + split(hi - lo);
        if old_size <= mid {
            proof.push(subtree_hash(store, mid, hi)?);
            hi = mid;
        } else {
            proof.push(subtree_hash(store, lo, mid)?);
            lo = mid;
            whole = false;
        }
    }
    if !whole {
        proof.push(subtree_hash(store, lo, hi)?);
    }
    // SUBPROOF appends on the way back up, so the deepest hash comes first.
    proof.reverse();
    Ok(proof)
}

/// Checks that `proof` shows the leaf with hash `leaf` at `index` in the tree of `size` leaves
/// whose root is `root` (RFC 9162 §2.1.3.2). Hashes on the stack only: no allocation.
///
/// The tree size is not itself hashed into the root (RFC 6962 binds it through the signed tree
/// head), so callers must take `size` and `root` from the same verified checkpoint.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let computed = climb(*leaf, index, size - 1, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `new_size` leaves with root `new_root` extends the tree of `old_size`
/// leaves with root `old_root` (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and equal
/// roots; an empty old tree is refused ([`ProofError::EmptyOldTree`]). No allocation.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    check_sizes(old_size, new_size)?;
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength { expected: 0, got: proof.len() });
        }
        return if old_root == new_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    // The proof is an inclusion proof, in the new tree, of the old tree's last complete subtree
    // (the smallest piece of the old size, at level `shift`), preceded by that subtree's hash
    // unless it is the whole old tree (old size a power of two), whose hash is the old root.
    let shift = old_size.trailing_zeros();
    let node = (old_size - 1) >> shift;
    let last = (new_size - 1) >> shift;
    let expected = path_len(node, last) + usize::from(node != 0);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength { expected, got: proof.len() });
    }
    let (seed, path) = if node == 0 { (old_root, proof) } else { (&proof[0], &proof[1..]) };
    // Climb both trees at once. A left sibling lies before the old size, so it is in both
    // trees; a right sibling exists only in the new tree, where the old tree's edge node has
    // none and is carried up unchanged.
    let (mut old, mut new) = (*seed, *seed);
    let inner = inner_len(node, last);
    for (i, sibling) in path.iter().enumerate() {
        if i >= inner || (node >> i) & 1 == 1 {
            old = node_hash(sibling, &old);
            new = node_hash(sibling, &new);
        } else {
            new = node_hash(&new, sibling);
        }
    }
    if old != *old_root || new != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// An in-memory [`NodeReader`] (one `Vec` per level), for tests, the in-memory log store and
/// offline verification.
#[derive(Default, Debug, Clone)]
pub struct MemNodes {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl MemNodes {
    /// Appends a leaf hash, stores the nodes it completes, and returns the leaf's index.
    pub fn push_leaf(&mut self, leaf: Hash) -> u64 {
        let index = self.frontier.size();
        for (level, at, hash) in self.frontier.append(leaf) {
            let level = usize::from(level);
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            debug_assert_eq!(self.levels[level].len() as u64, at, "nodes complete in order");
            self.levels[level].push(hash);
        }
        index
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The root of all the leaves.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

impl NodeReader for MemNodes {
    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(usize::from(level))
            .and_then(|nodes| nodes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(ProofError::Missing { level, index })
    }
}

/// Sizes a consistency proof can be made or checked for: `0 < old_size <= new_size`.
fn check_sizes(old_size: u64, new_size: u64) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizeOutOfRange { old_size, new_size });
    }
    if old_size == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    Ok(())
}

/// The size of the left subtree of `n > 1` leaves: the largest power of two below `n`
/// (RFC 9162 §2.1.1).
fn split(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete, aligned subtrees `(level, index)` that leaves `[start, end)` split into, one per
/// set bit of the count, smallest (rightmost) first. `start` must be a multiple of the largest,
/// which holds for every subtree of the RFC 9162 shape.
fn pieces_from_right(start: u64, end: u64) -> impl Iterator<Item = (u8, u64)> {
    let count = end - start;
    let mut at = end;
    (0..64u8).filter(move |level| (count >> level) & 1 == 1).map(move |level| {
        at -= 1 << level;
        debug_assert_eq!(at % (1 << level), 0, "subtree is aligned");
        (level, at >> level)
    })
}

/// `MTH(D[start:end])` for a subtree of the RFC 9162 shape, from stored nodes: one lookup per
/// piece, one hash per piece after the first.
fn subtree_hash(store: &impl NodeReader, start: u64, end: u64) -> Result<Hash, ProofError> {
    let mut hash = None;
    for (level, index) in pieces_from_right(start, end) {
        let left = store.node(level, index)?;
        hash = Some(match hash {
            None => left,
            Some(right) => node_hash(&left, &right),
        });
    }
    Ok(hash.expect("a subtree has at least one leaf"))
}

/// Folds subtree hashes given smallest (rightmost) first into their tree's root.
fn fold_edge(mut right_to_left: impl Iterator<Item = Hash>) -> Option<Hash> {
    let last = right_to_left.next()?;
    Some(right_to_left.fold(last, |right, left| node_hash(&left, &right)))
}

/// How many of the path's lower levels have a sibling on either side: up to the level where the
/// node and the tree's last node meet (the highest bit where they differ, plus one). Above it
/// the node is on the right edge, where only left siblings exist.
fn inner_len(node: u64, last: u64) -> usize {
    (64 - (node ^ last).leading_zeros()) as usize
}

/// The length of the audit path of `node` when `last` is the last node of its level.
fn path_len(node: u64, last: u64) -> usize {
    let inner = inner_len(node, last);
    // The right-edge levels with a left sibling: the set bits of the node index above `inner`.
    inner + (node.checked_shr(inner as u32).unwrap_or(0)).count_ones() as usize
}

/// Hashes `hash` (of node `node` at some level) up through `path` to the root, where `last` is
/// the last node of that level (RFC 9162 §2.1.3.2 in closed form: the path length is known up
/// front, and each step's side comes from one bit of `node`).
fn climb(mut hash: Hash, node: u64, last: u64, path: &[Hash]) -> Result<Hash, ProofError> {
    let expected = path_len(node, last);
    if path.len() != expected {
        return Err(ProofError::WrongProofLength { expected, got: path.len() });
    }
    let inner = inner_len(node, last);
    for (i, sibling) in path.iter().enumerate() {
        // Below `inner` the bit says whether we are the left or right child; above it we are
        // on the right edge and every remaining sibling is on the left.
        hash = if i < inner && (node >> i) & 1 == 0 {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    Ok(hash)
}

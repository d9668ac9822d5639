//! The RFC 6962 / RFC 9162 Merkle tree: leaf and node hashes, the tree head (MTH), inclusion and
//! consistency proofs with their verification, and an incremental builder.
//!
//! Leaves are hashed as `SHA-256(0x00 || data)` and interior nodes as
//! `SHA-256(0x01 || left || right)`; the distinct prefixes keep a leaf from being passed off as a
//! node (second-preimage attacks). A tree of `n` leaves splits at the largest power of two below
//! `n`, so the same leaves give the same root in every implementation; the tests pin this to
//! the Certificate Transparency reference vectors.
//!
//! Proof generation takes the whole list of leaf hashes (O(n) time, n × 32 bytes of memory):
//! enough for an auditor's offline check of millions of entries. Verification is O(log n).
//! A running log proves consistency to a witness with [`ConsistencyBuilder`] instead, from the
//! compact range it keeps and the leaves added since, in O(log n) memory.

use std::fmt;
use std::ops::Range;

use sha2::{Digest as _, Sha256};

/// A SHA-256 output: a leaf hash, a node hash, a tree root or a digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (either case); anything else is `None`.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    /// Exactly 32 bytes, or `None`.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Cannot fail: the buffer is exactly twice the input length.
        let text = hex::encode_to_slice(self.0, &mut buf)
            .ok()
            .and_then(|()| std::str::from_utf8(&buf).ok())
            .unwrap_or_default();
        s.serialize_str(text)
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Hash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Hash, E> {
                Hash::from_hex(v).ok_or_else(|| E::custom("expected 64 hex digits"))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Why a proof was not produced or did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index or sizes are impossible for the tree (index past the end, old size larger than
    /// the new one, an empty tree where a leaf is needed).
    #[error("index or tree size out of range")]
    OutOfRange,
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has the wrong length")]
    WrongLength,
    /// The proof does not lead to the expected root(s).
    #[error("proof does not match the root")]
    Mismatch,
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    Hash(h.finalize().into())
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The largest power of two strictly below `n` (`n >= 2`): where RFC 6962 splits a tree.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// The Merkle tree hash (MTH) of the given leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    let mut builder = TreeBuilder::new();
    for leaf in leaves {
        builder.push(*leaf);
    }
    builder.root()
}

/// MTH by the recursive definition; used for the subtrees inside proofs, which need not be
/// prefixes of the tree.
fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

fn to_usize(v: u64) -> Result<usize, ProofError> {
    usize::try_from(v).map_err(|_| ProofError::OutOfRange)
}

/// The audit path (RFC 6962 §2.1.1 `PATH`) of leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let index = to_usize(index)?;
    if index >= leaves.len() {
        return Err(ProofError::OutOfRange);
    }
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n as u64) as usize;
    if m < k {
        path(m, &leaves[..k], out);
        out.push(subtree_root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(subtree_root(&leaves[..k]));
    }
}

/// The consistency proof (RFC 6962 §2.1.2 `PROOF`) between the first `old_size` leaves and all
/// of `leaves`. Empty when `old_size` is 0 or equals the tree size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let ranges = consistency_ranges(old_size, leaves.len() as u64)?;
    let mut proof = Vec::with_capacity(ranges.len());
    for r in ranges {
        proof.push(subtree_root(&leaves[to_usize(r.start)?..to_usize(r.end)?]));
    }
    Ok(proof)
}

/// Which subtrees make up the consistency proof between trees of `old_size` and `new_size`
/// leaves: each element of the proof is the tree hash of one of these leaf ranges, in proof
/// order. Every range ends at or before `old_size` (then it is one of the perfect subtrees of
/// the old tree's compact range) or starts at or after it.
pub fn consistency_ranges(old_size: u64, new_size: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange);
    }
    let mut ranges = Vec::new();
    if old_size > 0 {
        subproof(old_size, 0..new_size, true, &mut ranges);
    }
    Ok(ranges)
}

/// RFC 6962's `SUBPROOF(m, D[range], complete)`, as leaf ranges.
fn subproof(m: u64, range: Range<u64>, complete: bool, out: &mut Vec<Range<u64>>) {
    let n = range.end - range.start;
    if m == n {
        if !complete {
            out.push(range);
        }
        return;
    }
    let mid = range.start + split_point(n);
    if m <= mid - range.start {
        subproof(m, range.start..mid, complete, out);
        out.push(mid..range.end);
    } else {
        subproof(m - (mid - range.start), mid..range.end, false, out);
        out.push(range.start..mid);
    }
}

/// Builds the consistency proof from an old tree, known only by its compact range (a
/// [`TreeBuilder`]), to a larger one, from the leaf hashes after the old tree fed in order:
/// one pass over the new leaves and O(log n) memory, where [`consistency_proof`] needs every
/// leaf. Gives the same proof.
#[derive(Clone, Debug)]
pub struct ConsistencyBuilder {
    next: u64,
    new_size: u64,
    /// The proof, in order: hashes taken from the old compact range, and subtrees of new
    /// leaves being built.
    parts: Vec<ProofPart>,
}

#[derive(Clone, Debug)]
enum ProofPart {
    Known(Hash),
    Building(Range<u64>, TreeBuilder),
}

impl ConsistencyBuilder {
    /// Starts the proof from `old` to a tree of `new_size` leaves.
    pub fn new(old: &TreeBuilder, new_size: u64) -> Result<Self, ProofError> {
        // Where each perfect subtree of the old compact range lies.
        let mut known = Vec::with_capacity(old.subtrees().len());
        let mut start = 0u64;
        let mut rest = old.size();
        for hash in old.subtrees() {
            let width = 1u64 << (u64::BITS - 1 - rest.leading_zeros());
            known.push((start..start + width, *hash));
            start += width;
            rest -= width;
        }
        let mut parts = Vec::new();
        for range in consistency_ranges(old.size(), new_size)? {
            if range.start >= old.size() {
                parts.push(ProofPart::Building(range, TreeBuilder::new()));
            } else {
                // Left of the old size, the proof only takes whole subtrees of the old tree's
                // compact range (see `consistency_ranges`).
                let hash = known
                    .iter()
                    .find(|(r, _)| *r == range)
                    .map(|(_, h)| *h)
                    .ok_or(ProofError::OutOfRange)?;
                parts.push(ProofPart::Known(hash));
            }
        }
        Ok(Self {
            next: old.size(),
            new_size,
            parts,
        })
    }

    /// The index of the next leaf hash wanted, or `None` once the proof has all it needs.
    pub fn next_leaf(&self) -> Option<u64> {
        (self.next < self.new_size).then_some(self.next)
    }

    /// Adds the hash of leaf [`Self::next_leaf`].
    pub fn push(&mut self, leaf: Hash) {
        for part in &mut self.parts {
            if let ProofPart::Building(range, tree) = part
                && range.contains(&self.next)
            {
                tree.push(leaf);
            }
        }
        self.next += 1;
    }

    /// The proof; `WrongLength` unless every leaf up to the new size was pushed.
    pub fn finish(self) -> Result<Vec<Hash>, ProofError> {
        if self.next != self.new_size {
            return Err(ProofError::WrongLength);
        }
        Ok(self
            .parts
            .into_iter()
            .map(|part| match part {
                ProofPart::Known(hash) => hash,
                ProofPart::Building(_, tree) => tree.root(),
            })
            .collect())
    }
}

/// Checks that `leaf` is at `index` in the tree of `size` leaves with `root` (RFC 9162
/// §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with `old_root` is a prefix of the tree of
/// `new_size` leaves with `new_root` (RFC 9162 §2.1.4.2). An empty old tree is a prefix of
/// every tree; equal sizes need equal roots and an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::OutOfRange);
    }
    if old_size == new_size || old_size == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if old_size == 0 {
            return if *old_root == empty_root() {
                Ok(())
            } else {
                Err(ProofError::Mismatch)
            };
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    // When the old tree is a complete subtree, its root is the proof's implicit first element.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = *first;
    let mut s_r = *first;
    for c in rest {
        if s_n == 0 {
            return Err(ProofError::WrongLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength);
    }
    if f_r != *old_root || s_r != *new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// The incremental tree: the roots of the perfect subtrees that make up the leaves so far
/// (a "compact range" from the left edge), one per set bit of the size, largest first.
///
/// Appending is amortised O(1) hashes (at most log n), the root is O(log n), and the whole state
/// is at most 64 hashes, so the writer keeps it in memory and stores it beside each checkpoint
/// to resume without re-reading the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeBuilder {
    size: u64,
    subtrees: Vec<Hash>,
}

impl TreeBuilder {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state saved by [`TreeBuilder::subtrees`]; `None` if the number of hashes
    /// does not fit the size.
    pub fn from_parts(size: u64, subtrees: Vec<Hash>) -> Option<Self> {
        (subtrees.len() == size.count_ones() as usize).then_some(Self { size, subtrees })
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        // Each trailing one bit of the old size is a subtree of the same height as the one
        // being carried: merge them, like binary addition.
        let mut size = self.size;
        while size & 1 == 1 {
            // The invariant (one subtree per set bit) guarantees the pop succeeds.
            let Some(left) = self.subtrees.pop() else {
                break;
            };
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.subtrees.push(node);
        self.size += 1;
    }

    /// The tree head of all leaves so far (the empty-tree hash when there are none).
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        // MTH splits at the largest power of two, so the root folds the subtrees right to left.
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests;

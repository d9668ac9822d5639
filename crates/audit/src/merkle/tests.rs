//! Merkle tree tests: the Certificate Transparency reference vectors, then round trips of every
//! proof in every tree size up to 64, and tampered proofs.
#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;

fn h(text: &str) -> Hash {
    Hash::from_hex(text).unwrap()
}

/// The RFC 6962 test tree used by Certificate Transparency and transparency-dev/merkle.
fn reference_leaves() -> Vec<Hash> {
    let data: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    data.iter().map(|d| leaf_hash(d)).collect()
}

const REFERENCE_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn roots_match_the_reference_vectors() {
    let leaves = reference_leaves();
    for (size, want) in REFERENCE_ROOTS.iter().enumerate() {
        assert_eq!(root(&leaves[..size]), h(want), "size {size}");
        assert_eq!(
            subtree_root(&leaves[..size]),
            h(want),
            "recursive, size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_match_the_reference_vectors() {
    let leaves = reference_leaves();
    let cases: [(u64, usize, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, want) in cases {
        let want: Vec<Hash> = want.iter().map(|w| h(w)).collect();
        let proof = inclusion_proof(&leaves[..size], index).unwrap();
        assert_eq!(proof, want, "leaf {index} of {size}");
        let r = root(&leaves[..size]);
        verify_inclusion(&leaves[index as usize], index, size as u64, &proof, &r).unwrap();
    }
}

#[test]
fn consistency_proofs_match_the_reference_vectors() {
    let leaves = reference_leaves();
    let cases: [(u64, usize, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, size, want) in cases {
        let want: Vec<Hash> = want.iter().map(|w| h(w)).collect();
        let proof = consistency_proof(&leaves[..size], old).unwrap();
        assert_eq!(proof, want, "{old} -> {size}");
        verify_consistency(
            old,
            size as u64,
            &root(&leaves[..old as usize]),
            &root(&leaves[..size]),
            &proof,
        )
        .unwrap();
    }
}

fn synthetic(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

/// Variants of a valid proof that must all be rejected.
fn tampered(proof: &[Hash]) -> Vec<Vec<Hash>> {
    let mut out = Vec::new();
    for i in 0..proof.len() {
        let mut p = proof.to_vec();
        p[i].0[i % 32] ^= 0x01;
        out.push(p);
        let mut shorter = proof.to_vec();
        shorter.remove(i);
        out.push(shorter);
    }
    let mut longer = proof.to_vec();
    longer.push(leaf_hash(b"extra"));
    out.push(longer);
    if proof.len() >= 2 {
        let mut swapped = proof.to_vec();
        swapped.swap(0, 1);
        if swapped != proof {
            out.push(swapped);
        }
    }
    out
}

#[test]
fn inclusion_round_trips_for_every_size_to_64() {
    let leaves = synthetic(64);
    for size in 1..=64usize {
        let tree = &leaves[..size];
        let r = root(tree);
        assert_eq!(r, subtree_root(tree));
        for index in 0..size {
            let proof = inclusion_proof(tree, index as u64).unwrap();
            let leaf = &tree[index];
            verify_inclusion(leaf, index as u64, size as u64, &proof, &r).unwrap();
            for bad in tampered(&proof) {
                assert!(
                    verify_inclusion(leaf, index as u64, size as u64, &bad, &r).is_err(),
                    "tampered proof accepted: leaf {index} of {size}"
                );
            }
            // The wrong leaf, index, size or root.
            assert!(
                verify_inclusion(&leaf_hash(b"x"), index as u64, size as u64, &proof, &r).is_err()
            );
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(leaf, other as u64, size as u64, &proof, &r).is_err());
            }
            // The proof is for this size: against the next tree's root it fails. (Against this
            // root with another size it may pass; a root is only meaningful with the size its
            // signed checkpoint gives, which is why checkpoints carry both.)
            if size < 64 {
                let next = root(&leaves[..=size]);
                assert!(
                    verify_inclusion(leaf, index as u64, size as u64 + 1, &proof, &next).is_err()
                );
            }
            assert!(
                verify_inclusion(leaf, index as u64, size as u64, &proof, &leaf_hash(b"r"))
                    .is_err()
            );
        }
        assert_eq!(
            inclusion_proof(tree, size as u64),
            Err(ProofError::OutOfRange)
        );
    }
}

#[test]
fn consistency_round_trips_for_every_size_to_64() {
    let leaves = synthetic(64);
    for new_size in 1..=64usize {
        let new_root = root(&leaves[..new_size]);
        for old_size in 0..=new_size {
            let old_root = root(&leaves[..old_size]);
            let proof = consistency_proof(&leaves[..new_size], old_size as u64).unwrap();
            verify_consistency(
                old_size as u64,
                new_size as u64,
                &old_root,
                &new_root,
                &proof,
            )
            .unwrap();
            for bad in tampered(&proof) {
                assert!(
                    verify_consistency(
                        old_size as u64,
                        new_size as u64,
                        &old_root,
                        &new_root,
                        &bad
                    )
                    .is_err(),
                    "tampered proof accepted: {old_size} -> {new_size}"
                );
            }
            // A different old root (a rewritten prefix) never verifies.
            let forged_old = leaf_hash(b"rewritten");
            assert!(
                verify_consistency(
                    old_size as u64,
                    new_size as u64,
                    &forged_old,
                    &new_root,
                    &proof
                )
                .is_err()
            );
            if old_size > 0 && old_size < new_size {
                let forged_new = leaf_hash(b"rewritten");
                assert!(
                    verify_consistency(
                        old_size as u64,
                        new_size as u64,
                        &old_root,
                        &forged_new,
                        &proof
                    )
                    .is_err()
                );
            }
        }
        assert_eq!(
            consistency_proof(&leaves[..new_size], new_size as u64 + 1),
            Err(ProofError::OutOfRange)
        );
    }
}

/// The proof built from the old tree's compact range and the new leaves alone is the proof
/// made from every leaf, for every pair of sizes to 70 (so across several powers of two).
#[test]
fn consistency_from_the_compact_range_matches_the_proof_from_all_leaves() {
    let leaves = synthetic(70);
    for new_size in 0..=70usize {
        for old_size in 0..=new_size {
            let mut old = TreeBuilder::new();
            for leaf in &leaves[..old_size] {
                old.push(*leaf);
            }
            let mut builder = ConsistencyBuilder::new(&old, new_size as u64).unwrap();
            while let Some(i) = builder.next_leaf() {
                builder.push(leaves[i as usize]);
            }
            assert_eq!(
                builder.finish().unwrap(),
                consistency_proof(&leaves[..new_size], old_size as u64).unwrap(),
                "{old_size} -> {new_size}"
            );
        }
    }
    let mut old = TreeBuilder::new();
    old.push(leaves[0]);
    old.push(leaves[1]);
    assert_eq!(
        ConsistencyBuilder::new(&old, 1).err(),
        Some(ProofError::OutOfRange)
    );
    let unfed = ConsistencyBuilder::new(&old, 5).unwrap();
    assert_eq!(unfed.finish(), Err(ProofError::WrongLength));
}

#[test]
fn builder_matches_the_recursive_root_and_resumes_from_its_parts() {
    let leaves = synthetic(300);
    let mut builder = TreeBuilder::new();
    assert_eq!(builder.root(), empty_root());
    for (i, leaf) in leaves.iter().enumerate() {
        builder.push(*leaf);
        assert_eq!(builder.size(), i as u64 + 1);
        assert_eq!(
            builder.subtrees().len(),
            builder.size().count_ones() as usize
        );
        assert_eq!(
            builder.root(),
            subtree_root(&leaves[..=i]),
            "size {}",
            i + 1
        );
    }
    let resumed = TreeBuilder::from_parts(builder.size(), builder.subtrees().to_vec()).unwrap();
    assert_eq!(resumed, builder);
    assert!(TreeBuilder::from_parts(300, vec![]).is_none());
}

#[test]
fn split_point_is_the_largest_power_of_two_below() {
    for (n, want) in [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)] {
        assert_eq!(split_point(n), want, "{n}");
    }
}

#[test]
fn hash_hex_round_trip_and_rejects() {
    let x = leaf_hash(b"abc");
    assert_eq!(Hash::from_hex(&x.to_hex()), Some(x));
    assert_eq!(Hash::from_hex(&x.to_hex().to_uppercase()), Some(x));
    for bad in ["", "00", &"g".repeat(64), &"0".repeat(66)] {
        assert_eq!(Hash::from_hex(bad), None, "{bad}");
    }
    let json = serde_json::to_string(&x).unwrap();
    assert_eq!(json, format!("\"{}\"", x.to_hex()));
    assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), x);
    assert!(serde_json::from_str::<Hash>("\"abc\"").is_err());
}

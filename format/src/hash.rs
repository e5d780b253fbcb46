//! The chain's hash functions (docs/chain-format.md §3): RFC 6962 leaf and
//! node hashes, the Merkle tree hash, the record MAC, and their hex form.
//!
//! The processor extends chains with them; the host's checkpointer and the
//! verifier recompute them from stored bytes. They are the format itself:
//! the verifier shares these few functions and nothing of the processor's
//! record code, so a bug in how records are written cannot hide itself.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `prev` of the first record of a chain.
pub const GENESIS_PREV: Hash = [0; 32];

/// The name of the leaf hash algorithm, as carried downstream in
/// `audit.integrity.algorithm`.
pub const LEAF_ALGORITHM: &str = "sha256";

/// RFC 6962 leaf hash: `SHA-256(0x00 || record)`.
pub fn leaf_hash(record: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(record);
    hasher.finalize().into()
}

/// Lowercase hex of a hash, without a per-character allocation.
pub fn to_hex(hash: &Hash) -> String {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(hash, &mut buf).expect("64 bytes hold 32 in hex");
    String::from_utf8(buf.to_vec()).expect("hex is ASCII")
}

/// RFC 6962 interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The record MAC: `HMAC-SHA256(key, leaf)`.
pub fn record_mac(key: &[u8], leaf: &Hash) -> Hash {
    hmac_sha256(key, leaf)
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Hash {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The RFC 6962 Merkle tree hash of `leaves` (`SHA-256("")` when empty).
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            // The largest power of two strictly smaller than n.
            let split = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&merkle_root(&leaves[..split]), &merkle_root(&leaves[split..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_is_domain_separated_sha256() {
        // SHA-256 of the single byte 0x00: the RFC 6962 hash of an empty leaf.
        assert_eq!(hex::encode(leaf_hash(b"")), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    }

    #[test]
    fn merkle_root_matches_rfc6962_shape() {
        let leaves: Vec<Hash> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        assert_eq!(hex::encode(merkle_root(&[])), hex::encode(Sha256::digest([])));
        assert_eq!(merkle_root(&leaves[..1]), leaves[0]);
        let ab = node_hash(&leaves[0], &leaves[1]);
        let cd = node_hash(&leaves[2], &leaves[3]);
        assert_eq!(merkle_root(&leaves[..4]), node_hash(&ab, &cd));
        assert_eq!(merkle_root(&leaves), node_hash(&node_hash(&ab, &cd), &leaves[4]));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! Compact keys for the in-process stores: task ids and input hashes as the bytes they spell
//! (16 for a UUID, 32 for a SHA-256) instead of their 36 and 64 characters of text.
//!
//! Only the canonical spelling is packed — lowercase hex, and for a UUID the 8-4-4-4-12
//! hyphenated form the gateway makes — so that packing is one-to-one: two different texts
//! never share a key. Anything else is kept as text by the caller.

use std::borrow::Borrow;
use std::hash::Hash;

/// A map key in a packed or a text form: the owned key, and the borrowed form lookups take.
pub(crate) trait Key: Hash + Eq + Borrow<Self::Ref> {
    type Ref: ?Sized + Hash + Eq;
    fn own(key: &Self::Ref) -> Self;
}

impl<const N: usize> Key for [u8; N] {
    type Ref = [u8; N];
    fn own(key: &[u8; N]) -> Self {
        *key
    }
}

impl Key for Box<str> {
    type Ref = str;
    fn own(key: &str) -> Self {
        Box::from(key)
    }
}

/// The 16 bytes of a task id in the canonical UUID form, or `None` for any other text.
/// (Called several times per request: a plain loop, no iterator adapters.)
pub(crate) fn pack_uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut at = 0;
    for byte in &mut out {
        if matches!(at, 8 | 13 | 18 | 23) {
            at += 1;
        }
        *byte = (nibble(b[at])? << 4) | nibble(b[at + 1])?;
        at += 2;
    }
    Some(out)
}

/// The canonical text of a packed task id (the inverse of [`pack_uuid`]).
pub(crate) fn unpack_uuid(bytes: &[u8; 16]) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        text.push(HEX[usize::from(byte >> 4)] as char);
        text.push(HEX[usize::from(byte & 0xf)] as char);
    }
    text
}

/// The 32 bytes of a SHA-256 in lowercase hex, or `None` for any other text.
pub(crate) fn pack_sha256(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A lowercase hex digit's value (uppercase is not canonical, so not packed).
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_round_trip_and_nothing_else_packs() {
        let id = "9f1c2e3d-4b5a-4c6d-8e7f-0123456789ab";
        let packed = pack_uuid(id).expect("canonical");
        assert_eq!(unpack_uuid(&packed), id);
        for other in [
            "9F1C2E3D-4B5A-4C6D-8E7F-0123456789AB",
            "9f1c2e3d4b5a4c6d8e7f0123456789ab",
            "9f1c2e3d-4b5a-4c6d-8e7f-0123456789a",
            "9f1c2e3d-4b5a-4c6d-8e7f-0123456789ag",
            "9f1c2e3d-4b5a-4c6d-8e7f+0123456789ab",
            "a",
            "",
        ] {
            assert_eq!(pack_uuid(other), None, "{other}");
        }
    }

    #[test]
    fn lowercase_sha256_hex_packs() {
        let hash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let packed = pack_sha256(hash).expect("canonical");
        assert_eq!((packed[0], packed[31]), (0x2c, 0x24));
        assert_eq!(pack_sha256(&hash.to_uppercase()), None);
        assert_eq!(pack_sha256(&hash[1..]), None);
    }
}

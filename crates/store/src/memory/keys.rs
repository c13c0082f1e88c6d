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

/// A task id as a map key, packed when it is a canonical UUID (no allocation then, and the
/// key sits in the table itself: a look-up compares it without reading another allocation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskId {
    /// The 16 bytes of a canonical UUID.
    Uuid([u8; 16]),
    /// Any other id, as given.
    Text(Box<str>),
}

impl TaskId {
    /// The key of the id `text`.
    pub fn new(text: &str) -> Self {
        match pack_uuid(text) {
            Some(packed) => TaskId::Uuid(packed),
            None => TaskId::Text(Box::from(text)),
        }
    }

    /// The id as text again.
    pub fn text(&self) -> String {
        match self {
            TaskId::Uuid(packed) => unpack_uuid(packed),
            TaskId::Text(text) => text.to_string(),
        }
    }
}

/// The 16 bytes of a task id in the canonical UUID form, or `None` for any other text.
/// (Called several times per request: a table per digit, one check at the end.)
pub(crate) fn pack_uuid(text: &str) -> Option<[u8; 16]> {
    let b = text.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut bad = 0;
    for (byte, &at) in out.iter_mut().zip(&UUID_DIGITS) {
        let (high, low) = (NIBBLES[usize::from(b[at])], NIBBLES[usize::from(b[at + 1])]);
        bad |= high | low;
        *byte = (high << 4) | low;
    }
    (bad & NOT_HEX == 0).then_some(out)
}

/// Where each byte's two digits start in the canonical UUID text (`8-4-4-4-12`).
const UUID_DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

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
    let mut bad = 0;
    for (byte, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        bad |= high | low;
        *byte = (high << 4) | low;
    }
    (bad & NOT_HEX == 0).then_some(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Marks a byte that is not a lowercase hex digit in [`NIBBLES`] (uppercase is not
/// canonical, so not packed).
const NOT_HEX: u8 = 0x10;

/// Every byte's value as a lowercase hex digit, or [`NOT_HEX`].
const NIBBLES: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        table[HEX[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

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
    fn only_lowercase_hex_digits_pack_in_every_place() {
        let id = *b"9f1c2e3d-4b5a-4c6d-8e7f-0123456789ab";
        let hash = [b'7'; 64];
        for byte in 0..=u8::MAX {
            let digit = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
            for at in (0..36).filter(|at| ![8, 13, 18, 23].contains(at)) {
                let mut text = id;
                text[at] = byte;
                let packed = std::str::from_utf8(&text).ok().and_then(pack_uuid);
                assert_eq!(packed.is_some(), digit, "{byte} at {at}");
                if let Some(packed) = packed {
                    assert_eq!(unpack_uuid(&packed).as_bytes(), text);
                }
            }
            for at in [0, 1, 62, 63] {
                let mut text = hash;
                text[at] = byte;
                let packed = std::str::from_utf8(&text).ok().and_then(pack_sha256);
                assert_eq!(packed.is_some(), digit, "{byte} at {at} of a hash");
            }
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

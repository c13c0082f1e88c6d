//! The raw tensor data of the KServe V2 gRPC protocol (`raw_input_contents`,
//! `raw_output_contents`), the form Triton's clients send and read: a `BYTES` tensor is its
//! elements one after another, each a 4-byte little-endian length and then its bytes; an
//! `FP32` tensor is its numbers as little-endian 32-bit floats, row-major.

/// Bytes of the length before each element of a raw `BYTES` tensor.
const LENGTH_BYTES: usize = 4;

/// Why raw `BYTES` tensor data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawBytesError {
    /// The data ends inside an element's length or its bytes.
    #[error("raw BYTES data is cut short: element {index} needs {needed} bytes at offset {offset}, {left} left")]
    Truncated {
        /// The element (0-based).
        index: usize,
        /// Where it starts.
        offset: usize,
        /// Bytes it needs from there (its length, and the length's own 4 bytes).
        needed: usize,
        /// Bytes left from there.
        left: usize,
    },
    /// More elements than allowed.
    #[error("raw BYTES data holds more than {max} elements")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// The elements of raw `BYTES` tensor data, borrowed from it; at most `max` of them (so an
/// input of many empty elements cannot make a huge list).
pub fn split_bytes(raw: &[u8], max: usize) -> Result<Vec<&[u8]>, RawBytesError> {
    let mut items = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let index = items.len();
        if index == max {
            return Err(RawBytesError::TooMany { max });
        }
        let offset = raw.len() - rest.len();
        let truncated = |needed| RawBytesError::Truncated {
            index,
            offset,
            needed,
            left: rest.len(),
        };
        let Some((length, after)) = rest.split_first_chunk::<LENGTH_BYTES>() else {
            return Err(truncated(LENGTH_BYTES));
        };
        let length = u32::from_le_bytes(*length) as usize;
        if after.len() < length {
            return Err(truncated(LENGTH_BYTES + length));
        }
        let (item, after) = after.split_at(length);
        items.push(item);
        rest = after;
    }
    Ok(items)
}

/// Raw `BYTES` tensor data of `items`, in order. An element longer than 4 GiB cannot be
/// written (none is: outputs are far smaller), and is cut to that.
pub fn join_bytes<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut raw = Vec::new();
    for item in items {
        let length = u32::try_from(item.len()).unwrap_or(u32::MAX);
        raw.extend_from_slice(&length.to_le_bytes());
        raw.extend_from_slice(&item[..length as usize]);
    }
    raw
}

/// Raw `FP32` tensor data of `rows`, one after another.
pub fn join_f32<'a>(rows: impl IntoIterator<Item = &'a [f32]>) -> Vec<u8> {
    let mut raw = Vec::new();
    for row in rows {
        raw.reserve(row.len() * 4);
        for x in row {
            raw.extend_from_slice(&x.to_le_bytes());
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_elements_read_back_as_written() {
        let items: [&[u8]; 4] = [b"hello", b"", b"\xff\x00 not text", &[7u8; 300]];
        let raw = join_bytes(items);
        assert_eq!(&raw[..9], b"\x05\x00\x00\x00hello");
        assert_eq!(split_bytes(&raw, 10), Ok(items.to_vec()));
        assert_eq!(split_bytes(&[], 10), Ok(Vec::new()));
    }

    #[test]
    fn cut_or_oversized_data_is_an_error_not_a_panic() {
        let raw = join_bytes([b"abc".as_slice(), b"defg".as_slice()]);
        for cut in 1..raw.len() {
            if cut == 7 {
                continue; // the first element alone: whole
            }
            assert!(split_bytes(&raw[..cut], 10).is_err(), "cut at {cut}");
        }
        assert_eq!(
            split_bytes(b"\x10\x00\x00\x00abc", 10),
            Err(RawBytesError::Truncated {
                index: 0,
                offset: 0,
                needed: 20,
                left: 7
            })
        );
        let huge_length = u32::MAX.to_le_bytes();
        assert!(split_bytes(&huge_length, 10).is_err());
        let many = join_bytes(std::iter::repeat_n(b"".as_slice(), 3));
        assert_eq!(
            split_bytes(&many, 2),
            Err(RawBytesError::TooMany { max: 2 })
        );
    }

    #[test]
    fn floats_are_little_endian_rows() {
        let raw = join_f32([[1.0f32, -2.5].as_slice(), [0.5].as_slice()]);
        assert_eq!(raw.len(), 12);
        assert_eq!(&raw[..4], &1.0f32.to_le_bytes());
        assert_eq!(&raw[4..8], &(-2.5f32).to_le_bytes());
        assert_eq!(&raw[8..], &0.5f32.to_le_bytes());
    }
}

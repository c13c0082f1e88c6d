//! Request ids: a client's `x-request-id` is kept only if it is short and made of safe
//! characters; otherwise (or if there are several) it is dropped and the gateway makes one,
//! so a client cannot put text of its choosing — spaces, `=`, quotes, newlines, 60 KB — into
//! log lines or echoed headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use uuid::Uuid;

/// The request id header. A `HeaderName` made once: given as a `&str`, the name would be
/// checked, and copied into a new `HeaderName`, at each use (three a request).
pub(crate) const HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest client request id kept.
pub(crate) const MAX_LEN: usize = 128;

/// Whether a client's request id is kept: 1 to [`MAX_LEN`] ASCII letters, digits, `-`, `_`,
/// `.` or `:`.
pub(crate) fn acceptable(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Makes sure the request has exactly one acceptable request id: the client's, if
/// [`acceptable`], else (none, several, or a bad one) a new UUID. Returns it, to echo in the
/// answer; `None` only if it could not be made a header value, which a UUID always can.
pub(super) fn ensure(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let kept = {
        let mut ids = headers.get_all(&HEADER).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) if acceptable(id.as_bytes()) => Some(id.clone()),
            _ => None,
        }
    };
    if let Some(id) = kept {
        return Some(id);
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let fresh = Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let fresh = HeaderValue::from_str(fresh).ok()?;
    // Replaces every value the client sent.
    headers.insert(HEADER, fresh.clone());
    Some(fresh)
}

#[cfg(test)]
mod tests {
    use super::acceptable;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(acceptable(b"abc-123_X.y:z"));
        assert!(acceptable(uuid::Uuid::new_v4().to_string().as_bytes()));
        for bad in [
            &b""[..],
            b"abc task_id=FORGED",
            b"a\"b",
            b"a\nb",
            b"caf\xc3\xa9",
            "x".repeat(129).as_bytes(),
        ] {
            assert!(!acceptable(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

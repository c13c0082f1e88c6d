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

/// The request's id: the client's, if it sent one that is [`acceptable`], else (none,
/// several, or a bad one) a new UUID. Returned, to name the request in its span and to echo
/// in the answer; `None` only if it could not be made a header value, which a UUID always
/// can. Client ids that are not kept are taken out of `headers`, so nothing below sees
/// them; a new id is not put in (nothing below reads it there: a copy a request saved).
pub(super) fn ensure(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let refused = {
        let mut ids = headers.get_all(&HEADER).iter();
        match (ids.next(), ids.next()) {
            (Some(id), None) if acceptable(id.as_bytes()) => return Some(id.clone()),
            (None, _) => false,
            _ => true,
        }
    };
    if refused {
        headers.remove(&HEADER);
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let fresh = Uuid::new_v4().hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(fresh).ok()
}

#[cfg(test)]
mod tests {
    use super::{acceptable, ensure, HEADER};
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn a_client_id_is_kept_only_alone_and_acceptable_and_refused_ones_are_taken_out() {
        let mut headers = HeaderMap::new();
        let fresh = ensure(&mut headers).expect("an id");
        assert!(uuid::Uuid::parse_str(fresh.to_str().expect("text")).is_ok());
        assert!(headers.get(&HEADER).is_none(), "a new id is not put in");

        headers.insert(HEADER, HeaderValue::from_static("plain-id-42"));
        assert_eq!(
            ensure(&mut headers),
            Some(HeaderValue::from_static("plain-id-42"))
        );
        assert_eq!(headers.get_all(&HEADER).iter().count(), 1, "kept");

        for sent in [vec!["a b"], vec!["one", "two"]] {
            let mut headers = HeaderMap::new();
            for id in &sent {
                headers.append(HEADER, HeaderValue::from_str(id).expect("a header value"));
            }
            let given = ensure(&mut headers).expect("an id");
            assert!(!sent.contains(&given.to_str().expect("text")), "{sent:?}");
            assert!(headers.get(&HEADER).is_none(), "{sent:?} taken out");
        }
    }

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

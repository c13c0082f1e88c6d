//! Request ids: a client's `x-request-id` is kept only if it is short and made of safe
//! characters; otherwise (or if there are several) it is dropped and the gateway makes one,
//! so a client cannot put text of its choosing — spaces, `=`, quotes, newlines, 60 KB — into
//! log lines or echoed headers.

use axum::extract::Request;

/// The request id header.
pub(crate) const HEADER: &str = "x-request-id";
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

/// Drops a request id the gateway will not use, before the id layer makes a fresh one. A
/// plain request map (`ServiceBuilder::map_request`): no future of its own, no allocation.
pub(super) fn sanitize(mut request: Request) -> Request {
    let keep = {
        let mut ids = request.headers().get_all(HEADER).iter();
        match (ids.next(), ids.next()) {
            (None, _) => true,
            (Some(id), None) => acceptable(id.as_bytes()),
            (Some(_), Some(_)) => false,
        }
    };
    if !keep {
        request.headers_mut().remove(HEADER);
    }
    request
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

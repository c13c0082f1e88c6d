//! A task's record on Redis: one string with its TTL, so that writing it is one `SET … PX`
//! and reading it one `GET` (a hash cost a command per operation on it, and its TTL another).
//!
//! ```text
//! pending  P<created_at>;<owner length>;<owner>
//!          W<created_at>;<owner length>;<owner>;<gateway>[;<gateway>]…
//! final    S<created_at>;<owner length>;<owner>;<completed_at>;<output>
//!          F<created_at>;<owner length>;<owner>;<completed_at>;<error>
//! ```
//!
//! The output is in its stored form ([`Output::encode`]): text as it is (so records written
//! before outputs had types read back as text), a vector or bytes as `0xFF`, a tag and the
//! raw numbers or bytes — never JSON text inside a string.
//!
//! Times are Unix milliseconds; the owner's length is in bytes ("0" and nothing for none); a
//! pending record of kind `W` lists the gateways, other than the one that admitted the task,
//! that wait for it (gateway ids never hold `;`), so the settle looks for them only there. The part from `created_at` to the owner is the record's
//! *head*: the batcher knows it from the task and writes the final record whole
//! ([`final_record`]); when it does not, the settle script carries the head over from the
//! pending record, and writes `0;0;` when the pending record is gone. The scripts that read and write records
//! (`admit.lua`, `settle.lua`, `watch.lua`) follow this layout; these functions are its Rust
//! side, and the tests below pin both.

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::Output;
use batchgate_store::TaskRecord;

/// The pending record of a task admitted at `created_at`.
pub(crate) fn pending(created_at: u64, owner: Option<&str>) -> String {
    let mut record = String::with_capacity(HEAD_NUMBERS + owner.map_or(0, str::len) + 1);
    record.push('P');
    push_head(&mut record, created_at, owner);
    record
}

/// A record's head: `<created_at>;<owner length>;<owner>`.
pub(crate) fn head(created_at: u64, owner: Option<&str>) -> String {
    let mut head = String::with_capacity(HEAD_NUMBERS + owner.map_or(0, str::len));
    push_head(&mut head, created_at, owner);
    head
}

/// Room for a head's two numbers and separators, most of the time.
const HEAD_NUMBERS: usize = 24;

/// Appends a head, its numbers written with `itoa` rather than the formatting machinery
/// (records are written a few times a task).
fn push_head(out: &mut String, created_at: u64, owner: Option<&str>) {
    let owner = owner.unwrap_or_default();
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(created_at));
    out.push(';');
    out.push_str(digits.format(owner.len()));
    out.push(';');
    out.push_str(owner);
}

/// A final record: `status` is `'S'` (then `value` is the output's stored form,
/// [`Output::encode`]) or `'F'` (the error's text), and `head` the task's [`head`]. Without
/// the head, the status and tail alone (`S;<completed_at>;<output>`), which the settle script
/// completes with the head of the pending record.
pub(crate) fn final_record(
    status: char,
    head: Option<&str>,
    completed_at: u64,
    value: &[u8],
) -> Vec<u8> {
    let head = head.unwrap_or_default();
    let mut digits = itoa::Buffer::new();
    let completed_at = digits.format(completed_at);
    let mut record = Vec::with_capacity(head.len() + completed_at.len() + value.len() + 6);
    let mut status_bytes = [0; 4];
    record.extend_from_slice(status.encode_utf8(&mut status_bytes).as_bytes());
    record.extend_from_slice(head.as_bytes());
    record.push(b';');
    record.extend_from_slice(completed_at.as_bytes());
    record.push(b';');
    record.extend_from_slice(value);
    record
}

/// Reads a record; `None` for anything that is not one.
pub(crate) fn parse(record: &[u8]) -> Option<TaskRecord> {
    let (&kind, rest) = record.split_first()?;
    let status = match kind {
        b'P' | b'W' => TaskStatus::Pending,
        b'S' => TaskStatus::Success,
        b'F' => TaskStatus::Failed,
        _ => return None,
    };
    let (created_at, rest) = number(rest)?;
    let (owner_len, rest) = number(rest)?;
    let owner_len = usize::try_from(owner_len).ok()?;
    let owner = rest.get(..owner_len)?;
    let rest = &rest[owner_len..];
    let owner = (!owner.is_empty()).then(|| String::from_utf8_lossy(owner).into_owned());
    let mut record = TaskRecord {
        status,
        output: None,
        error: None,
        created_at,
        owner,
        completed_at: None,
    };
    if status == TaskStatus::Pending {
        // The rest is the watching gateways: not part of the record's meaning.
        return Some(record);
    }
    let (completed_at, value) = number(rest.strip_prefix(b";")?)?;
    record.completed_at = Some(completed_at);
    if record.created_at == 0 {
        // Stored without its pending record (it had expired): the best creation time known.
        record.created_at = completed_at;
    }
    match status {
        TaskStatus::Success => record.output = Some(Output::decode(value)?),
        _ => record.error = Some(String::from_utf8_lossy(value).into_owned()),
    }
    Some(record)
}

/// The gateways a pending record of kind `W` lists as waiting for it (none for any other
/// record).
pub(crate) fn watchers(record: &[u8]) -> impl Iterator<Item = &str> {
    let listed = (|| {
        let rest = record.strip_prefix(b"W")?;
        let (_, rest) = number(rest)?;
        let (owner_len, rest) = number(rest)?;
        rest.get(usize::try_from(owner_len).ok()?..)
    })();
    listed
        .unwrap_or_default()
        .split(|&b| b == b';')
        .filter_map(|g| std::str::from_utf8(g).ok())
        .filter(|g| !g.is_empty())
}

/// A decimal number up to the next `;`, and what follows that `;`.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let end = bytes.iter().position(|&b| b == b';')?;
    let n = std::str::from_utf8(&bytes[..end]).ok()?.parse().ok()?;
    Some((n, &bytes[end + 1..]))
}

/// A gateway id that can stand in a record and a channel name: characters other than ASCII
/// letters, digits, `.`, `_` and `-` become `_`.
pub fn safe_gateway_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_records_read_back() {
        assert_eq!(pending(5, Some("al")), format!("P{}", head(5, Some("al"))));
        assert_eq!(pending(5, None), "P5;0;");
        let r = parse(pending(5, Some("alice;bob")).as_bytes()).expect("parses");
        assert_eq!(
            (r.status, r.created_at, r.owner.as_deref(), r.completed_at),
            (TaskStatus::Pending, 5, Some("alice;bob"), None)
        );
        let r = parse(format!("W{};gateway-1;gateway-2", head(5, None)).as_bytes())
            .expect("parses with watchers");
        assert_eq!((r.status, r.owner), (TaskStatus::Pending, None));
    }

    #[test]
    fn final_records_read_back() {
        let r = parse(b"S5;3;bob;9;out;put").expect("parses");
        assert_eq!(
            (r.status, r.created_at, r.owner.as_deref(), r.completed_at),
            (TaskStatus::Success, 5, Some("bob"), Some(9))
        );
        assert_eq!(
            (r.output_text(), r.error.as_deref()),
            (Some("out;put"), None)
        );
        let r = parse(b"F0;0;;9;worker error").expect("parses without a pending record");
        assert_eq!(
            (r.status, r.created_at, r.owner, r.error.as_deref()),
            (TaskStatus::Failed, 9, None, Some("worker error"))
        );
    }

    #[test]
    fn final_records_written_here_read_back() {
        let head = head(5, Some("bob"));
        let r = parse(&final_record('S', Some(&head), 9, b"out;put")).expect("parses");
        assert_eq!(
            (r.status, r.created_at, r.owner.as_deref(), r.completed_at),
            (TaskStatus::Success, 5, Some("bob"), Some(9))
        );
        assert_eq!(r.output_text(), Some("out;put"));
        // Without the head, the script puts the pending record's head after the status.
        let tail = final_record('F', None, 9, b"boom");
        let completed = [&tail[..1], head.as_bytes(), &tail[1..]].concat();
        let r = parse(&completed).expect("parses once completed");
        assert_eq!(
            (r.status, r.error.as_deref()),
            (TaskStatus::Failed, Some("boom"))
        );
    }

    #[test]
    fn typed_outputs_read_back_as_written() {
        let head = head(5, Some("bob"));
        for output in [
            Output::Vector(vec![0.5, -2.0, 1e-3]),
            Output::Bytes(vec![b';', 0xFF, 0]),
        ] {
            let stored = final_record('S', Some(&head), 9, &output.encode());
            let r = parse(&stored).expect("parses");
            assert_eq!((r.status, r.output), (TaskStatus::Success, Some(output)));
        }
        // A tagged output cut short is not a record.
        assert!(parse(b"S5;0;;9;\xFFV\x00\x00").is_none());
    }

    #[test]
    fn anything_else_is_not_a_record() {
        for bad in [
            &b""[..],
            b"X1;0;",
            b"P1;9;ab",
            b"S1;0;",
            b"Pq;0;",
            b"S1;0;;x;o",
        ] {
            assert!(parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn gateway_ids_are_made_safe() {
        assert_eq!(
            safe_gateway_id("gateway-h;o st-1.2_x"),
            "gateway-h_o_st-1.2_x"
        );
    }
}

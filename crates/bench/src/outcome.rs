//! How one request ended, and how a server answer is read into that.
//!
//! Pure functions of status codes and bodies, so every classification is unit-tested without a
//! server.

use std::fmt;

use batchgate_protocol::api::{ErrorBody, TaskStatus, TaskView};
use batchgate_protocol::sim_output;

/// How one request ended. Its [`Display`](fmt::Display) is the kind's name in the report.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// `SUCCESS` with the right output (or any output, with `--no-check`).
    Ok,
    /// `SUCCESS` with an output other than `sim_output(input)`, or none.
    WrongOutput,
    /// `FAILED`: the server gave up on the task.
    Failed,
    /// An HTTP error status, with the `error.code` of the body when it had our error shape.
    Http { status: u16, code: Option<String> },
    /// A 200/202 whose body is not a `TaskView`.
    BadResponse,
    /// No final answer within `--timeout-ms`.
    Timeout,
    /// Could not connect.
    Connect,
    /// Any other transport failure (reset connection, truncated body, ...).
    Io,
    /// Never sent: all `--max-connections` were busy when it was due (open loop only).
    ClientOverloaded,
}

impl Outcome {
    /// True for [`Outcome::Ok`]; everything else is an error in the report.
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The outcome of a transport error from the client. The first error of each kind is
    /// logged with its full cause chain, so that a report's counts can be explained.
    pub(crate) fn of_transport_error(error: &reqwest::Error) -> Outcome {
        static LOGGED: [std::sync::Once; 3] = [const { std::sync::Once::new() }; 3];
        let (outcome, kind) = if error.is_timeout() {
            (Outcome::Timeout, 0)
        } else if error.is_connect() {
            (Outcome::Connect, 1)
        } else {
            (Outcome::Io, 2)
        };
        LOGGED[kind].call_once(|| {
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            tracing::warn!(kind = %outcome, error = %chain, "first transport error of this kind");
        });
        outcome
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::WrongOutput => f.write_str("wrong_output"),
            Outcome::Failed => f.write_str("failed"),
            Outcome::Http { status, code: None } => write!(f, "http_{status}"),
            Outcome::Http {
                status,
                code: Some(code),
            } => write!(f, "http_{status}:{code}"),
            Outcome::BadResponse => f.write_str("bad_response"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Connect => f.write_str("connect"),
            Outcome::Io => f.write_str("io"),
            Outcome::ClientOverloaded => f.write_str("client_overloaded"),
        }
    }
}

/// What one HTTP answer of the API means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The task is finished: judge its view.
    Done(TaskView),
    /// The task is still pending: poll `GET /v1/result/{task_id}`.
    Pending { task_id: String },
    /// The request ended here.
    Ended(Outcome),
}

/// Reads an answer of `POST /v1/inference` or `GET /v1/result/{id}`: 200 and 202 carry a
/// `TaskView`; anything else is an error, named by status and the body's error code.
pub(crate) fn read_answer(status: u16, body: &[u8]) -> Answer {
    if status != 200 && status != 202 {
        let code = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|error| error.error.code);
        return Answer::Ended(Outcome::Http { status, code });
    }
    match serde_json::from_slice::<TaskView>(body) {
        Ok(view) if view.status == TaskStatus::Pending => Answer::Pending {
            task_id: view.task_id,
        },
        Ok(view) => Answer::Done(view),
        Err(_) => Answer::Ended(Outcome::BadResponse),
    }
}

/// Judges a finished task against the input that was sent.
pub(crate) fn judge(view: &TaskView, input: &str, check: bool) -> Outcome {
    match (view.status, &view.output) {
        (TaskStatus::Failed, _) => Outcome::Failed,
        (TaskStatus::Success, Some(_)) if !check => Outcome::Ok,
        (TaskStatus::Success, Some(output)) if *output == sim_output(input) => Outcome::Ok,
        (TaskStatus::Success, _) => Outcome::WrongOutput,
        // `read_answer` never hands a pending view here; if it did, it is not an answer.
        (TaskStatus::Pending, _) => Outcome::BadResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: &str, output: Option<&str>) -> Vec<u8> {
        let mut value = serde_json::json!({
            "task_id": "t-1",
            "status": status,
            "created_at": 1,
        });
        if let Some(output) = output {
            value["output"] = output.into();
        }
        serde_json::to_vec(&value).expect("json serializes")
    }

    fn ended(status: u16, body: &[u8]) -> String {
        match read_answer(status, body) {
            Answer::Ended(outcome) => outcome.to_string(),
            other => panic!("expected an end, got {other:?}"),
        }
    }

    #[test]
    fn done_answers_are_judged() {
        let right = sim_output("hello");
        let Answer::Done(ok) = read_answer(200, &view("SUCCESS", Some(&right))) else {
            panic!("a success is done");
        };
        assert_eq!(judge(&ok, "hello", true), Outcome::Ok);
        assert_eq!(judge(&ok, "other", true), Outcome::WrongOutput);
        assert_eq!(judge(&ok, "other", false), Outcome::Ok);

        let Answer::Done(no_output) = read_answer(200, &view("SUCCESS", None)) else {
            panic!("a success is done");
        };
        assert_eq!(judge(&no_output, "hello", true), Outcome::WrongOutput);

        let Answer::Done(failed) = read_answer(200, &view("FAILED", None)) else {
            panic!("a failure is done");
        };
        assert_eq!(judge(&failed, "hello", true), Outcome::Failed);
    }

    #[test]
    fn pending_answers_are_polled() {
        for status in [200, 202] {
            assert_eq!(
                read_answer(status, &view("PENDING", None)),
                Answer::Pending {
                    task_id: "t-1".to_owned()
                }
            );
        }
    }

    #[test]
    fn errors_are_named_by_status_and_code() {
        let body = br#"{"error": {"code": "rate_limited", "message": "slow down"}}"#;
        assert_eq!(ended(429, body), "http_429:rate_limited");
        let body = br#"{"error": {"code": "overloaded", "message": "queue full"}}"#;
        assert_eq!(ended(503, body), "http_503:overloaded");
        let body = br#"{"error": {"code": "invalid_input", "message": "empty"}}"#;
        assert_eq!(ended(400, body), "http_400:invalid_input");
        assert_eq!(ended(502, b"<html>bad gateway</html>"), "http_502");
        assert_eq!(ended(404, b""), "http_404");
    }

    #[test]
    fn garbage_success_is_a_bad_response() {
        assert_eq!(ended(200, b"not json"), "bad_response");
        assert_eq!(ended(202, br#"{"status": "SUCCESS"}"#), "bad_response");
    }

    #[test]
    fn kinds_have_stable_names() {
        let names: Vec<String> = [
            Outcome::Ok,
            Outcome::WrongOutput,
            Outcome::Failed,
            Outcome::BadResponse,
            Outcome::Timeout,
            Outcome::Connect,
            Outcome::Io,
            Outcome::ClientOverloaded,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            [
                "ok",
                "wrong_output",
                "failed",
                "bad_response",
                "timeout",
                "connect",
                "io",
                "client_overloaded"
            ]
        );
    }
}

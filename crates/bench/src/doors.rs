//! The OpenAI and KServe V2 front doors (`--api openai|kserve`): one call carries every input
//! of a request and answers with all their outputs in order, so there is nothing to poll. How
//! a body is built and an answer judged, as pure functions unit-tested without a server.

use batchgate_protocol::api::ErrorBody;
use batchgate_protocol::front::kserve::{InferAnswer, KserveErrorBody};
use batchgate_protocol::front::openai::{EmbeddingList, EmbeddingVector};
use batchgate_protocol::openai::embedding_of_output;
use batchgate_protocol::sim_output;
use serde_json::{json, Value};

use crate::outcome::Outcome;

/// The model named when `--model` is not given: the server's default `--model-name`.
pub(crate) const DEFAULT_MODEL: &str = "default";

/// `POST /v1/embeddings` body of `inputs`.
pub(crate) fn openai_body<I: AsRef<str>>(model: &str, inputs: &[I]) -> Value {
    let texts: Vec<&str> = inputs.iter().map(AsRef::as_ref).collect();
    json!({ "model": model, "input": texts })
}

/// `POST /v2/models/{model}/infer` body of `inputs`: one `BYTES` tensor `[N]`.
pub(crate) fn kserve_body<I: AsRef<str>>(inputs: &[I]) -> Value {
    let texts: Vec<&str> = inputs.iter().map(AsRef::as_ref).collect();
    json!({
        "inputs": [{
            "name": "input",
            "shape": [inputs.len()],
            "datatype": "BYTES",
            "data": texts,
        }],
    })
}

/// An error answer named by status and the stable code its body carries, in OpenAI's shape
/// (`error.code`) or KServe V2's (`code` beside `error`).
fn error_outcome(status: u16, body: &[u8]) -> Outcome {
    let code = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error.code)
        .or_else(|_| serde_json::from_slice::<KserveErrorBody>(body).map(|e| e.code))
        .ok();
    Outcome::Http { status, code }
}

/// Judges an answer of `/v1/embeddings` to `inputs`: one embedding per input, in order, each
/// the vector the simulated worker's output for its input stands for (unless `check` is off).
pub(crate) fn judge_openai<I: AsRef<str>>(
    status: u16,
    body: &[u8],
    inputs: &[I],
    check: bool,
) -> Outcome {
    if status != 200 {
        return error_outcome(status, body);
    }
    let Ok(list) = serde_json::from_slice::<EmbeddingList>(body) else {
        return Outcome::BadResponse;
    };
    if list.data.len() != inputs.len() {
        return Outcome::WrongOutput;
    }
    for (position, (item, input)) in list.data.iter().zip(inputs).enumerate() {
        let EmbeddingVector::Float(vector) = &item.embedding else {
            return Outcome::BadResponse;
        };
        if item.index != position {
            return Outcome::WrongOutput;
        }
        if check {
            let expected: Vec<f32> = embedding_of_output(&sim_output(input.as_ref()))
                .into_iter()
                .map(|x| x as f32)
                .collect();
            if *vector != expected {
                return Outcome::WrongOutput;
            }
        }
    }
    Outcome::Ok
}

/// Judges an answer of KServe V2's `infer` to `inputs`: a `BYTES` tensor `[N]` whose rows
/// are the simulated worker's outputs for the inputs, in order (unless `check` is off).
pub(crate) fn judge_kserve<I: AsRef<str>>(
    status: u16,
    body: &[u8],
    inputs: &[I],
    check: bool,
) -> Outcome {
    if status != 200 {
        return error_outcome(status, body);
    }
    let Ok(answer) = serde_json::from_slice::<InferAnswer>(body) else {
        return Outcome::BadResponse;
    };
    let Some(tensor) = answer.outputs.first() else {
        return Outcome::BadResponse;
    };
    if !check {
        return Outcome::Ok;
    }
    let Some(rows) = tensor.data.as_array() else {
        return Outcome::BadResponse;
    };
    let right = rows.len() == inputs.len()
        && rows
            .iter()
            .zip(inputs)
            .all(|(row, input)| row.as_str() == Some(sim_output(input.as_ref()).as_str()));
    if right {
        Outcome::Ok
    } else {
        Outcome::WrongOutput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<String> {
        vec!["one".to_owned(), "two".to_owned()]
    }

    #[test]
    fn openai_answers_are_checked_input_by_input() {
        let embedding = |text: &str| -> Vec<f32> {
            embedding_of_output(&sim_output(text))
                .into_iter()
                .map(|x| x as f32)
                .collect()
        };
        let answer = |first: &str, second: &str| {
            serde_json::to_vec(&json!({
                "object": "list",
                "model": "default",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
                "data": [
                    {"object": "embedding", "index": 0, "embedding": embedding(first)},
                    {"object": "embedding", "index": 1, "embedding": embedding(second)},
                ],
            }))
            .expect("json")
        };
        assert_eq!(
            judge_openai(200, &answer("one", "two"), &inputs(), true),
            Outcome::Ok
        );
        let swapped = answer("two", "one");
        assert_eq!(
            judge_openai(200, &swapped, &inputs(), true),
            Outcome::WrongOutput
        );
        assert_eq!(judge_openai(200, &swapped, &inputs(), false), Outcome::Ok);
        let refused = br#"{"error": {"message": "m", "type": "rate_limit_error", "param": null, "code": "rate_limited"}}"#;
        assert_eq!(
            judge_openai(429, refused, &inputs(), true).to_string(),
            "http_429:rate_limited"
        );
        assert_eq!(
            judge_openai(200, b"{}", &inputs(), true),
            Outcome::BadResponse
        );
    }

    #[test]
    fn kserve_answers_are_checked_row_by_row() {
        let answer = |rows: Vec<String>| {
            serde_json::to_vec(&json!({
                "model_name": "default",
                "outputs": [{"name": "output", "shape": [rows.len()], "datatype": "BYTES", "data": rows}],
            }))
            .expect("json")
        };
        let right = answer(vec![sim_output("one"), sim_output("two")]);
        assert_eq!(judge_kserve(200, &right, &inputs(), true), Outcome::Ok);
        let short = answer(vec![sim_output("one")]);
        assert_eq!(
            judge_kserve(200, &short, &inputs(), true),
            Outcome::WrongOutput
        );
        let refused = br#"{"error": "over capacity", "code": "overloaded"}"#;
        assert_eq!(
            judge_kserve(503, refused, &inputs(), true).to_string(),
            "http_503:overloaded"
        );
        assert_eq!(kserve_body(&inputs())["inputs"][0]["shape"], json!([2]));
    }
}

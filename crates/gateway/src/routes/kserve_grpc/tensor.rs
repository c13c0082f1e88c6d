//! Tensors in and out of `ModelInfer`: the texts of the request's one `BYTES` input tensor,
//! given as `contents.bytes_contents` or as `raw_input_contents` (what Triton's clients send),
//! and the output tensor in `raw_output_contents` (what Triton's clients read: they ignore
//! typed output contents other than `bytes_contents`).

use std::borrow::Cow;

use batchgate_protocol::front::kserve::{BYTES, FP32, OUTPUT_NAME};
use batchgate_protocol::front::kserve_raw::{join_bytes, join_f32, split_bytes, RawBytesError};
use batchgate_protocol::kserve_grpc::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use batchgate_protocol::kserve_grpc::model_infer_response::InferOutputTensor;
use batchgate_protocol::Output;

use crate::error::ApiError;
use crate::routes::kserve::{check_bytes, check_rows, only_output, vector_rows};

/// Most texts in one call (as over HTTP).
const MAX_INPUTS: usize = batchgate_protocol::front::openai::MAX_INPUTS;

/// The texts of the request's one `BYTES` tensor, checked against its shape, with the
/// outputs asked for checked too.
pub(super) fn texts_of(
    mut inputs: Vec<InferInputTensor>,
    mut raw: Vec<Vec<u8>>,
    outputs: &[InferRequestedOutputTensor],
) -> Result<Vec<String>, ApiError> {
    let invalid = |m: String| Err(ApiError::InvalidRequest(m));
    only_output(outputs.iter().map(|o| o.name.as_str()))?;
    let count = inputs.len();
    let Some(mut tensor) = inputs.pop().filter(|_| count == 1) else {
        return invalid(format!("expected one input tensor of texts, got {count}"));
    };
    check_bytes(&tensor.name, &tensor.datatype)?;
    let given = tensor
        .contents
        .take()
        .map(|c| c.bytes_contents)
        .unwrap_or_default();
    let items: Vec<Cow<'_, [u8]>> = match (raw.pop(), raw.is_empty()) {
        (None, _) => given.into_iter().map(Cow::Owned).collect(),
        (Some(data), true) if given.is_empty() => {
            let items = split_bytes(&data, MAX_INPUTS).map_err(|e| match e {
                RawBytesError::TooMany { .. } => ApiError::InvalidRequest(format!(
                    "the input must hold 1 to {MAX_INPUTS} texts, got more"
                )),
                RawBytesError::Truncated { .. } => {
                    ApiError::InvalidRequest(format!("input {:?}: {e}", tensor.name))
                }
            })?;
            // Copied into strings below; the raw buffer is dropped with this call.
            return texts(&tensor, items.into_iter().map(Cow::Borrowed).collect());
        }
        (Some(_), true) => {
            return invalid(format!(
                "input {:?} has both contents and raw_input_contents; send one",
                tensor.name
            ))
        }
        (Some(_), false) => {
            return invalid(format!(
                "raw_input_contents has {} entries for one input tensor",
                raw.len() + 1
            ))
        }
    };
    texts(&tensor, items)
}

/// The items as texts, once their number fits the tensor's shape.
fn texts(tensor: &InferInputTensor, items: Vec<Cow<'_, [u8]>>) -> Result<Vec<String>, ApiError> {
    check_rows(&tensor.name, &tensor.shape, items.len())?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            String::from_utf8(item.into_owned()).map_err(|_| {
                ApiError::InvalidRequest(format!(
                    "element {index} of input {:?} is not UTF-8 text",
                    tensor.name
                ))
            })
        })
        .collect()
}

/// The output tensor and its raw data: `FP32` `[N, D]` when every output is a vector of one
/// length `D`, else `BYTES` `[N]`: text as its UTF-8 bytes, bytes as they are (no base64:
/// gRPC carries bytes), a vector as `/v1/inference` shows it.
pub(super) fn output_of(outputs: &[Output]) -> (InferOutputTensor, Vec<u8>) {
    let n = i64::try_from(outputs.len()).unwrap_or(i64::MAX);
    let tensor = |datatype: &str, shape: Vec<i64>| InferOutputTensor {
        name: OUTPUT_NAME.into(),
        datatype: datatype.into(),
        shape,
        parameters: Default::default(),
        contents: None,
    };
    if let Some((rows, d)) = vector_rows(outputs) {
        let d = i64::try_from(d).unwrap_or(i64::MAX);
        return (tensor(FP32, vec![n, d]), join_f32(rows));
    }
    let items: Vec<Cow<'_, [u8]>> = outputs
        .iter()
        .map(|o| match o {
            Output::Text(text) => Cow::Borrowed(text.as_bytes()),
            Output::Bytes(bytes) => Cow::Borrowed(bytes.as_slice()),
            Output::Vector(_) => Cow::Owned(o.to_text().into_bytes()),
        })
        .collect();
    (
        tensor(BYTES, vec![n]),
        join_bytes(items.iter().map(|i| i.as_ref())),
    )
}

#[cfg(test)]
mod tests {
    use batchgate_protocol::kserve_grpc::InferTensorContents;

    use super::*;

    fn tensor(shape: Vec<i64>, datatype: &str, items: &[&str]) -> InferInputTensor {
        InferInputTensor {
            name: "text".into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents: (!items.is_empty()).then(|| InferTensorContents {
                bytes_contents: items.iter().map(|i| i.as_bytes().to_vec()).collect(),
                ..Default::default()
            }),
        }
    }

    fn raw(items: &[&str]) -> Vec<Vec<u8>> {
        vec![join_bytes(items.iter().map(|i| i.as_bytes()))]
    }

    #[test]
    fn texts_come_from_contents_or_raw_data_and_must_fit_the_shape() {
        let typed = texts_of(vec![tensor(vec![2], BYTES, &["a", "b"])], vec![], &[]);
        assert_eq!(typed.expect("typed"), ["a", "b"]);
        let column = texts_of(vec![tensor(vec![2, 1], BYTES, &[])], raw(&["a", "b"]), &[]);
        assert_eq!(column.expect("raw"), ["a", "b"]);
        let bad = [
            texts_of(vec![tensor(vec![3], BYTES, &[])], raw(&["a", "b"]), &[]),
            texts_of(vec![tensor(vec![1], FP32, &[])], raw(&["a"]), &[]),
            texts_of(vec![tensor(vec![1], BYTES, &["a"])], raw(&["a"]), &[]),
            texts_of(vec![tensor(vec![0], BYTES, &[])], vec![], &[]),
            texts_of(vec![], vec![], &[]),
            texts_of(
                vec![tensor(vec![1], BYTES, &[])],
                vec![vec![9, 0, 0, 0]],
                &[],
            ),
            texts_of(
                vec![tensor(vec![1], BYTES, &[])],
                vec![join_bytes([b"\xff".as_slice()])],
                &[],
            ),
            texts_of(
                vec![tensor(vec![1], BYTES, &["a"])],
                vec![],
                &[InferRequestedOutputTensor {
                    name: "other".into(),
                    parameters: Default::default(),
                }],
            ),
        ];
        for (i, result) in bad.into_iter().enumerate() {
            let error = result.expect_err(&format!("case {i}"));
            let status = error.status_and_code().0;
            assert!(status.is_client_error(), "case {i}: {error:?}");
        }
    }

    #[test]
    fn vectors_are_fp32_rows_and_anything_else_length_prefixed_bytes() {
        let (fp32, data) = output_of(&[
            Output::Vector(vec![1.0, 2.0]),
            Output::Vector(vec![3.0, 4.5]),
        ]);
        assert_eq!((fp32.datatype.as_str(), fp32.shape), (FP32, vec![2, 2]));
        assert_eq!(
            data,
            join_f32([[1.0f32, 2.0].as_slice(), [3.0, 4.5].as_slice()])
        );
        let (bytes, data) = output_of(&[Output::Text("x".into()), Output::Bytes(vec![0xff])]);
        assert_eq!((bytes.datatype.as_str(), bytes.shape), (BYTES, vec![2]));
        assert_eq!(data, b"\x01\x00\x00\x00x\x01\x00\x00\x00\xff");
    }
}

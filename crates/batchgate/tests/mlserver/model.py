"""A tiny MLServer model for batchgate's KServe V2 test: for each string of its BYTES input
tensor `text`, the lowercase hex SHA-256 of its UTF-8 bytes, in the BYTES output tensor `hash`
(the same function as batchgate's simulated worker, so the test checks every output)."""

import hashlib

from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse


class EchoHash(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        [text] = [i for i in payload.inputs if i.name == "text"]
        hashes = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in StringCodec.decode_input(text)]
        return InferenceResponse(
            model_name=self.name,
            outputs=[StringCodec.encode_output("hash", hashes)],
        )

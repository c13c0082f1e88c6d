"""Triton's gRPC client (`tritonclient[grpc]`, `tritonclient.grpc.InferenceServerClient`)
against batchgate's KServe V2 gRPC door: the health and metadata calls, a call without a token,
then `infer` from CALLERS threads at once, every answer checked against the simulated worker's
deterministic embedding. Run by crates/batchgate/tests/api_clients.rs.

usage: grpc_clients.py HOST:PORT API_KEY MODEL CALLERS
Prints one JSON line of counts; exits 1 if any answer is wrong or any call failed.
"""

import hashlib
import json
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

host_port, api_key, model, callers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# gRPC metadata keys are lowercase.
auth = {"authorization": f"Bearer {api_key}"}


def expected(text):
    """The embedding batchgate answers for `text` with the simulated worker behind the
    OpenAI-style adapter: 8 numbers from the SHA-256 of the worker's output (the hex SHA-256
    of the input), each a big-endian i16 over 32768 (batchgate_protocol::openai)."""
    output = hashlib.sha256(text.encode()).hexdigest()
    digest = hashlib.sha256(output.encode()).digest()
    return [struct.unpack(">h", digest[i : i + 2])[0] / 32768.0 for i in range(0, 16, 2)]


# A client (one gRPC channel) per thread, as the HTTP test does.
local = threading.local()


def grpc_call(i):
    client = getattr(local, "client", None)
    if client is None:
        client = local.client = triton.InferenceServerClient(url=host_port)
    texts = [f"grpc caller {i} first", f"grpc caller {i} second", f"grpc caller {i} third"]
    tensor = triton.InferInput("input", [len(texts)], "BYTES")
    # Sent as raw_input_contents: 4-byte little-endian lengths and the bytes.
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_))
    wanted = triton.InferRequestedOutput("output")
    result = client.infer(
        model, [tensor], outputs=[wanted], headers=auth, request_id=f"call-{i}", client_timeout=60
    )
    got = result.as_numpy("output")
    want = np.array([expected(t) for t in texts], dtype=np.float32)
    if got is None or got.dtype != np.float32 or got.shape != want.shape or not np.array_equal(got, want):
        raise AssertionError(f"grpc caller {i}: got {got!r}, want {want!r}")
    if result.get_response().id != f"call-{i}":
        raise AssertionError(f"grpc caller {i}: the answer's id is {result.get_response().id!r}")


probe = triton.InferenceServerClient(url=host_port)
if not (probe.is_server_live() and probe.is_server_ready() and probe.is_model_ready(model, headers=auth)):
    sys.exit("the gRPC health methods do not say live and ready")
metadata = probe.get_model_metadata(model, headers=auth)
if metadata.name != model or [t.datatype for t in metadata.inputs] != ["BYTES"]:
    sys.exit(f"the gRPC model metadata is not the served model's: {metadata}")
try:
    probe.is_model_ready(model)
    sys.exit("a call without a token was answered")
except InferenceServerException as error:
    if error.status() != "StatusCode.UNAUTHENTICATED":
        sys.exit(f"a call without a token got {error.status()}, not UNAUTHENTICATED: {error}")

failures = []
with ThreadPoolExecutor(max_workers=callers) as pool:
    for i, future in enumerate([pool.submit(grpc_call, i) for i in range(callers)]):
        try:
            future.result()
        except Exception as error:  # every failure is reported, not only the first
            failures.append(f"grpc caller {i}: {error!r}")
print(json.dumps({"callers": callers, "failures": len(failures)}))
for failure in failures[:20]:
    print(failure, file=sys.stderr)
sys.exit(1 if failures else 0)

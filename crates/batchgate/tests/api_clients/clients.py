"""Real clients against batchgate's front doors: the official `openai` SDK
(`client.embeddings.create`) and `tritonclient[http]` (`InferenceServerClient.infer`), each
from CALLERS threads at once, every answer checked against the simulated worker's
deterministic embedding. Run by crates/batchgate/tests/api_clients.rs.

usage: clients.py BASE_URL API_KEY MODEL CALLERS [FIRST]
Callers are numbered from FIRST (default 0): their inputs name their number, so runs with
different FIRSTs send different inputs.
Prints one JSON line of counts; exits 1 if any answer is wrong or any call failed.
"""

import hashlib
import json
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import tritonclient.http as triton

base, api_key, model, callers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
host_port = base.removeprefix("http://")


def expected(text):
    """The embedding batchgate answers for `text` with the simulated worker behind the
    OpenAI-style adapter: 8 numbers from the SHA-256 of the worker's output (the hex SHA-256
    of the input), each a big-endian i16 over 32768 (batchgate_protocol::openai)."""
    output = hashlib.sha256(text.encode()).hexdigest()
    digest = hashlib.sha256(output.encode()).digest()
    return [struct.unpack(">h", digest[i : i + 2])[0] / 32768.0 for i in range(0, 16, 2)]


# A client per thread: neither SDK promises that one client may be shared across threads
# (tritonclient's HTTP client is gevent-based).
local = threading.local()


def openai_call(i):
    client = getattr(local, "openai", None)
    if client is None:
        client = local.openai = openai.OpenAI(
            base_url=f"{base}/v1", api_key=api_key, max_retries=0, timeout=60
        )
    inputs = [f"openai caller {i} first", f"openai caller {i} second"]
    answer = client.embeddings.create(model=model, input=inputs)
    got = [item.embedding for item in sorted(answer.data, key=lambda d: d.index)]
    want = [expected(text) for text in inputs]
    if answer.model != model or [d.index for d in answer.data] != [0, 1] or got != want:
        raise AssertionError(f"openai caller {i}: got {got}, want {want}")


def triton_call(i):
    client = getattr(local, "triton", None)
    if client is None:
        client = local.triton = triton.InferenceServerClient(
            url=host_port, connection_timeout=60, network_timeout=60
        )
    headers = {"Authorization": f"Bearer {api_key}"}
    texts = [f"triton caller {i} first", f"triton caller {i} second", f"triton caller {i} third"]
    tensor = triton.InferInput("input", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=np.object_), binary_data=False)
    wanted = triton.InferRequestedOutput("output", binary_data=False)
    result = client.infer(model, [tensor], outputs=[wanted], headers=headers)
    got = result.as_numpy("output")
    want = np.array([expected(t) for t in texts], dtype=np.float32)
    if got is None or got.dtype != np.float32 or got.shape != want.shape or not np.array_equal(got, want):
        raise AssertionError(f"triton caller {i}: got {got!r}, want {want!r}")


def run(call):
    failures = []
    with ThreadPoolExecutor(max_workers=callers) as pool:
        numbers = range(first, first + callers)
        for i, future in zip(numbers, [pool.submit(call, i) for i in numbers]):
            try:
                future.result()
            except Exception as error:  # every failure is reported, not only the first
                failures.append(f"{call.__name__} {i}: {error!r}")
    return failures


# The protocols' own discovery calls first.
models = openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0).models.list()
if model not in [m.id for m in models.data]:
    sys.exit(f"GET /v1/models does not list {model}: {models}")
probe = triton.InferenceServerClient(url=host_port)
auth = {"Authorization": f"Bearer {api_key}"}
if not (probe.is_server_live() and probe.is_server_ready() and probe.is_model_ready(model, headers=auth)):
    sys.exit("the KServe V2 health endpoints do not say live and ready")
if probe.get_model_metadata(model, headers=auth)["name"] != model:
    sys.exit("the KServe V2 model metadata names another model")

failures = run(openai_call) + run(triton_call)
print(json.dumps({"callers": callers, "failures": len(failures)}))
for failure in failures[:20]:
    print(failure, file=sys.stderr)
sys.exit(1 if failures else 0)

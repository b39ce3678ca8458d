"""Property tests: whatever bytes arrive, load + diagnose succeed or raise a ProfdiagError.

Two generators: mutations of a real trace's bytes (truncations, byte flips, insertions,
deletions, plain and gzipped) and Kineto-like event lists whose fields take random types.
Derandomized with bounded examples so the run is reproducible and CI-sized.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

import profdiag
from profdiag.errors import ProfdiagError

from helpers import FIXTURES

SRC = FIXTURES / "torch" / "own_tiny_prefill_T128_B1.json.gz"
FUZZ = settings(max_examples=int(os.environ.get("PROFDIAG_FUZZ_EXAMPLES", "100")),
                deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _base() -> bytes:
    """A small real trace: the tiny prefill's head plus its first ~600 events."""
    doc = json.loads(gzip.decompress(SRC.read_bytes()))
    doc["traceEvents"] = doc["traceEvents"][:400] + [
        e for e in doc["traceEvents"] if e.get("cat") in ("kernel", "cuda_runtime")][:200]
    return json.dumps(doc, indent=1).encode()


BASE = _base()


def check(data: bytes, suffix: str = ".json") -> None:
    """The property: a Trace and a Diagnosis, or a ProfdiagError."""
    fd, name = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            trace = profdiag.load(name)
        except ProfdiagError:
            return
        try:
            profdiag.diagnose(trace)
        except ProfdiagError:
            return
    finally:
        os.unlink(name)


_SNIPPETS = [b"{", b"}", b"[", b"]", b",", b'"', b"\\", b"NaN", b"-Infinity", b"1e999",
             b"\xff\xfe", b"\x00", b'},{', b'"ts": "x"', b'"args": 5', b"18446744073709551616",
             b'"ph": "X"', b'"cat": "kernel"', b"null", b"true"]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(BASE)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(_SNIPPETS) | st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 200))]
    return bytes(data)


@FUZZ
@given(data=mutated(), packed=st.booleans())
def test_mutated_real_trace(data, packed):
    if packed:
        check(gzip.compress(data), ".json.gz")
    else:
        check(data)




@FUZZ
@given(data=st.binary(min_size=1, max_size=2000), cut=st.integers(0, 2000))
def test_mutated_gzip_stream(data, cut):
    packed = bytearray(gzip.compress(BASE))
    at = min(cut * 97, len(packed) - 1)  # head included: sniffing must survive it too
    packed[at:at + len(data)] = data
    check(bytes(packed), ".json.gz")


def test_corrupt_gzip_head_is_a_bad_input_error():
    packed = bytearray(gzip.compress(BASE))
    packed[97:98] = b"\x00"  # found by test_mutated_gzip_stream(data=b'\x00', cut=1)
    check(bytes(packed), ".json.gz")


_CATS = ["kernel", "Kernel", "gpu_memcpy", "gpu_memset", "cuda_runtime", "cuda_driver",
         "cpu_op", "user_annotation", "gpu_user_annotation", "cuda_sync", "Runtime", "ac2g",
         "python_function", "", "weird"]
_NAMES = ["aten::mm", "aten::addmm", "cudaLaunchKernel", "cudaGraphLaunch",
          "void gemv_kernel<float>(float*)", "ProfilerStep#1", "decode_step_0",
          "prefill", "ampere_sgemm_128x64_tn", "Memcpy HtoD (Pageable -> Device)",
          "flash_fwd_splitkv_kernel", "<script>", ""]
_ARG_KEYS = ["External id", "external id", "correlation", "device", "Device", "stream",
             "bytes", "grid", "block", "Input Dims", "Input dims", "Input type", "cbid", "x"]

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)
number_like = st.one_of(st.integers(0, 10**7), st.floats(0, 1e7, allow_nan=False),
                        json_value)


@st.composite
def kineto_event(draw) -> dict:
    ev = {"ph": draw(st.sampled_from(["X", "X", "X", "i", "s", "f", "M"]) | json_scalar),
          "cat": draw(st.sampled_from(_CATS) | json_scalar),
          "name": draw(st.sampled_from(_NAMES) | json_value),
          "ts": draw(number_like), "dur": draw(number_like)}
    if draw(st.booleans()):
        ev["pid"] = draw(st.integers(-1, 5) | json_scalar)
        ev["tid"] = draw(st.integers(0, 10) | json_scalar)
    keys = draw(st.lists(st.sampled_from(_ARG_KEYS), max_size=6, unique=True))
    args = {k: draw(st.integers(0, 50) | json_value) for k in keys}
    if draw(st.integers(0, 9)) == 0:
        ev["args"] = draw(json_value)
    else:
        ev["args"] = args
    for key in draw(st.lists(st.sampled_from(["ts", "dur", "name", "cat", "args"]),
                             max_size=2, unique=True)):
        ev.pop(key, None)
    return ev


@FUZZ
@given(events=st.lists(kineto_event() | json_value, max_size=40),
       top=st.dictionaries(st.sampled_from(["deviceProperties", "distributedInfo",
                                            "baseTimeNanoseconds", "schemaVersion",
                                            "record_shapes", "traceName"]), json_value,
                           max_size=3),
       array=st.booleans(), indent=st.sampled_from([None, 1]))
def test_generated_kineto_events(events, top, array, indent):
    doc = events if array else {**top, "traceEvents": events}
    check(json.dumps(doc, indent=indent).encode())

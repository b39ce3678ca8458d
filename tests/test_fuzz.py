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


# ---------------------------------------------------------------------------------------
# SQLite parsers (nsys, rocprof v1, rocpd): any value of any type in any column

NSYS_DB = FIXTURES / "nsys" / "seed_microbench.sqlite"
ROCV1_DB = FIXTURES / "rocprof" / "v1_batched_gemm_hiptrace" / "results.db"
SQL_FUZZ = settings(max_examples=max(1, int(os.environ.get("PROFDIAG_FUZZ_EXAMPLES", "100")) // 8),
                    deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
_SQL_VALUES = st.sampled_from(["'inf'", "1e400", "-1e400", str(2**70), "'abc'", "x'00ff'",
                               "-5", "NULL", "9223372036854775807", "''", "0.5",
                               "'\\x1b[31m'", "zeroblob(10)"])


def _columns(db) -> list[tuple[str, str]]:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return [(t, r[1]) for t in tables for r in con.execute(f'PRAGMA table_info("{t}")')]
    finally:
        con.close()


NSYS_COLUMNS = [c for c in _columns(NSYS_DB) if not c[0].startswith(("ENUM_WDDM", "ENUM_OPENACC",
                                                                       "ENUM_OPENMP"))]
ROCV1_COLUMNS = _columns(ROCV1_DB)


def _sql_check(src, column: tuple[str, str], value: str, rows: str) -> None:
    import shutil
    import sqlite3

    fd, name = tempfile.mkstemp(suffix=".sqlite")
    os.close(fd)
    try:
        shutil.copy(src, name)
        con = sqlite3.connect(name)
        table, col = column
        where = "" if rows == "all" else (
            f' WHERE rowid IN (SELECT rowid FROM "{table}" LIMIT 1)')
        try:
            con.execute(f'UPDATE "{table}" SET "{col}" = {value}{where}')
            con.commit()
        except sqlite3.Error:  # an INTEGER PRIMARY KEY takes no text: nothing to test
            return
        finally:
            con.close()
        try:
            profdiag.diagnose(profdiag.load(name))
        except ProfdiagError:
            pass
    finally:
        os.unlink(name)


@SQL_FUZZ
@given(column=st.sampled_from(NSYS_COLUMNS), value=_SQL_VALUES,
       rows=st.sampled_from(["one", "all"]))
def test_nsys_any_value_in_any_column(column, value, rows):
    _sql_check(NSYS_DB, column, value, rows)


@SQL_FUZZ
@given(column=st.sampled_from(ROCV1_COLUMNS), value=_SQL_VALUES,
       rows=st.sampled_from(["one", "all"]))
def test_rocprof_v1_any_value_in_any_column(column, value, rows):
    _sql_check(ROCV1_DB, column, value, rows)


# ---------------------------------------------------------------------------------------
# option files: a model config, a GPU spec and a rules file of random JSON/TOML types

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)
_MODEL_KEYS = ["num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "vocab_size", "torch_dtype", "model_type", "text_config"]


@FUZZ
@given(cfg=st.dictionaries(st.sampled_from(_MODEL_KEYS), _JSONISH, max_size=6))
def test_model_config_of_any_types(cfg):
    from profdiag import modelspec

    fd, name = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(cfg, fh)
        try:
            spec = modelspec.load_config(name)
        except ProfdiagError:
            return
        assert spec.layers is None or (isinstance(spec.layers, int) and spec.layers >= 1)
    finally:
        os.unlink(name)


_TOML_VALUES = st.sampled_from(['5', '"x"', '-1', '1e400', 'true', '[1, "a"]', '{ a = 1 }',
                                '"(a+)+"', '"["', '"gemm"', '"compute"', "nan", "inf"])


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["id", "pattern", "op", "category", "class",
                                               "priority", "kind", "examples", "why"]),
                              _TOML_VALUES, max_size=9))
def test_rules_file_of_any_types(fields):
    from profdiag import classify

    classify._load_cached.cache_clear()
    fd, name = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("[[rule]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items()))
        try:
            rules = classify.load_rules([name])
        except ProfdiagError:
            return
        rules.match("kernel", "cutlass" * 100, None)
    finally:
        os.unlink(name)
        classify._load_cached.cache_clear()

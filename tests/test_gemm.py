"""One GEMM-shape parser (profdiag/gemm.py) and one dtype-size table (hardware.DTYPE_BYTES):
the roofline, the mode vote, the classifier's shape check and the CPU-trace op filter use
the same op sets, and agree on every shape."""

from __future__ import annotations

import json

import pytest

from profdiag import classify, gemm, hardware, roofline as rl, schema
from profdiag.capture import config as capture_config
from profdiag.diagnosis import context
from profdiag.diagnosis.mode import gemm_m

# (op, Input Dims, batch, m, k, n) worked out by hand from each op's signature
CASES = [
    ("aten::mm", [[8, 16], [16, 32]], 1, 8, 16, 32),
    ("aten::addmm", [[32], [8, 16], [16, 32], [], []], 1, 8, 16, 32),  # bias first
    ("aten::linear", [[2, 4, 16], [32, 16], [32]], 1, 8, 16, 32),  # weight [n, k]
    ("aten::matmul", [[2, 4, 16], [16, 32]], 1, 8, 16, 32),  # leading dims fold into m
    ("aten::matmul", [[3, 8, 16], [1, 16, 32]], 3, 8, 16, 32),  # broadcast batch
    ("aten::bmm", [[3, 8, 16], [3, 16, 32]], 3, 8, 16, 32),
    ("aten::_scaled_mm", [[128, 64], [64, 32], [], []], 1, 128, 64, 32),  # FP8 + scales
]


@pytest.mark.parametrize("op, dims, batch, m, k, n", CASES)
def test_one_parser_for_roofline_and_mode(op, dims, batch, m, k, n):
    shape = gemm.gemm_shape(op, dims)
    assert shape is not None and (shape.batch, shape.m, shape.k, shape.n) == (batch, m, k, n)
    assert shape.flops == 2 * batch * m * k * n
    # the mode vote's M is batch x rows of the same shape, except for bmm (activation x
    # activation in eager attention: B*H*Tq is not a token count)
    want = None if op == "aten::bmm" else batch * m
    assert gemm_m(op, json.dumps(dims)) == want
    assert gemm.gemm_rows(op, dims) == want


def test_op_sets_agree():
    assert gemm.TOKEN_GEMM_OPS == gemm.GEMM_OPS - {"aten::bmm"}
    assert {"aten::bmm", "aten::_scaled_mm"} <= gemm.GEMM_OPS
    assert {op for op, *_ in CASES} == gemm.GEMM_OPS  # every op has a parser case above
    # the CPU-trace filter matches every GEMM op (and baddbmm / SDPA), nothing else
    for op in [*gemm.GEMM_OPS, "aten::baddbmm", "aten::_scaled_dot_product_flash_attention"]:
        assert context.CPU_COMPUTE_OP.match(op), op
    for op in ("aten::add", "aten::softmax", "aten::copy_"):
        assert not context.CPU_COMPUTE_OP.match(op)
    assert "_GEMM_OPS" not in vars(classify)  # the classifier uses gemm.GEMM_OPS


def test_malformed_dims_are_no_gemm():
    assert gemm.gemm_shape("aten::mm", [[8, 16], [15, 32]]) is None  # inner dims differ
    assert gemm.gemm_shape("aten::bmm", [[3, 8, 16], [2, 16, 32]]) is None
    assert gemm.gemm_shape("aten::add", [[8, 16], [8, 16]]) is None
    assert gemm_m("aten::linear", "[[16], [32, 16]]") is None  # rank-1 activation
    assert gemm_m("aten::mm", "not json") is None


def test_scaled_mm_reaches_the_roofline_in_fp8():
    cols = {"name": ["nvjet_fp8"], "kind": ["kernel"], "start_ns": [0], "dur_ns": [1000],
            "device": [0], "external_id": [7], "op_name": ["aten::_scaled_mm"],
            "input_dims": [json.dumps([[128, 64], [64, 32], [], []])],
            "input_types": [json.dumps(["c10::Float8_e4m3fn", "c10::Float8_e4m3fn",
                                        "float", "float"])]}
    t = rl.gemm_table(schema.from_columns(cols), hardware.get("h100-sxm"))
    assert len(t) == 1
    row = t.iloc[0]
    assert row["dtype"] == "fp8" and not row["dtype_assumed"]
    assert row["flops"] == 2 * 128 * 64 * 32 == 524_288
    # A [128,64] + B [64,32] read once, C [128,32] written once, 1 byte each
    assert row["bytes"] == 128 * 64 + 64 * 32 + 128 * 32 == 14_336


def test_one_dtype_table():
    assert hardware.dtype_size("c10::BFloat16") == hardware.dtype_size("bfloat16") == 2
    assert hardware.dtype_size("c10::Float8_e4m3fn") == 1
    assert hardware.dtype_size("no-such-type") is None
    assert capture_config.DTYPE_BYTES == {"float32": 4, "bfloat16": 2, "float16": 2}
    assert all(capture_config.DTYPE_BYTES[d] == hardware.DTYPE_BYTES[hardware.normalize_dtype(d)]
               for d in capture_config.DTYPES)


# (op, Input Dims, (K, N) of the weight or None) by hand: the lm_head search
# (context.infer_steps: largest N) and the layer structure (structure.py: K and N) read these
WEIGHT_CASES = [
    ("aten::mm", [[8, 16], [16, 32]], (16, 32)),
    ("aten::addmm", [[32], [8, 16], [16, 32], [], []], (16, 32)),  # bias first, then x, W
    ("aten::linear", [[2, 4, 16], [32, 16], [32]], (16, 32)),  # weight stored [N, K]
    ("aten::linear", [[8, 16], [32, 16], []], (16, 32)),  # no bias
    ("aten::matmul", [[2, 4, 16], [16, 32]], (16, 32)),
    ("aten::_scaled_mm", [[128, 64], [64, 32], [], []], (64, 32)),  # FP8 + scales
    ("aten::bmm", [[3, 8, 16], [3, 16, 32]], None),  # activations x activations
    ("aten::matmul", [[3, 8, 16], [3, 16, 32]], None),  # batched: no weight matrix
    ("aten::mm", [[8, 16], [15, 32]], None),  # inner dims differ (no K check before)
    ("aten::linear", [[8, 16], [32, 15], [32]], None),  # x's K 16 vs W's K 15
    ("aten::linear", [[16], [32, 16]], None),  # rank-1 activation
    ("aten::addmm", [[32], [8, 16]], None),  # no weight
    ("aten::mm", [[8, 16], [16, 32.5]], None),  # not ints
    ("aten::add", [[8, 16], [16, 32]], None),  # not a GEMM op
]


@pytest.mark.parametrize("op, dims, kn", WEIGHT_CASES)
def test_weight_kn_of_each_op_form(op, dims, kn):
    assert gemm.weight_kn(op, dims) == kn
    # from the trace's JSON text, as context.py and structure.py read it
    assert gemm.weight_kn(op, gemm.dims_of(json.dumps(dims))) == kn
    if kn is not None:  # the same K and N as the roofline's parser
        shape = gemm.gemm_shape(op, dims)
        assert shape is not None and (shape.k, shape.n) == kn


def test_dims_of_rejects_what_is_no_dims_list():
    assert gemm.dims_of("[[8, 16], [16, 32]]") == [[8, 16], [16, 32]]
    assert gemm.dims_of("not json") is None
    assert gemm.dims_of('{"a": 1}') is None
    assert gemm.dims_of(None) is None
    assert gemm.dims_of(float("nan")) is None  # a missing input_dims cell


def test_lm_head_inference_reads_weight_kn():
    import pandas as pd

    # two forwards of one layer: x W_q (N 16) then lm_head (N 100), the lm_head as
    # _scaled_mm (FP8) in the second forward, which the old parser's op set left out
    ops = ["aten::linear", "aten::mm", "aten::linear", "aten::_scaled_mm"]
    dims = [[[1, 16], [16, 16], []], [[1, 16], [16, 100]], [[1, 16], [16, 16], []],
            [[1, 16], [16, 100], [], []]]
    work = pd.DataFrame({"op_name": ops, "input_dims": [json.dumps(d) for d in dims],
                         "external_id": [1, 2, 3, 4], "launch_ns": [0, 10, 20, 30]})
    steps = context.infer_steps(work)
    # lm_head calls at 10 and 30: forward 0 = [0, 11), forward 1 = [11, 31)
    assert steps[["start_ns", "end_ns"]].values.tolist() == [[0, 11], [11, 31]]


def test_dtype_of_size_inverts_the_one_table():
    """roofline's default dtype from a byte width is read from hardware.DTYPE_BYTES too
    (it held its own {4: fp32, 2: bf16, 1: fp8, 0.5: fp4})."""
    assert [hardware.dtype_of_size(s) for s in (4, 2, 1, 0.5, 8, 3, None)] == [
        "fp32", "bf16", "fp8", "fp4", "fp64", None, None]
    assert rl.dtype_of_size is hardware.dtype_of_size
    assert all(hardware.DTYPE_BYTES[hardware.dtype_of_size(v)] == v
               for v in hardware.DTYPE_BYTES.values())


def test_no_second_dtype_size_table_in_the_code():
    import re
    from pathlib import Path

    # {"bf16": 2, ...} or its inverse {2: "bf16", ...}
    table = re.compile(r"""["'](?:bf16|bfloat16|fp16|float16|half)["']\s*:\s*2\b"""
                       r"""|\b2\s*:\s*["'](?:bf16|bfloat16|fp16|float16|half)["']""")
    root = Path(hardware.__file__).parent
    found = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if p.name != "hardware.py" and table.search(p.read_text())]
    assert found == []

"""--shapes-from: GEMM shapes for CUDA-graph replays from an eager or capture trace."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from profdiag import shapes_from
from tests.helpers import FIXTURES, run_cli, shared_or_skip

TRACELENS = ("samples", "kineto", "tracelens")
GEMM = "Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT32x32x256_MI16x16x1"
REDUCE = "void at::native::splitKreduce_kernel<32, 16, float>(float*)"


def _write(path: Path, events: list[dict]) -> Path:
    doc = {"schemaVersion": 1, "deviceProperties": [{"id": 0, "name": "AMD Instinct MI300X"}],
           "traceEvents": events}
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return path


def _eager(tmp_path: Path) -> Path:
    """One eager forward: two aten::mm calls of different shapes run the same GEMM kernel."""
    ev = [{"ph": "X", "cat": "user_annotation", "name": "step[DECODE bs=32]", "pid": 1, "tid": 1,
           "ts": 0.0, "dur": 100.0, "args": {}}]
    for i, dims in enumerate(([[32, 4096], [4096, 6144]], [[32, 4096], [4096, 4096]])):
        ext, corr, t = 10 + i, 100 + i, 10.0 + 30 * i
        ev += [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": t,
                "dur": 5.0, "args": {"External id": ext, "Input Dims": dims,
                                     "Input type": ["c10::BFloat16", "c10::BFloat16"]}},
               {"ph": "X", "cat": "cuda_runtime", "name": "hipExtModuleLaunchKernel", "pid": 1,
                "tid": 1, "ts": t + 1, "dur": 2.0,
                "args": {"External id": ext, "correlation": corr, "kernel": GEMM}},
               {"ph": "X", "cat": "kernel", "name": GEMM, "pid": 0, "tid": 1, "ts": t + 5,
                "dur": 4.0, "args": {"device": 0, "stream": 1, "correlation": corr,
                                     "External id": ext}}]
    return _write(tmp_path / "eager.json.gz", ev)


def _replay(tmp_path: Path, steps: int = 2) -> Path:
    """The same forward replayed from a graph ``steps`` times, plus a split-K reduce kernel."""
    ev = []
    for s in range(steps):
        t0 = 1000.0 * s
        ev += [{"ph": "X", "cat": "user_annotation", "name": "step[DECODE bs=32]", "pid": 1,
                "tid": 1, "ts": t0, "dur": 50.0, "args": {}},
               {"ph": "X", "cat": "cuda_runtime", "name": "hipGraphLaunch", "pid": 1, "tid": 1,
                "ts": t0 + 1, "dur": 5.0, "args": {"correlation": 500 + s}}]
        for j, name in enumerate((GEMM, GEMM, REDUCE)):
            ev.append({"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 1,
                       "ts": t0 + 100 + 20 * j, "dur": 10.0,
                       "args": {"device": 0, "stream": 1, "correlation": 500 + s}})
    return _write(tmp_path / "replay.json.gz", ev)


def test_reference_reads_launches_with_shapes(tmp_path):
    ref = shapes_from.reference(_eager(tmp_path))
    assert list(ref.launches["kernel"]) == [GEMM, GEMM]  # the launch and its kernel: once
    assert list(ref.launches["input_dims"]) == ['[[32,4096],[4096,6144]]',
                                                '[[32,4096],[4096,4096]]']


def test_replay_gets_the_shapes_by_name_then_order(tmp_path):
    import profdiag

    plain = profdiag.diagnose(profdiag.load(_replay(tmp_path)), gpu="mi300x")
    assert plain.roofline["calls_with_shapes"] == 0
    assert "--shapes-from" in plain.roofline["reason"]  # says how to recover them
    d = profdiag.diagnose(profdiag.load(_replay(tmp_path)), gpu="mi300x",
                          shapes_from=str(_eager(tmp_path)))
    gemms = d.events[d.events["name"] == GEMM]
    # each replayed step's first GEMM call is the QKV shape, the second the O projection
    assert list(gemms["input_dims"]) == ['[[32,4096],[4096,6144]]', '[[32,4096],[4096,4096]]'] * 2
    assert d.events.loc[d.events["name"] == REDUCE, "input_dims"].isna().all()  # no FLOPs twice
    rf = d.roofline
    assert rf["calls_with_shapes"] == 4
    want_flops = 2 * (2 * 32 * 4096 * 6144 + 2 * 32 * 4096 * 4096)  # 2 steps x (2mkn + 2mkn)
    assert rf["summary"]["gemm"]["flops"] == pytest.approx(want_flops)
    assert any("shapes of 4 of 4 shapeless kernels" in w and "1 of them matched by call order"
               in w for w in d.warnings)


def test_cli_shapes_from_and_bad_reference(tmp_path, capsys):
    out = tmp_path / "r.json"
    code, _, err = run_cli(["report", _replay(tmp_path), "--shapes-from", _eager(tmp_path),
                            "-q", "-o", out], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["roofline"]["calls_with_shapes"] == 4
    nsys = FIXTURES / "nsys" / "seed_microbench.sqlite"
    code, _, err = run_cli(["report", _replay(tmp_path), "--shapes-from", nsys, "-q", "-o",
                            out], capsys)
    assert code != 0 and "Traceback" not in err
    assert "--shapes-from needs a PyTorch profiler JSON trace" in err
    assert len(err.strip().splitlines()) == 1


def test_sglang_decode_replay_with_its_graph_capture():
    replay = shared_or_skip(*TRACELENS, "sglang_Qwen3-8B_decode.json.gz")
    capture = shared_or_skip(*TRACELENS, "sglang_decode_capture_bs_32_rank0.json.gz")
    import profdiag

    d = profdiag.diagnose(profdiag.load(replay), gpu="mi300x", shapes_from=str(capture))
    pts = d.roofline["points"]
    # Qwen3-8B, bs 32: 36 layers x (fused qkv, o, fused gate_up, down) + lm_head = 145 GEMMs
    assert d.roofline["calls_with_shapes"] == 36 * 4 + 1
    ns = {(p["m"], p["k"], p["n"]): p["calls"] for p in pts}
    assert ns[(32, 4096, (32 + 2 * 8) * 128)] == 36  # fused QKV: (heads + 2 kv_heads) x 128
    assert ns[(32, 4096, 2 * 12288)] == 36  # fused gate/up
    assert ns[(32, 12288, 4096)] == 36 and ns[(32, 4096, 4096)] == 36
    assert ns[(32, 4096, 151936)] == 1  # lm_head over the vocabulary

"""Attribution of a median-step change (profdiag.attribution) and the step detail behind it."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

import pytest

from profdiag import compare, gate
from profdiag.attribution import attribute_phase
from profdiag.diagnosis.step_detail import median_steps
from profdiag.renderers import compare_text

from helpers import EAGER, GRAPH, run_cli, shared_or_skip


def _detail(kernels: list[dict[str, Any]], idle: dict[str, float],
            steps: list[int] | None = None) -> dict[str, Any]:
    busy = sum(k["ns"] for k in kernels)
    return {"steps": steps or [0], "wall_ns": busy + sum(idle.values()), "busy_ns": busy,
            "idle_ns": sum(idle.values()), "idle": idle, "kernels": kernels}


def _k(op: str, shapes: str, calls: float, ns: float, cls: str = "gemm",
       kernel: str = "nvjet_sm90_tst_128x64") -> dict[str, Any]:
    return {"kernel": kernel, "op": op, "shapes": shapes, "class": cls, "category": "compute",
            "calls": calls, "ns": ns}


def test_median_step_is_the_middle_one_or_two():
    assert median_steps([5, 1, 3]) == [2]  # wall 3 is the middle of 1, 3, 5
    assert sorted(median_steps([40, 10, 30, 20])) == [2, 3]  # 20 and 30
    assert median_steps([]) == []


def test_hand_computed_waterfall_sums_exactly():
    # base: the QKV GEMM 10 calls x 100 ns, attention 2 calls x 400 ns, 500 ns of launch gaps
    # new:  the QKV GEMM 12 calls x 110 ns (2 extra calls, each 10% slower), attention on a
    #       different kernel 2 x 300 ns, 300 ns of launch gaps
    base = _detail([_k("aten::mm", "[[1,2048],[2048,3072]]", 10, 1000),
                    _k("aten::sdpa", "[[1,32,1,64]]", 2, 800, "attention", "flash_fwd_splitkv")],
                   {"launch gaps": 500})
    new = _detail([_k("aten::mm", "[[1,2048],[2048,3072]]", 12, 1320),
                   _k("aten::sdpa", "[[1,32,1,64]]", 2, 600, "attention", "unified_attention")],
                  {"launch gaps": 300})
    out = attribute_phase("decode", {}, {}, base, new)
    # wall: 1000 + 800 + 500 = 2300 -> 1320 + 600 + 300 = 2220: -80 ns
    assert out["delta_ns"] == -80
    rows = {(r["kind"], r["what"]): r["delta_ns"] for r in out["rows"]}
    # count part: 2 extra calls at the baseline's 100 ns per call = +200 ns
    mm = "aten::mm [[1,2048],[2048,3072]]"
    assert rows[("count", f"{mm}: 10 -> 12 calls per decode step")] == 200
    # kernel part: 1320 - 1000 - 200 = +120 ns (12 calls, 10 ns slower each)
    assert rows[("kernel", mm)] == 120
    # the same op on another kernel: 600 - 800 = -200 ns, labelled with both kernels
    sdpa = next(r for r in out["rows"] if r["what"].startswith("aten::sdpa"))
    assert sdpa["delta_ns"] == -200 and "flash_fwd_splitkv -> unified_attention" in sdpa["what"]
    assert rows[("idle_cause", "idle: launch gaps")] == -200
    assert sum(r["delta_ns"] for r in out["rows"]) == pytest.approx(out["delta_ns"])
    # shares of the delta: +200 / -80 = -2.5
    assert next(r for r in out["rows"] if r["kind"] == "count")["share_of_delta"] == -2.5
    assert out["sentence"].startswith("decode median step -3.5% (-80 ns per decode step)")


def test_prefill_is_attributed_per_token():
    base = _detail([_k("aten::mm", "[[512,2048],[2048,2048]]", 7, 7_000_000)], {"gaps": 0})
    new = _detail([_k("aten::mm", "[[1024,2048],[2048,2048]]", 7, 14_000_000)], {"gaps": 0})
    bd = {"model": {"phase": "prefill", "tokens": 512, "batch": 1}}
    nd = {"model": {"phase": "prefill", "tokens": 1024, "batch": 1}}
    out = attribute_phase("prefill", bd, nd, base, new)
    # 7 ms / 512 tokens = 13.672 us per token, 14 ms / 1024 tokens the same: no change
    assert out["unit"] == "per prefill token"
    assert out["base_ns"] == pytest.approx(7_000_000 / 512, abs=0.1)
    assert out["delta_ns"] == pytest.approx(0, abs=0.1)


def test_step_detail_parts_add_up_on_a_real_trace(capsys, tmp_path):
    out = tmp_path / "r.json"
    assert run_cli(["report", EAGER, "-o", out], capsys)[0] in (0, 1)
    data = json.loads(out.read_text())
    d = data["step_detail"]["decode"]
    walls = [s["wall_ns"] for s in data["steps"] if s["phase"] == "decode"]
    # the median step's wall time is the phase median
    assert d["wall_ns"] == pytest.approx(median(walls), abs=0.5)
    assert d["busy_ns"] + d["idle_ns"] == pytest.approx(d["wall_ns"], abs=0.5)
    assert sum(k["ns"] for k in d["kernels"]) == pytest.approx(d["busy_ns"], rel=1e-6)
    assert sum(d["idle"].values()) == pytest.approx(d["idle_ns"], abs=1)
    busy = [s["gpu_busy_ns"] for s in data["steps"] if s["step"] in d["steps"]]
    assert d["busy_ns"] == pytest.approx(sum(busy) / len(busy), abs=0.5)


def _attribution(base: Path, new: Path) -> dict[str, Any]:
    return compare.compare(gate.load_profile(base), gate.load_profile(new))


def test_eager_vs_graph_names_the_idle_time():
    cmp = _attribution(EAGER, GRAPH)
    (p,) = cmp["attribution"]["phases"]
    steps = next(s for s in cmp["steps"] if s["phase"] == "decode")
    # sums to the change of the median step that the step table shows
    assert p["delta_ns"] == pytest.approx(steps["new_wall_ns"] - steps["base_wall_ns"], rel=0.01)
    assert sum(r["delta_ns"] for r in p["rows"]) == pytest.approx(p["delta_ns"], rel=1e-6)
    # the two largest parts are idle time; GPU work barely moves
    assert [r["kind"] for r in p["rows"][:2]] == ["idle_cause", "idle_cause"]
    gpu = sum(r["delta_ns"] for r in p["rows"] if r["kind"] != "idle_cause")
    assert abs(gpu) < 0.05 * abs(p["delta_ns"])
    # graph replays classify by name: the moves between classes are listed, not hidden
    assert p["aligned_by"] == "kernel name"
    assert cmp["headline"][0] == p["sentence"]


def test_eager_vs_graph_1b_shared():
    eager = shared_or_skip("traces", "torch", "own_1b_decode_ctx1024_B1_steps8.json.gz")
    graph = shared_or_skip("traces", "torch", "own_1b_decode_ctx1024_B1_steps8_cudagraph.json.gz")
    cmp = _attribution(eager, graph)
    (p,) = cmp["attribution"]["phases"]
    # 75.857 ms -> 3.322 ms: the median step is the mean of the two middle steps
    assert p["base_ns"] == pytest.approx(75_857_438, rel=1e-6)
    assert p["delta_ns"] == pytest.approx(3_322_400 - 75_857_438, rel=0.01)
    top = p["rows"][:2]
    assert all(r["kind"] == "idle_cause" for r in top)
    # the cuDNN plan builds of steps 3-7 (about 43 ms of the median step), then launch gaps
    assert "cuDNN" in top[0]["what"] and "aten::_cudnn_attention_forward" in top[0]["what"]
    assert -48e6 < top[0]["delta_ns"] < -38e6
    assert "launch gaps" in top[1]["what"] and top[1]["delta_ns"] < -15e6
    assert "cuDNN execution-plan build" in p["sentence"]
    # every kernel the headline counts as changed is in the rows the text shows
    text = compare_text.render(cmp, "txt")
    for k in cmp["kernels"]["rows"]:
        if k["status"] != "same":
            from profdiag.renderers.text import short_kernel_name, truncate

            assert truncate(short_kernel_name(k["name"]), 70) in text


@pytest.mark.torch
def test_extra_gemm_capture_is_the_count_contributor(tmp_path):
    pytest.importorskip("torch")
    from profdiag.capture import capture
    from profdiag.capture.config import CaptureOptions, resolve_config

    traces = {}
    for extra in (False, True):
        cfg = resolve_config("tiny", layers=2, hidden=128, ffn=256, vocab=512)
        out = tmp_path / str(extra)
        out.mkdir()
        res = capture(CaptureOptions(out=out, config=cfg, phase="decode", tokens=16, context=32,
                                     steps=3, device="cpu", extra_gemm=extra))
        traces[extra] = res.trace
    base, new = gate.load_profile(traces[False]).data, gate.load_profile(traces[True]).data
    db, dn = base["step_detail"]["decode"], new["step_detail"]["decode"]
    # The counts are exact; CPU times are noisy: on a loaded machine the median step's wall
    # can move by far more than the two extra 128x128 GEMMs cost, which puts their row under
    # the 2%-of-the-change floor. With the new step's wall and idle set to the base's, the
    # floor is MIN_ROW_NS and every signature whose call count changed must get its row.
    same_wall = {**dn, "wall_ns": db["wall_ns"], "idle_ns": db["idle_ns"], "idle": db["idle"]}
    p = attribute_phase("decode", base, new, db, same_wall)
    # one redundant hidden x hidden projection per layer: 2 layers -> 2 more calls per step,
    # and no other signature changes its call count
    changed = [r for r in p["rows"] if r["kind"] == "count" and " -> " in r["what"]]
    assert [r["what"] for r in changed] == [
        "aten::mm [[1,128],[128,128]]: 8 -> 10 calls per decode step"], p["rows"]
    # the count part is the 2 extra calls at the base's time per call: positive
    assert changed[0]["delta_ns"] > 0
    # the real comparison (noisy walls) sums to its change and shows the same count change
    # when it is large enough to show: never another signature's
    (real,) = _attribution(traces[False], traces[True])["attribution"]["phases"]
    assert sum(r["delta_ns"] for r in real["rows"]) == pytest.approx(real["delta_ns"], rel=1e-6)
    real_changed = [r["what"] for r in real["rows"] if r["kind"] == "count" and " -> " in r["what"]]
    assert real_changed in ([], [changed[0]["what"]])


def _slowed(data: dict[str, Any], factor: float) -> dict[str, Any]:
    """A copy of a report whose steps and median-step detail are ``factor`` times slower."""
    out = json.loads(json.dumps(data))
    for s in out["steps"]:
        s["wall_ns"] = int(s["wall_ns"] * factor)
        s["gpu_busy_ns"] = int(s["gpu_busy_ns"] * factor)
    for d in out["step_detail"].values():
        for k in ("wall_ns", "busy_ns", "idle_ns"):
            d[k] *= factor
        d["idle"] = {c: v * factor for c, v in d["idle"].items()}
        for k in d["kernels"]:
            k["ns"] *= factor
    return out


def test_gate_failure_names_the_top_contributors(capsys, tmp_path):
    base = tmp_path / "base.json"
    assert run_cli(["report", GRAPH, "-o", base], capsys)[0] in (0, 1)
    new = tmp_path / "new.json"
    new.write_text(json.dumps(_slowed(json.loads(base.read_text()), 1.3)))
    junit, md = tmp_path / "g.xml", tmp_path / "g.md"
    code, out, _ = run_cli(["gate", new, "--baseline", base, "--junit", junit,
                            "--markdown", md], capsys)
    assert code == 1
    check = next(c for c in gate.evaluate(gate.load_profile(new),
                                          baseline=gate.load_profile(base)).failed
                 if c.id == "regression.step_time.decode")
    assert "top contributors: " in check.summary
    top = check.details["attribution"][0]
    # the biggest part of a uniform 30% slowdown is the biggest part of the step
    assert top["delta_ns"] > 0 and top["what"] in check.summary
    assert "top contributors" in junit.read_text() and "top contributors" in md.read_text()


def test_noise_can_be_required(tmp_path):
    base = {"mode": {"value": "decode"}, "steps": [
        {"step": i, "phase": "decode", "wall_ns": w, "gpu_busy_ns": 100}
        for i, w in enumerate([1000, 1200, 800, 1100, 900, 1000])]}
    # median 1000 -> 1060 (+6%, over the 5% limit). Sorted base: 800 900 1000 1000 1100 1200;
    # quartiles at positions 5 x 0.25 = 1.25 and 5 x 0.75 = 3.75:
    # Q1 = 900 + 0.25 x 100 = 925, Q3 = 1000 + 0.75 x 100 = 1075, IQR 150 > the 60 ns move
    new = {"mode": {"value": "decode"}, "steps": [
        {"step": i, "phase": "decode", "wall_ns": w + 60, "gpu_busy_ns": 100}
        for i, w in enumerate([1000, 1200, 800, 1100, 900, 1000])]}
    loose = gate.evaluate(new, baseline=base)
    check = loose.check("regression.step_time.decode")
    assert check.status == "fail" and "within the step-to-step spread (IQR 150 ns)" in \
        check.summary
    strict = gate.evaluate(new, baseline=base, policy=gate.Policy.from_dict(
        {"regression": {"require_beyond_noise": True}}))
    check = strict.check("regression.step_time.decode")
    assert check.status == "pass" and "within noise" in check.summary


def test_gap_takes_the_split_and_cause_of_the_idle_table():
    import pandas as pd

    from profdiag.diagnosis.step_detail import CAUSE_GPU_WAIT, _cause_of, _cause_table

    table = _cause_table(pd.DataFrame({
        "start_ns": [1000, 100], "dur_ns": [200, 400], "host_wait_ns": [0, 300],
        "kernel_wait_ns": [200, 100], "cause": ["gpu_side", "cudnn_plan"],
        "op": ["", "aten::_cudnn_attention_forward"]}))
    titles = {"cudnn_plan": "cuDNN execution-plan build"}
    # a 400 ns gap whose attributed twin is 300 ns host wait + 100 ns kernel wait
    assert _cause_of((100, 500, False), table, titles) == [
        ("cuDNN execution-plan build: aten::_cudnn_attention_forward", 300.0),
        (CAUSE_GPU_WAIT, 100.0)]
    assert _cause_of((1000, 1200, False), table, titles) == [(CAUSE_GPU_WAIT, 200.0)]
    # no attributed gap there: named by length (10 ns < 20 us: launch latency)
    assert _cause_of((5000, 5010, False), table, titles) == [("launch gaps", 10.0)]
    assert _cause_of((5000, 5010, True), None, titles) == [("GPU-side gaps inside graphs", 10.0)]

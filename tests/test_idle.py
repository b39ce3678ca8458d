"""Idle split, gap attribution, step outliers, cause advice and trace health (issue 13).

Every number is checked against a hand computation from the raw events written out in the
test: the gaps between the device's busy intervals, the host calls that span them.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest

import profdiag
from profdiag import schema
from profdiag.diagnosis.idle import load_idle_rules
from profdiag.rules_path import rules_dir
from profdiag.trace import Trace, TraceMeta

from helpers import FIXTURES, diagnosed, shared_or_skip

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TINY_DECODE = str(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz")
TINY_GRAPH = str(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz")


# ------------------------------------------------------------------------------ the rules


def test_every_cause_pattern_matches_its_examples_and_not_its_counter_examples():
    data = tomllib.loads((rules_dir() / "idle.toml").read_text(encoding="utf-8"))
    assert len(data["cause"]) >= 7
    for cause in data["cause"]:
        pat = re.compile(cause["match"])
        ex = cause["examples"]
        assert ex["match"] and ex["no_match"], cause["id"]
        for name in ex["match"]:
            assert pat.search(name), (cause["id"], name)
        for name in ex["no_match"]:
            assert not pat.search(name), (cause["id"], name)
        assert cause["title"] and cause["advice"] and cause["rec_title"], cause["id"]
    # The causes without a pattern each say what they are and what to do.
    for cid in ("launch_gaps", "gpu_side", "framework_op", "python", "unexplained"):
        g = data["generic"][cid]
        assert g["title"] and g["advice"], cid


def test_user_rules_file_adds_a_cause_tried_before_the_shipped_ones(tmp_path):
    user = tmp_path / "my_idle.toml"
    user.write_text('[[cause]]\nid = "my_attention"\nmatch = "^aten::_cudnn_attention_forward$"\n'
                    'title = "my attention"\nrec_title = "t"\nadvice = "a"\n'
                    '[step_outliers]\nfactor = 100.0\n', encoding="utf-8")
    rules = load_idle_rules((str(user),))
    assert rules.causes[0].id == "my_attention"
    assert rules.step_outliers["factor"] == 100.0
    d = profdiag.diagnose(profdiag.load(TINY_DECODE), rules=[user])
    ns = {}
    for c in d.idle["causes"]:
        ns[c["cause"]] = ns.get(c["cause"], 0) + c["ns"]
    # The stalls inside aten::_cudnn_attention_forward now carry the user's cause; gaps whose
    # innermost span is the outer SDPA op still match the shipped cudnn_plan pattern.
    assert ns["my_attention"] > 10 * ns.get("cudnn_plan", 0)
    # factor 100: no step is 100x the typical one
    assert d.check("step_outliers").status == "pass"


# ------------------------------------------------------------------- a hand-built trace


def _trace(rows: list[dict]) -> Trace:
    cols: dict[str, list] = {c: [] for c in ("name", "kind", "start_ns", "dur_ns", "device",
                                             "stream", "tid", "pid", "correlation")}
    for r in rows:
        cols["name"].append(r["name"])
        cols["kind"].append(r["kind"])
        cols["start_ns"].append(r["start"])
        cols["dur_ns"].append(r["dur"])
        gpu = r["kind"] in schema.GPU_KINDS
        cols["device"].append(0 if gpu else pd.NA)
        cols["stream"].append(r.get("stream", 7) if gpu else pd.NA)
        cols["tid"].append(pd.NA if gpu else 1)
        cols["pid"].append(1)
        cols["correlation"].append(r.get("corr", pd.NA))
    ev = schema.from_columns(cols).sort_values("start_ns", kind="stable").reset_index(drop=True)
    return Trace(ev, TraceMeta(format="nsys", path="synthetic"))


def _synthetic() -> Trace:
    """Four kernels on one stream (times in us):

    K1 [0, 10)    launched at -5 (corr 1)
    K2 [100, 110) launched at 95 inside aten::_cudnn_attention_forward [12, 98): a 90 us gap,
                  the host launched late: host wait, cudnn_plan
    K3 [112, 122) launched at 30, long before K2 ended: a 2 us GPU-side gap
    K4 [1122, 1132) launched at 1120, after a cudaMalloc [200, 1115): a 1000 us host wait,
                  alloc
    """
    us = 1000
    rows = [
        {"name": "cudaLaunchKernel", "kind": "runtime", "start": -5 * us, "dur": 3 * us, "corr": 1},
        {"name": "k1", "kind": "kernel", "start": 0, "dur": 10 * us, "corr": 1},
        {"name": "aten::_cudnn_attention_forward", "kind": "cpu_op", "start": 12 * us,
         "dur": 86 * us},
        {"name": "cudaLaunchKernel", "kind": "runtime", "start": 30 * us, "dur": 3 * us, "corr": 3},
        {"name": "cudaLaunchKernel", "kind": "runtime", "start": 95 * us, "dur": 3 * us, "corr": 2},
        {"name": "k2", "kind": "kernel", "start": 100 * us, "dur": 10 * us, "corr": 2},
        {"name": "k3", "kind": "kernel", "start": 112 * us, "dur": 10 * us, "corr": 3},
        {"name": "cudaMalloc", "kind": "runtime", "start": 200 * us, "dur": 915 * us},
        {"name": "cudaLaunchKernel", "kind": "runtime", "start": 1120 * us, "dur": 1 * us,
         "corr": 4},
        {"name": "k4", "kind": "kernel", "start": 1122 * us, "dur": 10 * us, "corr": 4},
    ]
    return _trace(rows)


def test_synthetic_gaps_split_and_causes_match_the_hand_computation():
    d = profdiag.diagnose(_synthetic(), use_manifest=False)
    us = 1000
    # Window [0, 1132) us, busy 4 x 10 us: idle = 1132 - 40 = 1092 us in three gaps:
    # [10, 100) 90 us (K2 launched at 95 > 10: host), [110, 112) 2 us (K3 launched at 30 < 110:
    # GPU-side), [122, 1122) 1000 us (K4 launched at 1120 > 122: host).
    assert d.breakdown.idle_ns == 1092 * us
    i = d.idle
    assert i["idle_ns"] == 1092 * us
    assert i["host_wait_ns"] == (90 + 1000) * us
    assert i["kernel_wait_ns"] == 2 * us
    assert i["gap_count"] == 3
    by = {c["cause"]: c for c in i["causes"]}
    # [10, 100) is spanned by the cuDNN op over [12, 98) = 86 us >= half of 90 us.
    assert by["cudnn_plan"]["ns"] == 90 * us and by["cudnn_plan"]["op"] == \
        "aten::_cudnn_attention_forward"
    # [122, 1122) is spanned by cudaMalloc over [200, 1115) = 915 us >= half of 1000 us.
    assert by["alloc"]["ns"] == 1000 * us and by["alloc"]["op"] == "cudaMalloc"
    assert by["gpu_side"]["ns"] == 2 * us
    assert sum(c["ns"] for c in i["causes"]) == i["idle_ns"]
    assert pytest.approx(sum(c["share_of_idle"] for c in i["causes"]), abs=1e-5) == 1.0
    # The full gap table, largest first in the JSON.
    assert list(d.idle_gaps["dur_ns"]) == [90 * us, 2 * us, 1000 * us]
    assert [g["dur_ns"] for g in i["gaps"]] == [1000 * us, 90 * us, 2 * us]
    assert {"start_ns", "dur_ns", "step", "cause", "op"} <= set(i["gaps"][0])
    # Advice from the causes, largest first, quoting the evidence.
    ids = [r.id for r in d.recommendations]
    assert ids[:2] == ["idle.alloc", "idle.cudnn_plan"]
    assert "1.0 ms" in d.recommendations[0].evidence and "cudaMalloc" in \
        d.recommendations[0].evidence


def test_a_blocking_copy_is_host_wait_even_when_the_next_work_was_queued_before():
    """The SGLang shape: a kernel queued on another stream waits while the host sits in a
    synchronous hipMemcpyWithStream; the copy's own GPU event ends the stall."""
    us = 1000
    rows = [
        {"name": "hipLaunchKernel", "kind": "runtime", "start": -5 * us, "dur": 2 * us, "corr": 1},
        {"name": "k1", "kind": "kernel", "start": 0, "dur": 10 * us, "corr": 1},
        {"name": "hipLaunchKernel", "kind": "runtime", "start": 11 * us, "dur": 2 * us, "corr": 2},
        {"name": "hipMemcpyWithStream", "kind": "runtime", "start": 15 * us, "dur": 5000 * us,
         "corr": 3},
        {"name": "k2", "kind": "kernel", "start": 5020 * us, "dur": 10 * us, "corr": 2,
         "stream": 3},
        {"name": "Memcpy DtoH", "kind": "memcpy", "start": 5021 * us, "dur": 5 * us, "corr": 3},
    ]
    d = profdiag.diagnose(_trace(rows), use_manifest=False)
    # Gap [10, 5020) = 5010 us; K2 was launched at 11 (> 10): host wait from the start anyway.
    assert d.idle["host_wait_ns"] == 5010 * us
    top = d.idle["causes"][0]
    assert (top["cause"], top["op"], top["ns"]) == ("blocking_copy", "hipMemcpyWithStream",
                                                    5010 * us)


def test_an_impossible_kernel_is_excluded_and_counted():
    us = 1000
    t = _synthetic()
    clean = profdiag.diagnose(t, use_manifest=False)
    ev = t.events.copy()
    # K1 lasting 3 s overlaps K2, K3 and K4 on its own stream: impossible.
    k1 = ev.index[ev["name"] == "k1"][0]
    ev.loc[k1, "dur_ns"] = 3_000_000 * us
    bad = profdiag.diagnose(Trace(ev, t.meta), use_manifest=False)
    assert bad.health["excluded_events"] == 1
    assert bad.health["excluded"][0]["name"] == "k1"
    assert bad.health["excluded"][0]["reason"] == "overlap"
    assert any("impossible" in w for w in bad.warnings)
    assert bad.bottleneck.value == clean.bottleneck.value
    # Without K1 the window starts at K2: [100, 1132) with 30 us busy.
    assert bad.breakdown.window_ns == 1032 * us and bad.breakdown.busy_ns == 30 * us


# ---------------------------------------------------------------------- real traces


def _cudnn_stalls(trace: Trace, min_ns: int = 10_000_000) -> list[tuple[int, int]]:
    """By hand: each long aten::_cudnn_attention_forward op, and the GPU idle inside it
    (op span minus the union of the kernels inside it; the op launches one kernel at its end)."""
    ev = trace.events
    k = ev[ev["kind"] == "kernel"]
    ks = k["start_ns"].to_numpy()
    ke = ks + k["dur_ns"].to_numpy()
    out = []
    ops = ev[(ev["name"] == "aten::_cudnn_attention_forward") & (ev["dur_ns"] > min_ns)]
    for s, dur in zip(ops["start_ns"], ops["dur_ns"]):
        e = s + dur
        inside = (ks < e) & (ke > s)
        busy = int((np.minimum(ke[inside], e) - np.maximum(ks[inside], s)).sum())
        out.append((int(s), int(dur - busy)))
    return out


def test_tiny_eager_decode_names_the_cudnn_plan_stalls():
    trace = profdiag.load(TINY_DECODE)
    d = diagnosed(TINY_DECODE)
    stalls = _cudnn_stalls(trace)
    assert len(stalls) == 5
    hand = sum(ns for _, ns in stalls)
    cause = next(c for c in d.idle["causes"] if c["cause"] == "cudnn_plan")
    # The cause holds the five stalls plus the op's small per-layer gaps (< 10% more).
    assert hand <= cause["ns"] <= 1.1 * hand
    assert cause["op"] == "aten::_cudnn_attention_forward"
    assert cause["steps"] == [3, 4, 5, 6, 7]
    assert d.recommendations[0].id == "idle.cudnn_plan"
    out = d.check("step_outliers")
    assert out.status == "warn" and out.evidence["steps"] == [3, 4, 5, 6, 7]


def test_eager_1b_decode_done_when():
    path = str(shared_or_skip("traces", "torch", "own_1b_decode_ctx1024_B1_steps8.json.gz"))
    trace = profdiag.load(path)
    d = profdiag.diagnose(trace)  # one parse: the test also reads the raw events
    i = d.idle
    # Hand: the five layer-0 stalls of steps 3-7, 41-47 ms each, about 218 ms together.
    stalls = _cudnn_stalls(trace)
    assert len(stalls) == 5 and all(40e6 <= ns <= 48e6 for _, ns in stalls)
    hand = sum(ns for _, ns in stalls)
    assert 210e6 <= hand <= 225e6
    cudnn = sum(c["ns"] for c in i["causes"] if c["op"] == "aten::_cudnn_attention_forward")
    assert 190e6 <= cudnn <= 240e6 and cudnn >= hand
    assert d.check("step_outliers").evidence["steps"] == [3, 4, 5, 6, 7]
    first = d.recommendations[0]
    assert first.id == "idle.cudnn_plan" and "cuDNN" in first.title
    assert "aten::_cudnn_attention_forward" in first.evidence
    assert i["host_wait_ns"] > 100 * i["kernel_wait_ns"]
    # The split partitions the breakdown's idle time exactly.
    assert i["host_wait_ns"] + i["kernel_wait_ns"] == d.breakdown.idle_ns
    assert int(d.idle_gaps["dur_ns"].sum()) == d.breakdown.idle_ns
    # Steps 3-7 take 75-86 ms against 31-34 ms for steps 0-2 (the measurement).
    walls = d.steps.set_index("step")["wall_ns"]
    assert all(75e6 <= walls[s] <= 86e6 for s in (3, 4, 5, 6, 7))
    assert all(30e6 <= walls[s] <= 34e6 for s in (0, 1, 2))


@pytest.mark.parametrize("path", [TINY_GRAPH, "shared:own_1b_decode_ctx1024_B1_steps8_cudagraph"])
def test_cuda_graph_idle_is_gpu_side_and_not_called_host_overhead(path):
    if path.startswith("shared:"):
        path = str(shared_or_skip("traces", "torch", path.split(":")[1] + ".json.gz"))
    d = diagnosed(path)
    i = d.idle
    assert i["kernel_wait_ns"] >= 0.8 * i["idle_ns"]
    # Hand: every gap between kernels inside a replay was queued (launched by the one
    # cudaGraphLaunch before it), so they are many and short.
    gaps = d.idle_gaps
    inner = gaps[gaps["kernel_wait_ns"] > 0]
    assert len(inner) > 1000 and inner["dur_ns"].mean() < 2_000
    summary = d.check("overhead").summary
    assert "(host overhead)" not in summary and "not host overhead" in summary
    assert "overhead.cuda_graphs" not in {r.id for r in d.recommendations}


def test_sglang_decode_blocking_memcpy_is_named_in_the_verdict():
    path = str(shared_or_skip("samples", "kineto", "tracelens", "sglang_Qwen3-8B_decode.json.gz"))
    trace = profdiag.load(path)
    d = profdiag.diagnose(trace)  # one parse: the test also reads the raw events
    ev = trace.events
    # Hand: the one synchronous copy call on the host.
    call = ev[ev["name"] == "hipMemcpyWithStream"]
    assert len(call) == 1
    call_ns = int(call["dur_ns"].iloc[0])
    assert 460e6 <= call_ns <= 466e6
    cause = next(c for c in d.idle["causes"] if c["cause"] == "blocking_copy")
    assert 400e6 <= cause["ns"] <= 480e6
    assert abs(cause["ns"] - call_ns) < 1e6  # the gap is the call, give or take 1 ms
    assert cause["op"] == "hipMemcpyWithStream"
    assert "populate_from_forward_batch" in cause["context"]
    assert any("hipMemcpyWithStream" in e for e in d.bottleneck.evidence)
    assert d.recommendations[0].id == "idle.blocking_copy"
    assert "populate_from_forward_batch" in d.recommendations[0].evidence


def test_corrupt_kernel_in_1b_prefill_keeps_the_verdict_and_warns():
    path = str(shared_or_skip("traces", "torch", "own_1b_prefill_T512_B1.json.gz"))
    trace = profdiag.load(path)
    clean = diagnosed(path)
    ev = trace.events.copy()
    kernels = ev.index[ev["kind"] == "kernel"]
    victim = kernels[len(kernels) // 2]
    ev.loc[victim, "dur_ns"] = 3_000_000_000  # 3 s
    bad = profdiag.diagnose(Trace(ev, trace.meta))
    assert bad.bottleneck.value == clean.bottleneck.value == "overhead"
    assert bad.health["excluded_events"] == 1
    assert bad.health["excluded"][0]["dur_ns"] == 3_000_000_000
    assert any("impossible device event" in w for w in bad.warnings)
    # One 1.3 us kernel fewer: the same window and nearly the same idle time.
    assert abs(bad.breakdown.idle_ns - clean.breakdown.idle_ns) < 50_000
    assert clean.health["excluded_events"] == 0


def test_nsys_decode_attributes_the_stalls_to_the_library_loads():
    path = str(shared_or_skip("traces", "nsys", "nsys_1b_T512_decode64.sqlite.gz"))
    trace = profdiag.load(path)
    d = profdiag.diagnose(trace)  # one parse: the test also reads the raw events
    # Hand: nsys records the plan build as host silence ending in cuLibraryLoadData, once per
    # new KV length (64 calls in the trace, one per step after the first decode step or so).
    loads = trace.events[trace.events["name"] == "cuLibraryLoadData"]
    cause = next(c for c in d.idle["causes"] if c["cause"] == "module_load")
    assert cause["op"] == "cuLibraryLoadData"
    assert 0.9 * len(loads) <= cause["gaps"] <= len(loads)
    assert cause["share_of_idle"] > 0.5
    assert d.idle["host_wait_ns"] > d.idle["kernel_wait_ns"]
    assert d.recommendations[0].id == "idle.module_load"
    assert d.check("step_outliers").status in ("warn", "pass")


def test_rocprof_hip_api_blocking_copies():
    path = str(shared_or_skip("samples", "rocprof", "v3", "rocpd",
                              "batched_gemm_trace_20251211_0851_14_results.db"))
    trace = profdiag.load(path)
    d = profdiag.diagnose(trace)  # one parse: the test also reads the raw events
    calls = trace.events[trace.events["name"] == "hipMemcpy"]
    cause = next(c for c in d.idle["causes"] if c["cause"] == "blocking_copy")
    # The gaps attributed to hipMemcpy lie inside the calls: at most their total duration.
    assert 0 < cause["ns"] <= int(calls["dur_ns"].sum())
    assert d.idle["host_wait_ns"] + d.idle["kernel_wait_ns"] == d.breakdown.idle_ns


# ---------------------------------------------------------------------- contract, render


def test_json_contract_and_html_marks():
    d = diagnosed(TINY_DECODE)
    data = d.to_dict()
    idle = data["idle"]
    for key in ("host_wait_ns", "kernel_wait_ns", "causes", "gaps", "by_step", "by_phase"):
        assert key in idle
    for c in idle["causes"]:
        assert {"cause", "ns", "share_of_idle", "op", "gaps", "steps"} <= set(c)
    assert sum(r["host_wait_ns"] + r["kernel_wait_ns"] for r in idle["by_step"]) <= idle["idle_ns"]
    assert "step_outliers" in {c["id"] for c in data["checks"]}
    assert data["health"]["excluded_events"] == 0
    html = profdiag.render(d, "html")
    assert 'id="idle-causes"' in html and "cuDNN execution-plan build" in html
    assert html.count('"outlier":{') == 5  # steps 3-7 marked on the per-step chart
    txt = profdiag.render(d, "txt")
    assert "Idle time:" in txt and "cuDNN execution-plan build" in txt


# ------------------------------------------------- attribution of many stretches at once


def _host_index(rows: list[tuple[str, str, int, int, int]]):
    """A _HostIndex of host events (name, kind, start us, end us, tid)."""
    from profdiag.diagnosis.idle import _HostIndex

    us = 1000
    ev = schema.from_columns({
        "name": [r[0] for r in rows], "kind": [r[1] for r in rows],
        "start_ns": [r[2] * us for r in rows], "dur_ns": [(r[3] - r[2]) * us for r in rows],
        "tid": [r[4] for r in rows], "pid": [1] * len(rows)})
    return _HostIndex.of(ev)


def test_attribute_many_gives_the_loop_s_cause_op_and_context_on_hand_made_events():
    from profdiag.diagnosis.idle import attribute, attribute_many

    hix = _host_index([
        ("ProfilerStep#1", "annotation", 0, 1000, 1),  # structural: never a cause
        ("/home/me/app/serve.py(42): step", "python", 10, 500, 1),  # a user frame
        ("torch/nn/modules/module.py(1501): _call_impl", "python", 20, 400, 1),  # library
        ("aten::_cudnn_attention_forward", "cpu_op", 30, 300, 1),
        ("cudaMalloc", "runtime", 40, 200, 1),
        ("aten::copy_", "cpu_op", 600, 900, 1),
        ("cuLibraryLoadData", "runtime", 650, 660, 1),
        ("cuLibraryLoadData", "runtime", 700, 740, 1),
        ("/home/me/app/loop.py(7): run", "python", 550, 950, 1),
        ("aten::mm", "cpu_op", 1100, 1300, 2),
        ("threading.py(1000): run", "python", 1050, 1400, 2),  # library frame
        ("aten::add", "cpu_op", 1110, 1290, 1),
        ("/home/me/app/worker.py(3): work", "python", 1500, 1800, 1),
        ("aten::to", "cpu_op", 2100, 2500, 3),
        ("cudaStreamSynchronize", "runtime", 2150, 2450, 3),
    ])
    us = 1000
    stretches = [  # (a us, b us, launching tid) -> (cause, op, context), worked out by hand
        # innermost covering event cudaMalloc [40, 200) names alloc; the next user frame out
        # (the torch frame is a library one) is serve.py
        ((50, 150, 1), ("alloc", "cudaMalloc", "serve.py(42): step")),
        # cudaMalloc ends at 200 (no overlap); the cuDNN op covers 50 of 100 us (= cover)
        ((250, 350, 1), ("cudnn_plan", "aten::_cudnn_attention_forward",
                         "serve.py(42): step")),
        # nothing covering names a cause; two library loads inside the stretch: the longer
        ((610, 890, 1), ("module_load", "cuLibraryLoadData", "loop.py(7): run")),
        # thread 2 has no event there: all threads' events are used
        ((610, 890, 2), ("module_load", "cuLibraryLoadData", "loop.py(7): run")),
        # thread 2's framework op, its only frame a library one: no context
        ((1120, 1280, 2), ("framework_op", "aten::mm", "")),
        # thread 1's op over the same stretch
        ((1120, 1280, 1), ("framework_op", "aten::add", "")),
        ((1550, 1750, 1), ("python", "worker.py(3): work", "")),
        ((1900, 2000, 1), ("unexplained", "", "")),
        # a runtime call naming a cause, no user frame: its context is the op that made it
        ((2200, 2400, 3), ("sync", "cudaStreamSynchronize", "aten::to")),
        ((2200, 2400, -1), ("sync", "cudaStreamSynchronize", "aten::to")),
    ]
    rules = load_idle_rules()
    a = np.array([s[0][0] * us for s in stretches])
    b = np.array([s[0][1] * us for s in stretches])
    tid = np.array([s[0][2] for s in stretches])
    offsets, flat = hix.overlapping_many(a, b)
    cause, op, ctx = attribute_many(a, b, tid, hix, rules, 0.5, offsets, flat)
    got = list(zip(cause.tolist(), op.tolist(), ctx.tolist()))
    assert got == [s[1] for s in stretches]
    assert got == [attribute(int(a[i]), int(b[i]), int(tid[i]), hix, rules, 0.5)
                   for i in range(len(a))]
    # random stretches, threads and covers against the loop
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2600, 400) * us
    b = a + rng.integers(1, 600, 400) * us
    tid = rng.integers(-1, 4, 400)
    offsets, flat = hix.overlapping_many(a, b)
    for cover in (0.1, 0.5, 0.9):
        cause, op, ctx = attribute_many(a, b, tid, hix, rules, cover, offsets, flat)
        assert list(zip(cause.tolist(), op.tolist(), ctx.tolist())) == [
            attribute(int(a[i]), int(b[i]), int(tid[i]), hix, rules, cover)
            for i in range(len(a))]


def _reference_causes(table: pd.DataFrame) -> list[dict]:
    """summarise's cause rows by a plain loop over the gap records: host-wait parts to their
    (cause, op), then kernel-wait parts to (gpu_side, ''), groups in order of appearance."""
    groups: dict[tuple, list] = {}
    recs = table.to_dict("records")
    for r in recs:
        if r["host_wait_ns"] > 0:
            groups.setdefault((r["cause"], r["op"]), []).append(
                (r["host_wait_ns"], r["step"], r["context"]))
    for r in recs:
        if r["kernel_wait_ns"] > 0:
            groups.setdefault(("gpu_side", ""), []).append((r["kernel_wait_ns"], r["step"], ""))
    out = []
    for (c, o), items in groups.items():
        per: dict[int, int] = {}
        for ns, s, _ in items:
            if s >= 0:
                per[s] = per.get(s, 0) + ns
        steps = sorted(s for s, v in per.items() if v >= 0.25 * max(per.values()))
        ctxs = [x for _, _, x in items if x]
        out.append({"cause": c, "op": o, "ns": sum(i[0] for i in items), "gaps": len(items),
                    "steps": steps, "context": max(set(ctxs), key=ctxs.count) if ctxs else ""})
    return sorted(out, key=lambda r: -r["ns"])


def _gap_table(rows: list[tuple]) -> pd.DataFrame:
    from profdiag.diagnosis.idle import GAP_COLUMNS

    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def test_summarise_cause_rows_steps_and_largest_gaps_match_the_hand_computation():
    from profdiag.diagnosis.idle import summarise

    a, b = "a.py(1): f", "b.py(2): g"
    table = _gap_table([
        # start, dur, step, host wait, kernel wait, cause, op, context, next
        (0, 100, 0, 100, 0, "alloc", "cudaMalloc", a, "k1"),
        (200, 50, 0, 30, 20, "launch_gaps", "", "", "k2"),
        (300, 400, 1, 400, 0, "alloc", "cudaMalloc", b, "k3"),
        (800, 10, 1, 0, 10, "gpu_side", "", "", "k4"),
        (900, 60, -1, 60, 0, "alloc", "cudaMalloc", b, "k5"),
        (950, 70, 1, 70, 0, "framework_op", "aten::mm", "", "k10"),  # ties with sync: first
        (1000, 70, 2, 70, 0, "sync", "cudaStreamSynchronize", "", "k6"),
        (1100, 25, 2, 0, 25, "gpu_side", "", "", "k7"),
        (1200, 90, 2, 80, 10, "alloc", "cudaFree", a, "k8"),
        (1300, 40, 2, 40, 0, "alloc", "cudaFree", "c.py(3): h", "k9"),
    ])
    steps = pd.DataFrame({"step": [0, 1, 2], "phase": ["decode", "decode", "prefill"]})
    rules = load_idle_rules()
    out = summarise(table, steps, rules)
    # host wait 100+30+400+60+70+70+80+40 = 850, kernel wait 20+10+25+10 = 65
    assert (out["idle_ns"], out["host_wait_ns"], out["kernel_wait_ns"]) == (915, 850, 65)
    rows = [{k: c[k] for k in ("cause", "op", "ns", "gaps", "steps", "context")}
            for c in out["causes"]]
    # cudaMalloc: steps 0 (100) and 1 (400) hit at least a quarter of its worst step (400);
    # step -1 (outside every step) is in its time but no step; b.py twice against a.py once.
    # gpu_side: 20 + 10 + 25 + 10 = 65 in steps 0 (20), 1 (10), 2 (35): all >= 35/4.
    assert rows[0] == {"cause": "alloc", "op": "cudaMalloc", "ns": 560, "gaps": 3,
                       "steps": [0, 1], "context": b}
    assert rows[1]["cause"] == "alloc" and rows[1]["op"] == "cudaFree" and \
        (rows[1]["ns"], rows[1]["gaps"], rows[1]["steps"]) == (120, 2, [2])
    assert rows[2:] == [
        {"cause": "framework_op", "op": "aten::mm", "ns": 70, "gaps": 1, "steps": [1],
         "context": ""},
        {"cause": "sync", "op": "cudaStreamSynchronize", "ns": 70, "gaps": 1, "steps": [2],
         "context": ""},
        {"cause": "gpu_side", "op": "", "ns": 65, "gaps": 4, "steps": [0, 1, 2], "context": ""},
        {"cause": "launch_gaps", "op": "", "ns": 30, "gaps": 1, "steps": [0], "context": ""}]
    assert rows == _reference_causes(table)  # the a.py / c.py tie broken as the loop breaks it
    assert out["causes"][0]["share_of_idle"] == round(560 / 915, 6)
    assert [g["dur_ns"] for g in out["gaps"]] == [400, 100, 90, 70, 70, 60, 50, 40, 25, 10]
    assert out["by_step"] == [
        {"step": 0, "phase": "decode", "host_wait_ns": 130, "kernel_wait_ns": 20},
        {"step": 1, "phase": "decode", "host_wait_ns": 470, "kernel_wait_ns": 10},
        {"step": 2, "phase": "prefill", "host_wait_ns": 190, "kernel_wait_ns": 35}]
    assert out["by_phase"] == {"decode": {"host_wait_ns": 600, "kernel_wait_ns": 30},
                               "prefill": {"host_wait_ns": 190, "kernel_wait_ns": 35}}
    # an object-dtype table says the same
    assert summarise(table.astype({c: object for c in ("cause", "op", "context")}), steps,
                     rules) == out


def test_summarise_matches_the_loop_on_random_gap_tables():
    from profdiag.diagnosis.idle import summarise

    rules = load_idle_rules()
    rng = np.random.default_rng(3)
    causes = [("alloc", "cudaMalloc"), ("alloc", "cudaFree"), ("launch_gaps", ""),
              ("gpu_side", ""), ("framework_op", "aten::mm"), ("sync", "aten::item")]
    ctxs = ["", "", "x.py(1): f", "y.py(2): g", "z.py(3): h"]
    for n in (1, 7, 300):
        rows = []
        for i in range(n):
            c, o = causes[rng.integers(len(causes))]
            hw, kw = (int(v) for v in rng.integers(0, 4, 2) * rng.integers(1, 3, 2))  # ties
            rows.append((i * 10_000, hw + kw, int(rng.integers(-1, 5)), hw, kw, c, o,
                         ctxs[rng.integers(len(ctxs))], f"k{i}"))
        table = _gap_table(rows)
        got = [{k: c[k] for k in ("cause", "op", "ns", "gaps", "steps", "context")}
               for c in summarise(table, pd.DataFrame(columns=["step", "phase"]), rules)["causes"]]
        assert got == _reference_causes(table)


def test_largest_is_a_stable_descending_sort_s_head():
    from profdiag.diagnosis.idle import _largest

    v = np.array([5, 7, 5, 7, 1, 9, 5])
    assert _largest(v, 3).tolist() == [5, 1, 3]
    assert _largest(v, 5).tolist() == [5, 1, 3, 0, 2]  # the 5s in position order
    for n in (0, 1, 4, 7, 9, -2):
        want = pd.Series(v).sort_values(ascending=False, kind="stable").head(n).index.tolist()
        assert _largest(v, n).tolist() == want


def test_overlapping_many_matches_overlapping_and_keeps_its_classes_across_calls():
    us = 1000
    hix = _host_index([("a", "runtime", 0, 3, 1), ("b", "runtime", 1, 2, 1),
                       ("c", "cpu_op", 2, 2000, 1), ("d", "runtime", 5, 5, 1),
                       ("e", "runtime", 4, 900, 1), ("f", "runtime", 1500, 1501, 1)])
    offsets, flat = hix.overlapping_many(np.array([0, 1_600]) * us, np.array([3, 1_700]) * us)
    # [0, 3) us: a, b (short ones, by start) and c (long: at least 1 ms) first; d starts at 5
    assert [hix.name[p] for p in flat[offsets[0]:offsets[1]]] == ["c", "a", "b"]
    assert [hix.name[p] for p in flat[offsets[1]:offsets[2]]] == ["c"]
    rng = np.random.default_rng(1)
    for _ in range(2):  # the second call reads the duration classes the first one built
        a = rng.integers(-10, 2100, 200) * us
        b = a + rng.integers(0, 300, 200) * us
        offsets, flat = hix.overlapping_many(a, b)
        for i in range(len(a)):
            assert flat[offsets[i]:offsets[i + 1]].tolist() == \
                hix.overlapping(int(a[i]), int(b[i])).tolist()
    offsets, flat = hix.overlapping_many(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert offsets.tolist() == [0] and flat.tolist() == []


def test_host_index_holds_codes_into_the_distinct_names_and_kinds_of_its_rows():
    from profdiag.diagnosis.idle import _HostIndex

    us = 1000
    ev = schema.compact(schema.from_columns({
        "name": ["kernel_x", "ProfilerStep#3", "cudaLaunchKernel", "aten::mm", "cudaLaunchKernel"],
        "kind": ["kernel", "annotation", "runtime", "cpu_op", "runtime"],
        "start_ns": [0, 50 * us, 30 * us, 10 * us, 20 * us],
        "dur_ns": [5 * us, 2000 * us, 1 * us, 40 * us, 1 * us],
        "tid": [None, 1, 2, 1, 2], "pid": [1] * 5}))
    hix = _HostIndex.of(ev, np.array([1, 2, 3, 4]))  # not the kernel
    # rows by start: aten::mm (10 us), cudaLaunchKernel (20), cudaLaunchKernel (30), the step
    assert hix.start.tolist() == [10 * us, 20 * us, 30 * us, 50 * us]
    assert hix.end.tolist() == [50 * us, 21 * us, 31 * us, 2050 * us]
    assert hix.tid.tolist() == [1, 2, 2, 1]
    # the distinct names of those rows only (no kernel_x), sorted, the missing name's last
    assert hix.unique_names[:-1].tolist() == ["ProfilerStep#3", "aten::mm", "cudaLaunchKernel"]
    assert hix.name_code.dtype == np.int32 and hix.name_code.tolist() == [1, 2, 2, 0]
    assert hix.name.tolist() == ["aten::mm", "cudaLaunchKernel", "cudaLaunchKernel",
                                 "ProfilerStep#3"]
    assert hix.kind.tolist() == ["cpu_op", "runtime", "runtime", "annotation"]
    assert hix.kind_is("runtime").tolist() == [False, True, True, False]
    assert not hix.kind_is("python").any()  # a kind of the table's categories, no row's
    assert hix.code_of_kind("no such kind") == -1 and not hix.kind_is("no such kind").any()
    assert hix.structural.tolist() == [False, False, False, True]


def test_by_start_is_lexsort_of_launch_within_start():
    from profdiag.diagnosis.idle import _by_start

    st = np.array([0, 5, 5, 5, 9])
    assert _by_start(st, np.array([0, 1, 2, 2, 3])).tolist() == [0, 1, 2, 3, 4]  # in order
    assert _by_start(st, np.array([0, 2, 1, 2, 3])).tolist() == [0, 2, 1, 3, 4]  # a tie out
    assert _by_start(np.array([3, 1, 2]), np.array([0, 0, 0])).tolist() == [1, 2, 0]
    assert _by_start(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)).tolist() == []


def test_health_longer_than_trace_compares_with_the_host_rows_span_only():
    from profdiag.diagnosis.health import screen

    def events(extra: list[tuple[str, str, int, int]]) -> pd.DataFrame:
        rows = [(f"k{i}", "kernel", i * 100, 50) for i in range(6)]  # [0, 550) on stream 7
        rows += [("huge", "kernel", 0, 10_000)]  # alone on stream 8: no overlap on its stream
        rows += [("cudaLaunchKernel", "runtime", -100 + i * 100, 20) for i in range(6)]
        rows += extra
        gpu = [r[1] == "kernel" for r in rows]
        return schema.from_columns({
            "name": [r[0] for r in rows], "kind": [r[1] for r in rows],
            "start_ns": [r[2] for r in rows], "dur_ns": [r[3] for r in rows],
            "stream": [(8 if r[0] == "huge" else 7) if g else pd.NA for r, g in zip(rows, gpu)],
            "device": [0 if g else pd.NA for g in gpu], "tid": [pd.NA if g else 1 for g in gpu],
            "pid": [1] * len(rows)})

    # the others span [-100, 550): 650 ns < the huge kernel's 10,000; a GPU-side annotation
    # over everything is no host event and does not widen the span
    ev = events([("step 1", "gpu_annotation", -5_000, 50_000)])
    work = ev[ev["kind"] == "kernel"].reset_index(drop=True)
    clean, health, _ = screen(work, ev, {})
    assert health["excluded"] == [{"name": "huge", "start_ns": 0, "dur_ns": 10_000,
                                   "stream": 8, "reason": "longer_than_trace"}]
    assert len(clean) == 6
    # a host range longer than the kernel: the kernel fits in the trace
    ev = events([("ProfilerStep#1", "annotation", -5_000, 50_000)])
    work = ev[ev["kind"] == "kernel"].reset_index(drop=True)
    assert screen(work, ev, {})[1]["excluded_events"] == 0


def test_step_outliers_names_the_slow_steps_pair_by_summed_host_wait():
    """The slow step's cause: host wait summed per (cause, op) of its gaps; the largest
    specific pair when it holds half the extra time, else the largest pair."""
    from profdiag.diagnosis.idle import step_outliers

    table = _gap_table([
        # start, dur, step, host wait, kernel wait, cause, op, context, next
        (0, 100, 3, 30, 0, "launch_gaps", "", "", "k"),
        (100, 100, 3, 25, 0, "alloc", "cudaMalloc", "", "k"),
        (200, 100, 3, 25, 0, "alloc", "cudaMalloc", "", "k"),  # alloc/cudaMalloc: 50
        (300, 100, 3, 40, 0, "sync", "cudaStreamSynchronize", "", "k"),
        (400, 100, 3, 0, 90, "gpu_side", "", "", "k"),  # no host wait: not counted
        (500, 100, 4, 80, 0, "launch_gaps", "", "", "k"),  # step 4's: largest generic
        (600, 100, 4, 10, 0, "python", "f.py(1): g", "", "k"),
        (700, 100, 0, 500, 0, "sync", "cudaDeviceSynchronize", "", "k"),  # another step
    ])
    steps = pd.DataFrame({"step": [0, 1, 2, 3, 4], "phase": ["decode"] * 5,
                          "wall_ns": [100, 100, 100, 190, 170], "kernels": [10] * 5,
                          "gpu_busy_ns": [50] * 5})
    check = step_outliers(steps, table, load_idle_rules())
    by_step = {o["step"]: o for o in check.evidence["outliers"]}
    assert sorted(by_step) == [3, 4]
    # step 3: 90 ns extra; alloc/cudaMalloc (50) >= 45: the specific pair wins over sync (40)
    assert (by_step[3]["cause"], by_step[3]["op"], by_step[3]["cause_ns"]) == (
        "alloc", "cudaMalloc", 50)
    # step 4: 70 ns extra; python (10) < 35: the largest pair, launch gaps (80)
    assert (by_step[4]["cause"], by_step[4]["op"], by_step[4]["cause_ns"]) == (
        "launch_gaps", "", 80)

"""The diagnosis pipeline (issue 15): ordered steps, each runnable alone, frozen results.

The numbers are computed here by hand from the raw events of a real fixture trace
(fixtures/torch/own_tiny_decode_ctx512_B1_steps8.json.gz: 8 decode steps of a 4-layer
model on an H100), with plain loops, not the diagnosis' own helpers.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

import profdiag
from profdiag import thresholds as thresholds_mod
from profdiag.classify import load_rules
from profdiag.diagnosis import idle as idle_mod, pipeline, resolve_spec
from profdiag.diagnosis.context import build, thresholds
from profdiag.diagnosis.model import Check, Recommendation, Verdict

from helpers import FIXTURES, REPO

DECODE = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"


@pytest.fixture(scope="module")
def run() -> pipeline.Run:
    trace = profdiag.load(DECODE)
    limits = thresholds(())
    ctx = build(trace, resolve_spec(trace), load_rules([]), limits)
    return pipeline.Run(trace=trace, ctx=ctx, limits=limits,
                        typed=thresholds_mod.from_mapping(limits),
                        idle_rules=idle_mod.load_idle_rules())


@pytest.fixture(scope="module")
def results(run: pipeline.Run) -> dict:
    return pipeline.execute(run, until="window")


def _raw(run: pipeline.Run):
    """(kernels as (start, end, launch) tuples, step annotations as (start, end)) by hand:
    a kernel's launch is the start of the runtime call with its correlation id."""
    ev = run.trace.events
    launch = {int(c): int(s) for c, s, k in zip(ev["correlation"], ev["start_ns"], ev["kind"])
              if k == "runtime" and c == c and c is not None and str(c) != "<NA>"}
    kernels = [(int(s), int(s) + int(d), launch.get(int(c), int(s)))
               for s, d, c, k in zip(ev["start_ns"], ev["dur_ns"], ev["correlation"], ev["kind"])
               if k == "kernel"]
    steps = sorted((int(s), int(s) + int(d)) for n, s, d, k in
                   zip(ev["name"], ev["start_ns"], ev["dur_ns"], ev["kind"])
                   if k == "annotation" and re.fullmatch(r"decode_step_\d+", str(n)))
    return kernels, steps


def test_pipeline_order_names_only_earlier_steps() -> None:
    seen: set[str] = set()
    for step in pipeline.PIPELINE:
        assert step.name not in seen, step.name
        missing = [n for n in step.needs if n not in seen]
        assert not missing, f"{step.name} needs {missing} before it runs"
        seen.add(step.name)
    assert pipeline.PIPELINE[-1].name == "diagnosis"


def test_architecture_doc_lists_the_pipeline_in_order() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| \d+ \| `(\w+)` \|", text, flags=re.M)
    assert listed == [s.name for s in pipeline.PIPELINE]


def test_execute_stops_at_the_named_step(results: dict) -> None:
    assert list(results) == ["health", "work", "steps", "window"]


def test_steps_assign_every_kernel_to_the_annotation_its_launch_falls_in(
        run: pipeline.Run, results: dict) -> None:
    kernels, ann = _raw(run)
    assert len(ann) == 8  # decode_step_0 .. decode_step_7
    by_hand = [sum(1 for _, _, t in kernels if a <= t < b) for a, b in ann]
    # 2,368 kernels in all, 296 per step (the same forward eight times)
    assert len(kernels) == 2368 and by_hand == [296] * 8
    steps = results["steps"]
    assert steps.table["kernels"].tolist() == by_hand
    assert np.bincount(steps.step_of_row[steps.step_of_row >= 0]).tolist() == by_hand
    assert len(steps.step_of_row) == len(results["work"].frame)
    # the step index is the result's array, not a column written into the work table
    assert "step" not in results["work"].frame.columns
    assert [m.value for m in steps.modes] == ["decode"] * 8


def test_window_busy_is_the_union_of_kernel_intervals(run: pipeline.Run, results: dict) -> None:
    kernels, _ = _raw(run)
    w0, w1 = results["window"].window
    # by hand: sort by start, merge overlapping [start, end), clip to the window
    union, cur_s, cur_e = 0, None, None
    for s, e, _ in sorted(kernels):
        s, e = max(s, w0), min(e, w1)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            union += 0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    union += 0 if cur_e is None else cur_e - cur_s
    bd = results["window"].breakdown
    assert bd.busy_ns == union
    assert bd.idle_ns == (w1 - w0) - union
    # the window spans from the first step's first kernel to the last step's last kernel end
    assert w0 == min(s for s, _, _ in kernels) and w1 == max(e for _, e, _ in kernels)


def test_each_step_alone_from_its_inputs(run: pipeline.Run, results: dict) -> None:
    # the phases step on its own: one decode phase of 8 steps whose window is the window
    ph = pipeline.phases(run, results["work"], results["steps"], results["window"])
    assert [(p.name, p.steps) for p in ph.phases] == [("decode", 8)]
    assert ph.mode.value == "decode" and ph.main is ph.phases[0]
    st = results["steps"].table
    assert ph.main.breakdown.busy_ns == int(st["gpu_busy_ns"].sum())
    # the counts step: a 4-layer model's forward is 4 x 7 linear GEMMs + lm_head = 29 calls
    c = pipeline.counts(run, results["work"], results["steps"], ph)
    assert c.kernel_counts["observed_gemm_calls"] == 8 * (4 * 7 + 1)
    # a step's result is frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.kernel_counts = {}  # type: ignore[misc]


def test_diagnosis_is_built_once_and_frozen(run: pipeline.Run) -> None:
    everything = pipeline.execute(run)
    diag = everything["diagnosis"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        diag.roofline = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        diag.mode.value = "prefill"  # type: ignore[misc]
    # the roofline is the roofline step's result, the events table carries the steps'
    assert diag.roofline is everything["roofline"]
    assert diag.events["step"].tolist() == everything["steps"].step_of_row.tolist()
    assert diag.to_dict() == profdiag.diagnose(run.trace).to_dict()


def test_cpu_wording_rewrites_the_findings_not_the_diagnosis() -> None:
    f = pipeline.Findings(
        checks=(Check("overhead", "warn", "GPU idle 30% of the window"),),
        bottleneck=Verdict("memory", ["median GEMM M = 1 (>= 1)"]), phases=(),
        recommendations=(Recommendation("r", "t", "the GPU waits", "keep The GPU fed"),))
    out = pipeline.cpu_wording(f)
    assert out.checks[0].summary == "CPU idle 30% of the window"
    assert out.bottleneck.evidence == [
        "median GEMM M = 1 (CPU: no GPU tensor-core threshold applies)",
        "CPU trace: judged by operator time shares, not against a GPU roof"]
    assert (out.recommendations[0].evidence, out.recommendations[0].advice) == (
        "the CPU waits", "keep The CPU fed")
    assert f.checks[0].summary == "GPU idle 30% of the window"  # the input is unchanged


def test_health_step_alone_keeps_every_kernel_of_a_healthy_trace(run: pipeline.Run) -> None:
    h = pipeline.health(run)
    assert len(h.work) == 2368 and h.work.index.tolist() == list(range(2368))
    assert h.work is not run.ctx.work  # a new table; the context's is left as it was


def test_pattern_checks_on_a_hand_made_breakdown(run: pipeline.Run) -> None:
    from profdiag.diagnosis.model import Breakdown

    # prefill, 1,000 ns busy: GEMM 600 + softmax 200 + other 200
    bd = Breakdown(window_ns=2000, busy_ns=1000, idle_ns=1000,
                   category_ns={"compute": 1000}, class_ns={"gemm": 600, "softmax": 200,
                                                            "elementwise": 200},
                   kernel_sum_ns=1000)
    gemm, softmax = pipeline.pattern_checks(bd, "prefill", run.limits)
    # 600 / 1000 = 60 % < 65 % (prefill_gemm_min): warn; 200 / 1000 = 20 % > 15 %: warn
    assert (gemm.id, gemm.status, gemm.evidence) == ("pattern.gemm_share", "warn",
                                                     {"gemm_share": 0.6})
    assert (softmax.id, softmax.status, softmax.evidence) == ("pattern.softmax", "warn",
                                                              {"softmax_share": 0.2})
    assert softmax.summary == "softmax is 20% of busy time (heavy above 15%)"
    # decode: GEMV + GEMM = 600 / 1000 = 60 % >= 50 % (decode_gemv_min): pass
    (gemv,) = pipeline.pattern_checks(bd, "decode", run.limits)
    assert (gemv.id, gemv.status) == ("pattern.gemv_share", "pass")
    assert pipeline.pattern_checks(bd, "unknown", run.limits) == []


def test_context_work_is_the_primary_device_rows_in_start_order() -> None:
    """context.build takes the busiest device's kernel/copy/memset rows by position in start
    order: the same rows, values and order as the filter, filter and stable sort it replaced,
    here on a trace whose second device and shuffled rows make both steps matter."""
    from profdiag import schema
    from profdiag.classify import classify

    trace = profdiag.load(DECODE)
    ev = trace.events
    gpu_rows = ev.index[ev["kind"].isin(schema.GPU_KINDS)]
    # the last 40 GPU rows move to device 7 (less busy), the table is shuffled
    ev = ev.copy()
    ev.loc[gpu_rows[-40:], "device"] = 7
    ev = ev.sample(frac=1.0, random_state=3)
    trace = dataclasses.replace(trace, events=ev)
    ctx = build(trace, resolve_spec(trace), load_rules([]), thresholds(()))
    gpu = ev[ev["kind"].isin(schema.GPU_KINDS)]
    old = classify(gpu[gpu["device"].fillna(-1) == ctx.device], load_rules([]))
    old = old.sort_values("start_ns", kind="stable").reset_index(drop=True)
    assert len(ctx.work) == len(gpu) - 40
    assert ctx.work[list(old.columns)].equals(old)
    assert list(ctx.work["start_ns"]) == sorted(ctx.work["start_ns"])
    assert list(ctx.host.columns) == ["name", "kind", "start_ns", "dur_ns", "tid", "correlation"]
    host = ev[ev["kind"].isin((schema.KIND_RUNTIME, schema.KIND_SYNC))]
    assert ctx.host.equals(host[ctx.host.columns.tolist()])

"""Issue 18: the grouped per-step passes give exactly what the per-step calls gave.

``per_step.detect_steps`` against ``mode.detect`` on each step's rows, ``per_step.phase_breakdown``
against ``breakdown.breakdown`` per step summed key by key, and the one-pass idle gaps against
gaps taken window by window; on the bundled fixtures (always there) and on shared traces with
prefill and decode steps.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import pytest

import profdiag
from profdiag import thresholds as thresholds_mod
from profdiag.classify import load_rules
from profdiag.diagnosis import idle as idle_mod, per_step, pipeline, resolve_spec
from profdiag.diagnosis.breakdown import breakdown
from profdiag.diagnosis.context import build, thresholds
from profdiag.diagnosis.mode import annotate, detect
from profdiag.diagnosis.model import Breakdown

from helpers import FIXTURES, shared_or_skip


def _context(path):
    trace = profdiag.load(path)
    limits = thresholds(())
    ctx = build(trace, resolve_spec(trace), load_rules([]), limits)
    ctx = replace(ctx, work=annotate(ctx.work.reset_index(drop=True)))
    return ctx, limits


def _summed(parts: list[Breakdown]) -> Breakdown:
    """The per-phase sum the diagnosis did before issue 18 (the reference)."""
    def add(dicts):
        out: dict[str, int] = {}
        for d in dicts:
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out
    return Breakdown(window_ns=sum(p.window_ns for p in parts), busy_ns=sum(p.busy_ns for p in parts),
                     idle_ns=sum(p.idle_ns for p in parts),
                     category_ns=add([p.category_ns for p in parts]),
                     class_ns=add([p.class_ns for p in parts]),
                     kernel_sum_ns=sum(p.kernel_sum_ns for p in parts),
                     class_category={k: v for p in parts for k, v in p.class_category.items()})


def _check(path) -> None:
    ctx, limits = _context(path)
    min_m = int(limits["mode"]["prefill_min_m"])
    share = float(limits["mode"]["prefill_gemm_share"])
    run = pipeline.Run(trace=ctx.trace, ctx=ctx, limits=limits,
                       typed=thresholds_mod.from_mapping(limits),
                       idle_rules=idle_mod.load_idle_rules())
    work = ctx.work
    steps = pipeline.steps(run, pipeline.Work(work, (), 0))
    steps_df, modes = steps.table, steps.modes
    assert len(steps_df) >= 2
    rows_of = pipeline.rows_by_step(steps.step_of_row)
    empty = np.array([], dtype=np.int64)
    names = ctx.steps["name"].tolist()
    batched = per_step.detect_steps(work, steps.step_of_row, names, min_m, share)
    for i, got in enumerate(batched):
        want = detect(work.iloc[rows_of.get(i, empty)], [names[i]], min_m, share)
        assert asdict(got) == asdict(want), i
    w0, w1 = steps_df["_w0"].to_numpy(), steps_df["_w1"].to_numpy()
    busy = steps_df["gpu_busy_ns"].to_numpy(dtype=np.int64)
    for value in dict.fromkeys(m.value for m in modes):
        idx = [i for i, m in enumerate(modes) if m.value == value]
        want = _summed([breakdown(work.iloc[rows_of.get(i, empty)], (int(w0[i]), int(w1[i])))
                        for i in idx])
        got = per_step.phase_breakdown(work, rows_of, idx, w0, w1, busy)
        assert asdict(got) == asdict(want)
        assert list(got.category_ns) == list(want.category_ns)  # same key order in the JSON
        assert list(got.class_ns) == list(want.class_ns)
    # idle gaps in one pass == window by window (each window alone is the old loop's body)
    windows = [(int(a), int(b), int(s)) for a, b, s in zip(w0, w1, steps_df["step"])]
    whole = idle_mod.gaps(work, ctx.host, windows)
    one_by_one = [idle_mod.gaps(work, ctx.host, [w]) for w in idle_mod._contiguous(windows)
                  if w[1] > w[0]]
    ref = pd.concat([g for g in one_by_one if len(g)], ignore_index=True)
    pd.testing.assert_frame_equal(whole, ref)


@pytest.mark.parametrize("name", ["own_tiny_decode_ctx512_B1_steps8.json.gz",
                                  "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz"])
def test_grouped_passes_match_per_step_calls_on_fixtures(name: str) -> None:
    _check(FIXTURES / "torch" / name)


def test_grouped_passes_match_on_a_prefill_decode_trace() -> None:
    # a real nsys capture: one prefill step and 64 decode steps, two phases
    _check(shared_or_skip("traces", "nsys", "nsys_1b_T512_decode64.sqlite.gz"))


def test_gaps_cut_at_window_edges_by_hand() -> None:
    # kernels [10, 20) [30, 60) [60, 60) (zero length) [75, 80); windows [0, 50) [50, 100)
    work = pd.DataFrame({"start_ns": [10, 30, 60, 75], "dur_ns": [10, 30, 0, 5],
                         "launch_ns": [0, 0, 0, 0], "correlation": [1, 2, 3, 4]})
    host = pd.DataFrame({"kind": pd.Series([], dtype=object), "correlation": [], "start_ns": [],
                         "dur_ns": [], "tid": []})
    g = idle_mod.gaps(work, host, [(0, 50, 0), (50, 100, 1)])
    # idle: [0,10) [20,30) in step 0; [60,60) splits nothing (empty); [60,75) [80,100) in 1
    assert g[["start_ns", "dur_ns", "step"]].values.tolist() == [
        [0, 10, 0], [20, 10, 0], [60, 15, 1], [80, 20, 1]]

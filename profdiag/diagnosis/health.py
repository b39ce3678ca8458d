"""Trace health: events a GPU cannot have produced, clock skew, profiler overhead.

Impossible device events are *excluded* from the diagnosis (and counted), so one corrupt
duration cannot flip the verdict:

- ``overlap``: a kernel that runs past the start of a later kernel on its own stream by more
  than ``OVERLAP_MIN_NS`` and more than half its own duration (a stream executes its kernels
  in order; programmatic dependent launch overlaps a few microseconds, not half a kernel;
  copies are not compared, some formats report the copy engines on the kernels' stream id);
- ``longer_than_trace``: an event longer than the span of every other event of the trace.

Warned about, not excluded: clock skew (work that starts before the host call that launched
it) and profiler options that slow the host (record_shapes, with_stack, profile_memory).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import schema, strcols

OVERLAP_MIN_NS = 1_000_000
SKEW_TOLERANCE_NS = 1_000
_SLOW_OPTIONS = ("record_shapes", "with_stack", "profile_memory")


def screen(work: pd.DataFrame, events: pd.DataFrame, options: dict[str, Any]
           ) -> tuple[pd.DataFrame, dict[str, Any], list[str]]:
    """(work without impossible events, the ``health`` object, warnings)."""
    bad: dict[int, str] = {}
    if len(work):
        st = work["start_ns"].to_numpy(dtype=np.int64)
        en = st + work["dur_ns"].to_numpy(dtype=np.int64)
        dur = en - st
        stream = work["stream"].astype("Float64").fillna(-1).to_numpy(dtype=np.float64)
        # Per stream, in start order: how far each kernel runs past the next kernel's start
        # (copies are left out: some formats put the copy engines' work on the same stream id).
        is_kernel = (work["kind"] == schema.KIND_KERNEL).to_numpy(dtype=bool)
        stream = np.where(is_kernel, stream, np.nan)
        order = np.lexsort((st, stream))
        order = order[is_kernel[order]]
        s_o, e_o, str_o = st[order], en[order], stream[order]
        same_next = np.append(str_o[1:] == str_o[:-1], False)
        nxt_start = np.append(s_o[1:], np.iinfo(np.int64).max)
        over = np.where(same_next, e_o - nxt_start, 0)
        d_o = dur[order]
        hit = (over > OVERLAP_MIN_NS) & (over > 0.5 * d_o)
        for p in np.flatnonzero(hit):
            bad[int(order[p])] = "overlap"
        # Longer than the span of all the other events (host events and the other work).
        if len(work) > 1:
            longest = int(np.argmax(dur))
            # the host rows' two time columns (a row filter of the events copied every
            # column of millions of rows, names included)
            host = ~strcols.isin(events["kind"], (*schema.GPU_KINDS, schema.KIND_GPU_ANNOTATION))
            h_s = events["start_ns"].to_numpy(dtype=np.int64)[host]
            h_e = h_s + events["dur_ns"].to_numpy(dtype=np.int64)[host]
            others = np.arange(len(work)) != longest
            lo = min(int(st[others].min()), int(h_s.min()) if len(h_s) else int(st[others].min()))
            hi = max(int(en[others].max()), int(h_e.max()) if len(h_e) else int(en[others].max()))
            if len(work) + len(h_s) >= 10 and dur[longest] > hi - lo > 0:
                bad.setdefault(longest, "longer_than_trace")
    positions = np.array(sorted(bad), dtype=np.int64)
    excluded: list[dict[str, Any]] = []
    for p in positions[:20]:
        r = work.iloc[int(p)]
        excluded.append({"name": str(strcols.value_at(work["name"], int(p))),
                         "start_ns": int(r["start_ns"]),
                         "dur_ns": int(r["dur_ns"]),
                         "stream": None if pd.isna(r["stream"]) else int(r["stream"]),
                         "reason": bad[int(p)]})
    warnings: list[str] = []
    if len(positions):
        ex = excluded[0]
        warnings.append(
            f"trace health: {len(positions)} impossible device event(s) excluded from the "
            f"diagnosis (e.g. {ex['name'][:60]} lasting {ex['dur_ns'] / 1e6:.1f} ms: "
            f"{_REASON[ex['reason']]})")
    clean = work.drop(index=work.index[positions]) if len(positions) else work

    skew = _skew(clean)
    if skew["events"]:
        warnings.append(f"trace health: {skew['events']} GPU event(s) start before the host "
                        f"call that launched them (up to {skew['max_ns'] / 1000:.1f} us): host "
                        "and device clocks disagree; launch-gap splits near them are approximate")
    slow = [k for k in _SLOW_OPTIONS if options.get(k)]
    if slow:
        warnings.append(f"trace health: captured with {', '.join(slow)}, which slow the host "
                        "(host-wait gaps are inflated by profiler overhead)")
    health = {"excluded_events": int(len(positions)), "excluded": excluded,
              "clock_skew": skew, "profiler_overhead": slow,
              "checked_events": int(len(work))}
    return clean, health, warnings


_REASON = {"overlap": "it overlaps later work on its own stream",
           "longer_than_trace": "longer than every other event of the trace together"}


def _skew(work: pd.DataFrame) -> dict[str, Any]:
    if "launch_ns" not in work or not len(work):
        return {"events": 0, "max_ns": 0}
    lead = work["launch_ns"].to_numpy(dtype=np.int64) - work["start_ns"].to_numpy(dtype=np.int64)
    graph = work["graph_launch"].fillna(False).to_numpy(dtype=bool)
    hit = (lead > SKEW_TOLERANCE_NS) & ~graph
    return {"events": int(hit.sum()), "max_ns": int(lead[hit].max()) if hit.any() else 0}


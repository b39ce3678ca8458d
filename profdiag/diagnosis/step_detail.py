"""What the median step of each phase is made of: GPU work per kernel signature and idle by cause.

The median step of a phase is the middle step by wall time (the mean of the two middle steps
when the count is even), so its wall time *is* the phase's median step time. Its parts add up
exactly: ``wall_ns = busy_ns + idle_ns``; ``busy_ns`` is split over kernel signatures
(kernel name, launching op, input shapes) in proportion to their clipped kernel time, so that
overlap between streams is not counted twice; ``idle_ns`` is split over the gaps of the step
window by cause. ``compare`` and ``gate`` attribute a change of the median step to these parts
(``profdiag.attribution``), from a trace or from a stored JSON report alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import strcols

# Without an idle-cause table, a gap shorter than this between two kernels launched from the
# host is launch latency; a longer one is the host doing something else (a stall).
LAUNCH_GAP_MAX_NS = 20_000

CAUSE_LAUNCH = "launch gaps"
CAUSE_GRAPH = "GPU-side gaps inside graphs"
CAUSE_STALL = "host stalls (unattributed)"


def median_steps(wall_ns: np.ndarray) -> list[int]:
    """Positions of the middle step (odd count) or the two middle steps (even), by wall time."""
    n = len(wall_ns)
    if n == 0:
        return []
    order = np.argsort(wall_ns, kind="stable")
    return [int(order[n // 2])] if n % 2 else [int(order[n // 2 - 1]), int(order[n // 2])]


def _gaps(starts: np.ndarray, ends: np.ndarray, graph: np.ndarray, w0: int,
          w1: int) -> list[tuple[int, int, bool]]:
    """(start, end, between graph-replayed kernels) for each gap of the union inside [w0, w1]."""
    if w1 <= w0:
        return []
    s, e = np.clip(starts, w0, w1), np.clip(ends, w0, w1)
    keep = e > s
    s, e, g = s[keep], e[keep], graph[keep]
    if not len(s):
        return [(w0, w1, False)]
    order = np.argsort(s, kind="stable")
    s, e, g = s[order], e[order], g[order]
    reach = np.maximum.accumulate(e)
    out: list[tuple[int, int, bool]] = []
    if s[0] > w0:
        out.append((w0, int(s[0]), False))
    nxt = s[1:]
    prev_end = reach[:-1]
    for i in np.nonzero(nxt > prev_end)[0]:
        out.append((int(prev_end[i]), int(nxt[i]), bool(g[i] and g[i + 1])))
    if reach[-1] < w1:
        out.append((int(reach[-1]), w1, False))
    return out


CAUSE_GPU_WAIT = "GPU-side waits (dependent kernels, stream waits)"


@dataclass(frozen=True)
class _Coded:
    """A string column read a cell at a time: each row's code into its distinct values;
    a missing cell reads NaN (what the column's own cell gives)."""

    codes: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, col: pd.Series) -> _Coded:
        codes, values = strcols.codes_values(col)
        return cls(codes, np.append(values, np.array([np.nan], dtype=object)))

    def __getitem__(self, i: int) -> Any:
        return self.values[self.codes[i]]


@dataclass(frozen=True)
class _CauseRows:
    """The columns of a cause table (_cause_table) _cause_of reads, taken once: a row
    lookup (``iloc``) per gap of the median steps cost ~0.1 ms each."""

    start: np.ndarray
    end: np.ndarray
    dur: np.ndarray
    host: np.ndarray | None  # host_wait_ns, when the table has it
    cause: Any
    op: Any

    @classmethod
    def of(cls, t: pd.DataFrame) -> _CauseRows:
        return cls(t["start_ns"].to_numpy(), t["end_ns"].to_numpy(dtype=np.int64),
                   t["dur_ns"].to_numpy(), t["host_wait_ns"].to_numpy()
                   if "host_wait_ns" in t else None, _Coded.of(t["cause"]),
                   # the string columns as codes into their distinct values (read a cell at
                   # a time: an object array of a million gaps' names would hold a str per
                   # gap, and a cell of an Arrow column is slow to read)
                   _Coded.of(t["op"]) if "op" in t else None)

    def __len__(self) -> int:
        return len(self.start)


def _cause_of(gap: tuple[int, int, bool], causes: pd.DataFrame | _CauseRows | None,
              titles: dict[str, str]) -> list[tuple[str, float]]:
    """(cause, ns) parts of one gap of the step window.

    With the diagnosis' idle-gap table (diagnosis/idle.py: start_ns, dur_ns, host_wait_ns,
    kernel_wait_ns, cause, op), the gap takes the split and cause of the attributed gap at its
    midpoint: the host-wait part goes to the cause (its title, with the op when one is named),
    the kernel-wait part to GPU-side waits. Without one, it is named by its length.
    """
    start, end, in_graph = gap
    length = float(end - start)
    if causes is not None and len(causes):
        c = causes if isinstance(causes, _CauseRows) else _CauseRows.of(causes)
        mid = (start + end) // 2
        i = int(np.searchsorted(c.start, mid, side="right")) - 1
        if i >= 0 and int(c.end[i]) >= mid:
            dur = float(c.dur[i]) or 1.0
            host = length * min(max(float(c.host[i] if c.host is not None else dur) / dur,
                                    0.0), 1.0)
            cid = str(c.cause[i])
            name = titles.get(cid, cid.replace("_", " "))
            op = c.op[i] if c.op is not None else None
            if isinstance(op, str) and op and cid not in ("launch_gaps", "gpu_side"):
                name = f"{name}: {op}"
            parts = [(name, host)] if host > 0 else []
            if length - host > 0:
                parts.append((CAUSE_GPU_WAIT, length - host))
            return parts
    if in_graph:
        return [(CAUSE_GRAPH, length)]
    return [(CAUSE_LAUNCH if length < LAUNCH_GAP_MAX_NS else CAUSE_STALL, length)]


def _cause_table(idle_gaps: pd.DataFrame | None) -> pd.DataFrame | None:
    """The idle-gap table of the diagnosis sorted by start, with an end column."""
    if idle_gaps is None or not len(idle_gaps) or "cause" not in idle_gaps:
        return None
    t = idle_gaps[idle_gaps["cause"].notna()].sort_values("start_ns", kind="stable")
    return t.assign(end_ns=t["start_ns"] + t["dur_ns"]).reset_index(drop=True)


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ""


def step_detail(work: pd.DataFrame, steps: pd.DataFrame,
                idle_gaps: pd.DataFrame | None = None,
                cause_titles: dict[str, str] | None = None, *,
                step_of_row: np.ndarray) -> dict[str, Any]:
    """Per phase, the parts of its median step (see the module docstring).

    ``steps`` is the per-step table with the device windows ``_w0``/``_w1`` and ``phase``;
    ``work`` the classified device work, ``step_of_row`` the step index of each of its rows.
    """
    if steps is None or not len(steps) or "_w0" not in steps:
        return {}
    table = _cause_table(idle_gaps)
    causes = _CauseRows.of(table) if table is not None else None
    starts = work["start_ns"].to_numpy(dtype=np.int64)
    ends = starts + work["dur_ns"].to_numpy(dtype=np.int64)
    graph = work["graph_launch"].fillna(False).to_numpy(dtype=bool) \
        if "graph_launch" in work else np.zeros(len(work), dtype=bool)
    step_of = np.asarray(step_of_row)
    # per-step columns as arrays, looked up by the step table's row position
    pos = {label: p for p, label in enumerate(steps.index)}
    w0s, w1s = steps["_w0"].to_numpy(dtype=np.int64), steps["_w1"].to_numpy(dtype=np.int64)
    step_ids = steps["step"].to_numpy(dtype=np.int64)
    busy_ns = steps["gpu_busy_ns"].to_numpy(dtype=np.float64)
    keys = _key_codes(work)
    out: dict[str, Any] = {}
    for phase, rows in steps.groupby("phase", sort=True):
        picks = [rows.index[i] for i in median_steps(rows["wall_ns"].to_numpy())]
        parts: dict[tuple[str, str, str], dict[str, Any]] = {}
        idle: dict[str, float] = {}
        wall = busy = 0.0
        for i in picks:
            p = pos[i]
            w0, w1 = int(w0s[p]), int(w1s[p])
            mask = np.nonzero(step_of == step_ids[p])[0]
            clipped = np.clip(ends[mask], w0, w1) - np.clip(starts[mask], w0, w1)
            step_busy = float(busy_ns[p])
            total = float(clipped.sum())
            scale = step_busy / total if total > 0 else 0.0
            for (kernel, op, dims, cls, cat), ns, calls in _signatures(keys, mask,
                                                                       clipped * scale):
                row = parts.setdefault((kernel, op, dims), {
                    "kernel": kernel, "op": op, "shapes": dims, "class": cls,
                    "category": cat, "calls": 0.0, "ns": 0.0})
                row["calls"] += calls
                row["ns"] += ns
            for g in _gaps(starts[mask], ends[mask], graph[mask], w0, w1):
                for cause, ns in _cause_of(g, causes, cause_titles or {}):
                    idle[cause] = idle.get(cause, 0.0) + ns
            wall += w1 - w0
            busy += step_busy
        k = len(picks)
        kernels = sorted(({**r, "calls": round(r["calls"] / k, 3), "ns": round(r["ns"] / k, 1)}
                          for r in parts.values()), key=lambda r: (-r["ns"], r["kernel"]))
        out[str(phase)] = {
            "steps": [int(step_ids[pos[i]]) for i in picks],
            "wall_ns": round(wall / k, 1), "busy_ns": round(busy / k, 1),
            "idle_ns": round((wall - busy) / k, 1),
            "idle": {c: round(v / k, 1) for c, v in sorted(idle.items(), key=lambda x: -x[1])},
            "kernels": kernels,
        }
    return out


# The signature of a kernel row: (kernel, op, shapes, class, category); a row with no
# kernel name, class or category has none (a groupby leaves its NA key out).
_KEY_COLUMNS = (("name", None), ("op_name", ""), ("input_dims", ""), ("class", None),
                ("category", None))


def _key_codes(work: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per signature column: each row's code into the column's distinct texts (equal texts
    one code, -1: no text) and those texts, from the column's codes (once per value)."""
    out = []
    for col, missing in _KEY_COLUMNS:
        if col not in work:
            out.append((np.zeros(len(work), dtype=np.int64), np.array([""], dtype=object)))
            continue
        codes, values = strcols.codes_values(work[col])
        texts = [(_text(v) if missing == "" else str(v)) for v in values.tolist()] + [missing]
        tcodes, tvalues = pd.factorize(np.array(texts, dtype=object), use_na_sentinel=True)
        out.append((np.asarray(tcodes)[codes], np.asarray(tvalues, dtype=object)))
    return out


def _signatures(keys: list[tuple[np.ndarray, np.ndarray]], rows: np.ndarray, ns: np.ndarray
                ) -> list[tuple[tuple[str, ...], float, int]]:
    """((kernel, op, shapes, class, category), ns, calls) per signature of the work ``rows``,
    in order of first appearance."""
    if not len(rows):
        return []
    codes = [c[rows] for c, _ in keys]
    keep = np.logical_and.reduce([c >= 0 for c in codes])
    frame = pd.DataFrame({**{str(i): c[keep] for i, c in enumerate(codes)}, "ns": ns[keep]})
    g = frame.groupby([str(i) for i in range(len(codes))], sort=False)["ns"].agg(["sum", "size"])
    texts = [t for _, t in keys]
    return [(tuple(str(t[c]) for t, c in zip(texts, key)), float(r["sum"]), int(r["size"]))
            for key, r in g.iterrows()]

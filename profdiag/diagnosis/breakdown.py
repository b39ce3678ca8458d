"""Step 2: time per category and class over the union of busy intervals, and idle time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import strcols
from .context import union_ns
from .model import Breakdown


def window_of(work: pd.DataFrame, steps: pd.DataFrame) -> tuple[int, int]:
    """Analysed window: the steps' host ranges stretched to their GPU work, else the work span."""
    w_start = int(work["start_ns"].min()) if len(work) else 0
    w_end = int((work["start_ns"] + work["dur_ns"]).max()) if len(work) else 0
    if len(steps):
        return min(int(steps["start_ns"].min()), w_start), max(int(steps["end_ns"].max()), w_end)
    return w_start, w_end


def breakdown(work: pd.DataFrame, window: tuple[int, int]) -> Breakdown:
    """Apportion busy time to categories/classes; overlap across streams is not double-counted."""
    w0, w1 = window
    starts = np.clip(work["start_ns"].to_numpy(dtype=np.int64), w0, w1)
    ends = np.clip((work["start_ns"] + work["dur_ns"]).to_numpy(dtype=np.int64), w0, w1)
    clipped = ends - starts
    busy = union_ns(starts, ends)
    total = int(clipped.sum())
    # When streams overlap, each event's share of the busy union is proportional to its time.
    scale = busy / total if total else 0.0
    # summed per category / class code (the compact columns' codes), keyed by the names
    cat = (strcols.sum_by_value(work["category"], clipped) * scale).round().astype("int64")
    cls = (strcols.sum_by_value(work["class"], clipped) * scale).round().astype("int64")
    pairs = strcols.first_pairs(work["class"], work["category"])
    window_ns = max(w1 - w0, busy)
    return Breakdown(window_ns=int(window_ns), busy_ns=busy, idle_ns=int(window_ns - busy),
                     category_ns={str(k): int(v) for k, v in cat.items()},
                     class_ns={str(k): int(v) for k, v in cls.items()}, kernel_sum_ns=total,
                     class_category={str(k): str(v) for k, v in pairs.items()})

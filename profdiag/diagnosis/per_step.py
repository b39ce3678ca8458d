"""Per-step evidence, modes and phase breakdowns in a few grouped passes (issue 18).

The diagnosis used to slice the work table once per step (``detect`` and ``breakdown`` on
``work.iloc[rows]``), which cost tens of milliseconds of pandas overhead per step: 8,000
ProfilerStep annotations took close to a minute. These functions compute the same numbers
with one groupby over the step column; the results are identical to the per-step calls
(``mode.detect`` / ``breakdown.breakdown`` summed per phase), which stay the reference
(tests/test_per_step.py compares them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import strcols
from ..classify import GEMM_CLASSES
from ..thresholds import Thresholds
from .mode import ShapeEvidence, annotate, decide
from .model import Breakdown, ModeResult


def _sum_by_step(step: np.ndarray, values: np.ndarray, nsteps: int) -> np.ndarray:
    """int64 sum of ``values`` per step 0..nsteps-1 (rows of step -1 or beyond are ignored)."""
    ok = (step >= 0) & (step < nsteps)
    out = np.zeros(nsteps, dtype=np.int64)
    np.add.at(out, step[ok], values[ok].astype(np.int64))
    return out


def detect_steps(work: pd.DataFrame, step_of_row: np.ndarray, step_names: list[Any],
                 prefill_min_m: int, prefill_gemm_share: float,
                 limits: Thresholds | None = None) -> list[ModeResult]:
    """``mode.detect(work rows of step i, [name of step i], ..., limits)`` for every step i."""
    n = len(step_names)
    if "_m" not in work.columns:
        work = annotate(work)
    step = np.asarray(step_of_row, dtype=np.int64)
    dur = work["dur_ns"].to_numpy(dtype=np.int64)
    gemm_t = _sum_by_step(step, np.where(strcols.isin(work["class"], GEMM_CLASSES), dur, 0), n)
    gemv_t = _sum_by_step(step, np.where(strcols.isin(work["class"], ("gemv",)), dur, 0), n)
    total_t = _sum_by_step(step, dur, n)
    dec_t = _sum_by_step(step, np.where(work["_decode_name"].to_numpy(dtype=bool), dur, 0), n)
    pre_t = _sum_by_step(step, np.where(work["_prefill_name"].to_numpy(dtype=bool), dur, 0), n)
    splitkv = _sum_by_step(step, work["_splitkv"].to_numpy(dtype=bool).astype(np.int64), n) > 0
    # shape evidence: one entry per op call (external_id, op, dims) within each step
    has = (work["_m"].notna() | work["_tq"].notna()).to_numpy() & (step >= 0) & (step < n)
    sub = work.loc[has, ["external_id", "op_name", "input_dims", "_m", "_tq"]].copy()
    sub["_step"] = step[has]
    sub = sub.drop_duplicates(["_step", "external_id", "op_name", "input_dims"])
    g = sub.groupby("_step")
    med_m = {int(k): v for k, v in g["_m"].median().items() if v == v}
    cnt_m = {int(k): int(v) for k, v in g["_m"].count().items()}
    med_tq = {int(k): v for k, v in g["_tq"].median().items() if v == v}
    out: list[ModeResult] = []
    for i in range(n):
        m, tq = med_m.get(i), med_tq.get(i)
        shapes = ShapeEvidence(median_m=int(m) if m is not None else None,
                               gemm_calls_with_shapes=cnt_m.get(i, 0),
                               attention_tq=int(tq) if tq is not None else None)
        out.append(decide(shapes, [step_names[i]], gemm_t[i], gemv_t[i], total_t[i],
                          bool(splitkv[i]), dec_t[i], pre_t[i], prefill_min_m,
                          prefill_gemm_share, limits))
    return out


def phase_breakdown(work: pd.DataFrame, rows_of: dict[int, np.ndarray], idx: list[int],
                    w0: np.ndarray, w1: np.ndarray, busy: np.ndarray) -> Breakdown:
    """The per-step ``breakdown(work rows of step i, (w0[i], w1[i]))`` of steps ``idx``
    (ascending), summed key by key in step order; ``busy[i]``: step i's busy union, which
    the steps table computed over the same clipped intervals."""
    empty = np.array([], dtype=np.int64)
    parts = [rows_of.get(i, empty) for i in idx]
    rows = np.concatenate(parts) if parts else empty
    ia = np.asarray(idx, dtype=np.int64)
    pos = np.repeat(np.arange(len(ia)), [len(p) for p in parts])  # row -> position in idx
    sw0, sw1, sbusy = w0[ia].astype(np.int64), w1[ia].astype(np.int64), busy[ia].astype(np.int64)
    window_ns = int(np.maximum(sw1 - sw0, sbusy).sum())
    busy_ns = int(sbusy.sum())
    if not len(rows):
        return Breakdown(window_ns=window_ns, busy_ns=busy_ns, idle_ns=window_ns - busy_ns,
                         category_ns={}, class_ns={}, kernel_sum_ns=0, class_category={})
    st = work["start_ns"].to_numpy(dtype=np.int64)[rows]
    en = st + work["dur_ns"].to_numpy(dtype=np.int64)[rows]
    lo, hi = sw0[pos], sw1[pos]
    t = np.clip(en, lo, hi) - np.clip(st, lo, hi)
    total = np.zeros(len(ia), dtype=np.int64)
    np.add.at(total, pos, t)
    scale = np.where(total > 0, sbusy / np.where(total > 0, total, 1), 0.0)
    # by category / class code (the compact columns' codes; -1: missing), named at the end
    cat_codes, cat_values = strcols.codes_values(work["category"])
    cls_codes, cls_values = strcols.codes_values(work["class"])
    cat_of, cls_of = cat_codes[rows], cls_codes[rows]

    def per_key(codes: np.ndarray, values: np.ndarray) -> dict[str, int]:
        keep = codes >= 0  # a missing key is left out, as groupby leaves NA out
        if np.issubdtype(t.dtype, np.integer) and keep.any():
            # the (step, key) sums of groupby([pos, codes]).sum(), in its (sorted) order, from
            # one sort of a combined key (integer sums: exact in any order)
            width = len(values) + 1
            key = pos[keep].astype(np.int64) * width + codes[keep].astype(np.int64)
            srt = np.argsort(key, kind="stable")
            ks = key[srt]
            at = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
            sums = np.add.reduceat(t[keep][srt], at)
            p, kk = ks[at] // width, ks[at] % width
            v = np.round(sums * scale[p]).astype("int64")
            tot_of = np.zeros(width, dtype=np.int64)
            np.add.at(tot_of, kk, v)
            first_of = np.full(width, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first_of, kk, p)
            present = np.unique(kk).tolist()
            ordered = sorted(present, key=lambda k: (int(first_of[k]), str(values[k])))
            return {str(values[k]): int(tot_of[k]) for k in ordered}
        s = pd.Series(t[keep]).groupby([pos[keep], codes[keep]]).sum()
        p = s.index.get_level_values(0).to_numpy()
        v = np.round(s.to_numpy() * scale[p]).astype("int64")
        part = pd.DataFrame({"pos": p, "key": s.index.get_level_values(1).to_numpy(), "v": v})
        tot = part.groupby("key", sort=False)["v"].sum()
        first = part.groupby("key", sort=False)["pos"].min()
        # a key's place: the first step holding it, then sorted within that step (as the
        # per-step groupbys, merged in step order, gave)
        order = sorted(tot.index, key=lambda k: (int(first[k]), str(values[k])))
        return {str(values[k]): int(tot[k]) for k in order}

    # each class's category: that of its first row in the last step holding it
    # (drop_duplicates of (step, class), then the class's last entry; missing reads "nan")
    cls_text = [str(v) for v in cls_values.tolist()] + ["nan"]
    cat_text = [str(v) for v in cat_values.tolist()] + ["nan"]
    pair = pos.astype(np.int64) * (len(cls_values) + 1) + (cls_of.astype(np.int64) + 1)
    _, firsts = np.unique(pair, return_index=True)
    firsts.sort()
    class_category: dict[str, str] = {}
    for i in firsts.tolist():
        class_category[cls_text[cls_of[i]]] = cat_text[cat_of[i]]
    keys = list(dict.fromkeys(cls_text[c] for c in cls_of[firsts].tolist()))
    return Breakdown(window_ns=window_ns, busy_ns=busy_ns, idle_ns=window_ns - busy_ns,
                     category_ns=per_key(cat_of, cat_values),
                     class_ns=per_key(cls_of, cls_values),
                     kernel_sum_ns=int(total.sum()),
                     class_category={k: class_category[k] for k in keys})

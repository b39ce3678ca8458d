"""Step 1: prefill or decode, from shapes, annotations, kernel names, then the distribution."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .. import strcols
from ..classify import GEMM_CLASSES
from ..gemm import TOKEN_GEMM_OPS, gemm_rows
from ..thresholds import Thresholds, load
from .context import DECODE_HINT, PREFILL_HINT
from .model import ModeResult

_ATTN_PREFIX = ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::_cudnn_attention",
                "aten::_flash_attention", "aten::_efficient_attention")


def gemm_m(op: str, dims_json: str) -> int | None:
    """Rows M (= batch x tokens) of a token GEMM op from its Input Dims, or None
    (the one GEMM-shape parser: profdiag/gemm.py)."""
    try:
        dims = orjson.loads(dims_json)
    except orjson.JSONDecodeError:
        return None
    return gemm_rows(op, dims) if isinstance(dims, list) else None


def attention_q_len(dims_json: str) -> int | None:
    """Query length Tq of an SDPA op ([B, H, Tq, d] first input), or None."""
    try:
        dims = orjson.loads(dims_json)
    except orjson.JSONDecodeError:
        return None
    if isinstance(dims, list) and dims and isinstance(dims[0], list) and len(dims[0]) == 4:
        tq = dims[0][2]
        return tq if isinstance(tq, int) else None
    return None


@dataclass
class ShapeEvidence:
    median_m: int | None
    gemm_calls_with_shapes: int
    attention_tq: int | None


_SPLITKV = re.compile(r"splitkv|flash_decoding|paged_attention", re.IGNORECASE)
_DECODE_NAME = re.compile("decode", re.IGNORECASE)
_PREFILL_NAME = re.compile("prefill|context_attention", re.IGNORECASE)
# Per-row evidence columns added once by annotate(); detect() reads them for every step.
EVIDENCE_COLUMNS = ("_m", "_tq", "_splitkv", "_decode_name", "_prefill_name")
# The columns shape_evidence() reads.
SHAPE_COLUMNS = ("external_id", "op_name", "input_dims", "_m", "_tq")


def _name_flags(names: pd.Series) -> np.ndarray:
    """(split-KV, decode-named, prefill-named) per row, as a (rows, 3) bool array: the three
    regexes run once per distinct name (a compact column's categories)."""
    codes, uniques = strcols.codes_values(names)
    table = np.array([(bool(_SPLITKV.search(n)), bool(_DECODE_NAME.search(n)),
                       bool(_PREFILL_NAME.search(n))) if isinstance(n, str) and n
                      else (False, False, False) for n in uniques] + [(False, False, False)],
                     dtype=bool).reshape(-1, 3)
    return table[codes]  # code -1 (NA) picks the trailing row


def annotate(work: pd.DataFrame) -> pd.DataFrame:
    """Add the evidence columns (GEMM M, attention Tq, phase-named kernels) to ``work``.

    Work is per distinct name and per distinct (op, dims), so a million launches of forty
    kernels cost forty regex searches, not a million.
    """
    out = work.copy(deep=False)  # only columns are added: no copy of the table
    flags = _name_flags(out["name"])
    out["_splitkv"] = flags[:, 0]
    out["_decode_name"] = flags[:, 1]
    out["_prefill_name"] = flags[:, 2]
    # distinct (op, dims) from each column's codes: no object copy of either column
    # (a Python str per row)
    op_codes, op_uniques = strcols.codes_values(out["op_name"])
    dim_codes, dim_uniques = strcols.codes_values(out["input_dims"])
    has_dims = (op_codes >= 0) & (dim_codes >= 0)
    n_dims = max(len(dim_uniques), 1)
    pair = np.where(has_dims, op_codes.astype(np.int64) * n_dims + dim_codes, -1)
    keys, codes = np.unique(pair, return_inverse=True)
    uniques = [("", "") if k < 0 else (op_uniques[k // n_dims], dim_uniques[k % n_dims])
               for k in keys.tolist()]

    def shape_of(op: str, dims_json: str) -> tuple[float, float]:
        if not op:
            return (np.nan, np.nan)
        m = gemm_m(op, dims_json) if op in TOKEN_GEMM_OPS else None
        tq = attention_q_len(dims_json) if op.startswith(_ATTN_PREFIX) else None
        return (float(m) if m else np.nan, float(tq) if tq else np.nan)

    table = np.array([shape_of(o, d) for o, d in uniques], dtype="float64").reshape(-1, 2)
    out["_m"] = table[codes, 0]
    out["_tq"] = table[codes, 1]
    return out


def shape_evidence(work: pd.DataFrame) -> ShapeEvidence:
    """Median GEMM M and median attention query length from ops' Input Dims."""
    if "_m" not in work.columns:
        work = annotate(work)
    has = work["_m"].notna() | work["_tq"].notna()
    # one entry per op call, not per kernel (split-K launches two kernels)
    sub = work.loc[has, list(SHAPE_COLUMNS)].drop_duplicates(
        ["external_id", "op_name", "input_dims"])
    ms = sub["_m"].dropna()
    tqs = sub["_tq"].dropna()
    return ShapeEvidence(
        median_m=int(ms.median()) if len(ms) else None,
        gemm_calls_with_shapes=int(len(ms)),
        attention_tq=int(tqs.median()) if len(tqs) else None,
    )


def detect(work: pd.DataFrame, annotation_names: list[str], prefill_min_m: int,
           prefill_gemm_share: float, limits: Thresholds | None = None) -> ModeResult:
    """Mode of one stretch of work (a step or a phase), strongest evidence first.

    The vote weights and the Tq / GEMV limits come from ``limits`` (thresholds [mode] and
    [mode_votes]; the shipped ones when None)."""
    if "_m" not in work.columns:
        work = annotate(work)
    gemm_t = work.loc[strcols.isin(work["class"], GEMM_CLASSES), "dur_ns"].sum()
    gemv_t = work.loc[strcols.isin(work["class"], ("gemv",)), "dur_ns"].sum()
    total_t = work["dur_ns"].sum()
    dec_t = work.loc[work["_decode_name"], "dur_ns"].sum()
    pre_t = work.loc[work["_prefill_name"], "dur_ns"].sum()
    return decide(shape_evidence(work), annotation_names, gemm_t, gemv_t, total_t,
                  bool(work["_splitkv"].any()), dec_t, pre_t, prefill_min_m, prefill_gemm_share,
                  limits)


def decide(shapes: ShapeEvidence, annotation_names: list[str], gemm_t: Any, gemv_t: Any,
           total_t: Any, splitkv: bool, dec_t: Any, pre_t: Any, prefill_min_m: int,
           prefill_gemm_share: float, limits: Thresholds | None = None) -> ModeResult:
    """The vote of detect() over one stretch's evidence (shapes, times per kernel kind)."""
    t = limits if limits is not None else load()
    w, mc = t.mode_votes, t.mode
    votes: list[tuple[str, float, str]] = []  # (mode, confidence, evidence)
    total_t = total_t or 1
    tq, m = shapes.attention_tq, shapes.median_m
    if tq is not None:
        mode = "decode" if tq <= mc.decode_max_q_len else "prefill"
        text = (f"attention query length Tq = {tq} "
                f"({'one token per sequence: decode' if mode == 'decode' else 'many tokens: prefill'})")
        if m is not None and m % tq == 0:
            # M = batch x Tq: the GEMM rows agree with the attention shape, and give the batch
            text += f"; median GEMM M = {m} = batch {m // tq} x {tq} tokens"
            m = None
        votes.append((mode, w.attention_q_len, text))
    if m is not None:
        mode = "prefill" if m >= prefill_min_m else "decode"
        votes.append((mode, w.gemm_m, f"median GEMM M = {m} over "
                      f"{shapes.gemm_calls_with_shapes} GEMM calls "
                      f"({'>=' if mode == 'prefill' else '<'} {prefill_min_m}: {mode})"))
    pre = [n for n in annotation_names if PREFILL_HINT.search(n)]
    dec = [n for n in annotation_names if DECODE_HINT.search(n)]
    if pre and not dec:
        votes.append(("prefill", w.annotation, f"annotation {pre[0]!r}"))
    elif dec and not pre:
        votes.append(("decode", w.annotation, f"annotation {dec[0]!r}" + (
            f" and {len(dec) - 1} more" if len(dec) > 1 else "")))
    if gemm_t:
        gemv_frac = gemv_t / gemm_t
        if gemv_frac >= mc.gemv_decode_share:
            votes.append(("decode", w.gemv_share, f"{gemv_frac:.0%} of GEMM time is in skinny GEMV "
                          "kernels (M <= 8 tiles)"))
        elif gemv_frac <= mc.gemv_prefill_share:
            votes.append(("prefill", w.full_tiles, f"only {gemv_frac:.0%} of GEMM time is in GEMV "
                          "kernels: full tiles"))
    if splitkv:
        votes.append(("decode", w.split_kv, "decode attention kernels (split-KV / paged attention)"))
    # Kernels named for a phase (hand-written or framework kernels): the one with more time.
    if dec_t or pre_t:
        named = "decode" if dec_t >= pre_t else "prefill"
        both = " (kernels of both phases present)" if dec_t and pre_t else ""
        votes.append((named, w.kernel_names_both if both else w.kernel_names,
                      f"{named} appears in the names of the kernels holding most phase-named "
                      f"time ({max(dec_t, pre_t) / 1e6:.3f} ms){both}"))
    share = gemm_t / total_t
    votes.append(("prefill" if share > prefill_gemm_share else "decode", w.gemm_time_share,
                  f"GEMM/GEMV is {share:.0%} of kernel time "
                  f"({'>' if share > prefill_gemm_share else '<='} {prefill_gemm_share:.0%})"))
    best = max(votes, key=lambda v: v[1])
    agree = [v for v in votes if v[0] == best[0]]
    disagree = [v for v in votes if v[0] != best[0]]
    conf = best[1]
    strong_disagree = [v for v in disagree if v[1] >= 0.8]
    if strong_disagree:
        conf = max(0.5, conf - 0.3)
    elif len(agree) > 1:
        conf = min(0.99, conf + 0.03 * (len(agree) - 1))
    evidence = [v[2] for v in agree] + [f"(disagrees: {v[2]})" for v in disagree]
    return ModeResult(best[0], conf, evidence)

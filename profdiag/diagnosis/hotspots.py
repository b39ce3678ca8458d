"""Step 5: the top kernels, and whether each is costly per call or called too often."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import strcols
from ..thresholds import Hotspots, load

HOTSPOT_COLUMNS = ["name", "short_name", "class", "category", "calls", "total_ns", "mean_ns",
                   "share", "calls_per_forward", "note", "_note_kind"]
# _note_kind (not serialised, not exported): which note fired -- "often", "costly", "short"
# or "plain" -- so advice picks kernels by kind, not by searching the note's words.
LAUNCH_BOUND_KINDS = ("often", "short")


def hotspots(work: pd.DataFrame, busy_ns: int, forwards: int | None, layers: int | None,
             top: int, phase_forwards: dict[str, int] | None = None,
             step_phase: dict[int, str] | None = None,
             notes: Hotspots | None = None,
             step_of_row: np.ndarray | None = None) -> pd.DataFrame:
    """Top kernels by total time: calls, total, mean, share of busy time and a verdict note.

    With ``phase_forwards`` (forwards per phase), ``step_phase`` (each step's phase) and
    ``step_of_row`` (the step index of each row of ``work``), a
    kernel's calls per forward are counted per phase (a prefill GEMM kernel divided by the
    decode steps too would give fractions such as 0.125); the phase that runs it most wins.
    """
    if work.empty:
        return pd.DataFrame(columns=HOTSPOT_COLUMNS)
    per_name = _per_name(work)
    if per_name is None:
        g = work.groupby("name", sort=False, observed=True).agg(
            short_name=("short_name", "first"), **{"class": ("class", "first")},
            category=("category", "first"), calls=("dur_ns", "size"), total_ns=("dur_ns", "sum"))
    else:
        g = per_name
    g = g.sort_values("total_ns", ascending=False).head(top).reset_index(
        drop=per_name is not None)
    for col in ("name", "short_name", "class", "category"):  # Categoricals: the report's text
        g[col] = strcols.to_text(g[col])
    g["mean_ns"] = (g["total_ns"] / g["calls"]).round().astype("int64")
    g["share"] = g["total_ns"] / (busy_ns or 1)
    g["calls_per_forward"] = g["calls"] / forwards if forwards else float("nan")
    if phase_forwards and step_phase and len(phase_forwards) > 1 and step_of_row is not None:
        # calls per (name, phase), counted on the name codes and phase indices
        codes, values = strcols.codes_values(work["name"])
        phase_names = sorted(set(step_phase.values()))
        phase_at = np.full(max(max(step_phase) + 1, 0), -1, dtype=np.int64)
        for i, p in step_phase.items():
            if i >= 0:
                phase_at[i] = phase_names.index(p)
        known = (step_of_row >= 0) & (step_of_row < len(phase_at))
        ph = np.where(known, phase_at[np.where(known, step_of_row, 0)], -1)
        keep = (codes >= 0) & (ph >= 0)
        pairs, calls = np.unique(codes[keep].astype(np.int64) * len(phase_names) + ph[keep],
                                 return_counts=True)
        fwd = pd.Series([phase_forwards.get(p) for p in phase_names], dtype="float64")
        per = calls / fwd.where(fwd > 0).to_numpy()[pairs % len(phase_names)]
        # a kernel of both phases: its count per forward in the phase that runs it most
        per_name = pd.Series(per).groupby(values[pairs // len(phase_names)]).max()
        g["calls_per_forward"] = g["name"].astype(object).map(per_name).astype("float64")
    cfg = notes if notes is not None else load().hotspots
    notes_kinds = [_note(r, layers, cfg) for r in g.to_dict("records")]
    g["note"] = [n for n, _ in notes_kinds]
    g["_note_kind"] = [k for _, k in notes_kinds]
    return g[HOTSPOT_COLUMNS]


def _per_name(work: pd.DataFrame) -> pd.DataFrame | None:
    """``groupby("name", sort=False, observed=True)``'s per-kernel rows (names in order of
    first appearance; the first short name, class and category that is not missing; calls;
    total time) from the columns' codes, as a frame with the same rows in the same order and
    its text columns already the report's ``string``; None when a column it reads is not
    there or no row has a name (the groupby then)."""
    cols = ("name", "short_name", "class", "category", "dur_ns")
    if not all(c in work.columns for c in cols):
        return None
    codes, values = strcols.codes_values(work["name"])
    named = np.flatnonzero(codes >= 0)  # (a groupby leaves a missing name out)
    if not len(named):
        return None
    n = len(named)
    first = np.full(len(values), n, dtype=np.int64)  # each name's first row (n: none)
    np.minimum.at(first, codes[named], np.arange(n))
    present = np.flatnonzero(first < n)
    groups = present[np.argsort(first[present], kind="stable")]  # in order of appearance
    slot = np.full(len(values), -1, dtype=np.int64)
    slot[groups] = np.arange(len(groups))
    at = slot[codes[named]]  # each named row's group
    calls = np.bincount(at, minlength=len(groups)).astype(np.int64)
    total = np.zeros(len(groups), dtype=np.int64)
    np.add.at(total, at, work["dur_ns"].to_numpy(dtype=np.int64)[named])
    out: dict[str, Any] = {"name": pd.array(values[groups].tolist(), dtype="string")}
    for col in ("short_name", "class", "category"):
        c_codes, c_values = strcols.codes_values(work[col])
        c_of = c_codes[named]
        has = np.flatnonzero(c_of >= 0)
        row = np.full(len(groups), n, dtype=np.int64)  # each group's first row holding one
        np.minimum.at(row, at[has], has)
        firsts = np.where(row < n, c_of[np.minimum(row, n - 1)], -1)
        texts = np.append(np.asarray(c_values, dtype=object), np.array([None], dtype=object))
        out[col] = pd.array(texts[firsts].tolist(), dtype="string")
    out["calls"] = calls
    out["total_ns"] = total
    return pd.DataFrame(out)


def _note(row: dict[str, Any], layers: int | None, cfg: Hotspots) -> tuple[str, str]:
    """The hotspot note; limits from thresholds [hotspots] (see rules/thresholds.toml)."""
    cpf = row["calls_per_forward"]
    mean_us = row["mean_ns"] / 1000
    if (cpf == cpf and layers and cpf > cfg.often_calls_per_layer * layers
            and mean_us < cfg.often_max_us):
        return (f"called often: {cpf:g} calls per forward ({cpf / layers:.1f} per layer) at "
                f"{mean_us:.1f} us each; fusion or graphs cut launches", "often")
    if mean_us >= cfg.costly_min_us:
        return f"inherently costly: {mean_us:.0f} us per call", "costly"
    if mean_us < cfg.short_max_us:
        return f"short kernel ({mean_us:.1f} us): launch cost matters", "short"
    return f"{mean_us:.1f} us per call", "plain"

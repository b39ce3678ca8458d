"""Step 5: the top kernels, and whether each is costly per call or called too often."""

from __future__ import annotations

import pandas as pd

HOTSPOT_COLUMNS = ["name", "short_name", "class", "category", "calls", "total_ns", "mean_ns",
                   "share", "calls_per_forward", "note"]


def hotspots(work: pd.DataFrame, busy_ns: int, forwards: int | None, layers: int | None,
             top: int) -> pd.DataFrame:
    """Top kernels by total time: calls, total, mean, share of busy time and a verdict note."""
    if work.empty:
        return pd.DataFrame(columns=HOTSPOT_COLUMNS)
    g = work.groupby("name", sort=False, observed=True).agg(
        short_name=("short_name", "first"), **{"class": ("class", "first")},
        category=("category", "first"), calls=("dur_ns", "size"), total_ns=("dur_ns", "sum"))
    g = g.sort_values("total_ns", ascending=False).head(top).reset_index()
    g["mean_ns"] = (g["total_ns"] / g["calls"]).round().astype("int64")
    g["share"] = g["total_ns"] / (busy_ns or 1)
    g["calls_per_forward"] = g["calls"] / forwards if forwards else float("nan")
    g["note"] = [_note(r, layers) for r in g.to_dict("records")]
    return g[HOTSPOT_COLUMNS]


def _note(row: dict, layers: int | None) -> str:
    cpf = row["calls_per_forward"]
    mean_us = row["mean_ns"] / 1000
    if cpf == cpf and layers and cpf > 2 * layers and mean_us < 10:
        return (f"called often: {cpf:g} calls per forward ({cpf / layers:.1f} per layer) at "
                f"{mean_us:.1f} us each; fusion or graphs cut launches")
    if mean_us >= 50:
        return f"inherently costly: {mean_us:.0f} us per call"
    if mean_us < 5:
        return f"short kernel ({mean_us:.1f} us): launch cost matters"
    return f"{mean_us:.1f} us per call"

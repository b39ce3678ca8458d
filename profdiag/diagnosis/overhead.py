"""Step 3: the overhead share against the thresholds, with the host-side evidence."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from .. import strcols
from ..thresholds import from_mapping
from .context import ALLOC_RE, LAUNCH_RE, SYNC_RE
from .model import FAIL, PASS, WARN, Check


def host_evidence(host: pd.DataFrame, work: pd.DataFrame, window: tuple[int, int],
                  steps: int, short_kernel_ns: int) -> dict[str, Any]:
    """Counts and time of launch, sync and allocation calls inside the window.

    ``short_kernel_ns``: thresholds ``overhead.short_kernel_us`` (the shipped 10 us)."""
    w0, w1 = window
    # masks over the host rows, not copies of them (millions of runtime calls)
    start = host["start_ns"].to_numpy(dtype=np.int64)
    inside = (start >= w0) & (start < w1)
    dur = host["dur_ns"].to_numpy(dtype=np.int64)

    # A few hundred distinct API names at most: match each once (the compact column's
    # categories), then map to the rows by code.
    def matches(pattern: re.Pattern[str] | str) -> np.ndarray:
        return strcols.search(host["name"], pattern) & inside

    is_sync = matches(SYNC_RE) | ((host["kind"] == "sync").to_numpy(dtype=bool) & inside)
    is_alloc = matches(ALLOC_RE)
    is_launch = matches(LAUNCH_RE)
    n_launch = int(is_launch.sum())
    short = int((work["dur_ns"] < short_kernel_ns).sum())
    return {
        "launch_calls": n_launch,
        "launch_calls_per_step": round(n_launch / steps, 1) if steps else None,
        "launch_api_mean_ns": int(pd.Series(dur[is_launch]).mean()) if n_launch else None,
        "graph_launches": int(matches("GraphLaunch").sum()),
        "sync_calls": int(is_sync.sum()),
        "sync_ns": int(dur[is_sync].sum()),
        "alloc_calls": int(is_alloc.sum()),
        "alloc_ns": int(dur[is_alloc].sum()),
        "kernels": len(work),
        "kernels_per_step": round(len(work) / steps, 1) if steps else None,
        "mean_kernel_ns": int(work["dur_ns"].mean()) if len(work) else None,
        "short_kernel_share": round(short / len(work), 4) if len(work) else 0.0,
        "short_kernel_ns": int(short_kernel_ns),  # the limit the share counts under
        "graph_replayed_share": round(float(work["graph_launch"].fillna(False).mean()), 4)
        if len(work) else 0.0,
    }


def limit_for(mode: str, limits: dict[str, Any]) -> float:
    return from_mapping(limits).overhead.limit(mode)


def check(share: float, mode: str, limits: dict[str, Any], evidence: dict[str, Any],
          options: dict[str, Any], phase: str = "", split: dict[str, Any] | None = None) -> Check:
    """overhead check: pass under the mode's limit, warn above it, fail past pathological."""
    limit = limit_for(mode, limits)
    patho = float(limits["overhead"]["pathological"])
    status = PASS if share <= limit else (FAIL if share > patho else WARN)
    where = f" in {phase}" if phase else ""
    summary = (f"GPU idle{_kind_of_idle(split)} is {share:.1%} of the window{where}; limit for "
               f"{mode} is {limit:.0%}" + (f", pathological above {patho:.0%}" if status != PASS
                                           else ""))
    profiled = [k for k in ("record_shapes", "with_stack") if options.get(k)]
    if status != PASS and profiled:
        summary += f" (captured with {' and '.join(profiled)}: profiling may inflate host gaps)"
    cid = f"overhead.{phase}" if phase else "overhead"
    if split:
        evidence = {**evidence, "host_wait_ns": int(split.get("host_wait_ns", 0)),
                    "kernel_wait_ns": int(split.get("kernel_wait_ns", 0))}
    return Check(cid, status, summary, {"overhead_share": round(share, 6), "limit": limit,
                                        "pathological": patho, **evidence})


def _kind_of_idle(split: dict[str, Any] | None) -> str:
    """' (host overhead)' or ' (GPU-side gaps, not host overhead)' from the idle split."""
    if not split:
        return " (host overhead)"
    host, gpu = int(split.get("host_wait_ns", 0)), int(split.get("kernel_wait_ns", 0))
    if host + gpu == 0:
        return ""
    if gpu > host:
        return f" ({gpu / (host + gpu):.0%} GPU-side gaps between queued kernels, not host overhead)"
    return f" ({host / (host + gpu):.0%} host wait)"

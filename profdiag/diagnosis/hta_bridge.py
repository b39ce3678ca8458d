"""Figures Holistic Trace Analysis already computes, for torch traces (optional extra)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from typing import Any

from ..errors import MissingDependencyError
from ..trace import Trace


def hta_figures(trace: Trace) -> dict[str, Any]:
    """HTA's temporal breakdown, idle-time split and kernel launch statistics (rank 0)."""
    if trace.meta.format != "torch":
        return {"available": False, "reason": "HTA reads PyTorch profiler traces only"}
    try:
        from hta.trace_analysis import TraceAnalysis
    except ImportError:
        raise MissingDependencyError(
            "Holistic Trace Analysis is not installed: pip install 'profdiag[hta]'") from None
    with tempfile.TemporaryDirectory(prefix="profdiag-hta-") as tmp:
        name = os.path.basename(trace.meta.path)
        if not name.endswith((".json", ".json.gz")):
            name += ".json"
        dst = os.path.join(tmp, name)
        try:
            os.symlink(os.path.abspath(trace.meta.path), dst)
        except OSError:
            shutil.copy(trace.meta.path, dst)
        sink = io.StringIO()
        logging.getLogger("hta").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            try:
                analysis = TraceAnalysis(trace_dir=tmp)
                temporal = analysis.get_temporal_breakdown(visualize=False)
                idle = analysis.get_idle_time_breakdown(visualize=False)
                idle_df = idle[0] if isinstance(idle, tuple) else idle
                launch = analysis.get_cuda_kernel_launch_stats(visualize=False)
            except Exception as exc:  # HTA raises bare exceptions on traces it dislikes
                detail = str(exc).splitlines()[0] if str(exc) else ""
                return {"available": False,
                        "reason": f"HTA failed: {type(exc).__name__} {detail}".strip()}
    t = temporal.iloc[0].to_dict() if len(temporal) else {}
    idle_split = {}
    if idle_df is not None and len(idle_df):
        for cat, g in idle_df.groupby("idle_category"):
            idle_split[str(cat)] = int(g["idle_time"].sum() * 1000)
    launch_df = next(iter(launch.values())) if isinstance(launch, dict) and launch else None
    launch_stats: dict[str, Any] = {}
    if launch_df is not None and len(launch_df):
        launch_stats = {
            "kernels": int(len(launch_df)),
            "median_launch_delay_ns": int(launch_df["launch_delay"].median() * 1000),
            "p95_launch_delay_ns": int(launch_df["launch_delay"].quantile(0.95) * 1000),
        }
    return {
        "available": True,
        "idle_time_ns": int(t.get("idle_time(us)", 0) * 1000),
        "compute_time_ns": int(t.get("compute_time(us)", 0) * 1000),
        "non_compute_time_ns": int(t.get("non_compute_time(us)", 0) * 1000),
        "kernel_time_ns": int(t.get("kernel_time(us)", 0) * 1000),
        "idle_split_ns": idle_split,
        "launch": launch_stats,
    }

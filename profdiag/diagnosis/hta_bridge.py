"""Figures Holistic Trace Analysis already computes, for torch traces (optional extra)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from ..errors import MissingDependencyError
from ..trace import Trace

NS_ROUNDING_ENV = "HTA_DISABLE_NS_ROUNDING"


def hta_figures(trace: Trace, idle: dict[str, Any] | None = None) -> dict[str, Any]:
    """HTA's temporal breakdown, idle-time split and kernel launch statistics (rank 0), run
    with HTA_DISABLE_NS_ROUNDING=1 (HTA's default rounding to whole microseconds produces
    negative durations on real traces); with ``idle`` (our idle section), a comparison of the
    two idle splits."""
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
        saved = os.environ.get(NS_ROUNDING_ENV)
        os.environ[NS_ROUNDING_ENV] = "1"
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
                _restore_env(NS_ROUNDING_ENV, saved):
            try:
                analysis = TraceAnalysis(trace_dir=tmp)
                temporal = analysis.get_temporal_breakdown(visualize=False)
                hta_idle = analysis.get_idle_time_breakdown(visualize=False)
                idle_df = hta_idle[0] if isinstance(hta_idle, tuple) else hta_idle
                launch = analysis.get_cuda_kernel_launch_stats(visualize=False)
            except Exception as exc:  # HTA raises bare exceptions on traces it dislikes
                detail = str(exc).splitlines()[0] if str(exc) else ""
                return {"available": False,
                        "reason": f"HTA failed ({type(exc).__name__}{': ' + detail if detail else ''}"
                                  f") with {NS_ROUNDING_ENV}=1; its figures are left out"}
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
    out = {
        "available": True,
        "idle_time_ns": int(t.get("idle_time(us)", 0) * 1000),
        "compute_time_ns": int(t.get("compute_time(us)", 0) * 1000),
        "non_compute_time_ns": int(t.get("non_compute_time(us)", 0) * 1000),
        "kernel_time_ns": int(t.get("kernel_time(us)", 0) * 1000),
        "idle_split_ns": idle_split,
        "launch": launch_stats,
        "ns_rounding_disabled": True,
    }
    if idle:
        out["compare"] = compare_idle(idle, idle_split)
    return out


def compare_idle(idle: dict[str, Any], hta_split: dict[str, int]) -> dict[str, Any]:
    """Our idle split next to HTA's. HTA sums idle time per stream (two busy streams count
    the same idle moment twice) and calls a short gap "kernel wait" whoever caused it, so the
    figures differ by design; ours is the union over streams, split by who had the next work."""
    return {
        "ours": {"host_wait_ns": int(idle.get("host_wait_ns", 0)),
                 "kernel_wait_ns": int(idle.get("kernel_wait_ns", 0))},
        "hta": {"host_wait_ns": int(hta_split.get("host_wait", 0)),
                "kernel_wait_ns": int(hta_split.get("kernel_wait", 0)),
                "other_ns": int(hta_split.get("other", 0))},
        "note": "HTA sums idle time per stream; profdiag splits the union of the device's idle "
                "time by whether the next work had been launched",
    }


@contextlib.contextmanager
def _restore_env(key: str, value: str | None) -> Iterator[None]:
    try:
        yield
    finally:
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value

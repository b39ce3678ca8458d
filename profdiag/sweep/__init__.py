"""`profdiag sweep`: the bottleneck curve over prompt length, output length and batch.

A grid of points (grid.py), each captured on the bundled model (local.py) or measured on a
live OpenAI-compatible server (server.py), then analysed into curves (analysis.py) and
written as sweep.html, sweep.report.json and CSV tables. Importing this package imports
neither torch nor click. See docs/sweep.md.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import roofline
from ..errors import UsageError
from ..hardware import GpuSpec
from .analysis import analyse, flat_rows
from .grid import MANIFEST, Point, SweepManifest, atomic_write, dump, grid, open_folder, parse_axis

__all__ = ["MANIFEST", "Point", "analyse", "grid", "model_meta", "open_folder", "parse_axis",
           "spec_meta", "write_outputs", "write_manifest"]


def spec_meta(spec: GpuSpec | None, dtype: str, dtype_bytes: float) -> dict[str, Any] | None:
    """Return the roofline facts the report prints (None without a spec)."""
    if spec is None or not spec.has_peak(dtype):
        return None
    return {"key": spec.key, "name": spec.name, "dtype": dtype, "dtype_bytes": dtype_bytes,
            "peak_flops_s": spec.peak(dtype), "bandwidth_bytes_s": spec.bandwidth,
            "ridge": roofline.ridge_point(spec, dtype),
            "critical_batch": roofline.critical_batch_size(spec, dtype, dtype_bytes),
            "source": spec.source}


def _dim(value: int | None, name: str) -> int:
    if value is None:
        raise UsageError(f"the model shape lacks {name}")
    return int(value)


def model_meta(cfg: dict[str, int]) -> dict[str, Any]:
    """Return the model shape with its parameter counts and the FLOP-model crossover: the
    prompt length at which causal attention FLOPs (2·L·T²·d·h) reach the projections'
    (2·N_body·T, lm_head excluded): T = N_body / (L·d·h)."""
    c = roofline.ModelConfig.from_dict(cfg)
    vocab, hidden, layers = _dim(c.vocab, "vocab"), _dim(c.hidden, "hidden"), _dim(c.layers, "layers")
    d, heads = _dim(c.d, "head_dim"), _dim(c.heads, "heads")
    body = roofline.compute_params(c) - vocab * hidden
    # Where prefill_attention_flops(causal) == prefill_linear_flops(body): solve 2LdhT² = 2NT.
    cross = body / (layers * d * heads)
    return {**cfg, "params": roofline.model_params(c), "compute_params": roofline.compute_params(c),
            "crossover_tokens": cross}


def write_manifest(out: Path, target: str, settings: dict[str, Any],
                   results: list[dict[str, Any]]) -> None:
    m = SweepManifest(target=target, settings=settings,
                      points=[{k: r.get(k) for k in ("id", "kind", "tokens", "new_tokens",
                                                     "batch", "context", "status", "trace",
                                                     "report", "error", "wall_s")}
                              for r in results])
    atomic_write(out / MANIFEST, dump(m.to_dict()))


def _csv(rows: list[dict[str, Any]]) -> bytes:
    if not rows:
        return b""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def write_outputs(out: Path, results: list[dict[str, Any]], meta: dict[str, Any],
                  ) -> dict[str, Any]:
    """Analyse ``results``; write sweep.report.json, sweep.html, points.csv, prefill.csv,
    decode_steps.csv. Return the report dict."""
    from ..renderers.sweep_html import render as render_html

    report = analyse(results, meta)
    atomic_write(out / "sweep.report.json", dump(report))
    atomic_write(out / "points.csv", _csv(flat_rows(results)))
    atomic_write(out / "prefill.csv", _csv([
        {"batch": c["batch"], **p, "fit_a_ns": c["fit"]["a_ns"],
         "fit_b_ns_per_token": c["fit"]["b_ns_per_token"],
         "fit_c_ns_per_token2": c["fit"]["c_ns_per_token2"]}
        for c in report["prefill_curves"] for p in c["points"]]))
    steps = [{"point": r["id"], "batch": r["batch"], "step": i, **s}
             for r in results if r.get("status") == "ok"
             for i, s in enumerate((r.get("decode") or {}).get("per_step", []))]
    cols = ["point", "batch", "step", "context", "measured_ns", "ideal_ns", "limit"]
    atomic_write(out / "decode_steps.csv",
                 _csv([{k: s.get(k) for k in cols} for s in steps]))
    atomic_write(out / "sweep.html", render_html(report).encode())
    return report


Callback = Callable[[Point, dict[str, Any]], None]

"""Sweep points on the bundled model: one `profdiag capture` per point, diagnosed and kept.

torch is imported lazily (inside functions), as by profdiag.capture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .. import roofline
from ..capture.config import (
    DTYPE_BYTES,
    CaptureOptions,
    ModelConfig,
    check_memory,
    estimate_memory,
)
from ..errors import ProfdiagError, UsageError
from ..hardware import GpuSpec, normalize_dtype
from .grid import Point, atomic_write, dump, run_grid

_DTYPE_BYTES = DTYPE_BYTES  # from the one table (hardware.DTYPE_BYTES)


def capture_options(point: Point, config: ModelConfig, out: Path, settings: dict[str, Any]
                    ) -> CaptureOptions:
    """Return the capture of one point (the trace goes to ``out``, named by the point)."""
    common = dict(out=out, config=config, batch=point.batch, steps=point.new_tokens,
                  dtype=settings["dtype"], device=settings["device"],
                  cuda_graphs=settings["cuda_graphs"], warmup=settings["warmup"],
                  record_shapes=settings["record_shapes"], seed=settings["seed"],
                  name=point.id)
    if point.kind == "decode":
        return CaptureOptions(phase="decode", context=point.context, **common)
    return CaptureOptions(phase="generate", tokens=point.tokens, **common)


def check_all_fit(points: list[Point], config: ModelConfig, settings: dict[str, Any],
                  free: int | None, where: str) -> None:
    """Refuse the whole sweep up front (UsageError, one line) when its largest point cannot
    fit in ``free`` bytes: the capture's own estimate, for the point that needs the most."""
    if not points:
        return
    ests = [(estimate_memory(capture_options(p, config, Path("."), settings),
                             settings["dtype"]), p) for p in points]
    est, worst = max(ests, key=lambda e: e[0].total)
    try:
        check_memory(est, free, where)
    except UsageError as exc:
        raise UsageError(f"point {worst.id}: {exc.message.replace('reduce', 'drop it or reduce')}"
                         ) from None


def measure_cpu_spec(torch: Any, dtype_name: str, name: str) -> GpuSpec:
    """Return a roofline for this CPU, measured now: the best of a few GEMMs (FLOP/s) and
    of a few large copies (bytes/s, read + write). A CPU has no datasheet in the table, and
    what matters for the curve is what this machine attains."""
    dtype = getattr(torch, dtype_name)
    n = 768
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(4):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    flops = 2.0 * n**3 / best
    src = torch.empty(32 * 1024**2 // 4, dtype=torch.float32).normal_()  # 32 MiB, past LLC
    dst = torch.empty_like(src)
    dst.copy_(src)
    best_c = float("inf")
    for _ in range(4):
        t0 = time.perf_counter()
        dst.copy_(src)
        best_c = min(best_c, time.perf_counter() - t0)
    bw = 2.0 * src.numel() * 4 / best_c
    key = normalize_dtype(dtype_name) or "fp32"
    return GpuSpec(key="cpu-measured", name=f"{name} (measured)", vendor="cpu",
                   peak_flops=MappingProxyType({key: flops}), bandwidth=bw,
                   source=f"measured by profdiag sweep: {n}^3 {dtype_name} GEMM, 32 MiB copy, "
                          "best of 4")


CPU_SPEC = "cpu_spec.json"


def cpu_spec(out: Path, torch: Any, dtype_name: str, name: str) -> GpuSpec:
    """Return the CPU roofline of this sweep folder: measured on its first run and kept in
    ``cpu_spec.json``, so that resumed and new points share one speed of light."""
    from .grid import read_json

    path = out / CPU_SPEC
    if path.is_file():
        d = read_json(path)
        try:
            return GpuSpec(key=d["key"], name=d["name"], vendor="cpu",
                           peak_flops=MappingProxyType({k: float(v) for k, v in
                                                        d["peak_flops"].items()}),
                           bandwidth=float(d["bandwidth"]), source=str(d["source"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # unreadable: measure again
    spec = measure_cpu_spec(torch, dtype_name, name)
    atomic_write(path, dump({"key": spec.key, "name": spec.name,
                             "peak_flops": dict(spec.peak_flops), "bandwidth": spec.bandwidth,
                             "source": spec.source}))
    return spec


def point_result(point: Point, data: dict[str, Any], config: ModelConfig,
                 spec: GpuSpec | None, dtype_bytes: float, dtype: str) -> dict[str, Any]:
    """Return what the curves need from one point's diagnosis (``data`` = report JSON):
    per-phase measured step times next to their speed of light and the diagnosis regime."""
    steps = data.get("steps") or []
    regime = {p["name"]: (p.get("bottleneck") or {}).get("value") for p in data.get("phases") or []}
    res: dict[str, Any] = {**point.to_dict(), "status": "ok"}
    cfg = {"layers": config.layers, "hidden": config.hidden, "heads": config.heads,
           "kv_heads": config.kv_heads, "ffn": config.ffn, "vocab": config.vocab}
    pre = [s for s in steps if s.get("phase") == "prefill"]
    dec = [s for s in steps if s.get("phase") == "decode"]
    if pre:
        res["prefill"] = _phase_result([int(pre[0]["wall_ns"])], point.tokens, "prefill",
                                       point.batch, cfg, spec, dtype_bytes, dtype,
                                       regime.get("prefill"))
    if dec:
        base = point.context if point.kind == "decode" else point.tokens
        # Step i attends to base + i + 1 positions; the cache it reads holds base + i.
        ctx = [base + i for i in range(len(dec))]
        res["decode"] = _phase_result([int(s["wall_ns"]) for s in dec], ctx, "decode",
                                      point.batch, cfg, spec, dtype_bytes, dtype,
                                      regime.get("decode"))
    res["diagnosis"] = {"mode": (data.get("mode") or {}).get("value"),
                        "bottleneck": (data.get("bottleneck") or {}).get("value"),
                        "warnings": data.get("warnings") or []}
    return res


def _phase_result(times: list[int], context: Any, phase: str, batch: int,
                  cfg: dict[str, int | None],
                  spec: GpuSpec | None, dtype_bytes: float, dtype: str,
                  regime: str | None) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {"steps": len(times), "median_step_ns": int(np.median(times)),
                           "regime": regime}
    ctxs = context if isinstance(context, list) else [context] * len(times)
    per_step: list[dict[str, Any]] = [{"context": int(c), "measured_ns": int(t)}
                                      for c, t in zip(ctxs, times)]
    if spec is not None and spec.has_peak(dtype):
        sol = roofline.speed_of_light_steps(times, cfg, batch, context, spec, dtype_bytes,
                                            phase, dtype=dtype)  # type: ignore[arg-type]
        for row, s in zip(per_step, sol.to_dict("records")):
            row["ideal_ns"] = float(s["ideal_ns"])
            row["limit"] = s["limit"]
        out["ideal_ns"] = float(sol["ideal_ns"].median())
        out["ratio"] = float(sol["ratio"].median())
        out["limit"] = str(sol["limit"].iloc[len(sol) // 2])
        out["tokens_per_s"] = float(sol["tokens_per_s"].median())
        out["tokens_per_s_ideal"] = float(sol["tokens_per_s_ideal"].median())
        out["flops"] = float(sol["flops"].median())
        out["bytes"] = float(sol["bytes"].median())
    else:
        tokens = batch * (ctxs[0] if phase == "prefill" else 1)
        out["tokens_per_s"] = tokens / (out["median_step_ns"] * 1e-9)
    out["per_step"] = per_step
    return out


ProgressFn = Callable[[Point, dict[str, Any]], None]


def run_points(points: list[Point], done: dict[str, dict[str, Any]], out: Path,
               config: ModelConfig, settings: dict[str, Any], spec: GpuSpec | None,
               on_point: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Capture and diagnose every point not in ``done``; write points/<id>.json for each
    (failed points too, with the error); return all results in grid order."""
    from .. import diagnosis, load
    from ..capture import capture

    dtype = settings["dtype"]
    dtype_bytes = _DTYPE_BYTES[dtype]
    dkey = normalize_dtype(dtype) or "fp32"

    def measure(p: Point) -> dict[str, Any]:
        try:
            cap, data, tries = _best_of(p, config, out, settings, diagnosis, load, capture)
            atomic_write(out / "reports" / f"{p.id}.report.json", dump(data))
            res = point_result(p, data, config, spec, dtype_bytes, dkey)
            res["trace"] = str(cap.trace.relative_to(out))
            res["report"] = f"reports/{p.id}.report.json"
            if len(tries) > 1:
                res["tries_wall_ns"] = tries
        except ProfdiagError as exc:
            res = {**p.to_dict(), "status": "failed", "error": str(exc)}
        return res

    return run_grid(points, done, out, measure, on_point)


def _steps_wall_ns(data: dict[str, Any]) -> int:
    return sum(int(st.get("wall_ns") or 0) for st in data.get("steps") or [])


def _best_of(p: Point, config: ModelConfig, out: Path, settings: dict[str, Any],
             diagnosis: Any, load: Any, capture: Any) -> tuple[Any, dict[str, Any], list[int]]:
    """Capture the point ``settings["repeat"]`` times; keep the try whose steps took the least
    wall time in all (noise on a shared machine only adds time), so that the point's numbers
    and its trace and report stay one run. Return (capture, diagnosis dict, each try's
    total step ns)."""
    import shutil

    repeat = int(settings.get("repeat") or 1)
    traces = out / "traces"
    if repeat == 1:
        cap = capture(capture_options(p, config, traces, settings))
        data = diagnosis.run(load(cap.trace, compact=True)).to_dict()
        return cap, data, [_steps_wall_ns(data)]
    best: tuple[int, Any, dict[str, Any]] | None = None
    tries = []
    tmp = traces / f".tries-{p.id}"
    try:
        for r in range(repeat):
            cap = capture(capture_options(p, config, tmp / str(r), settings))
            data = diagnosis.run(load(cap.trace, compact=True)).to_dict()
            total = _steps_wall_ns(data)
            tries.append(total)
            if best is None or total < best[0]:
                best = (total, cap, data)
        assert best is not None
        _, cap, data = best
        traces.mkdir(parents=True, exist_ok=True)
        for f in (cap.trace, cap.manifest):
            (f).replace(traces / f.name)
        from ..capture.run import CaptureResult

        cap = CaptureResult(traces / cap.trace.name, traces / cap.manifest.name, cap.data)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cap, data, tries


__all__ = ["capture_options", "check_all_fit", "cpu_spec", "measure_cpu_spec",
           "point_result", "run_points"]

"""Self-contained HTML report: one file, CSS/JS/data inlined, charts drawn as inline SVG.

The renderer builds a plain view dict from the diagnosis dict (tested directly), then a
packaged jinja2 template (autoescape on: kernel names are full of '<', '>' and '&', and a
trace is untrusted input) turns it into HTML. Chart data goes in a JSON script element.
"""

from __future__ import annotations

from typing import Any

import jinja2
from markupsafe import Markup

from . import idle_view, json_, text as t
from .templating import environment, script_json

# Category colours, the same in every chart and table (Tableau 10, readable on white).
CATEGORY_COLORS = {
    "compute": "#4e79a7", "memory": "#f28e2b", "normalization": "#76b7b2",
    "elementwise": "#59a14f", "communication": "#b07aa1", "other": "#bab0ac",
    "overhead": "#e15759",
}
PHASE_COLORS = {"prefill": "#7b5ea7", "decode": "#c0912b", "all": "#5f6b7a",
                "unknown": "#5f6b7a", "mixed": "#3d8a7a"}
CHART_DATA_ID = "profdiag-chart-data"
NAME_CHARS = 90  # hotspot names longer than this are shortened in the table (full in title)


def _env() -> jinja2.Environment:
    """The shared environment (renderers/templating.py): one for every template."""
    return environment()


def _asset(name: str) -> Markup:
    """A CSS/JS file from the templates folder, inlined verbatim (our own code, not data)."""
    env = _env()
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return Markup(source.replace("</", "<\\/") if name.endswith(".js") else source)


def category_color(cat: str) -> str:
    return CATEGORY_COLORS.get(cat, CATEGORY_COLORS["other"])


def phase_color(phase: str | None) -> str:
    return PHASE_COLORS.get(phase or "unknown", PHASE_COLORS["unknown"])


def _category_view(shares: dict[str, Any], bd: dict[str, Any]) -> list[dict[str, Any]]:
    cat_ns = bd.get("category_ns") or {}
    out = []
    for cat, share in t.ordered_categories(shares):
        ns = ((bd.get("idle_ns") or 0) + cat_ns.get("overhead", 0) if cat == "overhead"
              else cat_ns.get(cat))
        out.append({"name": cat, "share": share, "ns": ns, "color": category_color(cat)})
    return out


def _busy_view(bd: dict[str, Any]) -> list[dict[str, Any]]:
    """Shares of GPU busy time per category (overhead here is only host-side GPU work)."""
    cat_ns = {k: v for k, v in (bd.get("category_ns") or {}).items() if v}
    total = sum(cat_ns.values())
    if not total:
        return []
    return [{"name": c, "share": s, "ns": cat_ns[c], "color": category_color(c)}
            for c, s in t.ordered_categories({k: v / total for k, v in cat_ns.items()})]


def chart_data(data: dict[str, Any]) -> dict[str, Any]:
    """The numbers the inline JS draws: steps, per-layer times and roofline points."""
    kc = data.get("kernel_counts") or {}
    roof = data.get("roofline") or {}
    gpu = roof.get("gpu") or {}
    points = roof.get("points") or [] if roof.get("available") else []
    outliers: dict[Any, dict[str, Any]] = idle_view.outliers(data)
    return {
        "category_colors": CATEGORY_COLORS,
        "phase_colors": PHASE_COLORS,
        "dev": t.device_word(data),
        "steps": [{"step": s.get("step"), "name": s.get("name"), "phase": s.get("phase"),
                   "wall_ns": s.get("wall_ns"), "gpu_busy_ns": s.get("gpu_busy_ns"),
                   "ideal_ns": s.get("ideal_ns"), "ratio": s.get("ratio"),
                   "outlier": outliers.get(s.get("step"))}
                  for s in t.steps_with_ideal(data)],
        "per_layer": {"layers": kc.get("per_layer") or [],
                      "slow": kc.get("slow_layers") or []},
        "roofline": {
            "bandwidth_bytes_s": gpu.get("bandwidth_bytes_s"),
            "peak_flops_s": gpu.get("peak_bf16_flops_s"),
            "ridge": gpu.get("ridge_bf16"), "gpu": gpu.get("name"),
            "points": [{k: p.get(k) for k in (
                "phase", "op_class", "op_name", "m", "k", "n", "calls", "intensity",
                "achieved_flops_s", "efficiency", "bound", "time_ns", "kernel")}
                for p in points if p.get("intensity") and p.get("achieved_flops_s")],
        },
    }


def _idle_view(data: dict[str, Any]) -> dict[str, Any] | None:
    """Idle split bar and the top causes as bars (share of idle)."""
    sp = idle_view.split(data)
    if sp is None:
        return None
    rows = idle_view.cause_rows(data)
    top = max((r["share"] for r in rows), default=0) or 1
    return {**sp, "host_color": idle_view.HOST_COLOR, "gpu_color": idle_view.GPU_COLOR,
            "causes": [{**r, "bar": r["share"] / top,
                        "color": idle_view.GPU_COLOR if r["cause"] == "gpu_side"
                        else idle_view.HOST_COLOR} for r in rows],
            "gaps": idle_view.gap_rows(data)}


def view(data: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, computed once with defaults for missing keys."""
    src = data.get("source") or {}
    bd = data.get("breakdown") or {}
    kc = data.get("kernel_counts") or {}
    roof = data.get("roofline") or {}
    sol = roof.get("speed_of_light") or {}
    per_layer = kc.get("per_layer") or []
    slow = set(kc.get("slow_layers") or [])
    by_phase = roof.get("by_phase") or {}
    roof_rows = ([{"phase": ph, **r} for ph in sorted(by_phase)
                  for r in t.roofline_rows(by_phase[ph])] if len(by_phase) > 1
                 else t.roofline_rows(roof.get("summary")))
    phases = [{**p, "mode": p.get("mode") or {}, "bottleneck": p.get("bottleneck") or {},
               "cats": _category_view(p.get("categories") or {}, p.get("breakdown") or {})}
              for p in data.get("phases") or []]
    return {
        "source": {"path": src.get("path") or "-", "format": src.get("format") or "?",
                   "device": src.get("device") or "-", "options": src.get("options") or {},
                   "salvaged": bool(src.get("salvaged"))},
        "model": t.model_text(data.get("model")),
        "headline": t.headline(data),
        "mode": {"value": "unknown", "confidence": None, "evidence": [],
                 **(data.get("mode") or {})},
        "bottleneck": {"value": "unknown", "evidence": [], **(data.get("bottleneck") or {})},
        "steps": t.step_checks(data),
        "categories": _category_view(data.get("categories") or {}, bd),
        "busy_categories": _busy_view(bd),
        "busy_share": bd.get("busy_share"), "window_ns": bd.get("window_ns"),
        "dev": t.device_word(data), "forwards": kc.get("forwards"),
        "class_rows": [{**r, "color": category_color(r["category"])} for r in t.class_rows(data)],
        "comm_headers": t.COMM_HEADERS, "comm_rows": t.communication_rows(data),
        "overhead": data.get("overhead") or {},
        "overhead_items": t.overhead_items(data, "µs"),
        "pathological": (data.get("overhead") or {}).get("pathological"),
        "profiling_flags": t.profiling_flags(data),
        "counts_lines": t.counts_lines(data),
        "by_shape": kc.get("by_shape") or [],
        "extra": kc.get("extra") or [],
        "per_layer": [{**r, "slow": r.get("layer") in slow} for r in per_layer],
        "hotspots": [{"name": "", "class": "", "category": "other", "calls": None,
                      "total_ns": None, "mean_ns": None, "share": None, "note": "", **h}
                     for h in data.get("hotspots") or []],
        "step_rows": t.steps_with_ideal(data),
        "step_comp": t.has_composition(data.get("steps") or []),
        "roof": {"present": bool(roof), "available": bool(roof.get("available")),
                 "reason": roof.get("reason"), "gpu": roof.get("gpu") or {},
                 "points": len(roof.get("points") or []), "rows": roof_rows,
                 "by_phase": len(by_phase) > 1, "suspect_calls": roof.get("suspect_calls"),
                 "calls_with_shapes": roof.get("calls_with_shapes"),
                 "shapes": t.shape_rows(roof.get("points"))},
        "sol": {"available": bool(sol.get("available")), "reason": sol.get("reason"),
                "phases": sorted((sol.get("phases") or {}).items()),
                "inputs": t.sol_inputs_lines(sol)},
        "phases": phases,
        "recommendations": [{"title": "", "evidence": "", "advice": "", "kernels": [],
                             "bottleneck": "", "id": "", **r}
                            for r in data.get("recommendations") or []],
        "warnings": data.get("warnings") or [],
        "idle": _idle_view(data),
        "health": idle_view.health_lines(data),
        "extras": [(k, json_.dumps(val)) for k, val in sorted((data.get("extras") or {}).items())],
        "checks": data.get("checks") or [],
        "status_counts": t.status_counts(data),
        "schema_version": data.get("schema_version", "?"),
        "name_chars": NAME_CHARS,
        "perfetto": data.get("perfetto"),
    }


TEMPLATE = "report.html.j2"


def warm() -> None:
    """The report's template compiled into the environment's cache (renderers.warm)."""
    _env().get_template(TEMPLATE)


def render(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (deterministic for the same dict)."""
    tpl = _env().get_template(TEMPLATE)
    return tpl.render(v=view(data), chart_json=script_json(chart_data(data)),
                      chart_id=CHART_DATA_ID, css=_asset("report.css"), js=_asset("report.js"))

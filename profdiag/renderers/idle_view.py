"""The idle section and the trace-health findings as rows every renderer shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..diagnosis.idle import step_ranges
from . import text as t

HOST_COLOR = "#e15759"
GPU_COLOR = "#f1ce63"


def split(data: dict[str, Any]) -> dict[str, Any] | None:
    """Host wait vs GPU-side gaps, in ns and as shares of idle, or None without an idle section."""
    idle = data.get("idle") or {}
    if not idle.get("idle_ns"):
        return None
    return {"idle_ns": idle["idle_ns"], "host_wait_ns": idle.get("host_wait_ns", 0),
            "kernel_wait_ns": idle.get("kernel_wait_ns", 0),
            "host_wait_share": idle.get("host_wait_share", 0.0),
            "kernel_wait_share": idle.get("kernel_wait_share", 0.0),
            "gap_count": idle.get("gap_count", 0)}


def cause_rows(data: dict[str, Any], n: int = 8) -> list[dict[str, Any]]:
    """The largest causes of idle time, largest first."""
    idle = data.get("idle") or {}
    rows = []
    for c in (idle.get("causes") or [])[:n]:
        rows.append({"cause": c.get("cause", ""), "title": c.get("title") or c.get("cause", ""),
                     "op": c.get("op", ""), "context": c.get("context", ""),
                     "ns": c.get("ns", 0), "share": c.get("share_of_idle", 0.0),
                     "gaps": c.get("gaps", 0), "steps": step_ranges(c.get("steps") or [])})
    return rows


def gap_rows(data: dict[str, Any], n: int = 10) -> list[dict[str, Any]]:
    return list(((data.get("idle") or {}).get("gaps") or [])[:n])


def outliers(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """step -> its step_outliers finding."""
    for c in data.get("checks") or []:
        if c.get("id") == "step_outliers":
            return {int(o["step"]): o for o in (c.get("evidence") or {}).get("outliers") or []}
    return {}


def health_lines(data: dict[str, Any]) -> list[str]:
    h = data.get("health") or {}
    if not h:
        return []
    lines = [f"{h.get('excluded_events', 0)} impossible device event(s) excluded of "
             f"{h.get('checked_events', 0)} checked"]
    for e in (h.get("excluded") or [])[:5]:
        lines.append(f"excluded: {t.short_kernel_name(e.get('name', ''))} at {e.get('start_ns')} "
                     f"lasting {t.fmt_ms(e.get('dur_ns'))} ms ({e.get('reason', '')})")
    skew = h.get("clock_skew") or {}
    if skew.get("events"):
        lines.append(f"clock skew: {skew['events']} event(s) start before their launch call "
                     f"(up to {t.fmt_us(skew.get('max_ns'))} us)")
    if h.get("profiler_overhead"):
        lines.append("profiler overhead: captured with " + ", ".join(h["profiler_overhead"]))
    return lines


def text_block(data: dict[str, Any]) -> list[str]:
    """Plain-text lines for the overhead section: the split, the causes, trace health."""
    sp = split(data)
    if sp is None:
        return []
    out = ["", f"  Idle time: {t.fmt_ms(sp['idle_ns'])} ms in {sp['gap_count']} gaps; host wait "
               f"{t.fmt_ms(sp['host_wait_ns'])} ms ({t.fmt_pct(sp['host_wait_share'])}), GPU-side "
               f"{t.fmt_ms(sp['kernel_wait_ns'])} ms ({t.fmt_pct(sp['kernel_wait_share'])})"]
    rows = cause_rows(data)
    if rows:
        out += ["", *["  " + line for line in t.table(
            ("cause", "op / call", "ms", "of idle", "gaps", "steps"),
            [(r["title"], t.truncate(r["op"] + (f" in {r['context']}" if r["context"] else ""), 60),
              t.fmt_ms(r["ns"]), t.fmt_pct(r["share"]), r["gaps"], r["steps"]) for r in rows],
            right=(2, 3, 4))]]
    health = health_lines(data)
    if health and (data.get("health") or {}).get("excluded_events"):
        out += ["", "  Trace health:"] + [f"    {line}" for line in health]
    return out


def markdown_block(data: dict[str, Any], esc: Callable[[str], str]) -> list[str]:
    sp = split(data)
    if sp is None:
        return []
    out = ["", f"**Idle time:** {t.fmt_ms(sp['idle_ns'])} ms in {sp['gap_count']} gaps: host wait "
               f"{t.fmt_ms(sp['host_wait_ns'])} ms ({t.fmt_pct(sp['host_wait_share'])}), "
               f"GPU-side gaps {t.fmt_ms(sp['kernel_wait_ns'])} ms "
               f"({t.fmt_pct(sp['kernel_wait_share'])})", ""]
    rows = cause_rows(data)
    if rows:
        out += ["| cause | op / call | ms | of idle | gaps | steps |",
                "|---|---|---:|---:|---:|---|"]
        out += [f"| {esc(r['title'])} | {esc(r['op'] + (' in ' + r['context'] if r['context'] else ''))}"
                f" | {t.fmt_ms(r['ns'])} | {t.fmt_pct(r['share'])} | {r['gaps']} | {r['steps']} |"
                for r in rows]
    health = health_lines(data)
    if health:
        out += ["", "**Trace health:**", ""] + [f"- {esc(line)}" for line in health]
    return out


def summary_line(data: dict[str, Any]) -> list[str]:
    """'Idle:' line of the terminal summary: the split and the largest specific cause."""
    sp = split(data)
    if sp is None:
        return []
    line = (f"Idle:        host wait {t.fmt_pct(sp['host_wait_share'], 0)}, GPU-side gaps "
            f"{t.fmt_pct(sp['kernel_wait_share'], 0)}")
    spec = [r for r in cause_rows(data, 20) if r["cause"] not in ("launch_gaps", "gpu_side")]
    if spec and spec[0]["share"] >= 0.05:
        r = spec[0]
        line += (f"; {t.fmt_ms(r['ns'])} ms ({t.fmt_pct(r['share'], 0)}) {r['title']} in "
                 f"{t.truncate(r['op'], 50)}" + (f", steps {r['steps']}" if r["steps"] else ""))
    return [line]

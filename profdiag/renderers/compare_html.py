"""`profdiag compare` as one self-contained HTML page (compare.html.j2)."""

from __future__ import annotations

from typing import Any

from .compare_text import HTML_KERNEL_ROWS, _sections
from .html import CATEGORY_COLORS  # the report's colours: one table
from .templating import render

BAR_LEFT, BAR_SCALE = 50, 7.0  # SVG px: label column, px per percentage point


def render_html(cmp: dict[str, Any]) -> str:
    """One self-contained page (inline CSS, inline SVG bars; no scripts, no network)."""
    bars = []
    for key in ("base", "new"):
        x = 0.0
        segs = []
        for c in cmp["categories"]:
            w = max(float(c[key] or 0), 0.0) * 100
            segs.append({"category": c["category"], "x": round(BAR_LEFT + x * BAR_SCALE, 2),
                         "w": round(w * BAR_SCALE, 2),
                         "color": CATEGORY_COLORS.get(c["category"], "#bab0ac"),
                         "share": c[key]})
            x += w
        bars.append({"label": key, "segments": segs})
    sections = _sections(cmp, lambda s: s, HTML_KERNEL_ROWS)
    return render("compare.html.j2", cmp=cmp, bars=bars, sections=sections,
                  colors=CATEGORY_COLORS)

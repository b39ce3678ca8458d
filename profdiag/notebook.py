"""Jupyter views of a Diagnosis: a short repr and a compact HTML summary (``_repr_html_``).

The HTML is one self-contained fragment (inline styles, no scripts, no external assets) with
every string from the trace escaped: kernel names are full of ``<``, ``>`` and ``&``.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .diagnosis.model import Diagnosis

STATUS_COLORS = {"pass": "#2e7d32", "warn": "#b26a00", "fail": "#c62828", "skip": "#757575"}
TOP_HOTSPOTS = 5


def short_repr(diag: Diagnosis) -> str:
    """One line: path, mode, bottleneck, overhead against its limit, steps, kernels, checks."""
    ov = diag.overhead or {}
    share, limit = ov.get("overhead_share"), ov.get("limit")
    status = _status_counts(diag)
    parts = [f"{diag.mode.value} (confidence {diag.mode.confidence:.2f})",
             f"{diag.bottleneck.value}-bound"]
    if share is not None:
        parts.append(f"overhead {share:.1%}" + (f" (limit {limit:.0%})" if limit is not None
                                                else ""))
    steps = 0 if diag.steps is None else len(diag.steps)
    parts.append(f"{steps} steps")
    if diag.events is not None:
        parts.append(f"{len(diag.events)} GPU events")
    parts.append("checks " + " ".join(f"{n} {s}" for s, n in status.items() if n))
    path = diag.source.get("path") or ""
    return f"<Diagnosis {path!r}: " + ", ".join(parts) + ">"


def _status_counts(diag: Diagnosis) -> dict[str, int]:
    counts = {"fail": 0, "warn": 0, "pass": 0, "skip": 0}
    for c in diag.checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    return counts


def repr_html(diag: Diagnosis) -> str:
    """Verdict, category bar, checks and top hotspots as an HTML fragment for Jupyter."""
    from .renderers.html import category_color

    src = diag.source
    ov = diag.overhead or {}
    head = (f"<b>{escape(diag.mode.value)}</b>, <b>{escape(diag.bottleneck.value)}-bound</b>")
    if ov.get("overhead_share") is not None:
        head += f"; GPU idle (overhead) {ov['overhead_share']:.1%}"
        if ov.get("limit") is not None:
            head += f" against a {ov['limit']:.0%} limit"
    evidence = "".join(f"<li>{escape(e)}</li>" for e in diag.bottleneck.evidence[:3])
    shares = diag.categories
    bar = "".join(
        f'<span title="{escape(k)} {v:.1%}" style="display:inline-block;height:14px;'
        f'width:{v * 100:.3f}%;background:{category_color(k)}"></span>'
        for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > 0)
    legend = " ".join(
        f'<span style="white-space:nowrap"><span style="display:inline-block;width:10px;'
        f'height:10px;background:{category_color(k)}"></span> {escape(k)} {v:.1%}</span>'
        for k, v in sorted(shares.items(), key=lambda kv: -kv[1]) if v > 0)
    checks = "".join(
        f'<tr><td style="color:{STATUS_COLORS.get(c.status, "#000")};font-weight:bold">'
        f"{escape(c.status)}</td><td><code>{escape(c.id)}</code></td>"
        f"<td style=\"text-align:left\">{escape(c.summary)}</td></tr>"
        for c in diag.checks)
    hot_rows = ""
    for r in diag.hotspots.head(TOP_HOTSPOTS).to_dict("records"):
        short = r.get("short_name")
        name = str(short if isinstance(short, str) and short else r["name"])
        hot_rows += (f'<tr><td style="text-align:left" title="{escape(str(r["name"]))}">'
                     f"<code>{escape(name[:80])}</code></td><td>{escape(str(r['class']))}</td>"
                     f"<td>{int(r['calls'])}</td><td>{int(r['total_ns']) / 1e6:.3f}</td>"
                     f"<td>{float(r['share']):.1%}</td></tr>")
    device = escape(str(src.get("device") or ""))
    return (
        '<div class="profdiag-diagnosis" style="font-family:sans-serif;max-width:900px">'
        f"<div><b>profdiag</b> · <code>{escape(str(src.get('path') or ''))}</code>"
        f" · {escape(str(src.get('format') or ''))}{' · ' + device if device else ''}</div>"
        f"<p>{head}</p><ul>{evidence}</ul>"
        '<div style="width:100%;background:#eee;line-height:0">' + bar + "</div>"
        f'<div style="font-size:90%">{legend}</div>'
        "<h4>Checks</h4><table><thead><tr><th>status</th><th>id</th><th>summary</th></tr>"
        f"</thead><tbody>{checks}</tbody></table>"
        "<h4>Top hotspots</h4><table><thead><tr><th>kernel</th><th>class</th><th>calls</th>"
        f"<th>total ms</th><th>share of busy</th></tr></thead><tbody>{hot_rows}</tbody></table>"
        '<div style="font-size:85%;color:#666">diag.tables() gives every table as a DataFrame;'
        " profdiag.render(diag, \"html\") the full report.</div></div>")

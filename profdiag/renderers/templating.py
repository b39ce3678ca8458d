"""The one jinja2 Environment every HTML page renders with (report, sweep, compare, sweep
compare, history index), and the one ``script_json`` that embeds data in a page.

Autoescape is on (kernel names are full of '<', '>' and '&'); undefined names fail loudly.
Filters are registered once here; the compare page's own number formats are prefixed
``cmp_`` because its wording (e.g. "us", not "µs") differs from the report's.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2
import orjson
from markupsafe import Markup


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    from . import compare_text as c, html, text as t

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("profdiag.renderers", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(
        # the report (report.html.j2) and the sweep pages
        ns=lambda v: t.fmt_ns(v, "µs"), ms=t.fmt_ms, us=t.fmt_us, pct=t.fmt_pct, si=t.fmt_si,
        num=t.fmt_num, trunc=t.truncate, opts=t.options_text, short=t.short_kernel_name,
        # the compare page (compare.html.j2)
        cmp_ns=c.fmt_ns_or_dash, cmp_pct=c.fmt_share, cmp_chg=c.fmt_change,
        cmp_num=c.fmt_count,
        # the history index (index.html.j2)
        sortkey=sort_key)
    env.globals.update(cat_color=html.category_color, phase_color=html.phase_color)
    return env


def render(template: str, **context: Any) -> str:
    return str(environment().get_template(template).render(**context))


def script_json(obj: Any) -> Markup:
    """JSON for a <script type="application/json"> element: every '<', '>' and '&' escaped
    as \\u003c etc., so no '</script>' or '<!--' in a kernel name or label can end the
    element early; parses back as-is."""
    raw = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()
    return Markup(raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def sort_key(v: Any) -> str:
    """A data-sort attribute: '' for a missing number (sorted last by the page's JS)."""
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return repr(v) if isinstance(v, float) else str(v)

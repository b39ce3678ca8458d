"""The index page of `profdiag index` (index.html): the view dict of
``index_site.build_view`` through the packaged ``index.html.j2`` template."""

from __future__ import annotations

from typing import Any

from .templating import render, script_json

# id of the embedded JSON element the page's charts are drawn from
DATA_ID = "profdiag-index-data"


def render_index(view: dict[str, Any]) -> str:
    """index.html for a view from index_site.build_view."""
    return render("index.html.j2", **view, data_id=DATA_ID, data_json=script_json(view["data"]))

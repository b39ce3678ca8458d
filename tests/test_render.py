"""HTML, Markdown and text renderers on real diagnoses (parsed, not string-matched)."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest

from profdiag.renderers import html as html_r, markdown as md_r, text as text_r

from helpers import diagnosed, shared_or_skip

SAMPLES = {
    "eager_decode": "own_tiny_decode_ctx512_B1_steps8.json.gz",
    "prefill": "own_1b_prefill_T2048_B1.json.gz",
    "graph_decode": "own_1b_decode_ctx1024_B1_steps8_cudagraph.json.gz",
}
EVIL = ["<script>alert(1)</script>", "</script><b>x", "a|b`c & <T>"]


@pytest.fixture(scope="module", params=sorted(SAMPLES))
def sample(request: pytest.FixtureRequest) -> dict[str, Any]:
    path = shared_or_skip("traces", "torch", SAMPLES[request.param])
    return diagnosed(str(path)).to_dict()


@pytest.fixture(scope="module")
def decode_dict() -> dict[str, Any]:
    path = shared_or_skip("traces", "torch", SAMPLES["eager_decode"])
    return diagnosed(str(path)).to_dict()


class Page(HTMLParser):
    """Collects the elements, attributes, script bodies and text per id'd element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text_in: dict[str, list[str]] = {}
        self.rows_in: dict[str, int] = {}
        self._script: dict[str, str | None] | None = None
        self._buf: list[str] = []

    def _ids(self) -> list[str]:
        return [a["id"] for _, a in self.stack if a.get("id")]  # type: ignore[misc]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "tr" and any(t == "tbody" for t, _ in self.stack):
            for i in self._ids():
                self.rows_in[i] = self.rows_in.get(i, 0) + 1
        if tag == "script":
            self._script, self._buf = a, []
        if tag not in ("meta", "br", "img", "input", "link", "hr"):
            self.stack.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._buf)))
            self._script = None
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._buf.append(data)
        for i in self._ids():
            self.text_in.setdefault(i, []).append(data)

    def text(self, elem_id: str) -> str:
        return " ".join("".join(self.text_in.get(elem_id, [])).split())


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    p.close()
    return p


def test_html_structure(sample: dict[str, Any]) -> None:
    page = html_r.render(sample)
    p = parse(page)
    assert [t for t, _ in p.tags].count("html") == 1
    for tag, attrs in p.tags:
        for key in ("src", "href"):
            val = (attrs.get(key) or "").strip().lower()
            assert not val.startswith(("http:", "https:", "//")), (tag, key, val)
        assert tag not in ("link", "iframe", "img", "object", "embed")
    header = p.text("summary")
    assert sample["mode"]["value"] in header
    assert sample["bottleneck"]["value"] in header
    assert p.text("mode-value") == sample["mode"]["value"]
    assert p.text("bottleneck-value") == sample["bottleneck"]["value"]
    assert p.rows_in.get("hotspots", 0) == len(sample["hotspots"])
    assert p.rows_in.get("checks-table", 0) == len(sample["checks"])
    data_scripts = [body for a, body in p.scripts if a.get("id") == html_r.CHART_DATA_ID]
    assert len(data_scripts) == 1
    charts = orjson.loads(data_scripts[0])
    assert len(charts["steps"]) == len(sample["steps"])
    assert len(charts["per_layer"]["layers"]) == len(sample["kernel_counts"].get("per_layer", []))
    # The only scripts are the chart data and our inline code.
    assert len(p.scripts) == 2 and not p.scripts[1][0]


def test_html_roofline_and_sections(sample: dict[str, Any]) -> None:
    p = parse(html_r.render(sample))
    ids = {a.get("id") for _, a in p.tags}
    for sec in ("step-mode", "step-categories", "step-overhead", "step-counts",
                "step-hotspots", "steps", "roofline", "recommendations", "warnings", "checks"):
        assert sec in ids
    roof = sample["roofline"]
    has_points = bool(roof and roof.get("available") and roof.get("points"))
    assert ("chart-roofline" in ids) == has_points
    if roof and roof.get("available") and not roof.get("points"):
        assert roof["reason"] in p.text("roofline")
    if has_points:
        charts = orjson.loads(next(b for a, b in p.scripts if a.get("id") == html_r.CHART_DATA_ID))
        assert charts["roofline"]["points"] and charts["roofline"]["peak_flops_s"]
    assert p.rows_in.get("recommendations", 0) == 0  # recommendations are cards, not rows
    assert len([a for t, a in p.tags if t == "div" and a.get("class") == "rec"]) == len(
        sample["recommendations"])


def _evil(data: dict[str, Any]) -> dict[str, Any]:
    d = copy.deepcopy(data)
    for i, name in enumerate(EVIL):
        d["hotspots"][i]["name"] = name
    d["recommendations"][0]["kernels"] = list(EVIL)
    d["warnings"] = ["<img src=x onerror=alert(1)>"]
    if d["kernel_counts"].get("by_shape"):
        d["kernel_counts"]["by_shape"][0]["kernel"] = EVIL[1]
    return d


def test_html_escapes_untrusted_names(decode_dict: dict[str, Any]) -> None:
    d = _evil(decode_dict)
    page = html_r.render(d)
    p = parse(page)
    assert len(p.scripts) == 2
    clean = parse(html_r.render(decode_dict))
    # No element came from the names: as many <b> as the clean page has, no <img> at all.
    assert [t for t, _ in p.tags].count("b") == [t for t, _ in clean.tags].count("b")
    assert "img" not in [t for t, _ in p.tags]
    assert "<script>alert" not in page and "</script><b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;/script&gt;&lt;b&gt;x" in page
    hot = p.text("hotspots")
    assert "<script>alert(1)</script>" in hot and "</script><b>x" in hot
    charts = orjson.loads(next(b for a, b in p.scripts if a.get("id") == html_r.CHART_DATA_ID))
    assert isinstance(charts, dict)


def test_script_json_round_trips() -> None:
    obj = {"k": EVIL + ["<!--", "-->", "\u2028"]}
    raw = str(html_r.script_json(obj))
    assert "<" not in raw and ">" not in raw
    assert orjson.loads(raw) == obj


def test_deterministic(decode_dict: dict[str, Any]) -> None:
    for mod in (html_r, md_r, text_r):
        assert mod.render(decode_dict) == mod.render(copy.deepcopy(decode_dict))
    assert text_r.summary(decode_dict) == text_r.summary(copy.deepcopy(decode_dict))


def _mixed(data: dict[str, Any]) -> dict[str, Any]:
    """A prefill + decode diagnosis built from a real decode dict (no mixed torch trace yet)."""
    d = copy.deepcopy(data)
    d["mode"] = {"value": "mixed", "confidence": 0.9, "evidence": ["prefill then 7 decode steps"]}
    bd = d["breakdown"]
    phase = {"mode": d["mode"], "steps": 1, "median_step_ns": 5_000_000,
             "categories": d["categories"], "breakdown": bd, "bottleneck": d["bottleneck"],
             "overhead_share": 0.5}
    d["phases"] = [
        {**phase, "name": "prefill",
         "mode": {"value": "prefill", "confidence": 0.95, "evidence": ["M = 512"]},
         "bottleneck": {"value": "compute", "evidence": ["GEMM 70% of busy time"]}},
        {**phase, "name": "decode", "steps": 7,
         "mode": {"value": "decode", "confidence": 0.99, "evidence": ["M = 1"]}},
    ]
    d["steps"][0]["phase"] = "prefill"
    d["steps"][0]["name"] = "prefill"
    return d


def test_mixed_phases(decode_dict: dict[str, Any]) -> None:
    d = _mixed(decode_dict)
    p = parse(html_r.render(d))
    assert p.rows_in.get("phases-table") == 2
    assert "prefill" in p.text("phases") and "compute" in p.text("phases")
    charts = orjson.loads(next(b for a, b in p.scripts if a.get("id") == html_r.CHART_DATA_ID))
    assert {s["phase"] for s in charts["steps"]} == {"prefill", "decode"}
    md = md_r.render(d)
    assert "## Phases" in md and "| prefill | prefill (0.95) |" in md
    txt = text_r.render(d)
    assert "Phases" in txt and "Mixed mode" in txt


def test_extras_shown(decode_dict: dict[str, Any]) -> None:
    d = copy.deepcopy(decode_dict)
    d["extras"] = {"hta": {"idle": {"host_wait": 0.5}, "note": "</pre><i>"}}
    p = parse(html_r.render(d))
    assert "host_wait" in p.text("extras") and "</pre><i>" in p.text("extras")
    assert "hta" in md_r.render(d) and "hta" in text_r.render(d)


def test_minimal_dict_renders() -> None:
    d: dict[str, Any] = {"schema_version": 1, "mode": {"value": "unknown", "confidence": 0.0,
                                                       "evidence": []}}
    for mod in (html_r, md_r, text_r):
        assert "unknown" in mod.render(d)
    assert "unknown" in text_r.summary(d)


def _table_rows(md: str, header_start: str) -> list[str]:
    lines = md.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_markdown(sample: dict[str, Any], decode_dict: dict[str, Any]) -> None:
    md = md_r.render(sample)
    assert md.startswith("# profdiag report")
    assert len(_table_rows(md, "| # | name |")) == len(sample["hotspots"])
    assert len(_table_rows(md, "| id | status |")) == len(sample["checks"])
    assert "| category | share of window |" in md
    d = _evil(decode_dict)
    d["hotspots"][3]["name"] = "k" * 300
    md = md_r.render(d)
    rows = _table_rows(md, "| # | name |")
    assert len(rows) == len(d["hotspots"])
    # Every hotspot row keeps 8 cells: escaped pipes do not split it.
    for row in rows:
        assert len(re.split(r"(?<!\\)\|", row.strip())[1:-1]) == 8, row
    assert "a\\|b" in md
    assert "<script>" not in md.replace("`<script>alert(1)</script>`", "")
    assert "`` a\\|b`c & <T> ``" in md  # backtick inside: longer fence
    assert "k" * 119 + "…" in md and "k" * 121 not in md


def test_text(sample: dict[str, Any]) -> None:
    txt = text_r.render(sample)
    assert "\x1b" not in txt
    assert "5. Hotspots" in txt and "Recommendations" in txt
    s = text_r.summary(sample)
    lines = s.splitlines()
    assert len(lines) <= 30
    assert all(len(line) <= 100 for line in lines)
    assert "\x1b" not in s
    assert sample["mode"]["value"] in lines[1]
    assert sample["bottleneck"]["value"] in s
    kc = sample["kernel_counts"]
    assert f"{kc['observed_gemm_calls']} GEMM calls observed / {kc['expected_gemm_calls']}" in s
    narrow = text_r.summary(sample, width=60)
    assert all(len(line) <= 60 for line in narrow.splitlines())


def test_registry_renders_all_formats(decode_dict: dict[str, Any]) -> None:
    from profdiag.renderers import render

    for fmt in ("html", "md", "txt"):
        assert render(decode_dict, fmt)


def test_warm_compiles_the_report_template_and_changes_no_page(decode_dict: dict[str, Any]) -> None:
    """renderers.warm (what `report` does while a prefetch child streams): the HTML report's
    template in the shared environment's cache; the same page after it; the other formats
    have nothing to prepare."""
    from profdiag.renderers import render, warm
    from profdiag.renderers.templating import environment

    env = environment()
    env.cache.clear()
    page = render(decode_dict, "html")
    env.cache.clear()
    warm("html")
    assert [name for _, name in env.cache.keys()] == [html_r.TEMPLATE]
    assert render(decode_dict, "html") == page
    for fmt in ("json", "md", "txt"):
        warm(fmt)
    assert len(env.cache) == 1


def test_templates_ship_in_package() -> None:
    from importlib.resources import files

    tdir = files("profdiag.renderers") / "templates"
    for name in ("report.html.j2", "report.css", "report.js"):
        assert (tdir / name).is_file()

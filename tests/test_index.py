"""`profdiag index`: the static site over a history or a directory, in headless Chromium too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from profdiag import history
from profdiag.cli import main
from profdiag.index_site import build_site, build_view, entries_from_db
from profdiag.renderers import render
from profdiag.renderers.site import DATA_ID

from helpers import diagnose_shared

TRACES = [
    ("own_tiny_decode_ctx512_B1_steps8.json.gz", {"commit": "c1", "model": "tiny"}),
    ("own_tiny_prefill_T128_B1.json.gz", {"commit": "c2", "model": "tiny"}),
    ("own_1b_prefill_T512_B1.json.gz", {"commit": "c3", "model": "1b"}),
    ("own_1b_decode_ctx1024_B1_steps8_cudagraph.json.gz",
     {"commit": "c4", "model": "1b", "note": "</script><img src=x onerror=alert(1)>&amp;"}),
]
HOSTILE = TRACES[3][1]["note"]


@pytest.fixture(scope="module")
def diagnosed() -> list[tuple[Path, dict, dict]]:
    """(trace path, diagnosis dict, labels) for each trace, diagnosed once."""
    return diagnose_shared(TRACES)


@pytest.fixture(scope="module")
def db(tmp_path_factory, diagnosed) -> Path:
    from datetime import datetime, timezone

    path = tmp_path_factory.mktemp("hist") / "h.db"
    for i, (trace, data, labels) in enumerate(diagnosed):
        history.record(data, trace, labels=labels, db=path,
                       recorded_at=datetime(2025, 4, 1 + i, 9, 30, tzinfo=timezone.utc))
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory, db) -> Path:
    out = tmp_path_factory.mktemp("site")
    build_site(db, out)
    return out


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _entry(args):
    main(list(args))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_entry, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _embedded(html: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', html, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


# ------------------------------------------------------------------------------ the view


def test_view_has_one_row_per_run_and_chart_series(db, diagnosed):
    view = build_view(entries_from_db(db))
    rows = view["rows"]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["mode"] for r in rows] == [d["mode"]["value"] for _, d, _ in diagnosed]
    assert rows[0]["labels"] == "commit=c1 model=tiny"
    assert rows[0]["date"] == "2025-04-01 09:30"
    assert rows[0]["href"] == "runs/1.html"
    counts = diagnosed[0][1]["kernel_counts"]
    assert rows[0]["gemm"] == f"{counts['observed_gemm_calls']}/{counts['expected_gemm_calls']}"
    charts = {c["metric"]: c for c in view["charts"]}
    assert len(charts["overhead_share"]["points"]) == 4
    assert [p["id"] for p in charts["step_ms.decode"]["points"]] == ["1", "4"]
    assert [p["id"] for p in charts["step_ms.prefill"]["points"]] == ["2", "3"]
    assert charts["overhead_share"]["points"][0]["y"] == pytest.approx(
        diagnosed[0][1]["overhead"]["overhead_share"] * 100, abs=1e-4)


def test_site_files_and_report_pages(site, diagnosed):
    index = (site / "index.html").read_text()
    assert index.count('<tr data-id="') == 4
    for i, (_, data, _) in enumerate(diagnosed, start=1):
        assert (site / "runs" / f"{i}.html").read_text() == render(data, "html")
        assert f'href="runs/{i}.html"' in index
    data = _embedded(index)
    assert data["runs"] == ["1", "2", "3", "4"]
    assert {c["metric"] for c in data["charts"]} >= {"overhead_share", "busy_share",
                                                      "step_ms.decode", "gemm_calls"}


def test_index_is_offline_and_escaped(site):
    index = (site / "index.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', index)
    assert "<link" not in index and "@import" not in index
    assert HOSTILE not in index and "<img" not in index
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;" in index
    raw = re.search(rf'id="{DATA_ID}">(.*?)</script>', index, re.S).group(1)
    assert "</" not in raw and "<" not in raw
    # the JSON keeps the label text intact (the point names carry it)
    names = [p["name"] for c in json.loads(raw)["charts"] for p in c["points"]]
    assert any(HOSTILE in n for n in names)


def test_output_is_deterministic(db, site, tmp_path):
    build_site(db, tmp_path)
    files = sorted(p.relative_to(site) for p in site.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (site / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_index_of_a_directory_skips_bad_files(tmp_path, diagnosed, capsys):
    src = tmp_path / "traces"
    src.mkdir()
    shutil.copy(diagnosed[1][0], src)  # a trace: diagnosed
    (src / "report.json").write_text(render(diagnosed[0][1], "json"))  # a JSON report
    (src / "broken.json.gz").write_bytes(b"\x1f\x8b not really gzip")
    (src / "notes.txt").write_text("ignored: not a trace suffix")
    out = tmp_path / "site"
    code, stdout, stderr = run("index", str(src), "-o", str(out))
    assert code == 0
    assert stderr.count("\n") == 1 and "warning: skipping broken.json.gz" in stderr
    assert "2 profiles, 1 skipped" in stdout
    index = (out / "index.html").read_text()
    assert index.count('<tr data-id="') == 2
    pages = sorted(p.name for p in (out / "runs").iterdir())
    assert pages == ["own_tiny_prefill_T128_B1.html", "report.html"]
    assert (out / "runs" / "report.html").read_text() == render(diagnosed[0][1], "html")


def test_index_cli_errors(tmp_path):
    code, _, err = run("index", str(tmp_path / "missing"), "-o", str(tmp_path / "s"))
    assert code == 2 and "no such file" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run("index", str(empty), "-o", str(tmp_path / "s"))
    assert code == 4 and err.count("\n") == 1
    foreign = tmp_path / "other.db"
    import sqlite3

    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (x)")
    code, _, err = run("index", str(foreign), "-o", str(tmp_path / "s"))
    assert code == 3 and "not a profdiag history" in err


# ------------------------------------------------------------------------------ in a browser


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: Path, tmp_path: Path, fragment: str = "") -> str:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile = tmp_path / f"chromium-profile-{abs(hash(fragment))}"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}",
           "--virtual-time-budget=2000", "--dump-dom", page.resolve().as_uri() + fragment]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _charts(dom: str) -> list[str]:
    return re.findall(r'<svg class="trend"[^>]*>(.*?)</svg>', dom, re.S)


def test_index_in_headless_chromium(site, tmp_path):
    dom = dump_dom(site / "index.html", tmp_path)
    body = re.search(r"<tbody>(.*?)</tbody>", dom, re.S).group(1)
    assert body.count("<tr ") == 4 and "hidden" not in body
    charts = _charts(dom)
    data = _embedded((site / "index.html").read_text())
    assert len(charts) == len(data["charts"]) >= 4
    for svg, chart in zip(charts, data["charts"]):
        assert svg.count("<circle") == len(chart["points"])
        assert svg.count('<path d="M') == 1
    assert "4 of 4 shown" in dom


def test_index_filter_and_sort_from_the_url(site, tmp_path):
    dom = dump_dom(site / "index.html", tmp_path, "#q=model%3D1b&sort=7&desc=1")
    rows = re.findall(r'<tr data-id="(\d+)"( hidden="")?', dom)
    visible = [i for i, hidden in rows if not hidden]
    assert sorted(visible) == ["3", "4"] and "2 of 4 shown" in dom
    overhead = {r["id"]: r["overhead_sort"] for r in build_view_rows(site)}
    order = [i for i, _ in rows]
    assert order == sorted(overhead, key=lambda i: -overhead[i])  # overhead share, descending
    charts = _charts(dom)
    assert sum(svg.count("<circle") for svg in charts) > 0
    for svg in charts:
        assert svg.count("<circle") <= 2  # only the two 1b runs are drawn


def build_view_rows(site: Path) -> list[dict]:
    """(id, overhead share) per row, read back from the static table."""
    index = (site / "index.html").read_text()
    out = []
    for rid, cells in re.findall(r'<tr data-id="(\d+)">(.*?)</tr>', index, re.S):
        sorts = re.findall(r'data-sort="([^"]*)"', cells)
        out.append({"id": rid, "overhead_sort": float(sorts[2])})
    return out

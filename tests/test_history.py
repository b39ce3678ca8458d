"""The local history: record real diagnoses, filter, trend, compare, versioning, concurrency."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from profdiag import history
from profdiag.cli import main
from profdiag.renderers import compare_text

from helpers import REPO, diagnose_shared, shared_or_skip

# (file, labels): tiny and 1b models, prefill, eager decode and CUDA-graph decode
TRACES = [
    ("own_tiny_decode_ctx512_B1_steps8.json.gz", {"commit": "c1", "model": "tiny"}),
    ("own_tiny_prefill_T128_B1.json.gz", {"commit": "c2", "model": "tiny"}),
    ("own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz", {"commit": "c3", "model": "tiny"}),
    ("own_1b_prefill_T512_B1.json.gz", {"commit": "c4", "model": "1b"}),
    ("own_1b_decode_ctx1024_B1_steps8_cudagraph.json.gz", {"commit": "c5", "model": "1b"}),
]
DAY = [datetime(2025, 3, d, 12, 0, tzinfo=timezone.utc) for d in range(1, 6)]


@pytest.fixture(scope="module")
def diagnosed() -> list[tuple[Path, dict, dict]]:
    """(trace path, diagnosis dict, labels) for each trace, diagnosed once."""
    return diagnose_shared(TRACES)


@pytest.fixture()
def db(tmp_path, diagnosed) -> Path:
    """A history with the five traces recorded on five days."""
    path = tmp_path / "h.db"
    for (trace, data, labels), day in zip(diagnosed, DAY):
        history.record(data, trace, labels=labels, db=path, recorded_at=day)
    return path


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def _entry(args):
    main(list(args))


def run(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    """The real entry point (one-line errors, exit codes): (code, stdout, stderr)."""
    result = CliRunner().invoke(_entry, list(args), catch_exceptions=False, env=env)
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- library


def test_record_returns_ids_and_lists_every_run(db, diagnosed):
    runs = history.list_runs(db)
    assert runs["id"].tolist() == [1, 2, 3, 4, 5]
    assert [r for r in runs["labels"]] == [labels for _, _, labels in diagnosed]
    assert runs["mode"].tolist() == [d["mode"]["value"] for _, d, _ in diagnosed]
    assert runs["bottleneck"].tolist() == [d["bottleneck"]["value"] for _, d, _ in diagnosed]
    first = runs.iloc[0]
    data = diagnosed[0][1]
    assert first["overhead_share"] == pytest.approx(data["overhead"]["overhead_share"])
    assert first["observed_gemm_calls"] == data["kernel_counts"]["observed_gemm_calls"]
    assert first["format"] == "torch" and "H100" in first["device"]
    assert len(first["content_hash"]) == 64
    # the median decode step, from the steps of the diagnosis
    walls = sorted(s["wall_ns"] for s in data["steps"] if s["phase"] == "decode")
    assert first["step_ms_decode"] == pytest.approx((walls[3] + walls[4]) / 2 / 1e6)
    assert runs.iloc[1]["step_ms_prefill"] > 0 and pd.isna(runs.iloc[1]["step_ms_decode"])


def test_recording_the_same_trace_twice_is_idempotent(db, diagnosed):
    trace, data, labels = diagnosed[0]
    assert history.record(data, trace, labels=labels, db=db) == 1
    assert history.record(data, trace, labels=dict(reversed(list(labels.items()))), db=db) == 1
    assert len(history.list_runs(db)) == 5
    # other labels (another commit) or another kind is a new run
    assert history.record(data, trace, labels={"commit": "c9", "model": "tiny"}, db=db) == 6
    assert history.record(data, trace, labels=labels, db=db, kind="gate") == 7


def test_filters(db):
    ids = lambda **f: history.list_runs(db, **f)["id"].tolist()  # noqa: E731
    assert ids(labels={"model": "1b"}) == [4, 5]
    assert ids(labels={"model": "tiny", "commit": "c3"}) == [3]
    assert ids(labels={"model": "nope"}) == []
    assert ids(mode="prefill") == [2, 4]
    assert ids(mode="decode") == [1, 3, 5]
    assert ids(since="2025-03-02", until="2025-03-04") == [2, 3, 4]
    assert ids(since="2025-03-04T12:00:00Z") == [4, 5]
    runs = history.list_runs(db)
    memory = runs[runs["bottleneck"] == "memory"]["id"].tolist()
    assert ids(verdict="memory") == memory
    assert ids(verdict="fail") == runs[runs["status"] == "fail"]["id"].tolist()
    with pytest.raises(history.UsageError):
        history.list_runs(db, since="last tuesday")


def test_get_returns_the_stored_diagnosis_unchanged(db, diagnosed):
    run_ = history.get(db, 4)
    assert run_["diagnosis"] == diagnosed[3][1]
    assert run_["labels"] == {"commit": "c4", "model": "1b"}
    assert run_["recorded_at"].startswith("2025-03-04T12:00:00")
    assert run_["trace_path"].endswith("own_1b_prefill_T512_B1.json.gz")


def test_trend_and_notebook_api(db, diagnosed):
    df = history.trend(db, "overhead_share")
    assert df["run_id"].tolist() == [1, 2, 3, 4, 5]
    assert df["value"].tolist() == pytest.approx(
        [d["overhead"]["overhead_share"] for _, d, _ in diagnosed])
    decode = history.trend(db, "step_ms.decode", labels={"model": "tiny"})
    assert decode["run_id"].tolist() == [1, 3]
    assert history.trend(db, "gemm_calls")["value"].tolist() == [
        d["kernel_counts"]["observed_gemm_calls"] for _, d, _ in diagnosed]
    assert {"overhead_share", "busy_share", "step_ms.decode", "step_ms.prefill",
            "category.compute", "gemm_calls"} <= set(history.metric_names(db))

    h = history.open(db)
    assert h.runs["id"].tolist() == [1, 2, 3, 4, 5]
    assert set(h.labels.columns) == {"run_id", "key", "value"} and len(h.labels) == 10
    wide = h.metrics.pivot(index="run_id", columns="metric", values="value")
    assert wide.loc[4, "category.compute"] == pytest.approx(diagnosed[3][1]["categories"]["compute"])
    assert h.get(2)["labels"]["commit"] == "c2"


def test_diff_of_two_runs(db):
    a, b = history.get(db, 1)["diagnosis"], history.get(db, 3)["diagnosis"]
    d = history.diff(a, b)
    assert d["mode"] == {"before": "decode", "after": "decode"}
    assert d["overhead_share"]["delta"] == pytest.approx(
        b["overhead"]["overhead_share"] - a["overhead"]["overhead_share"], abs=1e-6)
    assert set(d["categories"]) == set(a["categories"])
    assert "decode" in d["step_ms"]


def test_content_hash_is_the_sha256_of_the_trace_bytes(db, diagnosed):
    import hashlib

    trace = diagnosed[0][0]
    assert history.list_runs(db).iloc[0]["content_hash"] == hashlib.sha256(
        trace.read_bytes()).hexdigest()


def test_default_db_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("PROFDIAG_DB", raising=False)
    assert history.resolve_db(None) == Path(".profdiag/history.db")
    monkeypatch.setenv("PROFDIAG_DB", str(tmp_path / "x.db"))
    assert history.resolve_db(None) == tmp_path / "x.db"
    assert history.resolve_db(tmp_path / "y.db") == tmp_path / "y.db"


# --------------------------------------------------------------------------- versioning


def _version(path: Path) -> str:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]


def test_an_older_history_is_migrated(tmp_path, diagnosed):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:  # a history from before v1's tables (version 0)
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        c.executemany("INSERT INTO meta VALUES (?, ?)",
                      [("app", "profdiag"), ("schema_version", "0")])
    trace, data, labels = diagnosed[0]
    assert history.record(data, trace, labels=labels, db=path) == 1
    assert _version(path) == str(history.SCHEMA_VERSION)


def test_a_future_migration_runs_once_on_open(db, monkeypatch):
    def to_2(conn):
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setattr(history, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(history.MIGRATIONS, 2, to_2)
    assert len(history.list_runs(db)) == 5
    assert _version(db) == "2"
    with sqlite3.connect(db) as c:
        assert "note" in [r[1] for r in c.execute("PRAGMA table_info(runs)")]
    assert len(history.list_runs(db)) == 5  # already at 2: no second ALTER


def test_a_newer_history_is_refused(db):
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(history.UsageError, match="schema_version 99.*schema_version 1"):
        history.list_runs(db)
    code, out, err = run("history", "list", "--db", str(db))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "99" in err and str(db) in err


# --------------------------------------------------------------------------- bad files


def test_corrupt_file_is_one_line_exit_3(tmp_path):
    bad = tmp_path / "random.db"
    bad.write_bytes(os.urandom(4096))
    code, out, err = run("history", "list", "--db", str(bad))
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and str(bad) in err and "not a SQLite database" in err
    with pytest.raises(history.TraceFormatError):
        history.record({}, None, db=bad)


def test_corrupt_sqlite_pages_are_one_line_exit_3(db):
    raw = bytearray(db.read_bytes())
    raw[100:4096] = os.urandom(3996)  # keep the magic header, trash the schema page
    db.write_bytes(bytes(raw))
    for wal in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        wal.unlink(missing_ok=True)
    code, _, err = run("history", "list", "--db", str(db))
    assert code == 3 and err.count("\n") == 1 and str(db) in err


def test_foreign_sqlite_is_refused(tmp_path, diagnosed):
    other = tmp_path / "browser.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE cookies (host TEXT, value TEXT)")
        c.execute("INSERT INTO cookies VALUES ('x', 'y')")
    code, out, err = run("history", "list", "--db", str(other))
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "not a profdiag history" in err and "cookies" in err
    trace, data, labels = diagnosed[0]
    with pytest.raises(history.TraceFormatError):
        history.record(data, trace, labels=labels, db=other)
    with sqlite3.connect(other) as c:  # and it was left untouched
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master")] == ["cookies"]


def test_missing_history_is_a_usage_error(tmp_path):
    code, _, err = run("history", "list", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "no history" in err
    assert not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------- concurrency

_WRITER = """
import json, sys
from profdiag import history
data = json.load(open(sys.argv[1]))
for i in range(20):
    history.record(data, sys.argv[2], labels={"commit": f"{sys.argv[4]}-{i}"}, db=sys.argv[3])
"""


def test_concurrent_recording_loses_nothing(tmp_path, diagnosed):
    trace, data, _ = diagnosed[1]
    blob = tmp_path / "d.json"
    blob.write_text(json.dumps(data))
    path = tmp_path / "shared.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(blob), str(trace), str(path),
                               name], env=env, stderr=subprocess.PIPE, text=True)
             for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    runs = history.list_runs(path)
    assert len(runs) == 40 and runs["id"].is_unique
    assert {r["commit"] for r in runs["labels"]} == {f"{n}-{i}" for n in "ab" for i in range(20)}
    assert len(history.open(path).metrics["run_id"].unique()) == 40


# --------------------------------------------------------------------------- CLI


def test_report_record_then_history_list(tmp_path):
    trace = shared_or_skip("traces", "torch", "own_tiny_prefill_T128_B1.json.gz")
    path = tmp_path / "cli.db"
    args = ["report", str(trace), "-o", str(tmp_path / "r.json"), "--record", "--db", str(path),
            "--label", "commit=abc", "--label", "branch=main"]
    code, out, _ = run(*args)
    assert code == 0 and "recorded as run 1" in out
    code, out, _ = run(*args)
    assert "recorded as run 1" in out  # same trace, same labels: no duplicate
    code, out, _ = run("history", "list", env={"PROFDIAG_DB": str(path)})
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "date", "(UTC)", "labels"]
    assert "branch=main commit=abc" in lines[2] and "prefill" in lines[2]
    assert lines[-1] == "1 run"


def test_history_list_filters_through_the_cli(db):
    code, out, _ = run("history", "list", "--db", str(db), "--label", "model=1b")
    assert code == 0
    rows = [ln.split()[0] for ln in out.splitlines()[2:-1]]
    assert rows == ["4", "5"]
    code, out, _ = run("history", "list", "--db", str(db), "--mode", "prefill",
                       "--since", "2025-03-03")
    assert [ln.split()[0] for ln in out.splitlines()[2:-1]] == ["4"]
    code, out, _ = run("history", "list", "--db", str(db), "--label", "model=none")
    assert code == 0 and out.strip() == "no runs match"
    code, _, err = run("history", "list", "--db", str(db), "--label", "oops")
    assert code == 2 and "KEY=VALUE" in err


def test_history_show_summary_and_rerender(db, diagnosed, tmp_path):
    code, out, _ = run("history", "show", "2", "--db", str(db))
    assert code == 0
    assert out.startswith("run 2 (report) recorded 2025-03-02T12:00:00")
    assert "commit=c2 model=tiny" in out and "prefill" in out
    # a stored diagnosis re-renders exactly like the fresh one
    from profdiag.renderers import render

    out_json = tmp_path / "r.json"
    code, out, _ = run("history", "show", "2", "--db", str(db), "-o", str(out_json))
    assert code == 0 and out_json.read_text() == render(diagnosed[1][1], "json")
    code, out, _ = run("history", "show", "2", "--db", str(db), "-f", "md")
    assert code == 0 and out.rstrip("\n") == render(diagnosed[1][1], "md").rstrip("\n")
    code, _, err = run("history", "show", "42", "--db", str(db))
    assert code == 2 and "no run 42" in err


def test_history_trend_draws_a_sparkline(db, diagnosed):
    code, out, _ = run("history", "trend", "overhead_share", "--db", str(db))
    assert code == 0
    head, *table = out.splitlines()
    spark = head.split(": ", 1)[1].split("  ")[0]
    assert len(spark) == 5 and set(spark) <= set("▁▂▃▄▅▆▇█")
    values = [d["overhead"]["overhead_share"] for _, d, _ in diagnosed]
    assert spark[values.index(min(values))] == "▁" and spark[values.index(max(values))] == "█"
    assert [ln.split()[0] for ln in table[2:]] == ["1", "2", "3", "4", "5"]
    code, out, _ = run("history", "trend", "step_ms.decode", "--db", str(db),
                       "--label", "model=tiny")
    assert [ln.split()[0] for ln in out.splitlines()[3:]] == ["1", "3"]
    code, _, err = run("history", "trend", "nonsense", "--db", str(db))
    assert code == 2 and "overhead_share" in err


def test_sparkline_scaling():
    from profdiag.commands.history import sparkline

    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, None, 1.0]) == "▄ ▄"
    assert sparkline([]) == ""


def test_history_compare(db, tmp_path):
    from profdiag.commands.history import _compare_module

    code, out, _ = run("history", "compare", "1", "3", "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "run 1 (commit=c1 model=tiny) -> run 3 (commit=c3 model=tiny)"
    assert "overhead share" in out and "decode" in out
    a, b = history.get(db, 1)["diagnosis"], history.get(db, 3)["diagnosis"]
    code, out, _ = run("history", "compare", "1", "3", "--db", str(db), "-f", "json")
    assert code == 0
    cmp_mod = _compare_module()
    if cmp_mod is not None:  # the same comparison as `profdiag compare`, from stored dicts
        assert json.loads(out) == json.loads(compare_text.render(cmp_mod.compare(a, b), "json"))
        target = tmp_path / "cmp.md"
        code, out, _ = run("history", "compare", "1", "3", "--db", str(db), "-o", str(target))
        assert code == 0 and target.read_text() == compare_text.render(cmp_mod.compare(a, b), "md")
    else:
        assert json.loads(out) == history.diff(a, b)


def test_minimal_diff_fallback(db, monkeypatch):
    import profdiag.commands.history as cmd

    monkeypatch.setattr(cmd, "_compare_module", lambda: None)
    code, out, _ = run("history", "compare", "1", "3", "--db", str(db))
    assert code == 0
    rows = {ln.split("  ")[0]: ln for ln in out.splitlines()[3:]}
    assert "overhead share" in rows and "step ms (decode)" in rows and "kernels" in rows
    code, out, _ = run("history", "compare", "1", "3", "--db", str(db), "-f", "json")
    assert json.loads(out) == history.diff(history.get(db, 1)["diagnosis"],
                                           history.get(db, 3)["diagnosis"])

"""Directories of traces: parallel diagnosis, per-rank summary, `profdiag report DIR`."""

import json
import shutil

import pytest

from profdiag.cli import main
from profdiag.multi import TraceFailure, TraceResult, diagnose_many, rank_summary

from helpers import rank_copy


@pytest.fixture(scope="module")
def rank_dir(tmp_path_factory, tiny_decode):
    d = tmp_path_factory.mktemp("ranks")
    # file order differs from rank order on purpose; rank 1 is 1.5x slower
    rank_copy(tiny_decode, d / "a_worker.json.gz", 2, 3, pg_count=None)
    rank_copy(tiny_decode, d / "b_worker.json.gz", 1, 3, slow=1.5, pg_count=None)
    rank_copy(tiny_decode, d / "c_worker.json.gz", 0, 3, pg_count=None)
    (d / "notes.txt").write_text("not a trace\n")
    return d


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_diagnose_many_keeps_order_ranks_and_failures(rank_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    paths = sorted(rank_dir.glob("*.json.gz")) + [bad]
    res = diagnose_many(paths, {}, jobs=2)
    assert [r.path for r in res] == [str(p) for p in paths]
    assert [r.rank for r in res[:3]] == [2, 1, 0]
    assert isinstance(res[3], TraceFailure) and res[3].exit_code == 3
    summary = rank_summary(res)
    assert [r.rank for r in summary.rows[:3]] == [0, 1, 2]
    assert summary.slowest_rank == 1 and summary.slowest_by == "median step time"
    assert summary.spread == pytest.approx(1.5, rel=0.05)
    assert summary.rows[3].error and summary.rows[3].rank == 3  # no rank: next free number


def test_rank_falls_back_to_file_order(tiny_prefill, tiny_graph):
    res = diagnose_many([tiny_prefill, tiny_graph], {}, jobs=1)
    assert all(isinstance(r, TraceResult) and r.rank is None for r in res)
    assert [r.rank for r in rank_summary(res).rows] == [0, 1]


def test_report_on_a_directory_writes_reports_and_an_index(rank_dir, tmp_path, capsys):
    out = tmp_path / "reports"
    code, stdout, _ = run_cli(["report", str(rank_dir), "-o", str(out), "-f", "json"], capsys)
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_worker.report.json", "b_worker.report.json", "c_worker.report.json",
                     "index.json"]
    index = json.loads((out / "index.json").read_text())
    assert index["slowest_rank"] == 1
    assert [r["rank"] for r in index["ranks"]] == [0, 1, 2]
    assert "slowest rank: 1 by median step time" in stdout
    assert json.loads((out / "a_worker.report.json").read_text())["mode"]["value"] == "decode"


def test_directory_of_non_traces_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("hello")
    code, _, err = run_cli(["report", str(tmp_path), "-o", str(tmp_path / "o")], capsys)
    assert code == 3 and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_directory_where_every_trace_fails(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    (src / "r0.json").write_text('{"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "a", '
                                 '"ts": 1, "dur": 1, "pid": 1, "tid": 1}]}')
    (src / "r1.json").write_text('{"traceEvents": []}')
    code, _, err = run_cli(["report", str(src), "-o", str(tmp_path / "o"), "-q"], capsys)
    assert code == 4 and "none of the 2 traces" in err
    assert not (tmp_path / "o").exists()


def test_rocprofv3_folder_is_not_fanned_out(tmp_path):
    from profdiag.multi import fan_out_paths

    from helpers import shared_or_skip

    src = shared_or_skip("samples", "rocprof", "v3", "csv_docs_rocm-systems_2025-08")
    d = tmp_path / "rocprof_out"
    shutil.copytree(src, d)
    # one rocprofv3 output folder is one trace, never a folder of ranks
    assert fan_out_paths(str(d)) is None


def test_report_on_a_directory_records_every_trace(rank_dir, tmp_path, capsys):
    from profdiag import history

    db = tmp_path / "h.db"
    code, _, _ = run_cli(["report", str(rank_dir), "-o", str(tmp_path / "r"), "-q", "--record",
                          "--db", str(db), "--label", "run=nightly"], capsys)
    assert code == 0
    runs = history.list_runs(db)
    assert len(runs) == 3

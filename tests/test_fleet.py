"""Ranks of one run vs unrelated traces; --scheduler on a real Dask scheduler with two workers."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profdiag.multi import (
    RankSummary,
    TraceResult,
    fleet_summary,
    group_runs,
    name_rank,
    rank_summary,
)

from helpers import FIXTURES, REPO, SHARED_TORCH, rank_copy, run_cli

GRAPH = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz"
SLOW_RANK, SLOW = 5, 1.6


@pytest.fixture(scope="module")
def eight_ranks(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("eight")
    for r in range(8):
        rank_copy(GRAPH, d / f"trace_{r}.json.gz", r, 8, SLOW if r == SLOW_RANK else 1.0)
    return d


@pytest.fixture(scope="module")
def local_out(eight_ranks, tmp_path_factory) -> Path:
    """`report DIR -f json` on the eight ranks with local processes, run once per module."""
    import profdiag.cli

    out = tmp_path_factory.mktemp("local") / "reports"
    try:
        code = profdiag.cli.main(["report", str(eight_ranks), "-f", "json", "-o", str(out),
                                  "-j", "2", "-q"])
    except SystemExit as exc:
        code = exc.code
    assert not code
    return out


def _rows(index: Path) -> list[dict]:
    rows = json.loads(index.read_text())["ranks"]
    return [{k: v for k, v in r.items() if k != "report"} for r in rows]


# ----------------------------------------------------------------------------- unit

def test_name_rank_patterns():
    assert name_rank("rank-3.Apr_03_18_51_38.1102.pt.trace.json.gz") == (
        3, "rank-*.Apr_#_#_#_#.#.pt.trace.json.gz")
    assert name_rank("job7_rank12.json")[0] == 12  # the last match
    assert name_rank("worker0.1623143089861.pt.trace.json.gz")[0] == 0
    assert name_rank("llama_tp8.json")[0] is None  # a parallel degree, not a rank
    assert name_rank("own_1b_decode_ctx1024_B1_steps8.json.gz")[0] is None


def _fake(path: str, rank: int | None, world: int | None, start_s: float,
          walls: list[int], comm_ns: int | None = None) -> TraceResult:
    data = {"steps": [{"wall_ns": w} for w in walls], "breakdown": {"busy_ns": sum(walls)},
            "mode": {"value": "decode"}, "bottleneck": {"value": "memory"},
            "communication": {"calls": 1 if comm_ns is not None else 0,
                              "total_ns": comm_ns or 0, "exposed_ns": comm_ns or 0}}
    rk, masked = name_rank(path)
    info = {"world_size": world, "rank": rank, "backend": "nccl" if world else None,
            "pg_count": 1 if world else None, "start_ns": int(start_s * 1e9),
            "name_rank": rk, "name_key": masked}
    return TraceResult(path, rank, data, info)


def test_group_runs_by_world_size_start_time_and_repeated_ranks():
    res = [
        _fake("a.json", 0, 2, 0.0, [10]), _fake("b.json", 1, 2, 1.0, [10]),
        _fake("c.json", 0, 2, 3600.0, [10]), _fake("d.json", 1, 2, 3601.0, [10]),  # an hour later
        _fake("e.json", 0, 2, 3602.0, [10]),  # rank 0 again: a third run, alone -> independent
        _fake("x_rank0.json", None, None, 50.0, [10]), _fake("x_rank1.json", None, None, 51.0, [10]),
        _fake("solo.json", None, None, 0.0, [10]),
        _fake("single.json", 0, 1, 0.0, [10]),  # world size 1: never a rank of a run
    ]
    groups = group_runs(res)
    runs = [(g.run_id, [r.path for r in g.results]) for g in groups]
    assert runs == [("run-1", ["a.json", "b.json"]), ("run-2", ["c.json", "d.json"]),
                    (None, ["e.json"]), ("run-3", ["x_rank0.json", "x_rank1.json"]),
                    (None, ["solo.json"]), (None, ["single.json"])]
    fleet = fleet_summary(res)
    assert fleet.single is None and fleet.to_dict()["slowest_rank"] is None
    assert [r["run"] for r in fleet.to_dict()["runs"]] == ["run-1", "run-2", "run-3"]
    assert fleet.to_dict()["independent"] == ["e.json", "solo.json", "single.json"]


def test_straggler_skew_and_wait_in_collectives_exact():
    # rank 2 computes longer; ranks 0 and 1 wait for it inside the all-reduce
    res = [_fake("r0.json", 0, 3, 0, [100, 110, 120], comm_ns=50),
           _fake("r1.json", 1, 3, 0, [100, 100, 130], comm_ns=45),
           _fake("r2.json", 2, 3, 0, [150, 160, 125], comm_ns=20)]
    s: RankSummary = rank_summary(res)
    assert s.slowest_rank == 2 and s.slowest_by == "median step time"
    assert s.spread == 1.5  # median step: r0 110, r1 100, r2 150 -> 150 / 100
    # per step: max - min = 150-100, 160-100, 130-120
    assert s.step_skew_ns == [50, 60, 10]
    assert s.slowest_rank_by_step == {2: 2, 1: 1}
    assert [r.collective_wait_ns for r in s.rows] == [30, 25, 0]
    assert s.others_wait_ns == 55
    assert s.to_dict()["step_skew"] == {"steps": 3, "median_ns": 50, "max_ns": 60,
                                        "slowest_rank_by_step": {"1": 1, "2": 2}}
    assert (s.straggler_rank, s.straggler_by) == (2, "least time in collectives")


def test_synchronous_run_straggler_is_the_rank_that_waits_least():
    """Collectives equalise step times: rank 1 computes longest, so it waits least (10 ns)."""
    res = [_fake("r0.json", 0, 3, 0, [200, 200], comm_ns=90),
           _fake("r1.json", 1, 3, 0, [200, 200], comm_ns=10),
           _fake("r2.json", 2, 3, 0, [203, 201], comm_ns=60)]
    s = rank_summary(res)
    # by step time rank 2 looks slowest (median 202 vs 200: noise), but it waits 50 ns
    assert s.slowest_rank == 2 and s.spread == 1.01
    assert (s.straggler_rank, s.straggler_by) == (1, "least time in collectives")
    assert [r.collective_wait_ns for r in s.rows] == [80, 0, 50] and s.others_wait_ns == 130
    from profdiag.multi import summary_text

    assert ("straggler: rank 1 (least time in collectives); the other ranks spend 0.00 ms"
            in summary_text(s))


def test_shared_torch_folder_names_are_not_ranks():
    files = sorted(SHARED_TORCH.glob("*.json.gz")) if SHARED_TORCH.exists() else []
    if not files:
        pytest.skip("../shared/traces/torch not available")
    # no distributedInfo in these captures and no rank in their names: nothing groups them
    for f in files:
        doc_head = gzip.open(f).read(4096)
        assert b"distributedInfo" not in doc_head
    res = [_fake(f.name, None, None, i, [10 + i]) for i, f in enumerate(files)]
    fleet = fleet_summary(res)
    assert fleet.runs == [] and len(fleet.independent) == len(files)


# ----------------------------------------------------------------------------- CLI, local

def test_unrelated_real_traces_get_no_slowest_rank(tmp_path, capsys):
    src = tmp_path / "mixed"
    src.mkdir()
    for name in ("own_tiny_prefill_T128_B1.json.gz", "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz"):
        shutil.copy(FIXTURES / "torch" / name, src / name)
    code, out, _ = run_cli(["report", str(src), "-f", "json", "-o", str(tmp_path / "o"), "-j", "1"],
                           capsys)
    assert code == 0
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["slowest_rank"] is None and index["runs"] == []
    assert len(index["independent"]) == 2
    assert "slowest rank:" not in out and "2 independent trace(s)" in out


def test_eight_ranks_local_names_rank_5(eight_ranks, local_out, tmp_path, capsys):
    index = json.loads((local_out / "index.json").read_text())
    assert index["slowest_rank"] == SLOW_RANK and index["slowest_by"] == "median step time"
    assert index["spread"] == pytest.approx(SLOW, rel=0.01)
    (run,) = index["runs"]
    assert run["world_size"] == 8 and run["ranks_present"] == list(range(8))
    # every one of the 8 steps is slowest on rank 5; skew = 0.6 x the step's wall time
    assert run["step_skew"]["slowest_rank_by_step"] == {"5": 8}
    assert run["step_skew"]["median_ns"] == pytest.approx(0.6 * 641_000, rel=0.01)
    # the same folder as a file:// URL gives the same rows, and says who is slowest
    code, stdout, _ = run_cli(["report", f"file://{eight_ranks}", "-f", "json", "-o",
                               str(tmp_path / "url"), "-j", "2"], capsys)
    assert code == 0 and _rows(tmp_path / "url" / "index.json") == _rows(local_out / "index.json")
    assert f"slowest rank: {SLOW_RANK} by median step time (1.60x the fastest)" in stdout


# ----------------------------------------------------------------------------- Dask

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_bin() -> str:
    exe = Path(sys.executable).with_name("dask")
    if not exe.exists():
        pytest.skip("dask CLI not installed (pip install 'profdiag[dask]')")
    return str(exe)


@pytest.fixture(scope="module")
def dask_cluster():
    pytest.importorskip("distributed")
    dask = _dask_bin()
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_DISTRIBUTED__WORKER__DAEMON": "True"}
    procs: list[subprocess.Popen] = []
    log = open(os.devnull, "wb")
    try:
        procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port",
                                       str(port), "--no-dashboard"], env=env, stdout=log,
                                      stderr=log))
        for _ in range(2):
            procs.append(subprocess.Popen([dask, "worker", address, "--host", "127.0.0.1",
                                           "--nworkers", "1", "--nthreads", "1",
                                           "--no-dashboard"], env=env, stdout=log, stderr=log))
        from distributed import Client

        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as c:
                    c.wait_for_workers(2, timeout=max(1, deadline - time.monotonic()))
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail("dask scheduler/workers did not start within 60 s")
                time.sleep(0.5)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def test_eight_ranks_on_a_dask_scheduler_match_local(eight_ranks, local_out, dask_cluster,
                                                      tmp_path, capsys):
    local = local_out
    remote = tmp_path / "remote"
    code, stdout, err = run_cli(["report", str(eight_ranks), "-f", "json", "-o", str(remote),
                                 "--scheduler", dask_cluster], capsys)
    assert code == 0, err
    index = json.loads((remote / "index.json").read_text())
    assert index["slowest_rank"] == SLOW_RANK
    assert _rows(remote / "index.json") == _rows(local / "index.json")
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local.iterdir())
    a = json.loads((local / "trace_5.report.json").read_text())
    b = json.loads((remote / "trace_5.report.json").read_text())
    assert a == b  # the per-rank report is byte-for-byte the same dictionary


def test_unreachable_scheduler_is_a_one_line_error(eight_ranks, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from profdiag import fleet

    monkeypatch.setattr(fleet, "CONNECT_TIMEOUT_S", 1)
    port = _free_port()  # nothing listens there
    code, _, err = run_cli(["report", str(eight_ranks), "-o", str(tmp_path / "o"), "--scheduler",
                            f"tcp://127.0.0.1:{port}"], capsys)
    assert code == 7
    assert err.count("\n") == 1 and f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in err
    assert not (tmp_path / "o").exists()  # never a silent local run


def test_scheduler_needs_a_directory(tmp_path, capsys):
    code, _, err = run_cli(["report", str(GRAPH), "-o", str(tmp_path / "x.json"), "--scheduler",
                            "local"], capsys)
    assert code == 2 and "--scheduler applies to a directory" in err


def test_library_modules_import_no_click():
    """multi.py, fleet.py and the rest of the library leave click (and printing) to commands/."""
    import ast

    offenders = []
    for path in sorted((REPO / "profdiag").rglob("*.py")):
        rel = path.relative_to(REPO / "profdiag").as_posix()
        if rel == "cli.py" or rel.startswith("commands/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "click" or n.startswith("click.") for n in names):
                offenders.append(rel)
    assert offenders == []


def test_b200_two_ranks_the_waiting_rank_is_not_the_straggler(tmp_path, capsys):
    """Two ranks of the real b200 trace; rank 1's 73 all-reduces each run 20 us longer
    (it waits for rank 0 inside them): rank 0 is the straggler, rank 1 waits 73 x 20 us."""
    from helpers import shared_or_skip

    src = shared_or_skip("samples", "kineto", "tracelens", "b200_eager_trace.json.gz")
    d = tmp_path / "b200_run"
    d.mkdir()
    for rank in (0, 1):
        doc = json.loads(gzip.decompress(src.read_bytes()))
        doc["distributedInfo"] = {**doc["distributedInfo"], "rank": rank, "world_size": 2}
        if rank == 1:
            for e in doc["traceEvents"]:
                if e.get("cat") == "kernel" and "multimem_all_reduce" in e.get("name", ""):
                    e["dur"] += 20.0
        (d / f"b200_rank{rank}.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    code, out, err = run_cli(["report", d, "-f", "json", "-o", tmp_path / "o", "-j", "1"], capsys)
    assert code == 0, err
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    (run,) = index["runs"]
    assert (run["straggler_rank"], run["straggler_by"]) == (0, "least time in collectives")
    waits = {r["rank"]: r["collective_wait_ns"] for r in index["ranks"]}
    assert waits == {0: 0, 1: 73 * 20_000} and run["others_wait_ns"] == 73 * 20_000
    assert "straggler: rank 0 (least time in collectives)" in out

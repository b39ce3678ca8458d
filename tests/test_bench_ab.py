"""benchmarks/bench_ab.py: two checkouts' reports in alternation (a measuring tool, so what is
checked is that it runs and compares what it claims to, never how fast anything is)."""

import os
import re
import subprocess
import sys

from helpers import FIXTURES, REPO

SCRIPT = REPO / "benchmarks" / "bench_ab.py"
TRACE = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=REPO.parent, check=False, timeout=300)


def test_bench_ab_alternates_the_two_checkouts_and_prints_their_medians():
    out = _run(str(TRACE), "--base", str(REPO), "--new", str(REPO), "--runs", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    runs = [re.fullmatch(r"run (\d): base ([\d.]+) s  new ([\d.]+) s", ln) for ln in lines[:3]]
    assert all(runs) and [m.group(1) for m in runs if m] == ["1", "2", "3"]
    base = sorted(float(m.group(2)) for m in runs if m)
    new = sorted(float(m.group(3)) for m in runs if m)
    assert min(base + new) > 0  # whole-process CPU, imports included
    summary = re.match(r"own_tiny_decode_ctx512_B1_steps8\.json\.gz, -f json: 3 alternating runs, CPU s "
                       r"medians: base ([\d.]+), new ([\d.]+), new/base ([\d.]+); minima: "
                       r"base ([\d.]+), new ([\d.]+), new/base ([\d.]+); ", lines[3])
    assert summary, lines[3]
    b, n, ratio, bmin, nmin, ratio_min = map(float, summary.groups())
    assert (b, n) == (base[1], new[1])  # the medians of the pairs printed above
    assert (bmin, nmin) == (base[0], new[0])  # and their minima
    assert abs(ratio - n / b) < 0.002 and abs(ratio_min - nmin / bmin) < 0.002
    walls = re.fullmatch(r"wall s medians: base ([\d.]+), new ([\d.]+), new/base ([\d.]+); "
                         r"minima: base ([\d.]+), new ([\d.]+), new/base ([\d.]+)", lines[4])
    assert walls, lines[4]
    wb, wn, wratio = map(float, walls.groups()[:3])
    assert wb > 0 and wn > 0 and abs(wratio - wn / wb) < 0.002


def test_bench_ab_sets_each_side_s_environment_for_its_runs_only():
    # a bound the tiny trace's 6.8 MB of JSON inflates past: the new side's report fails
    out = _run(str(TRACE), "--base", str(REPO), "--new", str(REPO), "--runs", "1",
               "--new-env", "PROFDIAG_MAX_INFLATED_SIZE=1M")
    assert out.returncode == 1
    assert out.stderr.startswith("bench_ab: new run 1: "), out.stderr
    out = _run(str(TRACE), "--base", str(REPO), "--new", str(REPO), "--runs", "1",
               "--base-env", "PROFDIAG_MAX_INFLATED_SIZE=1M")
    assert out.returncode == 1
    assert out.stderr.startswith("bench_ab: base run 1: "), out.stderr
    out = _run(str(TRACE), "--base", str(REPO), "--new", str(REPO), "--new-env", "NOEQUALS")
    assert out.returncode == 1
    assert out.stderr.strip() == "bench_ab: --new-env 'NOEQUALS': expected KEY=VALUE"


def test_bench_ab_refuses_a_folder_that_is_no_checkout_and_a_missing_trace(tmp_path):
    out = _run(str(TRACE), "--base", str(tmp_path), "--new", str(REPO))
    assert out.returncode == 1
    assert out.stderr.strip() == (f"bench_ab: --base {tmp_path}: not a profdiag checkout "
                                  "(no profdiag/__init__.py)")
    out = _run("/no/such/trace.json", "--base", str(REPO), "--new", str(REPO))
    assert out.returncode == 2
    assert out.stderr.strip() == "bench_ab: /no/such/trace.json: no such file"

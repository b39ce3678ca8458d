"""benchmarks/phases.py: one report's CPU split into phases (a measuring tool, so what is
checked is that it measures the report it claims to, never how fast anything is)."""

import os
import subprocess
import sys

from helpers import FIXTURES, REPO

SCRIPT = REPO / "benchmarks" / "phases.py"
TRACE = FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=REPO.parent, check=False, timeout=300)


def test_phases_add_up_to_the_child_process_cpu():
    out = _run(str(TRACE), "--runs", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["run 1", "run 2", "median"]
    for line in lines[:2]:
        words = line.split(": ", 1)[1].split()
        got = dict(zip(words[::2], map(float, words[1::2])))
        assert list(got) == ["start", "imports", "load", "diagnosis", "json", "total"]
        # the process' CPU at the end = its CPU before the timer + every timed phase
        parts = got["start"] + got["imports"] + got["load"] + got["diagnosis"] + got["json"]
        assert abs(parts - got["total"]) < 0.005, got
        assert got["imports"] > 0 and got["load"] > 0 and got["diagnosis"] > 0


def test_phases_names_a_missing_trace_and_exits_2():
    out = _run("/no/such/trace.json")
    assert out.returncode == 2
    assert out.stderr.strip() == "phases: /no/such/trace.json: no such file"

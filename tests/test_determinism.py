"""The JSON report is the same bytes whatever Python's string hash seed (reports must diff well)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import EAGER, shared_or_skip


@pytest.mark.parametrize("trace", ["fixture", "shared 1b decode"])
def test_report_bytes_do_not_depend_on_the_hash_seed(tmp_path: Path, trace: str) -> None:
    # seeds 1 and 2 ordered the tied by_shape rows of the 1b decode differently before the fix
    path = EAGER if trace == "fixture" else shared_or_skip(
        "traces", "torch", "own_1b_decode_ctx1024_B1_steps8.json.gz")
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"r{seed}.json"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "profdiag.cli", "report", str(path), "-f",
                               "json", "-q", "-o", str(out)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode in (0, 1), proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]

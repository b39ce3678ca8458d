"""`profdiag sweep --server`: end to end against a real local server process (the bundled
model behind /v1/completions streaming), including one that errors, stalls and dies."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from profdiag.cli import cli

pytest.importorskip("torch")
pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[1]
SHAPE = ["--layers", "2", "--hidden", "128", "--heads", "4", "--kv-heads", "2", "--ffn", "256",
         "--vocab", "512"]


def _start(tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Start the tiny server on 127.0.0.1 (any free port, 120 s lifetime); return its URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "profdiag.sweep.tinyserver", "--port", "0", *SHAPE,
         "--lifetime-s", "120", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=90)
    if not line or not line[0].startswith("listening on "):
        proc.kill()
        raise AssertionError(f"tiny server did not start: {line!r}")
    return proc, line[0].split("listening on ", 1)[1].strip()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server that answers request 2 with HTTP 500, stalls request 4 after one token and
    exits at request 7; a 6-point sweep against it."""
    tmp = tmp_path_factory.mktemp("server")
    traces = tmp / "server-traces"
    proc, url = _start(tmp, "--fail-on", "2", "--stall-on", "4", "--stall-s", "60",
                       "--exit-on", "7", "--trace-dir", str(traces))
    try:
        out = tmp / "S"
        res = CliRunner().invoke(cli, [
            "sweep", "--server", url, *SHAPE, "--tokens", "8,16,32", "--new-tokens", "3",
            "--batch", "1,2", "--request-timeout", "4", "--server-trace-dir", str(traces),
            "--gpu", "h100-sxm", "--out", str(out)])
        yield {"res": res, "out": out, "url": url, "traces": traces}
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _points(out: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "points").glob("*.json")}


def test_failures_are_recorded_and_the_sweep_goes_on(faulty: dict[str, Any]) -> None:
    res = faulty["res"]
    assert res.exit_code == 0, res.output
    pts = _points(faulty["out"])
    status = {k: v["status"] for k, v in pts.items()}
    # requests: T8_B1 -> 1; T8_B2 -> 2 (500), 3; T16_B1 -> 4 (stall); T16_B2 -> 5, 6;
    # T32_B1 -> 7 (the server exits); T32_B2 -> connection refused.
    assert status == {"T8_N3_B1": "ok", "T8_N3_B2": "failed", "T16_N3_B1": "failed",
                      "T16_N3_B2": "ok", "T32_N3_B1": "failed", "T32_N3_B2": "failed"}
    assert "1 of 2 request(s) failed: HTTP 500" in pts["T8_N3_B2"]["error"]
    assert "injected failure on request 2" in pts["T8_N3_B2"]["error"]
    assert "stalled: no data for 4 s after 1 token(s)" in pts["T16_N3_B1"]["error"]
    assert "connection failed" in pts["T32_N3_B2"]["error"]
    assert "2 of 6 point(s) ok, 4 failed" in res.output
    rep = json.loads((faulty["out"] / "sweep.report.json").read_text())
    assert [f["id"] for f in rep["failures"]] == ["T8_N3_B2", "T16_N3_B1", "T32_N3_B1",
                                                  "T32_N3_B2"]
    man = json.loads((faulty["out"] / "sweep.json").read_text())
    assert man["target"] == "server" and man["settings"]["model"] == "profdiag-tiny"
    assert "failed" in (faulty["out"] / "sweep.html").read_text()


def test_ttft_and_inter_token_latency(faulty: dict[str, Any]) -> None:
    p = _points(faulty["out"])["T16_N3_B2"]
    assert p["tokens_streamed"] == [3, 3]
    pre, dec = p["prefill"], p["decode"]
    assert len(pre["ttft_ns"]) == 2 and all(t > 0 for t in pre["ttft_ns"])
    assert pre["median_step_ns"] == int(statistics.median(pre["ttft_ns"]))
    # 3 tokens streamed: 2 gaps; gap k ends with decode step k, reading T + k positions.
    assert [s["context"] for s in dec["per_step"]] == [16, 17]
    # Speed of light on the H100 spec for this 2-layer model (hand computed, bf16):
    # streamed weights per layer: q, o 128x128; k, v 128x64 (2 KV heads of 32); gate, up,
    # down 128x256; 2 norms; plus the final norm and the lm_head (512x128), 2 bytes each.
    layers, h, kvd, ffn, vocab = 2, 128, 2 * 32, 256, 512
    per_layer = h * h + 2 * h * kvd + h * h + 3 * h * ffn + 2 * h
    w = (layers * per_layer + h + vocab * h) * 2
    # KV per sequence: the 16 cached positions read plus the new token's K/V written
    kv = 2 * layers * (16 + 1) * 32 * 2 * 2
    assert dec["per_step"][0]["ideal_ns"] == pytest.approx((w + 2 * kv) / 3.35e12 * 1e9)


def test_server_profiler_traces_are_diagnosed(faulty: dict[str, Any]) -> None:
    p = _points(faulty["out"])["T8_N3_B1"]
    assert p["profiled"] is True
    assert Path(p["server_trace"]).parent == faulty["traces"]
    rep = json.loads((faulty["out"] / p["report"]).read_text())
    assert {ph["name"] for ph in rep["phases"]} == {"prefill", "decode"}
    assert p["prefill"]["regime"] == p["server_regimes"]["prefill"]


def test_resume_retries_only_failed_points(faulty: dict[str, Any], tmp_path: Path) -> None:
    out = faulty["out"]
    # a healthy server on another port, ending its streams without [DONE] (the final
    # finish_reason chunk ends a request, as with servers that send no [DONE])
    proc, url = _start(tmp_path, "--no-done")
    try:
        # the URL is a setting: resuming against another server is refused...
        res = CliRunner().invoke(cli, ["sweep", "--server", url, *SHAPE, "--tokens", "8,16,32",
                                       "--new-tokens", "3", "--batch", "1,2", "--gpu",
                                       "h100-sxm", "--out", str(out)])
        assert res.exit_code != 0 and "other settings (server)" in str(res.exception)
        # ...and a fresh folder against the healthy server gets every point.
        res = CliRunner().invoke(cli, ["sweep", "--server", url, *SHAPE, "--tokens", "8",
                                       "--new-tokens", "2", "--batch", "1", "--no-server-profile",
                                       "--out", str(tmp_path / "S2")])
        assert res.exit_code == 0, res.output
        assert "1 of 1 point(s) ok" in res.output
        p = json.loads((tmp_path / "S2" / "points" / "T8_N2_B1.json").read_text())
        assert p["profiled"] is False and p["tokens_streamed"] == [2]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_unreachable_server_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    from profdiag.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--server", "http://127.0.0.1:9", "--tokens", "8", "--out",
              str(tmp_path / "S")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the server" in err

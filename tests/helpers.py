"""Test helpers: paths to bundled fixtures and ../shared (skipped when absent), cached diagnoses."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
# ../shared beside the checkout (CI has it); PROFDIAG_SHARED points elsewhere, e.g. at a
# missing directory to run the suite as a checkout without it would.
SHARED = Path(os.environ.get("PROFDIAG_SHARED") or REPO.parent / "shared")
SHARED_TORCH = SHARED / "traces" / "torch"

# Files of ../shared that fixtures/ holds byte for byte (fixtures/PROVENANCE.md;
# tests/test_fixtures_copies.py checks they are identical): a test asking for one of them
# runs on the fixture when ../shared is absent instead of skipping.
FIXTURE_COPIES: dict[str, Path] = {
    "traces/torch/own_tiny_prefill_T128_B1.json.gz":
        FIXTURES / "torch" / "own_tiny_prefill_T128_B1.json.gz",
    "traces/torch/own_tiny_decode_ctx512_B1_steps8.json.gz":
        FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz",
    "traces/torch/own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz":
        FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz",
    "traces/configs/llama_tiny.json": FIXTURES / "configs" / "llama_tiny.json",
    "traces/configs/llama_1b.json": FIXTURES / "configs" / "llama_1b.json",
    "traces/nsys/seed_microbench.sqlite": FIXTURES / "nsys" / "seed_microbench.sqlite",
    "samples/kineto/tracelens/sglang_Qwen3-8B_decode.json.gz":
        FIXTURES / "engines" / "sglang_Qwen3-8B_decode.json.gz",
    "samples/kineto/tracelens/vllm_decode_full_graph_execution.json.gz":
        FIXTURES / "engines" / "vllm_decode_full_graph_execution.json.gz",
}


def shared_path(rel: str) -> Path:
    """``rel`` under ../shared, or its byte-identical copy in fixtures/ when shared is absent
    (the path is returned either way; callers check existence)."""
    p = SHARED / rel
    if not p.exists() and rel in FIXTURE_COPIES:
        return FIXTURE_COPIES[rel]
    return p


def shared_or_skip(*parts: str) -> Path:
    """Path under ../shared (or its copy in fixtures/), skipping the test, with the reason,
    when neither exists."""
    rel = "/".join(Path(*parts).parts)
    p = shared_path(rel)
    if not p.exists():
        pytest.skip(f"needs ../shared/{rel}: a real trace or sample not in fixtures/ "
                    f"(too large to bundle); clone shared/ beside the checkout or set "
                    f"PROFDIAG_SHARED")
    return p


def shared_manifest() -> list[dict]:
    path = SHARED_TORCH / "manifest.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())["captures"]


@lru_cache(maxsize=32)
def diagnosed(path: str, **kw: object):
    """Diagnose a trace once per test session (diagnosis objects are treated read-only)."""
    import profdiag

    return profdiag.diagnose(profdiag.load(path), **kw)


def splice_generate(out: Path, keep_annotations: bool = True) -> Path:
    """A generate()-like trace: the real tiny prefill followed by the real tiny 8-step decode.

    Both are real H100 captures of the same model; the decode's timestamps are shifted to
    start after the prefill, and its correlation/External ids offset so links stay unique.
    """
    import gzip

    def load(p: Path) -> dict:
        return json.loads(gzip.decompress(p.read_bytes()))

    pre = load(FIXTURES / "torch" / "own_tiny_prefill_T128_B1.json.gz")
    dec = load(FIXTURES / "torch" / "own_tiny_decode_ctx512_B1_steps8.json.gz")
    first = [e for e in pre["traceEvents"] if e.get("ph") == "X"]
    end = max(e["ts"] + e.get("dur", 0) for e in first)
    second = [e for e in dec["traceEvents"] if e.get("ph") in ("X", "s", "f")]
    start = min(e["ts"] for e in second)
    for e in second:
        e["ts"] = e["ts"] - start + end + 100.0
        args = e.get("args", {})
        for key in ("External id", "correlation"):
            if key in args:
                args[key] += 10_000_000
        if "id" in e:
            e["id"] += 10_000_000
    events = first + second
    if not keep_annotations:
        events = [e for e in events if e.get("cat") not in ("user_annotation", "gpu_user_annotation")]
    out.write_bytes(gzip.compress(json.dumps({**pre, "traceEvents": events}).encode()))
    return out


TINY = FIXTURES / "torch"
EAGER = TINY / "own_tiny_decode_ctx512_B1_steps8.json.gz"
GRAPH = TINY / "own_tiny_decode_ctx512_B1_steps8_cudagraph.json.gz"
PREFILL = TINY / "own_tiny_prefill_T128_B1.json.gz"


def run_cli(args: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """profdiag.cli.main(args) as the console script runs it: (exit code, stdout, stderr)."""
    import profdiag.cli

    try:
        code = profdiag.cli.main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def run_cli_isolated(args: list) -> tuple[int, str, str]:
    """profdiag.cli.main(args) under click's CliRunner (no capsys needed): (code, stdout,
    stderr), exceptions propagated."""
    import click
    from click.testing import CliRunner

    import profdiag.cli

    @click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.argument("argv", nargs=-1, type=click.UNPROCESSED)
    def entry(argv: tuple[str, ...]) -> None:
        profdiag.cli.main(list(argv))

    result = CliRunner().invoke(entry, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def rank_copy(src: Path, dst: Path, rank: int, world: int, slow: float = 1.0,
              pg_count: int | None = 1) -> Path:
    """A copy of a real torch trace as rank ``rank`` of a ``world``-rank run
    (distributedInfo set), its time axis stretched by ``slow``."""
    import gzip
    import json

    doc = json.loads(gzip.decompress(Path(src).read_bytes()))
    doc["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": world,
                              **({"pg_count": pg_count} if pg_count is not None else {})}
    if slow != 1.0:
        t0 = min(e["ts"] for e in doc["traceEvents"] if "ts" in e)
        for e in doc["traceEvents"]:
            if "ts" in e:
                e["ts"] = t0 + (e["ts"] - t0) * slow
            if "dur" in e:
                e["dur"] = e["dur"] * slow
    dst.write_bytes(gzip.compress(json.dumps(doc).encode()))
    return dst


def diagnose_shared(traces: list[tuple[str, dict]]) -> list[tuple[Path, dict, dict]]:
    """(path, diagnosis dict, labels) for each shared torch trace; skips without ../shared."""
    import profdiag

    out = []
    for name, labels in traces:
        path = shared_or_skip("traces", "torch", name)
        out.append((path, profdiag.diagnose(profdiag.load(path)).to_dict(), labels))
    return out

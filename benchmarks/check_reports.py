"""Correctness guard for performance work: JSON reports must stay byte-identical.

    python benchmarks/check_reports.py save DIR [--source ../shared] [FILES...]
    python benchmarks/check_reports.py check DIR [--source ../shared] [FILES...]

``save`` writes ``profdiag report FILE -f json`` of every trace in shared/traces/torch,
shared/traces/nsys and a few shared/samples into DIR; ``check`` re-runs them and reports
every file whose JSON differs (exit 1). Extra FILES (e.g. a synthetic many-steps trace)
are added to the set. Each report runs in a fresh process with PYTHONHASHSEED=0 (the
checkout imported is the one on PYTHONPATH: save with the old code, check with the new).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / "shared"
SAMPLES = [
    "samples/kineto/tracelens/vllm_decode_full_graph_execution.json.gz",
    "samples/kineto/tracelens/sglang_Qwen3-8B_prefilldecode.json.gz",
    "samples/kineto/tracelens/b200_eager_trace.json.gz",
    "samples/kineto/hta/inference_rank_1.json.gz",
    "samples/nsys/sqlite/saxpy-mpi-cuda_nsys_perlmutter0.sqlite",
    "samples/rocprof/v3/json/tracelens_908_results.json.gz",
]


def inputs(source: Path, extra: list[str]) -> list[Path]:
    if not source.is_dir():
        sys.exit(f"check_reports: no shared directory at {source} (pass --source PATH to the "
                 "checkout's ../shared, which holds traces/ and samples/)")
    files = sorted((source / "traces" / "torch").glob("*.json.gz"))
    files += sorted(p for p in (source / "traces" / "nsys").iterdir()
                    if p.name.endswith((".sqlite", ".sqlite.gz")))
    files += [source / s for s in SAMPLES if (source / s).exists()]
    return files + [Path(e) for e in extra]


def key(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8] + "_" + path.name + ".report.json"


_MAIN = "import sys; from profdiag.cli import main; sys.argv[0] = 'profdiag'; main()"


def report(path: Path, out: Path) -> str:
    # PYTHONHASHSEED fixed: some report lists tie-break in set order, which the hash seed
    # changes from run to run
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-c", _MAIN, "report", str(path), "-f", "json",
                           "-q", "-o", str(out)], capture_output=True, text=True, env=env)
    return "" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["save", "check"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    bad = 0
    for path in inputs(a.source, a.files):
        ref = a.dir / key(path)
        if a.mode == "save":
            err = report(path, ref)
            print(f"{'saved ' if not err else 'FAILED'} {path.name} {err}", flush=True)
            continue
        new = a.dir / (key(path) + ".new")
        err = report(path, new)
        if err or not ref.exists():
            same = (not ref.exists()) and bool(err)
            print(f"{'same  ' if same else 'DIFF  '} {path.name} {err or 'no saved report'}")
            bad += not same
            continue
        same = ref.read_bytes() == new.read_bytes()
        print(f"{'same  ' if same else 'DIFF  '} {path.name}", flush=True)
        bad += not same
        if same:
            new.unlink()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

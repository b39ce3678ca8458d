"""Fleet benchmark: N rank traces of S MB each, diagnosed by profdiag --jobs, a Dask LocalCluster
and Holistic Trace Analysis, on the same folder.

    python benchmarks/bench_fleet.py [--ranks 64] [--size 60MB] [--workers 2] [--dir DIR]
                                     [--skip NAME] [--timeout S] [--out TABLE.md]

The rank traces are copies of one real Kineto trace replicated to S MB of JSON
(benchmarks/make_big_trace.py), each with its own ``distributedInfo`` (rank r of N, NCCL), so
profdiag groups them as one run and HTA loads them as ranks. Each contender runs in a fresh
interpreter; the table gives the wall time, the ranks per second, the JSON MB per second and
the peak RSS of the largest process (for --jobs and the LocalCluster: the largest worker).
Written into --dir (default /tmp/profdiag-fleet), never into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_load import _install_wait4_hook, run_child  # noqa: E402
from make_big_trace import DEFAULT_SOURCE, build, parse_size, size_label  # noqa: E402

CONTENDERS: dict[str, str] = {
    "profdiag report DIR --jobs {w}": (
        "import sys, json, tempfile, os, time\n"
        "from profdiag.cli import main\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    main(['report', sys.argv[1], '-f', 'json', '-q', '-j', sys.argv[2], '-o',\n"
        "          os.path.join(tempfile.mkdtemp(), 'out')])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(json.dumps({'work_s': time.perf_counter() - t}))\n"),
    "profdiag report DIR --scheduler local ({w} workers)": (
        "import sys, json, tempfile, os, time\n"
        "from profdiag.cli import main\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    main(['report', sys.argv[1], '-f', 'json', '-q', '--scheduler', 'local', '-j',\n"
        "          sys.argv[2], '-o', os.path.join(tempfile.mkdtemp(), 'out')])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(json.dumps({'work_s': time.perf_counter() - t}))\n"),
    # HTA's temporal and idle-time breakdowns need ProfilerStep ranges (they raise IndexError /
    # ValueError on these inference traces); its comm/compute overlap is the closest analysis
    # to profdiag's communication step and runs on them.
    "HTA TraceAnalysis + comm/comp overlap": (
        "import sys, json, time, logging, warnings\n"
        "logging.disable(logging.CRITICAL)\n"
        "warnings.simplefilter('ignore')\n"
        "from hta.trace_analysis import TraceAnalysis\n"
        "t = time.perf_counter()\n"
        "a = TraceAnalysis(trace_dir=sys.argv[1])\n"
        "a.get_comm_comp_overlap(visualize=False)\n"
        "print(json.dumps({'work_s': time.perf_counter() - t}))\n"),
}


def make_ranks(out_dir: Path, ranks: int, size: int, source: Path) -> list[Path]:
    """rank_<r>.json for r < ranks: one replicated trace with its own distributedInfo."""
    big, _ = build(source, out_dir / "src", size)
    body = big.read_bytes()
    end = body.rstrip().rfind(b"}")
    rank_dir = out_dir / f"ranks_{ranks}x{size_label(size)}"
    rank_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in range(ranks):
        p = rank_dir / f"rank_{r}.json"
        paths.append(p)
        if p.exists() and p.stat().st_size > len(body):
            continue
        info = json.dumps({"backend": "nccl", "rank": r, "world_size": ranks, "pg_count": 1})
        p.write_bytes(body[:end].rstrip() + b',\n  "distributedInfo": ' + info.encode()
                      + b"\n}\n")
    return paths


def run(code: str, folder: Path, workers: int, timeout: float) -> dict:
    """bench_load.run_child with the worker count, and the peak RSS of the largest
    descendant (ProcessPool / Dask workers are grandchildren)."""
    import resource

    res = run_child(code, folder, timeout, str(workers))
    if "error" not in res:
        res["rss_mb"] = max(res.get("rss_mb") or 0.0,
                            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--size", type=parse_size, default=60 * 10**6, help="JSON per rank (60MB)")
    ap.add_argument("--workers", type=int, default=2, help="--jobs / LocalCluster workers")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/profdiag-fleet"))
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--skip", action="append", default=[], help="contender name prefix to skip")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args(argv)
    _install_wait4_hook()
    paths = make_ranks(args.dir, args.ranks, args.size, args.source)
    folder = paths[0].parent
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    lines = [f"{args.ranks} ranks x {args.size / 1e6:.0f} MB of Kineto JSON ({total_mb:.0f} MB); "
             f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; one run each.",
             "", "| contender | wall s | ranks/s | JSON MB/s | peak RSS MiB (largest process) |",
             "|---|---:|---:|---:|---:|"]
    for name, code in CONTENDERS.items():
        label = name.format(w=args.workers)
        if any(label.startswith(s) for s in args.skip):
            continue
        print(f"  {label} ...", file=sys.stderr, flush=True)
        r = run(code, folder, args.workers, args.timeout)
        if "error" in r:
            lines.append(f"| {label} | {r['error']} | – | – | – |")
            continue
        lines.append(f"| {label} | {r['wall_s']:.1f} | {args.ranks / r['wall_s']:.2f} | "
                     f"{total_mb / r['wall_s']:.1f} | {r['rss_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

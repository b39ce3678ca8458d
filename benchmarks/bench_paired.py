"""Paired benchmark: every contender in its own process, in alternation, medians and ratios.

    python benchmarks/bench_paired.py [--repeat 3] [--source ../shared] [--dir /tmp/profdiag-bench]
                                      [--input nsys] [--input steps] [--steps 8000] [--kernels 1M]
                                      [--input kineto --kineto-size 250MB] [--hta-max-mb 300]
                                      [--input names --names 10000]

Inputs (built when absent, never inside the repository):

- ``nsys``: benchmarks/make_big_nsys.py's replicated Nsight Systems export (1M kernels
  from ../shared/traces/nsys/nsys_1b_T512_decode64.sqlite.gz). Floor: pandas ``read_sql``
  of the kernel and runtime tables joined to StringIds (what issue 18 measures against);
  then ``report``, ``profdiag.load`` and ``profdiag.load(compact=True)``.
- ``steps``: benchmarks/make_many_steps.py's trace of N ProfilerStep annotations. Floor:
  ``orjson.loads`` of the file.
- ``kineto``: make_big_trace.py's replicated Kineto trace of ``--kineto-size`` JSON (60MB,
  250MB, 1GB), with a ``distributedInfo`` (rank 0 of 1) appended so HTA's loader reads the
  rank from the file instead of scanning for it. Floor: the simdjson read+parse process
  (bench_load's bare simdjson child); then ``profdiag report -f json``, ``profdiag.load``,
  ``profdiag.load(compact=True)`` (the table ``report`` diagnoses) and HTA's ``TraceAnalysis`` loader (skipped above ``--hta-max-mb``).
- ``names``: make_many_names.py's copy of the 60 MB Kineto trace (make_big_trace.py's
  ``src/big_60MB.json``) whose first ``--names`` kernels carry their own ~1 KB name. Floor:
  ``profdiag report -f json`` of that 60 MB source itself, so the difference is the cost of
  ``--names`` more distinct long names (issue 18: seconds, not minutes).
- ``ranks``: bench_fleet.py's folder of ``--ranks`` rank traces of ``--rank-size`` JSON each
  (8 x 60 MB). ``profdiag report DIR --jobs 1`` is the floor, ``--jobs 2`` is compared to it:
  read the wall ratio, and only when the load average printed beside it is well under the
  number of CPUs (the issue's 1.7x target is for an idle machine).

Before the runs, the profdiag the children import is compiled to bytecode (its state once
installed; ``--no-precompile`` leaves it: where PYTHONDONTWRITEBYTECODE is set, every child
then compiles it first, ~0.1 s). Round r runs contender 1, 2, ... of an input, then round
r + 1 again, starting one contender later (round 2 at contender 2, ...), so that load on a
shared machine, and any penalty of a round's first run, hits every contender alike. Reported per contender: the median CPU seconds
(user + sys of the whole process and its children, from os.wait4), the median work seconds
timed inside the child after its imports, the ratio of both to the floor's, and the largest
peak RSS. The load average before and after is printed: on a busy machine compare CPU
seconds, not wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fleet import CONTENDERS as FLEET, make_ranks  # noqa: E402, I001
from bench_load import CONTENDERS, _install_wait4_hook, run_child  # noqa: E402
from make_big_trace import DEFAULT_SOURCE as RANK_SOURCE, build as build_big, parse_size, size_label  # noqa: E402

DEFAULT_SOURCE = HERE.parents[1] / "shared"

# the same child programs as bench_load's contenders
REPORT = CONTENDERS["profdiag report -f json -q"]
LOAD = CONTENDERS["profdiag.load"]
COMPACT = CONTENDERS["profdiag.load(compact=True)"]  # the table `report` diagnoses
SIMDJSON = CONTENDERS["simdjson parse (bare)"]
HTA = CONTENDERS["HTA TraceAnalysis loader"]
READ_SQL = (
    "import sys, time, json, sqlite3\nimport pandas as pd\n"
    "t = time.perf_counter()\ncon = sqlite3.connect(sys.argv[1])\n"
    "k = pd.read_sql_query('SELECT k.start, k.end, k.deviceId, k.streamId, k.correlationId, "
    "k.gridX, k.gridY, k.gridZ, k.blockX, k.blockY, k.blockZ, s.value AS name "
    "FROM CUPTI_ACTIVITY_KIND_KERNEL k JOIN StringIds s ON s.id = k.shortName', con)\n"
    "r = pd.read_sql_query('SELECT r.start, r.end, r.globalTid, r.correlationId, "
    "s.value AS name FROM CUPTI_ACTIVITY_KIND_RUNTIME r JOIN StringIds s ON s.id = r.nameId', con)\n"
    "print(json.dumps({'work_s': time.perf_counter() - t, 'rows': len(k) + len(r)}))\n")
ORJSON = ("import sys, time, json, orjson\n"
          "t = time.perf_counter()\ndoc = orjson.loads(open(sys.argv[1], 'rb').read())\n"
          "print(json.dumps({'work_s': time.perf_counter() - t}))\n")

# the report child on the extra argument (the names input's source trace) instead of argv[1]
REPORT_SOURCE = REPORT.replace("sys.argv[1]", "sys.argv[2]")
assert REPORT_SOURCE != REPORT
JOBS = FLEET["profdiag report DIR --jobs {w}"]

# input -> [(contender, child code, extra argv)], the floor first
CONTENDERS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "nsys": [("pandas read_sql kernel+runtime+StringIds (floor)", READ_SQL, ()),
             ("profdiag report -f json", REPORT, ()), ("profdiag.load", LOAD, ()),
             ("profdiag.load(compact=True)", COMPACT, ())],
    "steps": [("orjson.loads (floor)", ORJSON, ()), ("profdiag report -f json", REPORT, ()),
              ("profdiag.load", LOAD, ())],
    "kineto": [("simdjson read+parse (floor)", SIMDJSON, ()), ("profdiag report -f json", REPORT, ()),
               ("profdiag.load", LOAD, ()), ("profdiag.load(compact=True)", COMPACT, ()),
               ("HTA TraceAnalysis loader", HTA, ())],
    "names": [("profdiag report -f json, the 60 MB source (floor)", REPORT_SOURCE, ("SOURCE",)),
              ("profdiag report -f json, + N distinct 1 KB names", REPORT, ())],
    "ranks": [("profdiag report DIR --jobs 1 (floor)", JOBS, ("1",)),
              ("profdiag report DIR --jobs 2", JOBS, ("2",))],
}


def kineto_input(args: argparse.Namespace) -> Path:
    """big_<size>_rank0.json: the replicated trace with distributedInfo (rank 0 of 1)."""
    out = args.dir / f"big_{size_label(args.kineto_size)}_rank0.json"
    if out.exists():
        return out
    source = args.source / "traces" / "torch" / RANK_SOURCE.name
    if not source.exists():
        sys.exit(f"bench_paired: the kineto input is built from {source}, which is absent: "
                 "pass --source PATH to a shared/ directory (with traces/torch/)")
    big, _ = build_big(source, args.dir / "src", args.kineto_size, level=1)
    with open(big, "rb") as src, open(out.with_suffix(".tmp"), "wb") as dst:
        size = big.stat().st_size
        src.seek(max(0, size - 4096))
        tail = src.read()
        end = size - len(tail) + tail.rstrip().rfind(b"}")
        src.seek(0)
        left = end
        while left > 0:
            block = src.read(min(left, 16 << 20))
            left -= len(block)
            dst.write(block.rstrip() if left == 0 else block)
        dst.write(b',\n  "distributedInfo": {"backend": "nccl", "rank": 0, "world_size": 1}\n}\n')
    out.with_suffix(".tmp").rename(out)
    return out


def names_input(args: argparse.Namespace) -> tuple[Path, Path]:
    """(many_names_<N>.json, the 60 MB trace it was made from), built when absent."""
    import make_many_names

    source = args.dir / "src" / f"big_{size_label(60 * 10**6)}.json"
    if not source.exists():
        rank_source = args.source / "traces" / "torch" / RANK_SOURCE.name
        if not rank_source.exists():
            sys.exit(f"bench_paired: the names input is built from {rank_source}, which is "
                     "absent: pass --source PATH to a shared/ directory (with traces/torch/)")
        source, _ = build_big(rank_source, args.dir / "src", 60 * 10**6, level=1)
    out = args.dir / f"many_names_{args.names}.json"
    if not out.exists():
        make_many_names.build(source, args.dir, args.names, 1024)
    return out, source


def build_input(kind: str, args: argparse.Namespace) -> Path:
    if kind == "kineto":
        return kineto_input(args)
    if kind == "steps":
        import make_many_steps

        path = args.dir / f"many_steps_{args.steps}.json"
        if not path.exists():
            args.dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_many_steps.document(args.steps))
        return path
    if kind == "ranks":
        source = args.source / "traces" / "torch" / RANK_SOURCE.name
        if not source.exists():
            sys.exit(f"bench_paired: the ranks input is built from {source}, which is absent: "
                     "pass --source PATH to a shared/ directory (with traces/torch/)")
        return make_ranks(args.dir, args.ranks, args.rank_size, source)[0].parent
    import make_big_nsys

    source = args.source / "traces" / "nsys" / "nsys_1b_T512_decode64.sqlite.gz"
    if not source.exists():
        out = args.dir / f"big_{args.kernels // 1000}Kkernels.sqlite"
        if out.exists():
            return out
        sys.exit(f"bench_paired: the nsys input is built from {source}, which is absent: pass "
                 "--source PATH to a shared/ directory (with traces/nsys/), or --input steps")
    return make_big_nsys.build(source, args.dir, args.kernels)


# Bytecode of the profdiag the children import, written once before the runs: an installed
# wheel has it, and so has a checkout once imported, unless PYTHONDONTWRITEBYTECODE is set
# (as in some sandboxes), when every child would compile ~9,000 lines (~0.1 s) first. The
# floor's simdjson and HTA come compiled from site-packages.
PRECOMPILE = ("import compileall, os, profdiag\n"
              "compileall.compile_dir(os.path.dirname(profdiag.__file__), quiet=1)\n")


def precompile() -> str:
    """Compile the children's profdiag to bytecode; say where (for the table's header)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", PRECOMPILE + "print(profdiag.__file__)"],
                         capture_output=True, text=True, check=True)
    return str(Path(out.stdout.strip().splitlines()[-1]).parent)


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def bench(kind: str, path: Path, repeat: int, timeout: float, hta_max_mb: float = 300.0,
          source: Path | None = None) -> str:
    contenders = CONTENDERS[kind]
    if source is not None:  # the names input: its floor reads the source trace
        contenders = [(name, code, tuple(str(source) if a == "SOURCE" else a for a in extra))
                      for name, code, extra in contenders]
    if kind == "kineto" and path.stat().st_size / 2**20 > hta_max_mb:
        contenders = [c for c in contenders if c[1] is not HTA]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in contenders}
    before = loadavg()
    for r in range(repeat):
        # round r starts at contender r (mod their number): a penalty of a round's first run,
        # if any, falls on each contender alike (see bench_ab.py's A/A runs)
        k = r % len(contenders)
        for name, code, extra in contenders[k:] + contenders[:k]:
            print(f"  [{kind} {r + 1}/{repeat}] {name} ...", file=sys.stderr, flush=True)
            runs[name].append(run_child(code, path, timeout, *extra))
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    size = sum(f.stat().st_size for f in files) / 2**20
    what = f"{len(files)} files" if path.is_dir() else ""
    lines = [f"### {kind}: {path.name} ({what}{', ' if what else ''}{size:.1f} MiB), {repeat} "
             f"alternating runs; {os.cpu_count()} CPUs, load average {before} before, "
             f"{loadavg()} after", "",
             "| contender | CPU s (median) | work s (median) | wall s (median) | CPU vs floor "
             "| work vs floor | wall vs floor | peak RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    floor = None
    for name, _, _ in contenders:
        ok = [x for x in runs[name] if "error" not in x]
        if not ok:
            lines.append(f"| {name} | – | – | – | – | – | – | {runs[name][0]['error']} |")
            continue
        cpu = statistics.median(x["cpu_s"] for x in ok)
        work = statistics.median(x["work_s"] for x in ok)
        wall = statistics.median(x["wall_s"] for x in ok)
        rss = max(x["rss_mb"] for x in ok)
        if floor is None:
            floor = (cpu, work, wall)
        lines.append(f"| {name} | {cpu:.2f} | {work:.2f} | {wall:.2f} | {cpu / floor[0]:.2f}x | "
                     f"{work / floor[1]:.2f}x | {wall / floor[2]:.2f}x | {rss:.0f} |")
    return "\n".join(lines + [""])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", action="append", choices=sorted(CONTENDERS))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="the shared/ directory (traces/nsys/ is the nsys input's source)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/profdiag-bench"))
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--kernels", type=int, default=1_000_000)
    ap.add_argument("--names", type=int, default=10_000,
                    help="distinct ~1 KB kernel names of the names input")
    ap.add_argument("--ranks", type=int, default=8, help="rank traces of the ranks input")
    ap.add_argument("--rank-size", type=parse_size, default=60 * 10**6,
                    help="JSON per rank trace of the ranks input (60MB)")
    ap.add_argument("--kineto-size", type=parse_size, default=60 * 10**6,
                    help="JSON of the kineto input (60MB, 250MB, 1GB)")
    ap.add_argument("--hta-max-mb", type=float, default=300.0,
                    help="skip HTA's loader on a larger kineto input (it needs ~7x the JSON)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--out", type=Path, help="also write the markdown tables here")
    ap.add_argument("--no-precompile", action="store_true",
                    help="leave profdiag's bytecode as it is (see PRECOMPILE)")
    args = ap.parse_args(argv)
    _install_wait4_hook()
    if not args.no_precompile:
        print(f"bench_paired: bytecode of {precompile()} written", file=sys.stderr)
    tables = []
    for kind in args.input or ["steps", "nsys"]:
        if kind == "names":
            path, source = names_input(args)
            tables.append(bench(kind, path, args.repeat, args.timeout, args.hta_max_mb, source))
        else:
            tables.append(bench(kind, build_input(kind, args), args.repeat, args.timeout,
                                args.hta_max_mb))
    text = "\n".join(tables)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

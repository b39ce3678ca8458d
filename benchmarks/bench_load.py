"""Load-time and peak-memory benchmark: profdiag vs bare simdjson, orjson and HTA.

    python benchmarks/bench_load.py [FILES...] [--hta-max-mb 300] [--small] [--out table.md]

Without FILES it uses the traces benchmarks/make_big_trace.py writes to /tmp/profdiag-bench
(100 MB and 1 GB, .json and .json.gz; built when absent). ``--small`` runs on the real shared
traces instead. Every contender runs once per file in a fresh subprocess; its peak RSS comes
from os.wait4 (that child's ru_maxrss), its time from inside the child (after imports; the
file is read and, for .gz, inflated inside the timed region) and the child's wall time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_TORCH = HERE.parents[1] / "shared" / "traces" / "torch"

# name -> child code; the child prints {"work_s": ...} as its last stdout line.
_READ = ("import gzip, zlib\n"
         "def read(p):\n"
         "    raw = open(p, 'rb').read()\n"
         "    return gzip.decompress(raw) if raw[:2] == b'\\x1f\\x8b' else raw\n")
CONTENDERS: dict[str, str] = {
    # as the `profdiag` console script runs it (sys.exit(main()), argv from sys.argv), so
    # the process ends as a user's does (cli._exit_now); work_s is printed by an atexit
    # handler, which that exit runs
    "profdiag report -f json -q": (
        "import sys, time, json, tempfile, os, atexit\n"
        "from profdiag.cli import main\n"
        "out = os.path.join(tempfile.mkdtemp(), 'r.json')\n"
        "t = time.perf_counter()\n"
        "atexit.register(lambda: print(json.dumps({'work_s': time.perf_counter() - t})))\n"
        "sys.argv = ['profdiag', 'report', sys.argv[1], '-f', 'json', '-q', '-o', out]\n"
        "sys.exit(main())\n"),
    "profdiag.load": (
        "import sys, time, json\nimport profdiag, pandas\n"
        "t = time.perf_counter()\ntr = profdiag.load(sys.argv[1])\n"
        "print(json.dumps({'work_s': time.perf_counter() - t, 'events': len(tr.events)}))\n"),
    "profdiag.load(compact=True)": (
        "import sys, time, json\nimport profdiag, pandas\n"
        "t = time.perf_counter()\ntr = profdiag.load(sys.argv[1], compact=True)\n"
        "print(json.dumps({'work_s': time.perf_counter() - t, 'events': len(tr.events)}))\n"),
    "simdjson parse (bare)": (
        _READ + "import sys, time, json, simdjson\n"
        "t = time.perf_counter()\ndoc = simdjson.Parser().parse(read(sys.argv[1]))\n"
        "print(json.dumps({'work_s': time.perf_counter() - t}))\n"),
    "orjson.loads": (
        _READ + "import sys, time, json, orjson\n"
        "t = time.perf_counter()\ndoc = orjson.loads(read(sys.argv[1]))\n"
        "print(json.dumps({'work_s': time.perf_counter() - t}))\n"),
    "HTA TraceAnalysis loader": (
        "import sys, time, json, os, tempfile, logging\n"
        "logging.disable(logging.CRITICAL)\n"
        "from hta.trace_analysis import TraceAnalysis\n"
        "d = tempfile.mkdtemp()\n"
        "src = os.path.abspath(sys.argv[1])\n"
        "os.symlink(src, os.path.join(d, 'rank0.json.gz' if src.endswith('.gz') else 'rank0.json'))\n"
        "t = time.perf_counter()\nTraceAnalysis(trace_dir=d)\n"
        "print(json.dumps({'work_s': time.perf_counter() - t}))\n"),
}
BASELINE, HTA = "simdjson parse (bare)", "HTA TraceAnalysis loader"


def run_child(code: str, path: Path, timeout: float, *args: str) -> dict:
    """Run ``code`` on ``path`` (then ``args``) in a fresh interpreter: work_s, wall_s, rss_mb,
    cpu_s (or error)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timeout after {timeout:.0f} s"}
    # communicate() reaped the child; its own rusage came with the wait: use wait4 instead
    wall = time.perf_counter() - t0
    rss_mb = _last_rusage.get(proc.pid)
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {proc.returncode}: {tail[0][:120]}", "wall_s": wall}
    result = json.loads(out.decode().strip().splitlines()[-1])
    result.update(wall_s=wall, rss_mb=rss_mb, cpu_s=_last_cpu.get(proc.pid))
    return result


_last_rusage: dict[int, float] = {}
_last_cpu: dict[int, float] = {}  # pid -> user + sys CPU seconds of that child


def _install_wait4_hook() -> None:
    """Make subprocess reap children with os.wait4 so each child's own peak RSS is kept."""
    orig = os.waitpid

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        got, status, usage = os.wait4(pid, options)
        if got:
            _last_rusage[got] = usage.ru_maxrss / 1024  # KiB -> MiB on Linux
            _last_cpu[got] = usage.ru_utime + usage.ru_stime
        return got, status

    subprocess.os.waitpid = waitpid  # type: ignore[attr-defined]
    del orig


def content_mb(path: Path) -> float:
    if path.suffix == ".gz":
        n = 0
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                n += len(chunk)
        return n / 2**20
    return path.stat().st_size / 2**20


def bench(files: list[Path], hta_max_mb: float, timeout: float, skip: set[str]) -> str:
    lines = [f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
             "one run per contender, each in a fresh subprocess.", ""]
    for path in files:
        size = content_mb(path)
        lines += [f"### {path.name}: {path.stat().st_size / 2**20:.1f} MiB on disk, "
                  f"{size:.1f} MiB of JSON", "",
                  "| contender | work s | process wall s | peak RSS MiB | RSS / JSON size "
                  "| work vs simdjson | HTA work vs this |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        results = {}
        for name, code in CONTENDERS.items():
            if name in skip:
                continue
            if name == HTA and size > hta_max_mb:
                results[name] = {"error": f"skipped: {size:.0f} MiB > --hta-max-mb {hta_max_mb:g}"}
                continue
            print(f"  {path.name}: {name} ...", file=sys.stderr, flush=True)
            results[name] = run_child(code, path, timeout)
        base = results.get(BASELINE, {}).get("work_s")
        hta = results.get(HTA, {}).get("work_s")
        for name, r in results.items():
            if "error" in r:
                lines.append(f"| {name} | – | – | – | – | – | {r['error']} |")
                continue
            w = r["work_s"]
            lines.append(
                f"| {name} | {w:.2f} | {r['wall_s']:.2f} | {r['rss_mb']:.0f} | "
                f"{r['rss_mb'] / size:.2f}x | {w / base:.1f}x | "
                + (f"{hta / w:.1f}x |" if base and hta else "– |") if base else
                f"| {name} | {w:.2f} | {r['wall_s']:.2f} | {r['rss_mb']:.0f} | "
                f"{r['rss_mb'] / size:.2f}x | – | – |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--small", action="store_true",
                    help="run on the real traces in shared/traces/torch")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/profdiag-bench"),
                    help="where make_big_trace.py writes the large traces")
    ap.add_argument("--hta-max-mb", type=float, default=300.0,
                    help="skip HTA's loader above this JSON size (MiB); default 300")
    ap.add_argument("--skip", action="append", default=[], help="contender name to skip")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per contender run, seconds")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args(argv)
    _install_wait4_hook()
    files = list(args.files)
    if args.small:
        files += sorted(SHARED_TORCH.glob("*.json.gz"), key=lambda p: p.stat().st_size)[-3:]
    if not files:
        sys.path.insert(0, str(HERE))
        import make_big_trace

        for size in (100 * 10**6, 10**9):
            plain, packed = make_big_trace.build(make_big_trace.DEFAULT_SOURCE, args.dir, size)
            files += [plain, packed]
    table = bench(files, args.hta_max_mb, args.timeout, set(args.skip))
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

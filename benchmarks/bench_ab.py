"""Before/after: one `profdiag report -f json` of two checkouts, in alternation, CPU medians.

    python benchmarks/bench_ab.py --base DIR --new DIR TRACE [--runs 8] [--format html]
        [--base-env KEY=VALUE ...] [--new-env KEY=VALUE ...]

Each run is a fresh ``profdiag report TRACE -f json -q`` process (``--format``: another of the
report's formats, e.g. html, the default of a plain ``profdiag report TRACE``), as the console script runs
it, with ``PYTHONPATH`` set to one checkout, in rounds of one run of each (``--base`` first in
odd rounds, ``--new`` first in even ones), so that a shared machine's drifts and any
penalty of the first run of a round hit both alike: on the 2-core machines of
issue 18 the same report's CPU varied by 30% from minute to minute, more than most single
fixes save, and only alternation tells them apart. Each checkout's ``profdiag`` package is
compiled to bytecode first (where PYTHONDONTWRITEBYTECODE is set, an uncompiled checkout
would pay its compilation in every run). Both run under this interpreter, so a dependency
that differs between the two (a new one) must be installed in it. Prints every pair, then
the medians and the minima with their ratios, and the load average. Noise on such a machine
only adds CPU time (a neighbour's cache and memory traffic, frequency), so the minimum is
the steadier estimate of a process' own cost; an A/A run (``--base`` and ``--new`` the same
checkout) shows how far apart two identical contenders read there. Run it from outside a checkout (``cd /tmp``);
a worktree of the old commit (``git worktree add /tmp/base <commit>``) is the usual base.
``--base-env``/``--new-env`` set environment variables for one side's runs (the same
checkout twice with ``--new-env PROFDIAG_PREFETCH=0``, say, measures one switch). The wall
seconds' medians and minima are printed too: a change that spends CPU on a second core (the
Kineto prefetch) shows in them, not in the CPU seconds.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_load import CONTENDERS, _install_wait4_hook, run_child  # noqa: E402
from bench_paired import loadavg  # noqa: E402

# bench_load's report contender: the console script's own path (sys.exit(main()) with
# sys.argv), whose atexit handler prints the work time (an older checkout's normal exit
# runs it too)
REPORT = CONTENDERS["profdiag report -f json -q"]


def report_code(fmt: str) -> str:
    """The report contender writing ``fmt`` instead of json."""
    code = REPORT.replace("'r.json'", f"'r.{fmt}'").replace("'-f', 'json'", f"'-f', '{fmt}'")
    if fmt != "json" and code == REPORT:  # pragma: no cover (bench_load's contender changed)
        raise SystemExit("bench_ab: cannot set the report's format in bench_load's contender")
    return code


def _checkout(path: str, flag: str) -> Path:
    root = Path(path).resolve()
    if not (root / "profdiag" / "__init__.py").is_file():
        raise SystemExit(f"bench_ab: {flag} {path}: not a profdiag checkout (no profdiag/__init__.py)")
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--base", required=True, help="the checkout before the change")
    ap.add_argument("--new", required=True, help="the checkout after it")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--format", default="json", choices=("json", "html", "md", "txt"),
                    help="the report's format (default json)")
    ap.add_argument("--base-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable of the base's runs (repeatable)")
    ap.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable of the new side's runs (repeatable)")
    args = ap.parse_args()
    envs = {"base": _env_pairs(args.base_env, "--base-env"),
            "new": _env_pairs(args.new_env, "--new-env")}
    trace = Path(args.trace)
    if not trace.is_file():
        print(f"bench_ab: {trace}: no such file", file=sys.stderr)
        return 2
    sides = {"base": _checkout(args.base, "--base"), "new": _checkout(args.new, "--new")}
    for root in sides.values():
        compileall.compile_dir(str(root / "profdiag"), quiet=1)
    _install_wait4_hook()
    code = report_code(args.format)
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    wall: dict[str, list[float]] = {k: [] for k in sides}
    before = loadavg()
    names = {"PYTHONPATH", *envs["base"], *envs["new"]}
    saved = {k: os.environ.get(k) for k in names}
    try:
        for i in range(args.runs):
            # base first in odd rounds, new first in even ones, so that a penalty of a round's
            # first run, if any, falls on both: an A/A run in a fixed order read 0.86 (7
            # rounds, medians), A/A runs in this order 1.11 (8 rounds) and 0.98 (10)
            order = list(sides.items()) if i % 2 == 0 else list(sides.items())[::-1]
            for tag, root in order:
                _set_env(saved, {"PYTHONPATH": str(root), **envs[tag]})
                r = run_child(code, trace, args.timeout)
                if "error" in r:
                    print(f"bench_ab: {tag} run {i + 1}: {r['error']}", file=sys.stderr)
                    return 1
                cpu[tag].append(r["cpu_s"])
                wall[tag].append(r["wall_s"])
            print(f"run {i + 1}: base {cpu['base'][-1]:.3f} s  new {cpu['new'][-1]:.3f} s", flush=True)
    finally:
        _set_env(saved, {})
    after = loadavg()
    b, n = statistics.median(cpu["base"]), statistics.median(cpu["new"])
    bmin, nmin = min(cpu["base"]), min(cpu["new"])
    print(f"{trace.name}, -f {args.format}: {args.runs} alternating runs, CPU s medians: base {b:.3f}, new {n:.3f}, "
          f"new/base {n / b:.3f}; minima: base {bmin:.3f}, new {nmin:.3f}, new/base "
          f"{nmin / bmin:.3f}; {os.cpu_count()} CPUs, load average {before} before, {after} after")
    wb, wn = statistics.median(wall["base"]), statistics.median(wall["new"])
    wbmin, wnmin = min(wall["base"]), min(wall["new"])
    print(f"wall s medians: base {wb:.3f}, new {wn:.3f}, new/base {wn / wb:.3f}; minima: base "
          f"{wbmin:.3f}, new {wnmin:.3f}, new/base {wnmin / wbmin:.3f}")
    return 0


def _env_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench_ab: {flag} {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _set_env(saved: dict[str, str | None], values: dict[str, str]) -> None:
    """The environment as saved, with ``values`` over it."""
    for key, old in saved.items():
        if key in values:
            os.environ[key] = values[key]
        elif old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


if __name__ == "__main__":
    sys.exit(main())

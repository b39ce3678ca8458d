"""Where one `profdiag report -f json` spends its CPU: imports, load, diagnosis, JSON.

    python benchmarks/phases.py TRACE [--runs 3]

Each run is a fresh process (so the imports are cold, as in a real report, the CLI's
included) with the CLI's process settings (``profdiag.cli.process_settings``); it prints CPU
seconds per phase, then the median of each phase over the runs. The diagnosis' time
includes the kernel rules' loading (TOML and regex compiles), which a report pays once. Run
it from outside a checkout (``cd /tmp``) so the profdiag on PYTHONPATH or installed is the
one measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# the imports a `profdiag report -f json` makes (the CLI first, then what it imports lazily),
# with the CLI's own process settings applied between the two, as its main() does
CHILD = r"""
import json, sys, time
t0 = time.process_time()
import profdiag.cli
profdiag.cli.process_settings(["report"])
import profdiag.diagnosis, profdiag.parsers.torch_json, profdiag.parsers._kineto_fast  # noqa
from profdiag import diagnosis, load
t1 = time.process_time()
trace = load(sys.argv[1], compact=True)
t2 = time.process_time()
diag = diagnosis.run(trace)
t3 = time.process_time()
text = json.dumps(diag.to_dict(), default=str)
t4 = time.process_time()
print(json.dumps({"start": t0, "imports": t1 - t0, "load": t2 - t1, "diagnosis": t3 - t2,
                  "json": t4 - t3, "total": t4}))
"""

PHASES = ("start", "imports", "load", "diagnosis", "json", "total")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not os.path.isfile(args.trace):
        print(f"phases: {args.trace}: no such file", file=sys.stderr)
        return 2
    rows = []
    for i in range(args.runs):
        out = subprocess.run([sys.executable, "-c", CHILD, args.trace], capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"phases: run {i + 1} failed: {last}", file=sys.stderr)
            return 1
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"run {i + 1}: " + "  ".join(f"{k} {row[k]:.3f}" for k in PHASES))
    print("median: " + "  ".join(f"{k} {statistics.median(r[k] for r in rows):.3f}"
                                 for k in PHASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())

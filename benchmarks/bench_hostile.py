"""Hostile inputs against their bounds: time and peak memory of `profdiag report` on each.

    python benchmarks/bench_hostile.py [--workdir /tmp/profdiag-hostile] [--out table.md]

Builds (once, in --workdir) and runs, each in a fresh subprocess:

* a 5 GB gzip bomb: a Kineto JSON whose ``traceEvents`` array holds 5 GiB of whitespace,
  gzipped to about 5 MB (default bound, then with ``--max-inflated-size 6G`` so all 5 GiB
  are streamed);
* a malicious view: the bundled nsys export with its kernel table replaced by a view over
  an endless recursive CTE, and a StringIds view joined to itself;
* a 1 MB kernel name: the bundled torch trace with one kernel named ``cutlass`` x 150,000.

Peak RSS is the child's ru_maxrss (os.wait4); the goal (issue 17) is under 30 s and 1 GB
each. Not a test: the numbers go to docs/security.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURES = REPO / "fixtures"


def bomb(path: Path, gib: int = 5) -> Path:
    if path.exists():
        return path
    block = b" " * (64 << 20)
    with gzip.open(path, "wb", compresslevel=9) as gz:
        gz.write(b'{"traceEvents": [')
        for _ in range(gib * 16):
            gz.write(block)
        gz.write(b"]}")
    return path


def malicious_view(path: Path) -> Path:
    shutil.copy(FIXTURES / "nsys" / "seed_microbench.sqlite", path)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE CUPTI_ACTIVITY_KIND_KERNEL RENAME TO kernels_hidden")
    con.execute("CREATE VIEW CUPTI_ACTIVITY_KIND_KERNEL AS WITH RECURSIVE c(x) AS "
                "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x AS start, x + 1 AS \"end\", "
                "x AS deviceId, x AS streamId, x AS shortName FROM c")
    con.execute("ALTER TABLE StringIds RENAME TO strings_hidden")
    con.execute("CREATE VIEW StringIds AS SELECT a.id AS id, a.value || b.value AS value "
                "FROM strings_hidden a, strings_hidden b, strings_hidden c")
    con.commit()
    con.close()
    return path


def long_name(path: Path) -> Path:
    doc = json.loads(gzip.decompress((FIXTURES / "torch" /
                                      "own_tiny_prefill_T128_B1.json.gz").read_bytes()))
    k = next(e for e in doc["traceEvents"] if e.get("cat") == "kernel")
    k["name"] = "cutlass" * 150_000  # 1.05 MB
    path.write_text(json.dumps(doc))
    return path


def measure(args: list[str], cwd: Path) -> tuple[float, float, int, str]:
    code = "import sys; from profdiag.cli import main; main(sys.argv[1:])"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, rc, err.strip().splitlines()[-1] if err.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/profdiag-hostile")
    ap.add_argument("--out")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    b = bomb(work / "bomb5g.json.gz")
    print(f"bomb: {b.stat().st_size / 1e6:.1f} MB compressed ({time.monotonic() - t0:.0f} s)",
          file=sys.stderr)
    cases = [
        ("5 GiB gzip bomb (default bound)", ["report", str(b), "-o", str(work / "b.json")]),
        ("5 GiB gzip bomb, --max-inflated-size 6G",
         ["report", str(b), "-o", str(work / "b.json"), "--max-inflated-size", "6G"]),
        ("nsys export with malicious views",
         ["report", str(malicious_view(work / "view.sqlite")), "-o", str(work / "v.json")]),
        ("1 MB kernel name", ["report", str(long_name(work / "long.json")), "-o",
                              str(work / "l.json")]),
    ]
    rows = ["| input | wall s | peak RSS MB | exit | outcome |", "|---|---:|---:|---:|---|"]
    for label, args in cases:
        wall, rss, rc, msg = measure(args, work)
        msg = msg.replace(str(work) + "/", "").replace("|", "/")[:110] or "report written"
        rows.append(f"| {label} | {wall:.1f} | {rss:.0f} | {rc} | {msg} |")
        print(rows[-1], file=sys.stderr)
    text = "\n".join(rows) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()

"""Build large Nsight Systems SQLite exports by replicating a real one in time.

    python benchmarks/make_big_nsys.py [OUT_DIR] [--kernels 1M --kernels 5M] [--source EXPORT]

The source (default ../shared/traces/nsys/nsys_1b_T512_decode64.sqlite.gz: 75,644 kernels,
160,026 runtime calls, 65 NVTX ranges) is copied, then every timed table (kernels, runtime
calls, memcpy/memset, synchronisation, NVTX, OS runtime) is appended to itself shifted past
the previous copy, with correlation ids offset so that each kernel still pairs with its own
launch. Writes ``big_<N>kernels.sqlite`` into OUT_DIR (default /tmp/profdiag-bench); an
existing file with the right kernel count is kept.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SOURCE = REPO.parent / "shared" / "traces" / "nsys" / "nsys_1b_T512_decode64.sqlite.gz"
KERNELS = "CUPTI_ACTIVITY_KIND_KERNEL"
TIMED = (KERNELS, "CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_MEMCPY",
         "CUPTI_ACTIVITY_KIND_MEMSET", "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION", "NVTX_EVENTS",
         "OSRT_API")


def parse_count(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KM]?)", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad count {text!r} (e.g. 500K, 1M)")
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6}[m.group(2).upper()])


def _columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]


def build(source: Path, out_dir: Path, kernels: int) -> Path:
    """Write big_<N>kernels.sqlite with at least ``kernels`` kernel rows."""
    out_dir = out_dir.resolve()
    if out_dir == REPO or REPO in out_dir.parents:
        raise SystemExit("refusing to write benchmark exports into the repository")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"big_{kernels // 1000}Kkernels.sqlite"
    if out.exists():
        with sqlite3.connect(out) as con:
            if con.execute(f"SELECT count(*) FROM {KERNELS}").fetchone()[0] >= kernels:
                return out
    tmp = out.with_suffix(".partial")
    if source.suffix == ".gz":
        with gzip.open(source, "rb") as src, tmp.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copyfile(source, tmp)
    con = sqlite3.connect(tmp)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    timed = [t for t in TIMED if t in tables]
    base = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in timed}
    lo, hi = con.execute("SELECT min(start), max(end) FROM " + KERNELS).fetchone()
    span = int(hi - lo) + 1_000_000
    corr = int(con.execute("SELECT max(correlationId) FROM CUPTI_ACTIVITY_KIND_RUNTIME")
               .fetchone()[0]) + 1
    copies = -(-kernels // base[KERNELS])
    for c in range(1, copies):
        for t in timed:
            cols = _columns(con, t)
            exprs = []
            for col in cols:
                if col in ("start", "end", "timestamp"):
                    exprs.append(f'"{col}" + {c * span}')
                elif col == "correlationId":
                    exprs.append(f'"{col}" + {c * corr}')
                else:
                    exprs.append(f'"{col}"')
            names = ", ".join(f'"{x}"' for x in cols)
            con.execute(f'INSERT INTO "{t}" ({names}) SELECT {", ".join(exprs)} FROM "{t}" '
                        f"WHERE rowid <= {base[t]}")
        con.commit()
        print(f"\r{out.name}: copy {c + 1}/{copies}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    con.execute("VACUUM")
    con.close()
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="/tmp/profdiag-bench", type=Path)
    ap.add_argument("--kernels", action="append", type=parse_count,
                    help="kernel rows to reach (repeatable; default 1M)")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="an nsys SQLite export (.sqlite or .sqlite.gz) to replicate")
    args = ap.parse_args(argv)
    if not args.source.exists():
        raise SystemExit(f"source export not found: {args.source} (pass --source, or check "
                         "out ../shared beside the repository)")
    for n in args.kernels or [1_000_000]:
        print(build(args.source, args.out_dir, n))


if __name__ == "__main__":
    main()

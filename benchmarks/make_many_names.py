"""A Kineto trace whose kernels carry N distinct names of about 1 KB each (issue 18: the cost
of a report must stay flat in the number of distinct names).

    python benchmarks/make_many_names.py [OUT_DIR] [--names 10000] [--bytes 1024] [--source F]

Takes a real capture (default: shared/traces/torch/own_1b_decode_ctx1024_B1_steps8.json.gz)
and gives each of its first N kernels the name ``<its own name> /*variant i: xxx...*/``,
padded to ``--bytes`` (the others keep theirs): the kernels' classes, shapes and timing are
unchanged, so a report of the result differs from the original's only by the cost of
handling N more distinct long names.
Writes ``many_names_<N>.json`` into OUT_DIR (default /tmp/profdiag-bench), never into the
repository.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_SOURCE = (HERE.parents[1] / "shared" / "traces" / "torch"
                  / "own_1b_decode_ctx1024_B1_steps8.json.gz")


def build(source: Path, out_dir: Path, names: int, size: int) -> Path:
    out_dir = out_dir.resolve()
    if REPO in out_dir.parents or out_dir == REPO:
        raise SystemExit("refusing to write benchmark traces into the repository")
    if not source.exists():
        sys.exit(f"make_many_names: {source} is absent: pass --source PATH to a Kineto trace")
    raw = source.read_bytes()
    doc = orjson.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    kernels = [e for e in doc["traceEvents"] if e.get("cat") == "kernel" and e.get("ph") == "X"]
    if len(kernels) < names:
        sys.exit(f"make_many_names: {source.name} has {len(kernels)} kernels, fewer than "
                 f"--names {names}")
    for i, ev in enumerate(kernels[:names]):
        tag = f" /*variant {i}: "
        pad = max(0, size - len(ev["name"]) - len(tag) - 2)
        ev["name"] = ev["name"] + tag + "x" * pad + "*/"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"many_names_{names}.json"
    out.write_bytes(orjson.dumps(doc))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", type=Path, default=Path("/tmp/profdiag-bench"))
    ap.add_argument("--names", type=int, default=10_000)
    ap.add_argument("--bytes", type=int, default=1024, help="length of each kernel name")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = ap.parse_args(argv)
    print(build(args.source, args.out_dir, args.names, args.bytes))


if __name__ == "__main__":
    main()

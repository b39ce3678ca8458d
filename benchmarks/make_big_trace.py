"""Build large Kineto traces by replicating a real one (shifted timestamps and ids).

    python benchmarks/make_big_trace.py [OUT_DIR] [--size 100MB --size 1GB] [--source TRACE]

Each replica of the source's events is shifted past the previous one in time, and its
correlation / External id / flow ids are offset so op links stay unique. Writes
``big_<size>.json`` and ``big_<size>.json.gz`` (same content) into OUT_DIR (default
/tmp/profdiag-bench); existing files of the right size are kept.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import zlib
from pathlib import Path

import orjson

DEFAULT_SOURCE = (Path(__file__).resolve().parents[2] / "shared" / "traces" / "torch"
                  / "own_1b_decode_ctx1024_B1_steps8.json.gz")
REPO = Path(__file__).resolve().parents[1]
_ID_KEYS = ("External id", "external id", "correlation", "Record function id")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)B?", text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 100MB, 1GB)")
    return int(float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2).upper()])


def size_label(n: int) -> str:
    return f"{n // 10**9}GB" if n >= 10**9 and n % 10**9 == 0 else f"{round(n / 1e6)}MB"


def build(source: Path, out_dir: Path, target: int, level: int = 6) -> tuple[Path, Path]:
    """Write big_<size>.json and .json.gz of about ``target`` uncompressed bytes."""
    out_dir = out_dir.resolve()
    if REPO in out_dir.parents or out_dir == REPO:
        raise SystemExit("refusing to write benchmark traces into the repository")
    out_dir.mkdir(parents=True, exist_ok=True)
    label = size_label(target)
    plain, packed = out_dir / f"big_{label}.json", out_dir / f"big_{label}.json.gz"
    if plain.exists() and packed.exists() and abs(plain.stat().st_size - target) < 0.05 * target:
        return plain, packed
    if not source.is_file():
        raise SystemExit(f"source trace not found: {source} (pass --source PATH to a Kineto "
                         "trace, or check out ../shared beside the repository)")
    raw = source.read_bytes()
    doc = orjson.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    events = doc.pop("traceEvents")
    tail_keys = {k: doc.pop(k) for k in ("traceName", "distributedInfo") if k in doc}
    timed = [e for e in events if isinstance(e.get("ts"), (int, float))]
    t0 = min(e["ts"] for e in timed)
    t1 = max(e["ts"] + e.get("dur", 0) for e in timed)
    span = (t1 - t0) + 1000.0  # µs, plus a 1 ms gap between replicas
    ids = [v for e in events for k, v in (e.get("args") or {}).items()
           if k in _ID_KEYS and isinstance(v, int)] + [e["id"] for e in events
                                                        if isinstance(e.get("id"), int)]
    id_step = 10 ** len(str(max(ids, default=0) + 1))
    head = orjson.dumps(doc, option=orjson.OPT_INDENT_2)[:-2] + b',\n  "traceEvents": [\n'
    tail = b"\n  ]" + b"".join(b',\n  ' + orjson.dumps(k) + b": " + orjson.dumps(v)
                               for k, v in tail_keys.items()) + b"\n}\n"
    gz = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    written = 0
    tmp_plain, tmp_packed = plain.with_suffix(".json.tmp"), packed.with_suffix(".gz.tmp")
    with open(tmp_plain, "wb") as fp, open(tmp_packed, "wb") as fz:
        def emit(b: bytes) -> None:
            nonlocal written
            fp.write(b)
            fz.write(gz.compress(b))
            written += len(b)

        emit(head)
        rep = 0
        sep = b"  "
        while written < target - len(tail):
            dt, did = rep * span, rep * id_step
            parts = []
            size = written + len(tail)
            for e in events:
                if rep:
                    e = dict(e)
                    if isinstance(e.get("ts"), (int, float)):
                        e["ts"] = round(e["ts"] + dt, 3)
                    if isinstance(e.get("id"), int):
                        e["id"] += did
                    args = e.get("args")
                    if args:
                        args = e["args"] = dict(args)
                        for k in _ID_KEYS:
                            if isinstance(args.get(k), int) and args[k] >= 0:
                                args[k] += did
                b = orjson.dumps(e)
                parts.append(sep + b)
                sep = b",\n  "
                size += len(b) + 4
                if size >= target:
                    break
            emit(b"".join(parts))
            rep += 1
            if rep % 5 == 0:
                print(f"  {plain.name}: {written / 1e6:.0f} MB", file=sys.stderr)
        emit(tail)
        fz.write(gz.flush())
    tmp_plain.replace(plain)
    tmp_packed.replace(packed)
    return plain, packed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="/tmp/profdiag-bench", type=Path)
    ap.add_argument("--size", action="append", type=parse_size,
                    help="target uncompressed size, repeatable (default 100MB and 1GB)")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                    help="real Kineto trace to replicate (default: the largest shared one)")
    ap.add_argument("--level", type=int, default=6, help="gzip level (default 6)")
    args = ap.parse_args(argv)
    for size in args.size or [100 * 10**6, 10**9]:
        plain, packed = build(args.source, args.out_dir, size, args.level)
        print(json.dumps({"json": str(plain), "json_bytes": plain.stat().st_size,
                          "gz": str(packed), "gz_bytes": packed.stat().st_size}))


if __name__ == "__main__":
    main()

"""Correctness guard for parser work: the event table must stay identical.

    python benchmarks/check_tables.py save DIR [--source ../shared] [FILES...]
    python benchmarks/check_tables.py check DIR [--source ../shared] [FILES...]

``save`` pickles ``profdiag.load(FILE).events`` (and the trace's warnings, options and
collectives) of every Kineto trace in shared/traces/torch and shared/samples/kineto into
DIR; ``check`` loads them again and reports every file whose table is not
``DataFrame.equals`` with the same dtypes, or whose meta differs (exit 1). The checkout
imported is the one on PYTHONPATH: save with the old code, check with the new.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[1] / "shared"


def inputs(source: Path, extra: list[str]) -> list[Path]:
    if not source.is_dir():
        sys.exit(f"check_tables: no shared directory at {source} (pass --source PATH)")
    files = sorted((source / "traces" / "torch").glob("*.json.gz"))
    kineto = source / "samples" / "kineto"
    files += sorted(p for p in kineto.rglob("*") if p.name.endswith((".json", ".json.gz"))
                    and "gpu_metrics" not in p.name)
    return files + [Path(e) for e in extra]


def key(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8] + "_" + path.name + ".pkl"


def snapshot(path: Path) -> dict[str, Any]:
    import profdiag

    tr = profdiag.load(path)
    m = tr.meta
    return {"events": tr.events, "warnings": list(m.warnings), "options": dict(m.options),
            "collectives": m.collectives, "base": m.base_time_ns, "salvaged": m.salvaged}


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
        try:
            snap = snapshot(path)
        except Exception as exc:  # noqa: BLE001 - a parse error is part of the snapshot
            snap = {"error": f"{type(exc).__name__}: {exc}"}
        if a.mode == "save":
            ref.write_bytes(pickle.dumps(snap))
            print(f"saved  {path.name}", flush=True)
            continue
        old = pickle.loads(ref.read_bytes())
        if "error" in old or "error" in snap:
            same = old.get("error") == snap.get("error")
            why = f"{old.get('error')} vs {snap.get('error')}"
        else:
            ev_old, ev_new = old.pop("events"), snap.pop("events")
            same_dtypes = list(ev_old.dtypes) == list(ev_new.dtypes)
            same = bool(ev_old.equals(ev_new)) and same_dtypes and old == snap
            why = "" if same else (f"equals={ev_old.equals(ev_new)} dtypes={same_dtypes} "
                                   f"meta={old == snap}")
        bad += not same
        print(f"{'same ' if same else 'DIFF '} {path.name} {why}", flush=True)
    if a.mode == "check":
        print(f"{bad} differ")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

"""Correctness guard for the diagnosis' tables: what `export` and Perfetto write must stay identical.

    python benchmarks/check_exports.py save DIR [--source ../shared] [FILES...]
    python benchmarks/check_exports.py check DIR [--source ../shared] [FILES...]

For every trace check_reports.py reads (shared/traces/torch, shared/traces/nsys, a few
shared/samples), ``save`` pickles, in a fresh process each: the ``Diagnosis.tables()`` of the
CLI's diagnosis (``commands.options.run_diagnosis``: what ``profdiag export`` writes as CSV or
Parquet), the same tables from ``profdiag.diagnose(profdiag.load(FILE))`` (the API path), and
the Perfetto document of ``perfetto.build``. ``check`` builds them again and reports every file
whose tables are not ``DataFrame.equals`` with the same dtypes, or whose Perfetto JSON bytes
differ (exit 1). The checkout imported is the one on PYTHONPATH: save with the old code,
check with the new.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from check_reports import DEFAULT_SOURCE, inputs, key  # noqa: E402


def snapshot(path: str) -> dict[str, Any]:
    """The tables of both diagnosis paths and the Perfetto JSON of ``path``."""
    import orjson

    import profdiag
    from profdiag import perfetto
    from profdiag.commands.options import run_diagnosis

    diag = run_diagnosis(path, {})
    tables = diag.tables()
    doc = perfetto.build(diag, tables)
    api = profdiag.diagnose(profdiag.load(path)).tables()
    return {"tables": tables, "api": api,
            "perfetto": orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY,
                                     default=perfetto._json_default)}


def _child(path: str, out: str) -> None:
    try:
        snap = snapshot(path)
    except Exception as exc:  # noqa: BLE001 - a diagnosis error is part of the snapshot
        snap = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out).write_bytes(pickle.dumps(snap))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    if "error" in old or "error" in new:
        return [] if old.get("error") == new.get("error") else [
            f"{old.get('error')} vs {new.get('error')}"]
    out = []
    for part in ("tables", "api"):
        a, b = old[part], new[part]
        if list(a) != list(b):
            out.append(f"{part}: tables {list(a)} vs {list(b)}")
            continue
        for name in a:
            ta, tb = a[name], b[name]
            if list(ta.columns) != list(tb.columns):
                out.append(f"{part}.{name}: columns {list(ta.columns)} vs {list(tb.columns)}")
            elif list(ta.dtypes) != list(tb.dtypes):
                cols = [c for c in ta.columns if ta[c].dtype != tb[c].dtype]
                out.append(f"{part}.{name}: dtypes of {cols} "
                           f"({', '.join(f'{ta[c].dtype} vs {tb[c].dtype}' for c in cols[:2])})")
            elif not ta.equals(tb):
                out.append(f"{part}.{name}: values differ")
    if old["perfetto"] != new["perfetto"]:
        out.append("perfetto JSON differs")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["save", "check", "child"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    a = ap.parse_args()
    if a.mode == "child":  # internal: one snapshot in a fresh process
        _child(a.files[0], str(a.dir))
        return
    a.dir.mkdir(parents=True, exist_ok=True)
    bad = 0
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for path in inputs(a.source, a.files):
        ref = a.dir / key(path).replace(".report.json", ".tables.pkl")
        # a name of this process's own: two checks of one DIR may run at once
        out = ref if a.mode == "save" else a.dir / f"_new.{os.getpid()}.pkl"
        proc = subprocess.run([sys.executable, __file__, "child", str(out), str(path)],
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"FAIL  {path.name}: {proc.stderr.strip()[-300:]}", flush=True)
            bad += 1
            continue
        if a.mode == "save":
            print(f"saved  {path.name}", flush=True)
            continue
        diffs = differences(pickle.loads(ref.read_bytes()), pickle.loads(out.read_bytes()))
        bad += bool(diffs)
        print(f"{'DIFF ' if diffs else 'same '} {path.name} {'; '.join(diffs)}", flush=True)
    if a.mode == "check":
        (a.dir / f"_new.{os.getpid()}.pkl").unlink(missing_ok=True)
        print(f"{bad} file(s) differ" if bad else "every table and Perfetto file is the same")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

"""A static, offline site over many profiles: index.html (table + trend charts) and one full
report per profile under runs/.

Input is a history database or a directory of traces / JSON reports. The page is built from
a plain view dict (``build_view``, tested directly), then renderers/site.py renders it
through the packaged jinja2 template ``index.html.j2`` (autoescape on); charts are drawn in the browser by inline JS
from an embedded JSON element. No CDN, no external file, no build timestamp: the same inputs
give the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import report_model
from .errors import NoGpuEventsError, ProfdiagError, UsageError

# metric -> (title, unit): the trend charts, in page order (only those with any value appear)
CHARTS: list[tuple[str, str, str]] = [
    ("overhead_share", "Overhead share (GPU idle)", "%"),
    ("busy_share", "GPU busy share", "%"),
    ("step_ms.decode", "Median decode step", "ms"),
    ("step_ms.prefill", "Median prefill step", "ms"),
    ("gemm_calls", "GEMM calls observed", ""),
    ("category.compute", "Compute share", "%"),
]
TRACE_SUFFIXES = (".json", ".json.gz", ".gz", ".sqlite", ".csv", ".nsys-rep")
SIDECARS = {"manifest.json"}  # capture manifests beside traces: read by the diagnosis itself


@dataclass
class Entry:
    """One profile on the page: its id (run id or a slug of the file name) and diagnosis."""

    id: str
    data: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    recorded_at: str | None = None  # UTC ISO, from the history
    source: str | None = None  # the trace or report file
    display: str | None = None  # what the id column shows (default: id)


@dataclass
class SiteResult:
    index: Path
    pages: list[Path]
    skipped: list[str]


# ---------------------------------------------------------------------------------- inputs

def entries_from_db(db: str | os.PathLike[str]) -> list[Entry]:
    """Every run of a history database, oldest first."""
    from . import history

    runs = history.list_runs(db)
    meta = {int(r["id"]): r for r in runs.to_dict("records")}
    out = []
    for run_id, data in history.diagnoses(db):
        row = meta[run_id]
        stamp = row["recorded_at"]
        out.append(Entry(id=str(run_id), data=data, labels=dict(row["labels"]),
                         recorded_at=stamp.strftime("%Y-%m-%dT%H:%M:%SZ") if stamp == stamp
                         and str(stamp) != "NaT" else None, source=row["trace_path"]))
    return out


def is_diagnosis(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and "schema_version" in obj
            and isinstance(obj.get("mode"), Mapping) and isinstance(obj.get("bottleneck"), Mapping)
            and "source" in obj)


def _candidates(directory: Path, exclude: Path | None) -> list[Path]:
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if exclude is not None and (p == exclude or exclude in p.parents):
            continue
        if p.name in SIDECARS or not p.name.lower().endswith(TRACE_SUFFIXES):
            continue
        out.append(p)
    return out


def _read_report(path: Path) -> dict[str, Any] | None:
    """A JSON report (or a history run with its `diagnosis`) if ``path`` is one, else None."""
    from .parsers._io import read_report_json

    if not path.name.lower().endswith(".json"):
        return None
    obj = read_report_json(path)
    if is_diagnosis(obj):
        return {"diagnosis": obj}
    if isinstance(obj, Mapping) and is_diagnosis(obj.get("diagnosis")):
        return dict(obj)
    return None


def entries_from_dir(directory: str | os.PathLike[str], warn: Callable[[str], None],
                     exclude: str | os.PathLike[str] | None = None) -> list[Entry]:
    """Diagnose every trace (and read every JSON report) under ``directory``, in path order;
    files that cannot be read are skipped with a call to ``warn``."""
    from . import diagnose, load

    root = Path(directory)
    excl = Path(exclude).resolve() if exclude is not None else None
    out: list[Entry] = []
    used: set[str] = set()
    for path in _candidates(root, excl):
        rel = str(path.relative_to(root))
        try:
            report = _read_report(path)
            if report is not None:
                data = report["diagnosis"]
                report_model.load(data, rel)  # a wrong value: skipped, with its JSON path
                labels = {str(k): str(v) for k, v in (report.get("labels") or {}).items()}
                stamp = report.get("recorded_at")
            else:
                data, labels, stamp = diagnose(load(path, compact=True)).to_dict(), {}, None
        except ProfdiagError as exc:
            warn(f"skipping {rel}: {exc.message}")
            continue
        except Exception as exc:  # one bad file must not sink the whole index
            first = str(exc).splitlines()[0] if str(exc) else ""
            warn(f"skipping {rel}: {type(exc).__name__}: {first}")
            continue
        out.append(Entry(id=_unique_slug(rel, used), data=data, labels=labels,
                         recorded_at=stamp if isinstance(stamp, str) else None, source=rel,
                         display=str(len(out) + 1)))
    return out


def _unique_slug(rel: str, used: set[str]) -> str:
    name = rel
    for suffix in (".gz", ".json", ".sqlite", ".csv", ".nsys-rep"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "profile"
    candidate, n = slug, 2
    while candidate in used:
        candidate, n = f"{slug}-{n}", n + 1
    used.add(candidate)
    return candidate


# ---------------------------------------------------------------------------------- view

def _fmt_share(x: Any) -> str:
    return f"{x * 100:.1f}%" if isinstance(x, (int, float)) else "-"


def _step_text(s: Mapping[str, Any]) -> str:
    pre, dec = s.get("step_prefill_ms"), s.get("step_decode_ms")
    if pre is not None and dec is not None:
        return f"prefill {pre:.2f} / decode {dec:.2f}"
    return f"{s['step_ms']:.2f}" if s.get("step_ms") is not None else "-"


def build_view(entries: list[Entry], title: str = "profdiag index") -> dict[str, Any]:
    """Plain data for the template: table rows, and per-chart series for the JS."""
    from .history import metrics_of, summarize

    rows = []
    series: dict[str, list[dict[str, Any]]] = {m: [] for m, _, _ in CHARTS}
    for order, e in enumerate(entries):
        rep = report_model.load(e.data, e.source or e.id)
        s = summarize(e.data)  # the raw document: a gate run's status is beside the report
        metrics = metrics_of(rep)
        labels_text = " ".join(f"{k}={v}" for k, v in sorted(e.labels.items()))
        src = rep.source.path or e.source or ""
        obs, exp = s["observed_gemm_calls"], s["expected_gemm_calls"]
        step = {"step_ms": s["step_ms"], "step_prefill_ms": s["step_ms_prefill"],
                "step_decode_ms": s["step_ms_decode"]}
        row = {
            "id": e.id, "display": e.display or e.id, "order": order,
            "href": f"runs/{e.id}.html",
            "date": (e.recorded_at or "")[:16].replace("T", " "),
            "date_sort": e.recorded_at or "",
            "labels": labels_text, "profile": Path(str(src)).name if src else "",
            "profile_path": str(src),
            "mode": s["mode"] or "-", "bottleneck": s["bottleneck"] or "-",
            "status": s["status"] or "",
            "overhead": _fmt_share(s["overhead_share"]),
            "overhead_sort": s["overhead_share"],
            "step": _step_text(step),
            "step_sort": s["step_ms_decode"] if s["step_ms_decode"] is not None else s["step_ms"],
            "gemm": (f"{obs}/{exp}" if exp is not None else str(obs)) if obs is not None else "-",
            "gemm_sort": obs, "gemm_ok": obs is not None and exp is not None and obs == exp,
            "gemm_bad": obs is not None and exp is not None and obs != exp,
            "device": s["device"] or "",
        }
        rows.append(row)
        name = f"#{row['display']} " + (labels_text or row["profile"])
        for metric, _, unit in CHARTS:
            if metric in metrics:
                v = metrics[metric] * (100 if unit == "%" else 1)
                series[metric].append({"id": e.id, "label": row["display"], "x": order,
                                       "y": round(v, 6), "name": name, "href": row["href"]})
    charts = [{"metric": m, "title": t, "unit": u, "points": series[m]}
              for m, t, u in CHARTS if series[m]]
    return {"title": title, "rows": rows, "charts": charts, "count": len(rows),
            "data": {"charts": charts, "runs": [r["id"] for r in rows]}}


# ---------------------------------------------------------------------------------- site

def build_site(source: str | os.PathLike[str], out_dir: str | os.PathLike[str],
               warn: Callable[[str], None] | None = None,
               title: str | None = None) -> SiteResult:
    """Write ``out_dir``/index.html and ``out_dir``/runs/<id>.html for a history database or
    a directory of traces/reports; return what was written and what was skipped."""
    from .io import check_input, check_site_dir, protect, write_atomic
    from .renderers import render
    from .renderers.site import render_index

    skipped: list[str] = []

    def note(msg: str) -> None:
        skipped.append(msg)
        if warn is not None:
            warn(msg)

    src, out = Path(source), Path(out_dir)
    check_input(src, what="history database or directory", allow_dir=True)
    if src.is_file():
        protect(src, role="history")
    check_site_dir(out)
    if src.is_dir():
        entries = entries_from_dir(src, note, exclude=out)
        if not entries:
            raise NoGpuEventsError(f"no readable trace or JSON report here"
                                   f"{f' ({len(skipped)} skipped)' if skipped else ''}",
                                   str(src))
    elif src.exists():
        entries = entries_from_db(src)
    else:
        raise UsageError("no such file or directory", str(src))
    view = build_view(entries, title=title or f"profdiag index: {src.name or src}")
    # Everything is rendered before anything is written, and a failed write removes the
    # files this call created: a failing index never leaves a partial site.
    files = [(out / "runs" / f"{e.id}.html", render(e.data, "html")) for e in entries]
    index = out / "index.html"
    files.append((index, render_index(view)))
    created: list[Path] = []
    made_dirs = [d for d in (out, out / "runs") if not d.exists()]
    try:
        for path, text in files:
            existed = path.exists()
            write_atomic(path, text)
            if not existed:
                created.append(path)
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return SiteResult(index=index, pages=[p for p, _ in files[:-1]], skipped=skipped)

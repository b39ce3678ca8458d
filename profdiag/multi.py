"""Many traces at once (one per rank or per run): diagnose in parallel, summarise per rank.

``diagnose_many`` runs each file in a worker process (ProcessPoolExecutor) and returns, in
the input order, either a ``TraceResult`` or a ``TraceFailure``; one bad file never stops
the others. ``rank_summary`` lines the results up by rank (the trace's
``distributedInfo.rank``, else the file order) and names the slowest rank by median step
time, else by GPU busy time.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from .errors import EXIT_BAD_INPUT, ProfdiagError


@dataclass
class TraceResult:
    path: str
    rank: int | None
    data: dict[str, Any]  # Diagnosis.to_dict()


@dataclass
class TraceFailure:
    path: str
    message: str
    exit_code: int = EXIT_BAD_INPUT


@dataclass
class RankRow:
    rank: int
    path: str
    mode: str | None = None
    bottleneck: str | None = None
    steps: int = 0
    median_step_ns: int | None = None
    busy_ns: int | None = None
    window_ns: int | None = None
    kernels: int | None = None
    error: str | None = None


@dataclass
class RankSummary:
    rows: list[RankRow] = field(default_factory=list)
    slowest_rank: int | None = None
    slowest_by: str | None = None  # "median step time" | "GPU busy time"
    spread: float | None = None  # slowest / fastest on that measure

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranks": [vars(r) for r in self.rows],
            "slowest_rank": self.slowest_rank,
            "slowest_by": self.slowest_by,
            "spread": self.spread,
        }


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The PyTorch profiler traces directly inside ``directory``, in natural name order."""
    from .parsers import torch_json, read_head

    found = []
    for p in sorted(Path(directory).iterdir(), key=_natural_key):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            if p.stat().st_size and torch_json.sniff(p, read_head(p)):
                found.append(p)
        except (ProfdiagError, OSError):
            continue
    return found


def _diagnose_one(path: str, options: dict[str, Any]) -> TraceResult | TraceFailure:
    """Worker: load + diagnose one file; errors come back as values, never raised."""
    from . import diagnosis, load

    try:
        trace = load(path, format=options.get("trace_format"))
        diag = diagnosis.run(
            trace,
            model_config=options.get("model_config"),
            layers=options.get("layers"),
            gemms_per_layer=options.get("gemms_per_layer"),
            lm_head=options.get("lm_head"),
            rules=options.get("rules") or (),
            use_manifest=not options.get("no_manifest"),
            hta=bool(options.get("hta")),
            gpu=options.get("gpu"),
            gpu_spec=options.get("gpu_spec"),
        )
        rank = trace.meta.options.get("rank")
        return TraceResult(path, rank if isinstance(rank, int) else None, diag.to_dict())
    except ProfdiagError as exc:
        return TraceFailure(path, str(exc), exc.exit_code)
    except MemoryError:
        return TraceFailure(path, f"{path}: out of memory", EXIT_BAD_INPUT)
    except Exception as exc:  # a bug in one file's diagnosis must not sink the others
        first = str(exc).splitlines()[0] if str(exc) else ""
        return TraceFailure(path, f"{path}: internal error: {type(exc).__name__}: {first}", 70)


def default_jobs(n_files: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_files))


def diagnose_many(paths: list[str | os.PathLike[str]], options: dict[str, Any] | None = None,
                  jobs: int | None = None) -> list[TraceResult | TraceFailure]:
    """Diagnose every path (in parallel when jobs > 1); results in input order."""
    options = dict(options or {})
    names = [str(p) for p in paths]
    jobs = default_jobs(len(names)) if not jobs else max(1, jobs)
    if jobs == 1 or len(names) <= 1:
        return [_diagnose_one(p, options) for p in names]
    with ProcessPoolExecutor(max_workers=min(jobs, len(names))) as pool:
        futures = [pool.submit(_diagnose_one, p, options) for p in names]
        out: list[TraceResult | TraceFailure] = []
        for p, fut in zip(names, futures):
            try:
                out.append(fut.result())
            except Exception as exc:  # a worker died (killed, out of memory)
                out.append(TraceFailure(p, f"{p}: worker failed: {type(exc).__name__}", 70))
        return out


def rank_summary(results: list[TraceResult | TraceFailure]) -> RankSummary:
    """One row per file, by rank; the slowest rank by median step time, else busy time."""
    rows: list[RankRow] = []
    used = {r.rank for r in results if isinstance(r, TraceResult) and r.rank is not None}
    next_rank = 0
    for res in results:
        rank = res.rank if isinstance(res, TraceResult) else None
        if rank is None or sum(1 for r in rows if r.rank == rank):
            while next_rank in used or any(r.rank == next_rank for r in rows):
                next_rank += 1
            rank = next_rank
        if isinstance(res, TraceFailure):
            rows.append(RankRow(rank, res.path, error=res.message))
            continue
        d = res.data
        steps = [s.get("wall_ns") for s in d.get("steps") or [] if s.get("wall_ns")]
        bd = d.get("breakdown") or {}
        rows.append(RankRow(
            rank=rank, path=res.path,
            mode=(d.get("mode") or {}).get("value"),
            bottleneck=(d.get("bottleneck") or {}).get("value"),
            steps=len(steps),
            median_step_ns=int(median(steps)) if steps else None,
            busy_ns=bd.get("busy_ns"), window_ns=bd.get("window_ns"),
            kernels=(d.get("overhead") or {}).get("kernels"),
        ))
    rows.sort(key=lambda r: r.rank)
    summary = RankSummary(rows)
    ok = [r for r in rows if r.error is None]
    by_step = [r for r in ok if r.median_step_ns]
    if by_step and len(by_step) == len(ok):
        pick, measure, key = by_step, "median step time", "median_step_ns"
    else:
        pick, measure, key = [r for r in ok if r.busy_ns], "GPU busy time", "busy_ns"
    if pick:
        slow = max(pick, key=lambda r: getattr(r, key))
        fast = min(pick, key=lambda r: getattr(r, key))
        summary.slowest_rank, summary.slowest_by = slow.rank, measure
        if getattr(fast, key):
            summary.spread = round(getattr(slow, key) / getattr(fast, key), 3)
    return summary


def _ms(ns: int | None) -> str:
    return "–" if ns is None else f"{ns / 1e6:.2f}"


def summary_text(summary: RankSummary, reports: dict[str, str] | None = None) -> str:
    """A fixed-width per-rank table plus the slowest-rank call-out."""
    reports = reports or {}
    head = f"{'rank':>4}  {'mode':<8} {'bottleneck':<10} {'steps':>5} {'median step ms':>14} " \
           f"{'busy ms':>9}  file"
    lines = [head, "-" * len(head)]
    for r in summary.rows:
        if r.error:
            lines.append(f"{r.rank:>4}  error: {r.error}")
            continue
        lines.append(f"{r.rank:>4}  {r.mode or '?':<8} {r.bottleneck or '?':<10} {r.steps:>5} "
                     f"{_ms(r.median_step_ns):>14} {_ms(r.busy_ns):>9}  "
                     f"{reports.get(r.path, Path(r.path).name)}")
    if summary.slowest_rank is not None:
        spread = f" ({summary.spread:.2f}x the fastest)" if summary.spread else ""
        lines.append(f"slowest rank: {summary.slowest_rank} by {summary.slowest_by}{spread}")
    return "\n".join(lines)


def summary_document(summary: RankSummary, reports: dict[str, str], fmt: str) -> str:
    """The index file: JSON, Markdown, HTML or text."""
    import html
    import json

    data = summary.to_dict()
    for row in data["ranks"]:
        row["report"] = reports.get(row["path"])
    if fmt == "json":
        return json.dumps({"schema_version": 1, "kind": "rank_summary", **data},
                          indent=2, sort_keys=True) + "\n"
    if fmt == "txt":
        return summary_text(summary, reports) + "\n"
    cols = ["rank", "mode", "bottleneck", "steps", "median step ms", "busy ms", "report", "error"]

    def cells(row: dict[str, Any]) -> list[str]:
        return [str(row["rank"]), row["mode"] or "", row["bottleneck"] or "", str(row["steps"]),
                _ms(row["median_step_ns"]), _ms(row["busy_ns"]), row["report"] or "",
                row["error"] or ""]

    slow = (f"Slowest rank: {summary.slowest_rank} by {summary.slowest_by}"
            + (f" ({summary.spread:.2f}x the fastest)" if summary.spread else "")
            if summary.slowest_rank is not None else "No rank could be compared.")
    if fmt == "md":
        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        out = ["# Per-rank summary", "", slow, "", "| " + " | ".join(cols) + " |",
               "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(esc(c) for c in cells(r)) + " |" for r in data["ranks"]]
        return "\n".join(out) + "\n"
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>\n"
                   for r in data["ranks"])
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>profdiag: per-rank "
            "summary</title></head><body>\n<h1>Per-rank summary</h1>\n"
            f"<p>{html.escape(slow)}</p>\n<table>\n<tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + f"</tr>\n{rows}</table>\n"
            "</body></html>\n")


def fan_out_paths(trace: str) -> list[Path] | None:
    """The torch traces to diagnose one by one when ``trace`` is a directory of them.

    None when ``trace`` is not a directory, or is one a parser reads as a whole (a rocprofv3
    output folder); raises the parser's error when the directory holds nothing readable.
    """
    p = Path(trace)
    if not p.is_dir():
        return None
    from .parsers import detect

    try:
        detect(p)
        return None
    except ProfdiagError:
        files = trace_files(p)
        if not files:
            raise
        return files


def _report_name(path: Path, fmt: str, taken: set[str]) -> str:
    name = path.name
    for suffix in (".gz", ".json", ".sqlite", ".db", ".csv", ".nsys-rep"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    out, i = f"{name}.report.{fmt}", 2
    while out in taken:
        out, i = f"{name}-{i}.report.{fmt}", i + 1
    taken.add(out)
    return out


def report_directory(trace: str, files: list[Path], output: str | None, fmt: str, quiet: bool,
                     jobs: int | None, opts: dict[str, Any]) -> None:
    """`profdiag report DIR`: one report per trace into OUTPUT (a directory) plus an index."""
    import sys

    from .commands.options import maybe_record
    from .io import write_atomic
    from .renderers import render

    out_dir = Path(output) if output else Path(f"{Path(trace.rstrip('/')).name}.reports")
    if out_dir.exists() and not out_dir.is_dir():
        from .errors import UsageError

        raise UsageError("for a directory of traces, -o must name a directory", str(out_dir))
    results = diagnose_many([str(f) for f in files], opts, jobs)
    if not any(isinstance(r, TraceResult) for r in results):
        first = results[0]
        assert isinstance(first, TraceFailure)
        err = ProfdiagError(f"none of the {len(results)} traces could be diagnosed; first: "
                            f"{first.message}")
        err.exit_code = first.exit_code
        raise err
    taken: set[str] = set()
    reports: dict[str, str] = {}
    for res in results:
        if isinstance(res, TraceResult):
            target = out_dir / _report_name(Path(res.path), fmt, taken)
            write_atomic(target, render(res.data, fmt))
            reports[res.path] = str(target)
            maybe_record(res.data, res.path, opts)
    summary = rank_summary(results)
    index = out_dir / f"index.{fmt}"
    write_atomic(index, summary_document(summary, reports, fmt))
    failed = [r for r in results if isinstance(r, TraceFailure)]
    if not quiet:
        _echo(summary_text(summary, reports))
        _echo(f"index: {index}")
    for res in failed:
        _echo(f"profdiag: error: {res.message}", err=True)
    if failed:
        _echo(f"warning: {len(failed)} of {len(results)} traces could not be diagnosed",
                   err=True)
    sys.stdout.flush()


def _echo(message: str, **kwargs: Any) -> None:
    from .textsafe import echo

    echo(message, **kwargs)

"""Many traces at once (one per rank or per run): diagnose in parallel, group, summarise.

``diagnose_many`` runs each file in a worker process (ProcessPoolExecutor) and returns, in
the input order, either a ``TraceResult`` or a ``TraceFailure``; one bad file never stops
the others. ``group_runs`` tells the ranks of one run from unrelated traces (distributedInfo
world size and process groups, rank numbers in file names, trace start times);
``fleet_summary`` summarises each run with ``rank_summary`` (by rank: the slowest rank by
median step time, else GPU busy time; per-step skew; time the other ranks wait in collectives)
and lists the unrelated traces as independent reports, which never get a "slowest rank".
Nothing here prints: the CLI (profdiag/commands/report_dir.py) does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from . import report_model
from .errors import EXIT_BAD_INPUT, ProfdiagError


@dataclass
class TraceResult:
    path: str
    rank: int | None
    data: dict[str, Any]  # Diagnosis.to_dict()
    # what tells runs apart: world_size, backend, pg_count (distributedInfo), start_ns
    # (absolute trace start: baseTimeNanoseconds + first event), name_rank (from the file name)
    run_info: dict[str, Any] = field(default_factory=dict)


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
    run: str | None = None  # run id ("run-1") or None for an independent trace
    comm_ns: int | None = None  # communication kernel time (sum)
    exposed_comm_ns: int | None = None
    collective_wait_ns: int | None = None  # comm time beyond the straggler's (waiting for it)
    step_wall_ns: list[int] = field(default_factory=list, repr=False)


@dataclass
class RankSummary:
    rows: list[RankRow] = field(default_factory=list)
    slowest_rank: int | None = None
    slowest_by: str | None = None  # "median step time" | "GPU busy time"
    spread: float | None = None  # slowest / fastest on that measure
    # steps present on every rank: the max - min wall time across ranks, per step index
    step_skew_ns: list[int] = field(default_factory=list)
    slowest_rank_by_step: dict[int, int] = field(default_factory=dict)  # rank -> steps slowest
    others_wait_ns: int | None = None  # sum of collective_wait_ns over the other ranks
    # The rank the others wait for. With collectives on every rank: the one with the least
    # collective time (it arrives last, so it waits least; in a synchronous run every rank's
    # step takes about as long, so step time alone cannot name it); else the slowest rank.
    straggler_rank: int | None = None
    straggler_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        skew = sorted(self.step_skew_ns)
        return {
            "ranks": [_row_dict(r) for r in self.rows],
            "slowest_rank": self.slowest_rank,
            "slowest_by": self.slowest_by,
            "spread": self.spread,
            "step_skew": {"steps": len(skew),
                          "median_ns": int(median(skew)) if skew else None,
                          "max_ns": skew[-1] if skew else None,
                          "slowest_rank_by_step": {str(k): v for k, v in
                                                   sorted(self.slowest_rank_by_step.items())}},
            "others_wait_ns": self.others_wait_ns,
            "straggler_rank": self.straggler_rank,
            "straggler_by": self.straggler_by,
        }


def _row_dict(row: RankRow) -> dict[str, Any]:
    d = vars(row).copy()
    d.pop("step_wall_ns", None)
    return d


@dataclass
class RunGroup:
    """Traces that are ranks of one run (``run_id`` set) or one independent trace (None)."""

    run_id: str | None
    results: list[TraceResult | TraceFailure]
    key: str = ""  # what grouped them (e.g. "distributedInfo world_size=8 nccl")
    world_size: int | None = None


@dataclass
class FleetSummary:
    runs: list[tuple[RunGroup, RankSummary]] = field(default_factory=list)
    independent: list[RankRow] = field(default_factory=list)

    @property
    def rows(self) -> list[RankRow]:
        return [r for _, s in self.runs for r in s.rows] + list(self.independent)

    @property
    def single(self) -> RankSummary | None:
        """The run's summary when the inputs are exactly one run (and nothing else)."""
        if len(self.runs) == 1 and not self.independent:
            return self.runs[0][1]
        return None

    def to_dict(self) -> dict[str, Any]:
        one = self.single
        return {
            "ranks": [_row_dict(r) for r in self.rows],
            "slowest_rank": one.slowest_rank if one else None,
            "slowest_by": one.slowest_by if one else None,
            "spread": one.spread if one else None,
            "runs": [{"run": g.run_id, "grouped_by": g.key, "world_size": g.world_size,
                      "traces": len(g.results), **{k: v for k, v in s.to_dict().items()
                                                   if k != "ranks"},
                      "ranks_present": [r.rank for r in s.rows]}
                     for g, s in self.runs],
            "independent": [r.path for r in self.independent],
        }


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def trace_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The PyTorch profiler traces directly inside ``directory``, in natural name order."""
    from .parsers import read_head, torch_json

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
        trace = load(path, format=options.get("trace_format"), compact=True)
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
            shapes_from=options.get("shapes_from"),
        )
        rank = trace.meta.options.get("rank")
        return TraceResult(path, rank if isinstance(rank, int) else None, diag.to_dict(),
                           run_info(trace, path))
    except ProfdiagError as exc:
        return TraceFailure(path, str(exc), exc.exit_code)
    except MemoryError:
        return TraceFailure(path, f"{path}: out of memory", EXIT_BAD_INPUT)
    except Exception as exc:  # a bug in one file's diagnosis must not sink the others
        first = str(exc).splitlines()[0] if str(exc) else ""
        return TraceFailure(path, f"{path}: internal error: {type(exc).__name__}: {first}", 70)


# A rank number in a file name: rank-3, rank_3, rank3, worker3, gpu3, device3, rk3 (not tp8:
# that is a parallel degree).
_NAME_RANK = re.compile(r"(?i)(?:^|[^a-z])(rank|rk|worker|gpu|device)[-_]?(\d+)")
# Ranks of one run start profiling together; traces further apart are different runs.
RUN_START_TOLERANCE_NS = 300 * 10**9


def name_rank(path: str) -> tuple[int | None, str]:
    """(rank in the file name or None, the name with that rank and other numbers masked)."""
    name = Path(path.rstrip("/")).name
    matches = list(_NAME_RANK.finditer(name))
    if not matches:
        return None, ""
    m = matches[-1]  # the last match: "job3_rank5" is rank 5
    masked = name[: m.start(2)] + "*" + name[m.end(2):]
    return int(m.group(2)), re.sub(r"\d+", "#", masked)


def run_info(trace: Any, path: str) -> dict[str, Any]:
    """What tells the runs of a folder apart, from one loaded trace (small, JSON-ready)."""
    dist = trace.meta.distributed or {}
    ev = trace.events
    first = int(ev["start_ns"].min()) if len(ev) else None
    start = None if first is None else first + (trace.meta.base_time_ns or 0)
    rank, masked = name_rank(path)

    def num(v: Any) -> int | None:
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    return {"world_size": num(dist.get("world_size")), "backend": dist.get("backend"),
            "pg_count": num(dist.get("pg_count")), "rank": num(dist.get("rank")),
            "start_ns": start, "name_rank": rank, "name_key": masked}


def _group_key(res: TraceResult | TraceFailure) -> tuple[str, str, int | None] | None:
    """(kind, description, world size) shared by the ranks of one run; None = on its own."""
    if isinstance(res, TraceFailure):
        rank, masked = name_rank(res.path)
        return ("name", f"file names {masked}", None) if rank is not None else None
    info = res.run_info
    world = info.get("world_size")
    if world is not None and world >= 2 and info.get("rank") is not None:
        return ("dist", f"distributedInfo world_size={world} backend={info.get('backend')} "
                f"pg_count={info.get('pg_count')}", world)
    if world is not None and world < 2:
        return None  # the trace says it is a single-process run
    if info.get("name_rank") is not None:
        return ("name", f"file names {info.get('name_key')}", None)
    return None


def result_rank(res: TraceResult | TraceFailure) -> int | None:
    """The rank a result claims: distributedInfo, else the number in its file name."""
    if isinstance(res, TraceResult):
        if res.rank is not None:
            return res.rank
        return res.run_info.get("name_rank")
    return name_rank(res.path)[0]


def group_runs(results: list[TraceResult | TraceFailure],
               tolerance_ns: int = RUN_START_TOLERANCE_NS) -> list[RunGroup]:
    """Split results into runs (two or more distinct ranks that started together) and singles.

    Traces group when they share a distributedInfo world size (>= 2), backend and process-group
    count, or a file name that differs only in its rank number; within a group, traces whose
    starts are more than ``tolerance_ns`` apart, or that repeat a rank, are separate runs.
    Returned in input order of each group's first member; runs are numbered run-1, run-2, ...
    """
    keyed: dict[tuple[str, str], list[int]] = {}
    order: list[tuple[str, Any]] = []
    for i, res in enumerate(results):
        key = _group_key(res)
        if key is None:
            order.append(("single", i))
            continue
        k = (key[0], key[1])
        if k not in keyed:
            keyed[k] = []
            order.append(("group", k))
        keyed[k].append(i)
    worlds = {(k[0], k[1]): k[2] for k in (_group_key(r) for r in results) if k}

    def start(i: int) -> int | None:
        r = results[i]
        return r.run_info.get("start_ns") if isinstance(r, TraceResult) else None

    groups: list[RunGroup] = []
    n_runs = 0
    for kind, ref in order:
        if kind == "single":
            groups.append(RunGroup(None, [results[ref]]))
            continue
        members = keyed[ref]
        # clusters by start time (failures, with no start, join the first cluster)
        timed = sorted((i for i in members if start(i) is not None), key=lambda i: start(i) or 0)
        clusters: list[list[int]] = []
        last: int | None = None
        for i in timed:
            t = start(i) or 0
            if last is None or t - last > tolerance_ns:
                clusters.append([])
            clusters[-1].append(i)
            last = t
        untimed = [i for i in members if start(i) is None]
        if clusters:
            clusters[0].extend(untimed)
        elif untimed:
            clusters.append(untimed)
        for cluster in clusters:
            # a repeated rank starts another run: each sub-run holds a rank once
            subs: list[list[int]] = []
            for i in sorted(cluster):
                rank = result_rank(results[i])
                home = next((sub for sub in subs if rank is None or
                             rank not in {result_rank(results[j]) for j in sub}), None)
                if home is None:
                    home = []
                    subs.append(home)
                home.append(i)
            for sub in subs:
                ok = [results[i] for i in sub if isinstance(results[i], TraceResult)]
                if len(sub) < 2 or len(ok) < 1:
                    groups.extend(RunGroup(None, [results[i]]) for i in sub)
                    continue
                n_runs += 1
                groups.append(RunGroup(f"run-{n_runs}", [results[i] for i in sub], ref[1],
                                       worlds.get(ref)))
    return groups


def default_jobs(n_files: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_files))


def diagnose_many(paths: Sequence[str | os.PathLike[str]], options: dict[str, Any] | None = None,
                  jobs: int | None = None) -> list[TraceResult | TraceFailure]:
    """Diagnose every path (in parallel when jobs > 1); results in input order."""
    options = dict(options or {})
    names = [str(p) for p in paths]
    jobs = default_jobs(len(names)) if not jobs else max(1, jobs)
    if jobs == 1 or len(names) <= 1:
        return [_diagnose_one(p, options) for p in names]
    # Import the parsers and the diagnosis (pandas, numpy, the rules) once, before the pool
    # forks: each worker would otherwise pay the ~1-2 CPU s of imports again, cold.
    # imported here: multiprocessing costs ~15 ms at start-up, and one trace needs no pool
    from concurrent.futures import ProcessPoolExecutor

    from . import diagnosis, load  # noqa: F401
    from .parsers import nsys_sqlite, torch_json  # noqa: F401

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
    used = {r for r in map(result_rank, results) if r is not None}
    next_rank = 0
    for res in results:
        rank = result_rank(res)
        if rank is None or any(r.rank == rank for r in rows):
            while next_rank in used or any(r.rank == next_rank for r in rows):
                next_rank += 1
            rank = next_rank
        if isinstance(res, TraceFailure):
            rows.append(RankRow(rank, res.path, error=res.message))
            continue
        d = report_model.load(res.data, res.path)
        steps = [s.wall_ns for s in d.steps if s.wall_ns]
        comm = d.communication
        rows.append(RankRow(
            rank=rank, path=res.path, mode=d.mode.value, bottleneck=d.bottleneck.value,
            steps=len(steps),
            median_step_ns=int(median(steps)) if steps else None,
            busy_ns=d.breakdown.busy_ns, window_ns=d.breakdown.window_ns,
            kernels=d.overhead.kernels,
            comm_ns=comm.total_ns if comm.calls else None,
            exposed_comm_ns=comm.exposed_ns if comm.calls else None,
            step_wall_ns=[int(x) for x in steps],
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
        _skew_and_waits(summary, ok, slow)
    return summary


def _skew_and_waits(summary: RankSummary, ok: list[RankRow], slow: RankRow) -> None:
    """Per-step skew across ranks, and how long the others wait in collectives for ``slow``."""
    n_common = min((len(r.step_wall_ns) for r in ok), default=0)
    if len(ok) >= 2 and n_common:
        for i in range(n_common):
            walls = [(r.step_wall_ns[i], r.rank) for r in ok]
            skew = max(walls)[0] - min(walls)[0]
            summary.step_skew_ns.append(skew)
            if skew > 0:  # a step all ranks took equally long has no slowest rank
                top = max(walls)[1]
                summary.slowest_rank_by_step[top] = summary.slowest_rank_by_step.get(top, 0) + 1
    summary.straggler_rank, summary.straggler_by = slow.rank, summary.slowest_by
    # In a synchronous collective the ranks that arrive early wait inside the kernel for the
    # last one: the last one has the least collective time, and the others' collective time
    # beyond its own is waiting.
    if len(ok) >= 2 and all(r.comm_ns is not None for r in ok):
        last = min(ok, key=lambda r: (r.comm_ns or 0, -(r.median_step_ns or 0)))
        summary.straggler_rank, summary.straggler_by = last.rank, "least time in collectives"
        for r in ok:
            r.collective_wait_ns = max(0, (r.comm_ns or 0) - (last.comm_ns or 0))
        summary.others_wait_ns = sum(r.collective_wait_ns or 0 for r in ok if r is not last)


def fleet_summary(results: list[TraceResult | TraceFailure]) -> FleetSummary:
    """Runs (each summarised by rank) and the independent traces of a folder."""
    fleet = FleetSummary()
    for group in group_runs(results):
        if group.run_id is None:
            res = group.results[0]
            row = rank_summary([res]).rows[0]
            row.rank = result_rank(res)  # type: ignore[assignment]
            row.run = None
            fleet.independent.append(row)
            continue
        summary = rank_summary(group.results)
        for row in summary.rows:
            row.run = group.run_id
        fleet.runs.append((group, summary))
    return fleet


def _ms(ns: int | None) -> str:
    return "–" if ns is None else f"{ns / 1e6:.2f}"


def _as_fleet(summary: RankSummary | FleetSummary) -> FleetSummary:
    if isinstance(summary, FleetSummary):
        return summary
    return FleetSummary(runs=[(RunGroup("run-1", []), summary)])


def _slowest_line(s: RankSummary) -> str | None:
    if s.slowest_rank is None:
        return None
    spread = f" ({s.spread:.2f}x the fastest)" if s.spread else ""
    return f"slowest rank: {s.slowest_rank} by {s.slowest_by}{spread}"


def _run_lines(s: RankSummary) -> list[str]:
    out = [x for x in [_slowest_line(s)] if x]
    d = s.to_dict()["step_skew"]
    if d["steps"]:
        out.append(f"step skew across ranks over {d['steps']} steps: median {_ms(d['median_ns'])} ms, "
                   f"max {_ms(d['max_ns'])} ms")
    if s.others_wait_ns is not None:
        out.append(f"straggler: rank {s.straggler_rank} ({s.straggler_by}); the other ranks "
                   f"spend {_ms(s.others_wait_ns)} ms in collectives beyond its own collective "
                   "time (waiting for it)")
    return out


def _table(rows: list[RankRow], reports: dict[str, str]) -> list[str]:
    head = f"{'rank':>4}  {'mode':<8} {'bottleneck':<10} {'steps':>5} {'median step ms':>14} " \
           f"{'busy ms':>9}  file"
    lines = [head, "-" * len(head)]
    for r in rows:
        rank = "-" if r.rank is None else str(r.rank)
        if r.error:
            lines.append(f"{rank:>4}  error: {r.error}")
            continue
        lines.append(f"{rank:>4}  {r.mode or '?':<8} {r.bottleneck or '?':<10} {r.steps:>5} "
                     f"{_ms(r.median_step_ns):>14} {_ms(r.busy_ns):>9}  "
                     f"{reports.get(r.path, Path(r.path).name)}")
    return lines


def summary_text(summary: RankSummary | FleetSummary, reports: dict[str, str] | None = None) -> str:
    """Fixed-width tables: one per run with its slowest rank, then the independent traces."""
    reports = reports or {}
    fleet = _as_fleet(summary)
    one = fleet.single
    if one is not None:
        return "\n".join(_table(one.rows, reports) + _run_lines(one))
    lines: list[str] = []
    for group, s in fleet.runs:
        lines.append(f"{group.run_id}: {len(s.rows)} ranks ({group.key})")
        lines += _table(s.rows, reports) + _run_lines(s) + [""]
    if fleet.independent:
        lines.append(f"{len(fleet.independent)} independent trace(s): not ranks of one run "
                     "(no distributedInfo world size, no rank in the file name), so no slowest rank")
        lines += _table(fleet.independent, reports)
    return "\n".join(lines).rstrip("\n")


def summary_document(summary: RankSummary | FleetSummary, reports: dict[str, str], fmt: str) -> str:
    """The index file: JSON, Markdown, HTML or text."""
    import html
    import json

    fleet = _as_fleet(summary)
    data = fleet.to_dict()
    for row in data["ranks"]:
        row["report"] = reports.get(row["path"])
    if fmt == "json":
        return json.dumps({"schema_version": 1, "kind": "rank_summary", **data},
                          indent=2, sort_keys=True) + "\n"
    if fmt == "txt":
        return summary_text(fleet, reports) + "\n"
    cols = ["run", "rank", "mode", "bottleneck", "steps", "median step ms", "busy ms", "report",
            "error"]

    def cells(row: dict[str, Any]) -> list[str]:
        return [row["run"] or "independent", "" if row["rank"] is None else str(row["rank"]),
                row["mode"] or "", row["bottleneck"] or "", str(row["steps"]),
                _ms(row["median_step_ns"]), _ms(row["busy_ns"]), row["report"] or "",
                row["error"] or ""]

    notes: list[str] = []
    for group, s in fleet.runs:
        lines = _run_lines(s)
        notes.append(f"{group.run_id} ({len(s.rows)} ranks, {group.key}): "
                     + ("; ".join(lines) if lines else "no rank could be compared"))
    if fleet.independent:
        notes.append(f"{len(fleet.independent)} independent trace(s): not ranks of one run, "
                     "no slowest rank")
    if fmt == "md":
        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        out = ["# Per-rank summary", ""] + [f"- {esc(n)}" for n in notes] + [
            "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(esc(c) for c in cells(r)) + " |" for r in data["ranks"]]
        return "\n".join(out) + "\n"
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>\n"
                   for r in data["ranks"])
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>profdiag: per-rank "
            "summary</title></head><body>\n<h1>Per-rank summary</h1>\n"
            f"<ul>{items}</ul>\n<table>\n<tr>"
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


def report_name(path: Path | str, fmt: str, taken: set[str]) -> str:
    """A unique report file name for a trace (its name without trace suffixes)."""
    name = Path(str(path).rstrip("/")).name
    for suffix in (".gz", ".json", ".sqlite", ".db", ".csv", ".nsys-rep"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    out, i = f"{name}.report.{fmt}", 2
    while out in taken:
        out, i = f"{name}-{i}.report.{fmt}", i + 1
    taken.add(out)
    return out


def write_reports(results: list[TraceResult | TraceFailure], out_dir: Path, fmt: str,
                  ) -> tuple[dict[str, str], FleetSummary, Path]:
    """Write one report per diagnosed trace and the index; return (reports, summary, index)."""
    from .io import write_atomic
    from .renderers import render

    taken: set[str] = set()
    reports: dict[str, str] = {}
    for res in results:
        if isinstance(res, TraceResult):
            target = out_dir / report_name(res.path, fmt, taken)
            write_atomic(target, render(res.data, fmt))
            reports[res.path] = str(target)
    summary = fleet_summary(results)
    index = out_dir / f"index.{fmt}"
    write_atomic(index, summary_document(summary, reports, fmt))
    return reports, summary, index


def all_failed_error(results: list[TraceResult | TraceFailure]) -> ProfdiagError | None:
    """The error to raise when no trace could be diagnosed (exit code of the first failure)."""
    if any(isinstance(r, TraceResult) for r in results):
        return None
    first = results[0]
    assert isinstance(first, TraceFailure)
    err = ProfdiagError(f"none of the {len(results)} traces could be diagnosed; first: "
                        f"{first.message}")
    err.exit_code = first.exit_code
    return err

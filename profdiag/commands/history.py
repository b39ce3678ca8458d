"""`profdiag history`: list, show, trend and compare the diagnoses stored by `--record`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import click

from .textout import echo

F = Callable[..., Any]

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def _db_option(f: F) -> F:
    return click.option("--db", type=click.Path(dir_okay=False), envvar="PROFDIAG_DB",
                        help="History database: a SQLite file (default ./.profdiag/history.db "
                             "or $PROFDIAG_DB) or a postgresql://user@host/db URL (needs "
                             "profdiag[postgres]).")(f)


def _filter_options(f: F) -> F:
    opts = [
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="Only runs with this label (repeatable; all must match)."),
        click.option("--since", metavar="DATE",
                     help="Only runs recorded on/after DATE (YYYY-MM-DD, ISO time, or 7d)."),
        click.option("--until", metavar="DATE",
                     help="Only runs recorded on/before DATE (a date includes that day)."),
        click.option("--mode", type=click.Choice(["prefill", "decode", "mixed", "unknown"]),
                     help="Only runs diagnosed in this mode."),
        click.option("--verdict", metavar="VERDICT",
                     help="Only runs with this bottleneck (compute, memory, overhead) or "
                          "worst check status (pass, warn, fail)."),
        click.option("--kind", type=click.Choice(["report", "gate"]),
                     help="Only runs recorded by report or by gate."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return _db_option(f)


def _filters(opts: dict[str, Any]) -> dict[str, Any]:
    from .options import parse_labels

    return {"labels": parse_labels(opts.get("labels") or ()), "since": opts.get("since"),
            "until": opts.get("until"), "mode": opts.get("mode"),
            "verdict": opts.get("verdict"), "kind": opts.get("kind")}


def _present(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fmt_labels(labels: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or "-"


def fmt_date(ts: Any) -> str:
    import pandas as pd

    return ts.strftime("%Y-%m-%d %H:%M") if _present(ts) and not pd.isna(ts) else "-"


def fmt_share(x: Any) -> str:
    return f"{x * 100:.1f}%" if _present(x) else "-"


def fmt_float(x: Any, digits: int = 3) -> str:
    if not _present(x):
        return "-"
    return f"{x:.{digits}f}" if abs(x) < 1e6 else f"{x:.4g}"


def fmt_step_ms(row: Any) -> str:
    """The median step time: per phase when a run has both, else the overall median."""
    pre, dec = row.get("step_ms_prefill"), row.get("step_ms_decode")
    if _present(pre) and _present(dec):
        return f"p {pre:.2f} / d {dec:.2f}"
    return f"{row['step_ms']:.2f}" if _present(row.get("step_ms")) else "-"


def sparkline(values: Sequence[float | None]) -> str:
    """One unicode block per value, scaled from the smallest to the largest (gaps as spaces)."""
    nums = [v for v in values if v is not None and _present(v)]
    if not nums:
        return ""
    lo, hi = min(nums), max(nums)
    out = []
    for v in values:
        if v is None or not _present(v):
            out.append(" ")
        elif hi == lo:
            out.append(SPARK_BLOCKS[len(SPARK_BLOCKS) // 2 - 1])
        else:
            idx = int(round((v - lo) / (hi - lo) * (len(SPARK_BLOCKS) - 1)))
            out.append(SPARK_BLOCKS[idx])
    return "".join(out)


@click.group("history")
def command() -> None:
    """Browse the local history of diagnoses recorded with `report --record`.

    The history is one SQLite file: ./.profdiag/history.db, or --db / $PROFDIAG_DB; a
    postgresql:// URL there uses a shared PostgreSQL server instead (many CI runners).
    See docs/history.md for the schema and the Python API (profdiag.history.open).
    """


@command.command("list")
@_filter_options
def list_cmd(**opts: Any) -> None:
    """List recorded runs, oldest first."""
    from .. import history
    from ..renderers.text import table

    runs = history.list_runs(opts.get("db"), **_filters(opts))
    if runs.empty:
        echo("no runs match")
        return
    rows = [
        (r["id"], fmt_date(r["recorded_at"]), fmt_labels(r["labels"]), r["mode"] or "-",
         r["bottleneck"] or "-", fmt_share(r["overhead_share"]), fmt_step_ms(r),
         _gemm_text(r))
        for r in runs.to_dict("records")
    ]
    for line in table(["id", "date (UTC)", "labels", "mode", "bottleneck", "overhead",
                       "step ms", "GEMM calls"], rows, right=(0, 5, 6, 7),
                      max_width={2: 48}, indent=""):
        echo(line)
    echo(f"{len(rows)} run{'s' if len(rows) != 1 else ''}")


def _gemm_text(r: dict[str, Any]) -> str:
    obs, exp = r.get("observed_gemm_calls"), r.get("expected_gemm_calls")
    if obs is None or not _present(obs):
        return "-"
    return f"{int(obs)}/{int(exp)}" if exp is not None and _present(exp) else f"{int(obs)}"


@command.command("show")
@click.argument("run_id", type=click.IntRange(1, 2**63 - 1))
@click.option("-f", "--format", "fmt", type=click.Choice(["html", "json", "md", "txt"]),
              help="Re-render the stored diagnosis in this format (default: a summary).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the re-rendered report here (format from the suffix).")
@_db_option
def show_cmd(run_id: int, fmt: str | None, output: str | None, db: str | None) -> None:
    """Show run RUN_ID: its labels and a summary, or the full report re-rendered."""
    from .. import history
    from ..io import check_outputs, protect
    from ..renderers import format_for, render

    protect(history.resolve_db(db), role="history")
    check_outputs(output)
    run = history.get(db, run_id)
    data = run["diagnosis"]
    if output is not None or fmt is not None:
        fmt = format_for(output, fmt)
        text = render(data, fmt)
        if output is None:
            echo(text, nl=not text.endswith("\n"))
            return
        from ..io import write_atomic

        write_atomic(output, text)
        echo(f"report: {output}")
        return
    from ..renderers.text import summary

    echo(f"run {run['id']} ({run['kind']}) recorded {run['recorded_at']}")
    echo(f"labels:      {fmt_labels(run['labels'])}")
    echo(f"trace:       {run['trace_path'] or '-'}")
    echo(f"sha256:      {run['content_hash']}")
    echo(summary(data))


@command.command("trend")
@click.argument("metric")
@_filter_options
def trend_cmd(metric: str, **opts: Any) -> None:
    """Show METRIC across runs: a sparkline and the values by run.

    METRIC is a stored metric name, e.g. overhead_share, busy_share, step_ms.decode,
    step_ms.prefill, category.compute, gemm_calls (an unknown name lists the known ones).
    """
    from .. import history
    from ..errors import UsageError
    from ..renderers.text import table

    known = history.metric_names(opts.get("db"))
    if metric not in known:
        raise UsageError(f"unknown metric {metric!r}; known: {', '.join(known) or 'none yet'}")
    df = history.trend(opts.get("db"), metric, **_filters(opts))
    if df.empty:
        echo("no runs match")
        return
    values = [float(v) for v in df["value"]]
    lo, hi = min(values), max(values)
    echo(f"{metric}: {sparkline(values)}  min {fmt_float(lo)}  max {fmt_float(hi)}  "
               f"last {fmt_float(values[-1])}  ({len(values)} runs)")
    spark = sparkline(values)
    rows = [(r["run_id"], fmt_date(r["recorded_at"]), fmt_labels(r["labels"]),
             r["mode"] or "-", fmt_float(r["value"]), spark[i])
            for i, r in enumerate(df.to_dict("records"))]
    for line in table(["id", "date (UTC)", "labels", "mode", metric, ""], rows,
                      right=(0, 4), max_width={2: 48}, indent=""):
        echo(line)


@command.command("compare")
@click.argument("before", type=click.IntRange(1, 2**63 - 1))
@click.argument("after", type=click.IntRange(1, 2**63 - 1))
@click.option("-f", "--format", "fmt", type=click.Choice(["txt", "md", "html", "json"]),
              help="Output format (default: from the -o suffix, else txt).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the comparison here instead of stdout.")
@_db_option
def compare_cmd(before: int, after: int, fmt: str | None, output: str | None,
                db: str | None) -> None:
    """What changed from run BEFORE to run AFTER: the same comparison as `profdiag compare`,
    computed from the two stored diagnoses (no trace is re-parsed)."""
    from .. import history
    from ..io import check_outputs, protect

    protect(history.resolve_db(db), role="history")
    check_outputs(output)
    a, b = history.get(db, before), history.get(db, after)
    header = (f"run {a['id']} ({fmt_labels(a['labels'])}) -> run {b['id']} "
              f"({fmt_labels(b['labels'])})")
    cmp_mod = _compare_module()
    if cmp_mod is not None:
        from ..renderers import compare_text

        fmt = compare_text.format_for(output, fmt)
        text = compare_text.render(cmp_mod.compare(a["diagnosis"], b["diagnosis"]), fmt)
    else:  # profdiag.compare not installed: the minimal diff of history.diff
        fmt = fmt or ("json" if output and output.lower().endswith(".json") else "txt")
        if fmt not in ("txt", "json"):
            from ..errors import UsageError

            raise UsageError(f"--format {fmt} needs profdiag.compare; use txt or json")
        result = history.diff(a["diagnosis"], b["diagnosis"])
        if fmt == "json":
            import json

            text = json.dumps(result, indent=2, sort_keys=True) + "\n"
        else:
            text = "\n".join(diff_lines(result)) + "\n"
    if fmt == "txt":
        text = header + "\n" + text
    if output is None:
        echo(text, nl=not text.endswith("\n"))
        return
    from ..io import write_atomic

    write_atomic(output, text)
    echo(f"comparison: {output}")


def _compare_module() -> Any:
    """profdiag.compare when this install has it, else None."""
    from importlib import import_module
    from importlib.util import find_spec

    if find_spec("profdiag.compare") is None:
        return None
    return import_module("profdiag.compare")


def diff_lines(result: dict[str, Any]) -> list[str]:
    """The diff of history.diff as a fixed-width table."""
    from ..renderers.text import table

    def cell(x: Any, share: bool) -> str:
        if not _present(x):
            return "-"
        if isinstance(x, str):
            return x
        if share:
            return fmt_share(x)
        return str(int(x)) if float(x).is_integer() else fmt_float(x, 2)

    def row(name: str, p: dict[str, Any], share: bool = False) -> tuple[str, ...]:
        delta = p.get("delta")
        if delta is None:
            change = "" if p["before"] == p["after"] else "changed"
        elif share:
            change = f"{delta * 100:+.1f} pt"
        else:
            whole = float(p["before"]).is_integer() and float(p["after"]).is_integer()
            change = (f"{int(delta):+d}" if whole else f"{delta:+.2f}") + (
                f" ({(p['ratio'] - 1) * 100:+.1f}%)" if p.get("ratio") is not None else "")
        return (name, cell(p["before"], share), cell(p["after"], share), change)

    rows = [row("mode", result["mode"]), row("bottleneck", result["bottleneck"]),
            row("checks", result["status"]),
            row("overhead share", result["overhead_share"], True),
            row("busy share", result["busy_share"], True)]
    rows += [row(f"category {c}", p, True) for c, p in result["categories"].items()]
    rows += [row(f"step ms ({ph})", p) for ph, p in result["step_ms"].items()]
    rows += [row(k.replace("_", " "), p) for k, p in result["kernel_counts"].items()]
    return table(["", "before", "after", "change"], rows, right=(1, 2, 3), indent="")

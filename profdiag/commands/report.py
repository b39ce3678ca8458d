"""`profdiag report TRACE`: the five-step diagnosis as HTML (default), JSON, Markdown or text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..textsafe import echo

from .options import diagnosis_options, maybe_record, prepare, record_options, run_diagnosis


@click.command("report")
@click.argument("trace", type=click.Path())
@click.option("-o", "--output", type=click.Path(),
              help="Report file (default: ./<trace name>.report.<format>); for a directory "
                   "of traces, a directory (default: ./<dir name>.reports/).")
@click.option("-f", "--format", "fmt", type=click.Choice(["html", "json", "md", "txt"]),
              help="Output format (default: from the output suffix, else html).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (for scripts).")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), help="Processes for a directory of traces "
              "(default: min(cores, files)).")
@diagnosis_options
@record_options
def command(trace: str, output: str | None, fmt: str | None, quiet: bool, jobs: int | None,
            **opts: Any) -> None:
    """Diagnose TRACE: mode, bottleneck, overhead, kernel counts, hotspots, advice.

    TRACE is a PyTorch profiler JSON (.json/.json.gz), an Nsight Systems SQLite export
    (or .nsys-rep with nsys installed) or a rocprof output; the format is sniffed from the
    content. A short summary goes to stdout; the full report to OUTPUT. A directory of
    traces (one per rank or run) gets one report each plus an index naming the slowest rank.
    """
    from ..io import write_atomic
    from ..multi import fan_out_paths, report_directory
    from ..progress import input_bytes, progress_bar
    from ..renderers import format_for, render
    from ..renderers.text import summary

    fmt = format_for(output, fmt)
    prepare(opts, inputs=(trace,))
    files = fan_out_paths(trace)
    if files is not None:
        return report_directory(trace, files, output, fmt, quiet, jobs, opts)
    if output is None:
        output = _default_output(trace, fmt)
    prepare(opts, outputs=(output,))
    with progress_bar(input_bytes(trace), enabled=not quiet):
        diag = run_diagnosis(trace, opts)
    data = diag.to_dict()
    text = render(data, fmt)
    write_atomic(output, text)
    run_id = maybe_record(data, trace, opts)
    if not quiet:
        echo(summary(data))
        echo(f"report: {output}")
        if run_id is not None:
            echo(f"recorded as run {run_id}")
    for warning in data["warnings"]:
        if not quiet:
            echo(f"warning: {warning}", err=True)


def _default_output(trace: str, fmt: str) -> str:
    name = Path(trace.rstrip("/")).name
    for suffix in (".gz", ".json", ".sqlite", ".db", ".csv", ".nsys-rep"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return f"{name}.report.{fmt}"

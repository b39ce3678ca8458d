"""`profdiag report TRACE`: the five-step diagnosis as HTML (default), JSON, Markdown or text."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .options import diagnosis_options, maybe_record, prepare, record_options, run_diagnosis
from .textout import echo


@click.command("report")
@click.argument("trace", type=click.Path())
@click.option("-o", "--output", type=click.Path(),
              help="Report file (default: ./<trace name>.report.<format>); for a directory "
                   "of traces, a directory (default: ./<dir name>.reports/).")
@click.option("-f", "--format", "fmt", type=click.Choice(["html", "json", "md", "txt"]),
              help="Output format (default: from the output suffix, else html).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (for scripts).")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), help="Processes for a directory of traces "
              "(default: min(cores, files)); with --scheduler local, the LocalCluster's workers "
              "(default 2).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Diagnose a directory (or URL folder) of traces as tasks on a Dask "
                   "distributed scheduler (tcp://host:8786), or 'local' for a LocalCluster; "
                   "needs profdiag[dask]. See docs/fleet.md.")
@click.option("--perfetto", "perfetto", type=click.Path(dir_okay=False),
              help="Also write the trace annotated with profdiag's tracks (steps, phases, idle "
                   "gaps, hotspots, classes) for ui.perfetto.dev; .gz compresses it.")
@diagnosis_options
@record_options
def command(trace: str, output: str | None, fmt: str | None, quiet: bool, jobs: int | None,
            scheduler: str | None, perfetto: str | None, **opts: Any) -> None:
    """Diagnose TRACE: mode, bottleneck, overhead, kernel counts, hotspots, advice.

    TRACE is a PyTorch profiler JSON (.json/.json.gz), an Nsight Systems SQLite export
    (or .nsys-rep with nsys installed) or a rocprof output; the format is sniffed from the
    content. A short summary goes to stdout; the full report to OUTPUT. A directory of
    traces gets one report each plus an index: the ranks of one run (distributedInfo, rank
    numbers in file names, start times) get the slowest rank and step skew; unrelated
    traces are listed as independent reports. TRACE may be an fsspec URL (file://, s3://,
    gs://, with its fsspec backend installed).
    """
    # what one local trace needs; a directory's or a URL's modules are imported when used
    from ..fleet import is_url, local_path
    from ..io import write_atomic
    from ..progress import input_bytes, progress_bar
    from ..renderers import format_for, render, warm as warm_renderer

    fmt = format_for(output, fmt)
    trace = local_path(trace) or trace
    prepare(opts, inputs=(() if is_url(trace) else (trace,)))
    if is_url(trace):
        from ..fleet import url_trace_files

        urls = url_trace_files(trace)
        if perfetto:
            from ..errors import UsageError

            raise UsageError("--perfetto takes a local trace file", trace)
        if urls is not None:
            from .report_dir import report_directory

            return report_directory(trace, urls, output, fmt, quiet, jobs, opts, scheduler)
        return _report_url_file(trace, output, fmt, quiet, opts)
    local = None
    if os.path.isdir(trace):  # a directory of traces, unless a parser reads it whole
        from ..multi import fan_out_paths

        local = fan_out_paths(trace)
    if local is not None:
        if perfetto:
            from ..errors import UsageError

            raise UsageError("--perfetto takes one trace, not a directory")
        from .report_dir import report_directory

        return report_directory(trace, [str(f) for f in local], output, fmt, quiet, jobs, opts,
                                scheduler)
    if scheduler:
        from ..errors import UsageError

        raise UsageError("--scheduler applies to a directory (or URL folder) of traces; "
                         "a single trace is diagnosed here", trace)
    if output is None:
        output = _default_output(trace, fmt)
    prepare(opts, outputs=(output, perfetto))
    with progress_bar(input_bytes(trace), enabled=not quiet):
        diag = run_diagnosis(trace, opts, warm=(lambda: warm_renderer(fmt),))
    data = diag.to_dict()
    if perfetto:
        from .. import perfetto as pf

        data["perfetto"] = pf.write(diag, perfetto)
    text = render(data, fmt)
    write_atomic(output, text)
    run_id = maybe_record(data, trace, opts)
    if not quiet:
        from ..renderers.text import summary

        echo(summary(data))
        echo(f"report: {output}")
        if perfetto:
            echo(f"perfetto: {perfetto} (drag into https://ui.perfetto.dev)")
        if run_id is not None:
            echo(f"recorded as run {run_id}")
    for warning in data["warnings"]:
        if not quiet:
            echo(f"warning: {warning}", err=True)


def _report_url_file(url: str, output: str | None, fmt: str, quiet: bool,
                     opts: dict[str, Any]) -> None:
    """One trace at a URL: fetched to a temporary file, then reported like a local one."""
    import tempfile

    from ..fleet import fetch_local

    with tempfile.TemporaryDirectory(prefix="profdiag-") as tmp:
        local = fetch_local(url, tmp)
        command.callback(local, output or _default_output(url, fmt), fmt, quiet,  # type: ignore[misc]
                         None, None, **opts)


def _default_output(trace: str, fmt: str) -> str:
    name = Path(trace.rstrip("/")).name
    for suffix in (".gz", ".json", ".sqlite", ".db", ".csv", ".nsys-rep"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return f"{name}.report.{fmt}"

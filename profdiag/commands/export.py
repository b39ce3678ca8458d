"""`profdiag export TRACE --to DIR`: every table of the diagnosis as CSV or Parquet files,
and with --perfetto the trace annotated for Perfetto UI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .options import diagnosis_options, prepare, run_diagnosis


@click.command("export")
@click.argument("trace", type=click.Path())
@click.option("--to", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the tables (created when missing).")
@click.option("--table-format", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True, help="File format of the tables (parquet needs profdiag[parquet]).")
@click.option("--perfetto", "perfetto", is_flag=True,
              help="Also write DIR/<trace>.perfetto.json.gz: the trace plus profdiag's tracks, "
                   "for ui.perfetto.dev.")
@click.option("--tables", "only", metavar="NAME[,NAME...]",
              help="Only these tables (default: all: kernels, hotspots, classes, steps, phases, "
                   "roofline, idle_gaps, checks).")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@diagnosis_options
def command(trace: str, out_dir: str, table_format: str, perfetto: bool, only: str | None,
            quiet: bool, **opts: Any) -> None:
    """Write the diagnosis of TRACE as tables, one file each, into DIR.

    Tables (columns and units in docs/export.md): kernels (every GPU event, classified, with
    step, layer and launching op), hotspots, classes, steps (with batch composition), phases,
    roofline (per shape), idle_gaps and checks. Times are integer ns on the trace's clock.
    """
    from ..errors import UsageError
    from ..tables import TABLES, write_tables

    wanted = list(TABLES)
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in TABLES]
        if unknown:
            raise UsageError(f"unknown table(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(TABLES)}")
    if table_format == "parquet":
        _need_pyarrow()
    ext = "parquet" if table_format == "parquet" else "csv"
    # every file this writes is checked first: none may replace the trace or a link/device
    targets = [str(Path(out_dir) / f"{name}.{ext}") for name in wanted]
    if perfetto:
        targets.append(str(Path(out_dir) / f"{_stem(trace)}.perfetto.json.gz"))
    prepare(opts, inputs=(trace,), outputs=tuple(targets))
    diag = run_diagnosis(trace, opts)
    tables = diag.tables()
    paths = write_tables({k: tables[k] for k in wanted}, out_dir, table_format)
    if perfetto:
        from .. import perfetto as pf

        path = Path(out_dir) / f"{_stem(trace)}.perfetto.json.gz"
        pf.write(diag, path)
        paths.append(path)
    if not quiet:
        for p in paths:
            rows = len(tables[p.name.split(".")[0]]) if p.name.split(".")[0] in tables else None
            click.echo(f"{p}" + (f"  ({rows} rows)" if rows is not None else ""))
        if perfetto:
            click.echo("open the .perfetto.json.gz in https://ui.perfetto.dev (drag and drop; "
                       "the file stays in your browser)")


def _need_pyarrow() -> None:
    from ..errors import MissingDependencyError

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "Parquet output needs pyarrow: pip install 'profdiag[parquet]'") from None


def _stem(trace: str) -> str:
    name = Path(trace.rstrip("/")).name
    for suffix in (".gz", ".json", ".sqlite", ".db", ".csv", ".nsys-rep"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "trace"

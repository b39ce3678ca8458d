"""`profdiag report DIR_OR_URL`: one report per trace plus an index (the CLI side of multi.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .options import maybe_record
from .textout import echo


def report_directory(trace: str, files: list[str], output: str | None, fmt: str, quiet: bool,
                     jobs: int | None, opts: dict[str, Any], scheduler: str | None = None) -> None:
    """Diagnose ``files`` (local processes, or tasks on a Dask cluster), write reports + index."""
    from ..errors import UsageError
    from ..multi import TraceFailure, all_failed_error, diagnose_many, summary_text, write_reports

    name = trace.rstrip("/").rsplit("/", 1)[-1] or "traces"
    out_dir = Path(output) if output else Path(f"{name}.reports")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("for a directory of traces, -o must name a directory", str(out_dir))
    if scheduler:
        from ..fleet import diagnose_on_cluster

        results = diagnose_on_cluster(files, opts, scheduler, jobs=jobs)
    else:
        results = diagnose_many(files, opts, jobs)
    err = all_failed_error(results)
    if err is not None:
        raise err
    reports, summary, index = write_reports(results, out_dir, fmt)
    for res in results:
        if not isinstance(res, TraceFailure):
            maybe_record(res.data, res.path, opts)
    failed = [r for r in results if isinstance(r, TraceFailure)]
    if not quiet:
        echo(summary_text(summary, reports))
        echo(f"index: {index}")
    for res in failed:
        echo(f"profdiag: error: {res.message}", err=True)
    if failed:
        echo(f"warning: {len(failed)} of {len(results)} traces could not be diagnosed",
                   err=True)
    sys.stdout.flush()

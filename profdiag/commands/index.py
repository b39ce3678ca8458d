"""`profdiag index DIR_OR_DB -o SITE`: a static, offline HTML index of many profiles."""

from __future__ import annotations

import click

from .textout import echo


@click.command("index")
@click.argument("source", type=click.Path())
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default="site",
              show_default=True, help="Folder to write index.html and runs/<id>.html into.")
@click.option("--title", help="Page title (default: 'profdiag index: <source name>').")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success (warnings still).")
def command(source: str, out_dir: str, title: str | None, quiet: bool) -> None:
    """Build a browsable static site from SOURCE: a history database (see `profdiag history`)
    or a directory of traces and JSON reports (each trace is diagnosed; unreadable files are
    skipped with a warning).

    The site is offline (no CDN, everything inline): index.html has one row per profile
    (sortable, filterable) and trend charts of the main metrics; runs/<id>.html is each
    profile's full report. The same inputs give the same bytes.
    """
    from ..index_site import build_site

    def warn(msg: str) -> None:
        echo(f"profdiag: warning: {msg}", err=True)

    result = build_site(source, out_dir, warn=warn, title=title)
    if not quiet:
        n = len(result.pages)
        echo(f"index: {result.index} ({n} profile{'s' if n != 1 else ''}"
                   f"{f', {len(result.skipped)} skipped' if result.skipped else ''})")

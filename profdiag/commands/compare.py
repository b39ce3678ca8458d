"""`profdiag compare BASE NEW`: what changed between two profiles (traces or JSON reports)."""

from __future__ import annotations

from typing import Any

import click

from .options import diagnosis_options, prepare, run_diagnosis
from .textout import echo


@click.command("compare")
@click.argument("base", type=click.Path())
@click.argument("new", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the comparison to a file: .html, .txt, .md or .json (default: text "
                   "on stdout).")
@click.option("-f", "--format", "fmt", type=click.Choice(["txt", "md", "html", "json"]),
              help="Output format (default: from the output suffix, else txt).")
@click.option("--threshold", "threshold_pct", type=float, default=5.0, show_default=True,
              help="Percent change below which a kernel or class counts as unchanged.")
@click.option("-q", "--quiet", is_flag=True, help="With -o, print nothing.")
@diagnosis_options
def command(base: str, new: str, output: str | None, fmt: str | None, threshold_pct: float,
            quiet: bool, **opts: Any) -> None:
    """Compare BASE with NEW: mode, bottleneck, category shares, per-class and per-kernel
    time (added, removed, faster, slower), kernel counts, median step times, overhead.

    BASE and NEW are traces (diagnosed with the same options) or JSON reports written by
    `profdiag report -f json` (detected by content), or two `profdiag sweep` folders
    (compared point by point). Times are per forward, or per prefill
    token when both are prefills of known length; step times are medians per phase.
    """
    from .. import compare as cmp_mod, gate as g
    from ..io import write_atomic
    from ..renderers import compare_text

    fmt = compare_text.format_for(output, fmt)
    prepare(opts, inputs=(base, new), outputs=(output,))
    from ..sweep import compare as sweep_cmp

    if sweep_cmp.sweep_report_path(base) or sweep_cmp.sweep_report_path(new):
        # Two sweeps (folders or sweep.report.json): point by point.
        result = sweep_cmp.compare_sweeps(sweep_cmp.load_sweep(base), sweep_cmp.load_sweep(new),
                                          threshold_pct)
        text = sweep_cmp.render(result, fmt)
    else:
        def diagnose(path: str) -> Any:
            return run_diagnosis(path, opts)

        b = g.load_profile(base, diagnose)
        n = g.load_profile(new, diagnose)
        result = cmp_mod.compare(b, n, threshold_pct=threshold_pct)
        text = compare_text.render(result, fmt)
    if output is None:
        echo(text, nl=False)
        return
    write_atomic(output, text)
    if not quiet:
        for line in result["headline"]:
            echo(line)
        echo(f"comparison: {output}")

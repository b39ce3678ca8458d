"""`profdiag gate TRACE`: check a trace against a policy (and a baseline) for CI.

Exit 0 when every check passes (warnings included), 1 when a check fails; other codes are
errors (docs/gate.md). Outputs: a table on stdout, --junit, --markdown, --json files, and
GitHub annotations when $GITHUB_ACTIONS is "true".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from .options import diagnosis_options, maybe_record, prepare, record_options, run_diagnosis
from .textout import echo


@click.command("gate")
@click.argument("trace", type=click.Path())
@click.option("--baseline", "baseline", type=click.Path(),
              help="Baseline to check regressions against: a trace (diagnosed with the same "
                   "options) or a JSON report from `profdiag report -f json`.")
@click.option("--policy", "policy", type=click.Path(dir_okay=False),
              help="Policy TOML deep-merged over the defaults (rules/policy.toml); keys in "
                   "docs/gate.md.")
@click.option("--allow-mode-change", is_flag=True,
              help="Compare against a baseline of a different mode (prefill/decode) instead "
                   "of refusing with exit 2.")
@click.option("--junit", "junit", type=click.Path(dir_okay=False),
              help="Write the checks as JUnit XML (one testcase per check).")
@click.option("--markdown", "markdown", type=click.Path(dir_okay=False),
              help='Write a Markdown table (PR comment); --markdown "$GITHUB_STEP_SUMMARY" '
                   "appends to the job summary.")
@click.option("--append", is_flag=True,
              help="Append to the --markdown file instead of replacing it (automatic when it "
                   "is $GITHUB_STEP_SUMMARY).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the gate result as JSON.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing but failures' one-line verdict (exit code only).")
@diagnosis_options
@record_options
def command(trace: str, baseline: str | None, policy: str | None, allow_mode_change: bool,
            junit: str | None, markdown: str | None, append: bool, json_out: str | None,
            quiet: bool, **opts: Any) -> None:
    """Check TRACE against a policy; with --baseline, also against a baseline profile.

    Checks: overhead share by mode, GPU busy share, category share limits, expected GEMM
    counts, and (with --baseline) regressions of median step time and GPU busy time per
    decode step / per prefill token, overhead and category shares, kernel counts and the
    top kernels' time. Exit 0: passed (warnings allowed); 1: a check failed; 2: usage error
    (also a baseline of another mode without --allow-mode-change); see docs/gate.md.
    """
    from .. import gate as g
    from ..io import write_atomic
    from ..renderers import gate_markdown, gate_text, junit as junit_r
    from ..renderers.json_ import dumps

    prepare({**opts, "policy": policy}, inputs=(trace, baseline),
            outputs=(junit, json_out, markdown))
    pol = g.Policy.load(policy, rules=tuple(opts.get("rules") or ()))

    def diagnose(path: str) -> Any:
        return run_diagnosis(path, opts)

    new = g.load_profile(trace, diagnose)
    base = g.load_profile(baseline, diagnose) if baseline else None
    result = g.evaluate(new, pol, base, allow_mode_change=allow_mode_change or None)
    data = result.to_dict()

    if junit:
        write_atomic(junit, junit_r.render(data))
    if json_out:
        write_atomic(json_out, dumps(data))
    if markdown:
        _write_markdown(markdown, gate_markdown.render(data), append)
    run_id = maybe_record({**new.data, "gate": data}, trace, opts, kind="gate")

    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in gate_text.annotations(data):
            echo(line)
    if quiet:
        if result.exit_code:
            echo(gate_text.verdict_line(data), err=True)
    else:
        if sys.stdout.isatty():
            from rich.console import Console

            from ..textsafe import clean_obj

            Console().print(gate_text.rich_table(clean_obj(data)))
        else:
            echo(gate_text.render(data), nl=False)
        if run_id is not None:
            echo(f"recorded as run {run_id}")
        for warning in new.report.warnings:
            echo(f"warning: {warning}", err=True)
    if result.exit_code:
        raise click.exceptions.Exit(result.exit_code)


def _write_markdown(path: str, text: str, append: bool) -> None:
    """Replace ``path`` atomically, or append to it (a job summary gathers several steps)."""
    from ..errors import OutputError
    from ..io import check_output, write_atomic

    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and not append:
        try:
            append = Path(path).resolve() == Path(summary).resolve()
        except OSError:
            append = False
    if not append:
        write_atomic(path, text)
        return
    check_output(path)  # never append to an input, a FIFO or a device
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise OutputError(f"cannot append: {exc.strerror}", path) from None

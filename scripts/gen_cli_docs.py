#!/usr/bin/env python3
"""Regenerate docs/cli.md from the commands' --help (tests/test_cli_docs.py checks it is current).

Usage: python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

HEADER = """# CLI reference

Generated from `--help` by `scripts/gen_cli_docs.py`; a test fails when it is out of date.

## Exit codes

Every command shares these (defined in `profdiag/errors.py`):

| code | meaning |
|---|---|
| 0 | success; for `gate`, every check passed |
| 1 | `gate`: a policy check failed (also `classify --check` with a failing rule example) |
| 2 | usage error: bad option, missing file, malformed rules/policy/config, an output that would overwrite an input or the history database |
| 3 | unreadable input: empty, not a trace, corrupt, unknown format |
| 4 | the trace has nothing to diagnose (no GPU activity, no CPU compute ops) |
| 5 | an output file could not be written (also: a symlink, device, FIFO or directory in its place) |
| 6 | a needed optional dependency is missing (torch for `capture`, `nsys` for `.nsys-rep`, HTA for `--hta`, `profdiag[dask]` for `--scheduler` and URLs) |
| 7 | a service could not be reached: the Dask scheduler of `--scheduler`, the PostgreSQL server of `--db` |
| 130 / 143 | interrupted (Ctrl-C) / terminated (SIGTERM); temporary files are removed |
| 70 | internal error (a bug: please report it; `PROFDIAG_DEBUG=1` shows the traceback) |

Errors are one line on stderr, `profdiag: error: <file>: <what is wrong>`; no traceback, and
no partial output file is left behind.

## Environment

| variable | effect |
|---|---|
| `PROFDIAG_DEBUG=1` | show the traceback of an internal error |
| `PROFDIAG_PREFETCH` | `report`, `gate`, `compare` and `export` of a Kineto JSON (1 MiB to 1 GiB, 64 MiB gzipped) fork a child on Linux with two or more usable cores and a 1-minute load average below their number, which streams the file while the command imports pandas and the diagnosis (docs/performance.md, twelfth pass). `0` turns it off; `always` drops the size, core, load-average and thread conditions (for tests). The report is the same either way |
| `OPENBLAS_NUM_THREADS` | when unset, every command but `capture` and `sweep` sets it to 1 before numpy loads: OpenBLAS' spinning threads cost ~0.1 s of CPU per run and profdiag does no large linear algebra; set it to keep your own count |
"""


def _help(cmd: click.Command, path: list[str]) -> list[str]:
    # the group's context_settings (-h, --help) reach every subcommand at run time
    ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100,
                        help_option_names=["-h", "--help"])
    out = [f"## `{' '.join(path)}`", "", "```", cmd.get_help(ctx).rstrip(), "```", ""]
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                out += _help(sub, path + [name])
    return out


def render() -> str:
    from profdiag.cli import cli

    return HEADER + "\n" + "\n".join(_help(cli, ["profdiag"]))


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        return 0 if DOC.exists() and DOC.read_text() == text else 1
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

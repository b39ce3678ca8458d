"""The CLI's echo of untrusted text: click.echo through textsafe.clean (kept here, in the
CLI layer, so library modules import no click)."""

from __future__ import annotations

from typing import Any

import click

from ..textsafe import clean


def echo(message: Any = "", **kwargs: Any) -> None:
    """click.echo of cleaned text (the CLI's output of untrusted names)."""
    click.echo(clean(message) if isinstance(message, str) else message, **kwargs)

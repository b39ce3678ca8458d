"""`profdiag schema`: print the JSON Schema of the report `profdiag report -f json` writes."""

from __future__ import annotations

import click


@click.command("schema")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
              help="Write the schema to this file instead of stdout.")
def command(output: str | None) -> None:
    """Print the JSON Schema of the JSON report (generated from profdiag/report_model.py).

    Validate a report with any JSON Schema validator, or in Python with
    profdiag.report_model.decode(data).
    """
    import orjson

    from ..report_model import json_schema

    text = orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    if output:
        from ..io import write_atomic

        write_atomic(output, text + "\n")
    else:
        click.echo(text)

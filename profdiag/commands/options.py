"""Options shared by the commands that diagnose a trace (report, gate, compare)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

F = Callable[..., Any]

# A transformer with more decoder layers than this is not a model, it is an overflow.
MAX_LAYERS = 100_000


def prepare(opts: dict[str, Any], inputs: tuple[str | None, ...] = (),
            outputs: tuple[str | None, ...] = ()) -> None:
    """Validate everything a command was given before any work is done.

    Traces and option files are checked (a FIFO or device is refused, a missing file is a
    usage error), labels parsed, the inflation bound set; the history database is
    protected, and every output is checked against all of these (profdiag.io), so no
    command writes a report and then fails on an option, or writes over one of its inputs.
    """
    from ..errors import RulesError, UsageError
    from ..history_path import resolve_db
    from ..io import check_input, check_outputs, parse_size, protect, set_max_inflated_size

    size = opts.get("max_inflated_size")
    if size is not None:
        set_max_inflated_size(parse_size(size))
    import os

    # option files: special files are refused here; a missing one is left to its loader,
    # whose message says which option it was
    for key, what in (("model_config", "model config"), ("gpu_spec", "GPU spec"),
                      ("policy", "policy file")):
        if opts.get(key) and os.path.lexists(opts[key]):
            check_input(opts[key], what=what, error=UsageError)
    for rules_file in opts.get("rules") or ():
        if os.path.lexists(rules_file):
            check_input(rules_file, what="rules file", error=RulesError)
    for path in inputs:
        if path is not None:
            check_input(path, what="trace", allow_dir=True)
    protect(resolve_db(opts.get("db")), role="history")
    parse_labels(opts.get("labels") or ())
    check_outputs(*outputs)


def diagnosis_options(f: F) -> F:
    """--model-config, --layers, --gemms-per-layer, --rules, --trace-format, --gpu, ..."""
    opts = [
        click.option("--model-config", type=click.Path(dir_okay=False),
                     help="Hugging Face config.json or capture manifest: the architecture "
                          "(layers, widths, heads, head_dim, vocab, experts) for expected kernel "
                          "counts and the speed of light (default: a manifest found beside the "
                          "trace, which still gives tokens, batch and context)."),
        click.option("--layers", type=click.IntRange(1, MAX_LAYERS),
                     help="Number of decoder layers (overrides the config)."),
        click.option("--gemms-per-layer", type=click.IntRange(0, 1000),
                     help="GEMMs per layer (default from the architecture: 7 for Llama q/k/v/o "
                          "+ gate/up/down; fewer when projections are fused)."),
        click.option("--lm-head", "lm_head", type=click.IntRange(0, 1000),
                     help="lm_head GEMMs per forward (default 1)."),
        click.option("--no-manifest", is_flag=True,
                     help="Ignore a capture manifest beside the trace."),
        click.option("--rules", "rules", multiple=True, type=click.Path(dir_okay=False),
                     help="Extra TOML file of kernel rules, thresholds or idle causes (repeatable)."),
        click.option("--trace-format", type=click.Choice(["torch", "nsys", "rocprof"]),
                     help="Force the input parser instead of sniffing the content."),
        click.option("--gpu", help="Hardware spec for the roofline (e.g. h100-sxm), instead of "
                                   "the trace's device name."),
        click.option("--gpu-spec", type=click.Path(dir_okay=False),
                     help="TOML file with a custom GPU spec (see docs/roofline.md)."),
        click.option("--shapes-from", "shapes_from", type=click.Path(dir_okay=False),
                     metavar="TRACE",
                     help="Eager or CUDA-graph-capture PyTorch trace of the same model: GEMM "
                          "shapes for kernels replayed from CUDA graphs (matched by kernel name, "
                          "then call order)."),
        click.option("--hta/--no-hta", default=False, show_default=True,
                     help="Add Holistic Trace Analysis figures (idle-time split, launch delays); "
                          "needs profdiag[hta]."),
        click.option("--max-inflated-size", "max_inflated_size", metavar="SIZE",
                     envvar="PROFDIAG_MAX_INFLATED_SIZE",
                     help="Bound on the inflated size of a gzipped trace, e.g. 64G (default: "
                          "8G, and at most 200x the compressed size past 256M; see "
                          "docs/security.md)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _warm_diagnosis(rules: Sequence[str | Path]) -> None:
    from .. import diagnosis

    diagnosis.warm(rules)


def run_diagnosis(trace_path: str, opts: dict[str, Any],
                  warm: Sequence[Callable[[], object]] = ()) -> Any:
    """Load and diagnose ``trace_path`` with the options of diagnosis_options. ``warm``: what
    the command does next (its renderer's template), done while a prefetch child streams the
    trace, if one does, with the diagnosis' rules (parsers/_prefetch.while_waiting)."""
    if opts.get("trace_format") in (None, "torch"):
        # before the imports below: a child streams a Kineto JSON while they run
        from ..parsers import _prefetch

        if _prefetch.start(trace_path):
            rules = tuple(opts.get("rules") or ())
            _prefetch.while_waiting(lambda: _warm_diagnosis(rules), *warm)
    from .. import diagnosis, load

    # compact: string columns as Categoricals, what the diagnosis reads (schema.compact)
    trace = load(trace_path, format=opts.get("trace_format"), compact=True)
    return diagnosis.run(
        trace,
        model_config=opts.get("model_config"),
        layers=opts.get("layers"),
        gemms_per_layer=opts.get("gemms_per_layer"),
        lm_head=opts.get("lm_head"),
        rules=opts.get("rules") or (),
        use_manifest=not opts.get("no_manifest"),
        hta=bool(opts.get("hta")),
        gpu=opts.get("gpu"),
        gpu_spec=opts.get("gpu_spec"),
        shapes_from=opts.get("shapes_from"),
    )


def record_options(f: F) -> F:
    """--record, --db, --label KEY=VALUE: store the diagnosis in the local history."""
    opts = [
        click.option("--record", is_flag=True,
                     help="Store this diagnosis in the local history (see `profdiag history`)."),
        click.option("--db", type=click.Path(dir_okay=False), envvar="PROFDIAG_DB",
                     help="History database: a SQLite file (default ./.profdiag/history.db or "
                          "$PROFDIAG_DB) or a postgresql://user@host/db URL."),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="Label for --record, e.g. commit=abc123 branch=main (repeatable)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def parse_labels(labels: tuple[str, ...]) -> dict[str, str]:
    """KEY=VALUE strings -> dict; a malformed label is a usage error."""
    from ..errors import UsageError
    from ..textsafe import has_control

    out: dict[str, str] = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--label expects KEY=VALUE, got {item!r}")
        if has_control(item):
            raise UsageError(f"--label must not hold control characters or escapes: {item!r}")
        out[key.strip()] = value.strip()
    return out


def maybe_record(data: dict[str, Any], trace_path: str, opts: dict[str, Any],
                 kind: str = "report") -> int | None:
    """Record ``data`` in the history when --record was given; return the run id."""
    if not opts.get("record"):
        return None
    from .. import history

    return history.record(data, trace_path, labels=parse_labels(opts.get("labels") or ()),
                          db=opts.get("db"), kind=kind)

"""profdiag: diagnose GPU profiler traces of LLM inference.

Public API (imports are lazy so the CLI's ``--help`` stays fast)::

    import profdiag
    trace = profdiag.load("trace.json.gz")       # Trace, with .events (DataFrame)
    diag = profdiag.diagnose(trace)               # Diagnosis, with DataFrames and to_dict()
    html = profdiag.render(diag, "html")          # str
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .diagnosis.model import Diagnosis
    from .trace import Trace


def load(path: Any, format: str | None = None, compact: bool = False) -> Trace:
    """Parse a trace file (format sniffed by content unless ``format`` is given).

    ``compact=True``: the string columns (name, op_name, input_dims, ...) are sorted
    Categoricals instead of ``string`` columns (``schema.compact``): the same values in a
    fraction of the memory, what ``profdiag report`` diagnoses. ``schema.expand`` turns the
    table back into the canonical one.
    """
    from .parsers import parse

    return parse(path, format=format, compact=compact)


def diagnose(trace: Trace, **options: Any) -> Diagnosis:
    """Run the five-step diagnosis on a Trace; see profdiag.diagnosis.run for options."""
    from .diagnosis import run

    return run(trace, **options)


def render(diagnosis: Diagnosis, fmt: str = "html") -> str:
    """Render a Diagnosis as 'html', 'json', 'md' or 'txt'."""
    from .renderers import render as _render

    return _render(diagnosis, fmt)


__all__ = ["load", "diagnose", "render", "__version__"]

"""Renderers: each module turns a diagnosis dict (Diagnosis.to_dict()) into a string.

Renderers take the plain JSON-contract dict, not the Diagnosis object, so a stored report
(history, a baseline JSON) renders exactly like a fresh one.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ..errors import UsageError

_MODULES = {"html": "html", "json": "json_", "md": "markdown", "txt": "text"}
SUFFIXES = {".html": "html", ".htm": "html", ".json": "json", ".md": "md", ".markdown": "md",
            ".txt": "txt", ".text": "txt"}


def formats() -> list[str]:
    return list(_MODULES)


def format_for(output: str | Path | None, fmt: str | None) -> str:
    """The output format: --format wins, else the output file's suffix, else html."""
    if fmt:
        if fmt not in _MODULES:
            raise UsageError(f"unknown output format {fmt!r}; choose from {', '.join(_MODULES)}")
        return fmt
    if output is not None:
        suffix = Path(output).suffix.lower()
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
        if suffix:
            raise UsageError(f"cannot tell the format from suffix {suffix!r}; pass --format")
    return "html"


def warm(fmt: str) -> None:
    """Import ``fmt``'s renderer and build what its first render would build (the HTML
    template, compiled: ~0.1 s): ``report`` does this while a forked child still streams its
    trace (parsers/_prefetch.py)."""
    mod = importlib.import_module(f"{__name__}.{_MODULES[fmt]}")
    prepare = getattr(mod, "warm", None)
    if prepare is not None:
        prepare()


def render(diagnosis: Any, fmt: str = "html") -> str:
    """Render a Diagnosis (or its to_dict()) in ``fmt``: html, json, md or txt."""
    data = diagnosis.to_dict() if hasattr(diagnosis, "to_dict") else diagnosis
    if fmt not in _MODULES:
        raise UsageError(f"unknown output format {fmt!r}; choose from {', '.join(_MODULES)}")
    mod = importlib.import_module(f"{__name__}.{_MODULES[fmt]}")
    text = mod.render(data)
    if fmt in ("md", "txt"):
        from ..textsafe import clean

        text = clean(text)  # names from the trace never reach a terminal as escapes
    return text

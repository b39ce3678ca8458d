"""Parser registry: detect a trace's format by content and parse it into a Trace.

Each parser module defines ``FORMAT`` (its name), ``sniff(source, head) -> bool`` (``head`` is
the first bytes of the *decompressed* content, or b"" for a directory) and
``parse(source) -> Trace``. ``source`` is the run's ``_io.Input`` (a plain path works too):
the file is opened, and inflated, once whatever the number of sniffers and parsers that
look at it. Modules are imported lazily so ``profdiag --help`` stays fast.

A module that sets ``PARSES_COMPACT = True`` also takes ``parse(source, compact=True)`` and
builds the compact event table itself (``schema.compact``: string columns as sorted
Categoricals, typically straight from the codes it reads); for the others ``parse`` compacts
their canonical table afterwards.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import TraceFormatError, UsageError
from ._io import HEAD_BYTES, UTF8_BOM, Input

if TYPE_CHECKING:  # (a runtime import would bring pandas into parsers._prefetch's child)
    from ..trace import Trace

# Order matters: the first parser whose sniff() accepts the input wins.
_PARSER_MODULES: dict[str, str] = {
    "torch": "profdiag.parsers.torch_json",
    "nsys": "profdiag.parsers.nsys_sqlite",
    "rocprof": "profdiag.parsers.rocprof",
}

__all__ = ["HEAD_BYTES", "LONG_HEAD_BYTES", "UTF8_BOM", "Input", "detect", "formats", "parse",
           "read_head"]

# A JSON trace may open with a large metadata object (TraceLens adds one); look this far.
LONG_HEAD_BYTES = 1 << 20


def formats() -> list[str]:
    """Names accepted by ``--format``."""
    return list(_PARSER_MODULES)


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(_PARSER_MODULES[name])
    except ModuleNotFoundError as exc:  # a parser not built yet / optional
        if exc.name and exc.name.startswith("profdiag.parsers"):
            return None
        raise


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    """First ``n`` bytes of the content, transparently gunzipped; b"" for directories."""
    with Input(path) as src:
        return src.head(n)


def detect(path: str | os.PathLike[str] | Input) -> str:
    """Return the format name of ``path`` by content, or raise TraceFormatError."""
    from ..io import check_input

    if isinstance(path, Input):
        return _detect(path)
    p = check_input(path, what="trace", allow_dir=True)
    with Input(p) as src:
        return _detect(src)


def _detect(src: Input) -> str:
    p = src.path
    if not src.is_dir and src.size == 0:
        raise TraceFormatError("empty file", str(p))
    head = src.head()
    found = _sniff_all(src, head)
    if found is None and head.lstrip()[:1] in (b"{", b"[") and len(head) == HEAD_BYTES:
        found = _sniff_all(src, src.head(LONG_HEAD_BYTES))
    if found is not None:
        return found
    if src.is_dir:
        raise TraceFormatError("directory holds no recognised trace files", str(p))
    what = "binary data" if b"\x00" in head[:512] or not _is_text(head) else "text"
    raise TraceFormatError(
        f"not a recognised trace ({what}); expected a PyTorch profiler JSON, "
        "an Nsight Systems SQLite export or a rocprof output",
        str(p),
    )


def _sniff_all(src: Input, head: bytes) -> str | None:
    for name in _PARSER_MODULES:
        mod = _module(name)
        if mod is not None and mod.sniff(src, head):
            return name
    return None


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character may be cut at the end of the head
        try:
            head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def parse(path: str | os.PathLike[str], format: str | None = None,
          compact: bool = False) -> Trace:
    """Parse ``path`` (format sniffed unless given) into a canonical Trace: one Input for
    sniffing and parsing, closed (its temporary copy removed) when the parse ends.

    ``compact``: string columns as sorted Categoricals (``schema.compact``), built by the
    parser itself when its module declares ``PARSES_COMPACT``.
    """
    from ..io import check_input

    p = Path(path)
    if format is not None and format not in _PARSER_MODULES:
        raise UsageError(f"unknown format {format!r}; choose from {', '.join(formats())}")
    check_input(p, what="trace", allow_dir=True)
    with Input(p) as src:
        if format is None:
            format = _detect(src)
        mod = _module(format)
        if mod is None:
            raise UsageError(f"format {format!r} is not available in this build")
        trace: Trace = (mod.parse(src, compact=True)
                        if compact and getattr(mod, "PARSES_COMPACT", False) else mod.parse(src))
        if compact:
            from .. import schema

            if not schema.is_compact(trace.events):
                trace.events = schema.compact(trace.events)
        return trace

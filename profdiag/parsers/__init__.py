"""Parser registry: detect a trace's format by content and parse it into a Trace.

Each parser module defines ``FORMAT`` (its name), ``sniff(path, head) -> bool`` (``head`` is
the first bytes of the *decompressed* content, or b"" for a directory) and
``parse(path) -> Trace``. Modules are imported lazily so ``profdiag --help`` stays fast.
"""

from __future__ import annotations

import gzip
import importlib
import os
import zlib
from pathlib import Path
from types import ModuleType

from ..errors import TraceFormatError, UsageError
from ..trace import Trace

# Order matters: the first parser whose sniff() accepts the input wins.
_PARSER_MODULES: dict[str, str] = {
    "torch": "profdiag.parsers.torch_json",
    "nsys": "profdiag.parsers.nsys_sqlite",
    "rocprof": "profdiag.parsers.rocprof",
}

HEAD_BYTES = 4096
UTF8_BOM = b"\xef\xbb\xbf"  # some editors and Windows tools write one before JSON
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
    if path.is_dir():
        return b""
    with open(path, "rb") as fh:
        raw = fh.read(n)
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                raw = gz.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceFormatError(f"corrupt gzip stream ({exc})", str(path)) from None
    return raw[3:] if raw[:3] == UTF8_BOM else raw


def detect(path: str | os.PathLike[str]) -> str:
    """Return the format name of ``path`` by content, or raise TraceFormatError."""
    from ..io import check_input

    p = check_input(path, what="trace", allow_dir=True)
    if p.is_file() and p.stat().st_size == 0:
        raise TraceFormatError("empty file", str(p))
    head = read_head(p)
    found = _sniff_all(p, head)
    if found is None and head.lstrip()[:1] in (b"{", b"[") and len(head) == HEAD_BYTES:
        found = _sniff_all(p, read_head(p, LONG_HEAD_BYTES))
    if found is not None:
        return found
    if p.is_dir():
        raise TraceFormatError("directory holds no recognised trace files", str(p))
    what = "binary data" if b"\x00" in head[:512] or not _is_text(head) else "text"
    raise TraceFormatError(
        f"not a recognised trace ({what}); expected a PyTorch profiler JSON, "
        "an Nsight Systems SQLite export or a rocprof output",
        str(p),
    )


def _sniff_all(path: Path, head: bytes) -> str | None:
    for name in _PARSER_MODULES:
        mod = _module(name)
        if mod is not None and mod.sniff(path, head):
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


def parse(path: str | os.PathLike[str], format: str | None = None) -> Trace:
    """Parse ``path`` (format sniffed unless given) into a canonical Trace."""
    from ._sqlite import session

    with session():
        return _parse(Path(path), format)


def _parse(p: Path, format: str | None) -> Trace:
    from ..io import check_input

    if format is None:
        format = detect(p)
    elif format not in _PARSER_MODULES:
        raise UsageError(f"unknown format {format!r}; choose from {', '.join(formats())}")
    else:
        check_input(p, what="trace", allow_dir=True)
    mod = _module(format)
    if mod is None:
        raise UsageError(f"format {format!r} is not available in this build")
    return mod.parse(p)

"""The one input layer of the parsers: a trace file is opened, and inflated, once per run.

``Input(path)`` is what format sniffing (``profdiag.parsers.detect``) and every parser take.
Whatever the number of sniffers and parsers that look at it, a gzipped file goes through
one ``Inflater`` (one pass of zlib-ng, else the stdlib's zlib, over the compressed bytes,
against the
``profdiag.io.InflateBudget`` bound):

* ``head(n)`` -- the first ``n`` decompressed bytes (sniffing); a longer head continues the
  same inflation;
* ``blocks()`` -- the whole content as a stream of blocks (the Kineto streamer), replaying
  the bytes the head already inflated;
* ``read_bytes()`` -- the whole content in memory (small JSON and CSV layouts);
* ``sqlite_file()`` -- a plain SQLite file: the file itself, a copy with its ``-wal``, or the
  inflated temporary copy (made once, kept until ``close()``, removed at exit and on
  SIGTERM; copies of killed processes are removed by the next one).

Only the rare Kineto layout the streamer hands back to the whole-document reader inflates a
second time (the streamed blocks are not kept: memory stays bounded).

How a damaged stream ends is each view's policy, kept from the readers it replaced: the
inflater only records it (``truncated``, ``error``, ``produced``). ``blocks`` salvages with
a warning (the Kineto streamer), ``read_bytes`` calls the caller's ``on_truncated`` (the
torch parser warns, rocprof refuses), ``sqlite_file`` refuses, and a stream of which
nothing inflates is a ``corrupt gzip stream`` error everywhere. The size bound
(``InflateBudget``) is raised by the inflater itself, whichever view asked.

``read_report_json`` is the one report sniffer (gate, compare, index): which JSON files may
be a profdiag report rather than a trace.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from ..errors import OutputError, TraceFormatError
from ..io import InflateBudget

try:  # zlib-ng inflates the same streams about twice as fast as the stdlib's zlib
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - a platform without its wheel: the stdlib's
    import zlib  # type: ignore[no-redef]
# (zlib-ng's stubs declare its error a variable, not a class)
_INFLATE_ERROR: type[Exception] = zlib.error  # type: ignore[assignment]

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
HEAD_BYTES = 4096
# compressed bytes read at a time, and most bytes one zlib call may produce
READ_BYTES = 1 << 20
BLOCK_BYTES = 16 << 20
# a head is inflated in small blocks: sniffing a file no parser takes inflates little
_HEAD_BLOCK = 64 << 10

TMP_PREFIX = "profdiag-"
# gzip(1)'s message for a stream that ends inside a member
_EOF_MESSAGE = "Compressed file ended before the end-of-stream marker was reached"


# --------------------------------------------------------------------------- inflation
class Inflater:
    """One pass of gzip inflation over an open file: every member, like ``gzip -dc``; NUL
    padding and trailing bytes that are not another member are ignored. Each produced byte
    counts against an InflateBudget (past it: TraceFormatError). A stream that stops early
    ends the blocks and is recorded: ``truncated`` (the file ends inside a member) or
    ``error`` (zlib's complaint); ``produced`` says how much came out before."""

    def __init__(self, path: Path, fh: BinaryIO, compressed_size: int) -> None:
        self.path = path
        self._fh = fh
        self._budget = InflateBudget(path, compressed_size)
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._comp = b""
        self.produced = 0
        self.consumed = 0  # compressed bytes read so far
        self.truncated = False
        self.error: Exception | None = None
        self.done = False
        self.progress: Callable[[int], None] | None = None

    def _read(self) -> bytes:
        data = self._fh.read(READ_BYTES)
        self.consumed += len(data)
        if self.progress and data:
            self.progress(len(data))
        return data

    def next_block(self, limit: int = BLOCK_BYTES) -> bytes | None:
        """The next inflated bytes (at most ``limit``), or None at the end of the stream."""
        while not self.done:
            if not self._comp:
                self._comp = self._read()
                if not self._comp:
                    self.truncated = not self._d.eof
                    self.done = True
                    return None
            try:
                out = self._d.decompress(self._comp, limit)
            except _INFLATE_ERROR as exc:
                self.error = exc
                self.done = True
                return None
            self._comp = self._d.unconsumed_tail
            if self._d.eof:
                self._next_member()
            if out:
                self._budget.add(len(out))
                self.produced += len(out)
                return out
        return None

    def _next_member(self) -> None:
        # unused_data holds every byte after the member's end (the unconsumed tail may still
        # show bytes zlib already moved there: never add the two)
        rest = self._d.unused_data.lstrip(b"\x00")
        while not rest:
            more = self._read()
            if not more:
                self.done = True
                return
            rest = more.lstrip(b"\x00")
        if rest[:2] != GZIP_MAGIC:
            self.done = True  # trailing bytes after the last member: ignored like gzip(1)
            return
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._comp = rest

    @property
    def damaged(self) -> bool:
        return self.truncated or self.error is not None

    def nothing_inflated_error(self) -> TraceFormatError:
        if self.error is not None:
            return TraceFormatError(f"corrupt gzip stream ({self.error})", str(self.path))
        return TraceFormatError("corrupt gzip stream (nothing could be inflated)",
                                str(self.path))


# ------------------------------------------------------------------- temporary copies
# victims (files or folders) of the live Inputs of this process, removed at exit at the latest
_LIVE: set[Path] = set()
_ATEXIT = False


def _remove(victim: Path) -> None:
    with contextlib.suppress(OSError):
        if victim.is_dir():
            shutil.rmtree(victim, ignore_errors=True)
        else:
            os.unlink(victim)
    _LIVE.discard(victim)


def _remove_all() -> None:
    for victim in list(_LIVE):
        _remove(victim)


def _track(victim: Path) -> None:
    global _ATEXIT
    _LIVE.add(victim)
    if not _ATEXIT:
        atexit.register(_remove_all)
        _ATEXIT = True


def clean_stale() -> None:
    """Remove temp copies left by profdiag processes that died (SIGKILL, power loss)."""
    for victim in glob.glob(os.path.join(tempfile.gettempdir(), TMP_PREFIX + "*-*")):
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-", os.path.basename(victim))
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except OSError:
            continue
        with contextlib.suppress(OSError):
            if os.path.isdir(victim):
                shutil.rmtree(victim, ignore_errors=True)
            else:
                os.unlink(victim)


def tmp_error(exc: OSError) -> OutputError:
    where = tempfile.gettempdir()
    if exc.errno == errno.ENOSPC:
        return OutputError("no space left to inflate the trace into the temporary directory "
                           "(set TMPDIR to a larger disk)", where)
    return OutputError(f"cannot write a temporary copy: {exc.strerror or exc}", where)


# ------------------------------------------------------------------------------- Input
class Input:
    """One trace input of a run (a file or a folder); see the module docstring.

    Use it as a context manager (or call ``close()``): that removes its temporary copy.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.is_dir = self.path.is_dir()
        self.compressed = False
        self.size = 0
        self._fh: BinaryIO | None = None
        self._inflater: Inflater | None = None
        self._head = b""  # decompressed bytes from the start, kept for sniffing and replay
        self._spent = False  # a consumer of the whole content took the inflater
        self._sqlite: tuple[Path, bool] | None = None
        self._victim: Path | None = None
        if not self.is_dir:
            # a missing or unreadable file is reported by whoever reads it (check_input first)
            with contextlib.suppress(OSError), open(self.path, "rb") as fh:
                self.compressed = fh.read(2) == GZIP_MAGIC
                self.size = os.fstat(fh.fileno()).st_size

    @classmethod
    @contextlib.contextmanager
    def using(cls, source: Input | str | os.PathLike[str]) -> Iterator[Input]:
        """``source`` itself when it is an Input (its owner closes it), else a new Input
        closed on exit."""
        if isinstance(source, Input):
            yield source
            return
        with cls(source) as src:
            yield src

    def __enter__(self) -> Input:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._victim is not None:
            _remove(self._victim)
            self._victim = None
        self._sqlite = None

    def __repr__(self) -> str:
        return f"Input({str(self.path)!r})"

    # ------------------------------------------------------------------ the inflater
    def _stream(self) -> Inflater:
        """The inflation of this input, opened on first use. Once a consumer of the whole
        content has taken it (``_spent``), asking again starts a second pass: only the
        Kineto whole-document fallback does."""
        if self._inflater is None or self._spent:
            if self._fh is None:
                self._fh = open(self.path, "rb")
            else:
                self._fh.seek(0)
            self._inflater = Inflater(self.path, self._fh, self.size)
            self._head, self._spent = b"", False
        return self._inflater

    def _take(self) -> tuple[Inflater, bytes]:
        """The inflater and the head it already produced, for a consumer of the whole
        content (the head is replayed to it, then dropped)."""
        inf = self._stream()
        head, self._head, self._spent = self._head, b"", True
        return inf, head

    # ------------------------------------------------------------------------ views
    def head(self, n: int = HEAD_BYTES) -> bytes:
        """The first ``n`` bytes of the content, without a UTF-8 byte order mark; b"" for a
        folder. A gzip stream that ends, or breaks, before ``n`` bytes is a TraceFormatError
        (``corrupt gzip stream (...)``)."""
        if self.is_dir:
            return b""
        if not self.compressed:
            with open(self.path, "rb") as fh:
                raw = fh.read(n)
        elif self._sqlite is not None and self._victim is not None:
            with open(self._sqlite[0], "rb") as fh:  # already inflated: read the copy
                raw = fh.read(n)
        else:
            inf = self._stream()
            while len(self._head) < n and not inf.done:
                block = inf.next_block(_HEAD_BLOCK)
                if block:
                    self._head += block
            if len(self._head) < n and inf.damaged:
                why = str(inf.error) if inf.error is not None else _EOF_MESSAGE
                raise TraceFormatError(f"corrupt gzip stream ({why})", str(self.path))
            raw = self._head[:n]
        return raw[3:] if raw[:3] == UTF8_BOM else raw

    def blocks(self, warnings: list[str], progress: Callable[[int], None] | None = None,
               limit: int = BLOCK_BYTES) -> Iterator[bytes | memoryview]:
        """The whole content as blocks. A gzip stream that stops early ends the blocks with
        a warning in ``warnings``; one of which nothing inflates is a TraceFormatError.

        A plain file's blocks are views of one buffer the next block overwrites (read with
        ``readinto``: no new bytes object, and no fresh pages, per block): copy what is kept."""
        if not self.compressed:
            buffer = bytearray(limit)
            view = memoryview(buffer)
            with open(self.path, "rb", buffering=0) as fh:
                while n := fh.readinto(view):
                    if progress:
                        progress(n)
                    yield view[:n]
            return
        inf, head = self._take()
        if progress and inf.consumed:
            progress(inf.consumed)  # what the head already read
        inf.progress = progress
        if head:
            yield head
        while (block := inf.next_block(limit)) is not None:
            yield block
        if inf.produced == 0 and inf.damaged:
            raise inf.nothing_inflated_error()
        if inf.error is not None:
            warnings.append(f"gzip stream is truncated or corrupt ({inf.error}); "
                            "read what could be inflated")
        elif inf.truncated:
            warnings.append("gzip stream is truncated; read what could be inflated")

    def read_bytes(self, on_truncated: Callable[[], None] | None = None) -> bytes:
        """The whole content in memory (bounded). A gzip stream that stops early returns what
        could be inflated and calls ``on_truncated``; one of which nothing inflates is a
        TraceFormatError."""
        if not self.compressed:
            return self.path.read_bytes()
        inf, head = self._take()
        out = [head]
        while (block := inf.next_block()) is not None:
            out.append(block)
        if inf.damaged:
            if inf.produced == 0:
                raise inf.nothing_inflated_error()
            if on_truncated:
                on_truncated()
        return b"".join(out)

    def sqlite_file(self) -> tuple[Path, bool]:
        """(plain SQLite path, immutable?): the file itself; a copy beside its ``-wal`` (so
        the WAL's rows are read and the user's folder is untouched); or the bounded
        inflation of a gzipped file, made once. A stream that stops early is refused."""
        if self._sqlite is None:
            if self.compressed:
                self._sqlite = (self._inflate_to_file(), True)
            elif _has_wal(self.path):
                self._sqlite = (self._wal_copy(), False)
            else:
                self._sqlite = (self.path, True)
        return self._sqlite

    # ----------------------------------------------------------------- temp copies
    def _inflate_to_file(self) -> Path:
        clean_stale()
        try:
            fd, tmp = tempfile.mkstemp(suffix=".sqlite", prefix=f"{TMP_PREFIX}{os.getpid()}-")
        except OSError as exc:
            raise tmp_error(exc) from None
        victim = Path(tmp)
        _track(victim)
        try:
            with os.fdopen(fd, "wb") as out:
                inf, head = self._take()
                block: bytes | None = head
                while block is not None:
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise tmp_error(exc) from None
                    block = inf.next_block(1 << 22)
            if inf.error is not None:
                raise TraceFormatError(f"corrupt gzip stream ({inf.error})", str(self.path))
            if inf.truncated:
                raise TraceFormatError(
                    "truncated gzip stream: the compressed SQLite export is incomplete "
                    f"(inflated {inf.produced} bytes before the end)", str(self.path))
        except BaseException:
            _remove(victim)
            raise
        self._victim = victim
        return victim

    def _wal_copy(self) -> Path:
        clean_stale()
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-wal-"))
        except OSError as exc:
            raise tmp_error(exc) from None
        _track(folder)
        target = folder / "trace.sqlite"
        try:
            shutil.copyfile(self.path, target)
            shutil.copyfile(str(self.path) + "-wal", str(target) + "-wal")
        except OSError as exc:
            _remove(folder)
            raise tmp_error(exc) from None
        self._victim = folder
        return target


def _has_wal(path: Path) -> bool:
    try:
        return os.path.getsize(str(path) + "-wal") > 0
    except OSError:
        return False


# A JSON report is small (100 kB); a larger .json file is a trace. A Kineto trace shows
# "traceEvents" within its first MiB.
REPORT_MAX_BYTES = 64 << 20
REPORT_HEAD_BYTES = 1 << 20


def read_report_json(path: str | os.PathLike[str],
                     max_bytes: int = REPORT_MAX_BYTES) -> object | None:
    """The parsed JSON of a file that may be a profdiag JSON report, else None.

    The one report sniffer (the gate, compare and the index site use it): a plain (not
    gzipped) file of at most ``max_bytes`` whose content is a JSON object and whose first
    MiB shows no ``"traceEvents"``. Whether the object is a report is the caller's check."""
    import orjson

    p = Path(path)
    try:
        if os.path.getsize(p) > max_bytes:
            return None
        with p.open("rb") as fh:
            head = fh.read(REPORT_HEAD_BYTES)
    except OSError:
        return None
    if head[:2] == GZIP_MAGIC or head.lstrip()[:1] != b"{" or b'"traceEvents"' in head:
        return None
    try:
        return orjson.loads(p.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None

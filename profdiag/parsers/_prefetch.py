"""Read a Kineto JSON trace in a forked child while the parent imports pandas.

A `profdiag report` of one trace spends its first ~0.5-0.9 s importing pandas, pyarrow and
the diagnosis, and only then starts reading the file. The streamer (``_kineto_fast``) needs
numpy, msgspec and orjson but no pandas, so on a machine with a second core the command forks
before those imports (``start``): the child streams the file into the extractor's columns
(numpy arrays and string tables, ~0.1 of the JSON's size) and pickles them down a pipe, while
the parent imports; the Kineto parser then takes the child's result (``take``) instead of
streaming the file itself, and builds the table from it exactly as it would have. Nothing
about the result differs: the child runs the same ``_kineto_fast.stream`` on the same file.

When it applies: Linux (``os.fork``), pandas not yet imported (a fresh command process, not
a library caller or a test run, which have their imports paid), no other Python thread, at
least two usable cores and a 1-minute load average below their number, a regular local file
of 1 MiB to 1 GiB (64 MiB gzipped: the columns cross the pipe, and both processes hold them
for a moment) whose first byte opens JSON. The environment variable ``PROFDIAG_PREFETCH``
set to ``0`` turns it off; ``always`` drops the size, core, load, import and thread
conditions (tests, experiments: the child only reads the file, and CPython re-initialises
its import lock in a forked child).

Failure is never fatal: a child that dies, is killed or returns something unexpected, or a
file that changed since the fork (device, inode, size, mtime), makes the parser stream the
file itself, as does a layout the streamer refuses (StreamUnsupported: the parser's fallback
reads the Input that its own streaming consumed). The child's TraceFormatError is raised as
it would have been in the parent. A child the parent never asks for is killed at exit (a
parent killed outright leaves it to end at its next write, a progress message per 4 MB, on
the broken pipe). The pipe is private to the two processes, and its unpickler accepts only
the numpy and ``_kineto_fast`` classes a result holds: the trace's content crosses it only
as data.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MIN_BYTES = 1 << 20
MAX_BYTES = 1 << 30
MAX_GZIP_BYTES = 64 << 20  # ~1 GB of JSON at Kineto's usual 10-15x
ENV = "PROFDIAG_PREFETCH"


@dataclass
class _Pending:
    pid: int
    reader: BinaryIO
    identity: tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


_PENDING: _Pending | None = None
_REGISTERED = False  # discard() is an atexit handler
_WHILE_WAITING: list[Callable[[], object]] = []  # run by take() before it reads the pipe


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def has_a_free_core() -> bool:
    """Two or more usable cores, and a 1-minute load average below their number: on a busy
    machine the two processes would only take turns (and each pays the other's cache)."""
    cores = _usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover (no load average)
        load = 0.0
    return cores >= 2 and load < cores


def worth_it(path: str, setting: str | None = None) -> os.stat_result | None:
    """The file's stat when a prefetch of ``path`` applies (module docstring), else None."""
    import stat as stat_mod
    import threading

    setting = os.environ.get(ENV, "") if setting is None else setting
    if setting == "0" or not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return None
    forced = setting == "always"
    if _PENDING is not None:
        return None
    # a fork copies only the calling thread: another one holding a lock (logging's, an
    # import's) would leave it held in the child. A command process has one thread here.
    if not forced and ("pandas" in sys.modules or threading.active_count() > 1
                       or not has_a_free_core()):
        return None
    try:
        st = os.stat(path)
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None  # the command's own checks name the problem
    gzipped = head[:2] == b"\x1f\x8b"
    if gzipped:  # what it inflates to must open like JSON too (not a .sqlite.gz, a CSV)
        import zlib

        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 4096)
        except zlib.error:
            return None
    if head.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] not in (b"{", b"["):
        return None
    if not forced and not MIN_BYTES <= st.st_size <= (MAX_GZIP_BYTES if gzipped else MAX_BYTES):
        return None
    return st


def start(path: str, setting: str | None = None) -> bool:
    """Fork a child that streams the Kineto trace at ``path``, when that applies; True when
    one was started (``take`` collects it)."""
    global _PENDING, _REGISTERED
    st = worth_it(path, setting)
    if st is None:
        return False
    # the streamer's modules (numpy, msgspec, orjson) imported once, here, before the fork:
    # the parent needs them anyway, and a child that imported them itself would spend ~0.1 s
    # of CPU doing it again
    from . import _kineto_fast  # noqa: F401

    rfd, wfd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(rfd)
        os.close(wfd)
        return False
    if pid == 0:  # the child: never returns
        os.close(rfd)
        _child(path, wfd)
    os.close(wfd)
    _PENDING = _Pending(pid, os.fdopen(rfd, "rb"), _identity(st))
    if not _REGISTERED:
        atexit.register(discard)
        _REGISTERED = True
    return True


def while_waiting(*work: Callable[[], object]) -> None:
    """Have ``take`` run ``work`` (in the parent, once, in order) before it waits for the
    child's result: what the command needs next and would otherwise do after the load (its
    rules compiled, its report's template) runs while the child is still streaming. Nothing
    is kept when no child is pending. An Exception raised by ``work`` is dropped: the command
    does the same work again later, where its error belongs."""
    if _PENDING is not None:
        _WHILE_WAITING.extend(work)


def _run_while_waiting() -> None:
    work = list(_WHILE_WAITING)
    _WHILE_WAITING.clear()
    for fn in work:
        try:
            fn()
        except Exception:  # noqa: BLE001, S112 (done again, and raised, where it belongs)
            continue


def _child(path: str, wfd: int) -> None:
    code = 0
    try:
        # Ctrl-C and SIGTERM end the child at once; the parent reports them
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with os.fdopen(wfd, "wb") as out:
            def progress(n: int) -> None:  # bytes read, per 4 MB block: the parent's bar
                pickle.dump(("progress", n), out, protocol=5)
                out.flush()  # the bar moves while the parent reads, not at the end
            try:
                from . import _kineto_fast as fast

                try:
                    result = fast.stream(Path(path), progress)
                except fast.StreamUnsupported as exc:
                    message: tuple[str, Any] = ("unsupported", str(exc))
                except Exception as exc:  # noqa: BLE001 (the parent decides; see take)
                    from ..errors import TraceFormatError

                    message = (("error", (exc.message, exc.path)) if type(exc) is
                               TraceFormatError else ("failed", repr(exc)))
                else:
                    _drop_lookups(result.extractor)
                    message = ("ok", result)
                pickle.dump(message, out, protocol=5)
            except MemoryError:
                code = 1
    except BaseException:  # noqa: BLE001 (a broken pipe, a signal: the parent falls back)
        code = 1
    finally:
        os._exit(code)


def _drop_lookups(ex: Any) -> None:
    """Free what only the extraction reads (the string tables' lookups, the combinations'
    keys): the parser reads the columns, the string values and the collectives."""
    cols = ex.cols
    for table in (cols.name, *cols.text.values()):
        table.by_raw = {}
        table.by_value = {}
    ex.op_inputs = ex.launch_dims = None


class _Unpickler(pickle.Unpickler):
    """Only what a stream result holds: numpy arrays and dtypes, the streamer's classes."""

    _MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                "numpy.core.numeric", "numpy._core.numeric")

    def find_class(self, module: str, name: str) -> Any:
        if module in self._MODULES and name in ("dtype", "ndarray", "_reconstruct",
                                                "_frombuffer", "scalar"):
            return super().find_class(module, name)
        if module == "profdiag.parsers._kineto_fast" and name in (
                "StreamResult", "Extractor", "Columns", "Strings", "RawCombos", "json_text",
                "dims3", "_concrete_text"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a stream result")


def take(path: str | os.PathLike[str], progress: Callable[[int], None] | None) -> Any:
    """The child's stream result for ``path`` (a ``_kineto_fast.StreamResult``), or None when
    there is no child for that file, it failed, or the streamer refused the layout (the
    caller streams the file itself: what the whole-document path then reads depends on the
    Input that streaming consumed). Raises the child's TraceFormatError."""
    global _PENDING
    pending = _PENDING
    if pending is None:
        return None
    try:
        same = _identity(os.stat(path)) == pending.identity
    except OSError:
        same = False
    if not same:
        discard()
        return None
    _PENDING = None
    _run_while_waiting()
    message: Any = None
    try:
        with pending.reader:
            while True:
                message = _Unpickler(pending.reader).load()
                if not (isinstance(message, tuple) and message and message[0] == "progress"):
                    break
                if progress is not None:
                    progress(int(message[1]))
    except Exception:  # noqa: BLE001 (EOF: the child died; anything else: not ours)
        message = None
    finally:
        _reap(pending.pid, kill=message is None)
    if not isinstance(message, tuple) or len(message) != 2:
        return None
    kind, value = message
    from . import _kineto_fast as fast

    if kind == "ok" and isinstance(value, fast.StreamResult):
        return value
    if kind == "error":
        from ..errors import TraceFormatError

        text, where = value
        raise TraceFormatError(str(text), None if where is None else str(where))
    return None


def discard() -> None:
    """Kill and reap a child nobody will ask for (at exit, or when its file changed)."""
    global _PENDING
    pending, _PENDING = _PENDING, None
    _WHILE_WAITING.clear()
    if pending is None:
        return
    try:
        pending.reader.close()
    except OSError:  # pragma: no cover
        pass
    _reap(pending.pid, kill=True)


def _reap(pid: int, kill: bool) -> None:
    try:
        if kill:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError, OSError):
        pass

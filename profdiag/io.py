"""The input/output safety layer: every path profdiag reads or writes goes through here.

* Inputs (``check_input``): refused before they are opened when they are special files
  (FIFOs, devices, sockets: reading one could block forever or never end), symlink loops or
  unreadable; each accepted input is remembered so that no output can be written over it.
* Outputs (``check_output``, ``write_atomic``): refused when they would replace an input of
  this run, a history database, a device node, a FIFO, a directory or a symbolic link; a
  report is written whole (temporary file in the same directory, then rename) or not at all.
* Inflation bounds (``InflateBudget``): gzip content is inflated against a size cap
  (``--max-inflated-size`` / ``$PROFDIAG_MAX_INFLATED_SIZE``) so a decompression bomb ends in
  a one-line error instead of filling memory or the disk. The one inflater that counts
  against it is ``profdiag.parsers._io.Inflater``, reached through the run's ``Input``.

docs/security.md describes what profdiag trusts and what it bounds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

from .errors import OutputError, ProfdiagError, TraceFormatError, UsageError

# ------------------------------------------------------------------------------- inputs

# (st_dev, st_ino) and resolved paths of this process's inputs and history databases.
_PROTECTED_IDS: dict[tuple[int, int], str] = {}
_PROTECTED_PATHS: dict[str, str] = {}


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def _stat_error(exc: OSError, path: str, error: type[ProfdiagError]) -> ProfdiagError:
    if exc.errno == errno.ELOOP:
        return error("symbolic link loop (too many levels of symbolic links)", path)
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return error("dangling symbolic link (its target does not exist)", path)
        return UsageError("no such file or directory", path)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return error("permission denied", path)
    if exc.errno == errno.ENAMETOOLONG:
        return UsageError("file name too long", path)
    return error(f"cannot read: {exc.strerror or exc}", path)


def check_input(path: str | os.PathLike[str], *, what: str = "input",
                allow_dir: bool = False, error: type[ProfdiagError] = TraceFormatError,
                protect_it: bool = True) -> Path:
    """Validate an input path before anything opens it; return it as a Path.

    Special files are refused (a FIFO would block, /dev/zero never ends), as are symlink
    loops, dangling links and unreadable files; ``error`` is the exception class used for a
    bad file (TraceFormatError, exit 3, for traces; UsageError or RulesError for option
    files). A missing file is a UsageError (exit 2). The input is remembered so that no
    output of this run can overwrite it.
    """
    p = Path(path)
    s = str(p)
    try:
        st = os.stat(s)
    except OSError as exc:
        raise _stat_error(exc, s, error) from None
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise error(f"is a directory, not a {what}", s)
    elif not stat.S_ISREG(st.st_mode):
        raise error(f"is {_kind(st.st_mode)}, not a regular file: refusing to read it "
                    f"as the {what}", s)
    elif not os.access(s, os.R_OK):
        raise error("permission denied", s)
    if protect_it:
        protect(p, st)
    return p


def protect(path: str | os.PathLike[str], st: os.stat_result | None = None,
            role: str = "input") -> None:
    """Remember ``path`` (an input, or a history database) as never to be written over."""
    s = str(path)
    if st is None:
        try:
            st = os.stat(s)
        except OSError:
            st = None
    if st is not None:
        role = "history" if role == "history" else _PROTECTED_IDS.get(
            (st.st_dev, st.st_ino), role)
        _PROTECTED_IDS[(st.st_dev, st.st_ino)] = role
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        real = os.path.realpath(s)
        _PROTECTED_PATHS[real] = "history" if role == "history" else _PROTECTED_PATHS.get(
            real, role)


def forget_protected() -> None:
    """Clear the remembered inputs (tests and long-running library users)."""
    _PROTECTED_IDS.clear()
    _PROTECTED_PATHS.clear()


# ------------------------------------------------------------------------------ outputs

def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse an output path that would destroy something: an input of this run or a history
    database (same resolved path or same inode), a symbolic link, a device, a FIFO, a socket
    or a directory. A missing file or a regular file that is none of these is fine."""
    s = str(path)
    try:
        st = os.lstat(s)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", s) from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputError("is a symbolic link: refusing to replace it (write to its "
                              "target's path, or remove the link)", s)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"is {_kind(st.st_mode)}: refusing to write a report over it", s)
        if (st.st_dev, st.st_ino) in _PROTECTED_IDS:
            raise UsageError(_overwrite_message(s, _PROTECTED_IDS[(st.st_dev, st.st_ino)]), s)
    with contextlib.suppress(OSError, RuntimeError, ValueError):
        real = os.path.realpath(s)
        if real in _PROTECTED_PATHS:
            raise UsageError(_overwrite_message(s, _PROTECTED_PATHS[real]), s)


def _overwrite_message(path: str, role: str = "input") -> str:
    what = "the history database" if role == "history" else "an input of this command"
    return f"output would overwrite {what}; choose another output path"


def check_outputs(*paths: str | os.PathLike[str] | None) -> None:
    """check_output for each given path, and refuse the same output named twice."""
    seen: dict[str, str] = {}
    for p in paths:
        if p is None:
            continue
        check_output(p)
        real = os.path.realpath(str(p))
        if real in seen:
            raise UsageError(f"the same file is named as two outputs ({seen[real]})", str(p))
        seen[real] = str(p)


def check_site_dir(path: str | os.PathLike[str]) -> None:
    """An output folder: missing, or a directory (not a file or device); each file written
    into it is checked by write_atomic."""
    s = str(path)
    try:
        st = os.stat(s)
    except FileNotFoundError:
        if os.path.islink(s):
            raise OutputError("is a dangling symbolic link", s) from None
        return
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", s) from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"is {_kind(st.st_mode)}, not a directory to write a site into", s)


NAME_MAX = 255


def ensure_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output directory ``path`` (and parents) if needed; an error when it cannot
    be created or written to."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory: {exc.strerror or exc}",
                          str(out)) from None
    if not os.access(out, os.W_OK):
        raise OutputError("output directory is not writable", str(out))
    return out


def _temp_prefix(name: str) -> str:
    """A temp-file prefix for ``name`` short enough that prefix + 8 random + '.tmp' fits
    NAME_MAX bytes (a 250-character report name still gets a temp file beside it)."""
    room = NAME_MAX - 1 - 1 - 8 - 4 - 8  # '.', '.', random part, '.tmp', margin
    b = name.encode("utf-8", "surrogateescape")[:room]
    return "." + b.decode("utf-8", "ignore") + "."


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename.

    The path is checked first (check_output): an input, a history database, a symlink or a
    special file is never replaced. An interrupted write (an error, SIGTERM) leaves neither
    a partial output nor the temporary file.
    """
    p = Path(path)
    check_output(p)
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(p.name), suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror}", str(p)) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write: {exc.strerror}", str(p)) from None
        raise


# ---------------------------------------------------------------------- inflation bounds

ENV_MAX_INFLATED = "PROFDIAG_MAX_INFLATED_SIZE"
# Without an explicit bound: gzip content may inflate to this many bytes...
DEFAULT_MAX_INFLATED = 8 << 30
# ...and past RATIO_FLOOR bytes to at most MAX_RATIO times its compressed size (real Kineto
# JSON and nsys SQLite compress 5-30x; a decompression bomb, 1000x).
MAX_RATIO = 200
RATIO_FLOOR = 256 << 20

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'512M', '8G', '1.5GiB', '1000000' -> bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise UsageError(f"--max-inflated-size expects a size such as 512M or 8G, got {text!r}")
    n = float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2).lower() or " ")))
    if not 0 < n < (1 << 62):
        raise UsageError(f"--max-inflated-size must be a positive size, got {text!r}")
    return int(n)


def set_max_inflated_size(n: int | None) -> None:
    """Set (or clear with None) the explicit bound; worker processes inherit it."""
    if n is None:
        os.environ.pop(ENV_MAX_INFLATED, None)
    else:
        os.environ[ENV_MAX_INFLATED] = str(int(n))


def _explicit_bound() -> int | None:
    raw = os.environ.get(ENV_MAX_INFLATED)
    if not raw:
        return None
    try:
        return parse_size(raw)
    except UsageError:
        raise UsageError(f"${ENV_MAX_INFLATED} expects a size such as 512M or 8G, "
                         f"got {raw!r}") from None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


class InflateBudget:
    """Counts inflated bytes of one compressed input and raises past the bound.

    The bound is ``--max-inflated-size`` when given (then it is the only one); otherwise
    DEFAULT_MAX_INFLATED, and past RATIO_FLOOR no more than MAX_RATIO times the
    compressed size.
    """

    def __init__(self, path: str | os.PathLike[str], compressed_size: int | None = None) -> None:
        self.path = str(path)
        if compressed_size is None:
            try:
                compressed_size = os.stat(self.path).st_size
            except OSError:
                compressed_size = 0
        self.compressed = compressed_size
        explicit = _explicit_bound()
        self.explicit = explicit is not None
        if explicit is not None:
            self.limit = explicit
        else:
            self.limit = min(DEFAULT_MAX_INFLATED,
                             max(RATIO_FLOOR, MAX_RATIO * max(compressed_size, 1)))
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.total > self.limit:
            raise TraceFormatError(self.message(), self.path)

    def message(self) -> str:
        if self.explicit:
            why = f"the --max-inflated-size bound of {fmt_bytes(self.limit)}"
        elif self.limit == DEFAULT_MAX_INFLATED:
            why = f"the default bound of {fmt_bytes(self.limit)}"
        else:
            why = (f"{fmt_bytes(self.limit)}, {MAX_RATIO}x its {fmt_bytes(self.compressed)} "
                   "compressed size (a decompression bomb?)")
        return (f"gzip content inflates past {why}; if the trace is genuine, raise the bound "
                "with --max-inflated-size (e.g. --max-inflated-size 64G)")

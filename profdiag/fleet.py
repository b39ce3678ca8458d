"""Fleets of traces: fsspec URLs and per-file diagnosis as tasks on a Dask distributed cluster.

``diagnose_on_cluster(paths, options, scheduler)`` submits one task per trace to the scheduler
(``tcp://host:8786``; ``local`` starts a ``LocalCluster`` of worker processes). Each task loads
and diagnoses one file on a worker (reading it through fsspec when it is a URL) and returns
the same ``TraceResult`` / ``TraceFailure`` the local path returns: the report dictionary and
the run facts, never the event table. Results come back in input order, so the index and the
per-rank reports the client writes are the same as with ``--jobs``.

Needs ``pip install 'profdiag[dask]'`` (dask[distributed], fsspec); imported only when used.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    EXIT_BAD_INPUT,
    MissingDependencyError,
    ProfdiagError,
    SchedulerError,
    UsageError,
)

if TYPE_CHECKING:  # multi (and the report model it decodes) is imported when a task runs
    from .multi import TraceFailure, TraceResult

CONNECT_TIMEOUT_S = 10
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(path: str) -> bool:
    """True for fsspec URLs (s3://, gs://, file://, memory://, ...)."""
    return bool(_URL.match(path))


def local_path(url: str) -> str | None:
    """The local path of a file:// URL (None for any other URL)."""
    if url.startswith("file://"):
        return url[len("file://"):] or "/"
    return None


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise MissingDependencyError("reading URLs needs fsspec: pip install 'profdiag[dask]' "
                                     "(plus s3fs/gcsfs for s3:// and gs://)") from None
    return fsspec


def url_trace_files(url: str) -> list[str] | None:
    """The PyTorch traces directly inside the folder ``url``, as URLs in natural name order.

    None when ``url`` is a single file; raises UsageError when it names nothing.
    """
    from .multi import _natural_key
    from .parsers import torch_json

    fsspec = _fsspec()
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # unknown protocol or its backend not installed
        raise MissingDependencyError(f"cannot open {url}: {exc}") from None
    try:
        if not fs.isdir(root):
            if fs.isfile(root):
                return None
            raise UsageError("no such file or directory", url)
        entries = fs.ls(root, detail=True)
    except OSError as exc:
        raise UsageError(f"cannot list: {exc}", url) from None
    found = []
    for e in sorted(entries, key=lambda e: _natural_key(Path(str(e["name"])))):
        name = str(e["name"])
        if e.get("type") != "file" or Path(name).name.startswith(".") or not e.get("size"):
            continue
        try:
            if torch_json.sniff(Path(name), _head(fs, name)):
                found.append(fs.unstrip_protocol(name))
        except (OSError, EOFError, ValueError):
            continue
    if not found:
        raise UsageError("no PyTorch profiler traces in this folder", url)
    return found


def _head(fs: Any, path: str, n: int = 64 << 10) -> bytes:
    import gzip
    import io

    with fs.open(path, "rb") as fh:
        raw = fh.read(n)
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.GzipFile(fileobj=io.BytesIO(raw)).read(n)
        except EOFError:  # the head holds only part of the stream; read what inflated
            with fs.open(path, "rb") as fh, gzip.GzipFile(fileobj=fh) as gz:
                return gz.read(n)
    return raw


def fetch_local(url: str, workdir: str) -> str:
    """A local copy of ``url`` (same file name) under ``workdir``; file:// is used in place."""
    path = local_path(url)
    if path is not None:
        return path
    fsspec = _fsspec()
    target = os.path.join(workdir, url.rstrip("/").rsplit("/", 1)[-1] or "trace")
    with fsspec.open(url, "rb") as src, open(target, "wb") as dst:
        while True:
            block = src.read(8 << 20)
            if not block:
                break
            dst.write(block)
    return target


def diagnose_path(path: str, options: dict[str, Any]) -> TraceResult | TraceFailure:
    """Task body: diagnose a local path or URL; the result names ``path`` as given."""
    from .multi import TraceFailure, TraceResult, _diagnose_one

    if not is_url(path):
        return _diagnose_one(path, options)
    with tempfile.TemporaryDirectory(prefix="profdiag-") as tmp:
        try:
            local = fetch_local(path, tmp)
        except ProfdiagError as exc:
            return TraceFailure(path, str(exc), exc.exit_code)
        except OSError as exc:
            return TraceFailure(path, f"{path}: cannot read: {exc}", EXIT_BAD_INPUT)
        res = _diagnose_one(local, options)
        res.path = path
        if isinstance(res, TraceResult):
            res.data["source"]["path"] = path
        else:
            res.message = res.message.replace(local, path)
        return res


def connect(scheduler: str, workers: int | None = None) -> tuple[Any, Any]:
    """(client, cluster or None) for ``scheduler``; SchedulerError when it cannot be reached."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise MissingDependencyError("--scheduler needs Dask distributed: "
                                     "pip install 'profdiag[dask]'") from None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    address = scheduler if "://" in scheduler else f"tcp://{scheduler}"
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S), None
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(f"cannot reach the Dask scheduler at {address} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'timed out'})"
                             ) from None


def diagnose_on_cluster(paths: list[str], options: dict[str, Any] | None, scheduler: str,
                        jobs: int | None = None) -> list[TraceResult | TraceFailure]:
    """Diagnose every path as a Dask task; results in input order, failures as values."""
    from .multi import TraceFailure

    options = dict(options or {})
    client, cluster = connect(scheduler, jobs)
    try:
        futures = client.map(diagnose_path, list(paths), options=options, pure=False,
                             key=[f"profdiag-{i}-{Path(p).name}" for i, p in enumerate(paths)])
        out: list[TraceResult | TraceFailure] = []
        for p, fut in zip(paths, futures):
            try:
                out.append(fut.result())
            except Exception as exc:  # the worker died or the task could not run there
                first = str(exc).splitlines()[0] if str(exc) else ""
                out.append(TraceFailure(p, f"{p}: task failed on the cluster: "
                                           f"{type(exc).__name__}: {first}", 70))
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

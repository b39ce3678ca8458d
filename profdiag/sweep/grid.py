"""The sweep grid: axes, points, the output folder's manifest and resumption (no torch here)."""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import OutputError, UsageError
from ..io import ensure_output_dir

SWEEP_VERSION = 1
MANIFEST = "sweep.json"


def parse_axis(text: str | None, name: str, minimum: int = 1) -> list[int]:
    """Return the sorted distinct integers of ``"32,128,512"``; UsageError on anything else."""
    if text is None or not str(text).strip():
        return []
    values: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        try:
            v = int(part)
        except ValueError:
            raise UsageError(f"--{name}: {part!r} is not an integer (give e.g. 32,128,512)") \
                from None
        if v < minimum:
            raise UsageError(f"--{name}: values must be >= {minimum}, got {v}")
        values.add(v)
    return sorted(values)


@dataclass(frozen=True)
class Point:
    """One configuration: ``generate`` (a prefill of ``tokens`` then ``new_tokens`` decode
    steps) or ``decode`` (``new_tokens`` steps over a ``context``-long random cache)."""

    kind: str  # "generate" | "decode"
    tokens: int  # prompt tokens per sequence (0 for decode points)
    new_tokens: int
    batch: int  # sequences per forward, or concurrent requests for a server
    context: int = 0  # decode points only

    @property
    def id(self) -> str:
        if self.kind == "decode":
            return f"ctx{self.context}_N{self.new_tokens}_B{self.batch}"
        return f"T{self.tokens}_N{self.new_tokens}_B{self.batch}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}


def grid(tokens: Iterable[int], new_tokens: Iterable[int], batch: Iterable[int],
         context: Iterable[int] = ()) -> list[Point]:
    """Return the points: tokens x new_tokens x batch generate points, then context x
    new_tokens x batch decode points; cheapest first within each kind."""
    toks, news, bats, ctxs = list(tokens), list(new_tokens), list(batch), list(context)
    if not news:
        raise UsageError("--new-tokens needs at least one value")
    if not bats:
        raise UsageError("--batch needs at least one value")
    if not toks and not ctxs:
        raise UsageError("give --tokens (prompt lengths) and/or --context (decode lengths)")
    pts = [Point("generate", t, n, b) for t, n, b in itertools.product(toks, news, bats)]
    pts += [Point("decode", 0, n, b, c) for c, n, b in itertools.product(ctxs, news, bats)]
    return pts


@dataclass
class SweepManifest:
    """``sweep.json``: what the folder holds. ``settings`` must match to resume a sweep."""

    target: str  # "local" | "server"
    settings: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)  # Point.to_dict + status
    sweep_version: int = SWEEP_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"sweep_version": self.sweep_version, "target": self.target,
                "settings": self.settings, "points": self.points}


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` through a temp file in the same folder and a rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".profdiag-sweep-", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", str(path)) from None


def dump(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
                        | orjson.OPT_NON_STR_KEYS) + b"\n"


def read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError("not found", str(path)) from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"not a sweep file: {exc}", str(path)) from None


def run_grid(points: list[Point], done: dict[str, dict[str, Any]], out: Path,
             measure: Callable[[Point], dict[str, Any]],
             on_point: Callable[[Point, dict[str, Any]], None] | None = None
             ) -> list[dict[str, Any]]:
    """Measure every point not in ``done`` (its result kept as it is), timing each and
    writing points/<id>.json as soon as it is measured; return all results in grid order."""
    results: list[dict[str, Any]] = []
    for p in points:
        if p.id in done:
            results.append(done[p.id])
            if on_point:
                on_point(p, {**done[p.id], "_resumed": True})
            continue
        t0 = time.perf_counter()
        res = measure(p)
        res["wall_s"] = round(time.perf_counter() - t0, 3)
        atomic_write(out / "points" / f"{p.id}.json", dump(res))
        results.append(res)
        if on_point:
            on_point(p, res)
    return results


def open_folder(out: Path, target: str, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Create ``out`` or check that the sweep it holds has the same settings; return the
    results already there ({point id: point result}) so that those points are not redone."""
    ensure_output_dir(out)
    mpath = out / MANIFEST
    if not mpath.exists():
        return {}
    old = read_json(mpath)
    if not isinstance(old, dict) or old.get("sweep_version") != SWEEP_VERSION:
        raise UsageError(f"{MANIFEST} is not a version-{SWEEP_VERSION} sweep manifest",
                         str(mpath))
    if old.get("target") != target or old.get("settings") != settings:
        diff = sorted(k for k in set(settings) | set(old.get("settings") or {})
                      if (old.get("settings") or {}).get(k) != settings.get(k))
        raise UsageError(f"holds a sweep with other settings ({', '.join(diff) or 'target'}); "
                         "use another --out to start a new sweep", str(out))
    done: dict[str, dict[str, Any]] = {}
    for p in (out / "points").glob("*.json"):
        try:
            res = orjson.loads(p.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue  # a torn file: the point is redone
        if isinstance(res, dict) and res.get("status") == "ok" and "id" in res:
            done[str(res["id"])] = res
    return done

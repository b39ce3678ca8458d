"""Streaming column extraction for Kineto JSON: bounded memory, no dict per event.

The events array is cut at top-level event boundaries into pieces of about ``CHUNK_BYTES``
(a boundary is a ``}`` , ``{`` pair; a cut is accepted only when the piece decodes as a list
of events, so a ``},{`` inside a string or nested object can never split an event). Each
piece is decoded by msgspec into small Structs holding only the fields the canonical table
needs (unknown keys are skipped in C), and turned into numpy columns with one pass per
column. ``.json.gz`` is inflated incrementally, so the decompressed content is never held
whole. Pieces whose fields have unexpected types fall back to a per-event dict loop that
keeps the original parser's semantics; files whose layout the streamer does not recognise
are reported with ``StreamUnsupported`` so the caller can use the whole-document path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, eq, index, is_not, itemgetter
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import msgspec
import numpy as np
import orjson

from .. import kinds as schema  # the kinds alone: this module imports no pandas
from ..errors import TraceFormatError
from ._io import Input

CHUNK_BYTES = 4 << 20
HEAD_SEARCH_LIMIT = 64 << 20
MISS = -(2**63)  # "no value" in int64 columns (the Int64 mask is built from it)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NULL_RAW = msgspec.Raw(b"null")

# Kineto `cat` values (modern and 2021-era spellings) -> canonical kind.
KIND_BY_CAT: dict[str, str] = {
    "kernel": schema.KIND_KERNEL,
    "Kernel": schema.KIND_KERNEL,
    "gpu_memcpy": schema.KIND_MEMCPY,
    "Memcpy": schema.KIND_MEMCPY,
    "gpu_memset": schema.KIND_MEMSET,
    "Memset": schema.KIND_MEMSET,
    "cuda_runtime": schema.KIND_RUNTIME,
    "cuda_driver": schema.KIND_RUNTIME,
    "Runtime": schema.KIND_RUNTIME,
    "Driver": schema.KIND_RUNTIME,
    "hip_runtime": schema.KIND_RUNTIME,
    "cuda_sync": schema.KIND_SYNC,
    "cpu_op": schema.KIND_CPU_OP,
    "Operator": schema.KIND_CPU_OP,
    "user_annotation": schema.KIND_ANNOTATION,
    "gpu_user_annotation": schema.KIND_GPU_ANNOTATION,
    "python_function": schema.KIND_PYTHON,
}
KIND_CODES = list(schema.ALL_KINDS)
_CODE_BY_CAT = {cat: KIND_CODES.index(kind) for cat, kind in KIND_BY_CAT.items()}
# python_function events are Python frames (kind python), except the model runner's execute_model
# calls, kept as annotations: without step annotations (vLLM V1's default) each is one step.
_PY_STEP_SUFFIX = "): execute_model"
_ANNOTATION_CODE = KIND_CODES.index(schema.KIND_ANNOTATION)
_PYTHON_CODE = KIND_CODES.index(schema.KIND_PYTHON)
GPU_CODES = np.array(sorted(KIND_CODES.index(k) for k in (
    schema.KIND_KERNEL, schema.KIND_MEMCPY, schema.KIND_MEMSET, schema.KIND_GPU_ANNOTATION)),
    dtype=np.int8)
_INT_RE = re.compile(rb"-?\d+")


def _py_step(cat: Any, name: Any) -> bool:
    return cat == "python_function" and isinstance(name, str) and name.endswith(_PY_STEP_SUFFIX)


Num = int | float | str | None


class _Args(msgspec.Struct, frozen=True, gc=False):
    ext: Num = msgspec.field(name="External id", default=MISS)
    ext_lower: Num = msgspec.field(name="external id", default=MISS)
    correlation: Num = MISS
    device: Num = MISS
    device_upper: Num = msgspec.field(name="Device", default=MISS)
    stream: Num = MISS
    bytes: Num = MISS
    grid: msgspec.Raw = _NULL_RAW
    block: msgspec.Raw = _NULL_RAW
    dims: msgspec.Raw = msgspec.field(name="Input Dims", default=_NULL_RAW)
    dims_lower: msgspec.Raw = msgspec.field(name="Input dims", default=_NULL_RAW)
    types: msgspec.Raw = msgspec.field(name="Input type", default=_NULL_RAW)
    concrete: msgspec.Raw = msgspec.field(name="Concrete Inputs", default=_NULL_RAW)
    # NCCL/RCCL collective kernels (torch >= 2.4 records these on the kernel event)
    coll: Num = msgspec.field(name="Collective name", default=MISS)
    in_nelems: Num = msgspec.field(name="In msg nelems", default=MISS)
    out_nelems: Num = msgspec.field(name="Out msg nelems", default=MISS)
    group_size: Num = msgspec.field(name="Group size", default=MISS)
    dtype: Num = MISS
    pg_name: Num = msgspec.field(name="Process Group Name", default=MISS)


_NO_ARGS = _Args()
# Collective fields of a kernel event's args -> the keys of Extractor.collectives rows.
COLLECTIVE_ARGS = (("coll", "Collective name", "collective"), ("in_nelems", "In msg nelems", "in_nelems"),
                   ("out_nelems", "Out msg nelems", "out_nelems"),
                   ("group_size", "Group size", "group_size"), ("dtype", "dtype", "dtype"),
                   ("pg_name", "Process Group Name", "pg_name"))


def collective_row(correlation: Any, get: Callable[[str, str], Any]) -> dict[str, Any]:
    """One collective kernel's args as plain values (ints where the field is a count)."""
    row: dict[str, Any] = {"correlation": to_int(correlation)}
    for attr, key, out in COLLECTIVE_ARGS:
        v = get(attr, key)
        if v is MISS or v is None:
            v = None
        elif out in ("in_nelems", "out_nelems", "group_size"):
            v = to_int(v)
        else:
            v = str(v)
        row[out] = v
    return row


def _struct_getter(args: _Args) -> Callable[[str, str], Any]:
    """collective_row's field getter over decoded args (by attribute)."""
    def get(attr: str, _key: str) -> Any:
        return getattr(args, attr)
    return get


def _dict_getter(args: dict[str, Any]) -> Callable[[str, str], Any]:
    """collective_row's field getter over an args dict (by JSON key)."""
    def get(_attr: str, key: str) -> Any:
        return args.get(key)
    return get


class _Event(msgspec.Struct, frozen=True, gc=False):
    ph: str | None = None
    cat: str | None = None
    name: str | int | float | None = None
    ts: Num = None
    dur: Num = 0
    pid: Num = MISS
    tid: Num = MISS
    # "args": null (or any other non-object) fails validation: that piece takes the
    # per-event path, which reads it as no args
    args: _Args = _NO_ARGS


# The strict twins of _Args and _Event: every id, count and time has the one JSON type
# Kineto writes (ints in int64, past the MISS sentinel, and numbers for ts/dur), so each
# column comes out of the Structs with one np.fromiter and no per-value type check. A piece
# with any other type (a string or float id, a null, a bool) fails validation and is
# decoded again with the loose Structs above, whose conversions are the original parser's.
# pid/tid stay loose: Kineto's own "Trace" span and instant events write strings there.
_I64 = Annotated[int, msgspec.Meta(ge=_INT64_MIN + 1, le=_INT64_MAX)]
_NAN = float("nan")


# _Args' fields, in order and with their JSON keys and defaults, the ids strict (int64)
# (stream and bytes stay loose: ROCm's runtime rows write strings there, "0x0", "9216")
_STRICT_ARG_FIELDS = frozenset({"ext", "ext_lower", "correlation", "device", "device_upper"})
_StrictArgs = msgspec.defstruct(
    "_StrictArgs",
    [(f.name, _I64 if f.name in _STRICT_ARG_FIELDS else f.type,
      msgspec.field(name=f.encode_name, default=f.default))
     for f in msgspec.structs.fields(_Args)],
    module=__name__, frozen=True, gc=False)


_NO_STRICT_ARGS = _StrictArgs()


# The strict decode is also tagged by "ph" (the first key Kineto writes): a complete event
# ("X") is a _StrictEvent, any other phase of the trace event format (flow "s"/"f", metadata,
# instants, counters, ...) an empty Struct whose fields are skipped in C, never built. An
# event with no "ph", or one of no known phase, fails validation: the loose path reads it.
class _StrictEvent(msgspec.Struct, frozen=True, gc=False, tag_field="ph", tag="X"):
    cat: str | None = None
    name: str | int | float | None = None
    ts: float = _NAN  # no ts: an unusable row, as the loose None is
    dur: float = 0.0
    pid: Num = MISS
    tid: Num = MISS
    args: _StrictArgs = _NO_STRICT_ARGS  # type: ignore[valid-type]  # (made by defstruct)


class _Skipped(msgspec.Struct, frozen=True, gc=False, tag_field="ph"):
    """An event of a phase other than "X": dropped, as the loose path drops it."""

    cat: ClassVar[None] = None  # no category: add_structs keeps no such row


# every other phase of the trace event format (Chrome's "Trace Event Format" document)
OTHER_PHASES = ("B", "E", "i", "I", "C", "b", "n", "e", "S", "T", "p", "F", "s", "t", "f",
                "P", "O", "N", "D", "M", "V", "v", "R", "c", "(", ")")
_SKIPPED = tuple(msgspec.defstruct(f"_Skipped{i}", [], bases=(_Skipped,), tag=ph)
                 for i, ph in enumerate(OTHER_PHASES))

# The categories Kineto writes on complete events (libkineto's activity types, the 2021-era
# spellings and ROCm's): decoded as a Literal, each is the one shared str object, not a new
# string per event. A piece with a category outside this list is decoded again with cat as
# any string, and so is every later piece of that file (Extractor.known_cats).
KNOWN_CATS = tuple(sorted({*KIND_BY_CAT, "overhead", "Trace", "cpu_instant_event",
                           "cuda_profiler_range", "external_correlation", "collective_comm",
                           "fwdbwd", "ac2g", "glow_runtime", "mtia_runtime", "mtia_ccp_events",
                           "mtia_insight", "hpu_op", "xpu_runtime", "xpu_driver",
                           "privateuse1_runtime", "privateuse1_driver"}))


class _StrictKnownEvent(_StrictEvent, frozen=True, gc=False, tag="X"):
    cat: Literal[KNOWN_CATS] | None = None  # type: ignore[valid-type]


_decode_events = msgspec.json.Decoder(list[_Event]).decode
_STRICT_TYPES = (_StrictEvent, *_SKIPPED)
_KNOWN_TYPES = (_StrictKnownEvent, *_SKIPPED)
_decode_strict = msgspec.json.Decoder(
    list[Union[_STRICT_TYPES]]).decode  # type: ignore[valid-type]  # noqa: UP007
_decode_known = msgspec.json.Decoder(
    list[Union[_KNOWN_TYPES]]).decode  # type: ignore[valid-type]  # noqa: UP007
_decode_any = msgspec.json.Decoder().decode


class StreamUnsupported(Exception):
    """The content is not laid out as the streamer expects; use the whole-document path."""


# ---------------------------------------------------------------------------------------
# value conversion (same semantics as the original per-event parser)

def to_int(value: Any) -> int | None:
    """Kineto ids and pids are ints, but 2021 files and ROCm write strings ("stream 7")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 9.2e18 else None
    if isinstance(value, str):
        m = _INT_RE.search(value.encode("utf-8", "surrogatepass"))
        if m:
            v = int(m.group())
            return v if _INT64_MIN <= v <= _INT64_MAX else None
    return None


def to_ns(value: Any) -> int | None:
    """µs (int, float or string) -> integer ns, None when unusable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            f = float(value)
        except OverflowError:
            return None
    elif isinstance(value, str):
        try:
            f = float(value)
        except ValueError:
            return None
    else:
        return None
    if f != f or abs(f) > 9.2e15:  # NaN, inf or past int64 ns
        return None
    return round(f * 1000.0)


def dims3(value: Any) -> str | None:
    if isinstance(value, list) and value:
        return ",".join(str(v) for v in value)
    return None


def json_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # ints past 64 bits
        import json

        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _concrete_text(value: Any) -> str | None:
    """Concrete Inputs as JSON when any argument has a value (most ops record only '')."""
    if not isinstance(value, list) or not any(v not in ("", None) for v in value):
        return None
    return json_text(value)


# ---------------------------------------------------------------------------------------
# column batches

class Strings:
    """One string column as int32 codes into ``values`` (-1: <NA>), built per distinct value.

    ``by_raw`` maps a field's raw JSON bytes to its code, so each distinct raw value is
    decoded and compacted once; ``by_value`` maps a Python value (the per-event path's) to
    its code. Equal values under different codes are harmless: only values are compared.
    """

    __slots__ = ("values", "by_raw", "by_value", "parts")

    def __init__(self) -> None:
        self.values: list[str] = []
        self.by_raw: dict[bytes, int] = {b"null": -1}
        self.by_value: dict[Any, int] = {}
        self.parts: list[np.ndarray] = []

    def code_of(self, value: Any) -> int:
        """Code of a text value (None: -1)."""
        if value is None:
            return -1
        code = self.by_value.get(value)
        if code is None:
            code = self.by_value[value] = len(self.values)
            self.values.append(value)
        return code

    def code_of_raw(self, b: bytes, fn: Callable[[Any], Any]) -> int:
        """Code of fn(the JSON value b), decoded the first time b is seen."""
        code = self.by_raw.get(b)
        if code is None:
            try:
                v = fn(orjson.loads(b))
            except orjson.JSONDecodeError:
                try:
                    v = fn(_decode_any(b))
                except (msgspec.DecodeError, RecursionError):
                    v = None  # nested past any decoder's depth limit: unusable
            code = self.by_raw[b] = self.code_of(v)
        return code

    def concat(self) -> np.ndarray:
        out = np.concatenate(self.parts) if self.parts else np.empty(0, np.int32)
        self.parts = []
        return out


class RawCombos:
    """The codes of several string columns at once, per distinct combination of their raw
    JSON values: one joined key and one lookup per row instead of a join, a split and a
    lookup per column. The key joins the raw values with NUL, which no decoded Raw can
    hold (msgspec rejects unescaped control characters), so a key is one combination.
    Each column's value is still decoded once per distinct raw value, by its Strings."""

    __slots__ = ("tables", "fns", "by_key", "lists", "arrays")

    def __init__(self, tables: list[Strings], fns: list[Callable[[Any], Any]]) -> None:
        self.tables = tables
        self.fns = fns
        self.by_key: dict[bytes, int] = {}
        self.lists: list[list[int]] = [[] for _ in tables]  # column -> code of each combination
        self.arrays: list[np.ndarray] = []

    def raw_codes(self, columns: list[list[msgspec.Raw]]) -> list[np.ndarray]:
        """Per column, the codes of the rows' raw values (``columns``: one list per table)."""
        keys = list(map(_NUL.join, zip(*columns)))
        n = len(keys)
        by_key = self.by_key
        combo = np.fromiter(map(by_key.get, keys, repeat(-1)), np.int32, n)
        new = np.flatnonzero(combo < 0).tolist()
        if new:
            # one row of each new combination (the last: dict keeps a key's last value)
            for key, row in dict(zip(map(keys.__getitem__, new), new)).items():
                by_key[key] = len(self.lists[0])
                for col, table, fn, codes in zip(columns, self.tables, self.fns, self.lists):
                    codes.append(table.code_of_raw(bytes(col[row]), fn))
            self.arrays = [np.array(codes, np.int32) for codes in self.lists]
            combo = np.fromiter(map(by_key.__getitem__, keys), np.int32, n)
        return [codes[combo] for codes in self.arrays]


_NUL = b"\x00"
TEXT_COLUMNS = ("input_dims", "input_types", "input_concrete", "grid", "block")


@dataclass
class Columns:
    """Canonical columns in flat form: int64 arrays use MISS for <NA>; strings as codes."""

    name: Strings = field(default_factory=Strings)
    kind: list[np.ndarray] = field(default_factory=list)
    start: list[np.ndarray] = field(default_factory=list)
    dur: list[np.ndarray] = field(default_factory=list)
    ints: dict[str, list[np.ndarray]] = field(default_factory=lambda: {
        k: [] for k in ("device", "stream", "pid", "tid", "correlation", "external_id", "bytes")})
    text: dict[str, Strings] = field(default_factory=lambda: {k: Strings() for k in TEXT_COLUMNS})
    rows: int = 0
    bad: int = 0
    negative: int = 0
    events: int = 0

    def __len__(self) -> int:
        return self.rows


def _int_array(values: list[Any]) -> np.ndarray:
    """Python values -> int64 with MISS for missing/unusable, exact like to_int()."""
    if not values:
        return np.empty(0, np.int64)
    try:
        arr = np.array(values)
        if arr.dtype == np.int64:
            return arr
    except (OverflowError, ValueError, TypeError):
        pass
    out = [MISS if v is MISS else to_int(v) for v in values]
    return np.array([MISS if v is None else v for v in out], dtype=np.int64)


def _first_present(*arrays: np.ndarray) -> np.ndarray:
    out = arrays[-1]
    for arr in reversed(arrays[:-1]):
        out = np.where(arr != MISS, arr, out)
    return out


def _first_present_int(*columns: list[Any]) -> np.ndarray:
    """Element-wise first value that is not MISS (a present null stops the search), int64."""
    try:
        arrays = [np.array(col) for col in columns]
        if all(a.dtype == np.int64 for a in arrays):
            return _first_present(*arrays)
    except (OverflowError, ValueError, TypeError):
        pass
    out = list(columns[-1])
    for col in reversed(columns[:-1]):
        out = [a if a is not MISS else b for a, b in zip(col, out)]
    return _int_array(out)


def _ns_of(us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 µs -> (int64 ns, ok mask)."""
    ok = np.abs(us) <= 9.2e15  # False for NaN and inf too
    return np.rint(np.where(ok, us, 0.0) * 1000.0).astype(np.int64), ok


def _floats(seq: list[Any], attr: str) -> np.ndarray:
    """One float field of strict Structs as float64."""
    return np.fromiter(map(attrgetter(attr), seq), np.float64, len(seq))


def _i64s(seq: list[Any], attr: str) -> np.ndarray:
    """One int field of strict Structs (int64 by validation, MISS when absent) as int64."""
    return np.fromiter(map(attrgetter(attr), seq), np.int64, len(seq))


def _index_i64s(seq: list[Any], attr: str) -> np.ndarray | None:
    """One loose (``Num``) field of Structs as int64 when every value is an int in int64
    (MISS included), in one pass; None when one is a str, a float, None or a larger int
    (``operator.index`` refuses all but ints, which np.fromiter alone would convert)."""
    try:
        return np.fromiter(map(index, map(attrgetter(attr), seq)), np.int64, len(seq))
    except (TypeError, OverflowError):
        return None


def _ns_array(values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """µs values -> (int64 ns, ok mask)."""
    try:
        arr = np.array(values)
        if arr.dtype.kind in "if":
            return _ns_of(arr.astype(np.float64))
    except (OverflowError, ValueError, TypeError):
        pass
    conv = [to_ns(v) for v in values]
    ok = np.array([v is not None for v in conv], dtype=bool)
    return np.array([0 if v is None else v for v in conv], dtype=np.int64), ok


def _name_codes(table: Strings, names: list[Any]) -> np.ndarray:
    """Event names -> codes; a non-string name is kept as str(name) (first spelling wins,
    as dict keys: 1, 1.0 and True are one name)."""
    by_value = table.by_value
    values = table.values
    codes = np.fromiter(map(by_value.get, names, repeat(-2)), np.int32, len(names))
    if not (codes == -2).any():  # no new name in this piece (the usual case)
        return codes
    for nm in dict.fromkeys(names):  # the distinct names, first seen first
        if nm not in by_value:
            by_value[nm] = len(values)
            values.append(nm if isinstance(nm, str) else str(nm))
    return np.fromiter(map(by_value.__getitem__, names), np.int32, len(names))


def _take(seq: list[Any], idx: np.ndarray) -> list[Any]:
    """seq[i] for i in idx, without a Python loop."""
    if len(idx) == len(seq):
        return seq
    if len(idx) == 1:
        return [seq[int(idx[0])]]
    if not len(idx):
        return []
    return list(itemgetter(*idx.tolist())(seq))


def _unless_all(values: list[Any], missing: Any) -> list[Any] | None:
    """values, or None when every one is ``missing`` (a field no event of the piece wrote:
    the Structs share the default object, so the count is one C-level identity pass)."""
    return None if values.count(missing) == len(values) else values


def _int_array_or_none(values: list[Any]) -> np.ndarray | None:
    """values as int64 when every one is an int that fits, else None."""
    try:
        arr = np.array(values)
    except (OverflowError, ValueError, TypeError):
        return None
    return arr if arr.dtype == np.int64 and len(arr) == len(values) else None


def _first_present_cols(n: int, *columns: list[Any] | None) -> np.ndarray:
    """_first_present_int over the columns that are not None (None: MISS on every row)."""
    cols = [c for c in columns if c is not None]
    if not cols:
        return np.full(n, MISS, np.int64)
    if len(cols) == 1:
        return _int_array(cols[0])
    return _first_present_int(*cols)


def _loose_device(g_args: list[_Args], gpu_idx: np.ndarray, g_sel: list[Any],
                  pid_arr: np.ndarray | None) -> np.ndarray:
    """The GPU rows' device from loose args: device, else Device, else the event's pid
    (``g_sel``: the GPU rows' events; ``pid_arr``: every row's pid when all are ints)."""
    dev_raw = list(map(attrgetter("device"), g_args))
    dev_upper = _unless_all(list(map(attrgetter("device_upper"), g_args)), MISS)
    dev_arr = _int_array_or_none(dev_raw) if dev_upper is None else None
    if dev_arr is not None and pid_arr is not None:
        return _first_present(dev_arr, pid_arr[gpu_idx])
    return _first_present_cols(len(g_args), dev_raw, dev_upper,
                               list(map(attrgetter("pid"), g_sel)))


class Extractor:
    """Turns decoded pieces into Columns; keeps the string tables shared across pieces."""

    def __init__(self) -> None:
        self.cols = Columns()
        text = self.cols.text
        # an op's Input Dims, Input type and Concrete Inputs; a kernel's grid and block
        self.op_inputs = RawCombos(
            [text["input_dims"], text["input_types"], text["input_concrete"]],
            [json_text, json_text, _concrete_text])
        self.launch_dims = RawCombos([text["grid"], text["block"]], [dims3, dims3])
        # one row per collective kernel that carries NCCL args (few per trace)
        self.collectives: list[dict[str, Any]] = []
        # True until a piece holds a category outside KNOWN_CATS (then cat is any string)
        self.known_cats = True

    # fast path: typed Structs
    def add_structs(self, events: list[Any], strict: bool = False) -> None:
        """Columns of decoded Structs: _StrictEvent ones (``strict``: every numeric field
        has its one type, read by np.fromiter) or loose _Event ones (converted per column
        with the original parser's semantics)."""
        code_by_cat = _CODE_BY_CAT
        suffix = _PY_STEP_SUFFIX  # inlined _py_step: this runs once per event
        n_all = len(events)
        self.cols.events += n_all
        # complete events ("ph": "X") of a known category (python_function included: kept as
        # Python frames, which the idle attribution reads, except the model runner's
        # execute_model calls, which are step annotations)
        kind_all = np.fromiter(map(code_by_cat.get, map(attrgetter("cat"), events), repeat(-1)),
                               np.int8, n_all)
        if strict:  # only "X" events are _StrictEvents; the others have no category
            keep_idx = np.flatnonzero(kind_all >= 0)
        else:
            is_x = np.fromiter(map(eq, map(attrgetter("ph"), events), repeat("X")), bool, n_all)
            keep_idx = np.flatnonzero(is_x & (kind_all >= 0))
        if not len(keep_idx):
            return
        sel = _take(events, keep_idx)
        kind = kind_all[keep_idx]
        if _PYTHON_CODE in kind:
            for i in np.flatnonzero(kind == _PYTHON_CODE).tolist():
                e = sel[i]
                if type(e.name) is str and e.name.endswith(suffix):
                    kind[i] = _ANNOTATION_CODE
        if strict:
            start, ok_start = _ns_of(_floats(sel, "ts"))
            dur, ok_dur = _ns_of(_floats(sel, "dur"))
        else:
            start, ok_start = _ns_array(list(map(attrgetter("ts"), sel)))
            dur, ok_dur = _ns_array(list(map(attrgetter("dur"), sel)))
        ok = ok_start & ok_dur
        if not ok.all():
            keep = np.flatnonzero(ok)
            self.cols.bad += int(len(sel) - len(keep))
            sel = _take(sel, keep)
            kind, start, dur = kind[keep], start[keep], dur[keep]
            if not sel:
                return
        neg = dur < 0
        if neg.any():
            self.cols.negative += int(neg.sum())
            dur = np.where(neg, 0, dur)
        args = list(map(attrgetter("args"), sel))
        gpu = np.isin(kind, GPU_CODES)
        host = ~gpu

        def ints(getter: str, seq: list[Any]) -> list[Any]:
            return list(map(attrgetter(getter), seq))

        c = self.cols
        name_codes = _name_codes(c.name, list(map(attrgetter("name"), sel)))
        n = len(sel)
        # pid/tid are loose in both Structs (Kineto's span events write strings there)
        pid_arr = _index_i64s(sel, "pid")
        tid_arr = _index_i64s(sel, "tid")
        pid = pid_arr if pid_arr is not None else _int_array(ints("pid", sel))
        tid = tid_arr if tid_arr is not None else _int_array(ints("tid", sel))
        # loose: arg keys most traces never write (2021-era spellings, copy sizes) get no
        # further pass in a piece where no event has them; strict: one np.fromiter each
        if strict:
            ext = _first_present(_i64s(args, "ext"), _i64s(args, "ext_lower"))
            corr = _i64s(args, "correlation")
        else:
            ext = _first_present_cols(n, ints("ext", args),
                                      _unless_all(ints("ext_lower", args), MISS))
            corr = _int_array(ints("correlation", args))
        miss = np.int64(MISS)
        gpu_idx = np.flatnonzero(gpu)
        host_idx = np.flatnonzero(host)
        # device, stream and bytes are kept on GPU rows only: read them there only
        device = np.full(n, MISS, np.int64)
        stream = np.full(n, MISS, np.int64)
        nbytes = np.full(n, MISS, np.int64)
        text = c.text
        codes = {k: np.full(n, -1, np.int32) for k in TEXT_COLUMNS}
        if len(gpu_idx):
            g_args = _take(args, gpu_idx)
            if strict:
                device[gpu_idx] = _first_present(_i64s(g_args, "device"),
                                                 _i64s(g_args, "device_upper"), pid[gpu_idx])
            else:
                device[gpu_idx] = _loose_device(g_args, gpu_idx, _take(sel, gpu_idx), pid_arr)
            st_arr = _index_i64s(g_args, "stream")
            if st_arr is not None and tid_arr is not None:
                stream[gpu_idx] = _first_present(st_arr, tid_arr[gpu_idx])
            else:
                stream[gpu_idx] = _first_present_int(ints("stream", g_args),
                                                     ints("tid", _take(sel, gpu_idx)))
            nb_arr = _index_i64s(g_args, "bytes")  # all MISS: nbytes as it is
            if nb_arr is not None:
                nbytes[gpu_idx] = nb_arr
            else:
                nbytes[gpu_idx] = _int_array(ints("bytes", g_args))
            codes["grid"][gpu_idx], codes["block"][gpu_idx] = self.launch_dims.raw_codes(
                [ints("grid", g_args), ints("block", g_args)])
            colls = ints("coll", g_args)
            if any(map(is_not, colls, repeat(MISS))):  # a collective kernel in this piece
                for a, coll in zip(g_args, colls):
                    if coll is not MISS:
                        self.collectives.append(collective_row(a.correlation, _struct_getter(a)))
        c.rows += n
        c.name.parts.append(name_codes)
        c.kind.append(kind)
        c.start.append(start)
        c.dur.append(dur)
        c.ints["external_id"].append(ext)
        c.ints["correlation"].append(corr)
        c.ints["device"].append(device)
        c.ints["stream"].append(stream)
        c.ints["bytes"].append(nbytes)
        c.ints["pid"].append(np.where(host, pid, miss))
        c.ints["tid"].append(np.where(host, tid, miss))
        if len(host_idx):
            h_args = _take(args, host_idx)
            merged = ints("dims", h_args)
            lower = _unless_all(ints("dims_lower", h_args), _NULL_RAW)
            if lower is not None:
                merged = [u if u is not _NULL_RAW else lo for u, lo in zip(merged, lower)]
            (codes["input_dims"][host_idx], codes["input_types"][host_idx],
             codes["input_concrete"][host_idx]) = self.op_inputs.raw_codes(
                [merged, ints("types", h_args), ints("concrete", h_args)])
        for col in TEXT_COLUMNS:
            text[col].parts.append(codes[col])

    # slow path: plain Python objects (the original parser's loop)
    def add_objects(self, events: list[Any]) -> None:
        c = self.cols
        c.events += len(events)
        rows: dict[str, list[Any]] = {k: [] for k in (
            "kind", "start", "dur", "device", "stream", "pid", "tid", "correlation",
            "external_id", "bytes")}
        text: dict[str, list[int]] = {k: [] for k in TEXT_COLUMNS}
        names: list[Any] = []
        for ev in events:
            if not isinstance(ev, dict) or ev.get("ph") != "X":
                continue
            cat = ev.get("cat")
            code = _CODE_BY_CAT.get(cat) if isinstance(cat, str) else None
            if _py_step(cat, ev.get("name")):
                code = _ANNOTATION_CODE
            elif code is None:
                continue
            start = to_ns(ev.get("ts"))
            dur = to_ns(ev.get("dur", 0))
            if start is None or dur is None:
                c.bad += 1
                continue
            if dur < 0:
                c.negative += 1
                dur = 0
            args = ev.get("args")
            if not isinstance(args, dict):
                args = {}
            name = ev.get("name")
            name = name if isinstance(name, str) else str(name)
            names.append(name)
            rows["kind"].append(code)
            rows["start"].append(start)
            rows["dur"].append(dur)
            rows["external_id"].append(to_int(args.get("External id", args.get("external id"))))
            rows["correlation"].append(to_int(args.get("correlation")))
            if KIND_CODES[code] in (schema.KIND_KERNEL, schema.KIND_MEMCPY, schema.KIND_MEMSET,
                                    schema.KIND_GPU_ANNOTATION):
                rows["device"].append(to_int(args.get("device", args.get("Device", ev.get("pid")))))
                rows["stream"].append(to_int(args.get("stream", ev.get("tid"))))
                rows["pid"].append(None)
                rows["tid"].append(None)
                rows["bytes"].append(to_int(args.get("bytes")))
                if "Collective name" in args:
                    self.collectives.append(collective_row(args.get("correlation"),
                                                           _dict_getter(args)))
                text["grid"].append(c.text["grid"].code_of(dims3(args.get("grid"))))
                text["block"].append(c.text["block"].code_of(dims3(args.get("block"))))
                text["input_dims"].append(-1)
                text["input_types"].append(-1)
                text["input_concrete"].append(-1)
            else:
                rows["device"].append(None)
                rows["stream"].append(None)
                rows["pid"].append(to_int(ev.get("pid")))
                rows["tid"].append(to_int(ev.get("tid")))
                rows["bytes"].append(None)
                text["grid"].append(-1)
                text["block"].append(-1)
                text["input_dims"].append(c.text["input_dims"].code_of(
                    json_text(args.get("Input Dims", args.get("Input dims")))))
                text["input_types"].append(c.text["input_types"].code_of(
                    json_text(args.get("Input type"))))
                text["input_concrete"].append(c.text["input_concrete"].code_of(
                    _concrete_text(args.get("Concrete Inputs"))))
        c.rows += len(names)
        c.name.parts.append(_name_codes(c.name, names))
        for key, codes in text.items():
            c.text[key].parts.append(np.array(codes, dtype=np.int32))
        c.kind.append(np.array(rows.pop("kind"), dtype=np.int8))
        c.start.append(np.array(rows.pop("start"), dtype=np.int64))
        c.dur.append(np.array(rows.pop("dur"), dtype=np.int64))
        for key, values in rows.items():
            c.ints[key].append(np.array([MISS if v is None else v for v in values],
                                        dtype=np.int64))

    def _decode_strict(self, piece: bytes | memoryview) -> list[Any]:
        """The strict Structs of a piece: categories as KNOWN_CATS' shared strings while
        every piece so far had only those; once one did not (the strict decode with cat as
        any string takes it), every later piece is decoded with cat as any string. Raises
        ValidationError when the strict types do not fit."""
        if self.known_cats:
            try:
                return _decode_known(piece)
            except msgspec.ValidationError:
                events = _decode_strict(piece)  # may raise: another field's type
                self.known_cats = False
                return events
        return _decode_strict(piece)

    def add_piece(self, piece: bytes | memoryview, warnings: list[str]) -> None:
        """Decode one '[...]' piece of events; raise msgspec.DecodeError on bad JSON."""
        try:
            try:
                events = self._decode_strict(piece)
            except UnicodeDecodeError:
                fixed = bytes(piece).decode("utf-8", errors="replace").encode("utf-8")
                note = "invalid UTF-8 in the trace was replaced"
                if note not in warnings:
                    warnings.append(note)
                piece = fixed
                events = self._decode_strict(piece)
            self.add_structs(events, strict=True)
            return
        except msgspec.ValidationError:
            pass  # some id or time of another type: the loose Structs, then per event
        except RecursionError:
            raise msgspec.DecodeError("JSON nested too deeply") from None
        try:
            self.add_structs(_decode_events(piece))
        except msgspec.ValidationError:
            # unexpected field types somewhere in this piece: per-event slow path
            try:
                doc = orjson.loads(piece)
            except orjson.JSONDecodeError:
                try:
                    doc = _decode_any(piece)
                except RecursionError:
                    raise msgspec.DecodeError("JSON nested too deeply") from None
            self.add_objects(doc)
        except RecursionError:
            raise msgspec.DecodeError("JSON nested too deeply") from None


# ---------------------------------------------------------------------------------------
# decompressed byte blocks
# (plain and gzipped files are read, and inflated once, by the run's _io.Input)


# ---------------------------------------------------------------------------------------
# the streamer

_BOUNDARY = re.compile(rb"\}\s*,\s*\{")
_ARRAY_END = re.compile(rb"\}\s*\]")
_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')
_WS = b" \t\r\n"
_NON_WS = re.compile(rb"[^ \t\r\n]")


@dataclass
class StreamResult:
    extractor: Extractor
    top: dict[str, Any]
    warnings: list[str]
    salvaged: bool


def _last_boundaries(buf: bytearray, lo: int, limit: int = 4) -> list[re.Match[bytes]]:
    """Up to ``limit`` last '},{' matches in buf[lo:], newest first."""
    window = 1 << 16
    hi = len(buf)
    while True:
        start = max(lo, hi - window)
        found = list(_BOUNDARY.finditer(buf, start, hi))
        if found or start == lo:
            if len(found) >= limit or start == lo:
                return found[::-1][:limit]
        window *= 4


def stream(path: Path | Input, progress: Callable[[int], None] | None = None) -> StreamResult:
    """Parse the events of a Kineto JSON file piece by piece."""
    warnings: list[str] = []
    with Input.using(path) as src:
        blocks = src.blocks(warnings, progress, CHUNK_BYTES)
        return _stream_blocks(blocks, src.path, warnings)


def _stream_blocks(blocks: Iterator[bytes | memoryview], path: Path, warnings: list[str]) -> StreamResult:
    buf = bytearray()
    eof = False

    def fill() -> bool:
        nonlocal eof
        block = next(blocks, None)
        if block is None:
            eof = True
            return False
        buf.extend(block)
        return True

    # 1. the head: find where the events array opens
    while not eof and not buf.strip(_WS):
        buf.clear()  # only whitespace so far: drop it (memory stays bounded)
        fill()
        if buf[:3] == b"\xef\xbb\xbf":
            del buf[:3]  # a UTF-8 byte order mark before the JSON
    stripped = buf.lstrip(_WS)
    if not stripped:
        raise TraceFormatError("empty file", str(path))
    first = stripped[:1]
    top: dict[str, Any] = {}
    if first == b"[":
        pos = len(buf) - len(stripped) + 1
        is_array = True
    elif first == b"{":
        is_array = False
        search = 0
        while True:
            m = _EVENTS_KEY.search(buf, search)
            if m is not None:
                try:
                    head = _decode_any(bytes(buf[: m.end()]) + b"]}")
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    head = None
                if isinstance(head, dict) and head.get("traceEvents") == []:
                    del head["traceEvents"]
                    top = head
                    pos = m.end()
                    break
                search = m.start() + 1
                continue
            if eof or len(buf) > HEAD_SEARCH_LIMIT:
                raise StreamUnsupported("no top-level traceEvents array found")
            search = max(0, len(buf) - 64)
            fill()
    else:
        raise StreamUnsupported("not a JSON object or array")

    ex = Extractor()
    # where the search for a '},{' may start: past text already searched without one, so a
    # huge event (or a whitespace bomb) is scanned once, not once per block
    scan_from = pos
    # 2. whole pieces: buf[pos-1] is the '[' or ',' before the piece's first event
    while True:
        while not eof and len(buf) - pos < CHUNK_BYTES:
            fill()
            if scan_from == pos and _NON_WS.search(buf, pos) is None:
                del buf[pos:]  # whitespace between events: drop it
        if eof:
            break
        cut = None
        for m in _last_boundaries(buf, max(pos, scan_from)):
            end = m.start() + 1  # one past the '}'
            saved = buf[pos - 1], buf[end]
            buf[pos - 1], buf[end] = 0x5B, 0x5D  # '[' ... ']'
            try:
                with memoryview(buf) as mv:
                    ex.add_piece(mv[pos - 1: end + 1], warnings)
                cut = m
            except msgspec.DecodeError:
                pass
            finally:
                buf[pos - 1], buf[end] = saved
            if cut is not None:
                break
        if cut is None:
            if not _last_boundaries(buf, max(pos, scan_from), 1):
                scan_from = max(pos, len(buf) - 64)
                fill()  # one huge event: read on
                continue
            # invalid JSON mid-file (NaN, unescaped quotes, corruption): whole-document path
            raise StreamUnsupported(f"undecodable piece after event {ex.cols.events}")
        comma = buf.index(b",", cut.start())
        del buf[:comma]
        pos = scan_from = 1

    # 3. the rest: last events, the array's end and the top-level keys after it
    rest = bytes(buf[pos:])
    # free the buffer (fill() closes over it, so clear it rather than `del` the name)
    buf.clear()
    salvaged = _finish(rest, ex, top, is_array, warnings)
    return StreamResult(ex, top, warnings, salvaged)


def _try_piece(ex: Extractor, body: bytes, warnings: list[str]) -> bool:
    try:
        ex.add_piece(b"[" + body + b"]", warnings)
        return True
    except msgspec.DecodeError:
        return False


def _finish(rest: bytes, ex: Extractor, top: dict[str, Any], is_array: bool,
            warnings: list[str]) -> bool:
    """Decode the final piece; return True when the file had to be salvaged."""
    candidates: list[int] = []
    if rest.lstrip(_WS)[:1] == b"]":
        candidates.append(-1)  # no event left before the array's end
    candidates += [m.start() for m in _ARRAY_END.finditer(rest)][:50]
    for c in candidates:
        bracket = rest.index(b"]", c + 1) if c >= 0 else rest.index(b"]")
        body = rest[: c + 1] if c >= 0 else b""
        tail = rest[bracket + 1:]
        if is_array:
            tail_ok = not tail.strip(_WS)
            tail_doc: Any = {}
        else:
            try:
                tail_doc = _decode_any(b'{"_":0' + tail)
                tail_ok = isinstance(tail_doc, dict)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                tail_ok = False
        if c >= 0 and not _try_piece(ex, body, warnings):
            continue
        if tail_ok:
            tail_doc.pop("_", None)
            top.update(tail_doc)
            return False
        warnings.append("trace is truncated after its events; salvaged the events")
        return True
    # no array end: a truncated file (killed profiler). Keep the complete events.
    stripped = rest.rstrip(_WS + b",")
    cuts: list[int] = []
    if stripped.endswith(b"}"):
        cuts.append(len(stripped))
    cuts += [m.start() + 1 for m in _BOUNDARY.finditer(rest)][::-1][:20]
    for end in cuts:
        if _try_piece(ex, rest[:end], warnings):
            break
    else:
        raise StreamUnsupported("truncated file with no complete event in its last piece")
    warnings.append("trace is truncated (profiler killed?); salvaged the events before the cut")
    return True

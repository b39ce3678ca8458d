"""The JSON report as typed, frozen msgspec Structs, its one decoder and its JSON Schema.

``Diagnosis.to_dict()`` (docs/json-schema.md) is the contract; this module types it so every
reader of a report (gate, compare, history, the index site, the multi-rank summary) goes
through one decoder and reads typed attributes instead of re-parsing the dict:

- ``load(obj)`` is that decoder: a path to a JSON report, a report dict (also a partial or an
  older one: a section or key it lacks takes its default, None for a figure, empty for a
  list or table), a ``Diagnosis`` or an already decoded ``Report``. Keys this version does
  not know are ignored (fields are added within a ``schema_version``), a value of the wrong
  type is a ``TraceFormatError`` naming the file and the JSON path (``$.steps[3].wall_ns``).
- ``decode(data)`` validates a report as this version writes it: every key ``to_dict`` always
  writes must be there and no unknown top-level key may be.
- ``json_schema()`` is what ``profdiag schema`` prints (and docs/json-schema.md checks).

Defaults mirror what the readers did with ``data.get(key)``: None where a figure may be
absent, so "unknown" stays distinguishable from 0. Nested sections are open (an added key
decodes and is dropped), the top level is closed in ``decode``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from .diagnosis.model import SCHEMA_VERSION
from .errors import TraceFormatError

JSONObject: TypeAlias = dict[str, Any]
Number: TypeAlias = int | float  # exactly as written: an int stays an int


class _Section(msgspec.Struct, frozen=True, kw_only=True):
    """A report section: frozen, keyword-only, open to keys added within a schema version."""


def _obj() -> Any:
    return msgspec.field(default_factory=dict)


def _list() -> Any:
    return msgspec.field(default_factory=list)


# ------------------------------------------------------------------ verdicts and accounting

class Mode(_Section, frozen=True):
    value: str = "unknown"  # prefill | decode | mixed | unknown
    confidence: float | None = None
    evidence: list[str] = _list()


class Bottleneck(_Section, frozen=True):
    value: str = "unknown"  # compute | memory | overhead | unknown
    evidence: list[str] = _list()


class Breakdown(_Section, frozen=True):
    window_ns: int | None = None
    busy_ns: int | None = None
    idle_ns: int | None = None
    busy_share: float | None = None
    kernel_sum_ns: int | None = None
    category_ns: dict[str, int] = _obj()
    class_ns: dict[str, int] = _obj()
    class_category: dict[str, str] = _obj()


class Check(_Section, frozen=True):
    id: str
    status: str  # pass | warn | fail | skip
    summary: str = ""
    evidence: JSONObject = _obj()


class Hotspot(_Section, frozen=True):
    name: str
    # "class" is a Python keyword: the field is class_ in Python, "class" in JSON
    class_: str = msgspec.field(default="", name="class")
    category: str = ""
    calls: int = 0
    total_ns: int = 0
    mean_ns: int = 0
    share: float = 0.0
    note: str = ""


class Recommendation(_Section, frozen=True):
    id: str
    title: str = ""
    evidence: str = ""
    advice: str = ""
    kernels: list[str] = _list()
    bottleneck: str = ""


class Phase(_Section, frozen=True):
    name: str
    mode: Mode = msgspec.field(default_factory=Mode)
    steps: int = 0
    median_step_ns: int | None = None
    categories: dict[str, float] = _obj()
    breakdown: Breakdown = msgspec.field(default_factory=Breakdown)
    bottleneck: Bottleneck = msgspec.field(default_factory=Bottleneck)
    overhead_share: float | None = None


# ---------------------------------------------------------------------------- the sections

class Source(_Section, frozen=True):
    format: str | None = None  # torch | nsys | rocprof
    path: str | None = None
    device: str | None = None
    device_index: int | None = None
    options: JSONObject = _obj()
    salvaged: bool | None = None


class Overhead(_Section, frozen=True):
    overhead_share: float | None = None
    scope: str | None = None
    limit: float | None = None
    pathological: float | None = None
    launch_calls: int | None = None
    launch_calls_per_step: Number | None = None
    launch_api_mean_ns: Number | None = None
    graph_launches: int | None = None
    sync_calls: int | None = None
    sync_ns: Number | None = None
    alloc_calls: int | None = None
    alloc_ns: Number | None = None
    kernels: int | None = None
    kernels_per_step: Number | None = None
    mean_kernel_ns: Number | None = None
    short_kernel_share: float | None = None
    short_kernel_ns: Number | None = None
    graph_replayed_share: float | None = None


class ShapeGroup(_Section, frozen=True):
    """A row of ``kernel_counts.by_shape`` or ``kernel_counts.extra``."""

    signature: str | None = None
    kernel: str | None = "?"
    calls: int | None = None
    calls_per_forward: Number | None = None
    total_ns: Number | None = None
    role: str | None = None
    phase: str | None = None
    expected_per_forward: Number | None = None
    reason: str | None = None  # extra rows: why they are suspect


class LayerTime(_Section, frozen=True):
    layer: int
    gpu_ns: Number | None = None
    gemm_calls: int | None = None


class PhaseCounts(_Section, frozen=True):
    forwards: int | None = None
    observed_gemm_calls: int | None = None
    expected_gemm_calls: int | None = None
    gemm_calls_per_forward: Number | None = None
    layers: int | None = None


class KernelCounts(_Section, frozen=True):
    observed_gemm_calls: int | None = None
    expected_gemm_calls: int | None = None
    layers: int | None = None
    layers_source: str | None = None
    layers_inferred_from: str | None = None
    gemms_per_layer: int | None = None
    gemms_per_layer_source: str | None = None
    # an absent key reads as the one lm_head every forward has (what the gate assumed)
    lm_head_per_forward: int | None = 1
    forwards: int | None = None
    forwards_source: str | None = None
    gemm_calls_per_forward: Number | None = None
    by_shape: list[ShapeGroup] = _list()
    extra: list[ShapeGroup] = _list()
    missing: Number | None = None
    missing_lm_head: int | None = None
    per_layer: list[LayerTime] = _list()
    per_layer_covers: str | None = None
    slow_layers: list[Any] = _list()
    phases: dict[str, PhaseCounts] = _obj()
    structure: JSONObject | None = None
    gemm_precision: JSONObject | None = None
    moe_time: JSONObject | None = None
    gemm_calls_before_window: int | None = None


class Step(_Section, frozen=True):
    """One step range (``steps[*]``); the batch counts are null when no annotation states
    them, and a column a report predates is None."""

    step: int | None = None
    name: str | None = None
    phase: str | None = None  # prefill | decode | mixed | unknown
    start_ns: Number | None = None
    host_ns: Number | None = None
    gpu_busy_ns: Number | None = None
    wall_ns: Number | None = None
    kernels: int | None = None
    engine: str | None = None
    prefill_tokens: int | None = None
    decode_tokens: int | None = None
    kv_tokens: int | None = None
    requests: int | None = None
    kv_written_tokens: int | None = None


class DetailKernel(_Section, frozen=True):
    kernel: str | None = None
    op: str | None = None
    shapes: str | None = None
    class_: str | None = msgspec.field(default=None, name="class")
    category: str | None = None
    calls: Number | None = None
    ns: Number | None = None


class PhaseStepDetail(_Section, frozen=True):
    """``step_detail.<phase>``: the parts of the phase's median step (means, may be
    fractional)."""

    steps: list[int] = _list()
    wall_ns: Number | None = None
    busy_ns: Number | None = None
    idle_ns: Number | None = None
    idle: dict[str, Number] = _obj()
    kernels: list[DetailKernel] = _list()


class Interconnect(_Section, frozen=True):
    gpu: str | None = None
    link: str | None = None
    bytes_per_s: Number | None = None
    source: str | None = None


class CollectiveType(_Section, frozen=True):
    calls: int | None = None
    total_ns: Number | None = None
    busy_ns: Number | None = None
    exposed_ns: Number | None = None
    overlapped_ns: Number | None = None
    bytes: int | None = None
    calls_with_bytes: int | None = None
    mean_message_bytes: Number | None = None
    bytes_source: str | None = None
    group_size: int | None = None
    group_size_source: str | None = None
    algbw_bytes_per_s: Number | None = None
    busbw_bytes_per_s: Number | None = None
    busbw_share: Number | None = None
    implementations: dict[str, int] = _obj()


class Communication(_Section, frozen=True):
    calls: int | None = None
    total_ns: int | None = None
    busy_ns: int | None = None
    exposed_ns: int | None = None
    overlapped_ns: int | None = None
    exposed_share: Number | None = None
    overlapped_share: Number | None = None
    world_size: int | None = None
    interconnect: Interconnect | None = None
    by_type: dict[str, CollectiveType] = _obj()


class RooflineSummary(_Section, frozen=True):
    """``roofline.summary.<class>`` and ``roofline.by_phase.<phase>.<class>``."""

    calls: int | None = None
    kernels: int | None = None
    flops: Number | None = None
    bytes: Number | None = None
    time_ns: Number | None = None
    intensity: Number | None = None
    achieved_flops_s: Number | None = None
    achieved_bytes_s: Number | None = None
    compute_bound_calls: int | None = None
    memory_bound_calls: int | None = None
    compute_bound_time_share: Number | None = None
    memory_bound_time_share: Number | None = None
    median_efficiency: Number | None = None
    suspect_calls: int | None = None


class RooflinePoint(_Section, frozen=True):
    """A row of ``roofline.points``: one phase, class, op and M x K x N."""

    phase: str | None = None
    op_class: str | None = None
    op_name: str | None = None
    kernel: str | None = None
    m: int | None = None
    k: int | None = None
    n: int | None = None
    calls: int | None = None
    intensity: Number | None = None
    achieved_flops_s: Number | None = None
    achieved_bytes_s: Number | None = None
    efficiency: Number | None = None
    bound: str | None = None
    time_ns: Number | None = None


class Roofline(_Section, frozen=True):
    available: bool = False
    reason: str | None = None  # when not available
    gpu: JSONObject | None = None
    summary: dict[str, RooflineSummary] = _obj()
    by_phase: dict[str, dict[str, RooflineSummary]] = _obj()
    points: list[RooflinePoint] = _list()
    calls_with_shapes: int | None = None
    suspect_calls: int | None = None
    attention_flops: str | None = None
    speed_of_light: JSONObject | None = None


class IdleCause(_Section, frozen=True):
    cause: str
    title: str | None = None
    op: str | None = None
    context: str | None = None
    ns: Number | None = None
    share_of_idle: Number | None = None
    gaps: int | None = None
    steps: list[Any] = _list()


class IdleGap(_Section, frozen=True):
    start_ns: Number | None = None
    dur_ns: Number | None = None
    host_wait_ns: Number | None = None
    kernel_wait_ns: Number | None = None
    step: int | None = None
    cause: str | None = None
    op: str | None = None
    next: str | None = None


class IdleSplit(_Section, frozen=True):
    """``idle.by_step`` rows (with ``step`` and ``phase``) and ``idle.by_phase`` values."""

    step: int | None = None
    phase: str | None = None
    host_wait_ns: Number | None = None
    kernel_wait_ns: Number | None = None


class Idle(_Section, frozen=True):
    idle_ns: Number | None = None
    host_wait_ns: Number | None = None
    kernel_wait_ns: Number | None = None
    host_wait_share: Number | None = None
    kernel_wait_share: Number | None = None
    gap_count: int | None = None
    min_gap_ns: Number | None = None
    causes: list[IdleCause] = _list()
    gaps: list[IdleGap] = _list()
    by_step: list[IdleSplit] = _list()
    by_phase: dict[str, IdleSplit] = _obj()


class Model(_Section, frozen=True):
    """What was known of the model (``modelspec.ModelSpec.to_dict()``): the figures the
    readers use are typed, the rest decodes into the open section."""

    name: str | None = None
    model_type: str | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    ffn: int | None = None
    vocab: int | None = None
    dtype: str | None = None
    tie_embeddings: bool | None = None
    gemms_per_layer: int | None = None
    gemms_per_forward: int | None = None
    lm_head: int | None = None
    experts: int | None = None
    experts_per_tok: int | None = None
    moe_ffn: int | None = None
    shared_expert_ffn: int | None = None
    sliding_window: int | None = None
    layer_types: list[Any] | None = None
    quantization: Any = None
    phase: str | None = None
    batch: int | None = None
    tokens: int | None = None
    context: int | None = None
    forwards: int | None = None
    source: str | None = None
    path: str | None = None
    run_source: str | None = None
    run_path: str | None = None


# ------------------------------------------------------------------------------ the report

class Report(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    schema_version: int = SCHEMA_VERSION
    source: Source = msgspec.field(default_factory=Source)
    mode: Mode = msgspec.field(default_factory=Mode)
    bottleneck: Bottleneck = msgspec.field(default_factory=Bottleneck)
    categories: dict[str, float] = _obj()
    breakdown: Breakdown = msgspec.field(default_factory=Breakdown)
    overhead: Overhead = msgspec.field(default_factory=Overhead)
    checks: list[Check] = _list()
    kernel_counts: KernelCounts = msgspec.field(default_factory=KernelCounts)
    hotspots: list[Hotspot] = _list()
    recommendations: list[Recommendation] = _list()
    phases: list[Phase] = _list()
    steps: list[Step] = _list()
    step_detail: dict[str, PhaseStepDetail] = _obj()
    model: Model = msgspec.field(default_factory=Model)
    roofline: Roofline | None = None
    communication: Communication = msgspec.field(default_factory=Communication)
    warnings: list[str] = _list()
    idle: Idle | None = None
    health: JSONObject | None = None
    extras: JSONObject | None = None
    perfetto: JSONObject | None = None  # added by `profdiag report --perfetto`


# The keys every section always carries as this version writes them (Diagnosis.to_dict());
# json_schema() marks them required and decode() checks the top level's. A key missing here
# is one a report may lack (written only sometimes, or added within schema 1).
_OPTIONAL: dict[type, frozenset[str]] = {
    Report: frozenset({"idle", "health", "extras", "perfetto"}),
    KernelCounts: frozenset({"missing_lm_head"}),
    ShapeGroup: frozenset({"role", "phase", "expected_per_forward", "reason"}),
    Roofline: frozenset({"reason", "gpu", "summary", "by_phase", "points", "calls_with_shapes",
                         "suspect_calls", "attention_flops", "speed_of_light"}),
    Step: frozenset({"kv_written_tokens"}),
    IdleSplit: frozenset({"step", "phase"}),
    Model: frozenset(Model.__struct_fields__),  # the model's keys depend on what was known
    Overhead: frozenset({"short_kernel_ns"}),
}



def _required(cls: type) -> list[str]:
    optional = _OPTIONAL.get(cls, frozenset())
    return [f.encode_name for f in msgspec.structs.fields(cls)
            if f.name not in optional]


def _structs() -> list[type]:
    seen: list[type] = []

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            if tp in seen:
                return
            seen.append(tp)
            for f in msgspec.structs.fields(tp):
                walk(f.type)
        for arg in getattr(tp, "__args__", ()) or ():
            walk(arg)

    walk(Report)
    return seen


# --------------------------------------------------------------------------------- decoding

def _where(obj: Any, where: str | None) -> str:
    if where:
        return where
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    return "<report>"


def _convert(data: Mapping[str, Any], where: str) -> Report:
    try:
        return msgspec.convert(data, Report, strict=False)
    except msgspec.ValidationError:
        pass
    # an in-memory Diagnosis.to_dict() may hold numpy or pandas scalars: the JSON the report
    # writer would write is what a stored report holds, so decode that
    import orjson

    from .renderers.json_ import dumps

    try:
        plain = orjson.loads(dumps(data))
    except (TypeError, orjson.JSONEncodeError, orjson.JSONDecodeError):
        plain = data
    try:
        return msgspec.convert(plain, Report, strict=False)
    except msgspec.ValidationError as exc:
        raise TraceFormatError(f"not a profdiag report (schema {SCHEMA_VERSION}): {exc}",
                               where) from None


_TOP_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(Report))


def load(obj: Any, where: str | None = None) -> Report:
    """The typed report of ``obj``: a ``Report``, a report dict, a ``Diagnosis`` or the path
    of a JSON report. The one decoder every reader of a report uses.

    Lenient where readers always were: a missing section or key takes its default, a key
    this version does not know is ignored. A value of the wrong type, a file that is not a
    JSON object, or a ``schema_version`` newer than this profdiag raise ``TraceFormatError``
    (one line: the file, the JSON path).
    """
    if isinstance(obj, Report):
        return obj
    name = _where(obj, where)
    if isinstance(obj, (str, os.PathLike)):
        import orjson

        try:
            obj = orjson.loads(Path(obj).read_bytes())
        except OSError as exc:
            raise TraceFormatError(f"cannot read the report: {exc.strerror or exc}",
                                   name) from None
        except orjson.JSONDecodeError as exc:
            raise TraceFormatError(f"not a JSON report: {exc}", name) from None
    elif not isinstance(obj, Mapping) and hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if not isinstance(obj, Mapping):
        raise TraceFormatError(f"not a profdiag report: a JSON {type(obj).__name__}, "
                               "expected an object", name)
    version = obj.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise TraceFormatError(f"report schema_version {version!r} is newer than this "
                               f"profdiag reads ({SCHEMA_VERSION}); upgrade profdiag", name)
    known = {k: v for k, v in obj.items() if k in _TOP_KEYS}
    return _convert(known, name)


def decode(data: Any, where: str = "<report>") -> Report:
    """Validate ``data`` as this version writes a report (every always-written top-level key,
    no unknown one) and return it typed; TraceFormatError naming the bad path."""
    if isinstance(data, Mapping):
        missing = [k for k in _required(Report) if k not in data]
        if missing:
            raise TraceFormatError(f"not a profdiag report (schema {SCHEMA_VERSION}): "
                                   f"Object missing required field `{missing[0]}` - at `$`",
                                   where)
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise TraceFormatError(f"not a profdiag report (schema {SCHEMA_VERSION}): "
                                   f"Object contains unknown field `{unknown[0]}` - at `$`",
                                   where)
    try:
        return msgspec.convert(data, Report, strict=False)
    except msgspec.ValidationError as exc:
        raise TraceFormatError(f"not a profdiag report (schema {SCHEMA_VERSION}): {exc}",
                               where) from None


def json_schema() -> dict[str, Any]:
    """The report's JSON Schema (draft 2020-12): msgspec's, with each object's
    always-written keys marked required (``_OPTIONAL`` names the others)."""
    schema = msgspec.json.schema(Report)
    defs = schema["$defs"]
    for cls in _structs():
        name = cls.__name__
        if name in defs:
            defs[name]["required"] = _required(cls)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"profdiag report, schema_version {SCHEMA_VERSION}"
    return schema

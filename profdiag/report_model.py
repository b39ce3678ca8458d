"""The JSON report as typed, frozen msgspec Structs, and its JSON Schema.

``Diagnosis.to_dict()`` (docs/json-schema.md) is the contract; this module types it so a
report can be validated (``decode``) and its schema printed (``profdiag schema``). The
sections whose shape is typed here are the ones every consumer reads (mode, bottleneck,
breakdown, checks, hotspots, recommendations, phases); the larger analysis sections
(kernel_counts, roofline, idle, ...) are typed as JSON objects for now and documented in
docs/json-schema.md. A report with an unknown top-level key, a missing key or a value of
the wrong type fails ``decode`` with a message naming the path (``$.phases[0].steps``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .diagnosis.model import SCHEMA_VERSION
from .errors import TraceFormatError

JSONObject = dict[str, Any]


class Mode(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    value: str  # prefill | decode | mixed | unknown
    confidence: float
    evidence: list[str]


class Bottleneck(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    value: str  # compute | memory | overhead | unknown
    evidence: list[str]


class Breakdown(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    window_ns: int
    busy_ns: int
    idle_ns: int
    busy_share: float
    kernel_sum_ns: int
    category_ns: dict[str, int]
    class_ns: dict[str, int]
    class_category: dict[str, str]


class Check(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    status: str  # pass | warn | fail | skip
    summary: str
    evidence: JSONObject


class Hotspot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    # "class" is a Python keyword: the field is class_ in Python, "class" in JSON
    class_: str = msgspec.field(name="class")
    category: str = ""
    calls: int = 0
    total_ns: int = 0
    mean_ns: int = 0
    share: float = 0.0
    note: str = ""


class Recommendation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    title: str
    evidence: str
    advice: str
    kernels: list[str]
    bottleneck: str


class Phase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    mode: Mode
    steps: int
    median_step_ns: int | None
    categories: dict[str, float]
    breakdown: Breakdown
    bottleneck: Bottleneck
    overhead_share: float


class Report(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    source: JSONObject
    mode: Mode
    bottleneck: Bottleneck
    categories: dict[str, float]
    breakdown: Breakdown
    overhead: JSONObject
    checks: list[Check]
    kernel_counts: JSONObject
    hotspots: list[Hotspot]
    recommendations: list[Recommendation]
    phases: list[Phase]
    steps: list[JSONObject]
    step_detail: JSONObject
    model: JSONObject
    roofline: JSONObject | None
    communication: JSONObject
    warnings: list[str]
    idle: JSONObject | None = None
    health: JSONObject | None = None
    extras: JSONObject | None = None
    perfetto: str | None = None  # added by `profdiag report --perfetto`


def decode(data: Any, where: str = "<report>") -> Report:
    """The typed report of a report dict; TraceFormatError naming the bad path."""
    try:
        return msgspec.convert(data, Report, strict=False)
    except msgspec.ValidationError as exc:
        raise TraceFormatError(f"not a profdiag report (schema {SCHEMA_VERSION}): {exc}",
                               where) from None


def json_schema() -> dict[str, Any]:
    """The report's JSON Schema (draft 2020-12, as msgspec generates it)."""
    schema = msgspec.json.schema(Report)
    schema["title"] = f"profdiag report, schema_version {SCHEMA_VERSION}"
    return schema

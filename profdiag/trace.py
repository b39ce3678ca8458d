"""Trace: the canonical events of one profile plus what we know about where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from . import schema


@dataclass
class DeviceInfo:
    """One GPU as the trace describes it."""

    index: int
    name: str = ""
    sm_count: int | None = None
    memory_bytes: int | None = None
    compute_capability: str | None = None
    vendor: str = ""  # "nvidia" | "amd" | ""


@dataclass
class TraceMeta:
    format: str  # "torch" | "nsys" | "rocprof-v1" | "rocprofv3" | "rocpd"
    path: str
    devices: list[DeviceInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Profiler options as recorded in the trace (record_shapes, with_stack, ...).
    options: dict[str, Any] = field(default_factory=dict)
    # Epoch anchor when the format has one (torch baseTimeNanoseconds, nsys session start).
    base_time_ns: int | None = None
    salvaged: bool = False  # the file was truncated and partially recovered
    # Collective kernels' own args (Kineto "Collective name", "In msg nelems", ...; nsys NCCL
    # NVTX payloads): dicts with correlation, collective, in_nelems, out_nelems, group_size,
    # dtype, pg_name; and optionally bytes (message size) when the source gives it directly.
    collectives: list[dict[str, Any]] = field(default_factory=list)
    # torch distributedInfo (backend, rank, world_size, pg_config) when the trace has one.
    distributed: dict[str, Any] | None = None

    @property
    def device_name(self) -> str:
        """Name of the first device the trace lists (see device_info for a given GPU)."""
        return self.devices[0].name if self.devices else ""

    def device_info(self, index: Any) -> tuple[DeviceInfo | None, str]:
        """The listed device with this index, and how it was found.

        ``"exact"``: listed under that index. ``"same-model"``: not listed (ROCm Kineto numbers
        kernels' devices differently from deviceProperties, a sliced trace keeps one entry),
        but every listed GPU is the same model, so it is that model. ``"none"``: unknown.
        """
        try:
            idx = int(index)
        except (TypeError, ValueError):
            return None, "none"
        for d in self.devices:
            if d.index == idx:
                return d, "exact"
        models = {(d.name, d.sm_count, d.memory_bytes) for d in self.devices}
        if len(models) == 1 and self.devices[0].name:
            return self.devices[0], "same-model"
        return None, "none"


def device_label(dev: DeviceInfo | None) -> str:
    """A device's name, or a description from its properties when the trace leaves it empty."""
    if dev is None:
        return ""
    if dev.name:
        return dev.name
    facts = []
    if dev.compute_capability:
        facts.append(f"compute {dev.compute_capability}")
    if dev.sm_count:
        facts.append(f"{dev.sm_count} {'CUs' if dev.vendor == 'amd' else 'SMs'}")
    if dev.memory_bytes:
        facts.append(f"{dev.memory_bytes / 2**30:.0f} GiB")
    vendor = {"amd": "AMD GPU", "nvidia": "NVIDIA GPU"}.get(dev.vendor, "GPU")
    return f"unnamed {vendor}" + (f" ({', '.join(facts)})" if facts else "")


@dataclass
class Trace:
    events: pd.DataFrame
    meta: TraceMeta

    def __post_init__(self) -> None:
        problems = schema.validate(self.events)
        if problems:
            raise ValueError("non-canonical event table: " + "; ".join(problems))

    def of_kind(self, *kinds: str) -> pd.DataFrame:
        """Rows whose kind is one of ``kinds``."""
        return self.events[self.events["kind"].isin(kinds)]

    @property
    def gpu_events(self) -> pd.DataFrame:
        return self.of_kind(*schema.GPU_KINDS)

    @property
    def kernels(self) -> pd.DataFrame:
        return self.of_kind(schema.KIND_KERNEL)

    def __repr__(self) -> str:
        counts = self.events["kind"].value_counts().to_dict()
        return f"Trace(format={self.meta.format!r}, path={self.meta.path!r}, events={counts})"

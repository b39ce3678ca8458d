"""GPU peak numbers for the roofline: the shipped table (``rules/hardware.toml``) and user specs.

Public API::

    lookup(device_name, *, sm_count=None, memory_bytes=None) -> GpuSpec | None
    get(name) -> GpuSpec                      # --gpu NAME: key or alias, case-insensitive
    load_spec_file(path, name=None) -> GpuSpec  # a user TOML with the same fields
    known_gpus() -> list[GpuSpec]
    normalize_dtype(text) -> str | None       # "c10::BFloat16" -> "bf16"
    DTYPE_BYTES                               # {"bf16": 2, ...}

Every malformed file or unknown name raises :class:`profdiag.errors.RulesError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import _toml as toml
from .errors import RulesError
from .rules_path import rules_dir

HARDWARE_FILE = "hardware.toml"

# Bytes per element of each dtype the table knows. fp4 packs two values per byte.
DTYPE_BYTES: Mapping[str, float] = MappingProxyType(
    {"fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "fp4": 0.5}
)



def dtype_size(text: str | None) -> float | None:
    """Bytes per element of a dtype in any spelling ('bfloat16', 'c10::BFloat16', 'bf16'),
    from DTYPE_BYTES (the one table); None when unknown."""
    key = normalize_dtype(text)
    return None if key is None else DTYPE_BYTES[key]


def dtype_of_size(size: float | None) -> str | None:
    """The table's first dtype of ``size`` bytes per element (4 -> 'fp32', 2 -> 'bf16',
    1 -> 'fp8', 0.5 -> 'fp4'), None when no dtype has that size."""
    return next((k for k, v in DTYPE_BYTES.items() if v == size), None)


# Spellings seen in traces (torch "Input type", numpy/torch dtype names) -> table dtype key.
_DTYPE_ALIASES: dict[str, str] = {
    "c10::bfloat16": "bf16",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "bf16": "bf16",
    "c10::half": "fp16",
    "half": "fp16",
    "float16": "fp16",
    "torch.float16": "fp16",
    "fp16": "fp16",
    "float": "fp32",
    "float32": "fp32",
    "torch.float32": "fp32",
    "fp32": "fp32",
    "tf32": "tf32",
    "double": "fp64",
    "float64": "fp64",
    "fp64": "fp64",
    "signed char": "int8",
    "int8": "int8",
    "torch.int8": "int8",
    "fp8": "fp8",
    "fp4": "fp4",
    "nvfp4": "fp4",
    "mxfp4": "fp4",
    "float4_e2m1fn_x2": "fp4",
    "c10::float4_e2m1fn_x2": "fp4",
    "torch.float4_e2m1fn_x2": "fp4",
}


def normalize_dtype(text: str | None) -> str | None:
    """Return the table's dtype key for a trace/framework dtype spelling, or None if unknown.

    ``c10::Float8_e4m3fn`` and the other float8 variants all map to ``"fp8"``.
    """
    if not text:
        return None
    key = str(text).strip().lower()
    if key in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[key]
    if "float8" in key or key.startswith("fp8"):
        return "fp8"
    return None


@dataclass(frozen=True)
class GpuSpec:
    """Peak numbers of one GPU. FLOP/s and bytes/s are plain floats in SI units."""

    key: str
    name: str
    vendor: str
    # dtype -> dense peak FLOP/s (read-only mapping; excluded from hashing).
    peak_flops: Mapping[str, float] = field(hash=False, compare=True)
    bandwidth: float  # bytes/s
    sm_count: int | None = None
    memory_bytes: int | None = None
    source: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    # Attainable values measured on a real part, when the table has them.
    measured_peak_flops: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({}), hash=False, compare=True
    )
    measured_bandwidth: float | None = None
    measured_source: str = ""

    def has_peak(self, dtype: str) -> bool:
        """Return True when the table gives a peak for ``dtype`` (a key or trace spelling)."""
        d = normalize_dtype(dtype) or dtype
        return d in self.peak_flops

    def peak(self, dtype: str = "bf16") -> float:
        """Return the dense peak FLOP/s for ``dtype``; RulesError when the GPU has none."""
        d = normalize_dtype(dtype) or dtype
        try:
            return self.peak_flops[d]
        except KeyError:
            raise RulesError(
                f"{self.name}: no peak for dtype {dtype!r} "
                f"(known: {', '.join(sorted(self.peak_flops))})"
            ) from None

    def ridge(self, dtype: str = "bf16") -> float:
        """Return the ridge point, peak FLOP/s / bandwidth, in FLOP per byte."""
        return self.peak(dtype) / self.bandwidth

    def with_measured(self) -> GpuSpec:
        """Return a copy whose peaks/bandwidth are the measured (attainable) values where known."""
        peaks = dict(self.peak_flops)
        peaks.update(self.measured_peak_flops)
        return dataclasses.replace(
            self,
            peak_flops=MappingProxyType(peaks),
            bandwidth=self.measured_bandwidth or self.bandwidth,
            source=f"{self.source}; measured: {self.measured_source}"
            if self.measured_source
            else self.source,
        )

    def matches(self, device_name: str) -> bool:
        """Return True when one of the entry's patterns occurs in ``device_name``."""
        return any(re.search(p, device_name, re.IGNORECASE) for p in self.patterns)


# --------------------------------------------------------------------------- parsing


def _num(entry: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> float | None:
    """Read a positive finite number field, or raise RulesError naming the file and entry."""
    if key not in entry:
        if required:
            raise RulesError(f"{where}: missing field {key!r}")
        return None
    value = entry[key]
    # bool is an int subclass: reject it explicitly (``bandwidth = true`` is a typo).
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RulesError(f"{where}: field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise RulesError(f"{where}: field {key!r} must be positive, got {value!r}")
    return float(value)


def _str_list(entry: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = entry.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where}: field {key!r} must be a list of strings")
    return tuple(value)


def _spec_from_entry(key: str, entry: Any, where: str) -> GpuSpec:
    """Build a GpuSpec from one TOML table, validating every field."""
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: [{key}] must be a table")
    name = entry.get("name", key)
    if not isinstance(name, str) or not name:
        raise RulesError(f"{where}: field 'name' must be a non-empty string")
    vendor = entry.get("vendor", "")
    if not isinstance(vendor, str):
        raise RulesError(f"{where}: field 'vendor' must be a string")

    peaks_raw = entry.get("peak_flops")
    if not isinstance(peaks_raw, dict) or not peaks_raw:
        raise RulesError(f"{where}: [{key}] needs a non-empty [peak_flops] table (FLOP/s per dtype)")
    peaks: dict[str, float] = {}
    for dtype in peaks_raw:
        if dtype not in DTYPE_BYTES:
            raise RulesError(
                f"{where}: [{key}.peak_flops] unknown dtype {dtype!r} "
                f"(known: {', '.join(DTYPE_BYTES)})"
            )
        peaks[dtype] = _num(peaks_raw, dtype, f"{where} [{key}.peak_flops]")  # type: ignore[assignment]

    bandwidth = _num(entry, "bandwidth_bytes_per_s", f"{where} [{key}]")
    sm = _num(entry, "sm_count", f"{where} [{key}]", required=False)
    mem = _num(entry, "memory_bytes", f"{where} [{key}]", required=False)

    patterns = _str_list(entry, "match", f"{where} [{key}]")
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise RulesError(f"{where}: [{key}] bad match regex {p!r}: {exc}") from None

    measured_peaks: dict[str, float] = {}
    measured_bw: float | None = None
    measured_src = ""
    measured = entry.get("measured")
    if measured is not None:
        if not isinstance(measured, dict):
            raise RulesError(f"{where}: [{key}.measured] must be a table")
        for mkey in measured:
            if mkey.startswith("peak_flops_"):
                dtype = mkey.removeprefix("peak_flops_")
                if dtype not in DTYPE_BYTES:
                    raise RulesError(f"{where}: [{key}.measured] unknown dtype in {mkey!r}")
                measured_peaks[dtype] = _num(measured, mkey, f"{where} [{key}.measured]")  # type: ignore[assignment]
            elif mkey == "bandwidth_bytes_per_s":
                measured_bw = _num(measured, mkey, f"{where} [{key}.measured]")
            elif mkey == "source":
                measured_src = str(measured[mkey])
            else:
                raise RulesError(f"{where}: [{key}.measured] unknown field {mkey!r}")

    return GpuSpec(
        key=key,
        name=name,
        vendor=vendor.lower(),
        peak_flops=MappingProxyType(peaks),
        bandwidth=bandwidth,  # type: ignore[arg-type]
        sm_count=int(sm) if sm is not None else None,
        memory_bytes=int(mem) if mem is not None else None,
        source=str(entry.get("source", "")),
        notes=str(entry.get("notes", "")),
        aliases=_str_list(entry, "aliases", f"{where} [{key}]"),
        patterns=patterns,
        measured_peak_flops=MappingProxyType(measured_peaks),
        measured_bandwidth=measured_bw,
        measured_source=measured_src,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return toml.load(fh)
    except FileNotFoundError:
        raise RulesError("hardware spec file not found", str(path)) from None
    except toml.TOMLDecodeError as exc:
        raise RulesError(f"not valid TOML: {exc}", str(path)) from None
    except OSError as exc:
        raise RulesError(f"cannot read: {exc}", str(path)) from None


def parse_table(doc: Mapping[str, Any], where: str) -> list[GpuSpec]:
    """Return the GpuSpecs of a parsed hardware document (``[gpus.<key>]`` tables), in order."""
    gpus = doc.get("gpus")
    if not isinstance(gpus, dict) or not gpus:
        raise RulesError(f"{where}: no [gpus.<key>] tables")
    return [_spec_from_entry(k, v, where) for k, v in gpus.items()]


@lru_cache(maxsize=4)
def _load_table(path: str) -> tuple[GpuSpec, ...]:
    return tuple(parse_table(_read_toml(Path(path)), path))


def table_path() -> Path:
    """Return the path of the shipped hardware table."""
    return rules_dir() / HARDWARE_FILE


def known_gpus(path: str | Path | None = None) -> list[GpuSpec]:
    """Return every GpuSpec of the shipped table (or of ``path``), in file order."""
    return list(_load_table(str(path or table_path())))


def _known_names(specs: list[GpuSpec]) -> str:
    return ", ".join(s.key for s in specs)


# --------------------------------------------------------------------------- lookups


def lookup(
    device_name: str | None,
    *,
    sm_count: int | None = None,
    memory_bytes: int | None = None,
    path: str | Path | None = None,
) -> GpuSpec | None:
    """Return the GpuSpec whose patterns match ``device_name``, or None when none does.

    ``device_name`` is what a trace reports: torch ``deviceProperties.name`` ("NVIDIA H100
    80GB HBM3"), nsys ``TARGET_INFO_GPU.name``, a rocprof product name ("AMD Instinct MI300X
    VF") or a gfx name ("gfx942"). When several entries match (a gfx name is several products;
    one MI250X GCD vs the package), the optional hints choose: an entry with the same SM/CU
    count, then the one whose memory size is closest; otherwise the first in file order.
    """
    if not device_name:
        return None
    specs = known_gpus(path)
    candidates = [s for s in specs if s.matches(device_name)]
    if not candidates:
        return None
    if sm_count is not None:
        same = [s for s in candidates if s.sm_count == sm_count]
        if same:
            candidates = same
    if memory_bytes and len(candidates) > 1:
        sized = [s for s in candidates if s.memory_bytes]
        if sized:
            # Closest in ratio, not difference: 80 vs 94 GiB matters as much as 192 vs 226.
            # min() is stable, so ties keep file order.
            return min(sized, key=lambda s: abs(math.log(s.memory_bytes / memory_bytes)))  # type: ignore[operator]
    return candidates[0]


def _norm_name(text: str) -> str:
    """Fold case and separators so "H100 SXM", "h100-sxm" and "h100_sxm" are one name."""
    return re.sub(r"[\s_\-]+", "-", text.strip().lower())


def get(name: str, path: str | Path | None = None) -> GpuSpec:
    """Return the GpuSpec for ``--gpu NAME``: a table key, an alias or the display name.

    Matching is case-insensitive and treats spaces, '-' and '_' alike. As a last resort the
    name is tried as a device name (``lookup``), so ``--gpu "NVIDIA H100 80GB HBM3"`` works.
    Raises RulesError listing the known names when nothing matches.
    """
    specs = known_gpus(path)
    wanted = _norm_name(name)
    for s in specs:
        names = (s.key, s.name, *s.aliases)
        if any(_norm_name(n) == wanted for n in names):
            return s
    found = lookup(name, path=path)
    if found is not None:
        return found
    raise RulesError(f"unknown GPU {name!r}; known: {_known_names(specs)}")


def load_spec_file(path: str | Path, name: str | None = None) -> GpuSpec:
    """Return the GpuSpec described by a user TOML file.

    Two layouts are accepted: the shipped table's (``[gpus.<key>]`` tables; with several,
    ``name`` picks one by key/alias, else the file must hold exactly one), or one GPU's fields
    at top level (``name``, ``bandwidth_bytes_per_s``, ``[peak_flops]``, ...).
    """
    p = Path(path)
    doc = _read_toml(p)
    where = str(p)
    if "gpus" in doc:
        specs = parse_table(doc, where)
        if name is None:
            if len(specs) != 1:
                raise RulesError(
                    f"{len(specs)} GPUs in the file, pick one: {_known_names(specs)}", where
                )
            return specs[0]
        wanted = _norm_name(name)
        for s in specs:
            if any(_norm_name(n) == wanted for n in (s.key, s.name, *s.aliases)):
                return s
        raise RulesError(f"no GPU {name!r} in the file; known: {_known_names(specs)}", where)
    key = doc.get("key") or doc.get("name") or p.stem
    return _spec_from_entry(_norm_name(str(key)), doc, where)


def resolve(
    gpu: str | None = None,
    spec_file: str | Path | None = None,
    device_name: str | None = None,
    *,
    sm_count: int | None = None,
    memory_bytes: int | None = None,
) -> GpuSpec | None:
    """Return the spec the CLI should use: a spec file wins, then ``--gpu``, then the trace's
    device name; None when the trace's device is not in the table (the caller says so)."""
    if spec_file is not None:
        return load_spec_file(spec_file, gpu)
    if gpu:
        return get(gpu)
    return lookup(device_name, sm_count=sm_count, memory_bytes=memory_bytes)

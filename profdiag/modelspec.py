"""What the model implies: layers, GEMMs per layer, forwards, from a config or a manifest.

Accepted inputs:
- a Hugging Face ``config.json`` (num_hidden_layers, hidden_size, ...);
- a profdiag capture manifest (``<trace>.manifest.json``, see docs/capture.md);
- a multi-capture manifest ``{"captures": [{"file": ..., ...}]}`` (as in shared/traces).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import UsageError

# Linear layers per decoder block by architecture (unfused q/k/v/o + gate/up/down).
_GEMMS_PER_LAYER_BY_TYPE = {
    "llama": 7, "mistral": 7, "qwen2": 7, "qwen3": 7, "gemma": 7, "gemma2": 7,
    "phi3": 4,  # fused qkv_proj and gate_up_proj
    "gpt2": 4, "gpt_neox": 4, "falcon": 4, "bloom": 4, "opt": 6, "bert": 6,
}


@dataclass
class ModelSpec:
    layers: int | None = None
    gemms_per_layer: int | None = None
    lm_head: int = 1
    forwards: int | None = None  # known only from a manifest
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None
    vocab: int | None = None
    dtype: str | None = None
    phase: str | None = None  # ground truth from a manifest
    batch: int | None = None
    tokens: int | None = None
    context: int | None = None
    source: str = "none"  # "config" | "manifest" | "cli" | "none"
    path: str | None = None

    @property
    def gemms_per_forward(self) -> int | None:
        if self.layers is None or self.gemms_per_layer is None:
            return None
        return self.layers * self.gemms_per_layer + self.lm_head

    @property
    def head_dim(self) -> int | None:
        if self.hidden and self.heads:
            return self.hidden // self.heads
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gemms_per_forward"] = self.gemms_per_forward
        return d


def _read(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"cannot read model config: {exc}", str(path)) from None


# Typed coercion of config/manifest values: field -> (smallest, largest) accepted integer.
_INT_FIELDS: dict[str, tuple[int, int]] = {
    "layers": (1, 100_000), "gemms_per_layer": (0, 1000), "forwards": (1, 10**9),
    "hidden": (1, 10**7), "heads": (1, 10**5), "kv_heads": (1, 10**5), "ffn": (1, 10**8),
    "vocab": (1, 10**9), "batch": (1, 10**7), "tokens": (0, 10**12), "context": (0, 10**12),
}


def _checked(fields: dict[str, Any], path: str | None, source: str) -> ModelSpec:
    """ModelSpec(**fields) once every number is an integer in range and every text a string;
    otherwise a one-line UsageError naming the file and the field."""
    hint = " (or pass --no-manifest)" if source == "manifest" else ""
    for key, (lo, hi) in _INT_FIELDS.items():
        v = fields.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise UsageError(f"{source} field {key!r} must be an integer from {lo} to {hi}, "
                             f"got {str(v)[:40]!r}{hint}", path)
    for key in ("dtype", "phase"):
        v = fields.get(key)
        if v is not None and not isinstance(v, str):
            raise UsageError(f"{source} field {key!r} must be a string, got {str(v)[:40]!r}"
                             f"{hint}", path)
    return ModelSpec(**fields, source=source, path=path)


def from_hf_config(cfg: dict[str, Any], path: str | None = None) -> ModelSpec:
    """ModelSpec from a Hugging Face config dict."""
    if not isinstance(cfg, dict):
        raise UsageError("model config must be a JSON object", path)
    text = cfg.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" in text:
        cfg = {**cfg, **text}
    layers = cfg.get("num_hidden_layers", cfg.get("n_layer", cfg.get("num_layers")))
    if layers is None:
        raise UsageError("model config has no num_hidden_layers", path)
    mtype = str(cfg.get("model_type", "llama"))
    gpl = _GEMMS_PER_LAYER_BY_TYPE.get(mtype, 7)
    return _checked(dict(
        layers=layers,
        gemms_per_layer=gpl,
        hidden=cfg.get("hidden_size", cfg.get("n_embd")),
        heads=cfg.get("num_attention_heads", cfg.get("n_head")),
        kv_heads=cfg.get("num_key_value_heads", cfg.get("num_attention_heads")),
        ffn=cfg.get("intermediate_size"),
        vocab=cfg.get("vocab_size"),
        dtype=cfg.get("torch_dtype"),
    ), path, "config")


def from_manifest_entry(entry: dict[str, Any], path: str | None = None) -> ModelSpec:
    """ModelSpec from one capture manifest entry (ours or shared/traces' format)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config") or {}, dict):
        raise UsageError("manifest entry must be a JSON object with a 'config' object "
                         "(or pass --no-manifest)", path)
    cfg = entry.get("config") or {}
    gpf = entry.get("gemms_per_forward")
    layers = cfg.get("layers")
    gpl = entry.get("gemms_per_layer")
    if gpl is None and isinstance(gpf, int) and isinstance(layers, int) and layers:
        gpl = (gpf - 1) // layers
    forwards = entry.get("forwards")
    if forwards is None:
        phase = entry.get("phase")
        steps = entry.get("steps")
        if phase == "prefill":
            forwards = 1
        elif phase == "decode" and isinstance(steps, int):
            forwards = steps
        elif phase == "generate" and isinstance(steps, int):
            forwards = steps + 1
    return _checked(dict(
        layers=layers,
        gemms_per_layer=gpl,
        forwards=forwards,
        hidden=cfg.get("hidden"),
        heads=cfg.get("heads"),
        kv_heads=cfg.get("kv_heads"),
        ffn=cfg.get("ffn"),
        vocab=cfg.get("vocab"),
        dtype=entry.get("dtype"),
        phase=entry.get("phase"),
        batch=entry.get("batch"),
        tokens=entry.get("tokens"),
        context=entry.get("context"),
    ), path, "manifest")


def load_config(path: str | Path) -> ModelSpec:
    """A Hugging Face config.json or a single-capture manifest."""
    p = Path(path)
    data = _read(p)
    if not isinstance(data, dict):
        raise UsageError("model config is not a JSON object", str(p))
    if "config" in data and ("gemms_per_forward" in data or "phase" in data):
        return from_manifest_entry(data, str(p))
    return from_hf_config(data, str(p))


def find_manifest(trace_path: str | Path) -> ModelSpec | None:
    """The manifest beside a trace (``<stem>.manifest.json`` or a ``manifest.json`` listing it)."""
    p = Path(trace_path)
    if not p.is_file():
        return None
    name = p.name
    stem = name
    for suffix in (".gz", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    own = p.with_name(stem + ".manifest.json")
    if own.is_file():
        try:
            return load_config(own)
        except UsageError:
            return None
    shared = p.with_name("manifest.json")
    if shared.is_file():
        try:
            data = orjson.loads(shared.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        for entry in (data.get("captures") or []) if isinstance(data, dict) else []:
            if isinstance(entry, dict) and entry.get("file") == name:
                return from_manifest_entry(entry, str(shared))
    return None

"""One model shape: the architecture (from a config) and what ran (from a manifest or the trace).

``ModelSpec`` is the only model-shape class in profdiag: diagnosis (expected kernel counts,
speed of light), the roofline arithmetic (``roofline.ModelConfig`` is this class) and capture
(``capture.config.ModelConfig`` is this class too) all use it.

Accepted inputs:
- a Hugging Face ``config.json`` (num_hidden_layers, hidden_size, ...), read by
  :func:`from_hf_config` / :func:`read_hf_config` with a strictness switch: lenient for
  diagnosis (only ``num_hidden_layers`` is required, odd values are dropped), strict for
  capture (every shape field must be a positive integer);
- a profdiag capture manifest (``<trace>.manifest.json``, see docs/capture.md);
- a multi-capture manifest ``{"captures": [{"file": ..., ...}]}`` (as in shared/traces).

Precedence (``merge``): a config gives the architecture; a manifest (and, in the speed of
light, the trace's own shapes and engine annotations) gives what ran: tokens, batch, context,
forwards, phase. A config never erases what ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from .errors import UsageError

# Linear layers per decoder block by architecture (unfused q/k/v/o + gate/up/down).
_GEMMS_PER_LAYER_BY_TYPE = {
    "llama": 7, "mistral": 7, "qwen2": 7, "qwen3": 7, "gemma": 7, "gemma2": 7, "gemma3": 7,
    "phi3": 4,  # fused qkv_proj and gate_up_proj
    "gpt2": 4, "gpt_neox": 4, "falcon": 4, "bloom": 4, "opt": 6, "bert": 6,
}

# Fields that describe the architecture (a config's business) and what ran (a manifest's or
# the trace's business). merge() takes the first group from the config, the second from the run.
ARCH_FIELDS = (
    "layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "head_dim", "tie_embeddings",
    "name", "model_type", "dtype", "gemms_per_layer", "lm_head", "experts", "experts_per_tok",
    "moe_ffn", "shared_expert_ffn", "sliding_window", "layer_types", "quantization",
)
RUN_FIELDS = ("forwards", "phase", "batch", "tokens", "context")


@dataclass(frozen=True, slots=True)
class ModelDims:
    """The shape fields of a :class:`ModelSpec` that the FLOP/byte formulas multiply, all known.

    Not a second model-shape class: only :meth:`ModelSpec.dims` builds one, after checking
    that every field is set, so the arithmetic works on ``int`` instead of ``int | None``.
    """

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int  # MLP width: the dense MLP's, or one routed expert's (``expert_ffn``) for MoE
    vocab: int
    head_dim: int  # resolved (``ModelSpec.d``)
    experts: int  # routed experts per layer; 1 when dense
    experts_per_tok: int  # routed experts each token goes through; 1 when dense


@dataclass(frozen=True)
class ModelSpec:
    """A decoder's shape and, when known, what one capture of it ran.

    The first eight fields keep the positional order of the former ``roofline.ModelConfig``
    (layers, hidden, heads, kv_heads, ffn, vocab, head_dim, tie_embeddings).
    """

    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None  # dense MLP width (intermediate_size)
    vocab: int | None = None
    head_dim: int | None = None  # as the config says; ``d`` falls back to hidden // heads
    tie_embeddings: bool = False
    name: str | None = None
    model_type: str | None = None
    dtype: str | None = None  # torch_dtype of the weights, as written ("bfloat16")
    gemms_per_layer: int | None = None
    lm_head: int = 1  # lm_head GEMMs per forward
    # Mixture of experts (None: dense).
    experts: int | None = None  # num_local_experts / num_experts
    experts_per_tok: int | None = None
    moe_ffn: int | None = None  # moe_intermediate_size (per expert); else ffn
    shared_expert_ffn: int | None = None  # shared_expert_intermediate_size
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None  # e.g. ("sliding_attention", "full_attention")
    quantization: Mapping[str, Any] | None = field(default=None, compare=False)
    # What ran (a manifest's ground truth).
    forwards: int | None = None
    phase: str | None = None
    batch: int | None = None
    tokens: int | None = None
    context: int | None = None
    # Provenance: where the architecture came from ("config" | "manifest" | "cli" | "none"),
    # where the run facts came from ("manifest" | "none"), and the files.
    source: str = "none"
    path: str | None = None
    run_source: str = "none"
    run_path: str | None = None

    # ------------------------------------------------------------------ derived shapes

    @property
    def d(self) -> int:
        """Return the per-head dimension: head_dim when the config gives it, else hidden/heads."""
        if self.head_dim:
            return int(self.head_dim)
        if self.hidden and self.heads:
            return self.hidden // self.heads
        raise UsageError("model shape lacks head_dim (or hidden and heads)")

    @property
    def is_moe(self) -> bool:
        """Return True when the config describes routed experts."""
        return self._routing() is not None

    def _routing(self) -> tuple[int, int] | None:
        """Return (experts, experts_per_tok) of a mixture of experts; None when dense."""
        experts, top_k = self.experts, self.experts_per_tok
        if experts and experts > 1 and top_k:
            return experts, top_k
        return None

    @property
    def expert_ffn(self) -> int | None:
        """Return the MLP width of one routed expert (moe_intermediate_size, else ffn)."""
        return self.moe_ffn or self.ffn

    @property
    def weight_bytes_per_param(self) -> float | None:
        """Bytes per weight the quantization_config implies (None: the weights' dtype).

        ``bits`` (GPTQ/AWQ/bitsandbytes: 4 -> 0.5), ``quant_method`` fp8 / mxfp4 / nvfp4, or
        ``weights`` / ``num_bits`` of compressed-tensors. Scales and zero points are ignored.
        """
        q = self.quantization
        if not q:
            return None
        for key in ("bits", "w_bit", "num_bits", "weight_bits"):
            v = q.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16:
                return v / 8.0
        method = str(q.get("quant_method", "")).lower()
        if method in ("fp8", "fbgemm_fp8", "modelopt") and "fp4" not in str(q).lower():
            return 1.0
        if method in ("mxfp4", "nvfp4") or "fp4" in method:
            return 0.5
        groups = q.get("config_groups")
        if isinstance(groups, dict):  # compressed-tensors: {"group_0": {"weights": {"num_bits": 8}}}
            for g in groups.values():
                w = g.get("weights") if isinstance(g, dict) else None
                bits = w.get("num_bits") if isinstance(w, dict) else None
                if isinstance(bits, int) and 1 <= bits <= 16:
                    return bits / 8.0
        return None

    @property
    def gemms_per_forward(self) -> int | None:
        """Return layers x GEMMs per layer + lm_head GEMMs, when both are known."""
        if self.layers is None or self.gemms_per_layer is None:
            return None
        return self.layers * self.gemms_per_layer + self.lm_head

    @property
    def has_shape(self) -> bool:
        """Return True when every field the FLOP/byte formulas need is known."""
        return all(v is not None for v in (self.layers, self.hidden, self.heads, self.kv_heads,
                                           self.ffn if not self.is_moe else self.expert_ffn,
                                           self.vocab))

    def missing_shape(self) -> list[str]:
        """Return the names of the shape fields the formulas need and this spec lacks."""
        need = {"layers": self.layers, "hidden": self.hidden, "heads": self.heads,
                "kv_heads": self.kv_heads, "ffn": self.expert_ffn if self.is_moe else self.ffn,
                "vocab": self.vocab}
        return [k for k, v in need.items() if v is None]

    def dims(self) -> ModelDims:
        """Return the shape fields as ints; UsageError naming the first one this spec lacks
        (the order and message of :meth:`missing_shape`)."""

        def need(name: str, value: int | None) -> int:
            if value is None:
                raise UsageError(f"model config lacks {name!r}")
            return value

        routing = self._routing()
        layers = need("layers", self.layers)
        hidden = need("hidden", self.hidden)
        heads = need("heads", self.heads)
        kv_heads = need("kv_heads", self.kv_heads)
        ffn = need("ffn", self.expert_ffn if routing else self.ffn)
        vocab = need("vocab", self.vocab)
        experts, top_k = routing or (1, 1)
        return ModelDims(layers, hidden, heads, kv_heads, ffn, vocab, self.d, experts, top_k)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (head_dim resolved, quantization copied)."""
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Mapping):
                v = dict(v)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        try:
            d["head_dim"] = self.d
        except UsageError:
            d["head_dim"] = None
        d["gemms_per_forward"] = self.gemms_per_forward
        return d

    # Mapping-style access for code that used the former dict configs.
    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> ModelSpec:
        """Return a ModelSpec from short keys (layers, hidden, ...) or a Hugging Face dict.

        Strict: every shape field must be present (UsageError naming the first missing one).
        """
        if isinstance(cfg, ModelSpec):
            return cfg
        if any(k in cfg for k in ("num_hidden_layers", "hidden_size", "n_layer")):
            return from_hf_config(dict(cfg), strict=True)
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in cfg.items() if k in known and v is not None}
        if "tie_word_embeddings" in cfg and "tie_embeddings" not in kw:
            kw["tie_embeddings"] = bool(cfg["tie_word_embeddings"])
        if "kv_heads" not in kw and "heads" in kw:
            kw["kv_heads"] = kw["heads"]
        if isinstance(kw.get("layer_types"), list):
            kw["layer_types"] = tuple(kw["layer_types"])
        spec = cls(**kw)
        missing = spec.missing_shape()
        if missing:
            raise UsageError(f"model config lacks {missing[0]!r}")
        return spec


# --------------------------------------------------------------------------- readers


def _read(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read model config: {exc.strerror or exc}", str(path)) from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"cannot read model config: not valid JSON ({exc})", str(path)) from None


# Typed coercion of config/manifest values: field -> (smallest, largest) accepted integer.
_INT_FIELDS: dict[str, tuple[int, int]] = {
    "layers": (1, 100_000), "gemms_per_layer": (0, 1000), "forwards": (1, 10**9),
    "hidden": (1, 10**7), "heads": (1, 10**5), "kv_heads": (1, 10**5), "ffn": (1, 10**8),
    "vocab": (1, 10**9), "head_dim": (1, 10**5), "batch": (1, 10**7), "tokens": (0, 10**12), "context": (0, 10**12),
}


def _checked(fields: dict[str, Any], path: str | None, source: str,
             **extra: Any) -> ModelSpec:
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
    for key in ("dtype", "phase", "name"):
        v = fields.get(key)
        if v is not None and not isinstance(v, str):
            raise UsageError(f"{source} field {key!r} must be a string, got {str(v)[:40]!r}"
                             f"{hint}", path)
    return ModelSpec(**fields, source=source, path=path, **extra)


def _int_field(cfg: Mapping[str, Any], keys: tuple[str, ...], strict: bool,
               path: str | None) -> int | None:
    for key in keys:
        if key not in cfg or cfg[key] is None:
            continue
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            if strict:
                raise UsageError(f"model config: {key} must be a positive integer, got {v!r}",
                                 path)
            return None
        return v
    return None


def from_hf_config(cfg: Mapping[str, Any], path: str | None = None, *,
                   strict: bool = False) -> ModelSpec:
    """Return the ModelSpec of a Hugging Face config dict.

    ``strict=False`` (diagnosis): only ``num_hidden_layers`` is required; a field with an odd
    value is dropped. ``strict=True`` (capture): layers, hidden, heads, ffn (or the MoE width)
    and vocab must all be positive integers. ``num_key_value_heads`` defaults to
    ``num_attention_heads``. Multimodal configs with a ``text_config`` use that.
    """
    text = cfg.get("text_config")
    if isinstance(text, dict) and "num_hidden_layers" in text:
        cfg = {**cfg, **text}

    def num(*keys: str) -> int | None:
        return _int_field(cfg, keys, strict, path)

    # the layer count is required, so a bad one is an error even when lenient (-5, "32")
    layers = _int_field(cfg, ("num_hidden_layers", "n_layer", "num_layers"), True, path)
    if layers is None:
        raise UsageError("model config has no num_hidden_layers", path)
    heads = num("num_attention_heads", "n_head")
    mtype = cfg.get("model_type")
    mtype = str(mtype) if isinstance(mtype, str) else None
    experts = num("num_local_experts", "num_experts", "n_routed_experts")
    ltypes = cfg.get("layer_types")
    quant = cfg.get("quantization_config")
    spec = ModelSpec(
        layers=layers,
        hidden=num("hidden_size", "n_embd", "d_model"),
        heads=heads,
        kv_heads=num("num_key_value_heads") or heads,
        ffn=num("intermediate_size", "n_inner", "ffn_dim"),
        vocab=num("vocab_size"),
        head_dim=num("head_dim"),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        name=Path(path).stem if path else None,
        model_type=mtype,
        dtype=cfg.get("torch_dtype") if isinstance(cfg.get("torch_dtype"), str) else None,
        gemms_per_layer=_GEMMS_PER_LAYER_BY_TYPE.get(mtype or "llama", 7),
        experts=experts,
        experts_per_tok=num("num_experts_per_tok", "moe_topk", "top_k") if experts else None,
        moe_ffn=num("moe_intermediate_size"),
        shared_expert_ffn=num("shared_expert_intermediate_size"),
        # Qwen2/3 configs carry a sliding_window with use_sliding_window false: no window.
        sliding_window=(None if cfg.get("use_sliding_window") is False
                        else num("sliding_window")),
        layer_types=tuple(str(t) for t in ltypes) if isinstance(ltypes, list) else None,
        quantization=MappingProxyType(dict(quant)) if isinstance(quant, dict) else None,
        source="config",
        path=path,
    )
    if strict:
        missing = spec.missing_shape()
        if missing:
            hf = {"layers": "num_hidden_layers", "hidden": "hidden_size",
                  "heads": "num_attention_heads", "kv_heads": "num_key_value_heads",
                  "ffn": "intermediate_size", "vocab": "vocab_size"}
            raise UsageError(f"model config lacks {', '.join(hf[m] for m in missing)}", path)
    return spec


def read_hf_config(path: str | Path, *, strict: bool = False) -> ModelSpec:
    """Read a Hugging Face ``config.json`` file (see :func:`from_hf_config` for ``strict``)."""
    p = Path(path)
    data = _read(p)
    if not isinstance(data, dict):
        raise UsageError("model config is not a JSON object", str(p))
    spec = from_hf_config(data, str(p), strict=strict)
    name = p.parent.name if p.stem == "config" and p.parent.name else p.stem
    return replace(spec, name=name)


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
        hidden=cfg.get("hidden"),
        heads=cfg.get("heads"),
        kv_heads=cfg.get("kv_heads"),
        ffn=cfg.get("ffn"),
        vocab=cfg.get("vocab"),
        head_dim=cfg.get("head_dim"),
        tie_embeddings=bool(cfg.get("tie_embeddings", False)),
        name=cfg.get("name"),
        gemms_per_layer=gpl,
        dtype=entry.get("dtype"),
        forwards=forwards,
        phase=entry.get("phase"),
        batch=entry.get("batch"),
        tokens=entry.get("tokens"),
        context=entry.get("context"),
    ), path, "manifest", run_source="manifest", run_path=path)


def merge(arch: ModelSpec, run: ModelSpec | None) -> ModelSpec:
    """Return ``arch``'s architecture with ``run``'s facts about what ran.

    Architecture fields come from ``arch`` where it sets them (else from ``run``, e.g. a
    manifest's config block); run fields (forwards, phase, batch, tokens, context) come from
    ``run``: a config never erases what the capture ran.
    """
    if run is None:
        return arch
    kw: dict[str, Any] = {}
    defaults = ModelSpec()
    for name in ARCH_FIELDS:
        a = getattr(arch, name)
        if a is None or a == getattr(defaults, name) and name != "lm_head":
            r = getattr(run, name)
            if r is not None and r != getattr(defaults, name):
                kw[name] = r
    for name in RUN_FIELDS:
        r = getattr(run, name)
        if r is not None:
            kw[name] = r
    kw["run_source"] = run.run_source
    kw["run_path"] = run.run_path
    return replace(arch, **kw)


def load_config(path: str | Path, *, strict: bool = False) -> ModelSpec:
    """A Hugging Face config.json or a single-capture manifest."""
    p = Path(path)
    data = _read(p)
    if not isinstance(data, dict):
        raise UsageError("model config is not a JSON object", str(p))
    if "config" in data and ("gemms_per_forward" in data or "phase" in data):
        return from_manifest_entry(data, str(p))
    return from_hf_config(data, str(p), strict=strict)


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

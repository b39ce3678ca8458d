"""Capture settings without torch: model shapes, presets, options, names and memory estimates.

Everything here is plain Python so that ``profdiag capture --help`` and option validation work
(and fail with clear messages) on a machine where torch is not installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..hardware import dtype_size
from ..modelspec import ModelSpec, read_hf_config

PHASES = ("prefill", "decode", "generate")
DTYPES = ("float32", "bfloat16", "float16")
# bytes per element of each capture dtype, from the one table (hardware.DTYPE_BYTES)
DTYPE_BYTES = {d: int(dtype_size(d) or 0) for d in DTYPES}
GIB = 1024**3

# Fixed slack for the allocator, the profiler's own buffers and the runtime (why: a capture
# that fits the tensors exactly still dies on the first workspace allocation).
_RUNTIME_MARGIN_BYTES = 256 * 1024**2


# The one model-shape class (profdiag.modelspec); the capture name stays as an alias.
ModelConfig = ModelSpec

_SHAPE_FIELDS = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab")


def dense_ffn(cfg: ModelSpec) -> int:
    """Return the MLP width of the capture's dense model: ``--ffn`` (intermediate_size).

    Also for a config that describes experts, which the capture model does not build: there
    ``cfg.dims().ffn`` is one expert's width (moe_intermediate_size), not this one.
    """
    if cfg.ffn is None:
        raise UsageError("model config lacks 'ffn'")
    return cfg.ffn


def gemms_per_layer(cfg: ModelSpec, fused_qkv: bool = False) -> int:
    """Return the linear layers per block: q,k,v,o + gate,up,down = 7, or 5 with fused qkv."""
    return 5 if fused_qkv else 7


def gemms_per_forward(cfg: ModelSpec, fused_qkv: bool = False) -> int:
    """Return GEMMs per forward: gemms_per_layer x layers + 1 lm_head."""
    return gemms_per_layer(cfg, fused_qkv) * int(cfg.layers or 0) + 1


def param_count(cfg: ModelSpec) -> int:
    """Return the number of weights (embedding, projections, norms, lm_head).

    Fused qkv has the same total; the count is the roofline module's, one formula for both.
    """
    from ..roofline import model_params

    return model_params(cfg)


def manifest_config(cfg: ModelSpec) -> dict[str, Any]:
    """Return the manifest's ``config`` object (name, the six shapes, head_dim)."""
    out: dict[str, Any] = {"name": cfg.name}
    out.update({f: getattr(cfg, f) for f in _SHAPE_FIELDS})
    out["head_dim"] = cfg.d
    return out


def validate(cfg: ModelSpec) -> None:
    """Raise UsageError when the shapes cannot build a model."""
    for f in _SHAPE_FIELDS:
        v = getattr(cfg, f)
        if v is None or v <= 0:
            raise UsageError(f"--{f.replace('_', '-')} must be positive, got {v}")
    m = cfg.dims()  # every field is set now
    if cfg.head_dim is None and m.hidden % m.heads:
        raise UsageError(f"hidden ({m.hidden}) must be a multiple of heads ({m.heads})")
    if m.heads % m.kv_heads:
        raise UsageError(f"heads ({m.heads}) must be a multiple of kv_heads ({m.kv_heads})")
    if m.head_dim % 2:
        raise UsageError(f"head_dim ({m.head_dim}) must be even for RoPE")


def _preset(name: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int,
            vocab: int) -> ModelSpec:
    return ModelSpec(layers, hidden, heads, kv_heads, ffn, vocab, name=name, model_type="llama",
                     gemms_per_layer=7, source="cli")


PRESETS: dict[str, ModelSpec] = {
    "tiny": _preset("tiny", 4, 512, 8, 8, 1536, 32000),
    "1b": _preset("1b", 16, 2048, 32, 8, 8192, 128256),
    "8b": _preset("8b", 32, 4096, 32, 8, 14336, 128256),
}


def load_hf_config(path: str | Path) -> dict[str, int]:
    """Read a Hugging Face config.json strictly; return the shape fields it defines.

    The one reader (``modelspec.read_hf_config(strict=True)``): ``num_key_value_heads``
    defaults to ``num_attention_heads``; every other shape key is required. ``head_dim`` is
    included when the config gives it.
    """
    spec = read_hf_config(path, strict=True)
    out = {f: getattr(spec, f) for f in _SHAPE_FIELDS}
    if spec.head_dim is not None:
        out["head_dim"] = spec.head_dim
    return out


def resolve_config(preset: str = "tiny", model_config: str | Path | None = None,
                   **overrides: int | None) -> ModelSpec:
    """Return the model shapes: preset, then --model-config, then explicit --layers etc.

    The name is the preset's when nothing changed it, the config file's name with
    --model-config (its directory's name when the file is called config.json), else "custom".
    """
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    base = PRESETS[preset]
    cfg = base
    name = base.name
    if model_config is not None:
        spec = read_hf_config(model_config, strict=True)
        cfg = replace(spec, gemms_per_layer=7, source="config")
        name = spec.name
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(_SHAPE_FIELDS)
    if unknown:
        raise TypeError(f"unknown model fields {sorted(unknown)}")
    if given:
        # A new width or head count invalidates a head_dim derived from the old ones.
        keep_hd = cfg.head_dim if not ({"hidden", "heads"} & set(given)) else None
        cfg = replace(cfg, layers=given.get("layers", cfg.layers),
                      hidden=given.get("hidden", cfg.hidden),
                      heads=given.get("heads", cfg.heads),
                      kv_heads=given.get("kv_heads", cfg.kv_heads),
                      ffn=given.get("ffn", cfg.ffn), vocab=given.get("vocab", cfg.vocab),
                      head_dim=keep_hd)
    if model_config is None and cfg != base:
        name = "custom"
    cfg = replace(cfg, name=name)
    validate(cfg)
    return cfg


@dataclass(frozen=True)
class CaptureOptions:
    """Everything one capture needs (the CLI's options, resolved)."""

    out: Path
    config: ModelConfig
    phase: str = "decode"
    tokens: int = 128
    batch: int = 1
    context: int = 512
    steps: int = 8
    dtype: str | None = None  # None: bfloat16 on cuda, float32 on cpu
    device: str = "auto"  # cpu | cuda | auto
    cuda_graphs: bool = False
    fused_qkv: bool = False
    # why: a deliberately redundant projection, to test the kernel-count check and gate
    extra_gemm: bool = False
    warmup: int = 1
    record_shapes: bool = True
    with_stack: bool = False
    name: str | None = None
    seed: int = 0
    hf: bool = False

    def validate(self) -> None:
        """Raise UsageError for inconsistent options (before torch is even imported)."""
        if self.phase not in PHASES:
            raise UsageError(f"--phase must be one of {', '.join(PHASES)}, got {self.phase!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise UsageError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        for field in ("tokens", "batch", "steps"):
            if getattr(self, field) < 1:
                raise UsageError(f"--{field} must be at least 1, got {getattr(self, field)}")
        if self.context < 0:
            raise UsageError(f"--context must be >= 0, got {self.context}")
        if self.phase == "decode" and self.context < 1:
            # why: a decode step attends to at least one cached position besides itself
            raise UsageError("--context must be at least 1 for --phase decode")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.cuda_graphs and self.phase == "prefill":
            raise UsageError("--cuda-graphs applies to decode steps: use --phase decode or "
                             "generate")
        if self.cuda_graphs and self.device == "cpu":
            raise UsageError("--cuda-graphs needs --device cuda")
        if self.extra_gemm and self.hf:
            raise UsageError("--extra-gemm is not supported with --hf")
        if self.cuda_graphs and self.hf:
            raise UsageError("--cuda-graphs is not supported with --hf")
        if self.name is not None and (not self.name or "/" in self.name or "\\" in self.name
                                      or self.name in (".", "..")):
            raise UsageError(f"--name must be a plain file stem, got {self.name!r}")

    # Geometry of one capture ------------------------------------------------------------

    @property
    def forwards(self) -> int:
        """Return the profiled forwards: 1 (prefill), steps (decode), 1 + steps (generate)."""
        return {"prefill": 1, "decode": self.steps, "generate": 1 + self.steps}[self.phase]

    @property
    def kv_len(self) -> int:
        """Return the KV-cache capacity in positions that this capture writes or reads."""
        if self.phase == "prefill":
            return self.tokens
        if self.phase == "decode":
            return self.context + self.steps
        return self.tokens + self.steps

    @property
    def decode_context(self) -> int:
        """Return the KV length before the first decode step (0 for prefill).

        For ``generate`` it is the prefill length: the prefill fills the cache from empty.
        """
        return {"prefill": 0, "decode": self.context, "generate": self.tokens}[self.phase]

    @property
    def tokens_per_forward(self) -> int:
        """Return tokens per sequence of the first forward (1 for decode)."""
        return 1 if self.phase == "decode" else self.tokens

    @property
    def recorded_steps(self) -> int:
        """Return the decode steps of this capture (0 for prefill)."""
        return 0 if self.phase == "prefill" else self.steps

    def default_name(self) -> str:
        """Return the file stem, e.g. ``tiny_decode_ctx512_B1_steps8``."""
        c, b = self.config.name, self.batch
        if self.phase == "prefill":
            stem = f"{c}_prefill_T{self.tokens}_B{b}"
        elif self.phase == "decode":
            stem = f"{c}_decode_ctx{self.context}_B{b}_steps{self.steps}"
        else:
            stem = f"{c}_generate_T{self.tokens}_B{b}_steps{self.steps}"
        if self.fused_qkv:
            stem += "_fusedqkv"
        if self.cuda_graphs:
            stem += "_cudagraph"
        if self.hf:
            stem += "_hf"
        return stem

    @property
    def stem(self) -> str:
        """Return --name or the default name."""
        return self.name or self.default_name()


# Memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a capture needs, by part."""

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        """Return the sum of all parts."""
        return self.weights + self.kv_cache + self.activations


def estimate_memory(opts: CaptureOptions, dtype: str) -> MemoryEstimate:
    """Return a rough upper bound of the memory a capture needs on its device.

    KV cache = 2 (K and V) x layers x batch x kv_len x kv_heads x head_dim x dtype bytes.
    Activations: the widest per-token tensors of one forward (hidden, q/k/v, gate/up), the
    attention score matrix in case SDPA falls back to its math path, fp32 logits, and a
    fixed runtime margin.
    """
    c = opts.config
    m = c.dims()
    s = DTYPE_BYTES[dtype]
    weights = param_count(c) * s
    kv = 2 * m.layers * opts.batch * opts.kv_len * m.kv_heads * m.head_dim * s
    t = opts.tokens_per_forward if opts.phase != "generate" else opts.tokens
    rows = opts.batch * t
    per_token = (4 * m.hidden + 3 * dense_ffn(c)
                 + (m.heads + 2 * m.kv_heads) * m.head_dim)
    scores = opts.batch * m.heads * t * opts.kv_len * s
    logits = opts.batch * m.vocab * 4 * 2
    act = rows * per_token * s + scores + logits + _RUNTIME_MARGIN_BYTES
    return MemoryEstimate(weights, kv, act)


def available_ram_bytes() -> int | None:
    """Return available host RAM in bytes (MemAvailable, else free pages), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(est: MemoryEstimate, available: int | None, where: str) -> None:
    """Raise UsageError (one line, GiB figures) when ``est`` exceeds ``available`` bytes."""
    if available is None or est.total <= available:
        return
    raise UsageError(
        f"capture needs ~{est.total / GIB:.2f} GiB (weights {est.weights / GIB:.2f} GiB + "
        f"KV cache {est.kv_cache / GIB:.2f} GiB + activations {est.activations / GIB:.2f} GiB) "
        f"but {where} has {available / GIB:.2f} GiB available; reduce --batch, --context, "
        f"--tokens or the model size")

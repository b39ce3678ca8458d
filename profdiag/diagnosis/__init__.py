"""The diagnosis: mode, categories, overhead, kernel counts, hotspots, verdict and the rest.

``run(trace, ...)`` resolves the model facts, thresholds and rules, then runs the ordered
steps of ``pipeline.PIPELINE``, each a small function returning a frozen result; the last
one builds the Diagnosis. Nothing here renders or prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .. import schema, thresholds as typed_thresholds
from ..classify import load_rules
from ..errors import UsageError
from ..modelspec import ModelSpec, find_manifest, load_config, merge
from ..trace import Trace
from . import idle as idle_mod, pipeline
from .context import build, thresholds
from .model import Diagnosis

__all__ = ["run", "Diagnosis"]


def resolve_spec(trace: Trace, model_config: str | Path | None = None, layers: int | None = None,
                 gemms_per_layer: int | None = None, lm_head: int | None = None,
                 use_manifest: bool = True) -> ModelSpec:
    """Model facts: the architecture from --model-config (else the manifest beside the trace),
    what ran (tokens, batch, context, forwards, phase) from the manifest; CLI numbers override.

    A config never erases what the manifest says ran (modelspec.merge)."""
    spec = ModelSpec()
    manifest = find_manifest(trace.meta.path) if use_manifest else None
    if model_config is not None:
        spec = merge(load_config(model_config), manifest)
    elif manifest is not None:
        spec = manifest
    if layers is not None:
        if layers <= 0:
            raise UsageError("--layers must be positive")
        spec = replace(spec, layers=layers, source="cli" if spec.source == "none" else spec.source)
    if gemms_per_layer is not None:
        if gemms_per_layer <= 0:
            raise UsageError("--gemms-per-layer must be positive")
        spec = replace(spec, gemms_per_layer=gemms_per_layer)
    if lm_head is not None:
        spec = replace(spec, lm_head=lm_head)
    return spec


def run(trace: Trace, model_config: str | Path | None = None, layers: int | None = None,
        gemms_per_layer: int | None = None, lm_head: int | None = None,
        rules: Sequence[str | Path] = (), use_manifest: bool = True, hta: bool = False,
        gpu: str | None = None, gpu_spec: str | Path | None = None,
        shapes_from: str | Path | None = None) -> Diagnosis:
    """Diagnose ``trace``. ``rules`` adds user rule/threshold TOML files; ``shapes_from`` is an
    eager or graph-capture trace of the same model whose GEMM shapes fill in a replay's.

    Every step reads the *compact* table (string columns as sorted Categoricals,
    ``schema.compact``): a canonical ``trace`` is compacted first, into a new Trace (the
    caller's is left as it is); ``profdiag.load(path, compact=True)`` gives one directly."""
    trace = compact_trace(trace)
    kernel_rules, threshold_files, idle_files = _rule_files(rules)
    limits = thresholds(threshold_files)
    typed = typed_thresholds.from_mapping(limits)  # validated when loaded
    spec = resolve_spec(trace, model_config, layers, gemms_per_layer, lm_head, use_manifest)
    ctx = build(trace, spec, load_rules(kernel_rules), limits)
    idle_rules = idle_mod.load_idle_rules(idle_files)
    inputs = pipeline.Run(trace=trace, ctx=ctx, limits=limits, typed=typed,
                          idle_rules=idle_rules, gemms_per_layer=gemms_per_layer, gpu=gpu,
                          gpu_spec=gpu_spec, shapes_from=shapes_from, hta=hta)
    diag: Diagnosis = pipeline.execute(inputs)["diagnosis"]
    return diag


def warm(rules: Sequence[str | Path] = ()) -> None:
    """Read and compile what ``run`` reads besides the trace and the model (the shipped and
    ``rules``' kernel rules, thresholds and idle causes; the shipped engine annotations, GPU
    table and advice) into their caches, so that ``run`` finds them ready: ``report`` does
    this while a forked child still streams the trace (parsers/_prefetch.py). The same
    errors as ``run``'s, which raises them again."""
    kernel_rules, threshold_files, idle_files = _rule_files(rules)
    thresholds(threshold_files)
    load_rules(kernel_rules)
    idle_mod.load_idle_rules(idle_files)
    # the shipped tables every run reads (step annotations, KV writes, GPUs, advice), and the
    # roofline's modules, which the pipeline imports when it reaches that step
    from .. import engines, hardware
    from . import roofline_step, sol, verdict  # noqa: F401

    engines.forms(None)  # None as the pipeline passes it: lru_cache keys f() and f(None) apart
    engines.kv_write_rule(None)
    hardware.known_gpus()
    verdict.advice()


def _rule_files(rules: Sequence[str | Path]
                ) -> tuple[list[str | Path], tuple[str, ...], tuple[str, ...]]:
    """``rules`` split: kernel rule files, threshold files, files with idle causes."""
    texts = {str(p): _read_rules_file(p) for p in rules}  # each file read once
    kernel_rules = [p for p in rules if "[[rule]]" in texts[str(p)]]
    threshold_files = tuple(str(p) for p in rules if "[[rule]]" not in texts[str(p)])
    idle_files = tuple(str(p) for p in rules if idle_mod.declares_idle_causes(texts[str(p)]))
    return kernel_rules, threshold_files, idle_files


def compact_trace(trace: Trace) -> Trace:
    """``trace`` itself when its table is compact, else a Trace of its compacted table."""
    ev = trace.events
    if all(schema.is_compact_dtype(ev[c].dtype) for c in schema.STRING_COLUMNS
           if c in ev.columns):
        return trace
    return Trace(schema.compact(ev), trace.meta)


def _read_rules_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read rules file: {exc.strerror}", str(path)) from None

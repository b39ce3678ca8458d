"""`profdiag roofline`: the napkin calculator (ridge, intensity, bound, speed limits)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import click


@click.command("roofline")
@click.option("--gpu", help="GPU from the hardware table (e.g. a100-sxm4-80gb, h100-sxm).")
@click.option("--gpu-spec", type=click.Path(dir_okay=False),
              help="TOML file with a custom GPU spec (see docs/roofline.md).")
@click.option("--params", type=float, help="Parameter count (e.g. 8e9): every weight read once "
              "per step, 2 FLOPs per weight per token, no KV cache or attention.")
@click.option("--model-config", type=click.Path(dir_okay=False),
              help="Hugging Face config.json (or our short keys): adds the KV cache, attention "
                   "FLOPs and KV bytes per token.")
@click.option("--preset", type=click.Choice(["tiny", "1b", "8b"]),
              help="The bundled model shapes (as `profdiag capture --preset`).")
@click.option("--dtype", default="bf16", show_default=True,
              help="Weights/activations dtype: fp32, tf32, bf16, fp16, fp8, int8, fp4.")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences per step.")
@click.option("--tokens", type=int, default=1, show_default=True,
              help="Prompt tokens per sequence for the prefill figures.")
@click.option("--context", type=int, default=0, show_default=True,
              help="KV positions per sequence before the step (decode reads them).")
@click.option("--bandwidth", type=float,
              help="Override the spec's memory bandwidth, bytes/s (e.g. 2.0e12).")
@click.option("--peak-flops", type=float,
              help="Override the spec's peak FLOP/s for --dtype (e.g. 312e12).")
@click.option("-f", "--format", "fmt", type=click.Choice(["txt", "json"]), default="txt",
              show_default=True, help="Output format.")
def command(gpu: str | None, gpu_spec: str | None, params: float | None,
            model_config: str | None, preset: str | None, dtype: str, batch: int, tokens: int,
            context: int, bandwidth: float | None, peak_flops: float | None, fmt: str) -> None:
    """Napkin roofline for one model on one GPU: ridge point, arithmetic intensity, bound,
    ideal step time, decode speed limit, KV bytes per token and critical batch size.

    \b
    profdiag roofline --gpu a100-sxm4-80gb --params 8e9 --dtype fp16
    profdiag roofline --gpu h100-sxm --model-config config.json --batch 64 --context 4096
    """
    import orjson

    from .. import hardware, napkin, roofline
    from ..errors import UsageError
    from ..renderers.sweep_text import napkin_text

    spec = hardware.resolve(gpu, gpu_spec, None)
    if spec is None:
        raise UsageError("give the GPU as --gpu NAME or --gpu-spec FILE")
    d = hardware.normalize_dtype(dtype) or dtype
    if bandwidth is not None or peak_flops is not None:
        for name, v in (("--bandwidth", bandwidth), ("--peak-flops", peak_flops)):
            if v is not None and not v > 0:
                raise UsageError(f"{name} must be positive, got {v:g}")
        peaks = dict(spec.peak_flops)
        if peak_flops is not None:
            peaks[d] = peak_flops
        spec = dataclasses.replace(
            spec, peak_flops=MappingProxyType(peaks),
            bandwidth=bandwidth if bandwidth is not None else spec.bandwidth,
            source=f"{spec.source}; overridden on the command line")
    given = sum(x is not None for x in (params, model_config, preset))
    if given != 1:
        raise UsageError("give the model as one of --params N, --model-config FILE or --preset")
    config: Any = None
    if model_config is not None:
        config = _load_config(model_config)
    elif preset is not None:
        from ..capture.config import PRESETS

        config = roofline.ModelConfig.from_dict(PRESETS[preset].to_dict())
    if not spec.has_peak(d):
        raise UsageError(f"{spec.name} has no peak for dtype {d!r} "
                         f"(known: {', '.join(sorted(spec.peak_flops))})")
    data = napkin.napkin(spec, d, params=params, config=config, batch=batch, tokens=tokens,
                         context=context)
    if fmt == "json":
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(napkin_text(data), nl=False)


def _load_config(path: str) -> Any:
    from .. import roofline
    from ..capture.config import load_hf_config
    from ..errors import UsageError

    fields = load_hf_config(path)  # one-line errors naming the file
    try:
        return roofline.ModelConfig.from_dict(fields)
    except UsageError as exc:
        raise UsageError(exc.message, path) from None


__all__ = ["command"]

"""`profdiag capture --out DIR`: real torch.profiler traces of prefill/decode with ground truth.

torch is not imported here: the library imports it when a capture runs, so `--help` works
(and is fast) without torch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..capture.config import DTYPES, PHASES, PRESETS, CaptureOptions, resolve_config


@click.command("capture")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output directory (created if missing).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="tiny", show_default=True,
              help="Model shape: tiny (4 layers, hidden 512), 1b (Llama 3.2 1B-like), "
                   "8b (Llama 3 8B-like).")
@click.option("--model-config", type=click.Path(dir_okay=False),
              help="Hugging Face config.json for the shape (overrides the preset).")
@click.option("--layers", type=int, help="Decoder layers (overrides preset and config).")
@click.option("--hidden", type=int, help="Hidden size.")
@click.option("--heads", type=int, help="Attention heads.")
@click.option("--kv-heads", type=int, help="Key/value heads (grouped-query attention).")
@click.option("--ffn", type=int, help="MLP intermediate size.")
@click.option("--vocab", type=int, help="Vocabulary size.")
@click.option("--phase", type=click.Choice(PHASES), default="decode", show_default=True,
              help="prefill: one forward of --tokens; decode: --steps single-token steps over "
                   "a --context cache; generate: one prefill then --steps decode steps.")
@click.option("--tokens", type=int, default=128, show_default=True,
              help="Prefill tokens per sequence (prefill, generate).")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences per forward.")
@click.option("--context", type=int, default=512, show_default=True,
              help="KV-cache length before the first decode step (decode).")
@click.option("--steps", type=int, default=8, show_default=True,
              help="Decode steps (decode, generate).")
@click.option("--dtype", type=click.Choice(DTYPES),
              help="Weights and activations dtype [default: bfloat16 on cuda, float32 on cpu].")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True, help="Where to run; auto picks cuda when available.")
@click.option("--cuda-graphs", is_flag=True,
              help="Capture one decode step in a CUDA graph and replay it per step "
                   "(decode/generate, cuda only).")
@click.option("--fused-qkv", is_flag=True,
              help="One qkv projection instead of q, k, v: 5 GEMMs per layer instead of 7.")
@click.option("--extra-gemm", is_flag=True,
              help="Compute o_proj twice per layer (one redundant GEMM): a trace whose GEMM count "
                   "exceeds what the architecture implies, for testing the gate.")
@click.option("--warmup", type=int, default=1, show_default=True,
              help="Unprofiled warm-up repetitions of each forward kind.")
@click.option("--record-shapes/--no-record-shapes", default=True, show_default=True,
              help="Record operator input shapes (GEMM shapes; slows the host).")
@click.option("--with-stack/--no-with-stack", default=False, show_default=True,
              help="Record Python stacks (large traces).")
@click.option("--name", help="Output file stem [default: e.g. tiny_decode_ctx512_B1_steps8].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for weights and token ids.")
@click.option("--hf", is_flag=True,
              help="Use a transformers LlamaForCausalLM (random init, no download) instead "
                   "of the built-in model; needs transformers.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def command(out: str, preset: str, model_config: str | None, layers: int | None,
            hidden: int | None, heads: int | None, kv_heads: int | None, ffn: int | None,
            vocab: int | None, quiet: bool, **opts: Any) -> None:
    """Capture a real torch.profiler trace of a Llama-style model with its ground truth.

    Writes OUT/NAME.json.gz (Chrome trace) and OUT/NAME.manifest.json (phase, shapes,
    GEMMs per forward, forwards: what `profdiag report` should find). Random weights, no
    download; needs torch (pip install 'profdiag[capture]'). See docs/capture.md.
    """
    from ..capture import capture

    config = resolve_config(preset, model_config, layers=layers, hidden=hidden, heads=heads,
                            kv_heads=kv_heads, ffn=ffn, vocab=vocab)
    options = CaptureOptions(out=Path(out), config=config, **opts)
    options.validate()
    show = not quiet and sys.stderr.isatty()
    with _progress(show, options.forwards) as progress:
        result = capture(options, progress)
    if not quiet:
        d = result.data
        click.echo(f"{d['phase']}: {d['forwards']} forward(s) x {d['gemms_per_forward']} GEMMs "
                   f"on {d['device']} ({d['device_name']}, {d['dtype']})")
        click.echo(f"trace: {result.trace}")
        click.echo(f"manifest: {result.manifest}")


class _ProgressContext:
    """A rich progress bar on stderr over the profiled forwards, or nothing."""

    def __init__(self, show: bool, total: int) -> None:
        self.show = show
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.show:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(TextColumn("capturing"), BarColumn(), MofNCompleteColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task("capture", total=self.total)
        return self._advance

    def _advance(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()


def _progress(show: bool, total: int) -> _ProgressContext:
    """Return a context manager yielding a progress callback (None when hidden)."""
    return _ProgressContext(show, total)


__all__ = ["command"]

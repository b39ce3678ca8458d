"""Run a prefill / decode / generate workload under torch.profiler; write trace + manifest.

torch is imported inside functions only (``import_torch``), so importing this module is cheap
and works without torch; a capture without torch raises MissingDependencyError.
"""

from __future__ import annotations

import gzip
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import MissingDependencyError, OutputError, UsageError
from ..io import ensure_output_dir
from .config import (
    CaptureOptions,
    available_ram_bytes,
    check_memory,
    estimate_memory,
    gemms_per_forward,
    gemms_per_layer,
    manifest_config,
)

TORCH_MISSING = "torch is not installed: pip install 'profdiag[capture]'"
MANIFEST_VERSION = 1

# Called after each profiled forward with (done, total).
ProgressFn = Callable[[int, int], None]


@dataclass
class CaptureResult:
    """What a capture wrote."""

    trace: Path
    manifest: Path
    data: dict[str, Any]  # the manifest's content


def import_torch() -> Any:
    """Return the torch module, or raise MissingDependencyError with the install hint."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(TORCH_MISSING) from None
    return torch


def resolve_device(torch: Any, device: str) -> str:
    """Return 'cpu' or 'cuda' for --device; MissingDependencyError when cuda is absent."""
    has_cuda = bool(torch.cuda.is_available())
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise MissingDependencyError(f"--device cuda: CUDA is not available ({why}, torch "
                                     f"{torch.__version__}); use --device cpu")
    return device


def resolve_dtype(dtype: str | None, device: str) -> str:
    """Return the dtype name: the one asked, else bfloat16 on cuda and float32 on cpu."""
    if dtype:
        return dtype
    return "bfloat16" if device == "cuda" else "float32"


def device_name(torch: Any, device: str) -> str:
    """Return the GPU's name, or the CPU's model name."""
    if device == "cuda":
        return str(torch.cuda.get_device_name(torch.cuda.current_device()))
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_memory(torch: Any, device: str) -> tuple[int | None, str]:
    """Return (free bytes, a name for messages) of the capture's device."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free), f"GPU {torch.cuda.current_device()} ({device_name(torch, device)})"
    return available_ram_bytes(), "this machine's RAM"


def capture(opts: CaptureOptions, progress: ProgressFn | None = None) -> CaptureResult:
    """Profile the workload of ``opts``; return the paths written and the manifest data.

    Raises UsageError (bad options, not enough memory), MissingDependencyError (no torch, no
    CUDA, --hf without transformers) and OutputError (cannot write the output directory).
    """
    opts.validate()
    torch = import_torch()
    device = resolve_device(torch, opts.device)
    if opts.cuda_graphs and device != "cuda":
        raise UsageError("--cuda-graphs needs CUDA (--device cuda)")
    dtype_name = resolve_dtype(opts.dtype, device)
    est = estimate_memory(opts, dtype_name)
    free, where = device_memory(torch, device)
    check_memory(est, free, where)

    out = Path(opts.out)
    ensure_output_dir(out)

    torch.manual_seed(opts.seed)
    dtype = getattr(torch, dtype_name)
    runner = _build_runner(torch, opts, device, dtype)
    prof = _profile(torch, opts, device, runner, progress)

    stem = opts.stem
    trace_path = out / f"{stem}.json.gz"
    manifest_path = out / f"{stem}.manifest.json"
    data = manifest(opts, torch, device, dtype, trace_path.name)
    _write_trace(prof, trace_path)
    try:
        _atomic_write(manifest_path, orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    except BaseException:
        # why: a trace without its manifest would be diagnosed without ground truth
        trace_path.unlink(missing_ok=True)
        raise
    return CaptureResult(trace_path, manifest_path, data)


def manifest(opts: CaptureOptions, torch: Any, device: str, dtype: Any,
             file_name: str) -> dict[str, Any]:
    """Return the ground-truth manifest of a capture (format in docs/capture.md)."""
    cfg = opts.config
    return {
        "manifest_version": MANIFEST_VERSION,
        "file": file_name,
        "phase": opts.phase,
        "tokens": opts.tokens_per_forward,
        "batch": opts.batch,
        "context": opts.decode_context,
        "steps": opts.recorded_steps,
        "cuda_graphs": opts.cuda_graphs,
        "fused_qkv": opts.fused_qkv,
        "extra_gemms_per_layer": 1 if opts.extra_gemm else 0,
        "dtype": str(dtype),
        "device": device,
        "device_name": device_name(torch, device),
        "record_shapes": opts.record_shapes,
        "with_stack": opts.with_stack,
        "config": manifest_config(cfg),
        "gemms_per_layer": gemms_per_layer(cfg, opts.fused_qkv),
        "gemms_per_forward": gemms_per_forward(cfg, opts.fused_qkv),
        "forwards": opts.forwards,
        "torch": str(torch.__version__),
        "impl": "hf" if opts.hf else "own-eager",
        # why: FLOP counting records input shapes, so it follows --record-shapes
        "with_flops": opts.record_shapes,
        "warmup": opts.warmup,
        "seed": opts.seed,
    }


# The workload -------------------------------------------------------------------------


class _Runner:
    """Prefill forwards and decode steps of one model, eager or replayed from a CUDA graph."""

    def __init__(self, torch: Any, opts: CaptureOptions, device: str, model: Any,
                 forward: Callable[[Any, int], Any]) -> None:
        self.torch = torch
        self.opts = opts
        self.device = device
        self.model = model
        self.forward = forward  # (tokens [B, T], pos) -> logits [B, vocab]
        self.graph: Any = None
        self.static_tokens: Any = None
        self.static_logits: Any = None
        self.pos_t: Any = None
        # Run after warm-up, before profiling (the HF model rebuilds its decode context).
        self.after_warmup: Callable[[], None] | None = None
        gen = torch.Generator(device=device)
        gen.manual_seed(opts.seed)
        vocab = opts.config.vocab
        self.prompt = torch.randint(0, vocab, (opts.batch, opts.tokens), device=device,
                                    generator=gen)
        self.first_token = torch.randint(0, vocab, (opts.batch, 1), device=device,
                                         generator=gen)

    @property
    def decode_start(self) -> int:
        """Return the cache position of the first decode step."""
        return self.opts.decode_context

    def prefill(self) -> Any:
        """Run the prefill forward; return the next token ids [B, 1]."""
        logits = self.forward(self.prompt, 0)
        return logits.argmax(-1, keepdim=True)

    def decode(self, tokens: Any, i: int) -> Any:
        """Run decode step ``i`` on ``tokens`` [B, 1]; return the next token ids [B, 1]."""
        if self.graph is None:
            logits = self.forward(tokens, self.decode_start + i)
            return logits.argmax(-1, keepdim=True)
        # why: the graph reads its inputs from fixed addresses; the position advances
        # inside the graph (pos_t += 1), the token is copied in from the previous step.
        if tokens is not self.static_tokens:
            self.static_tokens.copy_(tokens)
        self.graph.replay()
        self.static_tokens.copy_(self.static_logits.argmax(-1, keepdim=True))
        return self.static_tokens

    def capture_graph(self) -> None:
        """Capture one decode step (forward + position increment) in a CUDA graph."""
        torch = self.torch
        self.static_tokens = self.first_token.clone()
        self.pos_t = torch.tensor([self.decode_start], device=self.device, dtype=torch.int64)

        def step() -> Any:
            logits = self.model(self.static_tokens, pos_t=self.pos_t)
            self.pos_t.add_(1)
            return logits

        # why: capture needs the kernels' lazy initialisation done on a side stream first
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(self.opts.warmup, 1)):
                # why: each step advances pos_t; restart so warm-ups never pass the cache end
                self.pos_t.fill_(self.decode_start)
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_logits = step()
        self.graph = graph
        self.reset_graph_position()

    def reset_graph_position(self) -> None:
        """Point the captured step back at the first decode position."""
        self.pos_t.fill_(self.decode_start)
        self.static_tokens.copy_(self.first_token)


def _build_runner(torch: Any, opts: CaptureOptions, device: str, dtype: Any) -> _Runner:
    """Return a runner over a freshly built model (own or Hugging Face) on ``device``."""
    if opts.hf:
        model, forward = _build_hf(torch, opts, device, dtype)
        runner = _Runner(torch, opts, device, model, forward)
        if opts.phase == "decode":
            runner.after_warmup = lambda: _hf_fill_context(torch, runner, opts)
        return runner
    from .model import Llama

    model = Llama(opts.config, batch=opts.batch, max_len=opts.kv_len,
                  device=torch.device(device), dtype=dtype, fused_qkv=opts.fused_qkv,
                  extra_gemm=opts.extra_gemm)
    model.eval()
    if opts.phase == "decode":
        model.fill_cache(opts.context)
    runner = _Runner(torch, opts, device, model, lambda t, pos: model(t, pos=pos))
    if opts.cuda_graphs:
        runner.capture_graph()
    return runner


def _profile(torch: Any, opts: CaptureOptions, device: str, runner: _Runner,
             progress: ProgressFn | None) -> Any:
    """Warm up, then run the workload under torch.profiler; return the stopped profiler."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device == "cuda"
    phase = opts.phase
    with torch.no_grad():
        # Warm-up (not profiled): kernel selection, allocator growth, lazy initialisation.
        for _ in range(opts.warmup):
            if phase in ("prefill", "generate"):
                runner.prefill()
            if phase in ("decode", "generate"):
                if runner.graph is not None:
                    runner.reset_graph_position()  # a replay advances the position
                runner.decode(runner.first_token, 0)
        if runner.graph is not None:
            runner.reset_graph_position()
        if runner.after_warmup is not None:
            runner.after_warmup()
        if cuda:
            torch.cuda.synchronize()

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        total = opts.forwards
        done = 0
        with profile(activities=activities, record_shapes=opts.record_shapes,
                     with_stack=opts.with_stack, with_flops=opts.record_shapes) as prof:
            tokens = runner.first_token
            if phase in ("prefill", "generate"):
                with record_function("prefill"):
                    tokens = runner.prefill()
                done += 1
                if progress:
                    progress(done, total)
            if phase in ("decode", "generate"):
                for i in range(opts.steps):
                    with record_function(f"decode_step_{i}"):
                        tokens = runner.decode(tokens, i)
                    done += 1
                    if progress:
                        progress(done, total)
            if cuda:
                torch.cuda.synchronize()
    return prof


# Hugging Face model (optional) ----------------------------------------------------------


def _build_hf(torch: Any, opts: CaptureOptions, device: str,
              dtype: Any) -> tuple[Any, Callable[[Any, int], Any]]:
    """Return a transformers LlamaForCausalLM (random init) and its forward(tokens, pos).

    The KV cache is a transformers cache object kept across calls; ``layer_N`` ranges come
    from forward hooks on the decoder layers.
    """
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("--hf needs transformers: pip install transformers") \
            from None
    if opts.fused_qkv:
        raise UsageError("--fused-qkv is not supported with --hf (Llama has separate q/k/v)")
    from torch.profiler import record_function

    c = opts.config
    hf_cfg = transformers.LlamaConfig(
        num_hidden_layers=c.layers, hidden_size=c.hidden, num_attention_heads=c.heads,
        num_key_value_heads=c.kv_heads, intermediate_size=c.ffn, vocab_size=c.vocab,
        head_dim=c.d, max_position_embeddings=max(opts.kv_len, 2048), tie_word_embeddings=False)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):  # why: initialise on the device, not in host RAM first
        model = transformers.LlamaForCausalLM(hf_cfg)
    model = model.to(dtype=dtype).eval()
    for i, layer in enumerate(model.model.layers):
        _annotate(layer, f"layer_{i}", record_function)
    state: dict[str, Any] = {"past": None}

    def forward(tokens: Any, pos: int) -> Any:
        if pos == 0:
            state["past"] = None  # a prefill starts from an empty cache
        kwargs: dict[str, Any] = {"use_cache": True, "past_key_values": state["past"]}
        try:  # lm_head on the last token only (name changed across transformers versions)
            result = model(tokens, logits_to_keep=1, **kwargs)
        except TypeError:
            result = model(tokens, num_logits_to_keep=1, **kwargs)
        state["past"] = result.past_key_values
        return result.logits[:, -1, :].float()

    return model, forward


def _annotate(module: Any, name: str, record_function: Any) -> None:
    """Wrap every call of ``module`` in a record_function range ``name`` via hooks."""
    stack: list[Any] = []

    def pre(_mod: Any, _args: Any) -> None:
        rf = record_function(name)
        rf.__enter__()
        stack.append(rf)

    def post(_mod: Any, _args: Any, _out: Any) -> None:
        stack.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(pre)
    module.register_forward_hook(post)


def _hf_fill_context(torch: Any, runner: _Runner, opts: CaptureOptions) -> None:
    """Prefill ``context`` random tokens (not profiled) so decode steps see a real cache."""
    ctx = torch.randint(0, opts.config.vocab, (opts.batch, opts.context), device=runner.device)
    with torch.no_grad():
        runner.forward(ctx, 0)  # pos 0 starts a fresh cache; decode steps continue it


# Output -------------------------------------------------------------------------------


@contextmanager
def _temp_in(directory: Path, suffix: str) -> Iterator[Path]:
    """Yield a fresh temp path in ``directory`` (same filesystem, so rename is atomic)."""
    fd, name = tempfile.mkstemp(prefix=".profdiag-capture-", suffix=suffix, dir=directory)
    os.close(fd)
    tmp = Path(name)
    # why: mkstemp creates 0600; the renamed output should get the usual umask-based mode
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """Return the process umask (reading it requires setting it, so set it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_trace(prof: Any, path: Path) -> None:
    """Export the profiler's Chrome trace, gzip it and rename it into place."""
    try:
        with _temp_in(path.parent, ".json") as raw, _temp_in(path.parent, ".json.gz") as gz:
            prof.export_chrome_trace(str(raw))
            with open(raw, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(gz, path)
    except OSError as exc:
        raise OutputError(f"cannot write trace: {exc.strerror or exc}", str(path)) from None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    try:
        with _temp_in(path.parent, ".tmp") as tmp:
            tmp.write_bytes(data)
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write manifest: {exc.strerror or exc}", str(path)) from None


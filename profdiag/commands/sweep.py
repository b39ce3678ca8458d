"""`profdiag sweep`: prompt length x output length x batch, on the bundled model or a server.

torch is imported only when a local sweep runs, so `--help` and a `--server` sweep work
without it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from .options import parse_labels, record_options


@click.command("sweep")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output folder: traces/, reports/, points/, sweep.json, sweep.html, "
                   "sweep.report.json, *.csv. Rerunning into it resumes the sweep.")
@click.option("--tokens", help="Prompt lengths per sequence, e.g. 32,128,512 (generate points: "
                               "one prefill, then --new-tokens decode steps).")
@click.option("--new-tokens", default="8", show_default=True,
              help="Output lengths (decode steps per point), e.g. 8,32.")
@click.option("--batch", default="1", show_default=True,
              help="Batch sizes (sequences per step; concurrent requests with --server).")
@click.option("--context", help="Decode-only points over a random cache of these lengths, "
                                "e.g. 512,2048 (local runs only).")
@click.option("--preset", type=click.Choice(["tiny", "1b", "8b"]), default="tiny",
              show_default=True, help="Bundled model shape (as `profdiag capture`).")
@click.option("--model-config", type=click.Path(dir_okay=False),
              help="Hugging Face config.json for the shape (overrides the preset).")
@click.option("--layers", type=int, help="Decoder layers (overrides preset and config).")
@click.option("--hidden", type=int, help="Hidden size.")
@click.option("--heads", type=int, help="Attention heads.")
@click.option("--kv-heads", type=int, help="Key/value heads.")
@click.option("--ffn", type=int, help="MLP intermediate size.")
@click.option("--vocab", type=int, help="Vocabulary size.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True, help="Where the bundled model runs.")
@click.option("--cuda-graphs/--no-cuda-graphs", default=False, show_default=True,
              help="Replay decode steps from a CUDA graph (cuda only).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              help="[default: bfloat16 on cuda, float32 on cpu]")
@click.option("--warmup", type=int, default=1, show_default=True,
              help="Unprofiled warm-up repetitions per point.")
@click.option("--record-shapes/--no-record-shapes", default=False, show_default=True,
              help="Record operator shapes in the traces (slows eager decode on the host).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--repeat", type=int, default=1, show_default=True,
              help="Capture each point N times and keep the fastest try (its trace, report "
                   "and numbers): noise on a shared machine only adds time.")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's); 1 gives "
                                          "steadier times on a loaded machine.")
@click.option("--gpu", help="Hardware spec for the speed of light (default: the device's entry "
                            "in the table; a CPU is measured).")
@click.option("--gpu-spec", type=click.Path(dir_okay=False), help="TOML file with a spec.")
@click.option("--server", help="Base URL of an OpenAI-compatible server (llama.cpp, vLLM, "
                               "SGLang): measure TTFT and inter-token latency instead.")
@click.option("--model", "server_model", help="Model name sent to the server (default: the "
                                              "first of /v1/models, else none).")
@click.option("--request-timeout", type=float, default=60.0, show_default=True,
              help="Seconds without a streamed byte before a request counts as stalled.")
@click.option("--server-profile/--no-server-profile", default=True, show_default=True,
              help="Call the server's /start_profile and /stop_profile around each point "
                   "when it has them (vLLM, SGLang).")
@click.option("--server-trace-dir", type=click.Path(file_okay=False),
              help="Where the server writes its profiler traces (VLLM_TORCH_PROFILER_DIR / "
                   "SGLANG_TORCH_PROFILER_DIR): the new ones are diagnosed with their point.")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary.")
@record_options
def command(out: str, tokens: str | None, new_tokens: str, batch: str, context: str | None,
            preset: str, model_config: str | None, layers: int | None, hidden: int | None,
            heads: int | None, kv_heads: int | None, ffn: int | None, vocab: int | None,
            device: str, cuda_graphs: bool, dtype: str | None, warmup: int,
            record_shapes: bool, seed: int, repeat: int, threads: int | None, gpu: str | None,
            gpu_spec: str | None, server: str | None,
            server_model: str | None, request_timeout: float, server_profile: bool,
            server_trace_dir: str | None, quiet: bool, **rec: Any) -> None:
    """Sweep prompt length (--tokens), output length (--new-tokens), batch (--batch) and
    context (--context): every point captured and diagnosed, then the bottleneck curves
    (prefill vs prompt length, decode per token vs context and batch, measured next to the
    speed of light, the regime per point) in OUT/sweep.html.

    \b
    profdiag sweep --preset tiny --device cpu --tokens 32,128,512 --new-tokens 8,32 \\
        --batch 1,4 --out S
    profdiag sweep --server http://127.0.0.1:8000 --tokens 128,512 --batch 1,8 --out S
    """
    from .. import sweep as sw
    from ..capture.config import resolve_config
    from ..errors import UsageError

    labels = parse_labels(rec.get("labels") or ())
    axes = {"tokens": sw.parse_axis(tokens, "tokens"),
            "new_tokens": sw.parse_axis(new_tokens, "new-tokens"),
            "batch": sw.parse_axis(batch, "batch"),
            "context": sw.parse_axis(context, "context")}
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")
    points = sw.grid(axes["tokens"], axes["new_tokens"], axes["batch"], axes["context"])
    config = resolve_config(preset, model_config, layers=layers, hidden=hidden, heads=heads,
                            kv_heads=kv_heads, ffn=ffn, vocab=vocab)
    outp = Path(out)
    progress = _Progress(points, warmup, quiet, 1 if server else max(repeat, 1))
    t0 = time.perf_counter()
    if server:
        if axes["context"]:
            raise UsageError("--context is for local sweeps (a server builds its own cache)")
        if cuda_graphs:
            raise UsageError("--cuda-graphs is for local sweeps")
        results, meta = _server_sweep(server, points, config, outp, server_model,
                                      request_timeout, server_profile, server_trace_dir,
                                      gpu, gpu_spec, dtype, progress)
    else:
        results, meta = _local_sweep(points, config, outp, device, cuda_graphs, dtype, warmup,
                                     record_shapes, seed, repeat, threads, gpu, gpu_spec,
                                     progress)
    progress.close()
    report = sw.write_outputs(outp, results, meta)
    run_ids = _record(results, outp, rec, labels) if rec.get("record") else []
    if not quiet:
        c = report["counts"]
        click.echo(f"sweep: {c['ok']} of {c['points']} point(s) ok"
                   + (f", {c['failed']} failed" if c["failed"] else "")
                   + f" in {time.perf_counter() - t0:.1f} s")
        for line in report["sentences"]:
            click.echo(f"  {line}")
        click.echo(f"report: {outp / 'sweep.html'}")
        if run_ids:
            click.echo(f"recorded as runs {run_ids[0]}..{run_ids[-1]}")


def _local_sweep(points: list[Any], config: Any, out: Path, device: str, cuda_graphs: bool,
                 dtype: str | None, warmup: int, record_shapes: bool, seed: int, repeat: int,
                 threads: int | None, gpu: str | None, gpu_spec: str | None,
                 progress: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from .. import hardware, sweep as sw
    from ..capture.run import (
        device_memory,
        device_name,
        import_torch,
        resolve_device,
        resolve_dtype,
    )
    from ..errors import UsageError
    from ..sweep import local

    torch = import_torch()
    dev = resolve_device(torch, device)
    if cuda_graphs and dev != "cuda":
        raise UsageError("--cuda-graphs needs CUDA (--device cuda)")
    dt = resolve_dtype(dtype, dev)
    if repeat < 1:
        raise UsageError(f"--repeat must be >= 1, got {repeat}")
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    settings = {"model_name": config.name, "config": config.to_dict(), "device": dev,
                "dtype": dt, "cuda_graphs": cuda_graphs, "warmup": warmup,
                "record_shapes": record_shapes, "seed": seed,
                "threads": int(torch.get_num_threads()), "repeat": repeat}
    free, where = device_memory(torch, dev)
    local.check_all_fit(points, config, settings, free, where)
    done = sw.open_folder(out, "local", settings)
    dkey = hardware.normalize_dtype(dt) or "fp32"
    name = device_name(torch, dev)
    if gpu or gpu_spec:
        spec = hardware.resolve(gpu, gpu_spec, None)
    elif dev == "cuda":
        spec = hardware.lookup(name)
    else:
        spec = local.cpu_spec(out, torch, dt, name)
    sw.write_manifest(out, "local", settings, [{**p.to_dict(), "status": "pending"}
                                               for p in points])
    results = local.run_points(points, done, out, config, settings, spec, progress.point_done)
    sw.write_manifest(out, "local", settings, results)
    dbytes = local._DTYPE_BYTES[dt]
    model = sw.model_meta(config.to_dict() | {})
    model.pop("name", None)
    meta = {"target": "local", "settings": {**settings, "device_name": name}, "model": model,
            "spec": sw.spec_meta(spec, dkey, dbytes),
            "model_crossover_tokens": model["crossover_tokens"]}
    return results, meta


def _server_sweep(url: str, points: list[Any], config: Any, out: Path, model: str | None,
                  timeout: float, profile: bool, trace_dir: str | None, gpu: str | None,
                  gpu_spec: str | None, dtype: str | None,
                  progress: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from .. import hardware, sweep as sw
    from ..sweep import server as srv

    dt = dtype or "bfloat16"
    dkey = hardware.normalize_dtype(dt) or "bf16"
    dbytes = hardware.DTYPE_BYTES[dkey]
    client = srv.Client(url, model=model, timeout=timeout)
    settings = {"server": client.base, "model": client.model, "model_name": config.name,
                "config": config.to_dict(), "dtype": dt, "profile": profile}
    done = sw.open_folder(out, "server", settings)
    spec = hardware.resolve(gpu, gpu_spec, None) if (gpu or gpu_spec) else None
    sw.write_manifest(out, "server", settings, [{**p.to_dict(), "status": "pending"}
                                                for p in points])
    results = srv.run_points(client, points, done, out, config, spec, dkey, dbytes, profile,
                             Path(trace_dir) if trace_dir else None, progress.point_done)
    sw.write_manifest(out, "server", settings, results)
    model_d = sw.model_meta(config.to_dict())
    model_d.pop("name", None)
    meta = {"target": "server", "settings": settings, "model": model_d,
            "spec": sw.spec_meta(spec, dkey, dbytes),
            "model_crossover_tokens": model_d["crossover_tokens"]}
    return results, meta


def _record(results: list[dict[str, Any]], out: Path, rec: dict[str, Any],
            labels: dict[str, str]) -> list[int]:
    """Record every point's diagnosis (local) or measurements (server) in the history, with
    labels sweep=<folder>, point=<id>, tokens, new_tokens, batch, context."""
    from .. import history
    from ..sweep.grid import read_json

    ids = []
    for r in results:
        if r.get("status") != "ok" or not r.get("report"):
            continue
        data = read_json(out / r["report"])
        lab = {**labels, "sweep": out.resolve().name, "point": r["id"],
               "tokens": str(r["tokens"]), "new_tokens": str(r["new_tokens"]),
               "batch": str(r["batch"]), "context": str(r["context"])}
        trace = out / r["trace"] if r.get("trace") else None
        ids.append(history.record(data, trace, labels=lab, db=rec.get("db")))
    return ids


class _Progress:
    """Points done, with a time estimate weighted by each point's work: a rich bar on a
    terminal, else one line per point on stderr (nothing with --quiet)."""

    def __init__(self, points: list[Any], warmup: int, quiet: bool, repeat: int = 1) -> None:
        self.cost = {p.id: repeat * self._cost(p, warmup) for p in points}
        self.total = sum(self.cost.values())
        self.done_cost = 0.0
        self.timed_cost = 0.0
        self.timed_s = 0.0
        self.n = 0
        self.count = len(points)
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.bar: Any = None
        self.task: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("sweep {task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("~{task.fields[eta]} left"),
                                TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.count, eta="?")

    @staticmethod
    def _cost(p: Any, warmup: int) -> float:
        # A decode step streams the weights like ~64 prompt tokens do (a rough unit).
        prefill = p.batch * p.tokens if p.kind == "generate" else 0
        return (1 + warmup) * prefill + (p.new_tokens + warmup) * (64 + p.batch)

    def point_done(self, point: Any, res: dict[str, Any]) -> None:
        self.n += 1
        c = self.cost[point.id]
        self.done_cost += c
        if res.get("wall_s") is not None and not res.get("_resumed"):
            self.timed_cost += c
            self.timed_s += float(res["wall_s"])
        left = self.total - self.done_cost
        eta = f"{left * self.timed_s / self.timed_cost:.0f} s" if self.timed_cost else "?"
        if self.bar is not None:
            self.bar.update(self.task, completed=self.n, description=point.id, eta=eta)
        elif not self.quiet:
            status = res.get("status")
            click.echo(f"[{self.n}/{self.count}] {point.id}: {status}"
                       + (f" ({res['wall_s']:.1f} s)" if res.get("wall_s") is not None else "")
                       + (f": {res.get('error')}" if status != "ok" else "")
                       + f", ~{eta} left", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


__all__ = ["command"]

"""A small OpenAI-compatible completions server over the bundled model, for testing sweeps.

    python -m profdiag.sweep.tinyserver --port 0 --layers 2 [--fail-on 3] [--stall-on 4]

It generates for real: the built-in Llama decoder (random weights, profdiag.capture.model)
runs a prefill of the prompt's token ids and one greedy decode step per streamed token, each
request with its own KV cache; requests take turns one forward at a time (no batching). It
serves ``GET /v1/models``, ``POST /v1/completions`` (``stream: true`` as server-sent events,
or a single JSON answer) and, like vLLM and SGLang, ``POST /start_profile`` and
``/stop_profile`` (torch.profiler, the trace written into ``--trace-dir``). Binds 127.0.0.1
only; prints ``listening on http://127.0.0.1:PORT`` once ready.

For failure tests: ``--fail-on N`` answers the N-th completion request (1-based, comma list)
with HTTP 500; ``--stall-on N`` streams one token of the N-th request and then sends nothing
for ``--stall-s`` seconds; ``--exit-on N`` makes the process exit at the N-th request;
``--no-done`` ends streams without ``data: [DONE]`` (as some servers do).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL_ID = "profdiag-tiny"


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from ..capture.config import resolve_config
        from ..capture.model import Llama

        torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        self.torch = torch
        self.cfg = resolve_config(args.preset, None, layers=args.layers, hidden=args.hidden,
                                  heads=args.heads, kv_heads=args.kv_heads, ffn=args.ffn,
                                  vocab=args.vocab)
        self.vocab: int = int(self.cfg.vocab or 0)  # resolve_config always sets it
        self.max_len = args.max_len
        self.model = Llama(self.cfg, batch=1, max_len=args.max_len,
                           device=torch.device("cpu"), dtype=torch.float32).eval()
        self.count_lock = threading.Lock()
        self.count = 0
        self.fail_on = set(args.fail_on)
        self.stall_on = set(args.stall_on)
        self.exit_on = set(args.exit_on)
        self.stall_s = args.stall_s
        self.no_done = args.no_done
        self.trace_dir = Path(args.trace_dir) if args.trace_dir else None
        self.prof: Any = None
        # why: one engine thread runs every forward and owns the profiler (torch.profiler
        # starts and stops in one thread and records that thread's ops), as a real server's
        # engine loop does; handler threads submit work and wait for the answer.
        self.jobs: queue.Queue[tuple[Any, ...]] = queue.Queue()
        threading.Thread(target=self._engine, daemon=True).start()

    def _engine(self) -> None:
        from torch.profiler import ProfilerActivity, profile, record_function

        while True:
            kind, args, reply = self.jobs.get()
            try:
                if kind == "forward":
                    sess, tokens, pos, label = args
                    with self.torch.no_grad(), record_function(label):
                        reply.put(int(sess(tokens, pos=pos).argmax(-1).item()))
                elif kind == "start":
                    if self.prof is None:
                        self.prof = profile(activities=[ProfilerActivity.CPU])
                        self.prof.__enter__()
                    reply.put("started")
                elif kind == "stop":
                    if self.prof is None:
                        reply.put(None)
                        continue
                    prof, self.prof = self.prof, None
                    prof.__exit__(None, None, None)
                    assert self.trace_dir is not None
                    self.trace_dir.mkdir(parents=True, exist_ok=True)
                    name = self.trace_dir / f"tinyserver-{int(time.time() * 1e6)}.pt.trace.json"
                    tmp = name.with_name(name.name + ".tmp")
                    prof.export_chrome_trace(str(tmp))
                    os.replace(tmp, name)
                    reply.put(str(name))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                reply.put(exc)

    def call(self, kind: str, *args: Any) -> Any:
        reply: queue.Queue[Any] = queue.Queue()
        self.jobs.put((kind, args, reply))
        out = reply.get()
        if isinstance(out, Exception):
            raise out
        return out

    def next_request(self) -> int:
        with self.count_lock:
            self.count += 1
            return self.count

    def session(self) -> Any:
        """A model view with its own KV cache (the weights are shared)."""
        m = copy.copy(self.model)
        m.k_cache = self.torch.zeros_like(self.model.k_cache)
        m.v_cache = self.torch.zeros_like(self.model.v_cache)
        return m


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the connection closes after each answer

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._json(400, {"error": {"message": "body is not JSON"}})
                return
            path = self.path.rstrip("/")
            if path == "/start_profile":
                self._start_profile()
            elif path == "/stop_profile":
                self._stop_profile()
            elif path == "/v1/completions":
                self._complete(req)
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def _start_profile(self) -> None:
            if state.trace_dir is None:
                self._json(404, {"error": {"message": "profiling disabled (no --trace-dir)"}})
                return
            self._json(200, {"status": state.call("start")})

        def _stop_profile(self) -> None:
            if state.trace_dir is None:
                self._json(404, {"error": {"message": "profiling disabled (no --trace-dir)"}})
                return
            trace = state.call("stop")
            self._json(200, {"status": "stopped" if trace else "not running", "trace": trace})

        def _complete(self, req: dict[str, Any]) -> None:
            n = state.next_request()
            if n in state.exit_on:
                os._exit(3)
            if n in state.fail_on:
                self._json(500, {"error": {"message": f"injected failure on request {n}"}})
                return
            prompt = req.get("prompt")
            if isinstance(prompt, str):
                prompt = [b % state.vocab for b in prompt.encode()] or [1]
            if (not isinstance(prompt, list) or not prompt
                    or not all(isinstance(t, int) and 0 <= t < state.vocab for t in prompt)):
                self._json(400, {"error": {"message": "prompt must be token ids < vocab"}})
                return
            max_tokens = int(req.get("max_tokens") or 16)
            if len(prompt) + max_tokens > state.max_len:
                self._json(400, {"error": {"message": f"prompt + max_tokens > {state.max_len}"}})
                return
            stream = bool(req.get("stream"))
            if stream:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
            torch = state.torch
            sess = state.session()
            nxt = torch.tensor([prompt])
            out: list[int] = []
            for i in range(max_tokens):
                if i == 0:
                    tok = state.call("forward", sess, nxt, 0, "prefill")
                else:
                    tok = state.call("forward", sess, torch.tensor([[out[-1]]]),
                                     len(prompt) + i - 1, f"decode_step_{i - 1}")
                out.append(tok)
                if stream:
                    chunk = {"id": f"cmpl-{n}", "object": "text_completion", "model": MODEL_ID,
                             "choices": [{"index": 0, "text": f" t{tok}",
                                          "finish_reason": None}]}
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                    if n in state.stall_on:
                        time.sleep(state.stall_s)
                        return
            if stream:
                final = {"id": f"cmpl-{n}", "object": "text_completion", "model": MODEL_ID,
                         "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}
                self.wfile.write(b"data: " + json.dumps(final).encode() + b"\n\n")
                if not state.no_done:
                    self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            else:
                self._json(200, {"id": f"cmpl-{n}", "object": "text_completion",
                                 "model": MODEL_ID, "choices": [{
                                     "index": 0, "text": "".join(f" t{t}" for t in out),
                                     "finish_reason": "length"}],
                                 "usage": {"prompt_tokens": len(prompt),
                                           "completion_tokens": len(out)}})

    return Handler


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text else []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--preset", default="tiny")
    for name in ("layers", "hidden", "heads", "kv-heads", "ffn", "vocab"):
        ap.add_argument(f"--{name}", type=int)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace-dir")
    ap.add_argument("--fail-on", type=_ints, default=[])
    ap.add_argument("--stall-on", type=_ints, default=[])
    ap.add_argument("--exit-on", type=_ints, default=[])
    ap.add_argument("--stall-s", type=float, default=600.0)
    ap.add_argument("--no-done", action="store_true",
                    help="end streams after the finish_reason chunk, without data: [DONE]")
    ap.add_argument("--lifetime-s", type=float, default=600.0,
                    help="exit after this many seconds whatever happens (bounded tests)")
    args = ap.parse_args(argv)
    state = State(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(state))
    httpd.daemon_threads = True
    timer = threading.Timer(args.lifetime_s, lambda: os._exit(0))
    timer.daemon = True
    timer.start()
    print(f"listening on http://127.0.0.1:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()

"""Sweep points against a live OpenAI-compatible server (llama.cpp server, vLLM, SGLang).

Each point sends ``batch`` concurrent streaming ``/v1/completions`` requests whose prompts are
token-id lists of exactly ``tokens`` ids and asks for ``new_tokens`` tokens
(``ignore_eos``/``min_tokens`` so the server does not stop early). Time to first token is the
prefill measurement, the gaps between streamed chunks the decode (inter-token latency). Where
the server has ``/start_profile`` and ``/stop_profile`` (vLLM, SGLang) they bracket the point;
traces the server writes into ``--server-trace-dir`` are diagnosed with the point.

Standard library only (http.client, threads); nothing here prints.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ProfdiagError, UsageError
from ..hardware import GpuSpec
from .grid import Point, atomic_write, dump, run_grid

TRACE_SUFFIXES = (".json", ".json.gz", ".pt.trace.json", ".pt.trace.json.gz")


class RequestFailed(Exception):
    """One request did not complete: HTTP error, stall, dropped connection, bad stream."""


class Client:
    """A small streaming client for one server base URL (http only, no proxies)."""

    def __init__(self, url: str, model: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"--server must be an http://HOST:PORT URL, got {url!r}")
        if timeout <= 0:
            raise UsageError(f"--request-timeout must be positive, got {timeout:g}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path.rstrip("/")
        self.prefix = path[:-3] if path.endswith("/v1") else path
        self.base = f"http://{self.host}:{self.port}{self.prefix}"
        self.timeout = timeout
        self._profile_ok: bool | None = None
        self.model = model if model is not None else self._first_model()

    def _conn(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)

    def _request(self, method: str, path: str, body: Any = None,
                 timeout: float | None = None) -> tuple[int, bytes]:
        conn = self._conn(timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, self.prefix + path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _first_model(self) -> str | None:
        try:
            status, body = self._request("GET", "/v1/models", timeout=min(self.timeout, 10.0))
        except (OSError, http.client.HTTPException) as exc:
            raise UsageError(f"cannot reach the server: {exc}", self.base) from None
        if status != 200:
            return None
        try:
            data = json.loads(body)
            return str(data["data"][0]["id"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def profile(self, action: str) -> bool:
        """POST /start_profile or /stop_profile; False (and never again) when absent."""
        if self._profile_ok is False:
            return False
        try:
            status, _ = self._request("POST", f"/{action}_profile", body={},
                                      timeout=max(self.timeout, 300.0))
        except (OSError, http.client.HTTPException):
            status = 0
        ok = 200 <= status < 300
        if self._profile_ok is None and action == "start":
            self._profile_ok = ok
        return ok

    def complete(self, prompt: list[int], max_tokens: int) -> dict[str, Any]:
        """Stream one completion; return send time, chunk arrival times and token count.
        Raises RequestFailed on an HTTP error, a stall (no byte for ``timeout`` s) or a
        stream that ends before ``[DONE]``."""
        body: dict[str, Any] = {"prompt": prompt, "max_tokens": max_tokens, "stream": True,
                                "temperature": 0, "ignore_eos": True, "min_tokens": max_tokens}
        if self.model:
            body["model"] = self.model
        conn = self._conn()
        t_send = time.perf_counter()
        arrivals: list[float] = []
        done = finished = False
        try:
            conn.request("POST", self.prefix + "/v1/completions", body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json",
                                  "Accept": "text/event-stream"})
            resp = conn.getresponse()
            if resp.status != 200:
                text = resp.read(400).decode("utf-8", "replace").strip().splitlines()
                raise RequestFailed(f"HTTP {resp.status}" + (f": {text[0][:160]}" if text else ""))
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    raise RequestFailed(f"bad stream chunk {payload[:80]!r}") from None
                if chunk.get("error"):
                    raise RequestFailed(f"server error in stream: {chunk['error']}")
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("text") or choices[0].get("finish_reason") is None):
                    arrivals.append(time.perf_counter())
                if choices and choices[0].get("finish_reason") is not None:
                    finished = True  # some servers end the stream without [DONE]
        except TimeoutError:
            raise RequestFailed(f"stalled: no data for {self.timeout:g} s after "
                                f"{len(arrivals)} token(s)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise RequestFailed(f"connection failed after {len(arrivals)} token(s): "
                                f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        if not (done or finished):
            raise RequestFailed(f"stream ended without [DONE] after {len(arrivals)} token(s)")
        if not arrivals:
            raise RequestFailed("no token streamed")
        return {"t_send": t_send, "arrivals": arrivals}


def prompt_ids(tokens: int, vocab: int, seed: int) -> list[int]:
    """Return ``tokens`` deterministic token ids in [1, vocab) (exact length, no tokenizer)."""
    return [1 + (seed * 7919 + i * 104729) % (vocab - 1) for i in range(tokens)]


def measure_point(client: Client, point: Point, vocab: int) -> dict[str, Any]:
    """Send ``batch`` requests at once; return TTFTs and inter-token gaps (seconds), or raise
    RequestFailed with the first request's error."""
    n = point.batch
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=client.timeout)
            results[i] = client.complete(prompt_ids(point.tokens, vocab, i), point.new_tokens)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded with the point
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        e = errors[0]
        raise RequestFailed(f"{len(errors)} of {n} request(s) failed: "
                            f"{e if isinstance(e, RequestFailed) else type(e).__name__ + ': ' + str(e)}")
    ttft = [r["arrivals"][0] - r["t_send"] for r in results]
    itl_by_step: list[list[float]] = []
    for r in results:
        a = r["arrivals"]
        for k, (x, y) in enumerate(zip(a, a[1:])):
            if k >= len(itl_by_step):
                itl_by_step.append([])
            itl_by_step[k].append(y - x)
    return {"ttft_s": ttft, "itl_s": itl_by_step,
            "tokens_streamed": [len(r["arrivals"]) for r in results]}


def _new_traces(trace_dir: Path, before: set[Path], wait_s: float = 5.0) -> list[Path]:
    deadline = time.monotonic() + wait_s
    while True:
        now = {p for p in trace_dir.rglob("*") if p.is_file() and p.name.endswith(TRACE_SUFFIXES)}
        new = sorted(now - before)
        if new or time.monotonic() > deadline:
            return new
        time.sleep(0.2)


def run_points(client: Client, points: list[Point], done: dict[str, dict[str, Any]], out: Path,
               config: Any, spec: GpuSpec | None, dtype: str, dtype_bytes: float, profile: bool,
               trace_dir: Path | None,
               on_point: Callable[[Point, dict[str, Any]], None] | None = None
               ) -> list[dict[str, Any]]:
    """Measure every point not in ``done``; a failed point is recorded (points/<id>.json with
    status "failed" and the error) and the sweep goes on. Return all results in grid order."""
    import statistics

    from .local import _phase_result

    cfg = {"layers": config.layers, "hidden": config.hidden, "heads": config.heads,
           "kv_heads": config.kv_heads, "ffn": config.ffn, "vocab": config.vocab}

    def measure(p: Point) -> dict[str, Any]:
        before = ({q for q in trace_dir.rglob("*") if q.is_file()}
                  if trace_dir and trace_dir.is_dir() else set())
        profiled = client.profile("start") if profile else False
        try:
            m = measure_point(client, p, config.vocab)
            res: dict[str, Any] = {**p.to_dict(), "status": "ok"}
            ttft_ns = [int(x * 1e9) for x in m["ttft_s"]]
            pre = _phase_result([int(statistics.median(ttft_ns))], p.tokens, "prefill", p.batch,
                                cfg, spec, dtype_bytes, dtype, None)
            pre["ttft_ns"] = ttft_ns
            res["prefill"] = pre
            if m["itl_s"]:
                itl = [int(statistics.median(step) * 1e9) for step in m["itl_s"]]
                # Gap k ends with the token of decode step k, which reads T + k cached
                # positions (as step k of a local generate point).
                ctx = [p.tokens + k for k in range(len(itl))]
                res["decode"] = _phase_result(itl, ctx, "decode", p.batch, cfg, spec,
                                              dtype_bytes, dtype, None)
            res["tokens_streamed"] = m["tokens_streamed"]
        except RequestFailed as exc:
            res = {**p.to_dict(), "status": "failed", "error": str(exc)}
        finally:
            if profiled:
                client.profile("stop")
        res["profiled"] = profiled
        if profiled and trace_dir is not None and trace_dir.is_dir():
            res.update(_diagnose_new(trace_dir, before, out, p))
            for ph, regime in (res.get("server_regimes") or {}).items():
                if isinstance(res.get(ph), dict):
                    res[ph]["regime"] = regime
        return res

    return run_grid(points, done, out, measure, on_point)


def _diagnose_new(trace_dir: Path, before: set[Path], out: Path, p: Point) -> dict[str, Any]:
    """Diagnose the traces the server wrote for this point; the regime of its phases goes
    into the point (the report into reports/<id>.report.json)."""
    from .. import diagnosis, load

    new = _new_traces(trace_dir, before)
    if not new:
        return {"trace_note": f"no new trace in {trace_dir}"}
    trace = new[-1]
    try:
        data = diagnosis.run(load(trace, compact=True)).to_dict()
    except ProfdiagError as exc:
        return {"server_trace": str(trace), "trace_note": f"not diagnosed: {exc}"}
    atomic_write(out / "reports" / f"{p.id}.report.json", dump(data))
    regimes = {ph["name"]: (ph.get("bottleneck") or {}).get("value")
               for ph in data.get("phases") or []}
    return {"server_trace": str(trace), "trace": str(trace), "report": f"reports/{p.id}.report.json",
            "server_regimes": regimes}

"""A Llama-style decoder in plain PyTorch with random weights (no download).

Per layer: eager RMSNorm (pow, mean, rsqrt, mul), q/k/v projections (or one fused qkv), RoPE,
grouped-query attention through ``scaled_dot_product_attention`` over a preallocated KV
cache, the o projection, RMSNorm, a SwiGLU MLP (gate, up, down). Then a final RMSNorm and the
lm_head on the last token of each sequence.

Every projection is an ``nn.Linear(bias=False)`` applied to a 2-D ``[rows, features]`` input,
so each call is exactly one ``aten::mm`` (under ``aten::linear`` -> ``aten::matmul``) on CPU
and CUDA, like the shared H100 traces; no batched matmul appears. Attention never goes through
``aten::mm``: SDPA dispatches to a fused kernel (CPU flash, cuDNN/flash/efficient on CUDA).

This module imports torch at import time: import it only after torch is known to be present
(profdiag.capture.run does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .config import ModelConfig, dense_ffn

_ROPE_THETA = 500000.0
_EPS = 1e-5


def _sdpa_has_gqa() -> bool:
    """Return True when SDPA takes ``enable_gqa`` (torch >= 2.5)."""
    try:
        major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 5)


_HAS_GQA = _sdpa_has_gqa()


class RMSNorm(nn.Module):
    """RMSNorm written eagerly (pow, mean, rsqrt, mul): several kernels, as in real models."""

    def __init__(self, dim: int, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x normalised by its root mean square, times the weight."""
        var = x.pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(var + _EPS) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    """One decoder layer."""

    def __init__(self, cfg: ModelConfig, fused_qkv: bool, device: torch.device,
                 dtype: torch.dtype, extra_gemm: bool = False) -> None:
        super().__init__()
        self.extra_gemm = extra_gemm
        m = cfg.dims()
        d, hd = m.hidden, m.head_dim
        self.heads, self.kv_heads, self.head_dim = m.heads, m.kv_heads, hd
        self.q_dim, self.kv_dim = m.heads * hd, m.kv_heads * hd
        ffn = dense_ffn(cfg)  # a dense MLP even for a config with experts

        def linear(n_in: int, n_out: int) -> nn.Linear:
            return nn.Linear(n_in, n_out, bias=False, device=device, dtype=dtype)

        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv_proj = linear(d, self.q_dim + 2 * self.kv_dim)
        else:
            self.q_proj = linear(d, self.q_dim)
            self.k_proj = linear(d, self.kv_dim)
            self.v_proj = linear(d, self.kv_dim)
        self.o_proj = linear(self.q_dim, d)
        self.gate_proj = linear(d, ffn)
        self.up_proj = linear(d, ffn)
        self.down_proj = linear(ffn, d)
        self.input_norm = RMSNorm(d, device, dtype)
        self.post_attn_norm = RMSNorm(d, device, dtype)

    def forward(self, x: torch.Tensor, batch: int, seq: int, cos: torch.Tensor,
                sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                pos: int | None, pos_t: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        """Return the layer's output for ``x`` of shape [batch * seq, hidden].

        Eager: ``pos`` (a Python int) is where the new keys go; attention reads the cache up
        to pos + seq, causal when the cache was empty. CUDA-graph decode: ``pos_t`` (a device
        tensor) is the write index and ``mask`` hides the unwritten tail of the full cache, so
        one captured step serves every position.
        """
        h = self.input_norm(x)
        if self.fused_qkv:
            q, k, v = self.qkv_proj(h).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        else:
            q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        q = q.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if pos_t is None:
            assert pos is not None
            k_cache[:, :, pos:pos + seq] = k
            v_cache[:, :, pos:pos + seq] = v
            keys, values = k_cache[:, :, :pos + seq], v_cache[:, :, :pos + seq]
            # is_causal aligns the mask top-left, right only when the queries start at 0;
            # a decode step (seq 1) attends to everything before it, so needs no mask.
            causal = seq > 1 and pos == 0
            if seq > 1 and pos != 0:
                raise ValueError("prefill on a non-empty cache is not supported")
        else:
            k_cache.index_copy_(2, pos_t, k)
            v_cache.index_copy_(2, pos_t, v)
            keys, values, causal = k_cache, v_cache, False
        attn = _attention(q, keys, values, causal, mask, self.heads // self.kv_heads)
        attn = attn.transpose(1, 2).reshape(batch * seq, self.q_dim)
        x = x + self.o_proj(attn)
        if self.extra_gemm:
            # the redundant work a kernel-count check should catch: o_proj computed twice
            self.o_proj(attn)
        h = self.post_attn_norm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
               mask: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Return SDPA over [batch, heads, seq, head_dim] tensors with grouped K/V heads."""
    if groups > 1 and _HAS_GQA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              enable_gqa=True)
    if groups > 1:  # torch < 2.5: expand the K/V heads by hand
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class Llama(nn.Module):
    """The decoder with its KV cache; ``forward`` takes token ids and returns last logits."""

    def __init__(self, cfg: ModelConfig, *, batch: int, max_len: int, device: torch.device,
                 dtype: torch.dtype, fused_qkv: bool = False, extra_gemm: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.batch = batch
        self.max_len = max_len
        m = cfg.dims()
        self.hidden = m.hidden
        self.embed = nn.Embedding(m.vocab, m.hidden, device=device, dtype=dtype)
        self.layers = nn.ModuleList(Block(cfg, fused_qkv, device, dtype, extra_gemm)
                                    for _ in range(m.layers))
        self.norm = RMSNorm(m.hidden, device, dtype)
        self.lm_head = nn.Linear(m.hidden, m.vocab, bias=False, device=device, dtype=dtype)
        shape = (m.layers, batch, m.kv_heads, max_len, m.head_dim)
        self.k_cache = torch.zeros(shape, device=device, dtype=dtype)
        self.v_cache = torch.zeros(shape, device=device, dtype=dtype)
        hd = m.head_dim
        self.inv_freq = 1.0 / (_ROPE_THETA ** (
            torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fill weights with N(0, 0.02) (why: fast on any device and stays finite in bf16)."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)

    @torch.no_grad()
    def fill_cache(self, length: int) -> None:
        """Fill the first ``length`` cache positions with random K/V: a decode context."""
        if length:
            self.k_cache[:, :, :, :length].normal_()
            self.v_cache[:, :, :, :length].normal_()

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return cos, sin of shape [seq, head_dim] for float ``positions`` [seq]."""
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        dtype = self.k_cache.dtype
        return emb.cos().to(dtype), emb.sin().to(dtype)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, pos: int | None = None,
                pos_t: torch.Tensor | None = None) -> torch.Tensor:
        """Return fp32 logits [batch, vocab] for the last token of each sequence.

        ``tokens`` is [batch, seq]. Give ``pos`` (eager) or ``pos_t`` (a one-element int64
        device tensor, for a CUDA-graph decode step of seq 1).
        """
        batch, seq = tokens.shape
        hidden = self.hidden
        device = tokens.device
        mask = None
        if pos_t is None:
            assert pos is not None
            positions = torch.arange(pos, pos + seq, device=device, dtype=torch.float32)
        else:
            positions = pos_t.to(torch.float32)
            # [1, 1, 1, max_len]: True where a key may be attended (positions <= pos)
            mask = (torch.arange(self.max_len, device=device) <= pos_t).view(1, 1, 1, -1)
        cos, sin = self._rope(positions)
        x = self.embed(tokens).reshape(batch * seq, hidden)
        for i, layer in enumerate(self.layers):
            with record_function(f"layer_{i}"):
                x = layer(x, batch, seq, cos, sin, self.k_cache[i], self.v_cache[i], pos, pos_t,
                          mask)
        # lm_head on the last token of each sequence only: one [batch, hidden] GEMM
        last = x.view(batch, seq, hidden)[:, -1, :]
        return self.lm_head(self.norm(last)).float()

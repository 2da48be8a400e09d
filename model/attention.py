"""Grouped-query attention with a head-wise sigmoid gate, QK-norm, partial RoPE, and masks.

Masks: every query sees keys that are (a) not in the future, (b) in the same packed document
(``document_ids``, non-negative ids) and, on sliding-window layers, (c) at most ``window - 1``
tokens back.
Three interchangeable backends compute the same numbers:

* ``flex``  — ``torch.nn.attention.flex_attention`` with a ``BlockMask`` (fully masked
  128×128 blocks are skipped, so a sliding window really costs O(T·W)).  CUDA for training;
  its forward also runs on CPU (uncompiled, scores materialised), its backward does not.
* ``sdpa``  — ``F.scaled_dot_product_attention`` with an explicit boolean mask.  Full layers use
  a dense ``[B,1,T,T]`` mask (or ``is_causal`` without documents).  Sliding-window layers with
  ``T > 2W`` are computed *chunked*: queries in chunks of W/2 attend to a span of W + W/2 keys
  (their own chunk and the W before it), so CPU training also gets the O(T·W) cost of a window
  (hand-written because SDPA has no window argument; ``tests/test_model_attention.py`` checks
  it against the naive reference).
* ``eager`` — the naive reference: explicit scores, ``masked_fill``, softmax.  Tests only.

``auto`` picks ``flex`` on CUDA and ``sdpa`` elsewhere (flex-attention has no CPU backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import FULL, SWA, ModelConfig
from model.norm import ZeroCenteredRMSNorm
from model.rope import NO_SCALING, RopeScaling, apply_rope, rope_cos_sin

try:  # flex-attention is in torch ≥ 2.5; keep the module importable without it
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover
    BlockMask = create_block_mask = flex_attention = None

_compiled_flex = None


def _flex(q, k, v, block_mask):
    """flex_attention, compiled once on CUDA (uncompiled it materialises all scores)."""
    global _compiled_flex
    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask, enable_gqa=True)
    import warnings

    with warnings.catch_warnings():  # CPU forward: correct, slow, and it says so every call
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=True)


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "flex" if device.type == "cuda" and flex_attention is not None else "sdpa"
    if name == "flex" and flex_attention is None:
        raise RuntimeError("attn_backend='flex' needs torch.nn.attention.flex_attention (torch ≥ 2.5)")
    return name


# ---------------------------------------------------------------------------------------------
# positions and masks
# ---------------------------------------------------------------------------------------------
def positions_from_documents(document_ids: torch.Tensor) -> torch.Tensor:
    """Position of each token inside its document: restarts at 0 where the id changes."""
    B, T = document_ids.shape
    idx = torch.arange(T, device=document_ids.device).expand(B, T)
    change = torch.ones_like(document_ids, dtype=torch.bool)
    change[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    start = torch.where(change, idx, torch.zeros_like(idx)).cummax(dim=1).values
    return idx - start


def reference_mask(T: int, window: int | None, document_ids: torch.Tensor | None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``[B or 1, T, T]``: True where query i may attend to key j."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    m = j <= i
    if window is not None:
        m = m & (i - j < window)
    m = m[None]
    if document_ids is not None:
        m = m & (document_ids[:, :, None] == document_ids[:, None, :])
    return m


@dataclass
class DenseMask:
    mask: torch.Tensor | None  # [B|1, 1, T, T] bool, or None with causal=True
    causal: bool = False


@dataclass
class ChunkedMask:
    """Sliding-window mask for query chunks of ``chunk`` tokens, each seeing a key span of
    ``window + chunk`` (its own chunk and the ``window`` tokens before it): ``[B*n, 1, C, W+C]``."""
    mask: torch.Tensor
    chunk: int
    window: int
    n_chunks: int
    T: int


def _chunked_window_mask(B: int, T: int, window: int, document_ids: torch.Tensor | None,
                         device: torch.device, chunk: int | None = None) -> ChunkedMask:
    # Chunk C = W/2: each span of W + C keys is 1/3 masked out (C = W: 1/2) and the K/V span copies
    # are 3× the K/V size (C = W/4: 5×); C from 64 to 256 ran equally fast at W = 512 on CPU.
    C = chunk or max(window // 2, min(window, 64))
    S = window + C
    n = -(-T // C)
    Tp = n * C
    a = torch.arange(C, device=device)
    b = torch.arange(S, device=device)
    ci = torch.arange(n, device=device)[:, None, None]
    qpos = ci * C + a[None, :, None]  # [n, C, 1]
    kpos = ci * C - window + b[None, None, :]  # [n, 1, S]
    m = (kpos >= 0) & (kpos <= qpos) & (qpos - kpos < window)  # [n, C, S]
    m = m[None].expand(B, n, C, S)
    if document_ids is not None:
        # padded tail: its own document id (-1) so padded queries see padded keys and stay finite
        docs = F.pad(document_ids, (0, Tp - T), value=-1)
        docs_k = F.pad(docs, (window, 0), value=-2).unfold(1, S, C)  # [B, n, S]
        docs_q = docs.view(B, n, C)
        m = m & (docs_q[..., :, None] == docs_k[..., None, :])
    return ChunkedMask(m.reshape(B * n, 1, C, S), C, window, n, T)


def build_masks(backend: str, B: int, T: int, window: int, document_ids: torch.Tensor | None,
                device: torch.device, chunked_window: bool = True) -> dict[str, object]:
    """One mask per layer type, built once per forward and shared by all layers of that type.
    ``chunked_window=False`` gives SDPA a dense window mask (O(T²) work; benchmarks only)."""
    if backend == "flex":
        docs = document_ids

        def make(win: int | None):
            def mask_mod(b, h, q_idx, kv_idx):
                m = q_idx >= kv_idx
                if win is not None:
                    m = m & (q_idx - kv_idx < win)
                if docs is not None:
                    m = m & (docs[b, q_idx] == docs[b, kv_idx])
                return m

            return create_block_mask(mask_mod, B if docs is not None else None, None, T, T,
                                     device=device, _compile=device.type == "cuda")

        return {FULL: make(None), SWA: make(window)}
    if backend not in ("sdpa", "eager"):
        raise ValueError(f"unknown attention backend {backend!r}")
    full = (DenseMask(None, causal=True) if document_ids is None and backend == "sdpa"
            else DenseMask(reference_mask(T, None, document_ids, device)[:, None]))
    if backend == "sdpa" and T > 2 * window and chunked_window:
        swa = _chunked_window_mask(B, T, window, document_ids, device)
    else:
        swa = DenseMask(reference_mask(T, window, document_ids, device)[:, None])
    return {FULL: full, SWA: swa}


# ---------------------------------------------------------------------------------------------
# attention cores: q [B, H, T, D], k/v [B, Hkv, T, D] → [B, H, T, D]
# ---------------------------------------------------------------------------------------------
def eager_attention(q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.float()).to(q.dtype)


def _chunked_sdpa(q, k, v, cm: ChunkedMask) -> torch.Tensor:
    B, H, T, D = q.shape
    Hkv, C, W, n = k.shape[1], cm.chunk, cm.window, cm.n_chunks
    pad = n * C - T
    q = F.pad(q, (0, 0, 0, pad)).view(B, H, n, C, D).transpose(1, 2).reshape(B * n, H, C, D)

    def spans(x):  # [B, Hkv, T, D] → [B*n, Hkv, W+C, D]: the W keys before each chunk + the chunk
        x = F.pad(x, (0, 0, W, pad))  # [B, Hkv, W + nC, D]
        x = x.unfold(2, W + C, C)  # [B, Hkv, n, D, W+C]
        return x.permute(0, 2, 1, 4, 3).reshape(B * n, Hkv, W + C, D)

    out = F.scaled_dot_product_attention(q, spans(k), spans(v), attn_mask=cm.mask,
                                         enable_gqa=k.shape[1] != H)
    return out.view(B, n, H, C, D).transpose(1, 2).reshape(B, H, n * C, D)[:, :, :T]


def _expand_kv(q, k, v):
    """Repeat KV heads for SDPA off CUDA: torch 2.13's CPU SDPA with ``enable_gqa=True`` takes a
    slow backward path (measured ~15× slower than on repeated heads at T = 4096)."""
    rep = q.shape[1] // k.shape[1]
    if q.is_cuda or rep == 1:
        return k, v
    return k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)


def attend(q, k, v, mask, backend: str) -> torch.Tensor:
    gather = getattr(mask, "gather_kv", None)
    if gather is not None:  # context parallelism: this chunk's queries see every chunk's keys
        k, v = gather(k, v)
    if backend == "flex":
        return _flex(q, k, v, mask)
    if backend == "sdpa":
        k, v = _expand_kv(q, k, v)
    if isinstance(mask, ChunkedMask):
        return _chunked_sdpa(q, k, v, mask)
    if backend == "eager":
        return eager_attention(q, k, v, mask.mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.mask, is_causal=mask.causal,
                                          enable_gqa=True)


class RopeCache:
    """cos/sin per (rotary_dim, θ, scaling) computed once per forward and shared across layers."""

    def __init__(self, position_ids: torch.Tensor) -> None:
        self.position_ids = position_ids
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, rotary_dim: int, theta: float, scaling: RopeScaling = NO_SCALING):
        key = (rotary_dim, float(theta), scaling)
        if key not in self._cache:
            self._cache[key] = rope_cos_sin(self.position_ids, rotary_dim, theta, scaling)
        return self._cache[key]


def layer_rope_scaling(cfg: ModelConfig, layer_type: str) -> RopeScaling:
    """The config's static RoPE scaling if it applies to this layer type (``yarn_only_types``)."""
    if cfg.rope_scaling == "none" or layer_type not in cfg.rope_scaling_layer_types:
        return NO_SCALING
    return RopeScaling(cfg.rope_scaling, float(cfg.rope_scaling_factor), int(cfg.rope_scaling_original_max_position),
                       float(cfg.llama3_low_freq_factor), float(cfg.llama3_high_freq_factor))


# ---------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """GQA with a fused ``[q | k | v | gate]`` projection (CODE: gate logits are ``n_heads`` extra
    output columns), per-head QK RMSNorm, partial RoPE, and ``o_i = sigmoid(g_i) * y_i``."""

    def __init__(self, cfg: ModelConfig, layer_type: str, layer: int | None = None) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.n_heads = cfg.n_heads(layer_type)
        self.n_kv_heads = cfg.n_kv_heads
        self.head_dim = cfg.head_dim
        self.gated = cfg.gated_attention
        q_dim, kv_dim = self.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.split = (q_dim, kv_dim, kv_dim) + ((self.n_heads,) if self.gated else ())
        self.wqkv = nn.Linear(cfg.d_model, sum(self.split), bias=False)
        self.wo = nn.Linear(q_dim, cfg.d_model, bias=False)
        self.q_norm = ZeroCenteredRMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = ZeroCenteredRMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        full = layer_type == FULL
        self.rotary_dim = cfg.rotary_dim_full if full else cfg.rotary_dim_swa
        # θ of this layer from the config's per-layer list (layer = index over backbone + MTP)
        self.rope_theta = cfg.rope_thetas[layer] if layer is not None else (
            cfg.rope_theta_full if full else cfg.rope_theta_swa)
        self.rope_scaling = layer_rope_scaling(cfg, layer_type)

    def forward(self, x: torch.Tensor, rope: RopeCache, mask, backend: str) -> torch.Tensor:
        B, T, _ = x.shape
        parts = self.wqkv(x).split(self.split, dim=-1)
        q = parts[0].view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = parts[1].view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = parts[2].view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope.get(self.rotary_dim, self.rope_theta, self.rope_scaling)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attend(q, k, v, mask, backend)  # [B, H, T, D]
        if self.gated:
            y = y * torch.sigmoid(parts[3]).transpose(1, 2)[..., None].to(y.dtype)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))

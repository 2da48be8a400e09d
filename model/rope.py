"""Rotary position embeddings with partial rotation, run-time θ and optional YaRN.

* Partial RoPE: only the first ``rotary_dim`` channels of each head rotate (64 of 128 on the
  report's full-attention layers); the rest carry no position, as in GPT-NeoX / HF
  ``partial_rotary_factor``.  Pairs are (i, i + rotary_dim/2) ("rotate-half" convention).
* θ is a plain attribute that ``Step35Model.set_rope_theta`` changes between curriculum phases
  (1e4 → 1e6 → 5e6 on full layers only, PAPER §3); frequencies are recomputed from it on every
  call, so no stale cached buffer survives a change and the checkpoint holds no tables.
* YaRN (Peng et al. 2023, "NTK-by-parts" + attention temperature) for the report's 256k
  evaluation, applied to full-attention layers only (``yarn_only_types = ["full_attention"]``).
* Positions come from ``position_ids`` (per document in packed sequences), so cos/sin are
  ``[B, T, rotary_dim/2]`` rather than one table per length.
"""

from __future__ import annotations

import math

import torch


def inv_frequencies(rotary_dim: int, theta: float, yarn_factor: float = 1.0,
                    original_max_position: int = 131072, beta_fast: float = 32.0,
                    beta_slow: float = 1.0) -> tuple[torch.Tensor, float]:
    """Inverse frequencies ``[rotary_dim/2]`` (fp64 for accuracy) and the attention scale.

    With ``yarn_factor > 1`` high-frequency dims (many rotations inside the original context)
    stay as they are, low-frequency dims are interpolated by the factor, with a linear ramp in
    between; logits get YaRN's temperature ``0.1 ln(s) + 1`` (applied to cos/sin, as HF does).
    """
    idx = torch.arange(0, rotary_dim, 2, dtype=torch.float64)
    inv = 1.0 / (theta ** (idx / rotary_dim))
    if yarn_factor <= 1.0:
        return inv, 1.0

    def dim_for_rotations(n_rot: float) -> float:
        return (rotary_dim * math.log(original_max_position / (n_rot * 2 * math.pi))) / (2 * math.log(theta))

    low = max(math.floor(dim_for_rotations(beta_fast)), 0)
    high = min(math.ceil(dim_for_rotations(beta_slow)), rotary_dim // 2 - 1)
    ramp = (torch.arange(rotary_dim // 2, dtype=torch.float64) - low) / max(high - low, 1e-3)
    keep = 1.0 - ramp.clamp(0.0, 1.0)  # 1 → extrapolate (keep frequency), 0 → interpolate
    inv = inv / yarn_factor * (1.0 - keep) + inv * keep
    return inv, 0.1 * math.log(yarn_factor) + 1.0


def rope_cos_sin(position_ids: torch.Tensor, rotary_dim: int, theta: float,
                 yarn_factor: float = 1.0, original_max_position: int = 131072,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[B, T, rotary_dim/2]`` for integer positions ``[B, T]``."""
    inv, mscale = inv_frequencies(rotary_dim, theta, yarn_factor, original_max_position)
    inv = inv.to(device=position_ids.device, dtype=torch.float32)
    angles = position_ids.to(torch.float32)[..., None] * inv
    return (angles.cos() * mscale).to(dtype), (angles.sin() * mscale).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` channels of ``x`` ``[B, H, T, D]``."""
    half = cos.shape[-1]
    if half == 0:
        return x
    rot, rest = x[..., : 2 * half], x[..., 2 * half:]
    x1, x2 = rot[..., :half], rot[..., half:]
    c, s = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # broadcast over heads
    out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
    return torch.cat([out, rest], dim=-1) if rest.shape[-1] else out

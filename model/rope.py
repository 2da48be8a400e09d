"""Rotary position embeddings with partial rotation, run-time θ and static context scaling.

* Partial RoPE: only the first ``rotary_dim`` channels of each head rotate (64 of 128 on the
  report's full-attention layers); the rest carry no position, as in GPT-NeoX / HF
  ``partial_rotary_factor``.  Pairs are (i, i + rotary_dim/2) ("rotate-half" convention).
* θ is a plain attribute that ``Step35Model.set_rope_theta`` changes between curriculum phases
  (1e4 → 1e6 → 5e6 on full layers only, PAPER §3); frequencies are recomputed from it on every
  call, so no stale cached buffer survives a change and the checkpoint holds no tables.
* Scaling (``RopeScaling``), applied to the layer types the config names (the released
  ``yarn_only_types = ["full_attention"]``):

  - ``llama3`` — what the released Step 3.5 Flash ``config.json`` carries (factor 2,
    original 131,072, low/high frequency factors 1 / 32): wavelengths longer than
    ``original / low`` are divided by the factor, shorter than ``original / high`` kept, a
    smooth blend in between; no attention temperature.
  - ``yarn`` (Peng et al. 2023, "NTK-by-parts") — kept as an option; its temperature
    ``0.1 ln(s) + 1`` multiplies cos and sin, so q·k of the rotated channels scales by its
    square, as the YaRN reference code, HF and vLLM do (with partial RoPE the pass-through
    channels are not tempered, in all of them alike).

  Both match ``transformers.modeling_rope_utils`` (``tests/test_model_hf.py`` compares them).
* Positions come from ``position_ids`` (per document in packed sequences), so cos/sin are
  ``[B, T, rotary_dim/2]`` rather than one table per length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RopeScaling:
    """Static RoPE scaling of one layer (hashable: it is part of the per-forward cache key)."""

    kind: str = "none"  # none | yarn | llama3
    factor: float = 1.0
    original_max_position: int = 131072
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 32.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.factor > 1.0


NO_SCALING = RopeScaling()


def _yarn(inv: torch.Tensor, rotary_dim: int, theta: float, s: RopeScaling) -> tuple[torch.Tensor, float]:
    def dim_for_rotations(n_rot: float) -> float:
        return (rotary_dim * math.log(s.original_max_position / (n_rot * 2 * math.pi))) / (2 * math.log(theta))

    # bounds clamped to [0, rotary_dim - 1] as in the YaRN reference (and HF); the ramp runs over
    # the rotary_dim/2 frequencies and is clamped to [0, 1] anyway
    low = max(math.floor(dim_for_rotations(s.beta_fast)), 0)
    high = min(math.ceil(dim_for_rotations(s.beta_slow)), rotary_dim - 1)
    ramp = (torch.arange(rotary_dim // 2, dtype=torch.float64) - low) / (high - low if high != low else 1e-3)
    keep = 1.0 - ramp.clamp(0.0, 1.0)  # 1 → extrapolate (keep frequency), 0 → interpolate
    return inv / s.factor * (1.0 - keep) + inv * keep, 0.1 * math.log(s.factor) + 1.0


def _llama3(inv: torch.Tensor, s: RopeScaling) -> torch.Tensor:
    wavelen = 2 * math.pi / inv
    low_wavelen = s.original_max_position / s.low_freq_factor  # longer: divided by the factor
    high_wavelen = s.original_max_position / s.high_freq_factor  # shorter: kept
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * inv / s.factor + smooth * inv
    out = torch.where(wavelen > low_wavelen, inv / s.factor, inv)
    return torch.where((wavelen >= high_wavelen) & (wavelen <= low_wavelen), blended, out)


def inv_frequencies(rotary_dim: int, theta: float, scaling: RopeScaling = NO_SCALING) -> tuple[torch.Tensor, float]:
    """Inverse frequencies ``[rotary_dim/2]`` (fp64 for accuracy) and the cos/sin multiplier."""
    idx = torch.arange(0, rotary_dim, 2, dtype=torch.float64)
    inv = 1.0 / (theta ** (idx / rotary_dim))
    if not scaling.active or rotary_dim == 0:
        return inv, 1.0
    if scaling.kind == "yarn":
        return _yarn(inv, rotary_dim, theta, scaling)
    if scaling.kind == "llama3":
        return _llama3(inv, scaling), 1.0
    raise ValueError(f"unknown RoPE scaling {scaling.kind!r}")


def rope_cos_sin(position_ids: torch.Tensor, rotary_dim: int, theta: float,
                 scaling: RopeScaling = NO_SCALING,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[B, T, rotary_dim/2]`` for integer positions ``[B, T]``."""
    inv, mscale = inv_frequencies(rotary_dim, theta, scaling)
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

"""One configuration dataclass for every model size, and the named configs.

``get_config(name, **overrides)`` returns ``tiny`` (trains on a laptop CPU in minutes),
``small`` (~1B total, one GPU), ``proxy`` (the report's 30B-A3B ablation shape, Table 9) and
``full`` (Step 3.5 Flash, 196B total / 11B active, Table 6).  Numbers marked NOT GIVEN in
``PAPER.md`` are our choices; ``model/README.md`` lists each with the reason.

The layer layout is an explicit per-layer list (``layer_types``) rather than a formula, so a
user can write any pattern (S3F1, S1F1, FFFF, ...) and the parameter/FLOPs accounting in
``model.summary`` reads the same list the model is built from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

FULL = "full"
SWA = "swa"

# Pattern letters used by ``layout()``: S = sliding-window layer, F = full-attention layer.
LAYOUTS = {"S3F1": "SSSF", "S1F1": "SF", "FFFF": "F", "SSSS": "S"}


def layout(n_layers: int, pattern: str = "S3F1", leading_full: bool = True) -> tuple[str, ...]:
    """Per-layer attention types.

    ``leading_full`` makes layer 0 full attention and repeats the motif after it, which is the
    report's layout: ``[F] + [S, S, S, F] * 11`` for 45 layers.  The motif is cut at the end if
    ``n_layers - 1`` is not a multiple of its length.
    """
    motif = LAYOUTS.get(pattern, pattern)
    if not motif or set(motif) - {"S", "F"}:
        raise ValueError(f"layout pattern {pattern!r}: use one of {sorted(LAYOUTS)} or a string of S/F")
    kinds = {"S": SWA, "F": FULL}
    head = [FULL] if leading_full and n_layers > 0 else []
    rest = [kinds[motif[i % len(motif)]] for i in range(n_layers - len(head))]
    return tuple(head + rest)


@dataclass
class ModelConfig:
    """Every size of the model.  Per-layer lists have one entry per backbone layer."""

    name: str = "custom"
    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 5
    layer_types: tuple[str, ...] = ()  # FULL / SWA per layer; empty → layout(n_layers, "S3F1")

    # --- attention -------------------------------------------------------------------------
    n_heads_full: int = 4  # query heads on full-attention layers
    n_heads_swa: int = 6  # query heads on sliding-window layers (the report's "+Head")
    n_kv_heads: int = 2
    head_dim: int = 32
    window: int = 64  # sliding window W: a query sees itself and the W-1 previous tokens
    gated_attention: bool = True  # head-wise sigmoid gate on each head's output (PAPER A.1)
    qk_norm: bool = True  # per-head zero-centred RMSNorm on q and k (CODE)
    attn_backend: str = "auto"  # auto | flex | sdpa | eager

    # --- rotary embeddings ---------------------------------------------------------------
    rope_theta_full: float = 1e4  # curriculum raises it 1e4 → 1e6 → 5e6 (set_rope_theta)
    rope_theta_swa: float = 1e4
    # per-layer θ (backbone then MTP layers, as in the released config.json); empty → the two above
    rope_thetas: tuple[float, ...] = ()
    rotary_dim_full: int = 16  # partial RoPE: 64 of 128 dims on full layers in `full`
    rotary_dim_swa: int = 32  # all dims on SWA layers
    # static RoPE scaling on the layer types in ``rope_scaling_layer_types`` (the released
    # ``yarn_only_types``): "none" | "llama3" (what the released config uses) | "yarn"
    rope_scaling: str = "none"
    rope_scaling_factor: float = 1.0
    rope_scaling_original_max_position: int = 131072
    rope_scaling_layer_types: tuple[str, ...] = (FULL,)
    llama3_low_freq_factor: float = 1.0
    llama3_high_freq_factor: float = 32.0
    max_position: int = 262144

    # --- feed-forward ---------------------------------------------------------------------
    n_dense_layers: int = 1  # the first n layers use a dense SwiGLU, the rest MoE
    dense_hidden: int = 256
    n_experts: int = 8
    top_k: int = 2
    n_shared_experts: int = 1
    expert_hidden: int = 64
    shared_hidden: int = 64
    routed_scaling: float = 3.0
    router_bias_in_weights: bool = False  # True = SteptronOss: combine weights from biased scores
    ep_groups: int = 8  # G of the EP-group balance loss (PAPER Eq. 1; G NOT GIVEN, = EP degree)
    ep_loss_coef: float = 0.001
    # SwiGLU clipping limits per layer (None = off), backbone layers then MTP layers (a list of
    # n_layers entries leaves the MTP layers unclipped).  An int/float broadcasts.
    # ``swiglu_limits`` clips routed experts; ``swiglu_limits_shared`` the shared expert and,
    # with ``dense_clip_from_shared`` (the released code), the dense FFN of dense and MTP layers.
    swiglu_limits: tuple[float | None, ...] | float | None = None
    swiglu_limits_shared: tuple[float | None, ...] | float | None = None
    dense_clip_from_shared: bool = True  # False: dense layers read swiglu_limits (our pre-HF choice)
    expert_backend: str = "auto"  # auto | grouped_mm | bmm

    # --- multi-token prediction -----------------------------------------------------------
    n_mtp: int = 3  # MTP heads, each one SWA layer + dense FFN
    mtp_hidden: int = 256  # dense FFN hidden size of an MTP head
    mtp_active_depths: int = 1  # only MTP-1 trains in pre/mid-training
    mtp_loss_weights: tuple[float, ...] = (1.0, 0.6, 0.36)  # per depth; NOT GIVEN (Fast-MTP-like)
    # released layout: eh_proj(cat[enorm(emb), hnorm(hidden)]); False = cat[hidden, emb] (pre-HF)
    mtp_embedding_first: bool = True
    # released layout: every MTP layer has its own output head after its own norm
    # (``transformer.shared_head.{norm,output}``); True = reuse the backbone's lm_head
    mtp_share_lm_head: bool = False

    # --- misc -----------------------------------------------------------------------------
    tie_embeddings: bool = False
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if not self.layer_types:
            self.layer_types = layout(self.n_layers, "S3F1")
        self.layer_types = tuple(self.layer_types)
        self.mtp_loss_weights = tuple(float(w) for w in self.mtp_loss_weights)
        for key in ("swiglu_limits", "swiglu_limits_shared"):
            v = getattr(self, key)
            if v is None or isinstance(v, (int, float)):
                v = [None if v is None or v == 0 else float(v)] * self.n_layers
            v = tuple(None if x is None or x == 0 else float(x) for x in v)  # 0 = off (released)
            if len(v) == self.n_layers:
                v = v + (None,) * self.n_mtp
            setattr(self, key, v)
        self.rope_thetas = tuple(float(t) for t in self.rope_thetas)
        self.rope_scaling_layer_types = tuple(self.rope_scaling_layer_types)
        if not self.rope_thetas:
            self.rope_thetas = tuple(self.rope_theta_full if t == FULL else self.rope_theta_swa
                                     for t in self.all_layer_types)
        elif len(self.rope_thetas) == self.n_layers:  # MTP layers are SWA layers
            self.rope_thetas = self.rope_thetas + (self.rope_theta_swa,) * self.n_mtp
        self.validate()

    @property
    def all_layer_types(self) -> tuple[str, ...]:
        """Attention type of every layer: the backbone's, then the MTP heads' (SWA)."""
        return tuple(self.layer_types) + (SWA,) * self.n_mtp

    def dense_limit(self, layer: int) -> float | None:
        """Clip limit of the dense FFN of backbone layer ``layer`` (or MTP layer n_layers + k)."""
        return (self.swiglu_limits_shared if self.dense_clip_from_shared else self.swiglu_limits)[layer]

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"ModelConfig {self.name!r}: {msg}")

        if len(self.layer_types) != self.n_layers:
            bad(f"layer_types has {len(self.layer_types)} entries, n_layers is {self.n_layers}")
        if set(self.layer_types) - {FULL, SWA}:
            bad(f"layer_types must be {FULL!r}/{SWA!r}, got {sorted(set(self.layer_types))}")
        for h in (self.n_heads_full, self.n_heads_swa):
            if h % self.n_kv_heads:
                bad(f"query heads {h} not a multiple of n_kv_heads {self.n_kv_heads} (GQA)")
        for rd in (self.rotary_dim_full, self.rotary_dim_swa):
            if rd % 2 or not 0 <= rd <= self.head_dim:
                bad(f"rotary dim {rd} must be even and ≤ head_dim {self.head_dim}")
        if not 0 <= self.n_dense_layers <= self.n_layers:
            bad(f"n_dense_layers {self.n_dense_layers} outside 0..{self.n_layers}")
        if self.top_k > self.n_experts:
            bad(f"top_k {self.top_k} > n_experts {self.n_experts}")
        if self.n_experts % self.ep_groups:
            bad(f"n_experts {self.n_experts} not divisible by ep_groups {self.ep_groups}")
        n_all = self.n_layers + self.n_mtp
        for key in ("swiglu_limits", "swiglu_limits_shared", "rope_thetas"):
            if len(getattr(self, key)) != n_all:
                bad(f"{key} needs {self.n_layers} (backbone) or {n_all} (backbone + MTP) entries, "
                    f"got {len(getattr(self, key))}")
        if self.rope_scaling not in ("none", "yarn", "llama3"):
            bad(f"rope_scaling {self.rope_scaling!r} not in none|yarn|llama3")
        if self.rope_scaling != "none" and self.rope_scaling_factor < 1.0:
            bad(f"rope_scaling_factor {self.rope_scaling_factor} must be ≥ 1")
        if set(self.rope_scaling_layer_types) - {FULL, SWA}:
            bad(f"rope_scaling_layer_types must be {FULL!r}/{SWA!r}")
        if self.rope_scaling == "llama3" and not 0 < self.llama3_low_freq_factor < self.llama3_high_freq_factor:
            bad("llama3 scaling needs 0 < llama3_low_freq_factor < llama3_high_freq_factor")
        if not 0 <= self.mtp_active_depths <= self.n_mtp:
            bad(f"mtp_active_depths {self.mtp_active_depths} outside 0..n_mtp={self.n_mtp}")
        if len(self.mtp_loss_weights) < self.n_mtp:
            bad(f"mtp_loss_weights needs {self.n_mtp} entries, got {len(self.mtp_loss_weights)}")
        if self.attn_backend not in ("auto", "flex", "sdpa", "eager"):
            bad(f"attn_backend {self.attn_backend!r} not in auto|flex|sdpa|eager")
        if self.expert_backend not in ("auto", "grouped_mm", "bmm"):
            bad(f"expert_backend {self.expert_backend!r} not in auto|grouped_mm|bmm")
        if self.window < 1:
            bad("window must be ≥ 1")

    # ------------------------------------------------------------------------------------
    def is_moe(self, layer: int) -> bool:
        return layer >= self.n_dense_layers and self.n_experts > 0

    def n_heads(self, layer_type: str) -> int:
        return self.n_heads_full if layer_type == FULL else self.n_heads_swa

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe(i) for i in range(self.n_layers))

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with fields changed (per-layer lists are re-derived if n_layers changes)."""
        d = self.to_dict()
        new_layers = changes.get("n_layers", self.n_layers) != self.n_layers
        new_mtp = changes.get("n_mtp", self.n_mtp) != self.n_mtp
        if new_layers and "layer_types" not in changes:
            d["layer_types"] = ()
        if new_layers or new_mtp:
            for key in ("swiglu_limits", "swiglu_limits_shared"):
                if key not in changes:
                    if not new_layers:  # keep the backbone's per-layer values, MTP layers re-padded
                        d[key] = d[key][: self.n_layers]
                    else:  # a uniform list stays uniform, a per-layer one is dropped
                        vals = set(d[key][: self.n_layers])
                        d[key] = vals.pop() if len(vals) == 1 else None
            if "rope_thetas" not in changes:
                d["rope_thetas"] = () if new_layers else d["rope_thetas"][: self.n_layers]
        for key in ("rope_theta_full", "rope_theta_swa", "layer_types"):  # θ list follows the defaults
            if key in changes and "rope_thetas" not in changes:
                d["rope_thetas"] = ()
        d.update(changes)
        return ModelConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = dict(d)
        if "mtp_embedding_first" not in d and "n_mtp" in d:
            # a config written before the released-layout switches existed describes a model with
            # the earlier choices: MTP [h, e] order, shared LM head, dense layers clipped by
            # swiglu_limits (so its checkpoints still load and export correctly)
            d.update(mtp_embedding_first=False, mtp_share_lm_head=True, dense_clip_from_shared=False)
        if "yarn_factor" in d:  # configs written before rope_scaling became a choice
            factor = float(d.pop("yarn_factor"))
            orig = d.pop("yarn_original_max_position", 131072)
            if factor > 1.0:
                d.update(rope_scaling="yarn", rope_scaling_factor=factor,
                         rope_scaling_original_max_position=orig)
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


def _late_layer_limits(n_layers: int, n_dense: int, value: float, last: int = 4) -> tuple:
    """Clipping on the last ``last`` MoE layers only: the report saw blow-ups in the deepest
    layers (e.g. layer 45) and nowhere else; earlier layers keep exact SwiGLU."""
    return tuple(value if i >= max(n_dense, n_layers - last) else None for i in range(n_layers))


def _tiny(**kw: Any) -> ModelConfig:
    return ModelConfig(
        name="tiny", vocab_size=4096, d_model=96, n_layers=5, layer_types=layout(5, "S3F1"),
        n_heads_full=4, n_heads_swa=6, n_kv_heads=2, head_dim=32, window=64,  # hd 32: flex-friendly
        rotary_dim_full=16, rotary_dim_swa=32,
        n_dense_layers=1, dense_hidden=256, n_experts=8, top_k=2, n_shared_experts=1,
        expert_hidden=64, shared_hidden=64, routed_scaling=1.0, ep_groups=4,
        n_mtp=3, mtp_hidden=256, rope_scaling_original_max_position=4096, max_position=8192, **kw,
    )


def _small(**kw: Any) -> ModelConfig:
    n = 16
    return ModelConfig(
        name="small", vocab_size=32768, d_model=1024, n_layers=n, layer_types=layout(n, "S3F1"),
        n_heads_full=8, n_heads_swa=12, n_kv_heads=4, head_dim=128, window=512,
        rotary_dim_full=64, rotary_dim_swa=128,
        n_dense_layers=1, dense_hidden=2816, n_experts=32, top_k=4, n_shared_experts=1,
        expert_hidden=512, shared_hidden=512, routed_scaling=2.0, ep_groups=8,
        n_mtp=1, mtp_hidden=2816, rope_scaling_original_max_position=32768,
        swiglu_limits=_late_layer_limits(n, 1, 7.0), swiglu_limits_shared=_late_layer_limits(n, 1, 16.0),
        **kw,
    )


def _proxy(**kw: Any) -> ModelConfig:
    # PAPER Table 9 / SteptronOss step3p5_toy: 48 layers, d 2048, 1 dense layer, 128 experts
    # top-8 + 1 shared (hidden 768), dense FFN 7168, GQA-8, 32 full / 48 SWA heads, no MTP.
    n = 48
    return ModelConfig(
        name="proxy", vocab_size=129280, d_model=2048, n_layers=n, layer_types=layout(n, "S3F1"),
        n_heads_full=32, n_heads_swa=48, n_kv_heads=8, head_dim=128, window=512,
        rotary_dim_full=64, rotary_dim_swa=128,
        n_dense_layers=1, dense_hidden=7168, n_experts=128, top_k=8, n_shared_experts=1,
        expert_hidden=768, shared_hidden=768, routed_scaling=3.0, ep_groups=8,
        n_mtp=0, mtp_active_depths=0, mtp_hidden=7168, rope_scaling_original_max_position=131072,
        swiglu_limits=_late_layer_limits(n, 1, 7.0), swiglu_limits_shared=_late_layer_limits(n, 1, 16.0),
        **kw,
    )


def _full(**kw: Any) -> ModelConfig:
    # PAPER Table 6 / §2.2; CODE SteptronOss step3p5_flash.py.
    n = 45
    return ModelConfig(
        name="full", vocab_size=128896, d_model=4096, n_layers=n, layer_types=layout(n, "S3F1"),
        n_heads_full=64, n_heads_swa=96, n_kv_heads=8, head_dim=128, window=512,
        rotary_dim_full=64, rotary_dim_swa=128,
        n_dense_layers=3, dense_hidden=11264, n_experts=288, top_k=8, n_shared_experts=1,
        expert_hidden=1280, shared_hidden=1280, routed_scaling=3.0, ep_groups=8,
        n_mtp=3, mtp_hidden=11264, rope_scaling_original_max_position=131072, max_position=262144,
        rope_theta_full=5e6, rope_theta_swa=1e4,  # the released config.json (full layers 5e6, SWA 1e4)
        swiglu_limits=_late_layer_limits(n, 3, 7.0), swiglu_limits_shared=_late_layer_limits(n, 3, 16.0),
        **kw,
    )


CONFIGS = {"tiny": _tiny, "small": _small, "proxy": _proxy, "full": _full}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """A named config, with fields overridden (e.g. ``get_config("tiny", vocab_size=8000)``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}")
    base = CONFIGS[name]()
    return base.replace(**overrides) if overrides else base

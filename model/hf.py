"""The released Step 3.5 Flash checkpoint layout (Hugging Face): weights in and out.

::

    python -m model.hf import HF_DIR --out CKPT_DIR        # released/HF folder → our DCP checkpoint
    python -m model.hf export CKPT_DIR --out HF_DIR        # our checkpoint (or run folder) → HF folder
    python -m model.hf inspect HF_DIR                      # config + tensor check, no weights read

``load_pretrained(path) -> Step35Model`` reads ``config.json`` (``model_type: step3p5``), builds our
``ModelConfig`` from it and loads the safetensors (sharded through ``model.safetensors.index.json``
or one ``model.safetensors``); ``save_pretrained(model, path)`` writes ``config.json`` + shards +
index in the released layout, which transformers (``models/step3p7``'s text decoder, model_type
``step3p5``), vLLM and SGLang read.  ``tests/test_model_hf.py`` checks both directions against
transformers' own implementation and its own save/load conversion rules.

The layout (learned from transformers' ``conversion_mapping.py`` / ``models/step3p7`` and vLLM's
``step3p5.py`` / ``step3p5_mtp.py``; nothing copied)::

    model.embed_tokens.weight, model.norm.weight, lm_head.weight
    model.layers.{i}.{input_layernorm,post_attention_layernorm}.weight
    model.layers.{i}.self_attn.{q_proj,k_proj,v_proj,g_proj,o_proj,q_norm,k_norm}.weight
    model.layers.{i}.mlp.{gate_proj,up_proj,down_proj}.weight                  dense layers
    model.layers.{i}.moe.gate.weight, .moe.router_bias                          MoE layers
    model.layers.{i}.moe.{gate_proj,up_proj}.weight [E, I, d], .moe.down_proj.weight [E, d, I]
    model.layers.{i}.share_expert.{gate_proj,up_proj,down_proj}.weight
    model.layers.{n+k}.{enorm,hnorm,eh_proj}.weight                             MTP layer k
    model.layers.{n+k}.transformer.shared_head.{norm,output}.weight
    model.layers.{n+k}.{input_layernorm,...,self_attn.*,mlp.*}                  its SWA block

Our fused ``attn.wqkv`` is ``[q | k | v | g]`` rows, so four released tensors are row slices of
one parameter; everything else maps one to one.

Memory: both directions stream one tensor at a time.  Loading builds the model on the meta
device, allocates it once on ``device`` in the target dtype, then copies tensor by tensor from
memory-mapped shards: host memory beyond the model itself is one tensor (the largest in ``full``
is a routed-expert stack, 288 × 1280 × 4096 = 1.5G values: 3.0 GB in bf16).  Saving holds at
most one shard (``max_shard_size``, default 5 GB) plus one tensor.  Every header is read and
checked (names, shapes, dtypes, the index, truncated files) before the first weight is copied,
so a bad folder fails with a message naming the tensor and file and loads nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from model.config import FULL, SWA, ModelConfig

log = logging.getLogger(__name__)

MODEL_TYPE = "step3p5"
ARCHITECTURE = "Step3p5ForCausalLM"
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
HF_TYPES = {FULL: "full_attention", SWA: "sliding_attention"}
OUR_TYPES = {v: k for k, v in HF_TYPES.items()}
# training-only fields the released format has no key for; kept under one private key so that
# our own export → import round trip is exact (other readers ignore unknown config keys)
PRIVATE_KEY = "stepcrawl_training"
TRAINING_FIELDS = ("name", "ep_groups", "ep_loss_coef", "mtp_active_depths", "mtp_loss_weights",
                   "init_std", "attn_backend", "expert_backend", "router_bias_in_weights")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
_FLOAT_DTYPES = {"F32", "BF16", "F16"}


class HFFormatError(ValueError):
    """A folder that is not a loadable Step 3.5 checkpoint, or a model the format cannot hold."""


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig
# ---------------------------------------------------------------------------------------------
def _per_layer(hf: dict, key: str, n_all: int, default: Any, where: str) -> list:
    v = hf.get(key, default)
    if not isinstance(v, list):
        return [v] * n_all
    if len(v) < n_all:
        raise HFFormatError(f"{where}: {key} has {len(v)} entries, need {n_all} "
                            "(num_hidden_layers + num_nextn_predict_layers)")
    return v[:n_all]


def _one_value(values: list, idx: list[int], key: str, what: str, where: str):
    vals = {values[i] for i in idx}
    if len(vals) > 1:
        raise HFFormatError(f"{where}: {key} differs between {what} layers ({sorted(vals)}); "
                            "this model supports one value per attention type")
    return vals.pop() if vals else None


def config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """Our ``ModelConfig`` from a released ``config.json`` dict (the released key spelling)."""
    mt, arch = hf.get("model_type"), hf.get("architectures") or []
    if mt != MODEL_TYPE and ARCHITECTURE not in arch:
        raise HFFormatError(f"{where}: model_type {mt!r} / architectures {arch} is not Step 3.5 "
                            f"({MODEL_TYPE!r} / {ARCHITECTURE!r}); a different architecture")
    for key, want in (("att_impl_type", "GQA"), ("moe_router_activation", "sigmoid"), ("zero_centered", True),
                      ("norm_expert_weight", True), ("use_qk_norm", True), ("need_fp32_gate", True)):
        if key in hf and hf[key] != want:
            raise HFFormatError(f"{where}: {key} = {hf[key]!r} is not supported (only {want!r})")
    if any(v is False for v in hf.get("use_rope_layers") or []):
        raise HFFormatError(f"{where}: use_rope_layers switches RoPE off on some layers; not supported")
    try:
        n, m = int(hf["num_hidden_layers"]), int(hf.get("num_nextn_predict_layers", 0) or 0)
        d, head_dim = int(hf["hidden_size"]), int(hf["head_dim"])
        n_all = n + m
        types_hf = _per_layer(hf, "layer_types", n_all, "full_attention", where)
        unknown = sorted(set(types_hf) - set(OUR_TYPES))
        if unknown:
            raise HFFormatError(f"{where}: layer_types {unknown} not supported")
        types = [OUR_TYPES[t] for t in types_hf]
        if any(t != SWA for t in types[n:]):
            raise HFFormatError(f"{where}: MTP layers {list(range(n, n_all))} must be sliding_attention, "
                                f"got {types_hf[n:]}")
        full_idx = [i for i, t in enumerate(types) if t == FULL]
        swa_idx = [i for i, t in enumerate(types) if t == SWA]
        other = hf.get("attention_other_setting") or {}
        kv = int(hf.get("num_attention_groups", hf.get("num_key_value_heads", 0)))
        if int(other.get("num_attention_groups", kv)) != kv or int(other.get("head_dim", head_dim)) != head_dim:
            raise HFFormatError(f"{where}: attention_other_setting changes KV heads or head_dim on SWA "
                                "layers; this model shares them across layer types")
        prf = _per_layer(hf, "partial_rotary_factors", n_all, 1.0, where)
        thetas = [float(t) for t in _per_layer(hf, "rope_theta", n_all, 10000.0, where)]
        rd_full = _one_value(prf, full_idx, "partial_rotary_factors", "full-attention", where)
        rd_swa = _one_value(prf, swa_idx, "partial_rotary_factors", "sliding-window", where)
        moe_enum = hf.get("moe_layers_enum")
        if moe_enum is None:
            moe_set = set(range(1, n))  # the released code's default
        else:
            items = moe_enum.split(",") if isinstance(moe_enum, str) else moe_enum
            moe_set = {int(i) for i in items if str(i).strip()}
        n_dense = min(moe_set) if moe_set else n
        if moe_set != set(range(n_dense, n)):
            raise HFFormatError(f"{where}: moe_layers_enum {sorted(moe_set)} is not 'every layer from "
                                f"some k to {n - 1}'; this model has dense layers first, then MoE")
        n_experts = int(hf.get("moe_num_experts", 0))
        lim = [None if x in (None, 0) else float(x) for x in _per_layer(hf, "swiglu_limits", n_all, None, where)]
        lim_sh = [None if x in (None, 0) else float(x)
                  for x in _per_layer(hf, "swiglu_limits_shared", n_all, None, where)]
        scaling = _rope_scaling_from_hf(hf, where)
        private = hf.get(PRIVATE_KEY) or {}
        ep_groups = private.get("ep_groups") or next(g for g in (8, 4, 2, 1) if n_experts % g == 0 or n_experts == 0)
        fields = dict(
            name="hf", vocab_size=int(hf["vocab_size"]), d_model=d, n_layers=n, layer_types=tuple(types[:n]),
            n_heads_full=int(hf["num_attention_heads"]),
            n_heads_swa=int(other.get("num_attention_heads", hf["num_attention_heads"])),
            n_kv_heads=kv, head_dim=head_dim, window=int(hf.get("sliding_window") or hf.get("max_position_embeddings")),
            gated_attention=bool(hf.get("use_head_wise_attn_gate", False)), qk_norm=True,
            rope_theta_full=thetas[full_idx[0]] if full_idx else 1e4,
            rope_theta_swa=thetas[swa_idx[0]] if swa_idx else 1e4,
            rope_thetas=tuple(thetas),
            rotary_dim_full=int(head_dim * float(rd_full if rd_full is not None else 1.0)),
            rotary_dim_swa=int(head_dim * float(rd_swa if rd_swa is not None else 1.0)),
            max_position=int(hf.get("max_position_embeddings", 262144)),
            n_dense_layers=n_dense, dense_hidden=int(hf["intermediate_size"]),
            n_experts=n_experts if moe_set else 0, top_k=int(hf.get("moe_top_k", 1)), n_shared_experts=1,
            expert_hidden=int(hf.get("moe_intermediate_size", 0)),
            shared_hidden=int(hf.get("share_expert_dim", hf.get("share_expert_dims", 0))),
            routed_scaling=float(hf.get("moe_router_scaling_factor", 1.0)),
            ep_groups=ep_groups, swiglu_limits=tuple(lim), swiglu_limits_shared=tuple(lim_sh),
            dense_clip_from_shared=True, n_mtp=m, mtp_hidden=int(hf["intermediate_size"]),
            mtp_active_depths=min(1, m), mtp_embedding_first=True, mtp_share_lm_head=False,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            norm_eps=float(hf.get("rms_norm_eps", 1e-5)), **scaling)
    except KeyError as exc:
        raise HFFormatError(f"{where}: missing key {exc.args[0]!r}") from None
    for key in TRAINING_FIELDS:
        if key in private:
            fields[key] = tuple(private[key]) if isinstance(private[key], list) else private[key]
    if fields["rope_scaling"] == "none" and "rope_scaling_original_max_position" in private:
        fields["rope_scaling_original_max_position"] = int(private["rope_scaling_original_max_position"])
    if "mtp_loss_weights" not in private and m > 3:
        fields["mtp_loss_weights"] = tuple(0.6 ** k for k in range(m))
    fields["mtp_active_depths"] = min(int(fields["mtp_active_depths"]), m)
    try:
        return ModelConfig(**fields)
    except ValueError as exc:
        raise HFFormatError(f"{where}: {exc}") from None


def _rope_scaling_from_hf(hf: dict, where: str) -> dict:
    rs = hf.get("rope_scaling")
    types = hf.get("yarn_only_types")
    # the released code applies rope_scaling to every layer unless yarn_only_types names some
    layer_types = (FULL, SWA) if not types else tuple(OUR_TYPES[t] for t in types if t in OUR_TYPES)
    if not rs:
        return {"rope_scaling": "none", "rope_scaling_layer_types": layer_types}
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return {"rope_scaling": "none", "rope_scaling_layer_types": layer_types}
    out: dict[str, Any] = {"rope_scaling": kind, "rope_scaling_layer_types": layer_types,
                           "rope_scaling_factor": float(rs.get("factor", 1.0)),
                           "rope_scaling_original_max_position": int(rs.get("original_max_position_embeddings", 131072))}
    if kind == "llama3":
        out["llama3_low_freq_factor"] = float(rs.get("low_freq_factor", 1.0))
        out["llama3_high_freq_factor"] = float(rs.get("high_freq_factor", 4.0))
    elif kind == "yarn":
        extra = {k: rs[k] for k in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor")
                 if rs.get(k) not in (None, {"beta_fast": 32, "beta_slow": 1}.get(k))}
        if extra or rs.get("truncate", True) is not True:
            raise HFFormatError(f"{where}: rope_scaling yarn with {extra or 'truncate=False'} not supported "
                                "(only beta_fast 32, beta_slow 1, the default temperature)")
    else:
        raise HFFormatError(f"{where}: rope_scaling type {kind!r} not supported (llama3, yarn)")
    return out


def config_to_hf(cfg: ModelConfig, base: dict | None = None) -> dict:
    """A released-style ``config.json`` dict for ``cfg`` (``base``: keys to keep, e.g. token ids)."""
    if cfg.router_bias_in_weights:
        raise HFFormatError("router_bias_in_weights=True (biased combine weights) cannot be expressed in the "
                            "released format, whose router combines unbiased scores")
    if not cfg.qk_norm:
        raise HFFormatError("qk_norm=False cannot be expressed in the released format (q_norm/k_norm always exist)")
    if cfg.n_experts and cfg.n_shared_experts != 1:
        raise HFFormatError(f"n_shared_experts={cfg.n_shared_experts}: the released format has one shared expert")
    if cfg.n_mtp and cfg.mtp_hidden != cfg.dense_hidden:
        raise HFFormatError(f"mtp_hidden {cfg.mtp_hidden} != dense_hidden {cfg.dense_hidden}: the released format "
                            "gives MTP layers the dense layers' intermediate_size")
    n, n_all = cfg.n_layers, cfg.n_layers + cfg.n_mtp
    types = cfg.all_layer_types
    dense = [i for i in range(n_all) if not cfg.is_moe(i) or i >= n]
    # effective clip lists: dense FFNs read swiglu_limits_shared in the released code
    lim_sh = [cfg.dense_limit(i) if i in dense else cfg.swiglu_limits_shared[i] for i in range(n_all)]
    lim = list(cfg.swiglu_limits)
    hf = dict(base or {})
    hf.pop("torch_dtype", None)
    hf.update({
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE,
        "hidden_size": cfg.d_model, "num_hidden_layers": n, "vocab_size": cfg.vocab_size,
        "num_attention_heads": cfg.n_heads_full, "num_attention_groups": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "intermediate_size": cfg.dense_hidden, "att_impl_type": "GQA",
        "max_position_embeddings": cfg.max_position, "rms_norm_eps": cfg.norm_eps,
        "layer_types": [HF_TYPES[t] for t in types], "sliding_window": cfg.window,
        "attention_other_setting": {"attention_type": "sliding_attention", "num_attention_heads": cfg.n_heads_swa,
                                    "num_attention_groups": cfg.n_kv_heads, "head_dim": cfg.head_dim},
        "rope_theta": list(cfg.rope_thetas),
        "partial_rotary_factors": [(cfg.rotary_dim_full if t == FULL else cfg.rotary_dim_swa) / cfg.head_dim
                                   for t in types],
        "use_head_wise_attn_gate": cfg.gated_attention, "use_qk_norm": True, "zero_centered": True,
        "moe_layers_enum": ",".join(str(i) for i in range(n) if cfg.is_moe(i)),
        "moe_num_experts": cfg.n_experts, "moe_top_k": cfg.top_k, "moe_intermediate_size": cfg.expert_hidden,
        "share_expert_dim": cfg.shared_hidden, "moe_router_activation": "sigmoid",
        "moe_router_scaling_factor": cfg.routed_scaling, "norm_expert_weight": True,
        "use_moe_router_bias": True, "need_fp32_gate": True,
        "swiglu_limits": [0.0 if x is None else x for x in lim],
        "swiglu_limits_shared": [0.0 if x is None else x for x in lim_sh],
        "num_nextn_predict_layers": cfg.n_mtp, "tie_word_embeddings": cfg.tie_embeddings,
        "yarn_only_types": [HF_TYPES[t] for t in cfg.rope_scaling_layer_types],
        PRIVATE_KEY: {k: getattr(cfg, k) for k in TRAINING_FIELDS + ("rope_scaling_original_max_position",)},
    })
    if cfg.rope_scaling == "none":
        hf["rope_scaling"] = None
    else:
        rs = {"rope_type": cfg.rope_scaling, "factor": cfg.rope_scaling_factor,
              "original_max_position_embeddings": cfg.rope_scaling_original_max_position}
        if cfg.rope_scaling == "llama3":
            rs.update(low_freq_factor=cfg.llama3_low_freq_factor, high_freq_factor=cfg.llama3_high_freq_factor)
        hf["rope_scaling"] = rs
    return hf


# ---------------------------------------------------------------------------------------------
# tensor names
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    """One released tensor: its name, our parameter/buffer, the rows of it (fused wqkv), shape."""
    hf_name: str
    ours: str
    shape: tuple[int, ...]
    rows: tuple[int, int] | None = None  # [start, stop) of our tensor's dim 0
    swap_halves: bool = False  # eh_proj of a model with mtp_embedding_first=False: columns [h|e]
    fp32: bool = False  # router bias: kept fp32 in the released files

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _block_specs(cfg: ModelConfig, layer: int, ours: str, hf: str, layer_type: str, moe: bool,
                 dense_hidden: int) -> list[TensorSpec]:
    d, hd, kv = cfg.d_model, cfg.head_dim, cfg.n_kv_heads
    H = cfg.n_heads(layer_type)
    q, k = H * hd, kv * hd
    out = [TensorSpec(f"{hf}.input_layernorm.weight", f"{ours}.attn_norm.weight", (d,)),
           TensorSpec(f"{hf}.post_attention_layernorm.weight", f"{ours}.ffn_norm.weight", (d,))]
    a, wq = f"{hf}.self_attn", f"{ours}.attn.wqkv.weight"
    out += [TensorSpec(f"{a}.q_proj.weight", wq, (q, d), (0, q)),
            TensorSpec(f"{a}.k_proj.weight", wq, (k, d), (q, q + k)),
            TensorSpec(f"{a}.v_proj.weight", wq, (k, d), (q + k, q + 2 * k))]
    if cfg.gated_attention:
        out.append(TensorSpec(f"{a}.g_proj.weight", wq, (H, d), (q + 2 * k, q + 2 * k + H)))
    out += [TensorSpec(f"{a}.o_proj.weight", f"{ours}.attn.wo.weight", (d, q)),
            TensorSpec(f"{a}.q_norm.weight", f"{ours}.attn.q_norm.weight", (hd,)),
            TensorSpec(f"{a}.k_norm.weight", f"{ours}.attn.k_norm.weight", (hd,))]
    if moe:
        E, I, S = cfg.n_experts, cfg.expert_hidden, cfg.shared_hidden
        f = f"{ours}.ffn"
        out += [TensorSpec(f"{hf}.moe.gate.weight", f"{f}.router.weight", (E, d)),
                TensorSpec(f"{hf}.moe.router_bias", f"{f}.router_bias", (E,), fp32=True),
                TensorSpec(f"{hf}.moe.gate_proj.weight", f"{f}.experts.w1", (E, I, d)),
                TensorSpec(f"{hf}.moe.up_proj.weight", f"{f}.experts.w3", (E, I, d)),
                TensorSpec(f"{hf}.moe.down_proj.weight", f"{f}.experts.w2", (E, d, I)),
                TensorSpec(f"{hf}.share_expert.gate_proj.weight", f"{f}.shared.w1.weight", (S, d)),
                TensorSpec(f"{hf}.share_expert.up_proj.weight", f"{f}.shared.w3.weight", (S, d)),
                TensorSpec(f"{hf}.share_expert.down_proj.weight", f"{f}.shared.w2.weight", (d, S))]
    else:
        out += [TensorSpec(f"{hf}.mlp.gate_proj.weight", f"{ours}.ffn.w1.weight", (dense_hidden, d)),
                TensorSpec(f"{hf}.mlp.up_proj.weight", f"{ours}.ffn.w3.weight", (dense_hidden, d)),
                TensorSpec(f"{hf}.mlp.down_proj.weight", f"{ours}.ffn.w2.weight", (d, dense_hidden))]
    return out


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of the released layout for ``cfg``, in file order, with where it lives in
    ``Step35Model``."""
    d, V = cfg.d_model, cfg.vocab_size
    out = [TensorSpec("model.embed_tokens.weight", "embed.weight", (V, d))]
    for i in range(cfg.n_layers):
        out += _block_specs(cfg, i, f"layers.{i}", f"model.layers.{i}", cfg.layer_types[i], cfg.is_moe(i),
                            cfg.dense_hidden)
    out += [TensorSpec("model.norm.weight", "norm.weight", (d,)),
            TensorSpec("lm_head.weight", "lm_head.weight", (V, d))]
    for k in range(cfg.n_mtp):
        L, ours = cfg.n_layers + k, f"mtp.{k}"
        hf = f"model.layers.{L}"
        out += [TensorSpec(f"{hf}.enorm.weight", f"{ours}.e_norm.weight", (d,)),
                TensorSpec(f"{hf}.hnorm.weight", f"{ours}.h_norm.weight", (d,)),
                TensorSpec(f"{hf}.eh_proj.weight", f"{ours}.proj.weight", (d, 2 * d),
                           swap_halves=not cfg.mtp_embedding_first),
                TensorSpec(f"{hf}.transformer.shared_head.norm.weight", f"{ours}.out_norm.weight", (d,)),
                TensorSpec(f"{hf}.transformer.shared_head.output.weight",
                           "lm_head.weight" if cfg.mtp_share_lm_head else f"{ours}.output.weight", (V, d))]
        out += _block_specs(cfg, L, f"{ours}.block", hf, SWA, False, cfg.mtp_hidden)
    return out


def _NOT_IN_FILES(model) -> set[str]:
    """State-dict entries with no released tensor: loss-free balancing loads since the last bias
    update (zeroed on load; a fresh run starts a fresh window)."""
    return {n for n, _ in model.named_buffers() if n.endswith(".bias_load")}


# ModelConfig fields load_pretrained(overrides=...) may change: run-time choices, not architecture
RUNTIME_FIELDS = ("name", "attn_backend", "expert_backend", "mtp_active_depths", "mtp_loss_weights",
                  "ep_groups", "ep_loss_coef", "init_std")

# tensors some exports of this family carry that the model does not use: skipped on load
_OPTIONAL = re.compile(r"^model\.layers\.\d+\.(embed_tokens\.weight|transformer\.shared_head\.head\.weight)$")


# ---------------------------------------------------------------------------------------------
# reading: validate every header first, then stream
# ---------------------------------------------------------------------------------------------
@dataclass
class CheckpointPlan:
    root: Path
    cfg: ModelConfig
    hf_config: dict
    files: dict[str, Path]  # tensor name → shard file
    specs: list[TensorSpec]
    skipped: list[str]  # optional tensors present but unused

    @property
    def n_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in set(self.files.values()))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HFFormatError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFFormatError(f"{path}: not valid JSON ({exc})") from None


def _shard_headers(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name → (dtype, shape) from a shard's header; safetensors also rejects truncated files here."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise HFFormatError(f"{path}: shard file missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            out = {}
            for name in f.keys():
                sl = f.get_slice(name)
                out[name] = (sl.get_dtype(), tuple(sl.get_shape()))
            return out
    except SafetensorError as exc:
        raise HFFormatError(f"{path}: unreadable safetensors file, truncated or corrupt ({exc})") from None


def inspect_pretrained(path: str | os.PathLike) -> CheckpointPlan:
    """Read ``config.json`` and every shard header and check them against the model the config
    describes; raises ``HFFormatError`` naming the file and tensor.  Reads no weights."""
    root = Path(path)
    if not root.is_dir():
        raise HFFormatError(f"{root}: not a folder")
    hf = _read_json(root / "config.json")
    cfg = config_from_hf(hf, str(root / "config.json"))
    index = root / INDEX_FILE
    if index.is_file():
        wm = _read_json(index).get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise HFFormatError(f"{index}: no weight_map")
        claimed = {name: root / fname for name, fname in wm.items()}
    elif (root / SINGLE_FILE).is_file():
        claimed = None
    else:
        raise HFFormatError(f"{root}: neither {INDEX_FILE} nor {SINGLE_FILE}")
    shard_paths = sorted(set(claimed.values())) if claimed else [root / SINGLE_FILE]
    present: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    for shard in shard_paths:
        for name, (dt, shape) in _shard_headers(shard).items():
            if name in present:
                raise HFFormatError(f"{shard}: tensor {name} also in {present[name][0]}")
            present[name] = (shard, dt, shape)
    if claimed:
        for name, shard in claimed.items():
            if name not in present:
                raise HFFormatError(f"{index}: maps {name} to {shard.name}, which does not hold it")
            if present[name][0] != shard:
                raise HFFormatError(f"{index}: maps {name} to {shard.name}, but it is in {present[name][0].name}")
    specs = tensor_specs(cfg)
    if cfg.tie_embeddings:  # a tied checkpoint may leave the head out
        specs = [s for s in specs if not (s.hf_name == "lm_head.weight" and s.hf_name not in present)]
    expected = {s.hf_name for s in specs}
    missing = [s.hf_name for s in specs if s.hf_name not in present]
    if missing:
        raise HFFormatError(f"{root}: {len(missing)} tensor(s) missing for this config, e.g. "
                            f"{', '.join(missing[:5])}")
    skipped = sorted(n for n in present if n not in expected and _OPTIONAL.match(n))
    extra = sorted(n for n in present if n not in expected and n not in skipped)
    if extra:
        raise HFFormatError(f"{root}: {len(extra)} unexpected tensor(s) for this config, e.g. "
                            + ", ".join(f"{n} (in {present[n][0].name})" for n in extra[:5]))
    for s in specs:
        shard, dt, shape = present[s.hf_name]
        if shape != s.shape:
            raise HFFormatError(f"{shard}: tensor {s.hf_name} has shape {list(shape)}, config.json implies "
                                f"{list(s.shape)}")
        if dt not in _FLOAT_DTYPES:
            raise HFFormatError(f"{shard}: tensor {s.hf_name} has dtype {dt}; only F32/BF16/F16 "
                                "(quantized checkpoints are not supported)")
    files = {s.hf_name: present[s.hf_name][0] for s in specs}
    return CheckpointPlan(root, cfg, hf, files, specs, skipped)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled, dynamic_ncols=True)


def load_pretrained(path: str | os.PathLike, dtype: torch.dtype | str | None = None,
                    device: torch.device | str | None = None, progress: bool = False,
                    overrides: dict[str, Any] | None = None):
    """``Step35Model`` with the weights of a released-layout folder.

    ``dtype`` of the parameters (default float32, what training wants; router-bias buffers stay
    fp32 whatever it is), ``device`` (default CPU).  ``overrides``: run-time ModelConfig fields
    (``attn_backend``, ``mtp_active_depths``, ...), never the architecture.  Everything is
    checked before the first weight is copied (``inspect_pretrained``)."""
    from model.transformer import Step35Model

    plan = inspect_pretrained(path)
    bad = sorted(set(overrides or {}) - set(RUNTIME_FIELDS))
    if bad:
        raise ValueError(f"load_pretrained: {bad} describe the architecture, which config.json fixes; "
                         f"overridable: {list(RUNTIME_FIELDS)}")
    cfg = plan.cfg.replace(**overrides) if overrides else plan.cfg
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    dtype = dtype or torch.float32
    device = torch.device(device or "cpu")
    with torch.device("meta"):
        model = Step35Model(cfg)
    model.to(dtype)  # on meta: free; MoE keeps its balancing buffers fp32
    model.to_empty(device=device)
    model.reset_routing_buffers()
    _fill(model, plan, progress)
    model.hf_config = plan.hf_config  # kept so save_pretrained preserves keys we do not model
    return model


def _fill(model, plan: CheckpointPlan, progress: bool = False) -> None:
    """Copy every tensor of a validated folder into ``model``, one tensor in host memory at a time."""
    from safetensors import safe_open

    targets = dict(model.named_parameters(remove_duplicate=False))
    targets.update(model.named_buffers())
    uncovered = set(model.state_dict()) - {s.ours for s in plan.specs} - _NOT_IN_FILES(model)
    if uncovered:  # a model part the layout does not describe: a bug here, not in the folder
        raise RuntimeError(f"tensor_specs misses {sorted(uncovered)[:5]}")
    by_file: dict[Path, list[TensorSpec]] = {}
    for s in plan.specs:
        by_file.setdefault(plan.files[s.hf_name], []).append(s)
    with _progress(plan.n_bytes, f"load {plan.root.name}", progress) as bar, torch.no_grad():
        for shard, specs in by_file.items():
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                for s in specs:
                    t = f.get_tensor(s.hf_name)
                    if s.swap_halves:
                        t = torch.cat(t.chunk(2, dim=1)[::-1], dim=1)
                    dst = targets[s.ours]
                    (dst[s.rows[0]:s.rows[1]] if s.rows else dst).copy_(t)
                    bar.update(t.numel() * t.element_size())
                    del t


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _size_bytes(v: int | str) -> int:
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*", str(v).upper())
    if not m:
        raise ValueError(f"max_shard_size {v!r}: use bytes or e.g. '5GB', '500MB'")
    mult = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
    if m.group(3) == "IB":
        mult = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def _export_tensor(state: dict[str, torch.Tensor], s: TensorSpec, dtype: torch.dtype | None) -> torch.Tensor:
    t = state[s.ours]
    if hasattr(t, "full_tensor"):  # FSDP2 DTensor
        t = t.full_tensor()
    t = t.detach()
    if s.rows:
        t = t[s.rows[0]:s.rows[1]]
    if s.swap_halves:  # our [h | e] columns → the released [e | h]
        t = torch.cat(t.chunk(2, dim=1)[::-1], dim=1)
    out_dtype = torch.float32 if s.fp32 else (dtype or t.dtype)
    out = t.to(device="cpu", dtype=out_dtype).contiguous()
    # a view of the model's own storage: copy, so tied or shared weights (lm_head written again as
    # every MTP output head) become separate tensors in the file, as the layout wants
    return out.clone() if out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() else out


def live_config(model) -> ModelConfig:
    """``model.cfg`` with the RoPE θ and scaling its attention layers use *now*: the trainer
    changes θ between curriculum phases (``set_rope_theta``) and inference may add scaling, and
    an export must describe the function the weights were trained for."""
    from model.attention import Attention
    from model.rope import NO_SCALING

    cfg: ModelConfig = model.cfg
    attns = [b.attn for b in model.layers] + [h.block.attn for h in model.mtp]
    assert all(isinstance(a, Attention) for a in attns)
    thetas = tuple(float(a.rope_theta) for a in attns)
    scaled = {a.rope_scaling for a in attns if a.rope_scaling.active}
    if len(scaled) > 1:
        raise HFFormatError(f"layers use different RoPE scalings {sorted(map(str, scaled))}; the format has one")
    if not scaled:
        return cfg.replace(rope_thetas=thetas, rope_scaling="none")
    sc = scaled.pop()
    types = tuple(t for t in (FULL, SWA) if any(a.layer_type == t and a.rope_scaling != NO_SCALING for a in attns))
    if any(a.layer_type in types and a.rope_scaling != sc for a in attns):
        raise HFFormatError("RoPE scaling applies to some layers of a type and not others; the format has "
                            "one setting per attention type (yarn_only_types)")
    return cfg.replace(rope_thetas=thetas, rope_scaling=sc.kind, rope_scaling_factor=sc.factor,
                       rope_scaling_original_max_position=sc.original_max_position,
                       llama3_low_freq_factor=sc.low_freq_factor, llama3_high_freq_factor=sc.high_freq_factor,
                       rope_scaling_layer_types=types)


def save_pretrained(model, path: str | os.PathLike, max_shard_size: int | str = "5GB",
                    dtype: torch.dtype | str | None = None, progress: bool = False,
                    overwrite: bool = False) -> Path:
    """Write ``config.json``, ``model-0000i-of-0000N.safetensors`` and ``model.safetensors.index.json``
    in the released layout.  ``dtype`` of the weights (default: the parameters'; the released
    files are bfloat16; router biases are always fp32).  The folder appears complete or not at
    all (written beside it, then renamed)."""
    from safetensors.torch import save_file

    cfg = live_config(model)
    if isinstance(dtype, str):
        dtype = DTYPES[dtype]
    hf = config_to_hf(cfg, getattr(model, "hf_config", None))
    specs = tensor_specs(cfg)
    limit = _size_bytes(max_shard_size)
    state = dict(model.named_parameters(remove_duplicate=False))
    state.update(model.named_buffers())

    def nbytes(s: TensorSpec) -> int:
        src = state[s.ours]
        return s.numel * (4 if s.fp32 else (torch.empty(0, dtype=dtype or src.dtype).element_size()))

    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:  # shard plan first, so file names can say "of N"
        b = nbytes(s)
        if shards[-1] and size + b > limit:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += b
    final = Path(path)
    occupied = final.is_file() or (final.is_dir() and any(final.iterdir()))
    if occupied and not overwrite:
        raise FileExistsError(f"{final}: exists and is not empty (pass overwrite=True)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=final.parent))
    try:
        weight_map, total = {}, 0
        n = len(shards)
        with _progress(sum(nbytes(s) for s in specs), f"save {final.name}", progress) as bar:
            for i, group in enumerate(shards, 1):
                fname = f"model-{i:05d}-of-{n:05d}.safetensors"
                tensors = {}
                for s in group:
                    tensors[s.hf_name] = _export_tensor(state, s, dtype)
                    weight_map[s.hf_name] = fname
                    b = tensors[s.hf_name].numel() * tensors[s.hf_name].element_size()
                    total += b
                    bar.update(b)
                save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
                del tensors
        hf["torch_dtype"] = str(dtype or state["embed.weight"].dtype).replace("torch.", "")
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
        (tmp / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                 indent=2) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# ---------------------------------------------------------------------------------------------
# our DCP checkpoints <-> HF folders
# ---------------------------------------------------------------------------------------------
def find_dcp_checkpoint(path: str | os.PathLike) -> Path:
    """A complete ``step_XXXXXXXX`` folder: ``path`` itself, or the newest one under a run folder."""
    from model.checkpoint import latest_checkpoint

    p = Path(path)
    if (p / "COMPLETE").is_file():
        return p
    ck = latest_checkpoint(p)
    if ck is None:
        ck = latest_checkpoint(p.parent) if p.name == "checkpoints" else None
    if ck is None:
        raise HFFormatError(f"{p}: no complete checkpoint (a step_XXXXXXXX folder with COMPLETE, or a run folder)")
    return ck


def _run_config(ck: Path) -> ModelConfig:
    """The model config of a DCP checkpoint: ``model_config.json`` beside it (written by import)
    or the run folder's ``config.json`` (written by ``train``)."""
    for cand in (ck / "model_config.json", ck.parent.parent / "config.json"):
        if cand.is_file():
            d = _read_json(cand)
            return ModelConfig.from_dict(d.get("model", d))
    raise HFFormatError(f"{ck}: no model_config.json here and no run config.json at {ck.parent.parent}")


def load_dcp_weights(model, ck: Path) -> None:
    """Model weights (and router biases) of a DCP checkpoint, without its optimizer state."""
    import warnings

    import torch.distributed.checkpoint as dcp

    sd = model.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dcp.load({"model": sd}, checkpoint_id=str(ck))
    model.load_state_dict(sd)


def save_dcp_weights(model, out: str | os.PathLike, step: int = 0) -> Path:
    """A weights-only DCP checkpoint in our layout (``out/checkpoints/step_XXXXXXXX``) that
    ``train --init-from`` and ``export`` read; the model config sits beside it."""
    import warnings

    import torch.distributed.checkpoint as dcp

    from model.checkpoint import checkpoint_dir
    from stepcrawl.io import write_json

    root = checkpoint_dir(out)
    final = root / f"step_{step:08d}"
    if final.exists():
        raise FileExistsError(f"{final}: exists")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}.", dir=root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dcp.save({"model": model.state_dict()}, checkpoint_id=str(tmp))
        write_json(tmp / "model_config.json", model.cfg.to_dict())
        (tmp / "COMPLETE").write_text(json.dumps({"step": step, "weights_only": True}) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def schedule_rope_theta(ck: Path) -> tuple[float, float] | None:
    """RoPE θ (full, SWA) a ``train`` run applied at the checkpoint's step (θ is a curriculum
    schedule value, not a weight): that step's phase from ``metrics.jsonl`` looked up in the
    run's curriculum.  None if the run folder does not say."""
    from curricula import CurriculumError, load_curriculum

    run = ck.parent.parent
    m = re.match(r"step_(\d+)$", ck.name)
    if not m or not (run / "metrics.jsonl").is_file() or not (run / "config.json").is_file():
        return None
    step, phase = int(m.group(1)), None
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step") == step:
            phase = rec.get("phase")
    cur_path = (_read_json(run / "config.json").get("args") or {}).get("curriculum")
    if not phase or not cur_path:
        return None
    try:
        cur = load_curriculum(cur_path)
    except (CurriculumError, OSError):
        log.warning("%s: curriculum %s not readable; RoPE θ taken from the model config", ck, cur_path)
        return None
    stage_name, _, phase_name = phase.partition("/")
    for stage in cur.stages:
        for ph in stage.phases:
            if stage.name == stage_name and ph.name == phase_name:
                return float(ph.schedule.rope_theta_full), float(ph.schedule.rope_theta_swa)
    return None


def load_any(path: str | os.PathLike, cfg: ModelConfig | None = None, dtype=None, device=None,
             progress: bool = False):
    """A model from an HF folder (``config.json`` + safetensors) or one of our DCP checkpoints."""
    from model.transformer import Step35Model

    p = Path(path)
    if is_hf_folder(p):
        return load_pretrained(p, dtype=dtype, device=device, progress=progress)
    ck = find_dcp_checkpoint(p)
    model = Step35Model(cfg or _run_config(ck)).to(device or "cpu")
    load_dcp_weights(model, ck)
    theta = schedule_rope_theta(ck)
    if theta:
        model.set_rope_theta(*theta)
        log.info("%s: RoPE θ full %g / SWA %g (the run's schedule at that step)", ck, *theta)
    return model.to(dtype) if dtype else model


def is_hf_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / "config.json").is_file() and ((p / INDEX_FILE).is_file() or (p / SINGLE_FILE).is_file())


def _architecture_diff(a: ModelConfig, b: ModelConfig) -> list[str]:
    return [f for f in a.to_dict() if f not in RUNTIME_FIELDS and getattr(a, f) != getattr(b, f)]


def init_source_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The config of a ``train --init-from`` source (an HF folder, one of our checkpoints or a
    run folder), checked now (an HF folder's every header), with ``overrides`` that may change
    run-time fields only."""
    p = Path(path)
    base = inspect_pretrained(p).cfg if is_hf_folder(p) else _run_config(find_dcp_checkpoint(p))
    try:
        cfg = base.replace(**overrides) if overrides else base
    except (TypeError, ValueError) as exc:
        raise HFFormatError(f"{p}: {exc}") from None
    diff = _architecture_diff(cfg, base)
    if diff:
        changes = ", ".join(f"{k} {getattr(base, k)!r} -> {getattr(cfg, k)!r}" for k in diff[:4])
        raise HFFormatError(f"{p}: overrides change its architecture ({changes}); only "
                            f"{list(RUNTIME_FIELDS)} may change")
    return cfg


def load_init_weights(model, path: str | os.PathLike, progress: bool = False) -> None:
    """Copy the weights of ``path`` (HF folder or our checkpoint) into ``model`` in place (before
    FSDP sharding: every rank holds the full model once, plus one tensor while copying)."""
    p = Path(path)
    if is_hf_folder(p):
        plan = inspect_pretrained(p)
        diff = _architecture_diff(model.cfg, plan.cfg)
        if diff:
            raise HFFormatError(f"{p}: config.json differs from the model in {diff[:4]}")
        model.reset_routing_buffers()
        _fill(model, plan, progress)
        model.hf_config = plan.hf_config
    else:
        load_dcp_weights(model, find_dcp_checkpoint(p))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _cmd_import(args) -> int:
    model = load_pretrained(args.hf_dir, dtype=args.dtype, progress=not args.no_progress)
    ck = save_dcp_weights(model, args.out)
    print(f"imported {args.hf_dir} ({model.cfg.n_layers} layers, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters) -> {ck}")
    return 0


def _cmd_export(args) -> int:
    model = load_any(args.ckpt, progress=not args.no_progress)
    out = save_pretrained(model, args.out, max_shard_size=args.max_shard_size, dtype=args.dtype,
                          progress=not args.no_progress, overwrite=args.overwrite)
    print(f"exported {args.ckpt} -> {out}")
    return 0


def _cmd_inspect(args) -> int:
    plan = inspect_pretrained(args.hf_dir)
    c = plan.cfg
    print(f"{plan.root}: {len(plan.specs)} tensors in {len(set(plan.files.values()))} file(s), "
          f"{plan.n_bytes / 1e9:.2f} GB; {c.n_layers} layers ({c.layer_types.count(FULL)} full) + {c.n_mtp} MTP, "
          f"d {c.d_model}, {c.n_experts} experts top-{c.top_k}, θ full {c.rope_theta_full:g} / swa "
          f"{c.rope_theta_swa:g}, rope scaling {c.rope_scaling} ×{c.rope_scaling_factor:g}"
          + (f"; skipped {plan.skipped}" if plan.skipped else ""))
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.hf", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("import", help="HF/released folder -> our checkpoint (weights only)")
    p.add_argument("hf_dir")
    p.add_argument("--out", required=True, help="run folder; the checkpoint goes to OUT/checkpoints/step_00000000")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.set_defaults(func=_cmd_import)
    p = sub.add_parser("export", help="our checkpoint (step folder or run folder) -> HF folder")
    p.add_argument("ckpt")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="weight dtype (released: bfloat16)")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_cmd_export)
    p = sub.add_parser("inspect", help="check an HF folder (config + headers) without reading weights")
    p.add_argument("hf_dir")
    p.set_defaults(func=_cmd_inspect)
    for sp in sub.choices.values():
        sp.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (HFFormatError, FileExistsError) as exc:
        print(f"model.hf: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The Step 3.5 Flash model: embedding → hybrid S3F1 attention/MoE blocks → norm → LM head,
plus MTP heads.  ``Step35Model(cfg)`` builds any size; on the meta device it allocates nothing
(``with torch.device("meta"): Step35Model(get_config("full"))``).

Conventions the trainer relies on:

* ``labels`` are already aligned with ``input_ids``: ``labels[:, t]`` is the target of position
  ``t`` (the next token), ``-100`` = no loss.  The model does not shift.
* ``document_ids`` ``[B, T]`` mark packed documents (attention never crosses them);
  ``position_ids`` default to positions inside each document (restarting at 0), or ``0..T-1``
  without documents.
* ``loss = lm_loss + mtp_weight * mtp_loss + ep_loss_coef * aux_loss``.  ``lm_loss`` and each MTP
  depth's loss are means over non-ignored tokens; ``mtp_loss`` is the weighted mean over the
  active depths (``mtp_loss_weights``), ``None`` when ``mtp_weight == 0`` (heads are skipped);
  ``aux_loss`` is the EP-group balance loss *summed* over MoE layers (Megatron convention: each
  layer gets the coefficient's full gradient; ≈ n_moe_layers at perfect balance), with load
  fractions from this forward (``balance_scope="micro"``) or from the whole optimizer step
  across micro-batches and data-parallel ranks (``"global"``, see ``set_balance_scope``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.attention import Attention, RopeCache, build_masks, positions_from_documents, resolve_backend
from model.config import FULL, SWA, ModelConfig
from model.moe import MoE, RoutingInfo, SwiGLU
from model.mtp import MTPHead, mtp_targets, shift_left
from model.norm import ZeroCenteredRMSNorm
from model.rope import RopeScaling


@dataclass
class ModelOutput:
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    mtp_loss: torch.Tensor | None
    aux_loss: torch.Tensor | None
    logits: torch.Tensor
    mtp_losses: list[torch.Tensor] = field(default_factory=list)  # per active depth, for logging


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + ffn(norm(x))``."""

    def __init__(self, cfg: ModelConfig, layer: int, layer_type: str, moe: bool, dense_hidden: int) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.attn_norm = ZeroCenteredRMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg, layer_type, layer)
        self.ffn_norm = ZeroCenteredRMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = MoE(cfg, layer) if moe else SwiGLU(cfg.d_model, dense_hidden, cfg.dense_limit(layer))

    def forward(self, x, rope: RopeCache, masks: dict, backend: str) -> tuple[torch.Tensor, RoutingInfo | None]:
        x = x + self.attn(self.attn_norm(x), rope, masks[self.layer_type], backend)
        if isinstance(self.ffn, MoE):
            y, info = self.ffn(self.ffn_norm(x))
            return x + y, info
        return x + self.ffn(self.ffn_norm(x)), None


class Step35Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(
            TransformerBlock(cfg, i, cfg.layer_types[i], cfg.is_moe(i), cfg.dense_hidden) for i in range(cfg.n_layers))
        self.norm = ZeroCenteredRMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # MTP heads: one SWA layer + dense FFN each; their layer index continues after the backbone
        self.mtp = nn.ModuleList(
            MTPHead(cfg.d_model, TransformerBlock(cfg, cfg.n_layers + k, SWA, False, cfg.mtp_hidden), cfg.norm_eps,
                    embedding_first=cfg.mtp_embedding_first,
                    vocab_size=None if cfg.mtp_share_lm_head else cfg.vocab_size)
            for k in range(cfg.n_mtp))
        self.mtp_active_depths = cfg.mtp_active_depths
        self.ep_loss_coef = cfg.ep_loss_coef
        self.balance_scope = "micro"  # set_balance_scope("global"): global-batch EP balance loss
        self.balance_group = None  # process group of the global balance counts (None = default)
        self.activation_checkpointing = False
        self.chunked_window = True  # SDPA path: O(T·W) chunked sliding window (False: dense mask)
        # model/parallel/context.py: called with whole sequences, the forward keeps one chunk
        self.context_parallel = None
        self.init_weights()

    # ------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std); output projections (``wo``, ``w2``) scaled by 1/√(2·n_layers)
        as in GPT-2/Megatron; norms start at 0 (= scale 1); router biases at 0."""
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * (self.cfg.n_layers + self.cfg.n_mtp))
        for name, p in self.named_parameters():
            if p.ndim == 1:  # zero-centred norm weights
                nn.init.zeros_(p)
            elif name.endswith(("wo.weight", "w2.weight", "experts.w2")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)
        self.reset_routing_buffers()

    @torch.no_grad()
    def reset_routing_buffers(self) -> None:
        """Router biases and load/statistics windows to 0 (also after ``to_empty()``: buffers
        hold garbage there; ``model.hf.load_pretrained`` then overwrites the biases)."""
        for m in self.moe_layers():
            for buf in (m.router_bias, m.bias_load, m.stat_load, m.stat_norm, m.balance_counts):
                buf.zero_()

    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    # --- run-time controls used by the trainer ---------------------------------------------
    def set_rope_theta(self, full: float, swa: float) -> None:
        """θ of full-attention and SWA layers (MTP heads are SWA layers)."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.rope_theta = float(full if m.layer_type == FULL else swa)

    def set_rope_scaling(self, kind: str, factor: float, original_max_position: int | None = None,
                         layer_types: tuple[str, ...] = (FULL,), **params) -> None:
        """Static RoPE scaling (``"llama3"``, ``"yarn"`` or ``"none"``) on the given layer types
        (full-attention layers only by default, like the released ``yarn_only_types``)."""
        for m in self.modules():
            if isinstance(m, Attention):
                if m.layer_type not in layer_types or kind == "none":
                    m.rope_scaling = RopeScaling()
                else:
                    orig = original_max_position or m.rope_scaling.original_max_position
                    m.rope_scaling = RopeScaling(kind, float(factor), int(orig), **params)

    def set_yarn(self, factor: float, original_max_position: int | None = None) -> None:
        """YaRN on full-attention layers only (the report's 256k evaluation uses ×2.0)."""
        orig = original_max_position or self.cfg.rope_scaling_original_max_position
        self.set_rope_scaling("yarn", factor, orig)

    def freeze_router(self, frozen: bool = True) -> None:
        for m in self.moe_layers():
            m.freeze(frozen)

    def update_router_bias(self, rate: float) -> None:
        """Loss-free balancing step from the loads accumulated since the last call.  Data-parallel
        trainers all-reduce every ``MoE.bias_load`` buffer (sum) before calling this."""
        for m in self.moe_layers():
            m.update_bias(rate)

    def set_ep_loss_coef(self, coef: float) -> None:
        self.ep_loss_coef = float(coef)

    def set_mtp_active_depths(self, n: int) -> None:
        if not 0 <= n <= len(self.mtp):
            raise ValueError(f"mtp_active_depths {n} outside 0..{len(self.mtp)}")
        self.mtp_active_depths = n

    @torch.no_grad()
    def clone_mtp_heads(self, targets=None) -> None:
        """Copy MTP-1's weights into MTP-2 … MTP-n (the report's final MTP phase), or into the
        heads whose 0-based indices are in ``targets``.  Works on FSDP2-sharded heads too (all
        heads are sharded alike, so every rank copies its own shard)."""
        idx = range(1, len(self.mtp)) if targets is None else [i for i in targets if i >= 1]
        src = self.mtp[0].state_dict()
        for i in idx:
            self.mtp[i].load_state_dict(src)

    def set_activation_checkpointing(self, on: bool = True) -> None:
        self.activation_checkpointing = on

    def routing_stats(self, reset: bool = True) -> dict:
        """Per MoE layer: load fraction per expert, dead experts, max/median and min/median of the
        experts' mean output norms and parameter norms (PAPER §4.1.2 monitoring advice), all
        since the last ``reset``; plus totals."""
        layers = {i: b.ffn.stats(reset) for i, b in enumerate(self.layers) if isinstance(b.ffn, MoE)}
        per = list(layers.values())
        summary = {
            "dead_experts": sum(s["dead_experts"] for s in per),
            "max_load_over_mean": max((s["max_load_over_mean"] for s in per), default=0.0),
            "out_norm_max_over_median": max((s.get("out_norm_max_over_median", 0.0) for s in per), default=0.0),
            "out_norm_min_over_median": min((s.get("out_norm_min_over_median", 1.0) for s in per), default=1.0),
        }
        return {"layers": layers, **summary}

    def set_balance_scope(self, scope: str) -> None:
        """Scope of the EP-group balance loss's load fractions ``f``:

        * ``"micro"`` — f of this forward's tokens only (the default; needs no trainer help);
        * ``"global"`` — f of every token routed since :meth:`reset_balance_window` (the trainer
          calls it after each optimizer step), summed over the data-parallel ranks: the
          global-batch balancing the report prefers (PAPER §4.1.3).  Like Megatron-Core's
          ``global_aux_loss``, micro-batch i of a step uses the counts of micro-batches 1..i of
          every rank (f is not differentiable, so later micro-batches cannot be waited for);
          the last micro-batch sees the whole global batch.  Costs one all-reduce of
          ``[n_moe_layers, n_experts]`` int64 counts per forward.
        Only training forwards with gradients use the window; evaluation is always ``micro``."""
        if scope not in ("micro", "global"):
            raise ValueError(f"balance scope {scope!r} not in micro|global")
        self.balance_scope = scope

    @torch.no_grad()
    def reset_balance_window(self) -> None:
        for m in self.moe_layers():
            m.balance_counts.zero_()

    def _balance_loss(self, routed: list[tuple[MoE, RoutingInfo]]) -> torch.Tensor | None:
        """Σ over MoE layers of the EP-group balance loss, computed *outside* the blocks (and
        so outside activation checkpointing: recomputation cannot change the counts used)."""
        if not routed:
            return None
        glob = (self.balance_scope == "global" and self.training
                and torch.is_grad_enabled() and self.ep_loss_coef != 0)
        if not glob:
            return torch.stack([info.aux_loss for _, info in routed]).sum()
        counts = torch.stack([info.counts for _, info in routed])  # [L, E] int64, this rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # over balance_group: the ranks running the same layers on other tokens (None = all;
            # model/parallel sets the layout's data x context mesh)
            torch.distributed.all_reduce(counts, group=self.balance_group)  # in place, fresh copy
        total = []
        with torch.no_grad():
            fs = []
            for (moe, _), c in zip(routed, counts):
                moe.balance_counts += c
                fs.append(moe.balance_counts.double() / moe.balance_counts.sum().clamp(min=1))
        for (moe, info), f in zip(routed, fs):
            total.append(moe.group_loss(f, info.probs))
        return torch.stack(total).sum()

    # ------------------------------------------------------------------------------------
    def _run_block(self, block, h, rope, masks, backend):
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, rope, masks, backend, use_reentrant=False)
        return block(h, rope, masks, backend)

    @staticmethod
    def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over non-ignored targets (0 with grad if there are none)."""
        total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                ignore_index=-100, reduction="sum")
        return total / (targets != -100).sum().clamp(min=1)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                mtp_weight: float = 0.0) -> ModelOutput:
        B, T = input_ids.shape
        device = input_ids.device
        if position_ids is None:
            position_ids = (positions_from_documents(document_ids) if document_ids is not None
                            else torch.arange(T, device=device).expand(B, T))
        backend = resolve_backend(self.cfg.attn_backend, device)
        if backend == "flex" and device.type != "cuda" and self.training and torch.is_grad_enabled():
            raise RuntimeError("attn_backend='flex' has no backward off CUDA (torch 2.13): train on CPU "
                               "with attn_backend='sdpa' or 'auto'; flex runs here for inference only")
        cp = self.context_parallel
        full_ids, full_labels, full_docs = input_ids, labels, document_ids
        local = cp.local if cp is not None else (lambda x: x)
        if cp is not None:  # whole-sequence masks against this rank's chunk of queries
            backend = "sdpa" if backend == "flex" else backend
            masks = cp.build_masks(B, T, self.cfg.window, document_ids, device)
            input_ids, labels, position_ids = local(input_ids), local(labels), local(position_ids)
        else:
            masks = build_masks(backend, B, T, self.cfg.window, document_ids, device, self.chunked_window)
        rope = RopeCache(position_ids)

        h = self.embed(input_ids)
        routed: list[tuple[MoE, RoutingInfo]] = []
        for block in self.layers:
            h, info = self._run_block(block, h, rope, masks, backend)
            if info is not None:
                block.ffn.record(info)
                routed.append((block.ffn, info))
        aux = self._balance_loss(routed)
        logits = self.lm_head(self.norm(h))

        lm_loss = mtp_loss = loss = None
        mtp_losses: list[torch.Tensor] = []
        if labels is not None:
            lm_loss = self._ce(logits, labels)
            loss = lm_loss
            n_active = min(self.mtp_active_depths, len(self.mtp))
            if mtp_weight and n_active:
                h_prev = h
                for k in range(1, n_active + 1):
                    emb = self.embed(local(shift_left(full_ids, k, 0)))
                    h_prev, h_out, mtp_logits = self.mtp[k - 1](h_prev, emb, rope, masks, backend)
                    if mtp_logits is None:  # mtp_share_lm_head
                        mtp_logits = self.lm_head(h_out)
                    mtp_losses.append(self._ce(mtp_logits, local(mtp_targets(full_labels, k, full_docs))))
                w = torch.tensor(self.cfg.mtp_loss_weights[:n_active], device=device)
                mtp_loss = (torch.stack(mtp_losses) * w).sum() / w.sum()
                loss = loss + mtp_weight * mtp_loss
            if aux is not None and self.ep_loss_coef:
                loss = loss + self.ep_loss_coef * aux
        return ModelOutput(loss, lm_loss, mtp_loss, aux, logits, mtp_losses)

"""Pipeline parallelism with ``torch.distributed.pipelining`` (1F1B; GPipe when a step has
fewer micro-batches than stages).

The built model is cut into stages outside the model definition: stage ``s`` keeps the blocks
``stage_layers(n_layers, pp)[s]`` (a ``ModuleDict`` keyed by the global layer index, so every
parameter keeps the fully-qualified name it has in the whole model and DCP checkpoints move
between pipeline layouts); the first stage also holds the embedding, the last the final norm,
the LM head and the MTP heads.

* **MTP across stages**: head k needs ``Emb(x_{t+k})`` and the embedding lives on stage 0.
  Stage 0 computes those embeddings and they travel down the pipeline with the hidden state
  (one extra ``[B, T, d]`` activation per active depth), so the embedding's gradient from the
  MTP heads flows back through the pipeline exactly; no tied copy is kept on the last stage.
* **Loss scaling** is the non-pipelined trainer's: micro-batch i's LM/MTP terms weigh
  ``n_loss_tokens_i / N_global`` and its balance term ``tokens_i / tokens_global``, times the
  dense-mesh size FSDP2 averages over; the schedule's own ``1/n_microbatches`` is off
  (``scale_grads=False``).
* **Balance loss on every stage**: each stage's MoE layers compute their EP-group loss; on the
  last stage it is added to the loss, on earlier stages it is attached to the stage output
  with :class:`AuxLossGrad` (identity forward; backward adds ``coef·weight`` as the loss's
  gradient — Megatron-core's ``MoEAuxLossAutoScaler`` idea), so no scalar has to cross stages.
* **With context parallelism** (``--pp N --cp M``): the mesh's ``pp`` groups join ranks with
  the same CP coordinate, so stage ``s`` of CP rank ``c`` talks only to stage ``s ± 1`` of CP
  rank ``c``.  Every stage receives the whole micro-batch's labels, document ids and positions
  (the schedule's kwargs, a few int64 ``[B, T]`` tensors), builds the CP masks from them and
  keeps its chunk; the first stage embeds its chunk of the ids (and of the MTP-shifted ids);
  the activations sent between stages are the chunk ``[B, T/cp, d]``; the last stage's MTP
  targets are shifted on the whole sequence, then cut.  Loss weights use the chunk's share of
  the global loss tokens, so the sum over DP × CP ranks and micro-batches is the 1-process loss.
* **Shapes**: ``PipelineStage`` infers its activation shapes once; a new stage + schedule is
  built (and cached) for every (micro-batch, seq_len, micro-batches, MTP inputs) combination
  the curriculum produces (a phase switch, a partial last batch).
"""

from __future__ import annotations

import torch
from torch import nn

from model.attention import RopeCache, build_masks, positions_from_documents, resolve_backend
from model.mtp import mtp_targets, shift_left
from model.parallel.layout import stage_layers
from model.transformer import Step35Model


class AuxLossGrad(torch.autograd.Function):
    """``h`` unchanged; in backward, ``aux`` receives gradient ``scale`` (as if ``scale·aux``
    had been added to the loss)."""

    @staticmethod
    def forward(ctx, h, aux, scale: float):
        ctx.scale = scale
        ctx.aux_shape = aux.shape
        ctx.aux_dtype = aux.dtype
        return h.clone()

    @staticmethod
    def backward(ctx, g):
        return g, torch.full(ctx.aux_shape, ctx.scale, dtype=ctx.aux_dtype, device=g.device), None


class PipelineStageModel(Step35Model):
    """One pipeline stage of a :class:`Step35Model`, sharing its modules (and its run-time
    controls: ``set_rope_theta``, ``freeze_router``, ``update_router_bias`` ...)."""

    def __init__(self, full: Step35Model, stage: int, n_stages: int) -> None:
        nn.Module.__init__(self)
        self.cfg = full.cfg
        self.stage, self.n_stages = stage, n_stages
        self.first, self.last = stage == 0, stage == n_stages - 1
        self.layer_range = stage_layers(full.cfg.n_layers, n_stages)[stage]
        self.embed = full.embed if self.first else None
        self.layers = nn.ModuleDict({str(i): full.layers[i] for i in self.layer_range})
        self.norm = full.norm if self.last else None
        self.lm_head = full.lm_head if self.last else None
        self.mtp = full.mtp if self.last else nn.ModuleList()
        for k in ("mtp_active_depths", "ep_loss_coef", "balance_scope", "balance_group",
                  "activation_checkpointing", "chunked_window", "context_parallel"):
            setattr(self, k, getattr(full, k))
        # per step, set by the trainer (see set_step)
        self.denom, self.global_tokens, self.grad_scale, self.mtp_weight, self.n_mtp_inputs = 1, 1, 1.0, 0.0, 0
        self.step_sums = torch.zeros(4, dtype=torch.float64)

    # --- controls that differ from the whole model ----------------------------------------
    def set_mtp_active_depths(self, n: int) -> None:
        if not 0 <= n <= self.cfg.n_mtp:
            raise ValueError(f"mtp_active_depths {n} outside 0..{self.cfg.n_mtp}")
        self.mtp_active_depths = n

    def clone_mtp_heads(self, targets=None) -> None:
        if self.last and len(self.mtp):
            super().clone_mtp_heads(targets)

    def routing_stats(self, reset: bool = True) -> dict:
        layers = {int(i): b.ffn.stats(reset) for i, b in self.layers.items() if hasattr(b.ffn, "stats")}
        per = list(layers.values())
        return {"layers": layers,
                "dead_experts": sum(s["dead_experts"] for s in per),
                "max_load_over_mean": max((s["max_load_over_mean"] for s in per), default=0.0),
                "out_norm_max_over_median": max((s.get("out_norm_max_over_median", 0.0) for s in per), default=0.0),
                "out_norm_min_over_median": min((s.get("out_norm_min_over_median", 1.0) for s in per), default=1.0)}

    def set_step(self, denom: int, global_tokens: int, grad_scale: float, mtp_weight: float,
                 mtp_counts: list[int] = ()) -> None:
        """The step's global loss-token counts (LM, and per active MTP depth) and scales."""
        self.denom, self.global_tokens, self.grad_scale = max(denom, 1), max(global_tokens, 1), grad_scale
        self.mtp_counts = list(mtp_counts)
        self.mtp_weight = float(mtp_weight)
        self.n_mtp_inputs = min(self.mtp_active_depths, self.cfg.n_mtp) if self.mtp_weight else 0
        self.step_sums = torch.zeros(4, dtype=torch.float64)

    # --- the stage forward -----------------------------------------------------------------
    def forward(self, *xs, labels, document_ids, position_ids):
        # every stage gets the whole micro-batch's labels / document ids / positions (the
        # schedule's kwargs); activations between stages are this CP rank's chunk only
        B, T = labels.shape
        cp = self.context_parallel
        local = cp.local if cp is not None else (lambda x: x)
        if self.first:
            ids = xs[0]
            h = self.embed(local(ids))
            extra = [self.embed(local(shift_left(ids, k, 0))) for k in range(1, self.n_mtp_inputs + 1)]
        else:
            h, *extra = xs
        device = h.device
        if position_ids is None:
            position_ids = positions_from_documents(document_ids)
        backend = resolve_backend(self.cfg.attn_backend, device)
        if cp is not None:   # the chunk's queries against whole-sequence masks (model/parallel/context.py)
            backend = "sdpa" if backend == "flex" else backend
            masks = cp.build_masks(B, T, self.cfg.window, document_ids, device)
        else:
            masks = build_masks(backend, B, T, self.cfg.window, document_ids, device, self.chunked_window)
        full_labels = labels
        labels, position_ids = local(labels), local(position_ids)
        rope = RopeCache(position_ids)
        routed = []
        for block in self.layers.values():
            h, info = self._run_block(block, h, rope, masks, backend)
            if info is not None:
                block.ffn.record(info)
                routed.append((block.ffn, info))
        aux = self._balance_loss(routed)
        w = float((labels != -100).sum()) / self.denom
        v = labels.numel() / self.global_tokens
        coef = self.ep_loss_coef
        sums = self.step_sums
        if aux is not None:
            sums[2] += float(aux.detach()) / self.grad_scale   # ÷ n_micro·dense by the trainer
            sums[3] += v * coef * float(aux.detach())
        if not self.last:
            if aux is not None and coef:
                h = AuxLossGrad.apply(h, aux, coef * v * self.grad_scale)
            return (h, *extra)
        logits = self.lm_head(self.norm(h))
        lm = self._ce(logits, labels)
        total = lm * w
        sums[0] += w * float(lm.detach())
        if self.n_mtp_inputs:
            # each depth: mean over its targets, weighted by this micro-batch's share of them
            h_prev, mtp = h, 0.0
            wts = self.cfg.mtp_loss_weights[: self.n_mtp_inputs]
            for k in range(1, self.n_mtp_inputs + 1):
                h_prev, h_out, logits_k = self.mtp[k - 1](h_prev, extra[k - 1], rope, masks, backend)
                if logits_k is None:  # mtp_share_lm_head
                    logits_k = self.lm_head(h_out)
                tgt = local(mtp_targets(full_labels, k, document_ids))   # t + k may be in the next chunk
                share = float((tgt != -100).sum()) / max(self.mtp_counts[k - 1], 1)
                mtp = mtp + self._ce(logits_k, tgt) * (wts[k - 1] / sum(wts) * share)
            total = total + self.mtp_weight * mtp
            sums[1] += float(mtp.detach())
        sums[3] += float(total.detach())
        if aux is not None and coef:
            total = total + coef * v * aux
        return total * self.grad_scale


class Pipeline:
    """The stage of this rank and a cache of 1F1B schedules, one per activation shape."""

    def __init__(self, stage_model: PipelineStageModel, pp_group, device: torch.device) -> None:
        self.model, self.group, self.device = stage_model, pp_group, device
        self._cache: dict[tuple, object] = {}

    def _schedule(self, key: tuple, n_micro: int, mb_shape: tuple[int, int]):
        if key not in self._cache:
            from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
            m = self.model
            # explicit shapes: PipelineStage's own shape inference would run this stage's forward
            # on uninitialised inputs, which records their routing into the MoE load buffers
            B, T = mb_shape
            cp = m.context_parallel
            t_local = T // cp.cp if cp is not None else T   # stages exchange this CP rank's chunk
            act = tuple(torch.empty(B, t_local, m.cfg.d_model, device="meta", requires_grad=True)
                        for _ in range(1 + m.n_mtp_inputs))
            inputs = (torch.empty(B, T, dtype=torch.long, device="meta"),) if m.first else act
            outputs = (torch.empty((), device="meta"),) if m.last else act
            stage = PipelineStage(m, m.stage, m.n_stages, self.device, input_args=inputs,
                                  output_args=outputs, group=self.group)
            # 1F1B needs at least as many micro-batches as stages; with fewer, every forward
            # runs before the first backward anyway, which is GPipe
            kind = Schedule1F1B if n_micro >= m.n_stages else ScheduleGPipe
            self._cache[key] = kind(stage, n_micro, loss_fn=lambda out, _target: out, scale_grads=False)
        return self._cache[key]

    def step(self, micro_batches: list) -> None:
        """Forward + backward of one optimizer step's micro-batches (the loader's split)."""
        cat = lambda name: torch.cat([getattr(mb, name) for mb in micro_batches])  # noqa: E731
        ids, labels = cat("input_ids"), cat("labels")
        kwargs = {"labels": labels, "document_ids": cat("document_ids"), "position_ids": cat("position_ids")}
        n = len(micro_batches)
        key = (micro_batches[0].input_ids.shape, n, self.model.n_mtp_inputs)
        sched = self._schedule(key, n, tuple(micro_batches[0].input_ids.shape))
        if self.model.first:
            sched.step(ids, return_outputs=False, **kwargs)
        elif self.model.last:
            sched.step(target=labels, losses=[], return_outputs=False, **kwargs)
        else:
            sched.step(return_outputs=False, **kwargs)


def apply_pipeline(model: Step35Model, pp_group, pp: int, pp_rank: int, device) -> Pipeline:
    stage = PipelineStageModel(model, pp_rank, pp)
    return Pipeline(stage, pp_group, device)

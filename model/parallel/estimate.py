"""Per-phase estimates for ``train --dry-run``: activation memory per GPU and step time.

Pure arithmetic on the config, the layout and the phase's shape; printed with its assumptions.
These are *estimates* (no GPU was available to calibrate them), meant to show which phase
needs what: e.g. that the LM head's fp32 logits of one 128k-token micro-batch alone are
``131072 · vocab · 4 B`` unless the sequence is split (CP) or the loss is computed in chunks.

* micro-batch: the largest divisor of the per-rank batch (``global / dp``) whose tokens fit in
  ``--micro-batch-tokens`` (at least one sequence), each CP rank holding ``seq_len / cp`` tokens
  of it — the trainer's own rule;
* 1F1B keeps up to ``pp`` micro-batches in flight on the first stage;
* activation checkpointing per block: the bf16 input of every block of the stage per micro-batch
  in flight, plus one block's recomputation working set (bf16: residual / norms, q/k/v/gate,
  attention output, the routed experts' gate/up/down rows for top-k copies of every token, the
  shared expert), plus on the last stage the fp32 logits of the LM head and each active MTP
  depth for one micro-batch;
* time per step: 6 · (active parameters incl. active MTP heads) + 3 · (attention core FLOPs of
  the forward) per token, at ``mfu`` of ``peak_flops`` per GPU.  The optimizer step is not
  counted: Muon's orthogonalisation is split over the ranks (``model.optim``: each 2-D matrix
  on one owner of the dense mesh, expert slices over the expert-DP replicas), ≈ 9.4 TFLOP on
  the busiest rank of ``full`` under PP8 × DP512 (EP8), tens of milliseconds, not the 7.4 PFLOP
  every rank ran when each orthogonalised every matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.config import FULL, SWA
from model.parallel.layout import ParallelLayout, stage_layers


@dataclass
class PhaseEstimate:
    micro_batch: int            # sequences per micro-batch per rank
    n_micro: int                # micro-batches per rank per step
    tokens_per_rank: int        # tokens of one micro-batch on one rank (after the CP split)
    checkpointed: float         # bytes: saved block inputs, first stage
    working: float              # bytes: one block's recomputation
    logits: float               # bytes: last stage, fp32 logits (LM + MTP)
    step_flops: float
    step_seconds: float
    tokens_per_s: float

    @property
    def activations(self) -> float:
        return self.checkpointed + self.working + self.logits


def _micro_batch(local: int, seq_len: int, micro_batch_tokens: int) -> int:
    cap = max(1, micro_batch_tokens // max(1, seq_len))
    return next((d for d in range(min(cap, local), 0, -1) if local % d == 0), 1)


def attention_core_flops(cfg, seq_len: int, mtp_depths: int) -> float:
    """Forward attention-core FLOPs per token (QKᵀ and AV), backbone + active MTP heads."""
    W = cfg.window
    swa_keys = (min(seq_len, W) * (min(seq_len, W) + 1) / 2 + max(seq_len - W, 0) * W) / seq_len
    total = 0.0
    for t in list(cfg.layer_types) + [SWA] * mtp_depths:
        H = cfg.n_heads_full if t == FULL else cfg.n_heads_swa
        keys = (seq_len + 1) / 2 if t == FULL else swa_keys
        total += 4 * H * cfg.head_dim * keys
    return total


def phase_estimate(cfg, counts: dict, lay: ParallelLayout, seq_len: int, global_batch: int,
                   micro_batch_tokens: int, mtp_depths: int, peak_flops: float = 989e12,
                   mfu: float = 0.4) -> PhaseEstimate:
    local = max(1, global_batch // lay.dp)
    mb = _micro_batch(local, seq_len * 1, micro_batch_tokens * lay.cp)
    n_micro = local // mb
    tok = mb * seq_len // lay.cp
    layers = max(len(r) for r in stage_layers(cfg.n_layers, lay.pp))
    in_flight = min(lay.pp, n_micro)
    d, hd, kv = cfg.d_model, cfg.head_dim, cfg.n_kv_heads
    H = max(cfg.n_heads_full, cfg.n_heads_swa)
    per_token = (4 * d + 2 * H * hd + 2 * kv * hd + H
                 + cfg.top_k * (3 * cfg.expert_hidden + 2 * d) + 3 * cfg.shared_hidden * cfg.n_shared_experts)
    checkpointed = in_flight * layers * tok * d * 2 / lay.tp
    working = tok * per_token * 2 / lay.tp
    logits = tok * cfg.vocab_size * 4 * (1 + mtp_depths)
    s = counts.get("summary", {})
    active = s.get("active", 0) + s.get("mtp_per_head", 0) * mtp_depths
    flops_per_token = 6 * active + 3 * attention_core_flops(cfg, seq_len, mtp_depths)
    step_flops = flops_per_token * global_batch * seq_len
    secs = step_flops / (lay.world * peak_flops * mfu)
    return PhaseEstimate(mb, n_micro, tok, checkpointed, working, logits, step_flops, secs,
                         global_batch * seq_len / secs)

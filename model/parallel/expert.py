"""Expert parallelism: every MoE layer's routed experts sharded over the ``ep`` mesh dimension.

Applied to a built (unsharded) model, before FSDP2, torchtitan-style: the model file is not
changed beyond the ``MoE.expert_dispatch`` hook.

* **Sharding**: EP rank ``r`` of ``ep`` keeps experts ``r·E/ep … (r+1)·E/ep − 1`` of each layer
  (plain local parameters ``[E/ep, out, in]``; the rest is freed).  Router, shared expert,
  attention and everything else stay whole on every rank (FSDP2 shards them over the dense
  mesh, with the expert banks in ``ignored_params``).
* **Dispatch** (one forward of one MoE layer): the router runs locally on the rank's own tokens;
  the (token, expert) pairs are already sorted by expert, so the rows for EP rank ``r`` are one
  contiguous block.  The per-expert counts are exchanged first (a tiny ``all_to_all_single`` of
  ``[ep, E/ep]`` int64), which gives the variable splits of the token all-to-all
  (``torch.distributed._functional_collectives.all_to_all_single_autograd``, what torchtitan
  uses: its backward is the reverse all-to-all).  Received rows arrive grouped by source rank; a stable sort groups them by local
  expert for the grouped-matmul experts; the results go back through the inverse permutation
  and the reverse all-to-all, in the caller's original order, where the combine weights, the
  output-norm statistics and the scatter-add run unchanged.
* **Gradients**: the expert weights of rank r see every token of its EP group routed to them;
  ranks holding the same shard (the ``replica`` mesh: expert-DP × CP) sum their expert
  gradients (:func:`reduce_expert_grads`, one ``all_reduce`` per bank), and every gradient is
  divided by the same factor FSDP2 uses for the dense parameters, so the update is that of one
  process on the whole global batch.
* **Exactness**: routing, the loss-free bias loads (``bias_load``: the full ``[E]`` counts of
  the rank's own tokens, summed over the data-parallel ranks by the trainer) and the EP-group
  balance loss (``f`` from the same counts, ``p`` from the local router) never depend on where
  an expert lives, so 1 process and ``--ep N`` train the same function.

Hand-written parts and why: the dispatch permutation (a few tensor ops; no PyTorch API
groups tokens by expert for ``all_to_all_single``) and the expert-gradient ``all_reduce``
(FSDP2 cannot reduce a parameter over a different mesh than its module's).
"""

from __future__ import annotations

import re

import torch
import torch.distributed as dist
from torch import nn

EXPERT_PARAM = re.compile(r"(^|\.)experts\.w[123]$")


class ExpertParallelDispatch:
    """``MoE.expert_dispatch`` for one EP group (shared by all MoE layers of a model)."""

    def __init__(self, group, ep: int, n_experts: int) -> None:
        if n_experts % ep:
            raise ValueError(f"{n_experts} experts not divisible by ep {ep}")
        # functional collectives need an explicit group (None = the default one)
        self.group = group if group is not None else dist.group.WORLD
        self.ep, self.n_experts = ep, n_experts
        self.local = n_experts // ep
        # (token, expert) rows this rank computed since the last ``take_received()`` — the
        # load of this EP rank (activation-checkpoint recomputation counts twice on every rank
        # alike, so ratios are unaffected)
        self.received = 0

    def take_received(self) -> int:
        n, self.received = self.received, 0
        return n

    def __call__(self, experts: nn.Module, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        from torch.distributed._functional_collectives import all_to_all_single_autograd as a2a

        ep, El = self.ep, self.local
        send_counts = counts.reshape(ep, El).contiguous()  # rows for each destination's experts
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)  # [source, local expert]
        in_splits = send_counts.sum(1).tolist()
        out_splits = recv_counts.sum(1).tolist()
        n_recv = int(sum(out_splits))
        self.received += n_recv

        recv = _wait(a2a(x_sorted.contiguous(), out_splits, in_splits, self.group))
        # rows arrive as [source 0: e0.., e1.., ...][source 1: ...]; group them by local expert
        eid = torch.arange(El, device=counts.device).repeat(ep).repeat_interleave(recv_counts.reshape(-1))
        order = eid.argsort(stable=True)
        local_counts = recv_counts.sum(0)
        if n_recv:
            y = experts(recv[order], local_counts)
        else:
            # nothing routed here: keep the graph (the reverse all-to-all must run in backward on
            # every rank) with zero gradients for the weights
            y = recv + sum(w.sum() for w in experts.parameters()) * 0
        y = y.new_empty(y.shape).index_copy(0, order, y) if n_recv else y  # back to arrival order
        return _wait(a2a(y.contiguous(), in_splits, out_splits, self.group))


def _wait(t: torch.Tensor) -> torch.Tensor:
    """Functional collectives return an async tensor; wait before the permutation ops."""
    from torch.distributed._functional_collectives import wait_tensor
    return wait_tensor(t)


def expert_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if EXPERT_PARAM.search(n)]


def apply_expert_parallel(model: nn.Module, ep_group, ep: int, ep_rank: int) -> ExpertParallelDispatch | None:
    """Keep this EP rank's experts of every MoE layer and install the all-to-all dispatch.
    Call on the built model, before FSDP2.  Returns the dispatcher (for load metrics)."""
    from model.moe import MoE

    moes = [m for m in model.modules() if isinstance(m, MoE)]
    if ep == 1 or not moes:
        return None
    E = moes[0].n_experts
    disp = ExpertParallelDispatch(ep_group, ep, E)
    lo, hi = ep_rank * disp.local, (ep_rank + 1) * disp.local
    for m in moes:
        ex = m.experts
        for name in ("w1", "w3", "w2"):
            full = getattr(ex, name)
            setattr(ex, name, nn.Parameter(full.detach()[lo:hi].clone(), requires_grad=full.requires_grad))
        ex.ep_range = (lo, hi)   # global ids of the local experts (checkpoint adapter, stats)
        m.expert_dispatch = disp
    return disp


@torch.no_grad()
def reduce_expert_grads(params: list[torch.Tensor], replica_group, divide: float) -> None:
    """Sum the expert gradients over ranks holding the same shard, then divide by ``divide``
    (the dense FSDP2 mesh size, matching FSDP2's mean over it)."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if replica_group is not None and dist.get_world_size(replica_group) > 1:
            dist.all_reduce(p.grad, group=replica_group)
        if divide != 1:
            p.grad.div_(divide)


@torch.no_grad()
def clip_grad_norm(dense: list[torch.Tensor], experts: list[torch.Tensor], max_norm: float,
                   ep_group, pp_group=None) -> float:
    """Global gradient norm over FSDP2 (DTensor) dense gradients and EP-local expert gradients
    (disjoint shards over the ``ep`` group, identical over replicas), summed over pipeline
    stages (``pp_group``), then clip like ``torch.nn.utils.clip_grad_norm_``.  Returns the norm
    before clipping."""
    dg = [p.grad for p in dense if p.grad is not None]
    eg = [p.grad for p in experts if p.grad is not None]
    device = (dg or eg)[0].device if (dg or eg) else torch.device("cpu")
    sq = torch.zeros((), dtype=torch.float64, device=device)
    if dg:
        n = torch.nn.utils.get_total_norm(dg, 2.0)
        if hasattr(n, "full_tensor"):
            n = n.full_tensor()
        sq = sq + n.double() ** 2
    if eg:
        e = torch.stack([g.double().pow(2).sum() for g in eg]).sum()
        if ep_group is not None:
            dist.all_reduce(e, group=ep_group)
        sq = sq + e
    if pp_group is not None:
        dist.all_reduce(sq, group=pp_group)
    total = float(sq.sqrt())
    if max_norm > 0:
        coef = min(max_norm / (total + 1e-6), 1.0)
        if coef < 1.0:
            for g in dg + eg:
                g.mul_(coef)
    return total


def ep_load_balance(disp: ExpertParallelDispatch | None, group, device=None,
                    pp_group=None) -> dict[str, float]:
    """Tokens (token·expert rows) computed per EP rank since the last call: max/mean over the
    ranks of ``group`` (every rank of a pipeline stage: the DP × CP mesh), i.e. how balanced
    the EP ranks were.  With pipeline stages (``pp_group``) each stage is measured on its own
    (they run different MoE layers; a stage may have none) and the least balanced stage is
    reported, so every rank logs the same figures."""
    if disp is None:
        return {}
    n = torch.tensor([float(disp.take_received())], dtype=torch.float64, device=device)  # NCCL: on device
    size = dist.get_world_size(group)
    allv = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(allv, n, group=group)
    v = torch.cat(allv)
    mean = float(v.mean())
    stat = torch.tensor([float(v.max()), mean, float(v.max()) / mean if mean else 0.0],
                        dtype=torch.float64, device=device)
    if pp_group is not None and dist.get_world_size(pp_group) > 1:
        stages = [torch.zeros_like(stat) for _ in range(dist.get_world_size(pp_group))]
        dist.all_gather(stages, stat, group=pp_group)
        stat = max(stages, key=lambda s: float(s[2]))
    mx, mean, ratio = stat.tolist()
    return {"ep/tokens_per_rank_max": mx, "ep/tokens_per_rank_mean": mean, "ep/max_over_mean": ratio}

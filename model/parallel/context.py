"""Context parallelism: every sequence split into ``cp`` contiguous chunks, one per CP rank.

Installed on the model as ``model.context_parallel`` (the forward's one hook): the model is
called with the *whole* micro-batch (every CP rank reads the same sequences), computes what
needs the whole sequence — positions inside documents, the MTP heads' shifted inputs and
targets, whose ``t + k`` may lie in the next chunk — and then keeps its own chunk of every
``[B, T]`` tensor (:meth:`ContextParallel.local`).  Everything position-wise (embedding,
norms, MoE, LM head, the losses) then runs on the chunk.

Attention: keys and values are all-gathered over the CP group (:class:`_GatherSeq`) and every
layer uses an explicit boolean mask of the chunk's queries against all ``T`` keys — causal ∧
same document (∧ window on SWA layers), built from the whole sequence's ``document_ids``, so
document boundaries and positions stay exact across the split.  Both layer kinds gather all
keys here: a sliding-window layer would need only the ``W - 1`` keys before the chunk (a
neighbour exchange); that optimisation is not implemented.  The SDPA path is used (flex's
BlockMask would need the chunk offset in its mask function).

Hand-written: the gather's autograd (``all_gather`` forward, ``all_reduce`` + slice backward),
because gloo has no reduce-scatter for the functional all-gather's backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from model.attention import DenseMask


class _GatherSeq(torch.autograd.Function):
    """All-gather along dim 2 (sequence of ``[B, H, T_local, D]``) over the CP group."""

    @staticmethod
    def forward(ctx, x, group, rank, size):
        ctx.group, ctx.rank, ctx.size, ctx.n = group, rank, size, x.shape[2]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=2)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()
        dist.all_reduce(g, group=ctx.group)   # every rank's queries' gradient for these keys
        return g.narrow(2, ctx.rank * ctx.n, ctx.n), None, None, None


class ContextParallelMask(DenseMask):
    """A dense ``[B, 1, T_local, T]`` mask whose attention first gathers K/V (``attend`` calls
    ``gather_kv`` when the mask has one)."""

    def __init__(self, mask: torch.Tensor, cp: "ContextParallel") -> None:
        super().__init__(mask)
        self.cp = cp

    def gather_kv(self, k, v):
        return self.cp.gather(k), self.cp.gather(v)


class ContextParallel:
    def __init__(self, group, cp: int, rank: int) -> None:
        self.group, self.cp, self.rank = group, cp, rank

    def local(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """This rank's chunk of a ``[B, T, ...]`` tensor."""
        if x is None:
            return None
        n = x.shape[1] // self.cp
        return x[:, self.rank * n:(self.rank + 1) * n]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return _GatherSeq.apply(x, self.group, self.rank, self.cp)

    def build_masks(self, B: int, T: int, window: int, document_ids: torch.Tensor | None,
                    device) -> dict:
        from model.config import FULL, SWA
        n = T // self.cp
        i = torch.arange(self.rank * n, (self.rank + 1) * n, device=device)[:, None]
        j = torch.arange(T, device=device)[None, :]
        causal = (j <= i)[None]
        if document_ids is not None:
            docs_q = self.local(document_ids)
            causal = causal & (docs_q[:, :, None] == document_ids[:, None, :])
        win = causal & (i - j < window)[None]
        return {FULL: ContextParallelMask(causal[:, None], self), SWA: ContextParallelMask(win[:, None], self)}


def apply_context_parallel(model, group, cp: int, rank: int) -> ContextParallel | None:
    if cp == 1:
        return None
    ctx = ContextParallel(group, cp, rank)
    model.context_parallel = ctx
    return ctx

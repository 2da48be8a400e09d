"""Context parallelism: every sequence split into ``cp`` contiguous chunks, one per CP rank.

Installed on the model as ``model.context_parallel`` (the forward's one hook): the model is
called with the *whole* micro-batch (every CP rank reads the same sequences), computes what
needs the whole sequence — positions inside documents, the MTP heads' shifted inputs and
targets, whose ``t + k`` may lie in the next chunk — and then keeps its own chunk of every
``[B, T]`` tensor (:meth:`ContextParallel.local`).  Everything position-wise (embedding,
norms, MoE, LM head, the losses) then runs on the chunk.

Attention: keys and values are all-gathered over the CP group (:class:`_GatherSeq`) and every
full-attention layer uses an explicit boolean mask of the chunk's queries against all ``T``
keys — causal ∧ same document, built from the whole sequence's ``document_ids``, so document
boundaries and positions stay exact across the split.  Sliding-window layers need only the
``W - 1`` keys before the chunk: they receive them from the previous CP rank
(:class:`_Halo`, one send/recv pair per layer and direction) and mask ``[T_local, W-1+T_local]``
(causal ∧ window ∧ document); when a chunk is shorter than ``W - 1`` they fall back to the
all-gather.  The SDPA path is used (flex's BlockMask would need the chunk offset in its mask
function).

With pipeline parallelism the same object is the stage's hook
(``model/parallel/pipeline.py``): each stage's attention exchanges K/V over its own CP group
and the stages pass the chunk along.

Hand-written: the autograd of both exchanges (``all_gather`` forward / ``all_reduce`` + slice
backward, because gloo has no reduce-scatter for the functional all-gather's backward; the halo
send/recv and its reverse), a few lines each.
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


class _Halo(torch.autograd.Function):
    """The ``h`` rows before this rank's chunk, from the previous CP rank (zeros on rank 0):
    ``[B, H, T_local, D]`` → ``[B, H, h + T_local, D]``.  Backward sends the halo's gradient
    back to the rank it came from."""

    @staticmethod
    def forward(ctx, x, group, rank, size, h):
        ctx.group, ctx.rank, ctx.size, ctx.h = group, rank, size, h
        x = x.contiguous()
        halo = x.new_zeros(x.shape[0], x.shape[1], h, x.shape[3])
        ops = []
        if rank + 1 < size:
            ops.append(dist.P2POp(dist.isend, x[:, :, -h:].contiguous(), dist.get_global_rank(group, rank + 1), group))
        if rank > 0:
            ops.append(dist.P2POp(dist.irecv, halo, dist.get_global_rank(group, rank - 1), group))
        for w in dist.batch_isend_irecv(ops) if ops else []:
            w.wait()
        return torch.cat([halo, x], dim=2)

    @staticmethod
    def backward(ctx, g):
        h, rank, size, group = ctx.h, ctx.rank, ctx.size, ctx.group
        g_halo, g_x = g[:, :, :h].contiguous(), g[:, :, h:].clone()
        tail = torch.zeros_like(g_x[:, :, -h:]).contiguous()
        ops = []
        if rank > 0:
            ops.append(dist.P2POp(dist.isend, g_halo, dist.get_global_rank(group, rank - 1), group))
        if rank + 1 < size:
            ops.append(dist.P2POp(dist.irecv, tail, dist.get_global_rank(group, rank + 1), group))
        for w in dist.batch_isend_irecv(ops) if ops else []:
            w.wait()
        if rank + 1 < size:
            g_x[:, :, -h:] += tail
        return g_x, None, None, None, None


class ContextParallelMask(DenseMask):
    """A dense ``[B, 1, T_local, T]`` mask whose attention first gathers K/V (``attend`` calls
    ``gather_kv`` when the mask has one)."""

    def __init__(self, mask: torch.Tensor, cp: "ContextParallel", halo: int = 0) -> None:
        super().__init__(mask)
        self.cp, self.halo = cp, halo

    def gather_kv(self, k, v):
        if self.halo:   # sliding window: only the W-1 keys before the chunk are needed
            return self.cp.neighbour(k, self.halo), self.cp.neighbour(v, self.halo)
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

    def neighbour(self, x: torch.Tensor, h: int) -> torch.Tensor:
        return _Halo.apply(x, self.group, self.rank, self.cp, h)

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
        full = ContextParallelMask(causal[:, None], self)
        h = window - 1
        if h == 0 or h > n:   # window wider than a chunk: gather everything (rare; correct)
            return {FULL: full, SWA: ContextParallelMask((causal & (i - j < window)[None])[:, None], self)}
        # keys: the h positions before the chunk (from the previous rank; < 0 on rank 0) + the chunk
        jh = torch.arange(self.rank * n - h, (self.rank + 1) * n, device=device)[None, :]
        win = ((jh <= i) & (i - jh < window) & (jh >= 0))[None].expand(B, -1, -1)
        if document_ids is not None:
            docs_k = document_ids[:, jh[0].clamp(min=0)]
            win = win & (self.local(document_ids)[:, :, None] == docs_k[:, None, :])
        return {FULL: full, SWA: ContextParallelMask(win[:, None], self, halo=h)}


def apply_context_parallel(model, group, cp: int, rank: int) -> ContextParallel | None:
    if cp == 1:
        return None
    ctx = ContextParallel(group, cp, rank)
    model.context_parallel = ctx
    return ctx

"""Muon (Polar Express orthogonalisation) for matrices, AdamW for everything else.

Why not ``torch.optim.Muon`` (torch 2.13)? It (a) accepts 2-D parameters only (our routed experts
are one 3-D ``[E, out, in]`` tensor), (b) hard-codes Keller Jordan's quintic Newton–Schulz with one
coefficient triple in bf16, while Step 3.5 Flash runs **Polar Express with T = 6 steps in fp16**
because bf16 produced rare outliers and unrecoverable loss spikes (PAPER §4), and (c) has no
AdamW side for 1-D parameters, embeddings and the head. So the optimizer is written here:

* Matrix parameters (2-D, and 3-D expert banks batched over the leading expert dim) get Muon:
  momentum 0.95 with Nesterov, the update orthogonalised by Polar Express (Amsel et al. 2025,
  arXiv 2505.16932, Algorithm 1, coefficients with the paper's 1.01 safety factor), scaled
  Moonlight-style by ``0.2 * sqrt(max(m, n))`` so its RMS matches AdamW's and one learning rate
  schedule serves both groups; decoupled weight decay.
* Fused projections (QKV+gate, gate/up) are orthogonalised *per sub-matrix* when the parameter
  says how it is split (``param._muon_split = (rows_a, rows_b, ...)`` along dim -2, or a
  ``split_fn(name, param)`` passed to :func:`build_optimizer`).
* Orthogonalisation precision: fp16 on CUDA (the report's choice), fp32 on CPU (CPU fp16 matmul
  is slow or unsupported, and CPU runs are for tests/demos). Override with ``ortho_dtype``.
* Embeddings, output head, norms, biases and any other 1-D parameter: AdamW
  (betas 0.9/0.95, eps 1e-8), same weight decay (the SteptronOss code decays 1-D params too).
* Distributed: the orthogonalisation work is split over the ranks that would otherwise repeat
  it, and the update stays exactly the one-process update (:func:`_orthogonalize_all`).
  Momentum stays where it is (sharded like its parameter), so checkpoints do not change:

  - 2-D FSDP2 matrices (DTensor, ``Shard(0)`` over a 1-D mesh): every matrix gets one *owner*
    rank (greedy by Polar Express FLOPs, largest first, computed from the shapes only, so every
    rank agrees with no communication); one ``all_to_all_single`` carries every rank's row
    shards of all matrices to their owners (variable, possibly empty splits: uneven shards
    work), the owner orthogonalises the whole matrix, a second ``all_to_all_single`` returns
    each rank its rows.  Two collectives per step and mesh, whatever the number of matrices.
  - 3-D expert banks FSDP2 shards on the expert dim: each shard is whole experts, and Polar
    Express is batched per expert, so each rank orthogonalises its own shard, no communication.
  - Expert-parallel banks (plain local ``[E/ep, out, in]``, identical on the ``replica``
    ranks): replica ``q`` of ``R`` orthogonalises expert slice ``q`` of every bank, one
    ``all_gather_single`` (slices padded to equal size) gives every replica the whole update.
  - Any other DTensor layout: the old all-gather and redundant orthogonalisation (exact, slow).
  - One process: unchanged, one matrix at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

# Polar Express, degree 5 (Amsel, Persson, Musco, Gower 2025, Algorithm 1).
_PE_RAW = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),  # every later step uses this one
]
POLAR_EXPRESS_COEFFS = [(a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in _PE_RAW[:-1]] + [_PE_RAW[-1]]


def default_ortho_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


@torch.no_grad()
def polar_express(g: torch.Tensor, steps: int = 6, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximate the orthogonal polar factor ``U V^T`` of ``g`` (``[..., m, n]``, batched)."""
    if g.ndim < 2:
        raise ValueError("polar_express needs a matrix (or a batch of matrices)")
    dtype = dtype or default_ortho_dtype(g.device)
    # Normalise in fp32, then cast: entries or a Frobenius norm beyond fp16's range (65504)
    # must not become inf before the division brings them to ≤ 1.
    x = g.float()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-7)
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x.to(dtype)
    for i in range(steps):
        a, b, c = POLAR_EXPRESS_COEFFS[min(i, len(POLAR_EXPRESS_COEFFS) - 1)]
        A = x @ x.mT
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    if tall:
        x = x.mT
    return x.to(g.dtype)


def moonlight_scale(shape: torch.Size | tuple[int, ...]) -> float:
    """Moonlight's per-matrix factor ``0.2 * sqrt(max(m, n))`` (matches AdamW's update RMS)."""
    m, n = shape[-2], shape[-1]
    return 0.2 * math.sqrt(max(m, n))


def orthogonalize(update: torch.Tensor, split: tuple[int, ...] | None, steps: int,
                  dtype: torch.dtype | None) -> torch.Tensor:
    """Polar Express per sub-matrix (``split`` sizes along dim -2) with Moonlight scaling."""
    if not split:
        return polar_express(update, steps, dtype) * moonlight_scale(update.shape)
    if sum(split) != update.size(-2):
        raise ValueError(f"muon split {split} does not sum to dim -2 of {tuple(update.shape)}")
    parts = torch.split(update, list(split), dim=-2)
    return torch.cat([polar_express(p, steps, dtype) * moonlight_scale(p.shape) for p in parts], dim=-2)


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def polar_express_flops(shape: torch.Size | tuple[int, ...], split: tuple[int, ...] | None,
                        steps: int) -> float:
    """Matmul FLOPs of :func:`orthogonalize` on one ``[..., m, n]`` update: per step and
    sub-matrix (``s = min(m, n)``, ``l = max``) ``X Xᵀ`` and ``B X`` are ``2 s² l`` each, ``A²``
    is ``2 s³``.  Used to balance the owners (:func:`assign_owners`); the dry run's
    estimate does not count optimizer time (model/parallel/estimate.py)."""
    batch = math.prod(shape[:-2]) if len(shape) > 2 else 1
    rows = split or (shape[-2],)
    total = 0.0
    for m in rows:
        s, l = min(m, shape[-1]), max(m, shape[-1])
        total += 4 * s * s * l + 2 * s ** 3
    return float(batch * steps * total)


def assign_owners(costs: list[float], world: int) -> list[int]:
    """Greedy longest-processing-time: largest cost first (ties: lower index), each to the rank
    with the least work so far (ties: lower rank).  Pure function of the costs: every rank
    computes the same owners without communicating."""
    load = [0.0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += costs[i]
    return owners


def _rows(n: int, world: int, rank: int) -> tuple[int, int]:
    """(size, offset) of ``rank``'s chunk of ``n`` rows: DTensor's ``Shard`` chunking (the one
    FSDP2 uses; trailing ranks may hold fewer rows or none)."""
    from torch.distributed.tensor import Shard
    size, off = Shard.local_shard_size_and_offset(n, world, rank)
    return int(size), int(off)


@dataclass
class _Ortho:
    """One Muon update of this step on its way to being orthogonalised."""
    upd: torch.Tensor
    split: tuple[int, ...] | None
    dtype: torch.dtype
    out: torch.Tensor | None = None


def _owner_orthogonalize(items: list[_Ortho], mesh, steps: int) -> None:
    """2-D ``Shard(0)`` DTensors over one 1-D mesh (and of one dtype): gather each matrix's rows
    on its owner, orthogonalise there, scatter the rows back.  Two ``all_to_all_single``."""
    from torch.distributed.tensor import DTensor

    group, W, me = mesh.get_group(), mesh.size(), mesh.get_local_rank()
    owners = assign_owners([polar_express_flops(it.upd.shape, it.split, steps) for it in items], W)
    shapes = [tuple(it.upd.shape) for it in items]
    cols = [math.prod(s[1:]) for s in shapes]
    sizes = [[_rows(s[0], W, r)[0] for r in range(W)] for s in shapes]  # [item][rank] rows
    mine = [i for i, o in enumerate(owners) if o == me]
    # ranks' blocks in rank order; inside a block, items in index order
    send = [torch.cat([items[i].upd.to_local().reshape(-1) for i, o in enumerate(owners) if o == d]
                      or [items[0].upd.to_local().new_empty(0)]) for d in range(W)]
    send_splits = [t.numel() for t in send]
    recv_splits = [sum(sizes[i][s] * cols[i] for i in mine) for s in range(W)]
    recv = send[0].new_empty(sum(recv_splits))
    dist.all_to_all_single(recv, torch.cat(send), recv_splits, send_splits, group=group)

    blocks = list(torch.split(recv, recv_splits))
    pos = [0] * W
    back = [[] for _ in range(W)]
    for i in mine:
        parts = []
        for s in range(W):
            n = sizes[i][s] * cols[i]
            parts.append(blocks[s][pos[s]:pos[s] + n].view(sizes[i][s], *shapes[i][1:]))
            pos[s] += n
        full = orthogonalize(torch.cat(parts), items[i].split, steps, items[i].dtype)
        for s, rows in enumerate(torch.split(full, sizes[i])):
            back[s].append(rows.reshape(-1))
    out = torch.cat([torch.cat(b) if b else recv.new_empty(0) for b in back])
    got = recv.new_empty(sum(send_splits))
    dist.all_to_all_single(got, out, send_splits, recv_splits, group=group)

    blocks = list(torch.split(got, send_splits))
    pos = [0] * W
    for i, it in enumerate(items):
        d, n = owners[i], sizes[i][me] * cols[i]
        local = blocks[d][pos[d]:pos[d] + n].view(sizes[i][me], *shapes[i][1:])
        pos[d] += n
        it.out = DTensor.from_local(local, mesh, it.upd.placements, run_check=False,
                                    shape=it.upd.shape, stride=it.upd.stride())


def _replica_orthogonalize(items: list[_Ortho], group, steps: int) -> None:
    """Expert banks ``[E, out, in]`` identical on the ranks of ``group`` (expert-DP replicas,
    of one dtype): replica ``q`` orthogonalises its chunk of the experts of every bank, one
    ``all_gather_single`` (chunks padded to the largest) assembles the whole updates."""
    R, q = dist.get_world_size(group), dist.get_rank(group)
    chunks = []
    for it in items:
        E, per = it.upd.shape[0], it.upd[0].numel()
        size, off = _rows(E, R, q)
        pad = _rows(E, R, 0)[0]   # the first chunk is the largest
        mine = it.upd[off:off + size]
        o = orthogonalize(mine, it.split, steps, it.dtype) if size else mine
        chunks.append(torch.cat([o.reshape(-1), o.new_zeros((pad - size) * per)]))
    buf = torch.cat(chunks)
    gathered = buf.new_empty(R * buf.numel())
    dist.all_gather_single(gathered, buf, group=group)
    per_rank = gathered.view(R, -1)
    start = 0
    for it in items:
        E, per = it.upd.shape[0], it.upd[0].numel()
        pad = _rows(E, R, 0)[0]
        parts = [per_rank[s, start:start + _rows(E, R, s)[0] * per] for s in range(R)]
        it.out = torch.cat(parts).view(it.upd.shape)
        start += pad * per


def _orthogonalize_all(items: list[_Ortho], steps: int, replica_of: Callable) -> None:
    """Fill every ``item.out`` (see the module docstring for who computes what)."""
    from torch.distributed.tensor import Shard

    owner_batches: dict[tuple, list[_Ortho]] = {}
    replica_batches: dict[tuple, list[_Ortho]] = {}
    for it in items:
        u = it.upd
        if not _is_dtensor(u):
            group = replica_of(it)
            if group is not None and u.ndim >= 3 and dist.get_world_size(group) > 1:
                replica_batches.setdefault((id(group), u.dtype), []).append(it)
            else:
                it.out = orthogonalize(u, it.split, steps, it.dtype)
            continue
        sharded_rows = u.device_mesh.ndim == 1 and tuple(u.placements) == (Shard(0),)
        if sharded_rows and u.ndim >= 3:
            # whole experts per shard: batched Polar Express never mixes experts
            from torch.distributed.tensor import DTensor
            loc = u.to_local()
            o = orthogonalize(loc, it.split, steps, it.dtype) if loc.numel() else loc
            it.out = DTensor.from_local(o, u.device_mesh, u.placements, run_check=False,
                                        shape=u.shape, stride=u.stride())
        elif sharded_rows:
            owner_batches.setdefault((id(u.device_mesh), u.dtype), []).append(it)
        else:
            # any other layout: gather everywhere, orthogonalise redundantly, keep our shard
            from torch.distributed.tensor import distribute_tensor
            full = orthogonalize(u.full_tensor(), it.split, steps, it.dtype)
            it.out = distribute_tensor(full, u.device_mesh, u.placements, src_data_rank=None)
    for batch in owner_batches.values():
        _owner_orthogonalize(batch, batch[0].upd.device_mesh, steps)
    for batch in replica_batches.values():
        _replica_orthogonalize(batch, replica_of(batch[0]), steps)


def _adamw_state(p: torch.Tensor) -> dict:
    """A parameter's AdamW state before its first step."""
    return {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer, two kinds of parameter groups (``group["kind"]`` = ``muon`` | ``adamw``)
    so that a single state dict (and DCP checkpoint) holds everything."""

    def __init__(self, param_groups: list[dict], lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 6,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                 ortho_dtype: torch.dtype | None = None) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, betas=betas, eps=eps, kind="adamw", splits=None)
        super().__init__(param_groups, defaults)
        self.ortho_dtype = ortho_dtype
        # expert banks replicated over a process group (expert parallelism): param -> group
        self.replica_groups: dict[int, object] = {}   # keyed by id(param)
        for g in self.param_groups:
            if g["kind"] not in ("muon", "adamw"):
                raise ValueError(f"unknown group kind {g['kind']!r}")
            if g["kind"] == "muon":
                for p in g["params"]:
                    if p.ndim < 2:
                        raise ValueError(f"Muon group holds a {p.ndim}-D parameter")

    @torch.no_grad()
    def init_state(self) -> None:
        """Create every parameter's state now (zeros, exactly what the first step would create).

        Lazy creation would leave parameters that have not had a gradient yet (inactive MTP
        depths, a frozen router) without state, so a checkpoint's optimizer state would depend
        on the run's history and DCP could not load it into a fresh optimizer. Eager state makes
        the structure fixed, and a resumed run bit-identical to an uninterrupted one."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if group["kind"] == "muon":
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                elif "step" not in state:
                    state.update(_adamw_state(p))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] == "muon":
                self._muon(group)
            else:
                self._adamw(group)
        return loss

    def set_replica_group(self, params: Iterable[torch.Tensor], group) -> None:
        """Declare ``params`` (plain, not DTensor) identical on every rank of ``group``: their
        orthogonalisation is then split over those ranks along the leading (expert) dim."""
        for p in params:
            self.replica_groups[id(p)] = group

    def _muon(self, group: dict) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        splits = group.get("splits") or [None] * len(group["params"])
        todo: list[tuple[torch.Tensor, _Ortho]] = []
        for p, split in zip(group["params"], splits):
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p.grad)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mu)
            upd = p.grad.lerp(buf, mu) if group["nesterov"] else buf
            dtype = self.ortho_dtype or default_ortho_dtype(p.device)
            if not dist.is_available() or not dist.is_initialized():
                # one process: one matrix at a time, nothing held beyond it
                self._apply(p, orthogonalize(upd, split, group["ns_steps"], dtype), lr, wd)
            else:
                todo.append((p, _Ortho(upd, tuple(split) if split else None, dtype)))
        if todo:
            by_item = {id(it): p for p, it in todo}
            _orthogonalize_all([it for _, it in todo], group["ns_steps"],
                               lambda it: self.replica_groups.get(id(by_item[id(it)])))
            for p, it in todo:
                self._apply(p, it.out, lr, wd)

    @staticmethod
    def _apply(p: torch.Tensor, upd: torch.Tensor, lr: float, wd: float) -> None:
        if wd:
            p.mul_(1 - lr * wd)
        p.add_(upd.to(p.dtype), alpha=-lr)

    def _adamw(self, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        b1, b2 = group["betas"]
        eps = group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "step" not in state:
                state.update(_adamw_state(p))
            state["step"] += 1
            t = float(state["step"])
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2**t)).sqrt_().add_(eps)
            if wd:
                p.mul_(1 - lr * wd)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


# --------------------------------------------------------------------------------------------
# Which parameter goes where
# --------------------------------------------------------------------------------------------
HEAD_MODULES = {"lm_head", "output", "head", "unembed", "out_proj_vocab"}


@dataclass
class ParamAssignment:
    muon: list[tuple[str, nn.Parameter]]
    adamw: list[tuple[str, nn.Parameter]]


def is_adamw_param(name: str, p: torch.Tensor, embed_ids: set[int] | None = None) -> bool:
    """Embeddings, the output head(s) and anything with fewer than 2 dims train with AdamW."""
    if p.ndim < 2 or (embed_ids and id(p) in embed_ids):
        return True
    parts = name.split(".")
    owner = parts[-2] if len(parts) >= 2 else parts[-1]
    return owner in HEAD_MODULES or "embed" in name.lower()


def assign_params(model: nn.Module) -> ParamAssignment:
    """Muon for matrices (ndim >= 2) except embeddings and the output head; AdamW for the rest."""
    embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon, adamw = [], []
    for name, p in model.named_parameters():
        # frozen parameters (e.g. a frozen router) stay in the optimizer: no grad -> no update,
        # and the param groups are identical whichever phase a run is resumed in
        (adamw if is_adamw_param(name, p, embed_ids) else muon).append((name, p))
    return ParamAssignment(muon, adamw)


def build_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.1,
                    ns_steps: int = 6, ortho_dtype: torch.dtype | None = None,
                    split_fn: Callable[[str, torch.Tensor], tuple[int, ...] | None] | None = None,
                    replica_group=None, replicated: Iterable[torch.Tensor] = (),
                    ) -> MuonAdamW:
    """``replica_group`` / ``replicated``: parameters (expert-parallel banks) that are plain
    tensors identical on every rank of ``replica_group``; their orthogonalisation is split
    over those ranks (:meth:`MuonAdamW.set_replica_group`)."""
    a = assign_params(model)

    # Fused projections declare their sub-matrices: the owning module's ``split`` attribute
    # (model.attention.Attention: ``wqkv`` = [q | k | v | gate] rows) or ``param._muon_split``.
    owner_split: dict[int, tuple[int, ...]] = {}
    for mod in model.modules():
        split = getattr(mod, "split", None)
        if isinstance(split, (tuple, list)) and split and all(isinstance(x, int) for x in split):
            cands = [(n, p) for n, p in mod.named_parameters()
                     if p.ndim >= 2 and p.shape[-2] == sum(split)]
            if len(cands) > 1:  # e.g. wo could match by accident: keep the fused one by name
                cands = [(n, p) for n, p in cands if any(k in n for k in ("qkv", "fused", "gate_up"))]
            for _, p in cands:
                owner_split[id(p)] = tuple(split)

    def split_of(name: str, p: torch.Tensor):
        s = split_fn(name, p) if split_fn else None
        return s or getattr(p, "_muon_split", None) or owner_split.get(id(p))

    groups = []
    if a.muon:
        groups.append({"params": [p for _, p in a.muon], "kind": "muon",
                       "names": [n for n, _ in a.muon],
                       "splits": [split_of(n, p) for n, p in a.muon]})
    if a.adamw:
        groups.append({"params": [p for _, p in a.adamw], "kind": "adamw",
                       "names": [n for n, _ in a.adamw]})
    opt = MuonAdamW(groups, lr=lr, weight_decay=weight_decay, ns_steps=ns_steps,
                    ortho_dtype=ortho_dtype)
    if replica_group is not None:
        opt.set_replica_group(replicated, replica_group)
    opt.init_state()
    return opt


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def iter_params(opt: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    for g in opt.param_groups:
        yield from g["params"]

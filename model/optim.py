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
* FSDP2 (DTensor) parameters: momentum stays sharded; the (Nesterov) update is all-gathered,
  orthogonalised redundantly on every rank, and each rank keeps its own shard. Simple and exact;
  at scale one would assign matrices to ranks round-robin instead (documented gap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
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

    def _muon(self, group: dict) -> None:
        lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
        splits = group.get("splits") or [None] * len(group["params"])
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
            if _is_dtensor(upd):
                from torch.distributed.tensor import distribute_tensor
                full = orthogonalize(upd.full_tensor(), split, group["ns_steps"], dtype)
                # every rank computed the same full update: keep our shard, no communication
                upd = distribute_tensor(full, upd.device_mesh, upd.placements, src_data_rank=None)
            else:
                upd = orthogonalize(upd, split, group["ns_steps"], dtype)
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
                    ) -> MuonAdamW:
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
    opt.init_state()
    return opt


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def iter_params(opt: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    for g in opt.param_groups:
        yield from g["params"]

"""Feed-forward layers: dense SwiGLU and the fine-grained MoE (routed + shared experts).

Router (PAPER §2.2, §4.1): sigmoid scores in fp32, top-k selection on ``score + bias`` where the
bias is the loss-free balancing term (DeepSeek-V3, Wang et al. 2024): it changes *which* experts
are chosen, never the gradient path.  Combine weights are the *unbiased* sigmoid scores of the
chosen experts, renormalised to sum to 1, times ``routed_scaling`` (3.0 in ``full``).  That is
DeepSeek-V3's and the HF port's rule; SteptronOss ``moe_block.py`` takes them from the biased
scores instead — ``router_bias_in_weights=True`` reproduces that.

Experts run as grouped matmuls over tokens sorted by expert (``torch._grouped_mm``; it works on
CPU in fp32 and bf16 in torch 2.13), with a padded ``torch.bmm`` fallback; no Python loop over
experts.  Expert weights are 3-D parameters ``[E, out, in]`` (gate ``w1``, up ``w3``, down
``w2``), so an optimizer such as Muon sees each expert matrix separately.

Activation clipping (PAPER §4.1.3, App. B; formula from the mlx-lm / llama.cpp ports):
``h = clip(silu(gate), max=L) * clip(up, -L, L)`` before the down projection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig

log = logging.getLogger(__name__)


def swiglu(gate: torch.Tensor, up: torch.Tensor, limit: float | None) -> torch.Tensor:
    g = F.silu(gate)
    if limit is not None:
        g = g.clamp(max=limit)
        up = up.clamp(-limit, limit)
    return g * up


class SwiGLU(nn.Module):
    """Dense SwiGLU FFN: the first layers' FFN, the shared expert and the MTP heads' FFN."""

    def __init__(self, d_model: int, hidden: int, limit: float | None = None) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)  # gate
        self.w3 = nn.Linear(d_model, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, d_model, bias=False)  # down
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(swiglu(self.w1(x), self.w3(x), self.limit))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous: ``torch._grouped_mm``'s
    CPU backward rejects expanded (stride-0) gradients such as the one from ``.sum()``."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g.contiguous()


def grouped_mm(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, backend: str) -> torch.Tensor:
    """``x[rows of group e] @ w[e].T`` for tokens sorted by group; ``w`` is ``[E, out, in]``.

    ``torch._grouped_mm`` needs 16-byte-aligned rows (in/out dims a multiple of 4 in fp32, 8 in
    bf16); other shapes (only toy configs) take the padded-bmm path."""
    if backend == "grouped_mm" and all(n * x.element_size() % 16 == 0 for n in w.shape[1:]):
        offs = counts.cumsum(0).to(torch.int32)
        return _ContiguousGrad.apply(torch._grouped_mm(x, w.transpose(-2, -1), offs=offs))
    # padded batched matmul: [E, capacity, in] @ [E, in, out]
    E = w.shape[0]
    cap = int(counts.max()) if counts.numel() else 0
    eid = torch.repeat_interleave(torch.arange(E, device=x.device), counts)
    pos = torch.arange(x.shape[0], device=x.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    buf = x.new_zeros(E, max(cap, 1), x.shape[-1])
    buf = buf.index_put((eid, pos), x)
    return torch.bmm(buf, w.transpose(-2, -1))[eid, pos]


_GROUPED_MM_OK: dict[tuple[str, torch.dtype], bool] = {}


def _pick_expert_backend(requested: str, x: torch.Tensor) -> str:
    """``grouped_mm`` if it runs for this device/dtype (probed once on a tiny problem)."""
    if requested != "auto":
        return requested
    key = (x.device.type, x.dtype)
    if key not in _GROUPED_MM_OK:
        try:
            a = torch.randn(4, 16, device=x.device, dtype=x.dtype)
            b = torch.randn(2, 16, 16, device=x.device, dtype=x.dtype)
            torch._grouped_mm(a, b.transpose(-2, -1), offs=torch.tensor([2, 4], device=x.device, dtype=torch.int32))
            _GROUPED_MM_OK[key] = True
        except (RuntimeError, AttributeError, NotImplementedError) as e:
            log.info("torch._grouped_mm unavailable for %s: %s; using padded bmm", key, e)
            _GROUPED_MM_OK[key] = False
    return "grouped_mm" if _GROUPED_MM_OK[key] else "bmm"


class GroupedExperts(nn.Module):
    def __init__(self, n_experts: int, d_model: int, hidden: int, limit: float | None, backend: str) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, hidden, d_model))  # gate
        self.w3 = nn.Parameter(torch.empty(n_experts, hidden, d_model))  # up
        self.w2 = nn.Parameter(torch.empty(n_experts, d_model, hidden))  # down
        self.limit = limit
        self.backend = backend

    def forward(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        dev = x_sorted.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x_sorted.dtype
        x_sorted = x_sorted.to(dt)  # autocast does not cover torch._grouped_mm
        be = _pick_expert_backend(self.backend, x_sorted)
        w1, w3, w2 = (w.to(dt) for w in (self.w1, self.w3, self.w2))
        h = swiglu(grouped_mm(x_sorted, w1, counts, be), grouped_mm(x_sorted, w3, counts, be), self.limit)
        return grouped_mm(h, w2, counts, be)


@dataclass
class RoutingInfo:
    """What one MoE forward reports; the model records it outside activation checkpointing."""
    aux_loss: torch.Tensor  # EP-group balance loss of this layer, this micro-batch (differentiable)
    counts: torch.Tensor  # [E] tokens routed to each expert (int64, no grad)
    out_norm_sum: torch.Tensor  # [E] sum of L2 norms of each expert's outputs (no grad)
    probs: torch.Tensor | None = None  # [E] mean normalised router probability p_e (differentiable)


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        E = cfg.n_experts
        self.n_experts, self.top_k = E, cfg.top_k
        self.routed_scaling = cfg.routed_scaling
        self.ep_groups = cfg.ep_groups
        self.bias_in_weights = cfg.router_bias_in_weights
        self.router = nn.Linear(cfg.d_model, E, bias=False)
        self.experts = GroupedExperts(E, cfg.d_model, cfg.expert_hidden, cfg.swiglu_limits[layer], cfg.expert_backend)
        self.shared = (SwiGLU(cfg.d_model, cfg.shared_hidden * cfg.n_shared_experts, cfg.swiglu_limits_shared[layer])
                       if cfg.n_shared_experts else None)
        # loss-free balancing: selection bias and the loads seen since the last update
        self.register_buffer("router_bias", torch.zeros(E, dtype=torch.float32))
        self.register_buffer("bias_load", torch.zeros(E, dtype=torch.float32))
        # monitoring window (reset by routing_stats(reset=True)); not part of the checkpoint
        self.register_buffer("stat_load", torch.zeros(E, dtype=torch.float32), persistent=False)
        self.register_buffer("stat_norm", torch.zeros(E, dtype=torch.float32), persistent=False)
        # global-batch balance window: assignments per expert over the micro-batches (and, once
        # all-reduced, the data-parallel ranks) of the current optimizer step.  int64 so that
        # model.to(bfloat16) leaves it alone and counts stay exact.
        self.register_buffer("balance_counts", torch.zeros(E, dtype=torch.int64), persistent=False)
        self.frozen = False
        # hook for expert parallelism (model/parallel/expert.py): called as
        # expert_dispatch(experts, x_sorted, counts) instead of experts(x_sorted, counts)
        self.expert_dispatch = None

    def _apply(self, fn, recurse=True):
        """Keep the balancing buffers fp32 through ``model.to(bfloat16)``: a bf16 bias would
        swallow 1e-3 updates once it is larger than ~0.25."""
        super()._apply(fn, recurse)
        for name in ("router_bias", "bias_load", "stat_load", "stat_norm"):
            buf = getattr(self, name)
            if buf.is_floating_point() and buf.dtype != torch.float32:
                setattr(self, name, buf.float())
        return self

    # --- routing -----------------------------------------------------------------------
    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fp32 router: (top-k expert ids [N,K], combine weights [N,K], all scores [N,E])."""
        with torch.autocast(x.device.type, enabled=False):  # fp32 even inside a bf16 autocast region
            logits = F.linear(x.float(), self.router.weight.float())
        scores = torch.sigmoid(logits)
        biased = scores + self.router_bias
        topk = biased.topk(self.top_k, dim=-1).indices
        w = (biased if self.bias_in_weights else scores).gather(-1, topk)
        w = w / (w.sum(-1, keepdim=True) + 1e-20) * self.routed_scaling
        return topk, w, scores

    @staticmethod
    def mean_probs(scores: torch.Tensor) -> torch.Tensor:
        """p_e: the router's sigmoid scores normalised over experts, averaged over tokens."""
        return (scores / scores.sum(-1, keepdim=True)).mean(0)

    def group_loss(self, f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """L = G Σ_g f_g p_g from per-expert load fractions ``f`` (Σ f = 1, no grad) and mean
        probabilities ``p``; experts ``g·E/G … (g+1)·E/G - 1`` form group g (one EP rank)."""
        G = self.ep_groups
        f = f.to(p.dtype)
        return G * (f.view(G, -1).sum(1) * p.view(G, -1).sum(1)).sum()

    def ep_balance_loss(self, scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """PAPER Eq. 1 over this batch: p_e the mean normalised router probability and f_e the
        fraction of the N·K assignments that went to expert e.  Uniform load → 1."""
        N = scores.shape[0]
        return self.group_loss(counts.float() / max(N * self.top_k, 1), self.mean_probs(scores))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RoutingInfo]:
        shape = x.shape
        xf = x.reshape(-1, shape[-1])
        N, K, E = xf.shape[0], self.top_k, self.n_experts
        topk, w, scores = self.route(xf)
        flat = topk.reshape(-1)
        counts = torch.bincount(flat, minlength=E)
        probs = self.mean_probs(scores)
        aux = self.group_loss(counts.float() / max(N * K, 1), probs)
        # dispatch: sort the N·K (token, expert) pairs by expert, run grouped matmuls, scatter back
        order = flat.argsort(stable=True)
        token = order // K
        if self.expert_dispatch is None:
            out = self.experts(xf[token], counts)
        else:
            out = self.expert_dispatch(self.experts, xf[token], counts)
        with torch.no_grad():
            norm_sum = torch.zeros(E, device=x.device, dtype=torch.float32).index_add_(
                0, flat[order], out.detach().float().norm(dim=-1))
        out = out * w.reshape(-1)[order, None].to(out.dtype)
        y = torch.zeros_like(xf).index_add_(0, token, out.to(xf.dtype))
        if self.shared is not None:
            y = y + self.shared(xf)
        return y.view(shape), RoutingInfo(aux, counts.detach(), norm_sum, probs)

    # --- balancing and monitoring -----------------------------------------------------------
    @torch.no_grad()
    def record(self, info: RoutingInfo) -> None:
        c = info.counts.float()
        if self.training and not self.frozen:
            self.bias_load += c
        self.stat_load += c
        self.stat_norm += info.out_norm_sum

    @torch.no_grad()
    def update_bias(self, rate: float) -> None:
        """Sign update: under-loaded experts' bias goes up by ``rate``, over-loaded down."""
        if self.frozen or rate == 0 or self.bias_load.sum() == 0:
            self.bias_load.zero_()
            return
        self.router_bias += rate * torch.sign(self.bias_load.mean() - self.bias_load)
        self.bias_load.zero_()

    def freeze(self, frozen: bool) -> None:
        self.frozen = frozen
        self.router.weight.requires_grad_(not frozen)

    @torch.no_grad()
    def stats(self, reset: bool = True) -> dict:
        load = self.stat_load.clone()
        total = load.sum().clamp(min=1)
        live = load > 0
        mean_norm = torch.where(live, self.stat_norm / load.clamp(min=1), torch.zeros_like(load))
        out: dict = {
            "load": (load / total).tolist(),
            # mean L2 norm of each expert's output per routed token; NaN = no tokens
            "act_norm": torch.where(live, mean_norm, torch.full_like(mean_norm, float("nan"))).tolist(),
            "tokens": int(load.sum().item() / self.top_k),
            "dead_experts": int((~live).sum()),
            "max_load_over_mean": float(load.max() / (total / self.n_experts)),
        }
        if live.any():
            med = mean_norm[live].median().clamp(min=1e-12)
            out["out_norm_max_over_median"] = float(mean_norm[live].max() / med)
            out["out_norm_min_over_median"] = float(mean_norm[live].min() / med)
        # parameter norms per expert; under FSDP2 the local shard holds whole experts (dim 0)
        ws = [getattr(w, "to_local", lambda w=w: w)() for w in (self.experts.w1, self.experts.w3, self.experts.w2)]
        pn = torch.stack([w.float().flatten(1).norm(dim=1) for w in ws]).norm(dim=0)
        pmed = pn.median().clamp(min=1e-12)
        out["param_norm_max_over_median"] = float(pn.max() / pmed)
        out["param_norm_min_over_median"] = float(pn.min() / pmed)
        out["bias_abs_max"] = float(self.router_bias.abs().max())
        if reset:
            self.stat_load.zero_()
            self.stat_norm.zero_()
        return out

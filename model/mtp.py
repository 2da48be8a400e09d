"""Multi-token prediction heads (PAPER §2.2, Fig. 2; DeepSeek-V3 style).

Head ``k`` (1-based) turns the previous depth's hidden state ``h^{k-1}_t`` (the backbone's last
hidden state for k = 1) and the embedding of token ``x_{t+k}`` into ``h^k_t``::

    h^k_t = Block_k( W_k [ HNorm(h^{k-1}_t) ; ENorm(Emb(x_{t+k})) ] )

and predicts ``x_{t+1+k}`` through its own output norm and the *shared* LM head.  ``Block_k`` is
one sliding-window attention layer plus a dense SwiGLU FFN.  The embedding and LM head are the
backbone's (shared, no extra parameters).

Only MTP-1 trains during pre- and mid-training (``mtp_active_depths = 1``); MTP-2/3 are cloned
from it (``Step35Model.clone_mtp_heads``) for the short final phase that trains all three.
"""

from __future__ import annotations

import torch
from torch import nn

from model.norm import ZeroCenteredRMSNorm


class MTPHead(nn.Module):
    def __init__(self, d_model: int, block: nn.Module, eps: float = 1e-5) -> None:
        super().__init__()
        self.h_norm = ZeroCenteredRMSNorm(d_model, eps)
        self.e_norm = ZeroCenteredRMSNorm(d_model, eps)
        self.proj = nn.Linear(2 * d_model, d_model, bias=False)
        self.block = block
        self.out_norm = ZeroCenteredRMSNorm(d_model, eps)

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor, rope, masks,
                backend: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(h^k, out_norm(h^k))``: the raw state feeds depth k+1, the normed one the
        shared LM head.  Applying ``out_norm`` here (not in the caller) keeps every parameter of
        the head inside its own forward, so a head can be its own FSDP2 unit (FSDP2 reshards a
        unit's parameters after its forward; a later ``head.out_norm(...)`` call from outside
        would see a sharded weight)."""
        x = self.proj(torch.cat([self.h_norm(h_prev), self.e_norm(emb_next)], dim=-1))
        h, _ = self.block(x, rope, masks, backend)
        return h, self.out_norm(h)


def shift_left(x: torch.Tensor, k: int, fill: int) -> torch.Tensor:
    """``x[:, t + k]`` at position t; the last k positions get ``fill``."""
    if k == 0:
        return x
    out = torch.full_like(x, fill)
    out[:, :-k] = x[:, k:]
    return out


def mtp_targets(labels: torch.Tensor, k: int, document_ids: torch.Tensor | None) -> torch.Tensor:
    """Targets of depth k: ``labels[t + k]`` (labels are already next-token aligned), ignored
    (-100) past the end of the sequence or where t + k lies in another packed document."""
    tgt = shift_left(labels, k, -100)
    if document_ids is not None and k > 0:
        same = shift_left(document_ids, k, -1) == document_ids
        tgt = torch.where(same, tgt, torch.full_like(tgt, -100))
    return tgt

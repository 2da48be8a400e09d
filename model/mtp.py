"""Multi-token prediction heads (PAPER §2.2, Fig. 2; DeepSeek-V3 style; the released layout).

Head ``k`` (1-based) turns the previous depth's hidden state ``h^{k-1}_t`` (the backbone's last
hidden state, before its final norm, for k = 1) and the embedding of token ``x_{t+k}`` into
``h^k_t``::

    h^k_t = Block_k( W_k [ ENorm(Emb(x_{t+k})) ; HNorm(h^{k-1}_t) ] )

and predicts ``x_{t+1+k}`` through its own output norm and its own output head (the released
``model.layers.{n+k-1}.transformer.shared_head.{norm,output}``; ``mtp_share_lm_head=True``
reuses the backbone's LM head instead).  ``Block_k`` is one sliding-window attention layer plus
a dense SwiGLU FFN.  The embedding is the backbone's.  ``mtp_embedding_first=False`` gives the
``[HNorm(h) ; ENorm(e)]`` order this model used before it matched the released weights.

Only MTP-1 trains during pre- and mid-training (``mtp_active_depths = 1``); MTP-2/3 are cloned
from it (``Step35Model.clone_mtp_heads``) for the short final phase that trains all three.
"""

from __future__ import annotations

import torch
from torch import nn

from model.norm import ZeroCenteredRMSNorm


class MTPHead(nn.Module):
    def __init__(self, d_model: int, block: nn.Module, eps: float = 1e-5, embedding_first: bool = True,
                 vocab_size: int | None = None) -> None:
        super().__init__()
        self.h_norm = ZeroCenteredRMSNorm(d_model, eps)
        self.e_norm = ZeroCenteredRMSNorm(d_model, eps)
        self.proj = nn.Linear(2 * d_model, d_model, bias=False)
        self.block = block
        self.out_norm = ZeroCenteredRMSNorm(d_model, eps)
        self.embedding_first = embedding_first
        # own output head (released layout) or None = the caller applies the shared LM head
        self.output = nn.Linear(d_model, vocab_size, bias=False) if vocab_size else None

    def forward(self, h_prev: torch.Tensor, emb_next: torch.Tensor, rope, masks,
                backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns ``(h^k, out_norm(h^k), logits or None)``: the raw state feeds depth k+1; the
        logits come from the head's own output layer, or are None when the LM head is shared
        (the caller applies it to the normed state).  Everything that uses this head's
        parameters happens here, so a head can be its own FSDP2 unit (FSDP2 reshards a unit's
        parameters after its forward; a later ``head.out_norm(...)`` call from outside would see
        a sharded weight)."""
        e, hh = self.e_norm(emb_next), self.h_norm(h_prev)
        x = self.proj(torch.cat([e, hh] if self.embedding_first else [hh, e], dim=-1))
        h, _ = self.block(x, rope, masks, backend)
        normed = self.out_norm(h)
        return h, normed, (self.output(normed) if self.output is not None else None)


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

"""Turning packed mix sequences into training tensors.

Rules (documented in docs/TRAINING.md, tested in tests/test_bridge.py):

* ``labels[t] = tokens[t+1]`` when ``t+1`` is in the *same document segment* as ``t`` and the
  target token is a loss target; otherwise ``-100``. The last position of a sequence never has a
  label (its next token is in another sequence).
* A target counts when its flag has ``LOSS`` and not ``PAD``; when the schedule masks meta
  strings at this point of the run, targets flagged ``META`` are dropped too. PAD never counts.
* ``loss_mask[t]`` is exactly ``labels[t] != -100`` (kept as its own tensor for accounting).
* ``document_ids[b, t]`` is the index of the segment that holds ``t`` in row ``b`` (0, 1, ...;
  the padding tail is its own last segment), for block-diagonal attention masks.
* ``position_ids[b, t]`` counts from 0 at the start of each segment. A document that continues
  from the previous sequence restarts at position 0 (packing contract of build-mix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tokenizer.masks import LOSS, META, PAD

IGNORE = -100


@dataclass
class Batch:
    """One micro-batch (all ``[B, T]``)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    loss_mask: torch.Tensor
    document_ids: torch.Tensor
    position_ids: torch.Tensor

    @property
    def n_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in
                       (self.input_ids, self.labels, self.loss_mask, self.document_ids, self.position_ids)))


def _flatten_segments(segments: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows' segment lengths back to back, and the number of segments per row."""
    counts = np.fromiter((len(s) for s in segments), dtype=np.int64, count=len(segments))
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in segments]) if len(segments) else \
        np.empty(0, np.int64)
    return flat, counts


def segment_ids_and_positions(segments: Sequence[np.ndarray], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row document ids and within-document positions from segment lengths."""
    flat, counts = _flatten_segments(segments)
    return _ids_and_positions(flat, counts, seq_len)


def _ids_and_positions(flat: np.ndarray, counts: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised over the whole batch: ``flat`` = every row's segment lengths back to back,
    ``counts`` = segments per row. Rows are contiguous in the flattened ``[B*T]`` layout and each
    sums to ``seq_len``, so flat offsets work for positions and a per-row restart for ids."""
    b = counts.size
    flat = flat.astype(np.int64, copy=False)
    first_seg = np.cumsum(counts) - counts                      # index of each row's first segment
    local = np.arange(flat.size, dtype=np.int64) - np.repeat(first_seg, counts)
    doc = np.repeat(local, flat).reshape(b, seq_len)
    starts = np.cumsum(flat) - flat                             # flat start offset of each segment
    pos = (np.arange(b * seq_len, dtype=np.int64) - np.repeat(starts, flat)).reshape(b, seq_len)
    return doc, pos


def make_batch(tokens: np.ndarray, flags: np.ndarray, segments: Sequence[np.ndarray],
               mask_meta: bool) -> Batch:
    """Build a :class:`Batch` from ``tokens[B,T]``, ``flags[B,T]`` (uint8) and segments per row."""
    flat, counts = _flatten_segments(segments)
    return make_batch_flat(tokens, flags, flat, counts, mask_meta)


def make_batch_flat(tokens: np.ndarray, flags: np.ndarray, seg_flat: np.ndarray,
                    seg_counts: np.ndarray, mask_meta: bool) -> Batch:
    """:func:`make_batch` with the segments already flattened (what the loader reads)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    flags = np.asarray(flags, dtype=np.uint8)
    b, t = tokens.shape
    if int(seg_flat.sum()) != b * t:
        raise ValueError(f"segments sum to {int(seg_flat.sum())}, expected {b} x {t}")
    doc, pos = _ids_and_positions(seg_flat, seg_counts, t)
    target_flags = flags[:, 1:]
    ok = (target_flags & LOSS).astype(bool) & ~(target_flags & PAD).astype(bool)
    if mask_meta:
        ok &= ~(target_flags & META).astype(bool)
    ok &= doc[:, 1:] == doc[:, :-1]
    loss_mask = np.zeros((b, t), dtype=bool)
    loss_mask[:, :-1] = ok
    labels = np.full((b, t), IGNORE, dtype=np.int64)
    labels[:, :-1] = np.where(ok, tokens[:, 1:], IGNORE)
    return Batch(
        input_ids=torch.from_numpy(tokens),
        labels=torch.from_numpy(labels),
        loss_mask=torch.from_numpy(loss_mask),
        document_ids=torch.from_numpy(doc),
        position_ids=torch.from_numpy(pos),
    )

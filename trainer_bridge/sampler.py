"""Deterministic, seeded sequence order and data-parallel sharding.

The order of a phase is an endless stream of epochs; epoch ``e`` is a permutation of
``range(n_sequences)`` drawn from ``numpy.random.default_rng([seed, phase_key, e])``. Global
position ``k`` of the stream is sequence ``perm_{k // n}[k % n]``. A global batch is the next
``global_batch`` positions of the stream; data-parallel rank ``r`` of ``W`` takes the contiguous
slice ``[r * B/W, (r+1) * B/W)`` of it. Consequences (tested with hypothesis):

* the order depends only on (seed, phase, epoch), never on the world size, so a run resumed on
  a different number of GPUs sees the same global batches;
* the ranks' slices of a global batch are disjoint and together cover it exactly;
* one epoch visits every sequence exactly once.
"""

from __future__ import annotations

import zlib

import numpy as np


def phase_key(name: str) -> int:
    """Stable 32-bit key of a phase name (Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


class EpochOrder:
    """Stream of seeded per-epoch permutations of ``range(n)``; caches the current epoch."""

    def __init__(self, n: int, seed: int, name: str) -> None:
        if n <= 0:
            raise ValueError("EpochOrder needs n > 0")
        self.n = n
        self.seed = int(seed)
        self.key = phase_key(name)
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, self.key, int(epoch)])
            self._perm = rng.permutation(self.n).astype(np.int64)
            self._epoch = epoch
        return self._perm

    def take(self, start: int, count: int) -> np.ndarray:
        """Sequence indices at stream positions ``[start, start + count)`` (may span epochs)."""
        out = np.empty(count, dtype=np.int64)
        filled = 0
        pos = start
        while filled < count:
            epoch, off = divmod(pos, self.n)
            k = min(count - filled, self.n - off)
            out[filled : filled + k] = self.permutation(epoch)[off : off + k]
            filled += k
            pos += k
        return out


def rank_slice(global_batch: int, rank: int, world: int) -> slice:
    """The part of a global batch that data-parallel ``rank`` of ``world`` trains on."""
    if world <= 0 or not 0 <= rank < world:
        raise ValueError(f"bad rank {rank} of world {world}")
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} is not divisible by the data-parallel "
                         f"world size {world}")
    local = global_batch // world
    return slice(rank * local, (rank + 1) * local)


def micro_batching(local_batch: int, seq_len: int, micro_batch_tokens: int) -> tuple[int, int]:
    """(micro_batch_size, grad_accum_steps) for a rank's ``local_batch`` sequences.

    The micro-batch is the largest divisor of ``local_batch`` whose tokens fit in
    ``micro_batch_tokens`` (at least one sequence), so a longer ``seq_len`` automatically means
    fewer sequences per micro-batch and more accumulation, at constant memory.
    """
    cap = max(1, micro_batch_tokens // max(1, seq_len))
    mb = 1
    for d in range(min(cap, local_batch), 0, -1):
        if local_batch % d == 0:
            mb = d
            break
    return mb, local_batch // mb

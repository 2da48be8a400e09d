"""Schedule arithmetic the trainer calls every step: global batch (with ramps), learning rate,
loss-free bias rate, meta-string loss mask, and the exact number of optimizer steps a phase
takes.

Everything that counts tokens or steps is integer arithmetic: a phase of 14.6T tokens at a
4096-token sequence length has an exact number of steps, and the batch ramp is walked step by
step in closed form (no float accumulation). Only the learning rate itself is a float.

Conventions (documented in curricula/README.md):
- ``global_batch`` is in sequences; a step that *starts* before a ramp boundary keeps the old
  batch, so the batch changes at the first step starting at or after the boundary.
- The last step of a phase may be partial (fewer sequences than the batch): steps = ceil.
- ``lr_at`` warmup is linear with ``(step + 1) / warmup`` so step 0 already trains; decays end
  exactly at ``end`` on the phase's last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from curricula.schema import BatchRamp, MetaMaskAfter, Phase, RateDecay, Schedule


def _ramp(schedule: Schedule) -> list[tuple[int, int]]:
    gb = schedule.global_batch
    if isinstance(gb, BatchRamp):
        return [(s.at, s.batch) for s in gb.steps]
    return [(0, int(gb))]


def global_batch_at(schedule: Schedule, tokens_into_phase: int) -> int:
    """Global batch (sequences) of the step that starts ``tokens_into_phase`` tokens into the
    phase: the batch of the last ramp entry with ``at <= tokens_into_phase``."""
    if tokens_into_phase < 0:
        raise ValueError("tokens_into_phase must be >= 0")
    batch = None
    for at, b in _ramp(schedule):
        if at <= tokens_into_phase:
            batch = b
        else:
            break
    assert batch is not None  # the first ramp entry is at 0 (validated)
    return batch


@dataclass(frozen=True)
class BatchSegment:
    """A run of ``n_steps`` consecutive steps with the same global batch."""

    first_step: int
    n_steps: int
    batch: int
    tokens_start: int  # tokens into the phase at ``first_step``


def batch_segments(phase: Phase, tokens: int | None = None) -> list[BatchSegment]:
    """Walk the batch ramp over the phase budget (or ``tokens``): exact integers throughout."""
    budget = phase.tokens if tokens is None else tokens
    ramp = _ramp(phase.schedule)
    boundaries = [at for at, _ in ramp[1:]]
    seq_len = phase.seq_len
    pos, step = 0, 0
    out: list[BatchSegment] = []
    while pos < budget:
        batch = global_batch_at(phase.schedule, pos)
        nxt = next((b for b in boundaries if b > pos), budget)
        nxt = min(nxt, budget)
        per_step = batch * seq_len
        n = -(-(nxt - pos) // per_step)  # ceil without floats
        if out and out[-1].batch == batch:
            last = out[-1]
            out[-1] = BatchSegment(last.first_step, last.n_steps + n, batch, last.tokens_start)
        else:
            out.append(BatchSegment(step, n, batch, pos))
        pos += n * per_step
        step += n
    return out


def phase_steps(phase: Phase, tokens: int | None = None) -> int:
    """Exact number of optimizer steps the phase takes (the last one may be partial)."""
    return sum(s.n_steps for s in batch_segments(phase, tokens))


def batch_at_step(phase: Phase, step: int) -> int:
    """Global batch of step ``step`` of the phase."""
    for seg in batch_segments(phase):
        if step < seg.first_step + seg.n_steps:
            return seg.batch
    raise IndexError(f"step {step} is past the end of phase {phase.name!r}")


def tokens_at_step(phase: Phase, step: int) -> int:
    """Tokens into the phase when step ``step`` starts (capped at the budget)."""
    for seg in batch_segments(phase):
        if step < seg.first_step + seg.n_steps:
            return seg.tokens_start + (step - seg.first_step) * seg.batch * phase.seq_len
    return phase.tokens


def _warmup_steps(warmup: int | float, total_steps: int) -> int:
    if isinstance(warmup, float):
        return int(math.ceil(warmup * total_steps))
    return int(warmup)


def lr_at(schedule: Schedule, step_into_phase: int, total_steps: int) -> float:
    """Learning rate at ``step_into_phase`` (0-based) of a phase of ``total_steps`` steps."""
    lr = schedule.lr
    if total_steps <= 0:
        raise ValueError("total_steps must be > 0")
    step = min(max(int(step_into_phase), 0), total_steps - 1)
    shape = lr.shape
    if shape == "constant":
        return float(lr.peak)
    if shape in ("cosine", "linear_decay"):
        progress = step / max(1, total_steps - 1)
        return _decay(shape, lr.start, lr.end, progress)
    warm = min(_warmup_steps(lr.warmup, total_steps), total_steps)
    if step < warm:
        return lr.start + (lr.peak - lr.start) * (step + 1) / warm
    if shape == "warmup_constant":
        return float(lr.peak)
    # warmup_cosine
    span = total_steps - 1 - warm
    progress = 1.0 if span <= 0 else (step - warm) / span
    return _decay("cosine", lr.peak, lr.end, progress)


def _decay(shape: str, start: float, end: float, progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return start + (end - start) * progress


def bias_update_rate_at(schedule: Schedule, step_into_phase: int, total_steps: int) -> float:
    """Loss-free balancing bias update rate: constant, or linear ``start → end`` over the phase."""
    rate = schedule.bias_update_rate
    if isinstance(rate, RateDecay):
        progress = min(max(step_into_phase, 0), max(total_steps - 1, 0)) / max(1, total_steps - 1)
        return rate.start + (rate.end - rate.start) * progress
    return float(rate)


def meta_loss_masked(schedule: Schedule, tokens_into_run: int) -> bool:
    """Whether meta-string tokens (mask flag META) are excluded from the loss at this point of
    the whole run (the report switches this on after ~3.8T tokens)."""
    m = schedule.meta_loss_mask
    if isinstance(m, MetaMaskAfter):
        return tokens_into_run >= m.after
    return bool(m)


__all__ = [
    "BatchSegment",
    "batch_at_step",
    "batch_segments",
    "bias_update_rate_at",
    "global_batch_at",
    "lr_at",
    "meta_loss_masked",
    "phase_steps",
    "tokens_at_step",
]

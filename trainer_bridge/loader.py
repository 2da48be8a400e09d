"""The curriculum loader: one optimizer step's worth of micro-batches at a time.

A run is a list of :class:`PhasePlan` (one per curriculum phase that is materialised in a mix),
walked in order. Inside a phase the global batch may ramp (``global_batch(tokens_into_phase)``,
normally ``curricula.schedule.global_batch_at``); the phase ends after ``steps`` optimizer steps.
At a phase boundary the sequence length, the global batch and therefore the micro-batch size
and the number of gradient-accumulation steps all switch.

State is four integers (phase index, step in phase, sequences consumed in the phase, and the
tokens consumed in the run so far) plus the seed, and is independent of the data-parallel world
size: ``load_state_dict(state_dict())`` resumes exactly the batches the run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from trainer_bridge.batch import Batch, make_batch_flat
from trainer_bridge.mix import MixPhase
from trainer_bridge.sampler import EpochOrder, micro_batching, rank_slice

STATE_VERSION = 1


@dataclass
class PhasePlan:
    """What the loader needs to know about one phase of the run."""

    name: str                                   # unique in the run, e.g. "mid/mid-1"
    data: MixPhase
    global_batch: Callable[[int], int]          # tokens_into_phase -> sequences per step
    mask_meta: Callable[[int], bool] = lambda tokens_into_phase: False
    tokens_before: int = 0                      # curriculum tokens before this phase (info)
    budget_sequences: int | None = None         # default: every sequence of the phase once
    steps: int | None = None                    # default: walk the batch schedule over the budget

    def __post_init__(self) -> None:
        if self.budget_sequences is None:
            self.budget_sequences = self.data.n_sequences
        if self.steps is None:
            self.steps = walk_phase_steps(self.budget_sequences, self.global_batch, self.seq_len)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len

    def batch_at(self, consumed: int, world: int = 1) -> int:
        """Global batch of the step starting after ``consumed`` sequences: the schedule's batch,
        cut to what is left of the budget on the last step (curricula convention: the last
        step may be partial), rounded up to a multiple of the data-parallel world size."""
        gb = int(self.global_batch(consumed * self.seq_len))
        if gb <= 0:
            raise ValueError(f"phase {self.name}: global batch {gb} at {consumed * self.seq_len} tokens")
        left = self.budget_sequences - consumed
        if 0 < left < gb:
            gb = -(-left // world) * world
        return gb


@dataclass
class StepBatch:
    """Everything one optimizer step consumes on this rank."""

    phase_index: int
    phase: str
    step_in_phase: int
    seq_len: int
    global_batch: int                 # sequences, all ranks
    micro_batch: int                  # sequences per micro-batch on this rank
    grad_accum: int
    tokens_into_phase: int            # before this step, all ranks
    tokens_into_run: int              # trained in this run before this step, all ranks
    mask_meta: bool
    micro_batches: list[Batch] = field(default_factory=list)
    sequence_ids: np.ndarray | None = None  # this rank's sequence indices, in micro-batch order

    @property
    def global_tokens(self) -> int:
        return self.global_batch * self.seq_len


class CurriculumLoader:
    """Deterministic, resumable, data-parallel iterator of :class:`StepBatch`."""

    def __init__(self, plans: list[PhasePlan], seed: int = 0, rank: int = 0, world: int = 1,
                 micro_batch_tokens: int = 8192) -> None:
        if not plans:
            raise ValueError("CurriculumLoader needs at least one phase")
        names = [p.name for p in plans]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique: {names}")
        self.plans = plans
        self.seed = int(seed)
        self.rank, self.world = int(rank), int(world)
        self.micro_batch_tokens = int(micro_batch_tokens)
        self._orders = [EpochOrder(p.data.n_sequences, self.seed, p.name) for p in plans]
        self.phase_index = 0
        self.step_in_phase = 0
        self.consumed = 0                   # sequences of the current phase, all ranks
        self.tokens_into_run = 0            # tokens trained in this run, all ranks
        self._skip_empty()

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "phase_index": self.phase_index,
            "phase": self.plans[self.phase_index].name if not self.done else None,
            "step_in_phase": self.step_in_phase,
            "consumed": self.consumed,
            "tokens_into_run": self.tokens_into_run,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')} != {STATE_VERSION}")
        if int(state["seed"]) != self.seed:
            raise ValueError(f"loader state has seed {state['seed']}, this run uses {self.seed}")
        idx = int(state["phase_index"])
        if idx < len(self.plans) and state.get("phase") not in (None, self.plans[idx].name):
            raise ValueError(f"loader state is in phase {state['phase']!r} but phase {idx} of this "
                             f"run is {self.plans[idx].name!r} (different curriculum or mix?)")
        self.phase_index = idx
        self.step_in_phase = int(state["step_in_phase"])
        self.consumed = int(state["consumed"])
        self.tokens_into_run = int(state["tokens_into_run"])

    # -- iteration -----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.phase_index >= len(self.plans)

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.plans)

    @property
    def global_step(self) -> int:
        return sum(p.steps for p in self.plans[: self.phase_index]) + (
            self.step_in_phase if not self.done else 0)

    def _skip_empty(self) -> None:
        while not self.done and self.step_in_phase >= self.plans[self.phase_index].steps:
            self.phase_index += 1
            self.step_in_phase = 0
            self.consumed = 0

    def peek(self) -> StepBatch | None:
        """The shape of the next step (no data read); ``None`` when the run is over."""
        if self.done:
            return None
        plan = self.plans[self.phase_index]
        t_phase = self.consumed * plan.seq_len
        gb = plan.batch_at(self.consumed, self.world)
        sl = rank_slice(gb, self.rank, self.world)
        mb, accum = micro_batching(sl.stop - sl.start, plan.seq_len, self.micro_batch_tokens)
        return StepBatch(
            phase_index=self.phase_index, phase=plan.name, step_in_phase=self.step_in_phase,
            seq_len=plan.seq_len, global_batch=gb, micro_batch=mb, grad_accum=accum,
            tokens_into_phase=t_phase, tokens_into_run=self.tokens_into_run,
            mask_meta=bool(plan.mask_meta(t_phase)),
        )

    @staticmethod
    def read_rows(data: MixPhase, seq_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gather rows with one vectorised fancy-index per array: tokens and flags (every row is
        ``seq_len`` long) and the rows' segment lengths flattened, with segments per row."""
        t = data.seq_len
        tok = data.tokens.data.reshape(-1, t)[seq_ids]
        msk = data.mask.data.reshape(-1, t)[seq_ids]
        seg = data.segments
        counts = seg.sizes[seq_ids].astype(np.int64)
        starts = seg.pointers[seq_ids] // seg.dtype.itemsize
        within = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        flat = seg.data[np.repeat(starts, counts) + within]
        return tok, msk, flat, counts

    def next(self) -> StepBatch:
        step = self.peek()
        if step is None:
            raise StopIteration
        plan = self.plans[self.phase_index]
        order = self._orders[self.phase_index]
        ids = order.take(self.consumed, step.global_batch)
        local = ids[rank_slice(step.global_batch, self.rank, self.world)]
        tok, msk, seg_flat, counts = self.read_rows(plan.data, local)
        seg_first = np.concatenate(([0], np.cumsum(counts)))
        mb = step.micro_batch
        step.micro_batches = [
            make_batch_flat(tok[i : i + mb], msk[i : i + mb],
                            seg_flat[seg_first[i] : seg_first[min(i + mb, len(local))]],
                            counts[i : i + mb], step.mask_meta)
            for i in range(0, len(local), mb)
        ]
        step.sequence_ids = local
        # advance
        self.consumed += step.global_batch
        self.tokens_into_run += step.global_tokens
        self.step_in_phase += 1
        self._skip_empty()
        return step

    def __iter__(self) -> Iterator[StepBatch]:
        while not self.done:
            yield self.next()


def walk_phase_steps(budget_sequences: int, global_batch: Callable[[int], int], seq_len: int) -> int:
    """Optimizer steps to consume ``budget_sequences`` walking a (ramping) batch schedule; the
    last step may be partial (same convention as ``curricula.schedule.phase_steps``)."""
    steps, consumed = 0, 0
    while consumed < budget_sequences:
        gb = int(global_batch(consumed * seq_len))
        if gb <= 0:
            raise ValueError(f"global batch {gb} at {consumed * seq_len} tokens")
        consumed += gb
        steps += 1
    return steps

"""Trainer bridge: deterministic, resumable, data-parallel loaders from the packed sequences
that ``build-mix`` writes to training batches (tokens, labels, loss mask, document ids and
positions), switching seq_len and batch size at phase boundaries."""

from trainer_bridge.batch import IGNORE, Batch, make_batch  # noqa: E402  (public API)
from trainer_bridge.loader import CurriculumLoader, PhasePlan, StepBatch  # noqa: E402
from trainer_bridge.mix import Mix, MixError, MixPhase, discover_mixes, open_mix  # noqa: E402

__all__ = ["IGNORE", "Batch", "CurriculumLoader", "Mix", "MixError", "MixPhase", "PhasePlan",
           "StepBatch", "discover_mixes", "make_batch", "open_mix"]

"""Curricula: the YAML schema of a training curriculum (stages → phases with budgets, seq_len,
mixtures, epoch caps and schedules), the bundled ``full.yaml`` (Step 3.5 Flash) and
``tiny.yaml``, the planner (exact budget arithmetic against token manifests), the mixer that
materialises a stage as packed sequences, lineage and per-phase contamination reports."""

from curricula.schema import (  # noqa: E402  (the public API, after the package docstring)
    Curriculum,
    CurriculumError,
    LRSchedule,
    Phase,
    Schedule,
    Stage,
    format_tokens,
    load_curriculum,
    parse_tokens,
)

__all__ = [
    "Curriculum",
    "CurriculumError",
    "LRSchedule",
    "Phase",
    "Schedule",
    "Stage",
    "format_tokens",
    "load_curriculum",
    "parse_tokens",
]

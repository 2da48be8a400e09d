"""The step interface shared by the local executor and the Beam executor.

A *document step* is a small object with a ``name``, a JSON-able ``config``, a ``setup()``
that loads anything heavy (models) once per worker, and ``__call__(doc)`` that returns the
(possibly annotated) document or a ``Drop`` with a reason. Steps are pure with respect to
their inputs and picklable before ``setup()`` runs, so Beam can ship them to workers
(``beam_pipelines`` wraps each in a ``DoFn`` whose ``setup`` calls ``step.setup``).

Global steps (dedup, clustering, mixing) cannot be per-document; they expose pure functions
(signatures, keys, union-find) that each executor composes in its own way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from stepcrawl.document import Document
from stepcrawl.manifest import Accounting


@dataclass(frozen=True)
class Drop:
    """A document leaves the stage: ``reason`` is a short stable slug, e.g. ``lang:not-allowed``."""

    reason: str
    doc: Document | None = None


StepResult = Document | Drop


class DocumentStep:
    """Base class for per-document steps. Subclasses set ``name`` and implement ``process``."""

    name: str = "step"

    def __init__(self, **config: Any) -> None:
        self.config = config
        self._ready = False

    def setup(self) -> None:
        """Load models etc. Called once per worker before the first document."""

    def process(self, doc: Document) -> StepResult:  # pragma: no cover - interface
        raise NotImplementedError

    def ensure_setup(self) -> None:
        """Run ``setup()`` once (executors call this up front; ``__call__`` falls back to it)."""
        if not self._ready:
            self.setup()
            self._ready = True

    def __call__(self, doc: Document) -> StepResult:
        self.ensure_setup()
        return self.process(doc)

    def __getstate__(self) -> dict[str, Any]:
        # Ship only the config to workers; models are rebuilt by setup() there.
        return {"config": self.config, "_ready": False, **self._picklable_state()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _picklable_state(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config}


def apply_steps(doc: Document, steps: Iterable[DocumentStep]) -> StepResult:
    """Run ``doc`` through ``steps`` in order, stopping at the first Drop."""
    for step in steps:
        result = step(doc)
        if isinstance(result, Drop):
            return Drop(result.reason, result.doc or doc)
        doc = result
    return doc


def run_steps(
    docs: Iterable[Document],
    steps: list[DocumentStep],
    accounting: Accounting,
    on_drop=None,
) -> Iterator[Document]:
    """The local executor for per-document steps: yields kept docs, counts everything."""
    for doc in docs:
        accounting.seen(doc.n_chars)
        result = apply_steps(doc, steps)
        if isinstance(result, Drop):
            accounting.dropped(result.reason, doc.n_chars)
            if on_drop is not None:
                on_drop(result.doc or doc, result.reason)
        else:
            accounting.kept(result.n_chars)
            yield result

"""Beam transforms around stepcrawl's stage functions: they only move data and count.

* :class:`StepsDoFn` runs named groups of ``stepcrawl.steps.DocumentStep`` objects (the very
  objects the local executor runs) on each document: ``setup()`` calls every ``step.setup()``
  once per worker, kept documents go to the main output, drops to the tagged output
  ``dropped`` as ``(reason, Document)``, one accounting event per group to ``events``.
* :class:`ExtractDoFn` runs ``stepcrawl.extract.extract_record`` on WARC records.
* :class:`AccountingFn` combines one step's events into a ``stepcrawl.manifest.Accounting``
  (documents/characters in, out, and by drop reason), counted as ``run_steps`` counts.

Metrics (Beam ``Metrics`` counters; the Dataflow UI lists them under "Custom counters", Flink
and Spark expose them through their metric systems, ``PipelineResult.metrics()`` everywhere):

* namespace ``stepcrawl``: ``docs_in`` (records entering the pipeline), ``docs_out`` (written),
  ``drop:<reason>`` for every dropped document, whichever stage dropped it;
* namespace ``stepcrawl.<step>``: the same three per step (``extract``, ``annotate``,
  ``filter``, ``decontam``; dedup's are in ``beam_pipelines.dedup``).

Nothing here holds state beyond one element, so the DoFns pickle with Beam's default pickler
(tests/test_beam_pipelines.py pickles them with pickle and cloudpickle).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from stepcrawl.document import Document
from stepcrawl.manifest import Accounting
from stepcrawl.steps import DocumentStep, Drop, apply_steps

NAMESPACE = "stepcrawl"
DROPPED = "dropped"


# --------------------------------------------------------------------------- tagged outputs
class _TagPairs(beam.DoFn):
    """Run ``inner`` and emit each of its outputs as ``(tag, value)`` on one main output.

    Why: Beam's DaskRunner (2.77) keys its bags by the producing transform, not by the output
    tag, so every consumer of a multi-output ``ParDo(...).with_outputs(...)`` receives the
    main *and* all tagged outputs mixed together (reproduction in docs/BEAM.md). Splitting a
    single output with one ``FlatMap`` per tag is correct on every runner; on Dataflow, Flink
    and Spark the filters fuse with the DoFn, so the cost is a tuple per element.
    """

    def __init__(self, inner: beam.DoFn, main: str) -> None:
        self.inner = inner
        self.main = main

    def setup(self) -> None:
        self.inner.setup()

    def start_bundle(self) -> None:
        self.inner.start_bundle()

    def process(self, element, *args, **kwargs) -> Iterator[tuple[str, Any]]:
        for out in self.inner.process(element, *args, **kwargs) or ():
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield out.tag, out.value
            else:
                yield self.main, out

    def finish_bundle(self) -> None:
        if self.inner.finish_bundle() is not None:  # none of ours emits here; refuse rather than lose
            raise TypeError(f"{type(self.inner).__name__}.finish_bundle emits outputs: not supported by tagged_outputs")

    def teardown(self) -> None:
        self.inner.teardown()


def _select(pair: tuple[str, Any], tag: str) -> Iterator[Any]:
    if pair[0] == tag:
        yield pair[1]


def drops_finish_bundle_outputs(pipeline) -> bool:
    """True on Beam's DaskRunner (2.77), which collects a bundle's outputs *before* calling
    ``finish_bundle`` and so loses whatever a DoFn emits there (``BatchElements``' last,
    partial batch of every bundle among them; reproduction in docs/BEAM.md)."""
    return type(getattr(pipeline, "runner", None)).__name__ == "DaskRunner"


def _singleton(x: Any) -> list[Any]:
    return [x]


def batch_elements(pcoll, label: str, max_batch_size: int):
    """``beam.BatchElements(min_batch_size=1, max_batch_size=...)`` where the runner keeps
    ``finish_bundle`` outputs; one-element batches where it does not (the results are the same,
    batching only amortises per-call costs)."""
    if drops_finish_bundle_outputs(pcoll.pipeline):
        return pcoll | label >> beam.Map(_singleton)
    return pcoll | label >> beam.BatchElements(min_batch_size=1, max_batch_size=max_batch_size)


class TaggedOutputs(dict):
    """PCollections by tag, also as attributes (``res.docs``, like ``with_outputs``' result)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def tagged_outputs(pcoll, label: str, dofn: beam.DoFn, *tags: str, main: str, side_inputs: tuple = ()) -> TaggedOutputs:
    """``pcoll | label >> ParDo(dofn).with_outputs(*tags, main=main)``, runnable on every runner
    (see :class:`_TagPairs`). Returns the outputs by tag: ``res[main]`` or ``res.<main>``, ``res[tag]``."""
    pairs = pcoll | label >> beam.ParDo(_TagPairs(dofn, main), *side_inputs)
    return TaggedOutputs({t: pairs | f"{label}/{t}" >> beam.FlatMap(_select, t) for t in (main, *tags)})


class Counters:
    """``docs_in``/``docs_out``/``drop:<reason>`` counters for one stage plus the totals.

    Counter objects are created lazily per reason (reasons are open-ended slugs); Beam counters
    are cheap handles, the runner aggregates them across workers.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._drops: dict[str, tuple[Any, Any]] = {}
        self.stage_in = Metrics.counter(f"{NAMESPACE}.{stage}", "docs_in")
        self.stage_out = Metrics.counter(f"{NAMESPACE}.{stage}", "docs_out")

    def drop(self, reason: str, n: int = 1) -> None:
        pair = self._drops.get(reason)
        if pair is None:
            pair = (
                Metrics.counter(f"{NAMESPACE}.{self.stage}", f"drop:{reason}"),
                Metrics.counter(NAMESPACE, f"drop:{reason}"),
            )
            self._drops[reason] = pair
        pair[0].inc(n)
        pair[1].inc(n)


EVENTS = "events"


def event(step: str, reason: str | None, chars_in: int, chars_out: int) -> tuple[str, tuple[str | None, int, int]]:
    """One document's passage through one step, for the stage accounting (see AccountingFn)."""
    return step, (reason, chars_in, chars_out)


StepGroups = list[tuple[str, list[DocumentStep]]]


class StepsDoFn(beam.DoFn):
    """Apply groups of ``DocumentStep`` objects (unchanged, as the local executor runs them)
    to each Document: ``[("annotate", [LangIdStep, QualitySignalsStep]), ("filter", [TierStep])]``.

    Main output: kept (annotated) documents. Tagged ``dropped``: ``(reason, Document)``.
    Tagged ``events``: one ``(group, (reason | None, chars_in, chars_out))`` per group a
    document entered, the input of the per-step funnel in the stage manifest.

    ``factory`` (a picklable zero-argument callable returning the groups) builds the steps on
    the worker instead of the driver; the curate pipeline uses it to copy remote model and
    eval-set files (gs://…) to the worker's disk before the steps are constructed.
    """

    def __init__(self, groups: StepGroups | None = None, factory: Callable[[], StepGroups] | None = None) -> None:
        if (groups is None) == (factory is None):
            raise ValueError("StepsDoFn: pass exactly one of groups or factory")
        self.groups = groups
        self.factory = factory
        self._counters: dict[str, Counters] = {}

    def setup(self) -> None:
        if self.groups is None:
            self.groups = self.factory()
        # DocumentStep.__call__ would set up lazily too; doing it here loads models once per
        # worker before the first bundle, which is what Beam's setup() is for.
        for _, steps in self.groups:
            for step in steps:
                step.ensure_setup()
        self._counters = {name: Counters(name) for name, _ in self.groups}

    def process(self, doc: Document) -> Iterator[Any]:
        if not self._counters:
            self.setup()
        for name, steps in self.groups:
            c = self._counters[name]
            c.stage_in.inc()
            chars_in = doc.n_chars
            result = apply_steps(doc, steps)
            if isinstance(result, Drop):
                c.drop(result.reason)
                yield beam.pvalue.TaggedOutput(EVENTS, event(name, result.reason, chars_in, 0))
                yield beam.pvalue.TaggedOutput(DROPPED, (result.reason, result.doc or doc))
                return
            c.stage_out.inc()
            yield beam.pvalue.TaggedOutput(EVENTS, event(name, None, chars_in, result.n_chars))
            doc = result
        yield doc

    def __getstate__(self) -> dict[str, Any]:
        # Steps pickle only their config (DocumentStep.__getstate__); counters are rebuilt.
        return {"groups": self.groups if self.factory is None else None, "factory": self.factory, "_counters": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def apply_step_groups(pcoll, label: str, groups: StepGroups | None = None, factory=None):
    """``pcoll | ParDo(StepsDoFn)`` → ``(kept, dropped, events)`` PCollections."""
    res = tagged_outputs(pcoll, label, StepsDoFn(groups, factory), DROPPED, EVENTS, main="kept")
    return res.kept, res[DROPPED], res[EVENTS]


class ExtractDoFn(beam.DoFn):
    """``RawRecord`` → Document (main) with ``stepcrawl.extract.extract_record``; drops go to
    ``dropped`` as ``(reason, stub Document)``. Counts ``stepcrawl:docs_in``: every response
    record that enters is accounted for (in = out + Σ drops). Characters are counted as the
    local executor does: payload bytes in, extracted characters out."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._c: Counters | None = None

    def setup(self) -> None:
        self._c = Counters("extract")
        self._in = Metrics.counter(NAMESPACE, "docs_in")

    def process(self, raw: Any) -> Iterator[Any]:
        from stepcrawl.curate import rejected_stub
        from stepcrawl.extract import extract_record

        if self._c is None:
            self.setup()
        self._in.inc()
        self._c.stage_in.inc()
        n_in = len(raw.payload)
        result = extract_record(raw, self.cfg)
        if isinstance(result, Drop):
            self._c.drop(result.reason)
            yield beam.pvalue.TaggedOutput(EVENTS, event("extract", result.reason, n_in, 0))
            yield beam.pvalue.TaggedOutput(DROPPED, (result.reason, result.doc or rejected_stub(raw)))
        else:
            self._c.stage_out.inc()
            yield beam.pvalue.TaggedOutput(EVENTS, event("extract", None, n_in, result.n_chars))
            yield result

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "_c": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class CountOut(beam.DoFn):
    """Pass-through that counts ``stepcrawl:docs_out`` (documents reaching the sink)."""

    def setup(self) -> None:
        self._out = Metrics.counter(NAMESPACE, "docs_out")

    def process(self, doc: Document) -> Iterator[Document]:
        self._out.inc()
        yield doc


# ------------------------------------------------------------------------------ accounting
class AccountingFn(beam.CombineFn):
    """Events ``(reason | None, chars_in, chars_out)`` of one step → its ``Accounting``,
    counted exactly as ``stepcrawl.steps.run_steps`` counts: ``seen(chars_in)``, then
    ``kept(chars_out)`` or ``dropped(reason, chars_in)``."""

    def create_accumulator(self) -> Accounting:
        return Accounting()

    def add_input(self, acc: Accounting, ev: tuple[str | None, int, int]) -> Accounting:
        reason, chars_in, chars_out = ev
        acc.seen(chars_in)
        if reason is None:
            acc.kept(chars_out)
        else:
            acc.dropped(reason, chars_in)
        return acc

    def merge_accumulators(self, accs: Iterable[Accounting]) -> Accounting:
        out = Accounting()
        for a in accs:
            out.merge(a)
        return out

    def extract_output(self, acc: Accounting) -> Accounting:
        return acc

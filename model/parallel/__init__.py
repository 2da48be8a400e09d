"""Parallelism applied *outside* the model definition (torchtitan style).

* ``layout.py`` — ``ParallelLayout`` (pp × dp × cp, EP carved out of dp), its validation
  (clear errors before any process allocates memory) and the one ``DeviceMesh`` a run uses;
* ``expert.py`` — expert parallelism: the routed experts of every MoE layer sharded over the
  ``ep`` mesh dimension, tokens dispatched and combined with ``all_to_all_single``;
* ``pipeline.py`` — pipeline stages over the backbone blocks, ``torch.distributed.pipelining``
  1F1B (with CP, each stage context-parallel over its own CP group);
* ``context.py`` — context parallelism: sequences split across ``cp`` ranks (K/V all-gather for
  full attention, a ``W - 1`` halo from the previous rank for sliding-window layers);
* ``state.py`` — checkpoint adapters so DCP sees expert shards as one global tensor (a run saved
  under one layout resumes under another);
* ``estimate.py`` — the dry run's per-phase activation memory and step-time estimates.

The model files know nothing of this beyond hook points: ``MoE.expert_dispatch``,
``Step35Model.context_parallel`` / ``balance_group`` and ``attend()`` calling a mask's
``gather_kv``.
"""

from model.parallel.layout import LayoutError, ParallelLayout, ParallelMesh, build_mesh, resolve_layout

__all__ = ["LayoutError", "ParallelLayout", "ParallelMesh", "build_mesh", "resolve_layout"]

"""Parallelism applied *outside* the model definition (torchtitan style).

* ``layout.py`` — ``ParallelLayout`` (pp × dp × cp, EP carved out of dp), its validation
  (clear errors before any process allocates memory) and the one ``DeviceMesh`` a run uses;
* ``expert.py`` — expert parallelism: the routed experts of every MoE layer sharded over the
  ``ep`` mesh dimension, tokens dispatched and combined with ``all_to_all_single``;
* ``state.py`` — checkpoint adapters so DCP sees expert shards as one global tensor (a run saved
  under one layout resumes under another).

``model/transformer.py`` and ``model/moe.py`` know nothing of this beyond one hook point
(``MoE.expert_dispatch``).
"""

from model.parallel.layout import LayoutError, ParallelLayout, ParallelMesh, build_mesh, resolve_layout

__all__ = ["LayoutError", "ParallelLayout", "ParallelMesh", "build_mesh", "resolve_layout"]

"""Fault injection for the kill matrix (tests/test_kill_matrix.py): die by SIGKILL at a named point.

Long jobs call :func:`kill_point` at a few well-named places (a unit written but not yet marked
done, a checkpoint's files written but not yet COMPLETE, a phase switch, …). When the environment
variable ``STEPCRAWL_KILL_AT`` names that point, the process kills itself with SIGKILL — no
``finally``, no ``atexit``, exactly what the OOM killer or a preempted node does — so a test can
kill a job at a precise moment instead of polling for files on a loaded machine (racy).

``STEPCRAWL_KILL_AT=NAME`` kills at the first hit of ``NAME``; ``NAME:N`` at the N-th hit (counted
per process: a worker process counts its own hits). The variable is read once, at import; unset,
:func:`kill_point` is one comparison of a module global.

Points (grep ``kill_point(`` for the places):

* ``filter.unit-written``, ``decontam.unit-written``: a curate work unit's shards written, its
  manifest (the done marker) not yet;
* ``dedup.planned``: duplicates decided, nothing written; ``cluster.model-saved``: k-means fitted
  and saved, documents not yet assigned; ``curate.published``: the corpus shards published, the
  curate manifest not yet;
* ``ingest.record``: after each record an ingest stage consumed;
* ``tokenize.shard-written``: a shard's files in place, its ``.done.json`` not yet;
  ``tokenize.document``: after each document of a shard (its files still under temporary names);
* ``build-mix.phase-packed``: a phase complete in its temporary folder, not yet renamed;
* ``train.mid-step``: gradients computed, optimizer step not taken; ``train.phase-switch``: the
  first step of a later phase, before its schedule is applied; ``checkpoint.files-written``:
  every file and checksum list of a checkpoint written, before ``COMPLETE`` and the rename.
"""

from __future__ import annotations

import os
import signal

ENV = "STEPCRAWL_KILL_AT"


def _parse(value: str | None) -> tuple[str | None, int]:
    """``"NAME"`` → (NAME, 1); ``"NAME:N"`` → (NAME, N); unset/empty → (None, 0)."""
    if not value:
        return None, 0
    name, sep, nth = value.rpartition(":")
    if sep and nth.isdigit() and name:
        return name, max(1, int(nth))
    return value, 1


_TARGET, _NTH = _parse(os.environ.get(ENV))
_hits = 0


def kill_point(name: str) -> None:
    """SIGKILL this process if ``STEPCRAWL_KILL_AT`` names this point (and this is its N-th hit)."""
    global _hits
    if name != _TARGET:
        return
    _hits += 1
    if _hits >= _NTH:
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV", "kill_point"]

"""Which member of a duplicate cluster is kept (the documented, deterministic survivor rule).

Rule: the best quality tier (``High`` first; no tier ranks last), then the longest text
(``n_chars``), then the smallest ``id`` (string order). Every executor (local, Beam) uses
this function, so a cluster keeps the same document however the work was split.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from stepcrawl.document import tier_rank


def _field(member: Any, name: str) -> Any:
    if isinstance(member, Mapping):
        return member.get(name)
    return getattr(member, name)


def survivor_key(member: Any) -> tuple[int, int, str]:
    """Sort key of a member (Document, mapping or object with ``id``/``tier``/``n_chars``):
    the smallest key survives."""
    n_chars = _field(member, "n_chars")
    if n_chars is None or n_chars < 0:
        n_chars = len(_field(member, "text") or "")
    return (tier_rank(_field(member, "tier")), -int(n_chars), str(_field(member, "id")))


def choose_survivor(members: Iterable[Any]) -> str:
    """The id of the member that a duplicate cluster keeps (see the module docstring)."""
    best = min(members, key=survivor_key, default=None)
    if best is None:
        raise ValueError("choose_survivor: empty cluster")
    return str(_field(best, "id"))

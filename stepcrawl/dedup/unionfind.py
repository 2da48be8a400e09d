"""Union-find (disjoint sets) for near-duplicate clusters.

Hand-written because it is twenty lines and no maintained library offers a small, picklable,
generic one; path halving + union by size keep every operation near O(1).
"""

from __future__ import annotations

from typing import Hashable, Iterable


class UnionFind:
    """Disjoint sets over hashable items (ints for the local executor, doc ids elsewhere)."""

    def __init__(self, items: Iterable[Hashable] = ()) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._size: dict[Hashable, int] = {}
        for x in items:
            self.add(x)

    def add(self, x: Hashable) -> None:
        if x not in self._parent:
            self._parent[x] = x
            self._size[x] = 1

    def __contains__(self, x: Hashable) -> bool:
        return x in self._parent

    def __len__(self) -> int:
        return len(self._parent)

    def find(self, x: Hashable) -> Hashable:
        self.add(x)
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    def union(self, a: Hashable, b: Hashable) -> Hashable:
        """Merge the sets of ``a`` and ``b``; returns the new root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size.pop(rb)
        return ra

    def connected(self, a: Hashable, b: Hashable) -> bool:
        return self.find(a) == self.find(b)

    def size(self, x: Hashable) -> int:
        return self._size[self.find(x)]

    def components(self) -> list[list[Hashable]]:
        """Every set as a list, members in insertion order; sets ordered by first member."""
        groups: dict[Hashable, list[Hashable]] = {}
        for x in self._parent:
            groups.setdefault(self.find(x), []).append(x)
        return list(groups.values())

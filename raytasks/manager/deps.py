"""Dependencies: which waiting tasks wait for which others (memory only, rebuilt on start).

Every PENDING or RUNNING task that names dependencies keeps them referenced until it
ends, finished or not: a parent a live task refers to is neither deleted nor pruned,
so a restart never finds a child whose parent vanished.
"""

from __future__ import annotations


class Dependencies:
    def __init__(self) -> None:
        self._waits: dict[str, set[str]] = {}     # child -> parents not yet completed
        self._refs: dict[str, set[str]] = {}      # child -> every parent it names
        self._children: dict[str, set[str]] = {}  # parent -> live children naming it

    def block(self, child: str, parents: set[str], waiting: set[str]) -> None:
        """``child`` names ``parents`` and may start once those ``waiting`` completed."""
        if not parents:
            return
        self._refs[child] = set(parents)
        for parent in parents:
            self._children.setdefault(parent, set()).add(child)
        if waiting:
            self._waits[child] = set(waiting)

    def blocked(self, child: str) -> bool:
        return bool(self._waits.get(child))

    def waiting_for(self, child: str) -> list[str]:
        """The parents ``child`` still waits for (not completed yet)."""
        return sorted(self._waits.get(child, ()))

    def has_dependents(self, parent: str) -> bool:
        """Whether a live task names ``parent`` (then it must stay in the store)."""
        return bool(self._children.get(parent))

    def completed(self, parent: str) -> list[str]:
        """``parent`` completed: the children it released (no longer blocked), in order."""
        released = []
        for child in sorted(self._children.get(parent, ())):
            waits = self._waits.get(child)
            if waits is None or parent not in waits:
                continue
            waits.discard(parent)
            if not waits:
                del self._waits[child]
                released.append(child)
        return released

    def ended(self, parent: str) -> list[str]:
        """``parent`` failed or was cancelled: the children still waiting on it."""
        return sorted(c for c in self._children.get(parent, ())
                      if parent in self._waits.get(c, ()))

    def forget(self, child: str) -> None:
        """``child`` ended: it no longer waits for, or keeps, its parents."""
        self._waits.pop(child, None)
        for parent in self._refs.pop(child, ()):
            children = self._children.get(parent)
            if children is not None:
                children.discard(child)
                if not children:
                    del self._children[parent]

"""Dependencies: which waiting tasks wait for which others (memory only, rebuilt on start)."""

from __future__ import annotations


class Dependencies:
    def __init__(self) -> None:
        self._blocked_on: dict[str, set[str]] = {}
        self._dependents: dict[str, set[str]] = {}

    def block(self, child: str, parents: set[str]) -> None:
        """``child`` may start only once every one of ``parents`` completed."""
        if not parents:
            return
        self._blocked_on[child] = set(parents)
        for parent in parents:
            self._dependents.setdefault(parent, set()).add(child)

    def blocked(self, child: str) -> bool:
        return bool(self._blocked_on.get(child))

    def has_dependents(self, parent: str) -> bool:
        return bool(self._dependents.get(parent))

    def completed(self, parent: str) -> list[str]:
        """``parent`` completed: the children it released (no longer blocked), in order."""
        released = []
        for child in sorted(self._dependents.pop(parent, set())):
            waits = self._blocked_on.get(child)
            if waits is None:
                continue
            waits.discard(parent)
            if not waits:
                del self._blocked_on[child]
                released.append(child)
        return released

    def ended(self, parent: str) -> list[str]:
        """``parent`` failed or was cancelled: the children that can now never run."""
        return sorted(self._dependents.pop(parent, set()))

    def forget(self, child: str) -> None:
        """``child`` ended itself: stop tracking what it waited for."""
        for parent in self._blocked_on.pop(child, set()):
            children = self._dependents.get(parent)
            if children is not None:
                children.discard(child)
                if not children:
                    del self._dependents[parent]

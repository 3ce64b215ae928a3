"""The TaskManager: the single source of truth, composed of small parts (see ``core``)."""

from .core import TaskManagerCore

__all__ = ["TaskManagerCore"]

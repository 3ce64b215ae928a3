"""The TaskManager: the one authority over tasks, composed of small parts (see ``core``)."""

from .core import TaskManagerCore

__all__ = ["TaskManagerCore"]

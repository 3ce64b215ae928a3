"""Built-in task families and their parameter models."""

from .builtin import BUILTIN_TYPES

__all__ = ["BUILTIN_TYPES"]

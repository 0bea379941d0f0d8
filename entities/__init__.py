"""Durable entities: small pieces of state, addressed by name and key, changed one operation at a time."""

# Importing each module runs its decorators, which is what puts its entity on `bp`.
from . import counter  # noqa: F401
from .blueprint import bp

__all__ = ["bp"]

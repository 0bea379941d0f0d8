"""Activity functions: the units of real work (I/O, computation) that orchestrators schedule.

Activities run at least once: after a crash an activity may run again, so make them idempotent.
"""

# Importing each module runs its decorators, which is what puts its activities on `bp`.
from . import flaky, greetings, monitoring, work  # noqa: F401
from .blueprint import bp

__all__ = ["bp"]

"""Small statistics helpers shared by the benchmarks and their DBOS twins."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct``-th percentile of ``samples`` (p99 of 100 samples is the 99th smallest)."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]

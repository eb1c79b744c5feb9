"""The one timing loop every variant runs (on this machine and on devices alike)."""
from __future__ import annotations

import time


def time_calls(run, image, count: int) -> list[float]:
    """Milliseconds of `count` consecutive calls of run(image); nothing else inside the clock."""
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        run(image)
        samples.append((clock() - start) * 1000.0)
    return samples

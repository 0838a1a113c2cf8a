"""Fixed histogram buckets for task runtimes and waits, and the percentiles read from them.

One set of bounds for every histogram the project keeps (the monitor's rollups, the analytics
pages, the Prometheus `celery_task_runtime_seconds` / `celery_task_wait_seconds` series), so
rollups of any period add up bucket by bucket and a percentile means the same everywhere.

The 22 upper bounds run from 1 ms to 1 hour, log-spaced in a 1-2.5-5 pattern up to 10 s and
then on round minutes (15 s, 30 s, 1, 2, 5, 10, 15, 30, 60 min), where operators read task
times; a 23rd bucket holds what took longer than an hour. A percentile is interpolated linearly
inside its bucket, as Prometheus' histogram_quantile does, so it is exact to within one bucket.
"""

from bisect import bisect_left
from collections.abc import Iterable, Sequence

BOUNDS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
)
SIZE = len(BOUNDS) + 1  # the last bucket: longer than an hour


def empty() -> list[int]:
    return [0] * SIZE


def bucket_of(seconds: float) -> int:
    """The index of the bucket that counts `seconds` (upper bounds are inclusive, as in Prometheus)."""
    return bisect_left(BOUNDS, max(0.0, seconds))


def add(total: list[int], counts: Sequence[int]) -> list[int]:
    """Add `counts` into `total` in place (a stored list of another length is padded or cut)."""
    for index, count in enumerate(counts[:SIZE]):
        total[index] += int(count)
    return total


def merged(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = empty()
    for counts in histograms:
        add(total, counts)
    return total


def percentile(counts: Sequence[int], fraction: float) -> float | None:
    """The `fraction` (0..1) percentile of what `counts` counted, in seconds; None when empty.
    Past the last bound the answer is the last bound (as Prometheus does for +Inf)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[index - 1] if index else 0.0
            return lower + (BOUNDS[index] - lower) * max(0.0, rank - seen) / count
        seen += count
    return BOUNDS[-1]


def cumulative(counts: Sequence[int]) -> list[int]:
    """Counts at or below each bound and the total (Prometheus' `le` buckets, +Inf last)."""
    running, out = 0, []
    for count in counts:
        running += int(count)
        out.append(running)
    return out

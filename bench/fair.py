"""The fair comparison every bench uses (issue 16, DESIGN §7): the service's path against the
simplest fast way to do the same work, measured in the same run, alternated, round by round.

A bench gives two callables, `ours` and `baseline`, each doing one round of the same work and
returning its figure (higher is better for throughput: `higher_is_better=True`; lower for a
latency or CPU cost). `compare()` runs them alternately (ours first in even rounds, the baseline
first in odd ones, so neither always gets the warm cache), at least five rounds, and reports the
median of the per-round ratios ours/baseline (inverted for lower-is-better figures, so a ratio
above 1 always means ours did better) and their spread (min–max). The verdict against the target
is refused when the machine's load exceeded its cores at any point of the comparison: a busy
neighbour makes one side slower than the other by chance. "Load" is read between rounds as the
processes ready to run besides the bench (whose own servers are idle then), not the 1-minute
load average, which would count the bench's own work.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MIN_ROUNDS = 5


def runnable_elsewhere(samples: int = 5, pause: float = 0.1) -> float:
    """Processes ready to run besides this one, the median of a few samples of the kernel's
    instantaneous count. Taken between rounds, when the bench's own servers and clients are
    idle, it counts the neighbours only: the 1-minute load average would count the bench."""
    counts = []
    for n in range(samples):
        if n:
            time.sleep(pause)
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        counts.append(max(running - 1, 0))
    return float(statistics.median(counts))


def load_ok() -> tuple[bool, float]:
    """(is the machine quiet enough for a verdict, the neighbours' runnable processes)."""
    busy = runnable_elsewhere()
    return busy <= (os.cpu_count() or 1), busy


@dataclass
class Comparison:
    name: str
    unit: str
    higher_is_better: bool
    target: float | None  # the verdict holds when the median ratio ≥ target (None: no target)
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    max_load: float = 0.0
    quiet: bool = True

    @property
    def ratios(self) -> list[float]:
        pairs = zip(self.ours, self.baseline, strict=True)
        if self.higher_is_better:
            return [o / b if b else 0.0 for o, b in pairs]
        return [b / o if o else 0.0 for o, b in pairs]

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "no target (information)"
        if not self.quiet:
            return (
                f"no verdict ({self.max_load:.0f} other processes ready to run between rounds > "
                f"{os.cpu_count()} cores: rerun quiet)"
            )
        return "ok" if self.median_ratio >= self.target else "MISSED"

    def report(self) -> str:
        ratios = self.ratios
        return (
            f"{self.name}: ours {statistics.median(self.ours):.2f} {self.unit}, "
            f"baseline {statistics.median(self.baseline):.2f} {self.unit} (medians); "
            f"ratio median {self.median_ratio:.2f} (spread {min(ratios):.2f}–{max(ratios):.2f}, "
            f"{len(ratios)} rounds), "
            + (f"target ≥ {self.target:.2f}: " if self.target is not None else "")
            + self.verdict
        )


def compare(
    name: str,
    ours: Callable[[], float],
    baseline: Callable[[], float],
    *,
    unit: str,
    target: float | None,
    higher_is_better: bool,
    rounds: int = MIN_ROUNDS,
) -> Comparison:
    """Alternate `ours` and `baseline` for `rounds` (≥ 5) rounds; see the module docstring."""
    result = Comparison(name, unit, higher_is_better, target)
    for round_no in range(max(rounds, MIN_ROUNDS)):
        order = (ours, baseline) if round_no % 2 == 0 else (baseline, ours)
        figures = {}
        for side in order:
            quiet, load = load_ok()
            result.quiet = result.quiet and quiet
            result.max_load = max(result.max_load, load)
            figures[side] = side()
        result.ours.append(figures[ours])
        result.baseline.append(figures[baseline])
    quiet, load = load_ok()
    result.quiet = result.quiet and quiet
    result.max_load = max(result.max_load, load)
    return result


def print_summary(comparisons: list[Comparison]) -> int:
    """Print every comparison; the exit status is 1 when a verdict was MISSED (0 otherwise)."""
    print("\nFair comparisons (ratio > 1: ours did better than the baseline)")
    for comparison in comparisons:
        print("  " + comparison.report())
    return 1 if any(c.verdict == "MISSED" for c in comparisons) else 0


if __name__ == "__main__":
    print("bench/fair.py: the shared comparison, nothing to measure")

"""Intervals and verdicts for the studies: a claim "holds" only when its interval excludes the opposite.

Two sources of noise, two intervals (both 95%):
- over seeds (training randomness): the mean of n ≥ 2 runs of one cell ± Student's t with n − 1 degrees of
  freedom times the standard error;
- over evaluation examples (a single run, or a method that trains nothing): a percentile bootstrap of the
  per-example scores (1 correct, 0 wrong), resampling examples with replacement.

A difference between two cells is the difference of their means. With seeds on both sides its interval is
Welch's (unequal variances); otherwise, when both were scored on the same examples, it is a paired bootstrap
over examples (each resample draws the same examples for both, so the shared difficulty of an example
cancels). Verdicts compare the interval with 0: above → holds, below → contradicted, across →
inconclusive. The bootstrap uses a fixed seed, so the report is the same every time it is built.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95% quantiles of Student's t by degrees of freedom (no scipy dependency for one table).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 60: 2.000, 120: 1.980}
Z975 = 1.960
BOOTSTRAP_RESAMPLES = 2000
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


def t_quantile(df: float) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (table value at the next smaller tabled
    df, so the interval is never narrower than the exact one; the normal quantile past 120)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df > 120:
        return Z975
    return T975[max(k for k in T975 if k <= df)]


@dataclass(frozen=True)
class Interval:
    """An estimate and its 95% interval; `n` is what it was computed over, `how` says over what."""

    mean: float
    low: float
    high: float
    n: int
    how: str  # "seeds", "bootstrap", or "single" (one value, no interval)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def over_seeds(values: Sequence[float]) -> Interval:
    """Mean ± t·s/√n over the runs of one cell (n ≥ 2); one value gives a zero-width 'single' interval."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    m = sum(values) / n
    if n == 1:
        return Interval(m, m, m, 1, "single")
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    h = t_quantile(n - 1) * s / math.sqrt(n)
    return Interval(m, m - h, m + h, n, "seeds")


def _percentiles(stats: list[float]) -> tuple[float, float]:
    stats.sort()
    k = len(stats)
    return stats[int(0.025 * (k - 1))], stats[int(math.ceil(0.975 * (k - 1)))]


def bootstrap(scores: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Interval:
    """Percentile bootstrap of the mean of per-example scores (one run on n examples)."""
    n = len(scores)
    if n == 0:
        raise ValueError("no per-example scores")
    rng = random.Random(seed)
    means = [sum(scores[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    low, high = _percentiles(means)
    return Interval(sum(scores) / n, low, high, n, "bootstrap")


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> Interval:
    """Interval of mean(a) − mean(b) for two methods scored on the same n examples, in the same order."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired scores need equal, non-zero lengths (got {len(a)} and {len(b)})")
    return bootstrap([x - y for x, y in zip(a, b, strict=True)], resamples, seed)


def welch(a: Sequence[float], b: Sequence[float]) -> Interval:
    """Interval of mean(a) − mean(b) over seeds (≥ 2 each), Welch–Satterthwaite degrees of freedom."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError(f"Welch's interval needs >= 2 values a side (got {na} and {nb})")
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    d = ma - mb
    if se == 0:
        return Interval(d, d, d, min(na, nb), "seeds")
    df = (va + vb) ** 2 / ((va**2) / (na - 1) + (vb**2) / (nb - 1))
    h = t_quantile(df) * se
    return Interval(d, d - h, d + h, min(na, nb), "seeds")


@dataclass(frozen=True)
class Cell:
    """The runs of one configuration on one task: their main metric (one per seed) and, when every run was
    scored on the same examples, each run's per-example scores (for bootstraps and paired differences)."""

    values: tuple[float, ...]
    per_example: tuple[tuple[float, ...], ...] = ()

    @property
    def interval(self) -> Interval:
        """Over seeds when there are ≥ 2 runs; a bootstrap over examples for one run that has them."""
        if len(self.values) >= 2:
            return over_seeds(self.values)
        if self.per_example:
            return bootstrap(self.per_example[0])
        return over_seeds(self.values)

    def mean_scores(self) -> tuple[float, ...] | None:
        """Per-example scores averaged over the runs (None when a run has none or their examples differ)."""
        rows = self.per_example
        if not rows or len(rows) != len(self.values) or len({len(r) for r in rows}) != 1:
            return None
        return tuple(sum(col) / len(rows) for col in zip(*rows, strict=True))


def difference(a: Cell, b: Cell) -> Interval:
    """Interval of a − b: Welch's when both sides have ≥ 2 seeds, else a paired bootstrap over the shared
    examples (each side's per-example scores averaged over its runs), else a zero-width single value."""
    if len(a.values) >= 2 and len(b.values) >= 2:
        return welch(a.values, b.values)
    sa, sb = a.mean_scores(), b.mean_scores()
    if sa is not None and sb is not None and len(sa) == len(sb):
        return paired_bootstrap(sa, sb)
    d = sum(a.values) / len(a.values) - sum(b.values) / len(b.values)
    return Interval(d, d, d, 1, "single")


def verdict(diff: Interval) -> str:
    """`holds` when the whole interval of (claimed better − other) is above 0, `contradicted` when it is
    wholly below 0, otherwise `inconclusive`. A single value without an interval is always inconclusive:
    nothing says it would repeat."""
    if diff.how == "single":
        return INCONCLUSIVE
    if diff.low > 0:
        return HOLDS
    if diff.high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


CLAIM_RULE = ("per task, the 95% interval of the difference decides: holds when it excludes the opposite, "
              "contradicted when it lies wholly on the opposite side, else inconclusive; the claim holds when "
              "it holds on ≥ 2 informative tasks and is contradicted on none, is contradicted when that is "
              "true the other way round, is mixed when both occur, and is inconclusive otherwise")


def claim_verdict(per_task: Sequence[str]) -> str:
    """Combine per-task verdicts (over informative tasks only) into the claim's (see CLAIM_RULE)."""
    holds, against = per_task.count(HOLDS), per_task.count(CONTRADICTED)
    if holds and against:
        return "mixed"
    if holds >= 2:
        return HOLDS
    if against >= 2:
        return CONTRADICTED
    return INCONCLUSIVE

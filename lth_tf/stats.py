"""Differences over seeds, tested: the seed is the unit of replication.

Rounds of one run are not independent draws (they share the seed's
initialisation, data order and masks), so a difference between two
branches or two setups is first reduced to one number per seed (a mean over
the rounds in a band where there are several), and those numbers are tested
against zero with a two-sided Student t test (paired wherever the two sides
share a seed). With 3 seeds the t distribution has 2 degrees of freedom: a
mean difference needs to be 4.3 standard errors from zero to reach p < 0.05.
"""
import dataclasses

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # the level at which a verdict says yes or no
TEST = ("two-sided one-sample t test over seeds of the per-seed differences (paired: both sides share each seed), "
        f"95% confidence interval; a verdict says yes or no at p < {ALPHA:g}")


@dataclasses.dataclass(frozen=True)
class Difference:
    """The mean of per-seed differences (in the caller's unit), its 95% confidence interval and the t test's
    two-sided p-value; interval and p are None with one seed."""
    n: int
    mean: float
    low: float | None
    high: float | None
    p: float | None

    def verdict(self, yes="yes", no="no", undecided="not shown") -> str:
        if self.p is None or self.p >= ALPHA:
            return undecided
        return yes if self.mean > 0 else no

    def text(self, digits=1) -> str:
        """'+2.6, 95% CI [+0.4, +4.8], p = 0.04, 3 seeds' (or '+2.6, 1 seed')."""
        if self.p is None:
            return f"{self.mean:+.{digits}f}, {self.n} seed{'s' * (self.n != 1)}"
        return (f"{self.mean:+.{digits}f}, 95% CI [{self.low:+.{digits}f}, {self.high:+.{digits}f}], "
                f"{p_text(self.p)}, {self.n} seeds")


def p_text(p: float) -> str:
    """'p = 0.031', or 'p < 0.001'."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def difference(per_seed) -> Difference | None:
    """Tests the per-seed differences (NaN: a seed without both sides, left out) against zero; None if none."""
    d = np.asarray([x for x in per_seed if x is not None], float)
    d = d[~np.isnan(d)]
    if not d.size:
        return None
    mean = float(d.mean())
    if d.size == 1:
        return Difference(1, mean, None, None, None)
    error = float(d.std(ddof=1) / np.sqrt(d.size))
    if error == 0:  # every seed gave the same difference: no spread to test against
        return Difference(int(d.size), mean, mean, mean, 1.0 if mean == 0 else 0.0)
    half = float(scipy_stats.t.ppf(1 - ALPHA / 2, d.size - 1)) * error
    p = float(2 * scipy_stats.t.sf(abs(mean) / error, d.size - 1))
    return Difference(int(d.size), mean, mean - half, mean + half, p)

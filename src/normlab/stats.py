"""Small-sample statistics for seed-to-seed comparisons: normlab's rules on top of SciPy.

SciPy (:mod:`scipy.stats`) does all the distribution work. This module owns only what SciPy does
not decide for us:

* :func:`describe`: the ``{mean, std, n, values}`` summary written to summary.json.
* :func:`mean_ci`: mean of a few values and its t interval (``ttest_1samp``), returned as a
  :class:`MeanCI`; one value gives no interval (``.available`` is False).
* :func:`welch`: Welch's unequal-variance t-test (``ttest_ind(equal_var=False)``) for a
  difference of two means, with normlab's edge cases (fewer than two values: no inference;
  zero variance, where SciPy returns nan: the exact permutation test instead,
  :func:`exact_permutation_p`, in closed form).
* :func:`paired`: the paired t-test (``ttest_rel``) of runs that share a seed, with the same
  edge cases and the smallest true difference it detects (:func:`min_detectable`, noncentral
  t, with :data:`POWER` at :data:`ALPHA`); :func:`mcnemar_exact`: the exact McNemar test on
  discordant counts (``binomtest``); :func:`holm`: Holm's step-down adjustment of several
  p-values.
"""

from __future__ import annotations

import math
import statistics
import warnings
from typing import Sequence

from scipy.optimize import brentq
from scipy.stats import binomtest, nct, ttest_1samp, ttest_ind, ttest_rel
from scipy.stats import t as student_t

ALPHA = 0.05   # level of every test normlab reports, and of its detectable difference
POWER = 0.8    # power of the detectable difference
# Paired differences whose sd is at most this are equal: equal accuracies subtracted from
# different values differ in their last bits (99.41 - 99.38 != 99.44 - 99.41 in floats).
NO_SPREAD = 1e-9


# ----------------------------------------------------------------------------------------------
# Summaries, confidence intervals and Welch's test


def describe(values: list[float]) -> dict:
    """``{"mean", "std", "n", "values"}`` of ``values`` as summary.json stores them.

    Sample standard deviation (n - 1); one value has std 0.0, no values have mean and std None.
    ``values`` is returned as given. statistics.fmean/stdev are kept (not numpy or fsum) so that
    summary.json stays byte-identical to earlier versions.
    """
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    return {"mean": mean, "std": std, "n": len(values), "values": values}


class MeanCI(tuple):
    """``(mean, lo, hi)``, also as attributes, with ``n`` and ``available``.

    ``available`` is False when no interval can be computed (a single value): then
    ``lo == hi == mean`` and the interval must not be shown as one.
    """

    def __new__(cls, mean: float, lo: float, hi: float, n: int, level: float):
        obj = super().__new__(cls, (mean, lo, hi))
        obj.n = n
        obj.level = level
        return obj

    mean = property(lambda self: self[0])
    lo = property(lambda self: self[1])
    hi = property(lambda self: self[2])

    @property
    def available(self) -> bool:
        return self.n >= 2

    def __repr__(self) -> str:
        return (f"MeanCI(mean={self.mean!r}, lo={self.lo!r}, hi={self.hi!r}, n={self.n}, "
                f"level={self.level})")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level!r}")


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean of ``values`` and its Student-t confidence interval at ``level``
    (``scipy.stats.ttest_1samp(...).confidence_interval``).

    Returns a :class:`MeanCI` (unpacks as ``mean, lo, hi``). With one value there is no interval:
    ``lo == hi == mean`` and ``.available`` is False. Zero variance gives a zero-width interval
    (SciPy's would be nan). With no values, ValueError.
    """
    _check_level(level)
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(xs) / n
    if n == 1 or statistics.variance(xs) == 0.0:
        return MeanCI(mean, mean, mean, n, level)
    ci = ttest_1samp(xs, 0.0).confidence_interval(level)
    return MeanCI(mean, float(ci.low), float(ci.high), n, level)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Welch's t-test for ``mean(a) - mean(b)`` (``scipy.stats.ttest_ind(equal_var=False)``).

    Returns ``dict(diff, ci_lo, ci_hi, t, df, p, se, n_a, n_b)``: the difference of means, its
    confidence interval at ``level`` (95% by default) with Welch–Satterthwaite degrees of freedom,
    the t statistic and the two-sided p-value. With fewer than two values in either group, no
    inference is possible: ``ci_lo``, ``ci_hi``, ``t``, ``df``, ``p`` and ``se`` are None.

    Zero variance in both groups (every run of each group scored the same; SciPy gives nan):
    the t-test has no answer, so ``p`` is that of the exact permutation test of the difference
    of means (:func:`exact_permutation_p`), and the interval, t, df and se are None. A t-test
    would call any such difference certain (p = 0), yet accuracies move in steps of one test
    image, and a few runs agree by chance.
    """
    _check_level(level)
    xa, xb = [float(v) for v in a], [float(v) for v in b]
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        raise ValueError("welch needs at least one value in each group")
    diff = math.fsum(xa) / na - math.fsum(xb) / nb
    out = {"diff": diff, "ci_lo": None, "ci_hi": None, "t": None, "df": None, "p": None,
           "se": None, "n_a": na, "n_b": nb}
    if na < 2 or nb < 2:
        return out
    se2 = statistics.variance(xa) / na + statistics.variance(xb) / nb
    if se2 == 0.0:
        out.update(p=exact_permutation_p(xa, xb, paired=False))
        return out
    with warnings.catch_warnings():
        # One constant group (several seeds with equal accuracy) makes SciPy warn of "catastrophic
        # cancellation": its variance is exactly 0, and the test stays correct.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ttest_ind(xa, xb, equal_var=False)
        ci = res.confidence_interval(level)
    out.update(ci_lo=float(ci.low), ci_hi=float(ci.high), t=float(res.statistic),
               df=float(res.df), p=float(res.pvalue), se=math.sqrt(se2))
    return out


# ----------------------------------------------------------------------------------------------
# Paired comparisons: runs with the same seed share data order and augmentation


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """The paired t-test of ``a[i] - b[i]`` (``scipy.stats.ttest_rel``): runs with the same seed
    paired across two variants. Returns ``dict(diff, ci_lo, ci_hi, t, df, p, sd, n, detectable)``:
    the mean difference, its confidence interval at ``level``, the sample sd of the differences
    and the smallest true difference the test detects with :data:`POWER` at :data:`ALPHA`
    (:func:`min_detectable`). Fewer than two pairs: no inference (None). Differences all equal
    (``sd`` 0, or at most :data:`NO_SPREAD`): the t-test has no answer, so ``p`` is that of
    the exact sign-flip test (:func:`exact_permutation_p`: 1 for a zero difference, else
    2 / 2**n), and the interval, t, df and detectable are None."""
    _check_level(level)
    if len(a) != len(b) or not a:
        raise ValueError(f"paired needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    n = len(d)
    diff = math.fsum(d) / n
    out = {"diff": diff, "ci_lo": None, "ci_hi": None, "t": None, "df": None, "p": None,
           "sd": None, "n": n, "detectable": None}
    if n < 2:
        return out
    sd = statistics.stdev(d)
    if sd <= NO_SPREAD:
        out.update(sd=0.0, p=exact_permutation_p(a, b, paired=True))
        return out
    res = ttest_rel([float(x) for x in a], [float(y) for y in b])
    ci = res.confidence_interval(level)
    out.update(ci_lo=float(ci.low), ci_hi=float(ci.high), t=float(res.statistic),
               df=float(res.df), p=float(res.pvalue), sd=sd, detectable=min_detectable(sd, n))
    return out


def exact_permutation_p(a: Sequence[float], b: Sequence[float], paired: bool) -> float:
    """Two-sided p of the exact permutation test of ``mean(a) - mean(b)`` for data without
    spread, where the t-test has no answer: ``paired`` differences that are all equal (a
    sign-flip test), or two groups that are each constant (the runs dealt anew to the groups).

    Only the observed arrangement and its mirror are as extreme, so p is 2 / 2**n for n pairs
    and 2 / C(n_a + n_b, n_a) for two groups (1 for a zero difference), what
    ``scipy.stats.permutation_test`` returns on such data. Written in closed form because SciPy
    lists every permutation: 2**20 of them for 20 seeds took 1.3 GB."""
    diff = math.fsum(a) / len(a) - math.fsum(b) / len(b)
    if abs(diff) <= NO_SPREAD:
        return 1.0
    arrangements = 2 ** len(a) if paired else math.comb(len(a) + len(b), len(a))
    return min(1.0, 2.0 / arrangements)


def min_detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference that a two-sided paired t-test at ``alpha`` on ``n``
    pairs with differences of spread ``sd`` detects with probability ``power``: the exact
    noncentral-t answer (``scipy.stats.nct``), solved for the effect with ``scipy.optimize``.
    None with fewer than two pairs, and when ``sd`` is 0 (no t-test: see :func:`paired`)."""
    if n < 2 or sd == 0:
        return None
    df = n - 1
    crit = float(student_t.ppf(1 - alpha / 2, df))

    def shortfall(effect: float) -> float:
        ncp = effect * math.sqrt(n) / sd
        # The lower tail P(T <= -crit) as P(T >= crit) at -ncp: SciPy's nct.cdf returns nan
        # far out in that tail (SciPy 1.17, e.g. df = 1, ncp = 11.3).
        return float(nct.sf(crit, df, ncp) + nct.sf(crit, df, -ncp)) - power

    hi = sd
    while shortfall(hi) < 0:
        hi *= 2
    return float(brentq(shortfall, 0.0, hi, xtol=1e-12 * max(1.0, hi)))


def detectable_after_holm(tests: Sequence[tuple[float | None, int]]) -> list[float | None]:
    """For each paired test ``(sd of its differences, number of pairs)`` of one Holm family (sd
    None: no test), the smallest true difference it detects with :data:`POWER` once Holm's
    adjustment over the m tests is applied: :func:`min_detectable` at ALPHA / m, the strictest
    level Holm uses, so that size is found whatever the test's rank. With one test, ALPHA. A
    test whose differences have no spread (sd 0, an exact test instead) counts in m and has
    none (None)."""
    m = sum(sd is not None for sd, _ in tests)
    return [None if sd is None else min_detectable(sd, n, ALPHA / m) for sd, n in tests]


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar test on ``b`` images only the first model got right and ``c``
    only the second got right (``scipy.stats.binomtest(b, b + c, 0.5)``); 1.0 when b + c = 0."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of ``pvalues`` (family-wise error control), in the order
    given. A None (a comparison without a test, e.g. one pair) stays None and does not count
    in the family. Hand-written: SciPy offers only false-discovery-rate control
    (``false_discovery_control``), and Holm is four lines."""
    tested = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


__all__ = ["ALPHA", "POWER", "MeanCI", "describe", "detectable_after_holm",
           "exact_permutation_p", "holm",
           "mcnemar_exact", "mean_ci",
           "min_detectable", "paired", "welch"]

"""Small-sample statistics for seed-to-seed comparisons, without SciPy.

* :func:`t_cdf`, :func:`t_sf`, :func:`t_ppf`: Student's t distribution for any real ``df > 0``,
  through the regularized incomplete beta function (continued fraction, as in Numerical Recipes).
* :func:`mean_ci`: mean of a few values and its t-based confidence interval.
* :func:`welch`: Welch's unequal-variance t-test for a difference of two means, with its
  confidence interval (Welch–Satterthwaite degrees of freedom) and two-sided p-value.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

_EPS = 1e-15        # relative accuracy of the continued fraction
_TINY = 1e-300      # guards divisions by zero in Lentz's method
_MAXIT = 10_000     # continued-fraction terms; convergence needs ~O(sqrt(a + b)) of them


# ----------------------------------------------------------------------------------------------
# Regularized incomplete beta and Student's t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), NR eq. 6.4.5."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _TINY:
        d = _TINY
    d = 1.0 / d
    h = d
    for m in range(1, _MAXIT + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _TINY if abs(d) < _TINY else d
        c = 1.0 + aa / c
        c = _TINY if abs(c) < _TINY else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(
        f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})"
    )


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a > 0 and b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got x={x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); otherwise use the
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a).
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _check_df(df: float) -> None:
    if not (isinstance(df, (int, float)) and df > 0 and not math.isnan(df)):
        raise ValueError(f"degrees of freedom must be > 0, got {df!r}")


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with ``df`` degrees of freedom."""
    _check_df(df)
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    if math.isinf(df):
        return math.erfc(abs(t) / math.sqrt(2.0))
    # P(|T| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2), computed directly so tiny p-values stay exact.
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_sf(t: float, df: float) -> float:
    """Upper tail P(T >= t)."""
    half = 0.5 * t_sf2(t, df)
    return half if t >= 0 else 1.0 - half


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, any real) degrees of freedom."""
    half = 0.5 * t_sf2(t, df)
    return 1.0 - half if t >= 0 else half


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t: the t with P(T <= t) = p, for 0 < p < 1 (bisection, then Newton)."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_ppf needs 0 < p < 1, got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    # Upper half: solve 2 * (1 - p) = P(|T| >= t) for t > 0; the tail decreases in t.
    target = 2.0 * (1.0 - p)
    lo, hi = 0.0, 1.0
    while t_sf2(hi, df) > target:
        lo, hi = hi, hi * 2.0
        if hi > 1e300:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf2(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    t = 0.5 * (lo + hi)
    # Two Newton steps on the CDF polish the last digits.
    for _ in range(2):
        pdf = _t_pdf(t, df)
        if pdf <= 0:
            break
        step = (t_cdf(t, df) - p) / pdf
        if not math.isfinite(step) or abs(step) > (hi - lo) + 1e-9:
            break
        t -= step
    return t


def _t_pdf(t: float, df: float) -> float:
    log_pdf = (math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
               - (df + 1) / 2 * math.log1p(t * t / df))
    return math.exp(log_pdf)


# ----------------------------------------------------------------------------------------------
# Confidence intervals and Welch's test


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

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0

    def __repr__(self) -> str:
        return (f"MeanCI(mean={self.mean!r}, lo={self.lo!r}, hi={self.hi!r}, n={self.n}, "
                f"level={self.level})")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be between 0 and 1, got {level!r}")


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean of ``values`` and its Student-t confidence interval at ``level``.

    Returns a :class:`MeanCI` (unpacks as ``mean, lo, hi``). With one value there is no interval:
    ``lo == hi == mean`` and ``.available`` is False. With no values, ValueError.
    """
    _check_level(level)
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(xs) / n
    if n == 1:
        return MeanCI(mean, mean, mean, 1, level)
    sd = statistics.stdev(xs)
    half = t_ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, level)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Welch's t-test for ``mean(a) - mean(b)``.

    Returns ``dict(diff, ci_lo, ci_hi, t, df, p, se, n_a, n_b)``: the difference of means, its
    confidence interval at ``level`` (95% by default) with Welch–Satterthwaite degrees of freedom,
    the t statistic and the two-sided p-value. With fewer than two values in either group, no
    inference is possible: ``ci_lo``, ``ci_hi``, ``t``, ``df``, ``p`` and ``se`` are None.

    Zero variance: when only one group varies, df = n - 1 of that group (the formula's limit).
    When neither varies, the difference is exact: the interval is ``[diff, diff]``, t is 0 (equal
    means, p = 1) or ±inf (p = 0), and df is taken as ``n_a + n_b - 2``.
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
    va, vb = statistics.variance(xa) / na, statistics.variance(xb) / nb
    se2 = va + vb
    if se2 == 0.0:
        out.update(ci_lo=diff, ci_hi=diff, se=0.0, df=float(na + nb - 2),
                   t=0.0 if diff == 0 else math.copysign(math.inf, diff),
                   p=1.0 if diff == 0 else 0.0)
        return out
    se = math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    t = diff / se
    half = t_ppf(0.5 + level / 2.0, df) * se
    out.update(ci_lo=diff - half, ci_hi=diff + half, t=t, df=df, p=t_sf2(t, df), se=se)
    return out


__all__ = ["MeanCI", "betainc", "mean_ci", "t_cdf", "t_ppf", "t_sf", "t_sf2", "welch"]

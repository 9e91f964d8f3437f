"""stats.py against published t quantiles and hand-worked Welch examples, and describe() against
the summary.json rules."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from scipy.stats import t as student_t

from normlab.stats import describe, mean_ci, welch

def test_mean_ci() -> None:
    """The interval is the mean plus and minus t(0.975, n-1) s / sqrt(n), with the t quantile
    of the level asked for (here 90% on two values)."""
    mean, lo, hi = mean_ci([1, 2, 3, 4, 5])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975,4} * s / sqrt(n)
    assert mean == 3.0 and lo == pytest.approx(3 - half, abs=1e-6)
    assert hi == pytest.approx(3 + half, abs=1e-6)
    ci = mean_ci([2.0, 4.0], level=0.9)  # t_{0.95,1} = 6.313752
    half_width = (ci.hi - ci.lo) / 2
    assert ci.available and half_width == pytest.approx(6.313752 * math.sqrt(2) / math.sqrt(2),
                                                           abs=1e-6)


def test_mean_ci_one_value_has_no_interval() -> None:
    """One value: no interval (not available); none: an error; equal values: a zero-width
    interval, available (a mean's interval, unlike a test, needs no spread to be stated)."""
    ci = mean_ci([98.5])
    assert tuple(ci) == (98.5, 98.5, 98.5) and not ci.available and ci.n == 1
    with pytest.raises(ValueError):
        mean_ci([])
    ci = mean_ci([99.0, 99.0, 99.0])  # zero variance: a zero-width interval
    assert tuple(ci) == (99.0, 99.0, 99.0) and ci.available


def test_welch_hand_example() -> None:
    """a = 1..5 (mean 3, var 2.5), b = 2, 4, .., 12 (mean 7, var 14).
    se^2 = 2.5/5 + 14/6 = 17/6; t = -4 / sqrt(17/6) = -2.376354;
    df = (17/6)^2 / ((1/2)^2/4 + (7/3)^2/5) = 6.972256."""
    w = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 12])
    se = math.sqrt(17 / 6)
    assert w["diff"] == -4.0 and w["se"] == pytest.approx(se)
    assert w["t"] == pytest.approx(-2.376354, abs=1e-6)
    assert w["df"] == pytest.approx((17 / 6) ** 2 / (0.25 / 4 + (49 / 9) / 5), rel=1e-12)
    assert w["df"] == pytest.approx(6.972256, abs=1e-6)
    half = student_t.ppf(0.975, w["df"]) * se
    assert (w["ci_lo"], w["ci_hi"]) == pytest.approx((-4 - half, -4 + half))
    assert w["p"] == pytest.approx(2 * student_t.cdf(w["t"], w["df"]), rel=1e-10)
    assert 0.04 < w["p"] < 0.05 and w["ci_hi"] < 0  # just significant, and the CI agrees


def test_welch_equal_variances_gives_pooled_df() -> None:
    """a = 1, 2, 3 and b = 4, 5, 6: se = sqrt(2/3), df = 4 exactly, t = -3.674235;
    CI = -3 ± t_{0.975,4} * se = -3 ± 2.266958."""
    w = welch([1, 2, 3], [4, 5, 6])
    assert w["df"] == pytest.approx(4.0, rel=1e-12)
    assert w["t"] == pytest.approx(-3.674235, abs=1e-6)
    assert w["ci_lo"] == pytest.approx(-5.266958, abs=1e-6)
    assert w["ci_hi"] == pytest.approx(-0.733042, abs=1e-6)
    # df = 4 has a closed-form CDF: F(t) = 1/2 + (3/4) u (1 - u^2/3), u = t / sqrt(4 + t^2).
    u = 3.674235 / math.sqrt(4 + 3.674235 ** 2)
    assert w["p"] == pytest.approx(2 * (0.5 - 0.75 * u * (1 - u * u / 3)), rel=1e-5)


def test_welch_small_and_degenerate_samples() -> None:
    """One value on a side: no inference. Both sides constant: no t-test (no interval, t or
    df), and p is the exact permutation test's: 3 vs 2 runs can be dealt in C(5, 2) = 10 ways,
    the observed split and no other is as extreme, so two-sided p = 2 x 1/10; equal constants
    give p = 1. One side constant: Welch's test, with df from the other side alone."""
    w = welch([99.0], [98.0, 98.5])
    assert w["diff"] == pytest.approx(0.75)
    assert all(w[k] is None for k in ("ci_lo", "ci_hi", "t", "df", "p"))
    w = welch([1.0, 1.0, 1.0], [2.0, 2.0])
    assert w["diff"] == -1.0 and w["p"] == pytest.approx(0.2)
    assert all(w[k] is None for k in ("ci_lo", "ci_hi", "t", "df", "se"))
    w = welch([1.0, 1.0], [1.0, 1.0, 1.0])
    assert w["diff"] == 0.0 and w["p"] == 1.0 and w["ci_lo"] is None
    from scipy.stats import permutation_test   # what the closed form stands for
    ref = permutation_test(([1.0] * 4, [2.0] * 3), lambda x, y, axis: x.mean(axis) - y.mean(axis),
                           n_resamples=float("inf"), vectorized=True)
    assert welch([1.0] * 4, [2.0] * 3)["p"] == pytest.approx(ref.pvalue)
    w = welch([5.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0])  # one group constant: df = 4 - 1
    assert w["df"] == pytest.approx(3.0) and w["p"] < 0.05
    with pytest.raises(ValueError):
        welch([], [1.0, 2.0])


def test_welch_ci_excludes_zero_exactly_when_p_below_005() -> None:
    """Over 300 random pairs of samples, Welch's 95% interval excludes 0 exactly when its
    two-sided p is below 0.05 (one test, two views of it)."""
    rng = random.Random(0)
    for _ in range(300):
        sd_a = rng.uniform(0.1, 2)
        a = [rng.gauss(0.0, sd_a) for _ in range(rng.randint(2, 8))]
        mu, sd = rng.uniform(-1.5, 1.5), rng.uniform(0.1, 2)
        b = [rng.gauss(mu, sd) for _ in range(rng.randint(2, 8))]
        w = welch(a, b)
        if abs(w["p"] - 0.05) < 1e-9:
            continue
        assert (w["ci_lo"] > 0 or w["ci_hi"] < 0) == (w["p"] < 0.05)


def test_describe_empty() -> None:
    """No values: mean and std are None, n is 0, and the (empty) list is kept."""
    assert describe([]) == {"mean": None, "std": None, "n": 0, "values": []}


def test_describe_one_value() -> None:
    """One value: mean is the value, std is 0.0 (not None, not nan), n is 1."""
    d = describe([98.25])
    assert d == {"mean": 98.25, "std": 0.0, "n": 1, "values": [98.25]}
    assert isinstance(d["std"], float)


def test_describe_several_values() -> None:
    """Several values: mean is statistics.fmean and std the sample (n - 1) statistics.stdev,
    bit for bit, so summary.json does not change; ``values`` is the very list passed in."""
    values = [98.91, 99.02, 98.87, 99.1, 98.95]
    d = describe(values)
    assert list(d) == ["mean", "std", "n", "values"]
    assert d["mean"] == statistics.fmean(values) and d["std"] == statistics.stdev(values)
    assert d["n"] == 5 and d["values"] is values
    assert describe([1.0, 2.0, 3.0, 4.0]) == {"mean": 2.5, "std": math.sqrt(5 / 3), "n": 4,
                                              "values": [1.0, 2.0, 3.0, 4.0]}


# ----------------------------------------------------------------------------------------------
# Paired comparisons, power, McNemar, Holm (published values)

SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]   # Student (1908), Cushny & Peebles
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_paired_matches_the_published_sleep_data_test() -> None:
    """paired() on Student's sleep data gives R's t.test(..., paired = TRUE): mean difference
    -1.58, t = -4.0621, df = 9, p = 0.002833, 95% CI -2.4598858 to -0.7001142."""
    from normlab.stats import paired

    r = paired(SLEEP_1, SLEEP_2)
    assert r["n"] == 10 and r["df"] == 9
    assert r["diff"] == pytest.approx(-1.58, abs=1e-12)
    assert r["t"] == pytest.approx(-4.0621, abs=5e-5)
    assert r["p"] == pytest.approx(0.002833, abs=5e-7)
    assert (r["ci_lo"], r["ci_hi"]) == (pytest.approx(-2.4598858, abs=1e-7),
                                        pytest.approx(-0.7001142, abs=1e-7))


def test_paired_edge_cases() -> None:
    """One pair: no inference. Differences all equal (no spread): no t-test (no interval, t,
    df or detectable) and the exact sign-flip test's p, 2 / 2**n (only the observed signs and
    their reverse are as extreme), or 1 for a zero difference; differences equal up to float
    rounding (equal accuracy steps from different values) count as equal. Unequal lengths: an
    error."""
    from normlab.stats import paired

    assert paired([99.4], [99.3])["p"] is None
    for n in (2, 3, 6):
        exact = paired([2.0 + i for i in range(n)], [1.0 + i for i in range(n)])
        assert exact["p"] == pytest.approx(2 / 2 ** n) and exact["sd"] == 0.0
        assert all(exact[k] is None for k in ("ci_lo", "ci_hi", "t", "df", "detectable"))
    assert paired([1.0, 2.0], [1.0, 2.0])["p"] == 1.0
    rounded = paired([99.41, 99.44], [99.38, 99.41])   # 0.0300000000000011, 0.030000000000001137
    assert rounded["p"] == pytest.approx(0.5) and rounded["ci_lo"] is None
    # A difference of float noise is no difference; 20 seeds take no time (closed form).
    assert paired([1e-16, 2e-16, 1.5e-16, 1e-16, 3e-16, 2e-16], [0.0] * 6)["p"] == 1.0
    assert paired([1.0] * 20, [0.0] * 20)["p"] == pytest.approx(2 / 2 ** 20)
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])


def test_min_detectable_matches_published_power() -> None:
    """A one-sample (paired) t-test on 10 pairs with sd 1 has power 0.8031 at a true difference
    of 1 (R's power.t.test(n = 10, delta = 1, type = "one.sample")), so the smallest difference
    detectable with power 0.8 lies just below 1; it scales with sd and shrinks with n."""
    from normlab.stats import min_detectable

    d = min_detectable(1.0, 10)
    assert 0.98 < d < 1.0
    assert min_detectable(0.05, 10) == pytest.approx(0.05 * d, rel=1e-9)
    assert min_detectable(1.0, 20) < d
    assert min_detectable(1.0, 1) is None and min_detectable(0.0, 5) is None


def test_min_detectable_by_simulation() -> None:
    """At the returned difference, simulated paired t-tests (seeded) reject about 80% of the
    time."""
    import numpy as np
    from scipy.stats import ttest_1samp

    from normlab.stats import min_detectable

    n, sd = 5, 0.08
    d = min_detectable(sd, n)
    rng = np.random.default_rng(0)
    x = rng.normal(d, sd, size=(20000, n))
    rejected = (ttest_1samp(x, 0.0, axis=1).pvalue < 0.05).mean()
    assert abs(rejected - 0.8) < 0.015


def test_mcnemar_exact_and_holm() -> None:
    """Exact McNemar: 10 against 2 discordant images gives 2 * P(X <= 2 | 12, 1/2) =
    158/4096; no discordant image gives 1. Holm on (0.01, 0.04, 0.03) gives (0.03, 0.06, 0.06)
    in the input's order."""
    from normlab.stats import holm, mcnemar_exact

    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar_exact(2, 10) == mcnemar_exact(10, 2)
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_holm_leaves_untested_out_of_the_family() -> None:
    """A None (a comparison without a test) stays None and does not count: Holm on (0.01, None,
    0.04, 0.03) adjusts the three p-values as a family of three, (0.03, 0.06, 0.06)."""
    from normlab.stats import holm

    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert holm([None, None]) == [None, None]


def test_paired_reports_its_detectable_difference() -> None:
    """paired's ``detectable`` is min_detectable of the differences' sd and the pair count (80%
    power at 5%); differences without spread (no t-test) and one pair have none."""
    from normlab.stats import min_detectable, paired

    a, b = [99.5, 99.4, 99.6, 99.45], [99.4, 99.42, 99.5, 99.3]
    r = paired(a, b)
    assert r["detectable"] == min_detectable(r["sd"], 4)
    assert paired([2.0, 3.0], [1.0, 2.0])["detectable"] is None
    assert paired([99.4], [99.3])["detectable"] is None


@pytest.mark.parametrize("n", [2, 3, 5, 8, 20])
def test_min_detectable_has_its_power_for_every_n(n: int) -> None:
    """For 2 to 20 pairs, the returned difference has power 0.80 (two-sided, 5% level) by the
    noncentral t computed independently with scipy's nct.cdf on the upper tail; n = 2 (df = 1)
    is where SciPy's lower-tail cdf returns nan, which min_detectable must not trip over."""
    from scipy.stats import nct
    from scipy.stats import t as student

    from normlab.stats import min_detectable

    sd = 0.035
    d = min_detectable(sd, n)
    assert d is not None and math.isfinite(d) and d > 0
    crit = student.ppf(0.975, n - 1)
    ncp = d * math.sqrt(n) / sd
    upper = 1 - nct.cdf(crit, n - 1, ncp)
    assert upper <= 0.8 + 1e-9 and upper > 0.8 - 1e-3   # the lower tail adds almost nothing


def test_detectable_after_holm_uses_the_strictest_level_of_the_family() -> None:
    """detectable_after_holm gives each test of a family of m tests min_detectable at 0.05 / m
    (m counting only entries with a test, a zero spread included), None where there is no test
    and for a zero spread (no t-test: an exact test), and the 5% level for a family of one."""
    from normlab.stats import detectable_after_holm, min_detectable

    got = detectable_after_holm([(0.1, 5), (None, 1), (0.2, 4), (0.0, 3)])
    assert got[1] is None and got[3] is None
    assert got[0] == pytest.approx(min_detectable(0.1, 5, 0.05 / 3), rel=1e-12)
    assert got[2] == pytest.approx(min_detectable(0.2, 4, 0.05 / 3), rel=1e-12)
    assert detectable_after_holm([(0.1, 5), (None, 0)]) == [min_detectable(0.1, 5), None]


def test_format_p_never_rounds_a_significant_p_up_to_the_level() -> None:
    """A p just below 5% keeps a fourth decimal ("0.0498", not "0.050", beside a verdict of
    significance), or is "< 0.05" where that would round up too; elsewhere 3 decimals below 0.1
    and 2 above, "< 0.001" below that."""
    from normlab.table import format_p

    assert format_p(0.04977) == "0.0498" and format_p(0.0499999) == "< 0.05"
    assert format_p(0.0494) == "0.049" and format_p(0.05) == "0.050"
    assert format_p(0.0504) == "0.050" and format_p(0.2) == "0.20"
    assert format_p(0.0009) == "< 0.001"

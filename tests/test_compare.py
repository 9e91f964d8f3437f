"""Paired comparisons (normlab.compare) against hand computations: the mean paired difference and
its CI on a synthetic run folder, the pooled McNemar test against scipy.stats.binomtest, Holm's
adjustment with three variants, and the per-image counts' checks.

Run folders are made up by conftest's ``make_run`` through normlab.runfolder's writers; nothing
is trained.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from scipy.stats import binomtest, ttest_rel

from normlab.compare import compare, comparison_table, discordant_counts, run_comparisons
from normlab.errors import RunFolderError
from normlab.runfolder import load_run, read_predictions
from normlab.stats import min_detectable

FINAL = {"gn": [98.10, 98.30, 98.20], "ln": [98.00, 98.35, 98.02]}
T975_DF2 = 4.302653   # t_{0.975, 2} from the published table


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory, make_run):
    """gn and ln over 3 seeds, with different numbers of wrong test images per variant (so that
    the paired runs disagree on some images in both directions)."""
    path = tmp_path_factory.mktemp("compare") / "run"
    return make_run(path, variants=("gn", "ln"), seeds=3, final=FINAL,
                    wrong={"gn": 12, "ln": 20})


def test_paired_difference_equals_a_hand_computation(two_variants) -> None:
    """On a synthetic run folder, the comparison of gn and ln pairs the 3 seeds, and its mean
    difference, 95% CI (mean ± t_{0.975,2} sd / sqrt(3) of the per-seed differences of final
    test accuracy), p (scipy's ttest_rel) and detectable difference (min_detectable of that sd)
    equal the hand computation."""
    (c,) = run_comparisons(load_run(two_variants.path))
    d = [a - b for a, b in zip(FINAL["gn"], FINAL["ln"])]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = T975_DF2 * sd / math.sqrt(3)
    assert (c.a, c.b, c.seeds, c.n) == ("gn", "ln", (0, 1, 2), 3)
    assert c.diffs == pytest.approx(d, abs=1e-9)
    assert c.diff == pytest.approx(mean, abs=1e-9)
    assert (c.ci_lo, c.ci_hi) == (pytest.approx(mean - half, abs=1e-6),
                                  pytest.approx(mean + half, abs=1e-6))
    assert c.p == pytest.approx(ttest_rel(FINAL["gn"], FINAL["ln"]).pvalue, rel=1e-6)
    assert c.p_holm == c.p   # one pair: Holm changes nothing
    assert c.detectable == pytest.approx(min_detectable(sd, 3), rel=1e-6)
    assert not c.measurable and c.ahead is None


def test_mcnemar_pools_discordant_images_over_seeds(two_variants) -> None:
    """b (images only gn got right) and c (only ln) are counted by hand from each seed's
    prediction files and summed over the 3 seeds; the comparison's counts equal those sums and
    its p equals scipy.stats.binomtest(b, b + c, 0.5) on the pooled counts."""
    b = c = 0
    per_seed = []
    for seed in (0, 1, 2):
        pa = {r["index"]: r for r in read_predictions(two_variants.predictions("gn", seed))}
        pb = {r["index"]: r for r in read_predictions(two_variants.predictions("ln", seed))}
        right_a = {i for i, r in pa.items() if r["pred"] == r["label"]}
        right_b = {i for i, r in pb.items() if r["pred"] == r["label"]}
        per_seed.append((len(right_a - right_b), len(right_b - right_a)))
        b += len(right_a - right_b)
        c += len(right_b - right_a)
    assert b > 0 and c > 0 and b != c   # the example tests something
    (comp,) = run_comparisons(load_run(two_variants.path))
    assert (comp.only_a, comp.only_b) == (b, c)
    assert comp.mcnemar_p == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    assert comp.mcnemar_p_holm == comp.mcnemar_p
    # Pooling, not per-seed tests: the pooled p differs from every single seed's.
    assert all(comp.mcnemar_p != binomtest(x, x + y, 0.5).pvalue for x, y in per_seed)


def test_holm_is_applied_with_three_variants() -> None:
    """Three variants give 3 pairs (study order); each pair's Holm-adjusted p equals Holm's
    step-down adjustment done by hand on the three raw paired-t p-values (sorted, multiplied by
    3, 2, 1, made monotone, capped at 1), and likewise for the McNemar p-values. Two variants
    give one pair whose adjusted p is its raw p."""
    acc = {"gn": dict(enumerate([99.0, 99.1, 99.2, 99.0, 99.1])),
           "ln": dict(enumerate([98.9, 98.95, 99.15, 98.87, 99.1])),
           "bn": dict(enumerate([99.0, 99.05, 99.1, 99.05, 99.0]))}
    counts = {("gn", "ln"): {s: (30, 12) for s in range(5)},
              ("gn", "bn"): {s: (20, 17) for s in range(5)},
              ("ln", "bn"): {s: (10, 14) for s in range(5)}}
    comps = compare(acc, counts)
    assert [(c.a, c.b) for c in comps] == [("gn", "ln"), ("gn", "bn"), ("ln", "bn")]
    for key in ("p", "mcnemar_p"):
        raw = [getattr(c, key) for c in comps]
        order = sorted(range(3), key=lambda i: raw[i])
        hand, running = [0.0] * 3, 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (3 - rank) * raw[i]))
            hand[i] = running
        assert [getattr(c, f"{key}_holm") for c in comps] == pytest.approx(hand, rel=1e-12)
        assert any(h > r for h, r in zip(hand, raw))   # the adjustment did something
    assert comps[0].p < 0.05 <= comps[0].p_holm and not comps[0].measurable
    assert comps[0].mcnemar_p == pytest.approx(binomtest(150, 210, 0.5).pvalue, rel=1e-12)
    (two,) = compare({"gn": acc["gn"], "ln": acc["ln"]})
    assert two.p_holm == two.p and two.mcnemar_p is None


def test_detectable_difference_holds_after_holm() -> None:
    """With 3 pairs, each pair's detectable difference is the one a paired t-test detects with
    80% power at 5% / 3, Holm's strictest level (so it is found after the adjustment whatever its
    rank), larger than at 5%; a pair without a test does not count in m; with one pair it is
    the 5% level's."""
    acc = {"gn": dict(enumerate([99.0, 99.1, 99.2, 99.0, 99.1])),
           "ln": dict(enumerate([98.9, 98.95, 99.15, 98.87, 99.1])),
           "bn": dict(enumerate([99.0, 99.05, 99.1, 99.05, 99.0])),
           "in": {7: 98.0}}   # no seed in common with the others: 3 pairs without a test
    comps = compare(acc)
    assert len(comps) == 6 and sum(c.p is not None for c in comps) == 3
    for c in comps:
        if c.p is None:
            assert c.detectable is None
            continue
        sd = statistics.stdev(c.diffs)
        assert c.detectable == pytest.approx(min_detectable(sd, 5, 0.05 / 3), rel=1e-9)
        assert c.detectable > min_detectable(sd, 5)
    (two,) = compare({"gn": acc["gn"], "ln": acc["ln"]})
    assert two.detectable == pytest.approx(min_detectable(statistics.stdev(two.diffs), 5),
                                           rel=1e-9)


def test_a_detectable_difference_past_the_scale_is_marked_in_the_table() -> None:
    """Two seeds that disagree by tens of points give a detectable difference of more than 100
    points, which no accuracy difference can reach: the comparison table marks it "beyond the
    100-point scale", as the findings do, and leaves an ordinary one as a number."""
    acc = {"gn": {0: 97.0, 1: 40.0}, "ln": {0: 96.0, 1: 95.0}, "bn": {0: 97.1, 1: 97.0}}
    comps = compare(acc)
    text = comparison_table(comps).markdown()
    wide = [c for c in comps if c.detectable is not None and c.detectable > 100]
    narrow = [c for c in comps if c.detectable is not None and c.detectable <= 100]
    assert wide and narrow
    for c in wide:
        assert f"{c.detectable:.2f} (beyond the 100-point scale) |" in text
    for c in narrow:
        assert f"| {c.detectable:.2f} |" in text


def test_compare_pairs_only_common_seeds_and_marks_the_winner() -> None:
    """Only seeds finished by both variants are paired (here 1 and 2); with one pair there is no
    CI, test or detectable difference; a consistent lead is measurable and names its variant."""
    comps = compare({"a": {0: 99.0, 1: 99.1, 2: 99.2}, "b": {1: 99.6, 2: 99.75},
                     "c": {2: 99.0}})
    ab, ac, bc = comps
    assert ab.seeds == (1, 2) and ab.diffs == pytest.approx((-0.5, -0.55))
    assert ab.measurable and ab.ahead == "b"
    assert ac.seeds == (2,) and ac.ci_lo is None and ac.p is None and ac.detectable is None
    assert not ac.measurable and bc.seeds == (2,)


def test_comparison_table_row(two_variants) -> None:
    """The comparisons table has one row per pair with N pairs, the signed mean difference, its
    CI, both p-values, McNemar's b / c and the detectable difference, as computed."""
    (c,) = run_comparisons(load_run(two_variants.path))
    md = comparison_table([c]).markdown()
    lo, hi = (f"{x:+.2f}".replace("-", "−") for x in (c.ci_lo, c.ci_hi))
    assert (f"| `gn` vs `ln` | 3 | {c.diff:+.2f} | [{lo}, {hi}] | {c.p:.2f} | {c.p_holm:.2f} | "
            f"{c.only_a} / {c.only_b} | ") in md
    assert md.rstrip().endswith(f"| {c.detectable:.2f} |")


def test_discordant_counts_refuse_files_of_different_images(tmp_path: Path, make_run) -> None:
    """Two prediction files that disagree on an image's label (or cover different images) cannot
    be compared: discordant_counts raises ValueError, and run_comparisons a RunFolderError naming
    both files."""
    rows = [{"index": i, "label": i % 10, "pred": i % 10, "confidence": 0.9} for i in range(5)]
    other = [dict(r) for r in rows]
    other[2]["pred"] = 7
    assert discordant_counts(rows, other) == (1, 0)
    other[3]["label"] = 9
    with pytest.raises(ValueError, match="test image 3 has label 3"):
        discordant_counts(rows, other)
    with pytest.raises(ValueError, match="same test images"):
        discordant_counts(rows, rows[:4])
    run = make_run(tmp_path / "run", seeds=1, epochs=2)
    path = run.predictions("gn", 0)
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[1] = str((int(cells[1]) + 1) % 10)
    path.write_text("\n".join([lines[0], ",".join(cells)] + lines[2:]) + "\n")
    with pytest.raises(RunFolderError, match="cannot be compared") as e:
        run_comparisons(load_run(run.path))
    assert path.name in str(e.value) and run.predictions("bn+l1=2e-05", 0).name in str(e.value)


def test_seeds_that_all_differ_alike_are_not_called_a_difference() -> None:
    """Two seeds that both put `ln` one test image (0.01 points) behind `gn` have no spread: no
    t-test, no interval; the exact sign-flip test's p (0.5 with 2 pairs) decides, so neither is
    called ahead. The finding names that test and the smallest p it can give, and the table
    marks the p as the sign-flip test's."""
    from normlab.findings import comparison_sentence

    (c,) = compare({"gn": {0: 99.47, 1: 99.44}, "ln": {0: 99.46, 1: 99.43}})
    assert c.diffs == (0.01, 0.01) and c.ci_lo is None and c.p == pytest.approx(0.5)
    assert not c.measurable and c.ahead is None and c.detectable is None
    text = comparison_sentence(c)
    assert "exact sign-flip test" in text and "p = 0.50" in text and "ahead" not in text
    assert "with 2 pairs that test's smallest possible p is 0.5" in text
    (row,) = comparison_table([c]).rows
    assert row[3] == "–" and row[4] == "0.50 *sign-flip*"


def test_compare_points_adjusts_over_every_pair_of_every_point() -> None:
    """compare_points compares each point's variants as compare() does (the same differences,
    intervals and raw p), but Holm-adjusts the p-values, and sizes the detectable difference,
    over all the points' pairs as one family; its table leads with each point's values and
    has no McNemar column."""
    from normlab.compare import compare_points, points_table
    from normlab.stats import detectable_after_holm, holm

    points = {(2,): {"bn": {0: 96.1, 1: 96.9, 2: 96.4}, "gn": {0: 97.6, 1: 97.8, 2: 97.7}},
              (8,): {"bn": {0: 97.9, 1: 98.1, 2: 97.6}, "gn": {0: 97.8, 1: 98.0, 2: 97.9}},
              (32,): {"bn": {0: 98.2, 1: 98.0, 2: 98.3}, "gn": {0: 97.9, 1: 98.2, 2: 98.0}}}
    items = compare_points(points)
    alone = [c for acc in points.values() for c in compare(acc)]
    assert [k for k, _ in items] == [(2,), (8,), (32,)]
    for (_, c), a in zip(items, alone):
        assert (c.diff, c.ci_lo, c.ci_hi, c.p) == (a.diff, a.ci_lo, a.ci_hi, a.p)
        assert a.p_holm == a.p   # alone, each point has one pair: nothing to adjust
    assert [c.p_holm for _, c in items] == holm([a.p for a in alone])
    assert [c.detectable for _, c in items] == detectable_after_holm([(a.sd, a.n) for a in alone])
    assert items[0][1].p_holm > items[0][1].p
    t = points_table(items, ["batch_size"])
    assert t.columns[:2] == ["batch_size", "pair"] and not any("McNemar" in c for c in t.columns)
    assert [r[0] for r in t.rows] == ["2", "8", "32"]

"""Paired comparisons of a study's variants: seed by seed, and image by image.

Runs with the same seed share their data order and augmentation draws whatever the variant, so
two variants are compared on the seeds both finished, as pairs. For each pair of variants (in
study order, ``a`` before ``b``), :class:`Comparison` holds:

* the mean paired difference of final test accuracy ``a - b`` in percentage points over the
  paired seeds, its t-based 95% confidence interval and the two-sided paired t-test
  (:func:`normlab.stats.paired`);
* the smallest true difference that test could detect with 80% power once Holm's adjustment
  over the study's pairs is applied: at the level alpha / m (5% over the m pairs that have a
  test), the strictest Holm uses, so that a difference of that size is found whatever its rank
  among the pairs. From the number of pairs and the observed spread of the per-seed differences
  (:func:`normlab.stats.min_detectable`); with one pair it is the 5% level;
* a per-image test of the final predictions (exact McNemar, :func:`normlab.stats.mcnemar_exact`).
  ``only_a`` (McNemar's b) counts the test images that ``a``'s final model got right and
  ``b``'s got wrong, ``only_b`` (c) the reverse, each **summed over the paired seeds**; one exact
  binomial test of b against b + c is run on the pooled counts. Pooling treats every
  (image, seed) as an independent observation. It is not quite: the same test images recur in
  every seed (an image that splits the two variants once tends to split them again), and the
  test holds the trained models fixed, so it leaves out the seed-to-seed variation of training.
  It answers "do these trained networks differ on these test images?", and is usually far more
  sensitive than the seed-level test. That is acceptable because it never decides a finding on
  its own: whether one variant is ahead rests on the paired t-test over seeds (Holm-adjusted),
  and the pooled McNemar test is reported beside it as image-level detail. Pooling was chosen
  over combining per-seed p-values (Fisher, Stouffer) because it keeps the direction of every
  discordant image and stays exact for the small discordant counts of a good model;
  Fisher's method would add up evidence pointing in opposite directions.
* the p-values of both tests adjusted with Holm's method over all pairs of the study (each kind of
  test as its own family; with one pair the adjustment changes nothing).

:func:`compare` is a pure function of numbers; :func:`run_comparisons` reads a run folder's
final accuracies and prediction files and calls it; :func:`comparison_table` renders the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

from normlab.errors import RunFolderError
from normlab.runfolder import REBUILD, RunData, read_predictions
from normlab.stats import ALPHA, detectable_after_holm, holm, mcnemar_exact, paired
from normlab.table import Table, format_detectable, format_p, signed_ci, signed_points

# Accuracies are percentages of whole test images; differences are rounded to this many
# decimals so that floating-point noise never poses as a spread of the differences.
DIFF_DECIMALS = 9


@dataclass(frozen=True)
class Comparison:
    """Variant ``a`` against variant ``b`` over the seeds both finished (see the module)."""

    a: str
    b: str
    seeds: tuple[int, ...]             # the paired seeds
    diffs: tuple[float, ...]           # final test accuracy a - b per paired seed (points)
    diff: float | None = None          # mean of diffs; None without pairs
    ci_lo: float | None = None         # 95% CI of the mean difference (None: fewer than 2 pairs)
    ci_hi: float | None = None
    sd: float | None = None            # sample sd of the per-seed differences
    p: float | None = None             # two-sided paired t-test
    p_holm: float | None = None        # p adjusted by Holm over the study's pairs
    detectable: float | None = None    # smallest difference detected with POWER at ALPHA / m
    only_a: int | None = None          # McNemar's b: images only a got right, summed over seeds
    only_b: int | None = None          # McNemar's c: images only b got right
    mcnemar_p: float | None = None     # exact McNemar on the pooled counts
    mcnemar_p_holm: float | None = None

    @property
    def n(self) -> int:
        """The number of paired seeds."""
        return len(self.seeds)

    @property
    def exact(self) -> bool:
        """True when every paired seed differs alike: no spread, so no t-test and no interval;
        ``p`` is the exact sign-flip test's (:func:`normlab.stats.paired`)."""
        return self.p is not None and self.ci_lo is None

    @property
    def measurable(self) -> bool:
        """True when the paired t-test, Holm-adjusted, rejects a zero difference at ALPHA."""
        return self.p_holm is not None and self.p_holm < ALPHA

    @property
    def ahead(self) -> str | None:
        """The variant measurably ahead, or None."""
        if not self.measurable:
            return None
        return self.a if self.diff > 0 else self.b


def compare(accuracy: dict[str, dict[int, float]],
            discordant: dict[tuple[str, str], dict[int, tuple[int, int]]] | None = None,
            ) -> list[Comparison]:
    """Every pair of variants of ``accuracy`` (``{variant: {seed: final test accuracy}}`` over
    finished seeds, in study order), compared on their common seeds. ``discordant``:
    ``{(a, b): {seed: (only_a, only_b)}}``, the per-image counts of each paired seed (pairs
    left out have no McNemar test). Holm's adjustment runs over the pairs that have a test."""
    discordant = discordant or {}
    out = []
    for a, b in combinations(accuracy, 2):
        seeds = tuple(s for s in accuracy[a] if s in accuracy[b])
        diffs = tuple(round(accuracy[a][s] - accuracy[b][s], DIFF_DECIMALS) for s in seeds)
        fields: dict = {}
        if seeds:
            t = paired(list(diffs), [0.0] * len(diffs))
            fields = dict(diff=t["diff"], ci_lo=t["ci_lo"], ci_hi=t["ci_hi"], sd=t["sd"],
                          p=t["p"])
        counts = discordant.get((a, b), {})
        if seeds and all(s in counts for s in seeds):
            only_a = sum(counts[s][0] for s in seeds)
            only_b = sum(counts[s][1] for s in seeds)
            fields.update(only_a=only_a, only_b=only_b, mcnemar_p=mcnemar_exact(only_a, only_b))
        out.append(Comparison(a, b, seeds, diffs, **fields))
    detectable = detectable_after_holm([(c.sd, c.n) for c in out])   # c.sd is None: no test
    out = [replace(c, detectable=d) for c, d in zip(out, detectable)]
    for key in ("p", "mcnemar_p"):
        adjusted = holm([getattr(c, key) for c in out])
        out = [replace(c, **{f"{key}_holm": adj}) for c, adj in zip(out, adjusted)]
    return out


def compare_points(points: dict[tuple, dict[str, dict[int, float]]]
                   ) -> list[tuple[tuple, Comparison]]:
    """Every pair of variants at every point of a sweep (``{point: accuracy}``, each accuracy
    as :func:`compare` takes it), compared seed by seed as :func:`compare` does, with the
    t-tests' Holm adjustment and detectable difference taken over all the points' pairs as one
    family: the family a reader picks from when scanning the points for a difference. (No
    McNemar: a sweep table holds no predictions.)"""
    items = [(key, c) for key, accuracy in points.items() for c in compare(accuracy)]
    adjusted = holm([c.p for _, c in items])
    detectable = detectable_after_holm([(c.sd, c.n) for _, c in items])
    return [(key, replace(c, p_holm=q, detectable=d))
            for (key, c), q, d in zip(items, adjusted, detectable)]


def points_table(items: list[tuple[tuple, Comparison]], params: list[str]) -> Table:
    """:func:`compare_points`' comparisons as a table: each point's values of ``params``, then
    :func:`comparison_table`'s columns without McNemar's."""
    t = comparison_table([c for _, c in items])
    keep = [i for i, name in enumerate(t.columns) if "McNemar" not in name]
    lead = len(params)
    numbers = {j for j in range(lead)   # a swept number is right-aligned, as in sweep tables
               if all(isinstance(key[j], (int, float)) for key, _ in items)}
    out = Table(params + [t.columns[i] for i in keep],
                numeric=numbers | {lead + j for j, i in enumerate(keep) if i in t.numeric})
    for (key, _), row in zip(items, t.rows):
        out.rows.append([f"{v:g}" if isinstance(v, float) else str(v) for v in key]
                        + [row[i] for i in keep])
    return out


def accuracy_from_summary(summary: dict) -> dict[str, dict[int, float]]:
    """``{variant: {seed: final test accuracy}}`` from a summary (summary.json): its values are in
    the order of the variant's finished seeds."""
    out = {}
    for name, s in summary.get("variants", summary).items():
        ok = [x for x in s["seeds"] if x not in set(s["diverged_seeds"])]
        out[name] = dict(zip(ok, s["final_test_acc"]["values"]))
    return out


def discordant_counts(rows_a: list[dict], rows_b: list[dict]) -> tuple[int, int]:
    """(only_a, only_b): the test images that the predictions ``rows_a`` got right and
    ``rows_b`` wrong, and the reverse (rows as :func:`normlab.runfolder.read_predictions` gives
    them). ValueError when the two do not cover the same images with the same labels."""
    truth_a = {r["index"]: (r["label"], r["pred"] == r["label"]) for r in rows_a}
    truth_b = {r["index"]: (r["label"], r["pred"] == r["label"]) for r in rows_b}
    if truth_a.keys() != truth_b.keys() or len(truth_a) != len(rows_a) or \
            len(truth_b) != len(rows_b):
        raise ValueError("the two prediction files do not cover the same test images")
    only_a = only_b = 0
    for i, (label, right_a) in truth_a.items():
        label_b, right_b = truth_b[i]
        if label != label_b:
            raise ValueError(f"test image {i} has label {label} in one file and {label_b} in "
                             "the other")
        only_a += right_a and not right_b
        only_b += right_b and not right_a
    return only_a, only_b


def run_comparisons(run: RunData) -> list[Comparison]:
    """The comparisons of a run folder: final test accuracy of every finished run (metrics.csv)
    and the discordant test images of every paired seed (its prediction files)."""
    accuracy = {v: {s: run.rows(v, s)[-1]["test_acc"] for s in run.ok_seeds(v)}
                for v in run.variants}
    cache: dict[tuple[str, int], list[dict]] = {}

    def predictions(variant: str, seed: int) -> list[dict]:
        if (variant, seed) not in cache:
            cache[(variant, seed)] = read_predictions(run.folder.predictions(variant, seed))
        return cache[(variant, seed)]

    discordant: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
    for a, b in combinations(run.variants, 2):
        for seed in (s for s in accuracy[a] if s in accuracy[b]):
            try:
                counts = discordant_counts(predictions(a, seed), predictions(b, seed))
            except ValueError as e:
                raise RunFolderError(
                    f"{run.folder.predictions(a, seed)} and {run.folder.predictions(b, seed)} "
                    f"cannot be compared: {e}; {REBUILD}") from None
            discordant.setdefault((a, b), {})[seed] = counts
    return compare(accuracy, discordant)


# Said under a table of paired comparisons where a pair's seeds all differ alike (stats.paired).
EXACT_NOTE = (" Where every pair differs by the same amount, the differences have no spread: the "
              "t-test has no answer and no interval, and the p is the exact sign-flip test's "
              "(2 / 2^N at best: 0.5 with 2 pairs), marked *sign-flip*.")


def format_paired_p(p: float, exact: bool) -> str:
    """A paired comparison's p as its tables print it (:func:`normlab.table.format_p`), marked
    *sign-flip* where it is the exact sign-flip test's (see :data:`EXACT_NOTE`)."""
    return format_p(p) + (" *sign-flip*" if exact else "")


def comparison_table(comparisons: list[Comparison], markdown: bool = True) -> Table:
    """One row per pair: N pairs, mean difference and its 95% CI, the paired t-test's p (raw and
    Holm-adjusted), McNemar's b / c and p (raw and Holm-adjusted), the detectable difference."""
    name = (lambda n: f"`{n}`") if markdown else (lambda n: n)
    t = Table(["pair", "N pairs", "mean diff (pts)", "95% CI", "t-test p", "Holm t-test p",
               "McNemar b / c", "McNemar p", "Holm McNemar p", "detectable (pts)"],
              numeric=set(range(1, 10)))

    def cell(x, fmt) -> str:
        return "–" if x is None else fmt(x)

    for c in comparisons:
        ci = signed_ci(c.ci_lo, c.ci_hi)
        t.rows.append([f"{name(c.a)} vs {name(c.b)}", str(c.n), cell(c.diff, signed_points), ci,
                       cell(c.p, lambda p: format_paired_p(p, c.exact)),
                       cell(c.p_holm, format_p),
                       "–" if c.only_a is None else f"{c.only_a} / {c.only_b}",
                       cell(c.mcnemar_p, format_p), cell(c.mcnemar_p_holm, format_p),
                       cell(c.detectable, format_detectable)])
    return t


__all__ = ["EXACT_NOTE", "Comparison", "accuracy_from_summary", "compare", "compare_points",
           "comparison_table", "format_paired_p", "points_table",
           "discordant_counts", "run_comparisons"]

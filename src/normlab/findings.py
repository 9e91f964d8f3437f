"""Findings: the sentences of a report, made as pure functions of saved numbers.

Nothing here reads files or trains: :func:`findings` takes a study's summary, its paired
comparisons (:mod:`normlab.compare`; made from the summary alone, without the per-image test, when
none are given) and the train-test gaps; :func:`sweep_findings` a sweep's rows.

Variants are compared in pairs over the seeds both finished (paired t-test, Holm-adjusted over
the study's pairs). A pair is ranked only when that test rejects a zero difference at the 5%
level; otherwise the sentence says "no measurable difference" and states the smallest difference
the study could have detected with 80% power after that adjustment. The pooled per-image McNemar test is reported
beside it but never ranks variants on its own: it leaves out the seed-to-seed variation of
training (see :mod:`normlab.compare`). A sweep's settings are compared with Welch's t-test
(runs at different settings need not share their batches).
"""

from __future__ import annotations

import itertools
import statistics

from normlab.compare import Comparison, accuracy_from_summary, compare
from normlab.stats import ALPHA, POWER, holm, welch
from normlab.table import format_p, signed_points


def fmt_value(v: object) -> str:
    """A swept value as printed: floats in %g."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def _p_text(p: float) -> str:
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _seeds_text(seeds: list[int]) -> str:
    word = "seed" if len(seeds) == 1 else "seeds"
    return f"{word} {', '.join(str(s) for s in seeds)}"


def comparison_sentence(c: Comparison, family: int = 1, mcnemar_family: int | None = None) -> str:
    """The finding of one pair: its mean paired difference and 95% CI over N paired seeds, the
    verdict of the paired t-test (called Holm-adjusted when ``family`` > 1 pairs have one; the
    McNemar test likewise over ``mcnemar_family``, by default the same)
    and, if measurable, which variant is ahead, else the difference the study could have
    detected; then the pooled per-image McNemar test, when the comparison has one."""
    pair = f"`{c.a}` vs `{c.b}`"
    if c.n == 0:
        return f"{pair}: no seed finished in both, so they cannot be compared."
    holm = "Holm-adjusted " if family > 1 else ""
    if c.n == 1:
        text = (f"{pair}: {signed_points(c.diff)} points on the one seed both finished "
                f"(seed {c.seeds[0]}); one pair gives no confidence interval, so this comparison "
                "is not conclusive")
    else:
        if c.exact:   # every pair differs alike: no spread, no t-test
            text = f"{pair}: {signed_points(c.diff)} points on each of the {c.n} paired seeds"
            name = "exact sign-flip test"
            test = f"{name}, as the differences have no spread, {holm}{_p_text(c.p_holm)}"
        else:
            text = (f"{pair}: {signed_points(c.diff)} points (95% CI {signed_points(c.ci_lo)} "
                    f"to {signed_points(c.ci_hi)}, {c.n} paired seeds)")
            name = "paired t-test"
            test = f"{name}, {holm}{_p_text(c.p_holm)}"
        if c.measurable:
            behind = c.b if c.ahead == c.a else c.a
            text += (f"; `{c.ahead}` is ahead of `{behind}` by more than the seed-to-seed noise "
                     f"({test})")
        else:
            if c.p < ALPHA:   # significant alone, not once corrected for the other pairs
                text += (f"; no measurable difference once corrected for the {family} "
                         f"comparisons ({name} {_p_text(c.p)} alone, Holm-adjusted "
                         f"{_p_text(c.p_holm)})")
            else:
                text += f"; no measurable difference ({test})"
            if c.exact:
                text += (f"; with {c.n} pairs that test's smallest possible p is "
                         f"{2.0 ** (1 - c.n):.3g}")
            else:
                after = f" after Holm's adjustment over the {family} comparisons" if family > 1 else ""
                text += (f"; the study could have detected {c.detectable:.2f} points with "
                         f"{POWER:.0%} power{after}")
                if c.detectable > 100:   # accuracies differ by at most 100 points
                    text += " (beyond the 100-point scale: too few seeds to detect any difference)"
    if c.mcnemar_p is not None:
        over = "its paired seed" if c.n == 1 else f"the {c.n} paired seeds pooled"
        m_holm = holm if mcnemar_family is None else (
            "Holm-adjusted " if mcnemar_family > 1 else "")
        text += (f". Per test image, over {over}: {c.only_a} images only `{c.a}` got right, "
                 f"{c.only_b} only `{c.b}` (exact McNemar, {m_holm}{_p_text(c.mcnemar_p_holm)})")
        if not c.measurable and c.mcnemar_p_holm < ALPHA:
            text += ("; these trained networks differ image by image, but this test leaves out "
                     "the seed-to-seed variation of training, so it does not rank the variants")
    return text + "."


def _means_sentence(variants: dict, ranked: list[str], comparisons: list[Comparison]) -> str:
    """The winner when it is measurably ahead of every other variant, else the means alone."""
    means = {n: variants[n]["final_test_acc"]["mean"] for n in ranked}
    counts = [variants[n]["final_test_acc"]["n"] for n in ranked]
    best = max(ranked, key=lambda n: means[n])   # first on ties
    against = [c for c in comparisons if best in (c.a, c.b)]
    if against and all(c.ahead == best for c in against):
        n = variants[best]["final_test_acc"]["n"]
        return (f"`{best}` has the highest final test accuracy: {means[best]:.2f}% (mean of {n} "
                f"seeds), measurably ahead of every other variant.")
    if len(set(counts)) == 1:
        seeds = "one seed each" if counts[0] == 1 else f"{counts[0]} seeds each"
    else:
        seeds = "over " + ", ".join(map(str, counts[:-1])) + f" and {counts[-1]} seeds"
    listed = ", ".join(f"`{n}` {means[n]:.2f}%" for n in ranked)
    return (f"Mean final test accuracy: {listed} ({seeds}); the comparisons below say which "
            "differences are larger than the seed-to-seed noise.")


# Train-test gaps closer than this (percentage points) are not called different: one test
# image is 0.01 points, and seeds move the gap by several times that.
GAP_MARGIN = 0.1
# Below this mean accuracy (percent) a variant or a swept setting "collapsed": it learned too
# little for its gap to mean overfitting (chance is 10% on the ten-class datasets normlab loads).
COLLAPSED = 50.0


def findings(summary: dict, gaps: dict[str, float | None] | None = None,
             augment: bool | None = None,
             comparisons: list[Comparison] | None = None,
             clean_fraction: float = 0.0) -> list[str]:
    """The Findings sentences, made only from the numbers of ``summary``, its pairwise
    ``comparisons`` (:func:`normlab.compare.compare`; by default from the summary's per-seed
    accuracies, with no per-image test) and the train-test ``gaps`` by variant (percentage
    points), if given. ``augment`` and ``clean_fraction`` (the config's) say which images the
    training accuracy was measured on. One string per bullet point."""
    variants = summary["variants"]
    out: list[str] = []
    for name, s in variants.items():
        if s["status"] == "diverged":
            out.append(f"`{name}` diverged in every run ({_seeds_text(s['diverged_seeds'])}): "
                       "training stopped when its loss blew up, so it has no results.")
        elif s["status"] == "partly-diverged" or s["diverged_seeds"]:
            n_ok = s["final_test_acc"]["n"]
            out.append(f"`{name}` diverged in {_seeds_text(s['diverged_seeds'])}; its numbers are "
                       f"over the other {n_ok} seed{'s' if n_ok != 1 else ''}.")

    ranked = [n for n in variants if variants[n]["final_test_acc"]["n"] > 0]
    if not ranked:
        out.append("No run finished, so there is nothing to compare.")
        return out
    if len(ranked) == 1:
        s = variants[ranked[0]]["final_test_acc"]
        out.append(f"Only `{ranked[0]}` has results (final test accuracy {s['mean']:.2f}%), so "
                   "there is nothing to compare it with.")
    else:
        if comparisons is None:
            comparisons = compare(accuracy_from_summary({n: variants[n] for n in ranked}))
        comparisons = [c for c in comparisons if c.a in ranked and c.b in ranked]
        family = sum(c.p is not None for c in comparisons)   # the tests Holm adjusts over
        m_family = sum(c.mcnemar_p is not None for c in comparisons)
        out.append(_means_sentence(variants, ranked, comparisons))
        out += [comparison_sentence(c, family, m_family) for c in comparisons]

    if gaps:
        known = {n: g for n, g in gaps.items() if g is not None}
        if known:
            listed = ", ".join(f"`{n}` {signed_points(g)}" for n, g in known.items())
            several = any(s["final_test_acc"]["n"] > 1 for s in variants.values())
            text = (f"Train − test accuracy gap at the final epoch"
                    f"{' (mean over seeds)' if several else ''}: {listed} percentage points.")
            means = {n: variants[n]["final_test_acc"].get("mean") for n in known}
            low = [n for n, m in means.items() if isinstance(m, (int, float)) and m < COLLAPSED]
            if low:
                one = len(low) == 1
                text += (f" {', '.join(f'`{n}`' for n in low)} {'is' if one else 'are'} not "
                         f"judged for overfitting: {'its' if one else 'their'} mean final test "
                         f"accuracy is below {COLLAPSED:g}%, too little learned for a gap to "
                         "mean it.")
                known = {n: g for n, g in known.items() if n not in low}
            worst = max(known, key=lambda n: known[n], default=None)
            others = sorted((g for n, g in known.items() if n != worst), reverse=True)
            if worst is not None and known[worst] > 0:
                if others and known[worst] - others[0] < GAP_MARGIN:
                    runner_up = next(n for n, g in known.items() if n != worst and g == others[0])
                    text += (f" The largest gap, `{worst}`'s {signed_points(known[worst])}, is "
                             f"within {GAP_MARGIN:g} points of `{runner_up}`'s "
                             f"{signed_points(others[0])}: by this measure no variant overfits "
                             "clearly more than another.")
                elif others:
                    text += (f" `{worst}` has the largest gap ({signed_points(known[worst])}), so "
                             "by this measure it overfits the most of these variants.")
                else:
                    text += (f" `{worst}`'s training accuracy is above its test accuracy by "
                             f"{signed_points(known[worst])} points.")
            elif worst is not None:
                text += (f" No {'other ' if low else ''}variant's training accuracy exceeds its "
                         "test accuracy, so the numbers show no overfitting.")
            if augment and clean_fraction:
                text += (" (Training accuracy is the running accuracy on the batches of each "
                         f"epoch: augmented ones, except in the last {clean_fraction:g} of the "
                         "steps, which trained on the plain images (--clean-fraction); test "
                         "accuracy is measured on clean images after it.)")
            elif augment:
                text += (" (Training accuracy is the running accuracy on augmented batches during "
                         "each epoch; test accuracy is measured on clean images after it.)")
            out.append(text)
    return out


def sweep_findings(rows: list[dict], params: list[str], metric: str = "final_test_acc",
                   word: str = "test") -> list[str]:
    """Per variant (and combination of the other swept settings) and per swept setting: the
    value with the highest and the lowest mean final accuracy (``metric``: on the test set,
    or on the --val images when a sweep chooses a model), and whether the difference
    is larger than seed-to-seed noise: Welch's t-test, its p adjusted with Holm's method over
    every pair of setting values that any finding of the sweep could have tested (one family:
    the two compared were picked for being the extremes, and a grid of settings gives many such
    lines; an unadjusted test of the extremes of six equal settings would call a difference in
    about one sweep in six, and one of 24 unadjusted lines would in most grids)."""
    out: list[str] = []
    found = []   # (text so far, setting, runs per value, best, worst, tie, pairs, collapsed)
    for p in params:
        others = [q for q in params if q != p]
        groups: dict[tuple, dict[object, list[float]]] = {}
        for r in rows:
            key = (r.get("spec", r["variant"]),) + tuple(r[o] for o in others)
            vals = groups.setdefault(key, {}).setdefault(r[p], [])
            if r["status"] == "ok" and r[metric] is not None:
                vals.append(float(r[metric]))
        for key, by_value in groups.items():
            done = {v: xs for v, xs in by_value.items() if xs}
            if len(done) < 2:
                continue
            means = {v: statistics.fmean(xs) for v, xs in done.items()}
            best = max(means, key=lambda v: means[v])
            worst = min(means, key=lambda v: means[v])
            settings = ", ".join(f"{o}={fmt_value(x)}" for o, x in zip(others, key[1:]))
            where = f"`{key[0]}`" + (f" ({settings})" if settings else "")
            tie = f"{means[best]:.2f}" == f"{means[worst]:.2f}"   # as printed
            if tie:
                every = "every" if len(done) == len(by_value) else "every finished"
                text = (f"{where}: final {word} accuracy is the same at {every} {p} "
                        f"({means[best]:.2f}%)")
            else:
                text = (f"{where}: final {word} accuracy is highest at {p}={fmt_value(best)} "
                        f"({means[best]:.2f}%) and lowest at {p}={fmt_value(worst)} "
                        f"({means[worst]:.2f}%)")
            pairs = [(a, b, welch(done[a], done[b])["p"])
                     for a, b in itertools.combinations(done, 2)]
            collapsed = [f"{p}={fmt_value(v)}" for v, m in means.items() if m < COLLAPSED]
            found.append((text, p, done, best, worst, tie, pairs, collapsed))
    # One Holm family: every pair of every finding, in the order found.
    family = holm([q for *_, pairs, _ in found for _, _, q in pairs])
    tested = sum(q is not None for q in family)
    at = 0
    for text, p, done, best, worst, tie, pairs, collapsed in found:
        adjusted = family[at:at + len(pairs)]
        at += len(pairs)
        w = welch(done[best], done[worst])   # a tie keeps its interval: what it could see
        if w["p"] is None:
            n = (len(done[best]), len(done[worst]))
            seeds = ("one seed each" if n == (1, 1) else
                     f"{n[0]} seed{'s' if n[0] > 1 else ''} at {p}={fmt_value(best)}, "
                     f"{n[1]} at {p}={fmt_value(worst)}")
            diff = statistics.fmean(done[best]) - statistics.fmean(done[worst])
            text += (f"; {signed_points(diff)} points, {seeds}: no "
                     "test possible (it needs two or more seeds on each side).")
        else:
            # (best is worst where every mean is the same: a tie, p = 1 whatever the rest)
            holm_p = next((q for (a, b, _), q in zip(pairs, adjusted) if {a, b} == {best, worst}),
                          w["p"])
            verdict = ("larger than seed-to-seed noise" if holm_p < ALPHA else
                       f"not significant at the {ALPHA:.0%} level")
            adjusted_too = tested > 1 and not tie   # a tie names no two values
            mine = sum(q is not None for q in adjusted)   # this line's tested pairs
            what = (f"the {tested} pairs of {p} values" if mine == tested else
                    f"the {tested} pairs of setting values these findings compare")
            adjust = ("" if not adjusted_too else
                      f"; Holm's {_p_text(holm_p)} over {what}, as these two were picked for "
                      "being the highest and the lowest")
            if w["ci_lo"] is None:   # every run of each side scored the same (stats.welch)
                test = (f"no spread on either side, so no t interval; exact permutation "
                        f"test's {_p_text(w['p'])}")
            else:
                ci = "unadjusted 95% CI" if adjusted_too else "95% CI"
                test = (f"{ci} {signed_points(w['ci_lo'])} to {signed_points(w['ci_hi'])}, "
                        f"Welch's {_p_text(w['p'])}")
            text += f"; {signed_points(w['diff'])} points ({test}{adjust}): {verdict}."
        if collapsed:
            text += f" Its mean is below {COLLAPSED:g}% at " + ", ".join(collapsed) + "."
        out.append(text)
    failed = [r for r in rows if r["status"] == "failed"]
    diverged = [r for r in rows if r["status"] == "diverged"]
    if diverged:
        out.append(f"{len(diverged)} run(s) diverged and are left out of the means: " +
                   ", ".join(f"`{r['variant']}` seed {r['seed']} at " +
                             ", ".join(f"{q}={fmt_value(r[q])}" for q in params)
                             for r in diverged[:8]) + (" ..." if len(diverged) > 8 else "") + ".")
    if failed:
        out.append(f"{len(failed)} run(s) failed (see `message` in sweep.csv); run the same "
                   "command again to retry them.")
    return out

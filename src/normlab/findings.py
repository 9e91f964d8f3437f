"""Findings: the sentences of a report, made as pure functions of saved numbers.

Nothing here reads files or trains: :func:`findings` takes a study's summary (and the train-test
gaps), :func:`sweep_findings` a sweep's rows. Every comparison carries its interval and test
(Welch's t-test through :mod:`normlab.stats`); a difference whose interval includes 0 is called
noise, never a ranking.
"""

from __future__ import annotations

import statistics

from normlab.stats import welch


def fmt_value(v: object) -> str:
    """A swept value as printed: floats in %g."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def signed_points(x: float) -> str:
    """A signed difference in percentage points."""
    return f"{x:+.2f}".replace("-", "−")


def _p_text(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _seeds_text(seeds: list[int]) -> str:
    word = "seed" if len(seeds) == 1 else "seeds"
    return f"{word} {', '.join(str(s) for s in seeds)}"


# Train-test gaps closer than this (percentage points) are not called different: one test
# image is 0.01 points, and seeds move the gap by several times that.
GAP_MARGIN = 0.1


def findings(summary: dict, gaps: dict[str, float | None] | None = None,
             augment: bool | None = None) -> list[str]:
    """The Findings sentences, made only from the numbers of ``summary`` (and the train-test
    ``gaps`` by variant, in percentage points, if given). One string per bullet point."""
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
        best = max(ranked, key=lambda n: variants[n]["final_test_acc"]["mean"])  # first on ties
        bs = variants[best]["final_test_acc"]
        n_text = (f"mean of {bs['n']} seeds" if bs["n"] > 1 else "one seed")
        out.append(f"`{best}` has the highest final test accuracy: {bs['mean']:.2f}% ({n_text}).")
        single: list[str] = []   # comparisons where a group has one seed: no inference
        for other in ranked:
            if other == best:
                continue
            os_ = variants[other]["final_test_acc"]
            w = welch(bs["values"], os_["values"])
            if w["p"] is None:
                single.append(other)
                continue
            lead = (f"Over `{other}` ({os_['mean']:.2f}%) its lead is {signed_points(w['diff'])} "
                    "percentage points")
            if w["diff"] == 0:
                lead = f"It ties with `{other}` ({os_['mean']:.2f}%)"
            ci = (f"95% CI of the difference {signed_points(w['ci_lo'])} to {signed_points(w['ci_hi'])}, "
                  f"Welch's t = {w['t']:.2f}, df = {w['df']:.1f}, {_p_text(w['p'])}")
            if w["se"] == 0:
                ci = "every seed of both gave the same final accuracy, so the difference is exact"
            if w["ci_lo"] > 0 or w["ci_hi"] < 0:
                verdict = ("significant at the 5% level: larger than the seed-to-seed noise")
            else:
                verdict = ("not significant at the 5% level: the interval includes 0, so the "
                           "difference may be seed-to-seed noise")
            out.append(f"{lead} ({ci}); {verdict}.")
        if single:
            leads = [f"{signed_points(bs['mean'] - variants[o]['final_test_acc']['mean'])} over `{o}` "
                     f"({variants[o]['final_test_acc']['mean']:.2f}%)" for o in single]
            leads[0] = leads[0].replace(" over ", " percentage points over ", 1)
            leads = ", ".join(leads)
            few = [n for n in [best] + single if variants[n]["final_test_acc"]["n"] < 2]
            who = ("each variant has" if len(few) == len(ranked) else
                   " and ".join(f"`{n}`" for n in few) + (" has" if len(few) == 1 else " have"))
            comparison = "this comparison is" if len(single) == 1 else "these comparisons are"
            out.append(f"Its lead is {leads}; but {who} only one finished seed, so "
                       f"no confidence interval is possible and {comparison} not conclusive.")

    if gaps:
        known = {n: g for n, g in gaps.items() if g is not None}
        if known:
            listed = ", ".join(f"`{n}` {signed_points(g)}" for n, g in known.items())
            several = any(s["final_test_acc"]["n"] > 1 for s in variants.values())
            text = (f"Train − test accuracy gap at the final epoch"
                    f"{' (mean over seeds)' if several else ''}: {listed} percentage points.")
            worst = max(known, key=lambda n: known[n])
            others = sorted((g for n, g in known.items() if n != worst), reverse=True)
            if known[worst] > 0:
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
                    text += (f" Its training accuracy is above its test accuracy by "
                             f"{signed_points(known[worst])} points.")
            else:
                text += (" No variant's training accuracy exceeds its test accuracy, so the "
                         "numbers show no overfitting.")
            if augment:
                text += (" (Training accuracy is the running accuracy on augmented batches during "
                         "each epoch; test accuracy is measured on clean images after it.)")
            out.append(text)
    return out


def sweep_findings(rows: list[dict], params: list[str], metric: str = "final_test_acc",
                   word: str = "test") -> list[str]:
    """Per variant (and combination of the other swept settings) and per swept setting: the
    value with the highest and the lowest mean final accuracy (``metric``: on the test set,
    or on the --val images when a sweep chooses a model), and whether the difference
    is larger than seed-to-seed noise (Welch's t-test)."""
    out = []
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
            where = f"`{key[0]}`" + "".join(f" ({o}={fmt_value(x)})" for o, x in zip(others, key[1:]))
            text = (f"{where}: final {word} accuracy is highest at {p}={fmt_value(best)} "
                    f"({means[best]:.2f}%) and lowest at {p}={fmt_value(worst)} "
                    f"({means[worst]:.2f}%)")
            w = welch(done[best], done[worst])
            if w["p"] is None:
                text += f"; {means[best] - means[worst]:+.2f} points, one seed each: no test possible."
            else:
                verdict = ("larger than seed-to-seed noise" if w["ci_lo"] > 0 else
                           "not significant at the 5% level")
                text += (f"; {w['diff']:+.2f} points (95% CI {w['ci_lo']:+.2f} to "
                         f"{w['ci_hi']:+.2f}, Welch's {_p_text(w['p'])}): {verdict}.")
            collapsed = [v for v, m in means.items() if m < 50.0]
            if collapsed:
                text += (" It collapses (mean below 50%) at " +
                         ", ".join(f"{p}={fmt_value(v)}" for v in collapsed) + ".")
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

"""Two points of a sweep compared run by run: the paired difference of a metric.

Runs of two points with the same variant and seed share their initial weights, data order and
augmentation, so their difference is paired. Prints (and with --out writes) a Markdown table:
the mean difference (second point minus first) with its 95% CI and the paired t-test's p, over
all variants pooled and per variant (``normlab.stats.paired``):

    python scripts/paired_points.py results/model-selection/stem-lr \\
        arch=8-16-16-16-12 arch=8s-16-16-16-12 --out results/model-selection/stem-lr-paired.md
"""

from __future__ import annotations

import argparse
import sys

from normlab.errors import ConfigError, RunFolderError
from normlab.runfolder import SweepFolder
from normlab.stats import paired
from normlab.store import atomic_write_text
from normlab.sweep import parse_param


def point_values(rows: list[dict], point: str, metric: str) -> dict[tuple[str, int], float]:
    """{(variant, seed): metric} of the runs of ``point`` (``NAME=VALUE``, parsed as --param
    parses it) that finished; ``rows`` as ``SweepFolder.read_table`` reads them."""
    param = parse_param(point)
    if len(param.values) != 1:
        raise ConfigError(f"point {point!r} has {len(param.values)} values; give one: NAME=VALUE")
    name, value = param.name, param.values[0]
    if not rows or name not in rows[0]:
        raise ConfigError(f"the sweep has no setting {name!r}; give a point as NAME=VALUE")
    out = {(r["variant"], r["seed"]): float(r[metric]) for r in rows
           if r[name] == value and r["status"] == "ok" and r[metric] is not None}
    if not out:
        raise ConfigError(f"no finished run with {point} and a {metric}; check the point's value")
    return out


def paired_table(rows: list[dict], a: str, b: str, metric: str) -> str:
    """The Markdown table of ``b`` minus ``a`` over the runs both have."""
    va, vb = point_values(rows, a, metric), point_values(rows, b, metric)
    keys = sorted(set(va) & set(vb))
    groups = [("all variants", keys)] + [
        (f"`{v}`", [k for k in keys if k[0] == v]) for v in sorted({k[0] for k in keys})]
    lines = [f"`{b}` minus `{a}`, {metric}, paired by variant and seed (percentage points)",
             "", "| runs | pairs | mean diff | 95% CI | paired t-test p |",
             "| --- | --: | --: | --: | --: |"]
    for label, ks in groups:
        r = paired([vb[k] for k in ks], [va[k] for k in ks])
        ci = (f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]" if r["ci_lo"] is not None else "-")
        p = f"{r['p']:.3f}" if r["p"] is not None else "-"
        lines.append(f"| {label} | {r['n']} | {r['diff']:+.3f} | {ci} | {p} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", help="a sweep folder")
    ap.add_argument("a", help="the first point, NAME=VALUE")
    ap.add_argument("b", help="the second point, NAME=VALUE")
    ap.add_argument("--metric", default="final_val_acc",
                    help="a column of the sweep's table (default: final_val_acc)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    try:
        if not SweepFolder.holds_sweep(args.sweep):
            raise ConfigError(f"{args.sweep} holds no sweep table; give a sweep folder")
        rows = SweepFolder(args.sweep).read_table()
        if rows and args.metric not in rows[0]:
            raise ConfigError(f"the sweep's table has no column {args.metric!r}")
        text = paired_table(rows, args.a, args.b, args.metric)
    except (ConfigError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

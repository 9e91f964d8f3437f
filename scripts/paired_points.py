"""Two points of a sweep compared run by run: the paired difference of a metric.

Runs of two points with the same variant and seed share their initial weights, data order and
augmentation, so their difference is paired. Prints (and with --out writes) a Markdown table:
the mean difference (second point minus first) with its 95% CI, the paired t-test's p and the
smallest true difference that test detects with 80% power at the 5% level given the pairs'
spread (``detectable``), over all variants and per variant (``normlab.stats.paired``). Runs of
one seed share their data order across variants, so the row over all variants tests one mean
difference per seed (its variants' mean), with the seeds as the independent units:

    python scripts/paired_points.py results/model-selection/stem-lr \\
        arch=8-16-16-16-12 arch=8s-16-16-16-12 --out results/model-selection/stem-lr-paired.md

Over ``--param l1=...`` (or ``l2``) a variant written with a bare ``+l1`` is named with each
point's lambda (``bn+l1=2e-05``, ``bn+l1=5e-06``); it pairs under the name its sweep's
--variants gave it (``bn+l1``). Only sweeps over one setting compare.

With ``--b-sweep`` the second point comes from another sweep folder (e.g. a new setting against
the point of an earlier sweep that holds the defaults); the two points' configs must then differ
in nothing but the settings the two points name and those listed with ``--differ-in`` (a
combination of settings against the defaults), checked on their config.json.

With ``--more`` (``--b-more``) the first (second) point's runs also come from a folder of the same
sweep run again with other seeds, so a comparison grows its seeds without retraining:

    normlab sweep ... --seeds 8 --first-seed 8 --out results/model-selection/l1-seeds-8-15
    python scripts/paired_points.py results/model-selection/l1 l1=2e-5 l1=5e-6 \\
        --more results/model-selection/l1-seeds-8-15
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from normlab.config import completed, config_diff
from normlab.errors import ConfigError, RunFolderError
from normlab.runfolder import SweepFolder
from normlab.stats import paired
from normlab.store import print_and_save
from normlab.table import format_p
from normlab.sweep_spec import ALIASES, parse_param, point_name, point_specs


def renamed_specs(record: dict, field: str, value) -> dict[str, str]:
    """{the name a sweep gave a variant at the point ``field`` = ``value``: the variant as its
    --variants wrote it} when the sweep sets a bare penalty's default (``l1_default`` or
    ``l2_default``, --param l1=... or l2=...), else {}. Such a sweep names ``bn+l1`` with each
    point's lambda (``bn+l1=2e-05``, ``bn+l1=5e-06``); a variant written with its own lambda
    (``ln+l1=2e-5``) keeps that name at every point. ``record`` is the sweep's sweep.json."""
    return point_specs(record, {field: value}) if field in ALIASES.values() else {}


def point_values(rows: list[dict], point: str, metric: str,
                 record: dict | None = None) -> dict[tuple[str, int], float]:
    """{(variant, seed): metric} of the runs of ``point`` (``NAME=VALUE``, parsed as --param
    parses it) that finished; ``rows`` as ``SweepFolder.read_table`` reads them. With the
    sweep's ``record`` (sweep.json), a variant renamed by a sweep over l1 or l2 is keyed by its
    spec as written (:func:`renamed_specs`), so it pairs across the sweep's points."""
    param = parse_param(point)
    if len(param.values) != 1:
        raise ConfigError(f"point {point!r} has {len(param.values)} values; give one: NAME=VALUE")
    name, value = param.name, param.values[0]
    if not rows or name not in rows[0]:
        raise ConfigError(f"the sweep has no setting {name!r}; give a point as NAME=VALUE")
    specs = renamed_specs(record or {}, param.field, value)
    out: dict[tuple[str, int], float] = {}
    for r in rows:
        if r[name] == value and r["status"] == "ok" and r[metric] is not None:
            key = (specs.get(r["variant"], r["variant"]), r["seed"])
            if key in out:
                raise ConfigError(f"{point} has two runs of {key[0]!r}, seed {key[1]}; "
                                  "compare the points of a sweep over one setting")
            out[key] = float(r[metric])
    if not out and metric == "final_val_acc" and all(r[metric] is None for r in rows):
        raise ConfigError("the sweep's runs have no final_val_acc (it was run without --val); "
                          "give --metric final_test_acc")
    if not out:
        raise ConfigError(f"no finished run with {point} and a {metric}; check the point's value")
    return out


# What may differ between two points' configs without unpairing their runs: which variants and
# seeds a study ran, and how it shared the machine (results equal up to rounding).
_UNPAIRED_OK = {"variants", "seeds", "first_seed", "resolved", "group_size", "workers", "device",
                "data_dir", "diagnostics"}


def check_pairable(config_a: dict, config_b: dict, a: str, b: str,
                   differ_in: tuple[str, ...] = ()) -> None:
    """ConfigError unless two points' config.json differ only in the settings ``a`` and ``b``
    (NAME=VALUE) name, those of ``differ_in`` (Config field names), or in
    :data:`_UNPAIRED_OK`. A field one config predates counts as that folder trained
    (``config.completed``), whichever of the two points is the older."""
    named = {parse_param(a).field, parse_param(b).field, *differ_in}
    keys = [k for k in dict.fromkeys([*config_b, *config_a])
            if k not in _UNPAIRED_OK and k not in named]
    diff = config_diff(completed(config_a), completed(config_b), keys)
    if diff:
        raise ConfigError(f"the points {a} and {b} also differ in {'; '.join(diff)}; compare "
                          "points whose configs differ only in the settings they name, or list "
                          "the others with --differ-in")


def point_folder(point: str) -> str:
    """The folder name the sweep gave a point written NAME=VALUE (``l1=2e-5`` -> ``l1=2e-05``)."""
    param = parse_param(point)
    return point_name({param.name: param.values[0]})


def point_config(sweep: str, point: str) -> dict:
    """The config.json of ``point`` (NAME=VALUE) in the sweep folder ``sweep``; ConfigError
    naming the sweep's points when it has none such."""
    folder = SweepFolder(sweep)
    run = folder.point(point_folder(point))
    if not run.config.exists():
        names = ", ".join(p.path.name for p in folder.points()) or "none"
        raise ConfigError(f"{sweep} has no point {point}; its points: {names}")
    return run.read_saved_config()


def read_sweep(folder: str) -> tuple[SweepFolder, dict, list[str]]:
    """The sweep folder ``folder``, its record (sweep.json) and the names of the settings it
    sweeps; ConfigError (or the record's RunFolderError) naming the fix when it holds no sweep
    (any normlab version's sweep is read)."""
    if not SweepFolder.holds_sweep(folder):
        raise ConfigError(f"{folder} holds no sweep table; give a sweep folder")
    sweep = SweepFolder(folder)
    record = sweep.read_record("re-run the sweep into a new --out")
    return sweep, record, [p.get("name") for p in record.get("params", [])]


def continued_rows(main: str, more: list[str], point: str, rows: list[dict],
                   metric: str) -> list[dict]:
    """``rows`` (the sweep table of the folder ``main``) with the runs of ``point`` that the
    folders ``more`` add: the same sweep run again with other seeds (``--first-seed``). Each
    must sweep the same setting, hold ``point`` with a config that differs from ``main``'s only
    in its seeds (and how it shared the machine), and repeat none of ``main``'s runs of it;
    ConfigError naming the folder and the fix otherwise."""
    if not more:
        return rows
    param = parse_param(point)
    name = param.name
    seen = point_values(rows, point, metric)
    main_config = point_config(main, point)
    out = list(rows)
    for folder in more:
        sweep, _, swept = read_sweep(folder)
        if swept != [name]:
            raise ConfigError(f"{folder} sweeps {', '.join(map(str, swept))}, not {name}; give a "
                              f"folder of the same sweep as {main}, run with other seeds")
        check_pairable(main_config, point_config(folder, point), point, point)
        extra = [r for r in sweep.read_table() if r[name] == param.values[0]]
        if not any(r["status"] == "ok" and r[metric] is not None for r in extra):
            raise ConfigError(f"{folder} has no finished run at {point}; finish that sweep (run "
                              "its command again) or leave the folder out")
        values = point_values(extra, point, metric)
        twice = sorted(set(seen) & set(values))
        if twice:
            raise ConfigError(f"{folder} repeats {main}'s run{'s' * (len(twice) > 1)} "
                              f"{', '.join(f'{v} seed {s}' for v, s in twice)} at {point}; run it "
                              "with other seeds (--first-seed)")
        seen.update(values)
        out += extra
    return out


def paired_table(rows: list[dict], a: str, b: str, metric: str,
                 rows_b: list[dict] | None = None, record: dict | None = None,
                 record_b: dict | None = None) -> str:
    """The Markdown table of ``b`` minus ``a`` over the runs both have (``b``'s runs from
    ``rows_b`` when given, else from ``rows``; ``record``, ``record_b``: the sweeps'
    sweep.json, see :func:`point_values`)."""
    va = point_values(rows, a, metric, record)
    vb = (point_values(rows, b, metric, record) if rows_b is None
          else point_values(rows_b, b, metric, record_b))
    keys = sorted(set(va) & set(vb))
    if not keys:
        raise ConfigError(f"{a} and {b} share no finished run of the same variant and seed; "
                          "compare points that ran the same variants and seeds (--seeds, "
                          "--first-seed)")
    seeds = sorted({k[1] for k in keys})
    # Runs of one seed share their data order across variants, so their differences are not
    # independent pairs: the pooled row tests one mean difference per seed (over its variants).
    per_seed = [statistics.fmean(vb[k] - va[k] for k in keys if k[1] == s) for s in seeds]
    variants = sorted({k[0] for k in keys})
    pooled = ("all variants, mean per seed", per_seed, [0.0] * len(seeds))
    groups = [pooled] + [(f"`{v}`", [vb[k] for k in keys if k[0] == v],
                          [va[k] for k in keys if k[0] == v]) for v in variants]
    lines = [f"`{b}` minus `{a}`, {metric}, paired by variant and seed (percentage points)",
             "", f"The first row tests one difference for each of the {len(seeds)} seeds (the "
             "mean over that seed's variants), as runs of one seed share their data order; the "
             "variants' rows test that variant's runs, each on its own (no adjustment for the "
             "several rows).",
             "", "| runs | pairs | mean diff | 95% CI | paired t-test p | detectable (80% power) |",
             "| --- | --: | --: | --: | --: | --: |"]
    for label, xb, xa in groups:
        r = paired(xb, xa)
        ci = (f"[{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}]" if r["ci_lo"] is not None else "-")
        p = "-" if r["p"] is None else format_p(r["p"], decimals=3) + (
            " (exact sign-flip: the differences are all equal)" if r["ci_lo"] is None else "")
        detectable = f"{r['detectable']:.3f}" if r["detectable"] is not None else "-"
        lines.append(f"| {label} | {r['n']} | {r['diff']:+.3f} | {ci} | {p} | {detectable} |")
    return "\n".join(lines) + "\n"


def _is_paired_table(path: Path) -> bool:
    """Whether ``path`` is a file this script wrote (its first line says how it pairs): the
    one kind of file its --out replaces."""
    try:
        with open(path, encoding="utf-8") as f:
            return "paired by variant and seed" in f.readline()
    except (OSError, UnicodeDecodeError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", help="a sweep folder")
    ap.add_argument("a", help="the first point, NAME=VALUE")
    ap.add_argument("b", help="the second point, NAME=VALUE")
    ap.add_argument("--b-sweep", default=None, metavar="FOLDER",
                    help="read the second point from this sweep folder (default: the first)")
    ap.add_argument("--differ-in", default="", metavar="NAMES",
                    help="with --b-sweep: comma-separated settings (Config fields, e.g. "
                         "rotate,batch_size,lr) the two points may also differ in (default: none)")
    ap.add_argument("--more", action="append", default=[], metavar="FOLDER",
                    help="the first sweep run again with other seeds (--first-seed): its runs of "
                         "the compared points join the first sweep's (with --b-sweep, of the "
                         "first point only: give --b-more too) (repeatable; default: none)")
    ap.add_argument("--b-more", action="append", default=[], metavar="FOLDER",
                    help="the same for --b-sweep's point (repeatable; default: none)")
    ap.add_argument("--metric", default="final_val_acc",
                    help="a column of the sweep's table (default: final_val_acc)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    try:
        if args.out and Path(args.out).exists() and not _is_paired_table(Path(args.out)):
            raise ConfigError(f"--out {args.out} exists and is not a table of this script; "
                              "choose another --out (nothing was overwritten)")
        folders = [args.sweep] + ([args.b_sweep] if args.b_sweep else [])
        opened = [read_sweep(f) for f in folders]
        tables = [s.read_table() for s, _, _ in opened]
        records = [record for _, record, _ in opened]
        for folder, rows, (_, _, swept) in zip(folders, tables, opened):
            if rows and args.metric not in rows[0]:
                raise ConfigError(f"the sweep's table has no column {args.metric!r}")
            if len(swept) != 1:
                raise ConfigError(f"{folder} sweeps {', '.join(map(str, swept))}; compare the "
                                  "points of a sweep over one setting")
        if args.b_sweep:
            configs = [point_config(f, p) for f, p in ((args.sweep, args.a), (args.b_sweep, args.b))]
            check_pairable(*configs, args.a, args.b,
                           tuple(n for n in args.differ_in.split(",") if n))
        if args.b_more and not args.b_sweep:
            raise ConfigError("--b-more continues --b-sweep's folder; give --b-sweep, or --more "
                              "for the first sweep")
        if args.b_sweep and bool(args.more) != bool(args.b_more):
            raise ConfigError("with --b-sweep, --more adds seeds to the first point and --b-more "
                              "to the second; give both, or the new seeds would pair with nothing")
        rows_a = continued_rows(args.sweep, args.more, args.a, tables[0], args.metric)
        rows_b = (continued_rows(args.b_sweep, args.b_more, args.b, tables[1], args.metric)
                  if args.b_sweep else continued_rows(args.sweep, args.more, args.b, tables[0],
                                                      args.metric))
        text = paired_table(rows_a, args.a, args.b, args.metric, rows_b, records[0],
                            records[-1])
    except (ConfigError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_and_save(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

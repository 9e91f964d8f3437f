"""scripts/paired_points.py: two sweep points compared run by run (variant and seed paired)."""

from __future__ import annotations

import json

import pytest
from scipy.stats import ttest_rel


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/paired_points.py")


def _rows(gen_values: dict[tuple[str, str, int], float]) -> list[dict]:
    """Sweep-table rows as SweepFolder.read_table parses them."""
    return [{"arch": arch, "variant": v, "seed": s, "status": "ok", "final_val_acc": acc}
            for (arch, v, s), acc in gen_values.items()]


def test_pooled_row_tests_one_difference_per_seed_and_variant_rows_their_runs(script) -> None:
    """Runs of one seed share their data order across variants, so the row over all variants
    tests one difference per seed: the mean over that seed's variants of (second point − first),
    with scipy's one-sample t-test of those seed means (as many pairs as seeds) and
    min_detectable of their sd; each variant's row is scipy's paired t-test of its runs. A run
    only one point finished is left out."""
    import statistics

    from scipy.stats import ttest_1samp

    from normlab.stats import min_detectable

    a = {("gn", 0): 99.40, ("gn", 1): 99.30, ("gn", 2): 99.44, ("ln", 0): 99.50,
         ("ln", 1): 99.20, ("ln", 2): 99.41, ("ln", 3): 99.1}
    b = {("gn", 0): 99.35, ("gn", 1): 99.32, ("gn", 2): 99.47, ("ln", 0): 99.41,
         ("ln", 1): 99.18, ("ln", 2): 99.42}
    rows = _rows({("8-16", v, s): x for (v, s), x in a.items()}
                 | {("8s-16", v, s): x for (v, s), x in b.items()})
    text = script.paired_table(rows, "arch=8-16", "arch=8s-16", "final_val_acc")
    seeds = [statistics.fmean(b[v, s] - a[v, s] for v in ("gn", "ln")) for s in (0, 1, 2)]
    res = ttest_1samp(seeds, 0.0)
    pooled = next(line for line in text.splitlines()
                  if line.startswith("| all variants, mean per seed"))
    detectable = min_detectable(statistics.stdev(seeds), 3)
    assert f"| 3 | {statistics.fmean(seeds):+.3f} |" in pooled
    assert pooled.endswith(f"| {res.pvalue:.3f} | {detectable:.3f} |")
    gn = ttest_rel([b["gn", s] for s in (0, 1, 2)], [a["gn", s] for s in (0, 1, 2)])
    row = next(line for line in text.splitlines() if line.startswith("| `gn`"))
    assert row.startswith("| `gn` | 3 |") and f"| {gn.pvalue:.3f} |" in row
    assert "| `ln` | 3 |" in text


def test_differences_without_spread_get_the_exact_sign_flip_test(script) -> None:
    """Where every pair of a row differs by the same amount (here one validation step on both
    seeds), the row has no t interval and gives the exact sign-flip test's p (0.5 for 2 pairs),
    saying so."""
    a = {("gn", 0): 99.41, ("gn", 1): 99.38}
    b = {("gn", 0): 99.44, ("gn", 1): 99.41}
    rows = _rows({("8-16", v, s): x for (v, s), x in a.items()}
                 | {("8s-16", v, s): x for (v, s), x in b.items()})
    text = script.paired_table(rows, "arch=8-16", "arch=8s-16", "final_val_acc")
    row = next(line for line in text.splitlines() if line.startswith("| `gn`"))
    assert row == ("| `gn` | 2 | +0.030 | - | 0.500 (exact sign-flip: the differences are all "
                   "equal) | - |")


def test_bad_input_is_a_one_line_error(tmp_path, script, capsys) -> None:
    """A folder without a sweep table or an unknown point exits 2 with one line on stderr."""
    assert script.main([str(tmp_path), "arch=8-16", "arch=8s-16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no sweep table" in err and "\n" not in err
    rows = _rows({("8-16", "gn", 0): 99.0, ("8s-16", "gn", 0): 99.1})
    with pytest.raises(script.ConfigError, match="no setting 'lr'"):
        script.paired_table(rows, "lr=1", "arch=8s-16", "final_val_acc")


def test_second_point_from_another_sweep(script) -> None:
    """With rows_b the second point's runs come from the other table, paired by variant and
    seed with the first point's runs."""
    rows_a = [{"rotate": 10.0, "variant": "gn", "seed": s, "status": "ok", "final_val_acc": x}
              for s, x in ((0, 99.40), (1, 99.30))]
    rows_b = [{"arch": "8s4-16", "variant": "gn", "seed": s, "status": "ok", "final_val_acc": x}
              for s, x in ((0, 99.50), (1, 99.36))]
    text = script.paired_table(rows_a, "rotate=10", "arch=8s4-16", "final_val_acc", rows_b)
    pooled = next(line for line in text.splitlines() if line.startswith("| all variants"))
    assert "| 2 | +0.080 |" in pooled


def test_points_of_two_sweeps_must_differ_only_in_what_they_name(script) -> None:
    """check_pairable accepts configs that differ in the named settings and in the variants,
    seeds and machine sharing, and refuses one that also differs in another setting, naming it."""
    from normlab.config import Config
    base = Config(val=10_000).to_dict()
    b = {**base, "arch": "8s4-16-16-16-12", "seeds": 4, "workers": 2}
    script.check_pairable(base, b, "rotate=10", "arch=8s4-16-16-16-12")
    with pytest.raises(ValueError, match="lr: saved 0.1, now 0.2"):
        script.check_pairable(base, {**b, "lr": 0.2}, "rotate=10", "arch=8s4-16-16-16-12")
    # A combination: the settings that moved with the named one are listed.
    script.check_pairable(base, {**b, "lr": 0.2}, "rotate=10", "arch=8s4-16-16-16-12", ("lr",))


def test_a_point_older_than_weight_decay_pairs_only_with_points_without_it(script) -> None:
    """A config.json written before --weight-decay existed (no such key) trained without decay:
    whichever of the two points it is, check_pairable refuses to pair it with a point that
    trained with the default decay, naming weight_decay, and accepts one with weight_decay 0."""
    from normlab.config import Config
    new = Config(val=10_000).to_dict()
    old = {k: v for k, v in new.items() if k != "weight_decay"}
    assert new["weight_decay"] > 0
    for first, second in ((old, new), (new, old)):
        with pytest.raises(ValueError, match="weight_decay"):
            script.check_pairable(first, second, "rotate=10", "rotate=15")
    for first, second in ((old, {**new, "weight_decay": 0.0}), ({**new, "weight_decay": 0.0}, old)):
        script.check_pairable(first, second, "rotate=10", "rotate=15")


def _l1_record(variants: tuple[str, ...], values: tuple[float, ...]) -> dict:
    """A sweep's record over --param l1=VALUES of ``variants``."""
    from normlab import __version__
    from normlab.config import Config
    return {"normlab_version": __version__, "scale_lr": False,
            "base_config": Config(variants=variants, val=10).to_dict(),
            "params": [{"name": "l1", "values": list(values)}]}


def _l1_rows(record: dict, accs: dict[tuple[float, str, int], float]) -> list[dict]:
    """Sweep-table rows of {(lambda, spec as written, seed): accuracy}, each variant named as
    the sweep names it at that lambda."""
    from normlab.variants import parse_variant
    l2 = record["base_config"]["l2_default"]
    return [{"l1": lam, "variant": parse_variant(spec, lam, l2).name, "seed": seed,
             "status": "ok", "final_val_acc": acc} for (lam, spec, seed), acc in accs.items()]


def test_a_sweep_over_the_l1_default_pairs_the_renamed_variant(script) -> None:
    """Over --param l1=..., a bare `bn+l1` is named with each point's lambda (`bn+l1=2e-05`,
    `bn+l1=5e-06`): with the sweep's record its runs pair by seed under `bn+l1`; a variant
    written with its own lambda keeps one name at every point, even at the point whose lambda
    equals its own (the control `ln+l1=2e-5`), and pairs too."""
    record = _l1_record(("bn+l1", "ln+l1=2e-5"), (2e-5, 5e-6))
    rows = _l1_rows(record, {(2e-5, "bn+l1", 0): 99.40, (2e-5, "bn+l1", 1): 99.30,
                             (5e-6, "bn+l1", 0): 99.46, (5e-6, "bn+l1", 1): 99.34,
                             (2e-5, "ln+l1=2e-5", 0): 99.5, (5e-6, "ln+l1=2e-5", 0): 99.6})
    assert {r["variant"] for r in rows} == {"bn+l1=2e-05", "bn+l1=5e-06", "ln+l1=2e-05"}
    text = script.paired_table(rows, "l1=2e-5", "l1=5e-6", "final_val_acc", record=record)
    assert "| `bn+l1` | 2 | +0.050 |" in text and "| all variants, mean per seed | 2 |" in text
    assert "| `ln+l1=2e-5` | 1 | +0.100 |" in text   # as the sweep's --variants wrote it
    assert script.renamed_specs(record, "lr", 0.1) == {}
    l2 = {**record, "base_config": {**record["base_config"], "variants": ["gn+l2", "bn+l1"]}}
    assert script.renamed_specs(l2, "l2_default", 1e-3) == {"gn+l2=0.001": "gn+l2",
                                                            "bn+l1=2e-05": "bn+l1"}
    # Without the record the renamed runs do not pair: nothing in common but the control.
    text = script.paired_table(rows, "l1=2e-5", "l1=5e-6", "final_val_acc")
    assert "| all variants, mean per seed | 1 |" in text   # one variant in common
    from normlab.config import Config
    base = Config(val=10_000).to_dict()
    script.check_pairable(base, {**base, "l1_default": 5e-6}, "l1=2e-5", "l1=5e-6")
    with pytest.raises(ValueError, match="l1_default"):
        script.check_pairable(base, {**base, "l1_default": 5e-6}, "lr=0.1", "lr=0.1")


def test_points_without_a_common_run_are_a_one_line_error(script) -> None:
    """Two points that share no (variant, seed), e.g. seeds 0..1 against --first-seed 2, are a
    ConfigError naming --first-seed, not an empty table or a traceback; two runs of one variant
    and seed at a point (a grid sweep read as one setting) are refused too."""
    rows = [{"lr": lr, "variant": "gn", "seed": s, "status": "ok", "final_val_acc": 99.0 + s}
            for lr, seeds in ((0.1, (0, 1)), (0.2, (2, 3))) for s in seeds]
    with pytest.raises(script.ConfigError, match="share no finished run.*--first-seed"):
        script.paired_table(rows, "lr=0.1", "lr=0.2", "final_val_acc")
    with pytest.raises(script.ConfigError, match="two runs of 'gn', seed 0"):
        script.paired_table(rows + rows[:1], "lr=0.1", "lr=0.2", "final_val_acc")


def _write_sweep(path, record: dict, rows: list[dict]) -> None:
    """A sweep folder: its record, its table and each point's config."""
    from normlab import __version__
    from normlab.runfolder import SweepFolder
    from normlab.sweep_spec import point_name
    folder = SweepFolder(path)
    folder.create(record)
    full = [{c: r.get(c) for c in ("variant", "seed", "status", "final_val_acc", "best_val_acc",
                                    "final_test_acc", "best_test_acc", "final_test_loss",
                                    "message")} | {"l1": r["l1"]} for r in rows]
    folder.write_table(("l1",), full)
    for lam in record["params"][0]["values"]:
        point = folder.point(point_name({"l1": lam}))
        point.path.mkdir(parents=True)
        config = {**record["base_config"], "l1_default": lam,
                  "resolved": {"normlab_version": __version__}}
        point.config.write_text(json.dumps(config))


def test_main_pairs_a_point_of_another_sweep_by_its_folder(script, tmp_path, capsys) -> None:
    """main() with --b-sweep reads each point's config.json from the folder the sweep named
    (`l1=2e-5` is `points/l1=2e-05`) and pairs the renamed variant; a point the sweep lacks,
    and a sweep over two settings, exit 2 with one line naming the problem."""
    a, b = _l1_record(("bn+l1",), (2e-5,)), _l1_record(("bn+l1",), (4e-5, 8e-5))
    _write_sweep(tmp_path / "a", a, _l1_rows(a, {(2e-5, "bn+l1", 0): 99.40,
                                                 (2e-5, "bn+l1", 1): 99.30}))
    _write_sweep(tmp_path / "b", b, _l1_rows(b, {(4e-5, "bn+l1", 0): 99.45,
                                                 (4e-5, "bn+l1", 1): 99.33}))
    out = tmp_path / "paired.md"
    argv = [str(tmp_path / "a"), "l1=2e-5", "l1=4e-5", "--b-sweep", str(tmp_path / "b")]
    assert script.main([*argv, "--out", str(out)]) == 0
    assert "| `bn+l1` | 2 | +0.040 |" in out.read_text()
    capsys.readouterr()
    assert script.main([*argv[:2], "l1=3e-5", *argv[3:]]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no point l1=3e-5; its points: l1=4e-05, l1=8e-05" in err and "\n" not in err
    grid = {**a, "params": [*a["params"], {"name": "lr", "values": [0.1]}]}
    from normlab.runfolder import SweepFolder
    SweepFolder(tmp_path / "a").record.write_text(json.dumps(grid))
    assert script.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "sweeps l1, lr; compare the points of a sweep over one setting" in err


def test_out_replaces_only_its_own_tables_and_a_missing_metric_names_the_flag(
        script, tmp_path, capsys) -> None:
    """--out writes over a table this script wrote (a re-run of the same command), but not over
    any other file: that exits 2 with one line and leaves the file as it was. A sweep run without
    --val has no final_val_acc (the default --metric): the error says so and names --metric."""
    a = _l1_record(("bn+l1",), (2e-5, 4e-5))
    _write_sweep(tmp_path / "a", a, _l1_rows(a, {(2e-5, "bn+l1", 0): 99.40,
                                                 (2e-5, "bn+l1", 1): 99.30,
                                                 (4e-5, "bn+l1", 0): 99.45,
                                                 (4e-5, "bn+l1", 1): 99.33}))
    argv = [str(tmp_path / "a"), "l1=2e-5", "l1=4e-5"]
    out = tmp_path / "paired.md"
    assert script.main([*argv, "--out", str(out)]) == 0
    assert script.main([*argv, "--out", str(out)]) == 0   # its own table: written again
    keep = tmp_path / "keep.txt"
    keep.write_text("precious\n")
    capsys.readouterr()
    assert script.main([*argv, "--out", str(keep)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a table of this script; choose another --out" in err and "\n" not in err
    assert keep.read_text() == "precious\n"
    rows = [{**r, "final_test_acc": r["final_val_acc"], "final_val_acc": None}
            for r in _l1_rows(a, {(2e-5, "bn+l1", 0): 99.4, (4e-5, "bn+l1", 0): 99.5})]
    # (a sweep without --val)
    _write_sweep(tmp_path / "test-only", a, rows)
    assert script.main([str(tmp_path / "test-only"), "l1=2e-5", "l1=4e-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("the sweep's runs have no final_val_acc (it was run without --val); "
                        "give --metric final_test_acc"), err


def test_more_folders_add_seeds_to_a_point(script, tmp_path, capsys) -> None:
    """--more adds the runs of a folder of the same sweep run with other seeds to both points
    (--b-more to --b-sweep's point): the table then pairs every seed. A folder that repeats a
    seed, trained another config, sweeps another setting or has no finished run of the point,
    --b-more without --b-sweep, and only one of --more and --b-more with --b-sweep, exit 2 with
    one line naming the problem and the fix."""
    record = _l1_record(("bn+l1",), (2e-5, 5e-6))
    first = {(2e-5, "bn+l1", 0): 99.40, (2e-5, "bn+l1", 1): 99.30,
             (5e-6, "bn+l1", 0): 99.46, (5e-6, "bn+l1", 1): 99.34}
    _write_sweep(tmp_path / "a", record, _l1_rows(record, first))
    later = {**record, "base_config": {**record["base_config"], "seeds": 2, "first_seed": 2}}
    more = {(2e-5, "bn+l1", 2): 99.50, (2e-5, "bn+l1", 3): 99.20,
            (5e-6, "bn+l1", 2): 99.42, (5e-6, "bn+l1", 3): 99.20}
    _write_sweep(tmp_path / "more", later, _l1_rows(later, more))
    argv = [str(tmp_path / "a"), "l1=2e-5", "l1=5e-6"]
    assert script.main([*argv, "--more", str(tmp_path / "more")]) == 0
    diffs = [first[5e-6, "bn+l1", s] - first[2e-5, "bn+l1", s] for s in (0, 1)]
    diffs += [more[5e-6, "bn+l1", s] - more[2e-5, "bn+l1", s] for s in (2, 3)]
    assert f"| `bn+l1` | 4 | {sum(diffs) / 4:+.3f} |" in capsys.readouterr().out

    def error(*args: str) -> str:
        assert script.main([*argv, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        return err

    _write_sweep(tmp_path / "again", later, _l1_rows(later, {**more, (2e-5, "bn+l1", 1): 99.3}))
    assert "repeats" in error("--more", str(tmp_path / "again"))
    assert "bn+l1=2e-05 seed 1 at l1=2e-5" in error("--more", str(tmp_path / "again"))
    other = {**later, "base_config": {**later["base_config"], "lr": 0.2}}
    _write_sweep(tmp_path / "other", other, _l1_rows(other, more))
    assert "lr: saved 0.1, now 0.2" in error("--more", str(tmp_path / "other"))
    assert "--b-more continues --b-sweep" in error("--b-more", str(tmp_path / "more"))
    failed = _l1_rows(later, more)
    for r in failed:
        r["status"], r["final_val_acc"] = "failed", None
    _write_sweep(tmp_path / "failed", later, failed)
    assert "has no finished run at l1=2e-5" in error("--more", str(tmp_path / "failed"))
    _write_sweep(tmp_path / "lr", later, _l1_rows(later, more))
    from normlab.runfolder import SweepFolder
    SweepFolder(tmp_path / "lr").record.write_text(
        json.dumps({**later, "params": [{"name": "lr", "values": [0.1]}]}))
    assert "sweeps lr, not l1" in error("--more", str(tmp_path / "lr"))
    b_first = _l1_record(("bn+l1",), (5e-6,))
    _write_sweep(tmp_path / "b", b_first, _l1_rows(b_first, {(5e-6, "bn+l1", 0): 99.46,
                                                             (5e-6, "bn+l1", 1): 99.34}))
    with_b = [*argv, "--b-sweep", str(tmp_path / "b"), "--more", str(tmp_path / "more")]
    assert "give both" in error(*with_b[3:])   # --more alone would pair with nothing
    assert script.main([*with_b, "--b-more", str(tmp_path / "more")]) == 0
    assert f"| `bn+l1` | 4 | {sum(diffs) / 4:+.3f} |" in capsys.readouterr().out

"""scripts/paired_points.py: two sweep points compared run by run (variant and seed paired)."""

from __future__ import annotations

import pytest
from scipy.stats import ttest_rel


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("scripts/paired_points.py")


def _rows(gen_values: dict[tuple[str, str, int], float]) -> list[dict]:
    """Sweep-table rows as SweepFolder.read_table parses them."""
    return [{"arch": arch, "variant": v, "seed": s, "status": "ok", "final_val_acc": acc}
            for (arch, v, s), acc in gen_values.items()]


def test_pooled_and_per_variant_rows_are_the_paired_t_test(script) -> None:
    """The pooled row pairs every (variant, seed) both points finished; its mean difference and
    p are scipy's paired t-test of the second point against the first; a run only one point
    finished is left out."""
    a = {("gn", 0): 99.40, ("gn", 1): 99.30, ("ln", 0): 99.50, ("ln", 1): 99.20, ("ln", 2): 99.1}
    b = {("gn", 0): 99.35, ("gn", 1): 99.32, ("ln", 0): 99.41, ("ln", 1): 99.18}
    rows = _rows({("8-16", v, s): x for (v, s), x in a.items()}
                 | {("8s-16", v, s): x for (v, s), x in b.items()})
    text = script.paired_table(rows, "arch=8-16", "arch=8s-16", "final_val_acc")
    keys = sorted(b)
    res = ttest_rel([b[k] for k in keys], [a[k] for k in keys])
    diff = sum(b[k] - a[k] for k in keys) / len(keys)
    pooled = next(line for line in text.splitlines() if line.startswith("| all variants"))
    assert f"| 4 | {diff:+.3f} |" in pooled and pooled.endswith(f"| {res.pvalue:.3f} |")
    assert "| `gn` | 2 |" in text and "| `ln` | 2 |" in text


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


def test_a_sweep_over_the_l1_default_pairs_the_renamed_variant(script) -> None:
    """Over --param l1=..., `bn+l1` is named with each point's lambda: the runs pair by variant
    with the lambda written bare and seed, an explicit lambda other than the point's stays
    its own variant, and two variants that become one name are refused."""
    rows = [{"l1": lam, "variant": f"{v}={lam:g}" if v == "bn+l1" else v, "seed": s,
             "status": "ok", "final_val_acc": acc}
            for lam, v, s, acc in ((2e-5, "bn+l1", 0, 99.40), (2e-5, "bn+l1", 1, 99.30),
                                   (5e-6, "bn+l1", 0, 99.46), (5e-6, "bn+l1", 1, 99.34),
                                   (2e-5, "gn", 0, 99.5), (5e-6, "gn", 0, 99.5))]
    rows += [{**r, "variant": "bn+l1=5e-05"} for r in rows if r["variant"] == "gn"]
    text = script.paired_table(rows, "l1=2e-5", "l1=5e-6", "final_val_acc")
    assert "| `bn+l1` | 2 | +0.050 |" in text
    assert "| `bn+l1=5e-05` | 1 | +0.000 |" in text and "| all variants | 4 |" in text
    assert script.paired_name("bn+l1=5e-06+l2=0.0005", "l1_default", 5e-6) == "bn+l1+l2=0.0005"
    assert script.paired_name("bn+l1=5e-06", "lr", 5e-6) == "bn+l1=5e-06"
    # The point's folder, as the sweep named it: --b-sweep reads its config.json there.
    assert script.point_folder("l1=2e-5") == "l1=2e-05"
    assert script.point_folder("arch=8s4-16-16-16-12") == "arch=8s4-16-16-16-12"
    clash = rows + [{**rows[0], "variant": "bn+l1"}]
    with pytest.raises(script.ConfigError, match="both 'bn\\+l1'"):
        script.paired_table(clash, "l1=2e-5", "l1=5e-6", "final_val_acc")
    from normlab.config import Config
    base = Config(val=10_000).to_dict()
    script.check_pairable(base, {**base, "l1_default": 5e-6}, "l1=2e-5", "l1=5e-6")
    with pytest.raises(ValueError, match="l1_default"):
        script.check_pairable(base, {**base, "l1_default": 5e-6}, "lr=0.1", "lr=0.1")

"""Tests of normlab.config: variant specs and the Config dataclass (validation, round trip)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from normlab.config import DATASET_NAMES, Config, ModelConfig, config_diff
from normlab.errors import ConfigError
from normlab.norms import NORMS
from normlab.variants import DEFAULT_L1, DEFAULT_L2, Variant, parse_variant, parse_variants

# ----------------------------------------------------------------------------------------------
# parse_variant


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("gn", Variant("gn", "gn", 0.0, 0.0)),
        ("ln", Variant("ln", "ln", 0.0, 0.0)),
        ("bn", Variant("bn", "bn", 0.0, 0.0)),
        ("bn+l1", Variant("bn+l1=2e-05", "bn", DEFAULT_L1, 0.0)),
        ("bn+l1=5e-5", Variant("bn+l1=5e-05", "bn", 5e-5, 0.0)),
        ("gn+l2", Variant("gn+l2=0.0005", "gn", 0.0, DEFAULT_L2)),
        ("gn+l2=1e-4", Variant("gn+l2=0.0001", "gn", 0.0, 1e-4)),
        ("bn+l1=1e-5+l2=1e-4", Variant("bn+l1=1e-05+l2=0.0001", "bn", 1e-5, 1e-4)),
        # order of terms does not matter: the canonical name lists l1 first
        ("bn+l2=1e-4+l1=1e-5", Variant("bn+l1=1e-05+l2=0.0001", "bn", 1e-5, 1e-4)),
        ("ln+l1=0.00002", Variant("ln+l1=2e-05", "ln", 2e-5, 0.0)),
        ("gbn", Variant("gbn", "gbn", 0.0, 0.0)),
        # +ws, the weight-standardization modifier: canonically right after the norm
        ("gn+ws", Variant("gn+ws", "gn", 0.0, 0.0, True)),
        ("ln+ws+l1", Variant("ln+ws+l1=2e-05", "ln", DEFAULT_L1, 0.0, True)),
        ("ln+l1+ws", Variant("ln+ws+l1=2e-05", "ln", DEFAULT_L1, 0.0, True)),
        ("bn+l2=1e-4+ws+l1=1e-5", Variant("bn+ws+l1=1e-05+l2=0.0001", "bn", 1e-5, 1e-4, True)),
        ("gbn+ws", Variant("gbn+ws", "gbn", 0.0, 0.0, True)),
    ],
)
def test_parse_variant(spec: str, expected: Variant) -> None:
    """A spec parses to its norm and penalties, with a canonical name (lambdas written with %g)."""
    assert parse_variant(spec) == expected


def test_defaults_are_as_documented() -> None:
    """A bare +l1 uses lambda 2e-5 and a bare +l2 weight decay 5e-4 (the Config defaults)."""
    assert DEFAULT_L1 == 2e-5 and DEFAULT_L2 == 5e-4
    assert Config().l1_default == DEFAULT_L1 and Config().l2_default == DEFAULT_L2


def test_parse_variant_uses_given_defaults() -> None:
    """A bare +l1 / +l2 takes the l1_default / l2_default passed in, and they show in the name."""
    v = parse_variant("gn+l1+l2", l1_default=3e-6, l2_default=7e-3)
    assert v == Variant("gn+l1=3e-06+l2=0.007", "gn", 3e-6, 7e-3)


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("  GN ", "gn"),
        ("LN", "ln"),
        ("\tBn+L1=5E-5\n", "bn+l1=5e-05"),
        ("Gn+L2", "gn+l2=0.0005"),
        (" GN+WS ", "gn+ws"),
    ],
)
def test_parse_variant_case_and_whitespace(spec: str, name: str) -> None:
    """Specs are case-insensitive and surrounding whitespace is ignored."""
    assert parse_variant(spec).name == name


@pytest.mark.parametrize(
    "spec", ["gn", "bn+l1", "bn+l1=5e-5", "gn+l2=1e-4", "bn+l1=1e-5+l2=1e-4", "in+l2=3", "none",
             "gbn", "gn+ws+l1=2e-05", "gbn+l2=1e-3+ws", "none+ws", "bn+l1+l2+ws"]
)
def test_canonical_name_round_trips(spec: str) -> None:
    """Parsing a variant's canonical name gives the same variant back, and the canonical name is
    its own canonical name (norm, then +ws, then +l1, then +l2)."""
    v = parse_variant(spec)
    assert parse_variant(v.name) == v
    assert parse_variant(v.name).name == v.name
    order = [t.split("=")[0] for t in v.name.split("+")[1:]]
    assert order == [t for t in ("ws", "l1", "l2") if t in order]


@pytest.mark.parametrize("norm", list(NORMS))
def test_every_norm_is_a_variant(norm: str) -> None:
    """Every norm of the model is accepted as a variant on its own."""
    assert parse_variant(norm) == Variant(norm, norm)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("xn", "unknown norm 'xn'"),
        ("batchnorm+l1", "unknown norm 'batchnorm'"),
        ("bn+l3", "unknown term 'l3'"),
        ("bn+dropout", "unknown term 'dropout'"),
        ("bn+", "unknown term ''"),
        ("bn+l1=abc", "'abc' is not a number"),
        ("bn+l1=\u0662e-5", "is not a number"),      # a non-ASCII digit, as the flags refuse it
        ("bn+l2=1e-4x", "is not a number"),
        ("bn+l1=-1e-5", "finite number >= 0"),
        ("gn+l2=-0.1", "finite number >= 0"),
        ("bn+l1=nan", "finite number >= 0"),
        ("bn+l1=inf", "finite number >= 0"),
        ("bn+l1+l1", "l1 given twice; give +l1 once"),
        ("gn+l2=1e-4+l2=1e-3", "l2 given twice"),
        ("gn+ws+ws", "ws given twice"),
        ("gn+ws=1", "ws takes no value; write +ws"),
        ("gn+ws=", "ws takes no value"),
        ("gn+wsx", "unknown term 'wsx'"),
        ("ws+gn", "+ws comes after the norm, e.g. gn+ws"),
        ("ws", "unknown norm 'ws'"),
        ("", "empty variant"),
        ("   ", "empty variant"),
    ],
)
def test_parse_variant_errors(spec: str, fragment: str) -> None:
    """Bad specs raise ConfigError (a ValueError) whose message names the problem."""
    with pytest.raises(ConfigError) as e:
        parse_variant(spec)
    assert isinstance(e.value, ValueError)
    assert fragment in str(e.value), str(e.value)


def test_unknown_norm_message_lists_norms() -> None:
    """The unknown-norm message lists every valid norm."""
    with pytest.raises(ConfigError) as e:
        parse_variant("xn")
    assert all(n in str(e.value) for n in NORMS)


# ----------------------------------------------------------------------------------------------
# parse_variants


def test_parse_variants_string_and_list() -> None:
    """A comma string and the equivalent list parse to the same variants, in order."""
    from_str = parse_variants("gn, ln ,bn+l1")
    from_list = parse_variants(["gn", "ln", "bn+l1"])
    assert from_str == from_list
    assert [v.name for v in from_str] == ["gn", "ln", "bn+l1=2e-05"]


def test_variant_specs_map_each_name_to_the_variant_as_written() -> None:
    """variant_specs gives each canonical name (with the penalty defaults given, as a sweep's
    point sets them) the variant as written, trimmed and in lower case: a bare penalty takes the
    point's lambda into its name, one written with its own lambda keeps it."""
    from normlab.variants import variant_specs

    assert variant_specs(["bn+l1", " LN+l1=2e-5 ", "gn"], l1_default=5e-6) == {
        "bn+l1=5e-06": "bn+l1", "ln+l1=2e-05": "ln+l1=2e-5", "gn": "gn"}
    assert variant_specs(["gn+l2"], l2_default=1e-3) == {"gn+l2=0.001": "gn+l2"}


@pytest.mark.parametrize(
    ("specs", "dupe"),
    [
        ("gn,gn", "gn"),
        ("gn,GN ", "gn"),
        ("bn+l1,bn+l1=2e-5", "bn+l1=2e-05"),  # the same variant written two ways
        ("bn+l1=1e-5+l2=1e-4,ln,bn+l2=1e-4+l1=1e-5", "bn+l1=1e-05+l2=0.0001"),
    ],
)
def test_parse_variants_duplicates(specs: str, dupe: str) -> None:
    """A variant listed twice (after canonicalization) is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="listed twice") as e:
        parse_variants(specs)
    assert repr(dupe) in str(e.value)


@pytest.mark.parametrize("specs", ["", "gn,", [], ()])
def test_parse_variants_empty(specs) -> None:
    """An empty list, or an empty item in a comma string, is a ConfigError."""
    with pytest.raises(ConfigError):
        parse_variants(specs)


# ----------------------------------------------------------------------------------------------
# Config validation


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"epochs": -3}, "--epochs"),
        ({"epochs": 10_001}, "--epochs 10001 is more than 10,000; give at most that"),
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": 10**20}, "--batch-size 100000000000000000000 is more than 2,147,483,647"),
        ({"eval_batch_size": 2**31}, "--eval-batch-size 2147483648 is more than"),
        ({"seeds": 0}, "--seeds"),
        ({"lr": 0.0}, "--lr"),
        ({"lr": -0.1}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"lr": float("inf")}, "--lr"),
        ({"l1_default": -1e-5}, "--l1"),
        ({"l2_default": -1e-4}, "--l2"),
        ({"weight_decay": -1e-4}, "--weight-decay"),
        ({"weight_decay": float("nan")}, "--weight-decay"),
        ({"ema": 1.0}, "--ema must be a number in [0, 1)"),
        ({"ema": -0.5}, "--ema"),
        ({"ema": float("nan")}, "--ema"),
        ({"ema": "0.9"}, "--ema"),
        ({"ema": True}, "--ema"),
        ({"clean_fraction": 1.0}, "--clean-fraction must be a number in [0, 1) (0: every step"),
        ({"clean_fraction": -0.1}, "--clean-fraction"),
        ({"clean_fraction": float("nan")}, "--clean-fraction"),
        ({"clean_fraction": "0.2"}, "--clean-fraction"),
        ({"clean_fraction": True}, "--clean-fraction"),
        ({"l1_default": float("nan")}, "--l1"),
        ({"epochs": 2.5}, "--epochs"),
        ({"epochs": True}, "--epochs"),
        ({"first_seed": -1}, "--seed"),
        ({"warmup": 0.0}, "--warmup"),
        ({"warmup": 1.0}, "--warmup"),
        ({"dataset": "cifar10"}, "unknown dataset 'cifar10'"),
        ({"train_subset": 0}, "--train-subset"),
        ({"variants": ("gn", "xn")}, "unknown norm 'xn'"),
        ({"variants": ("gn", "gn")}, "listed twice"),
        ({"variants": ()}, "no variants"),
        ({"ghost_batch": 1}, "--ghost-batch must be a whole number >= 2"),
        ({"ghost_batch": 0}, "--ghost-batch"),
        ({"ghost_batch": 4.0}, "--ghost-batch"),
        ({"ghost_batch": True}, "--ghost-batch"),
    ],
)
def test_config_rejects(changes: dict, fragment: str) -> None:
    """Invalid settings raise ConfigError when the Config is made, naming the setting."""
    with pytest.raises(ConfigError) as e:
        Config(**changes)
    assert fragment in str(e.value), str(e.value)


def test_config_unknown_dataset_lists_valid_ones() -> None:
    """The unknown-dataset message lists every valid dataset."""
    with pytest.raises(ConfigError) as e:
        Config(dataset="cifar10")
    assert all(name in str(e.value) for name in DATASET_NAMES)


def test_ghost_batch_message_is_one_line_with_the_fix() -> None:
    """A ghost batch below 2 is one line naming --ghost-batch, the value and the fix; 2 is fine,
    and the default is 16."""
    with pytest.raises(ConfigError) as e:
        Config(variants=("gbn",), ghost_batch=1)
    assert str(e.value) == ("--ghost-batch must be a whole number >= 2 (images per virtual batch "
                            "of gbn), got 1; use e.g. --ghost-batch 16")
    assert Config(variants=("gbn",), ghost_batch=2).ghost_batch == 2
    assert Config().ghost_batch == ModelConfig().ghost_batch == 16


@pytest.mark.parametrize("variants", [("bn",), ("gn", "bn+l1"), ("ln", "bn+l2=1e-4"), ("gbn",),
                                      ("gn+ws", "gbn+ws+l1")])
def test_batch_size_one_rejected_with_bn(variants) -> None:
    """--batch-size 1 with any bn or gbn variant is a ConfigError that names the fix."""
    with pytest.raises(ConfigError, match="--batch-size 1") as e:
        Config(variants=variants, batch_size=1)
    assert "gn" in str(e.value) and "2" in str(e.value)


@pytest.mark.parametrize("variants", [("gn",), ("ln", "gn+l1"), ("in", "none"), ("gn+ws",)])
def test_batch_size_one_allowed_without_bn(variants) -> None:
    """Batch size 1 is fine for batch-independent norms."""
    assert Config(variants=variants, batch_size=1).batch_size == 1


def test_train_subset_one_rejected_with_bn() -> None:
    """A training subset of one image cannot train bn, nor one that --val leaves one image of;
    both are fine for gn, and two images for bn."""
    with pytest.raises(ConfigError, match=r"--train-subset 1 leaves 1 training image"):
        Config(variants=("bn",), train_subset=1)
    with pytest.raises(ConfigError, match=r"--train-subset 2 with --val 1 leaves 1 training image, "
                                          r"and BatchNorm needs 2 or more"):
        Config(variants=("gn", "bn"), train_subset=2, val=1)
    assert Config(variants=("gn",), train_subset=1).train_subset == 1
    assert Config(variants=("gn",), train_subset=2, val=1).val == 1
    assert Config(variants=("bn",), train_subset=3, val=1).val == 1


def test_val_leaving_one_image_of_the_dataset_is_refused_with_bn() -> None:
    """Without --train-subset, the size check at data load (study_data.check_split_sizes) refuses a
    --val that leaves BatchNorm one of the dataset's images, naming both fixes; two are fine,
    and gn trains on one."""
    from normlab.study_data import check_split_sizes

    with pytest.raises(ConfigError, match=r"^60,000 images with --val 59999 leaves 1 training "
                                          r"image, and BatchNorm needs 2 or more; train on more "
                                          r"images, or hold out fewer$"):
        check_split_sizes(Config(variants=("gn", "bn+l1"), val=59999), 60000)
    check_split_sizes(Config(variants=("bn",), val=59998), 60000)
    check_split_sizes(Config(variants=("gn",), val=59999), 60000)


def test_resume_compares_variants_as_runs() -> None:
    """continuation_diff takes variants that name the same runs in the same order as equal (case,
    spaces, a bare +l1 and its default written out), and others, or another order, as different;
    as written (a sweep's base, where a bare +l1 follows the swept lambda) only case and spaces
    may differ."""
    from normlab.config import continuation_diff

    saved = Config(variants=("bn", "gn", "ln+l1")).to_dict()
    for same in (("BN", " gn", "ln+l1=2e-05"), ("bn", "gn", "LN+L1")):
        assert continuation_diff(saved, {**saved, "variants": list(same)}) == []
    for other in (("gn", "bn", "ln+l1"), ("bn", "gn", "ln+l1=1e-4"), ("bn", "gn")):
        diff = continuation_diff(saved, {**saved, "variants": list(other)})
        assert len(diff) == 1 and diff[0].startswith("variants: saved"), diff
        # only another order of the same runs is told to give the saved order
        assert diff[0].endswith("(the same runs in another order: give them in the saved "
                                "order)") == (other == ("gn", "bn", "ln+l1")), diff
    diff = continuation_diff(saved, {**saved, "variants": ["GN", "BN", "ln+l1=2e-05"]})
    assert diff == ["variants: saved bn,gn,ln+l1, now GN,BN,ln+l1=2e-05 (the same runs in "
                    "another order: give them in the saved order)"]
    assert continuation_diff(saved, {**saved, "variants": ["BN", "gn ", "ln+l1"]},
                             as_written=True) == []
    assert continuation_diff(saved, {**saved, "variants": ["bn", "gn", "ln+l1=2e-05"]},
                             as_written=True) != []


def test_settings_read_by_a_variant() -> None:
    """settings_read names the settings a variant takes from the flags: a bare +l1 or +l2 its
    default, gn the group count, gbn the ghost batch; an explicit lambda reads no default."""
    from normlab.variants import settings_read

    assert settings_read("bn+l1") == {"l1_default"}
    assert settings_read("bn+l1=1e-3") == set()
    assert settings_read("gn+ws+l2") == {"groups", "l2_default"}
    assert settings_read("GBN+L1+l2=1e-4") == {"ghost_batch", "l1_default"}
    assert settings_read("ln") == set()


@pytest.mark.parametrize("groups", [3, 5, 16])
def test_groups_must_divide_channels(groups: int) -> None:
    """A gn group count that does not divide every layer's channels is a ConfigError naming the
    first layer it fails on (conv1, 8 channels) and the group counts every layer takes."""
    with pytest.raises(ConfigError) as e:
        Config(variants=("gn",), groups=groups)
    msg = str(e.value)
    assert msg.startswith("conv1:") and f"{groups} groups" in msg
    assert "[1, 2, 4] (they divide every layer's channels)" in msg


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_groups_dividing_channels_accepted(groups: int) -> None:
    """Group counts dividing every width of the default model (8, 16 and 12) are accepted."""
    assert Config(variants=("gn",), groups=groups).groups == groups


def test_groups_must_divide_every_layer() -> None:
    """8 groups divide the first convs (8 and 16 channels) but not the last (12): the error names
    that layer and the counts every layer takes."""
    with pytest.raises(ConfigError, match=r"^conv5: GroupNorm with 8 groups does not divide its "
                                          r"12 channels; use --groups with one of \[1, 2, 4\] "):
        Config(variants=("gn",), groups=8)


def test_config_variants_from_comma_string() -> None:
    """A comma string for variants is stored as a tuple of the raw specs."""
    cfg = Config(variants="gn,bn+l1")
    assert cfg.variants == ("gn", "bn+l1")
    assert [v.name for v in cfg.parsed_variants()] == ["gn", "bn+l1=2e-05"]


def test_parsed_variants_use_config_defaults() -> None:
    """A bare +l1/+l2 in a Config takes the Config's l1_default / l2_default."""
    cfg = Config(variants=("bn+l1", "gn+l2"), l1_default=1e-3, l2_default=2e-3)
    assert [(v.l1, v.l2) for v in cfg.parsed_variants()] == [(1e-3, 0.0), (0.0, 2e-3)]


def test_model_config_follows_the_variant() -> None:
    """model_config takes a Variant or a spec: its norm and +ws, with the Config's --groups,
    --ghost-batch and --arch; the penalties do not change the network."""
    cfg = Config(variants=("gbn", "gn+ws+l1"), groups=2, ghost_batch=8, arch="8-16-16")
    for spec in ("gn+ws+l1", "gn+l1+ws", parse_variant("gn+ws")):
        m = cfg.model_config(spec)
        assert (m.norm, m.ws, m.groups, m.ghost_batch, m.widths) == ("gn", True, 2, 8, (8, 16, 16))
    assert cfg.model_config(cfg.parsed_variants()[0]) == ModelConfig(
        norm="gbn", groups=2, ghost_batch=8, widths=(8, 16, 16), stem="pool", stem_kernel=3)
    assert cfg.model_config("bn+l2").ws is False


def test_config_diff_fills_fields_a_folder_predates() -> None:
    """A Config field missing from a saved config (a folder written before the field existed)
    compares as its default: resuming such a folder with the default is no difference, with
    another value it is one."""
    saved = Config().to_dict()
    del saved["ghost_batch"], saved["clean_fraction"]
    assert config_diff(saved, Config().to_dict()) == []
    assert config_diff(saved, Config(ghost_batch=4).to_dict()) == ["ghost_batch: saved 16, now 4"]
    assert config_diff(saved, Config(clean_fraction=0.2).to_dict()) == [
        "clean_fraction: saved 0.0, now 0.2"]


def test_config_diff_writes_lists_and_sweep_parameters_as_the_command_line_does() -> None:
    """A difference in a list (variants, a sweep's parameters) or a flag reads as the command line
    writes it (``gn,ln``; ``--param lr=0.05,0.1``; ``true``), not as Python's repr of the saved
    JSON."""
    assert config_diff({"variants": ["gn", "ln"]}, {"variants": ["gn"]}) == [
        "variants: saved gn,ln, now gn"]
    saved = {"params": [{"name": "lr", "values": [0.05, 0.1]}]}
    now = {"params": [{"name": "lr", "values": [0.05, 0.2]},
                      {"name": "batch_size", "values": [32, 64]}]}
    assert config_diff(saved, now) == ["params: saved --param lr=0.05,0.1, now --param "
                                       "lr=0.05,0.2 --param batch_size=32,64"]
    assert config_diff({"params": "damaged"}, {"params": []}) == [
        "params: saved 'damaged', now none"]
    assert config_diff({"params": [{"name": "augment", "values": [True, False]}]},
                       {"params": [{"name": "augment", "values": [True]}]}) == [
        "params: saved --param augment=true,false, now --param augment=true"]
    # a flag alone as the command line writes it
    assert config_diff({"scale_lr": True}, {"scale_lr": False}) == [
        "scale_lr: saved true, now false"]
    # an unset setting as none (no --train-subset: every image)
    assert config_diff({"train_subset": 512}, {"train_subset": None}) == [
        "train_subset: saved 512, now none"]
    # a damaged saved flag (a string) keeps its quotes, so the two still read apart
    assert config_diff({"scale_lr": "true"}, {"scale_lr": True}) == [
        "scale_lr: saved 'true', now true"]
    # where the command-line form would read alike, Python's shows the difference
    assert config_diff({"variants": ["1"]}, {"variants": [1]}) == [
        "variants: saved ['1'], now [1]"]


def test_config_diff_reads_a_folder_without_weight_decay_as_trained_without_it() -> None:
    """A saved config without weight_decay (written before --weight-decay existed) trained
    without decay: it differs from today's default decay and not from --weight-decay 0."""
    saved = Config().to_dict()
    del saved["weight_decay"]
    default = Config().weight_decay
    assert config_diff(saved, Config().to_dict()) == [f"weight_decay: saved 0.0, now {default!r}"]
    assert config_diff(saved, Config(weight_decay=0.0).to_dict()) == []


def test_seed_list() -> None:
    """seed_list runs first_seed .. first_seed + seeds - 1."""
    assert Config(seeds=3, first_seed=5).seed_list() == [5, 6, 7]
    assert Config().seed_list() == [0]


# ----------------------------------------------------------------------------------------------
# Round trip


def test_config_round_trip() -> None:
    """to_dict -> (JSON) -> from_dict gives an equal Config, for non-default values of every field."""
    cfg = Config(
        variants=("gn", "bn+l1=5e-5", "ln+l2"), seeds=3, first_seed=2, epochs=7, batch_size=32,
        lr=0.2, momentum=0.8, warmup=0.3, l1_default=1e-5, l2_default=1e-3, groups=2, ghost_batch=4,
        augment=False, rotate=5.0, translate=1.0, clean_fraction=0.5, dataset="kmnist",
        data_dir="/some/where",
        train_subset=1000, eval_batch_size=500, val=100, arch="4-8-12", label_smoothing=0.1,
        weight_decay=1e-4, ema=0.99, device="cpu", group_size=2, workers=1,
        precision="bf16", compile=True, diagnostics=False,
    )
    d = cfg.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(Config)}
    assert d["variants"] == ["gn", "bn+l1=5e-5", "ln+l2"]
    assert Config.from_dict(d) == cfg
    assert Config.from_dict(json.loads(json.dumps(d))) == cfg
    # every field differs from the default, so the round trip really carried each one
    default = Config().to_dict()
    assert all(d[k] != default[k] for k in d), [k for k in d if d[k] == default[k]]


def test_from_dict_partial_uses_defaults() -> None:
    """Keys missing from the dict take their defaults, except weight_decay: a config.json
    without it was written before --weight-decay existed, by a run that trained without decay
    (0, not today's default)."""
    assert Config().weight_decay > 0
    assert Config.from_dict({"epochs": 3}) == Config(epochs=3, weight_decay=0.0)
    assert Config.from_dict({"epochs": 3, "weight_decay": 1e-3}) == Config(epochs=3,
                                                                           weight_decay=1e-3)


def test_from_dict_unknown_key() -> None:
    """An unknown key is a ConfigError naming it and listing the valid keys."""
    with pytest.raises(ConfigError) as e:
        Config.from_dict({"epochs": 3, "epoch": 3})
    msg = str(e.value)
    assert "'epoch'" in msg and "batch_size" in msg


def test_from_dict_validates() -> None:
    """from_dict validates like the constructor."""
    with pytest.raises(ConfigError, match="--epochs"):
        Config.from_dict({"epochs": 0})


def test_replace_validates() -> None:
    """replace() gives a new validated Config and leaves the original unchanged."""
    cfg = Config()
    assert cfg.replace(epochs=3).epochs == 3 and cfg.epochs == 20
    with pytest.raises(ConfigError):
        cfg.replace(batch_size=0)


# ----------------------------------------------------------------------------------------------
# ModelConfig and torch


def test_config_imports_without_torch() -> None:
    """normlab.config (Config, ModelConfig, variant parsing, group-count validation) imports and
    validates in a fresh interpreter without loading torch."""
    import subprocess
    import sys

    code = ("import sys, normlab.config as c; c.Config(variants=('gn', 'bn+l1'), groups=2); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_model_config_is_one_class() -> None:
    """ModelConfig lives in normlab.config and normlab.model still exports the same class."""
    from normlab.config import ModelConfig
    from normlab.model import ModelConfig as FromModel

    assert FromModel is ModelConfig


@pytest.mark.parametrize(
    ("kwargs", "layers"),
    [
        ({}, [("conv1", 8), ("conv2", 16), ("conv3", 16), ("conv4", 16), ("conv5", 12)]),
        ({"full_res": 2, "transition": 4, "widths": (8, 12, 16)},
         [("conv1", 8), ("conv2", 12), ("trans", 4), ("conv3", 16)]),
    ],
)
def test_model_config_norm_layers(kwargs, layers) -> None:
    """norm_layers lists (name, channels) of each conv + norm layer in build order: the
    full-resolution convs, the 1x1 transition, then the convs after the pool."""
    from normlab.config import ModelConfig

    assert ModelConfig(**kwargs).norm_layers() == layers


def test_groups_message_equals_the_models() -> None:
    """Config's arithmetic check gives the same message as building the Net does."""
    from normlab.model import ModelConfig, Net

    with pytest.raises(ConfigError) as from_config:
        Config(variants=("gn",), groups=16)
    with pytest.raises(ConfigError) as from_net:
        Net(ModelConfig(norm="gn", groups=16))
    assert str(from_config.value) == str(from_net.value)


def test_from_saved_reads_a_saved_config_with_its_resolved_record() -> None:
    """Config.from_saved takes a config.json dict as the study writes it (the fields plus the
    ``resolved`` record) and gives the Config that wrote it; from_dict refuses the record."""
    cfg = Config(variants=("gn", "bn+l1"), seeds=3, lr=0.2)
    saved = {**cfg.to_dict(), "resolved": {"device": "cpu", "seed_list": [0, 1, 2]}}
    assert Config.from_saved(saved) == cfg
    with pytest.raises(ConfigError):
        Config.from_dict(saved)

"""benchmarks/timed_studies.py: the study rows of bench_train.py, interleaved over rounds."""

from __future__ import annotations

import statistics

import pytest
import torch

from normlab.config import Config


@pytest.fixture(scope="module")
def studies(load_script):
    return load_script("benchmarks/timed_studies.py")


def test_rows_interleave_over_rounds_and_ratios_are_per_round_medians(studies,
                                                                      monkeypatch) -> None:
    """Round r times every study row once, in the table's order rotated by r; a row's images/s
    is its median over the rounds, and its ratio to 0.1.0 the median of the ratios *within*
    each round (not the ratio of the medians); the diagnostics' cost is the median over rounds
    of nodiag / diag - 1, in percent; what the worker processes pay, the median over rounds of
    normlab-study / study-threads."""
    names = list(studies.STUDY_ROWS)
    by_settings = {settings: name for name, settings in studies.STUDY_ROWS.items()}
    assert len(by_settings) == len(names)   # each row's settings pick it out
    calls: list[str] = []
    # 0.1.0 fast in round 0 only: the median of per-round ratios (1.2) is not the ratio of
    # the medians (130 / 100).
    speed = {"study-0.1.0": [200.0, 100.0, 100.0], "study-pool": [100.0, 100.0, 100.0],
             "study-nodecay": [130.0, 140.0, 150.0], "normlab-study": [150.0, 120.0, 130.0],
             "normlab-study-nodiag": [153.0, 126.0, 130.0],
             "study-threads": [140.0, 110.0, 100.0]}

    def fake_study(base, device, epochs, release_010, diagnostics, arch, weight_decay,
                   processes):
        name = by_settings[(release_010, diagnostics, arch, weight_decay, processes)]
        r = sum(c == name for c in calls)
        calls.append(name)
        info = {"images_per_s": speed[name][r], "wall_seconds": 1.0, "final_test_acc": {},
                "params": 1}
        return info, [float(r)] * epochs

    monkeypatch.setattr(studies, "bench_study", fake_study)
    rows = studies.study_rows(Config(), torch.device("cpu"), epochs=2, rounds=3,
                              log=lambda _: None)
    assert calls == names + names[1:] + names[:1] + names[2:] + names[:2]
    got = {name: info for name, info, _ in rows}
    assert [name for name, _, _ in rows] == names
    for name in names:
        assert got[name]["images_per_s"] == statistics.median(speed[name])
        assert got[name]["round_images_per_s"] == speed[name]
    assert "ratio_vs_0.1.0" not in got["study-0.1.0"]
    ratios = [150 / 200, 120 / 100, 130 / 100]
    assert got["normlab-study"]["round_ratios_vs_0.1.0"] == [round(x, 3) for x in ratios]
    assert got["normlab-study"]["ratio_vs_0.1.0"] == round(statistics.median(ratios), 3) == 1.2
    assert got["normlab-study-nodiag"]["diagnostics_cost_pct"] == 2.0   # (2, 5, 0): median 2
    # 150/140, 120/110, 130/100: median 1.091, not 130/110 (the ratio of the medians)
    assert got["normlab-study"]["round_ratios_vs_threads"] == [1.071, 1.091, 1.3]
    assert got["normlab-study"]["ratio_vs_threads"] == 1.091
    assert rows[0][2] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]   # every round's epoch seconds

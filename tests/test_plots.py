"""plots.py (curves), mistakes.py (grids of misclassified images) and style.py: which mistakes
are shown, and that every figure is drawn as a readable PNG where RunFolder says it goes."""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure
from helpers import study_figures
import torch

import helpers
from normlab import data, mistakes, plots, style
from normlab.errors import ConfigError, RunFolderError
from normlab.mistakes import cell_label, mistakes_title, select_mistakes
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, FIGURE_FORMATS, parse_formats
from normlab.runfolder import RunFolder, figure_files

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def _files(pngs, formats=DEFAULT_FIGURE_FORMATS) -> list[Path]:
    """Every file of the figures ``pngs`` in ``formats``, as RunFolder names them."""
    return [f for p in pngs for f in figure_files(p, formats).values()]


def _row(i: int, label: int, pred: int, conf: float) -> dict:
    return {"index": i, "label": label, "pred": pred, "confidence": conf}


# ----------------------------------------------------------------------------------------------
# Selection


ROWS = [
    _row(0, 1, 1, 0.99),   # right, very confident: never shown
    _row(1, 2, 3, 0.40),
    _row(2, 3, 5, 0.90),
    _row(3, 4, 4, 0.95),
    _row(4, 5, 6, 0.90),   # ties with index 2 on confidence
    _row(5, 6, 0, 0.70),
    _row(6, 7, 1, 0.95),
]


def test_select_most_confident_mistakes() -> None:
    """'confident' mode: the mistakes by falling confidence, ties by lower index, at most k."""
    assert [r["index"] for r in select_mistakes(ROWS, k=3)] == [6, 2, 4]
    assert [r["index"] for r in select_mistakes(ROWS, k=10)] == [6, 2, 4, 5, 1]


def test_select_first_mistakes() -> None:
    """'first' mode: the mistakes with the lowest test indices."""
    assert [r["index"] for r in select_mistakes(ROWS, k=3, mode="first")] == [1, 2, 4]


def test_select_matches_brute_force_and_is_order_independent(gen: torch.Generator) -> None:
    """On 500 random rows with many confidence ties, in shuffled order: the selection equals a
    brute-force sort of the mistakes in both modes, and no unshown mistake is more confident
    than a shown one."""
    labels = torch.randint(0, 10, (500,), generator=gen).tolist()
    preds = torch.randint(0, 10, (500,), generator=gen).tolist()
    confs = (torch.randint(0, 20, (500,), generator=gen) / 20).tolist()  # many ties
    rows = [_row(i, y, p, c) for i, (y, p, c) in enumerate(zip(labels, preds, confs))]
    wrong = [r for r in rows if r["pred"] != r["label"]]
    top = sorted(wrong, key=lambda r: (-r["confidence"], r["index"]))[:10]
    shuffled = [rows[i] for i in torch.randperm(500, generator=gen).tolist()]
    assert select_mistakes(shuffled, 10) == top
    assert select_mistakes(shuffled, 10, "first") == wrong[:10]
    assert min(r["confidence"] for r in top) >= max(
        r["confidence"] for r in wrong if r not in top)


def test_select_fewer_and_bad_mode() -> None:
    """No mistakes: nothing selected; an unknown mode is a ConfigError naming it."""
    assert select_mistakes([_row(0, 1, 1, 0.9)], 10) == []
    with pytest.raises(ConfigError, match="unknown mode 'worst'"):
        select_mistakes(ROWS, 10, "worst")


def test_titles_and_cell_labels() -> None:
    """Grid titles state variant, seed, accuracy and how many mistakes are shown of how many;
    cell labels state true and predicted class (names on their own lines), confidence (>99.9%
    near 1) and test index."""
    t = mistakes_title("gn", 0, 98.765, 3, "confident", "MNIST")
    assert t.startswith("gn (seed 0, test accuracy 98.77%)\n") and "only 3 mistakes" in t
    assert "only 1 mistake on" in mistakes_title("gn", 0, 99.99, 1, "first", "MNIST")
    assert "its 10 most confident mistakes, of 1,234" in mistakes_title(
        "gn", 1, 87.66, 1234, "confident", "MNIST")
    assert "its first 10 mistakes by test index" in mistakes_title("gn", 1, 87.66, 50, "first",
                                                                   "MNIST")
    digits = [str(d) for d in range(10)]
    assert cell_label(_row(17, 4, 9, 0.973), digits) == "true 4 → pred 9\n97.3% · #17"
    assert cell_label(_row(3, 4, 9, 0.99999), digits).endswith(">99.9% · #3")
    names = list(data.DATASETS["fashion-mnist"].classes)
    assert cell_label(_row(5, 9, 7, 0.5), names) == "true Ankle boot\npred Sneaker\n50.0% · #5"


# ----------------------------------------------------------------------------------------------
# Figures


@pytest.fixture(scope="module")
def multi_seed_run(synthetic_data, tmp_path_factory, make_run):
    """(run folder of gn, ln, bn x 3 seeds x 6 epochs on the synthetic test set, the figures
    plot_curves and make_misclassified drew for it)."""
    run = make_run(tmp_path_factory.mktemp("multi") / "run", variants=("gn", "ln", "bn"),
                   seeds=3, epochs=6, labels=synthetic_data.labels,
                   data_dir=synthetic_data.folder)
    return run, plots.plot_curves(run.path) + mistakes.make_misclassified(run.path)


def test_curves_and_grids_multi_seed(multi_seed_run) -> None:
    """The three curves and one grid per variant are drawn, at RunFolder's paths, as PNGs of
    800-1400 x 400-1000 pixels, each with its SVG next to it (the default formats), and nothing
    else is in the figures folder."""
    run, paths = multi_seed_run
    assert paths == study_figures(run, ("gn", "ln", "bn"))
    for p in paths:
        w, h = png_size(p)
        assert 800 <= w <= 1400 and 400 <= h <= 1000, (p.name, w, h)
    assert DEFAULT_FIGURE_FORMATS == ("png", "svg")
    assert sorted(run.figures.iterdir()) == sorted(_files(paths))
    assert all(p.with_suffix(".svg").read_bytes().startswith(b"<?xml") for p in paths)


def test_misclassified_is_deterministic(multi_seed_run) -> None:
    """Drawing a grid again gives the same path and the same bytes."""
    run, paths = multi_seed_run
    grid = run.misclassified_figure("gn")
    before = grid.read_bytes()
    assert mistakes.plot_misclassified(run.path, "gn") == grid
    assert grid.read_bytes() == before


def test_misclassified_uses_given_images(multi_seed_run, monkeypatch, n_test: int) -> None:
    """With ``images`` given, the test split is not loaded again."""
    run, _ = multi_seed_run

    def boom(*a, **k):
        raise AssertionError("load_split called")

    monkeypatch.setattr(data, "load_split", boom)
    images = torch.zeros(n_test, 28, 28, dtype=torch.uint8)
    path = mistakes.plot_misclassified(run.path, "ln", seed=1, mode="first", images=images)
    assert path == run.misclassified_figure("ln") and png_size(path)[0] >= 800


def test_misclassified_checks_the_data(multi_seed_run) -> None:
    """Predictions whose labels differ from the test split found: a clear error; an unknown
    variant: a ConfigError naming it."""
    run, _ = multi_seed_run
    pred = run.predictions("bn", 0)
    text = pred.read_text()
    lines = text.splitlines()
    idx, label, p, conf = lines[1].split(",")
    lines[1] = ",".join([idx, str((int(label) + 3) % 10), p, conf])
    pred.write_text("\n".join(lines) + "\n")
    try:
        with pytest.raises(RunFolderError, match="not the one this run used"):
            mistakes.plot_misclassified(run.path, "bn")
    finally:
        pred.write_text(text)
    with pytest.raises(ConfigError, match="variant 'xx' is not in this run"):
        mistakes.plot_misclassified(run.path, "xx")


def test_one_seed_few_mistakes_and_diverged(synthetic_data, tmp_path, make_run) -> None:
    """One seed per variant (curves without bands), a variant with 3 mistakes, a variant that
    diverged in its only seed (no curve, no grid)."""
    run = make_run(tmp_path / "run", variants=("gn", "ln", "bn"), seeds=1, epochs=1,
                   labels=synthetic_data.labels, data_dir=synthetic_data.folder,
                   wrong={"gn": 3}, diverged={"bn": [0]})
    paths = plots.plot_curves(run.path) + mistakes.make_misclassified(run.path, mode="first")
    assert paths == study_figures(run, ("gn", "ln"))
    for p in paths:
        assert png_size(p)[0] >= 800
    assert not run.misclassified_figure("bn").exists()
    with pytest.raises(RunFolderError, match="diverged in every seed"):
        mistakes.plot_misclassified(run.path, "bn", seed=None)
    with pytest.raises(RunFolderError, match="'bn' seed 0 diverged, so it has no predictions"):
        mistakes.plot_misclassified(run.path, "bn", seed=0)
    with pytest.raises(ConfigError, match="has no seed 7"):
        mistakes.plot_misclassified(run.path, "gn", seed=7)


def test_accuracy_bands_stay_within_0_and_100_percent(tmp_path, make_run) -> None:
    """The 95% band of an accuracy curve lies within [0, 100]: a t-interval of two seeds far
    apart passes both ends, which an accuracy cannot; a loss band is drawn as computed."""
    from normlab.runfolder import load_run
    from normlab.stats import mean_ci

    run = load_run(make_run(tmp_path / "r", variants=("gn",), seeds=2, epochs=2,
                            final={"gn": [20.0, 99.0]}).path)
    acc = plots.Curve(run, "gn", "test_acc")
    raw = mean_ci(run.per_epoch("gn", "test_acc")[2])
    assert raw.lo < 0 and raw.hi > 100   # what the band would be unclipped
    assert acc.lo[-1] == 0.0 and acc.hi[-1] == 100.0 and acc.mean[-1] == raw.mean
    loss = plots.Curve(run, "gn", "test_loss")
    raw = mean_ci(run.per_epoch("gn", "test_loss")[2])
    assert (loss.lo[-1], loss.hi[-1]) == (raw.lo, raw.hi)


def test_a_study_whose_runs_all_diverged_says_so_in_its_curve_figures(tmp_path,
                                                                      make_run) -> None:
    """With every run diverged there is no curve to draw: each curve figure (test accuracy,
    test loss, train vs test) says so on its axes instead of showing empty ones, and the
    legend has no entry for the best-epoch star, which none of them draws."""
    run = make_run(tmp_path / "r", variants=("gn", "bn"), seeds=2, epochs=3,
                   diverged={"gn": [0, 1], "bn": [0, 1]})
    plots.plot_curves(run.path, ("png", "svg"))
    for kind in ("test_acc", "test_loss", "train_vs_test"):
        svg = figure_files(run.figure(kind), ("svg",))["svg"].read_text()
        assert "no curve: every run diverged" in svg, kind
        assert "best epoch" not in svg, kind


def test_each_curve_figure_labels_its_own_measure(tmp_path, make_run) -> None:
    """The test accuracy figure's y axis is test accuracy in percent and the test loss
    figure's the cross-entropy; neither says "no curve" when its runs finished, and both
    name the best-epoch star in their legend."""
    run = make_run(tmp_path / "r", variants=("gn", "bn"), seeds=2, epochs=3)
    plots.plot_curves(run.path, ("png", "svg"))
    acc, loss = (figure_files(run.figure(k), ("svg",))["svg"].read_text()
                 for k in ("test_acc", "test_loss"))
    assert "test accuracy (%)" in acc and "cross-entropy" not in acc
    assert "cross-entropy" in loss and "test accuracy (%)" not in loss
    assert "no curve" not in acc + loss
    assert "best epoch (of the mean)" in acc and "best epoch (of the mean)" in loss


def test_end_labels_of_any_loss_fit_where_an_accuracys_does() -> None:
    """A curve's end label, right of the axes, is no wider than the widest accuracy label
    (100.00%) for any loss, a nearly diverged run's 8375.5859 included (at 4 decimals it ran off
    the figure), and keeps at least 3 significant digits (reads back within 0.5%); a loss below
    10 keeps 4 decimals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def width(fig, text: str) -> float:
        return fig.text(0, 0, text, fontsize=11, fontweight="bold").get_window_extent(
            fig.canvas.get_renderer()).width

    assert plots.end_value(0.02153, False) == "0.0215" and plots.end_value(99.5, True) == "99.50%"
    with matplotlib.rc_context(style.RC):
        fig = Figure(figsize=style.FIGSIZE, dpi=style.DPI)
        FigureCanvasAgg(fig)
        widest = width(fig, plots.end_value(100.0, True))
        for loss in (0.0215, 9.99999, 12.3456, 8375.5859, 99999.4, 123456.7, 1e9):
            text = plots.end_value(loss, False)
            assert width(fig, text) <= widest, text
            assert float(text) == pytest.approx(loss, rel=5e-3), text


def test_train_vs_test_legend_gives_the_reports_gap(tmp_path, make_run) -> None:
    """The legend of train_vs_test.png states each variant's gap as the report's gap column
    does (RunData.final_gap: the mean over finished seeds of the last epoch's train − test
    accuracy), with a true minus sign where it is negative."""
    from normlab.report import variant_results
    from normlab.runfolder import load_run
    from normlab.table import signed_points

    run = make_run(tmp_path / "r", variants=("gn", "bn"), seeds=3, epochs=4,
                   gap={"gn": 0.25, "bn": -0.4})
    plots.plot_curves(run.path, ("png", "svg"))
    svg = figure_files(run.figure("train_vs_test"), ("svg",))["svg"].read_text()
    for r in variant_results(load_run(run.path)):
        assert f"{r.name} (gap {signed_points(r.final_gap)} pts)" in svg, r.name
    assert "(gap −0.40 pts)" in svg and "(gap +0.25 pts)" in svg


def test_svg_keeps_text_as_text_and_is_the_same_when_redrawn(multi_seed_run) -> None:
    """Every SVG holds its words as <text> elements in a named font (not as glyph outlines), and
    drawing the figures again gives byte-identical PNGs and SVGs."""
    run, paths = multi_seed_run
    files = _files(paths)
    plots.plot_curves(run.path)   # as the fixture drew them, whatever the tests before drew
    mistakes.make_misclassified(run.path)
    before = {f: f.read_bytes() for f in files}
    for p in paths:
        svg = before[p.with_suffix(".svg")].decode("utf-8")
        assert "<text" in svg and "font-family: 'DejaVu Sans'" in svg, p.name
        assert "<dc:date>" not in svg
    assert "test accuracy" in before[run.figure("test_acc").with_suffix(".svg")].decode()
    again = plots.plot_curves(run.path) + mistakes.make_misclassified(run.path)
    assert again == paths
    changed = [f.name for f in files if f.read_bytes() != before[f]]
    assert not changed, changed


def test_pdf_on_request_embeds_truetype_and_is_the_same_when_redrawn(multi_seed_run) -> None:
    """formats=("pdf",) adds a PDF next to each PNG (none before), with its fonts embedded as
    TrueType (pdf.fonttype 42) and no creation date, byte-identical when drawn again."""
    run, _ = multi_seed_run
    grid = run.misclassified_figure("ln")
    pdfs = [run.figure("test_loss").with_suffix(".pdf"), grid.with_suffix(".pdf")]
    assert not any(p.exists() for p in pdfs)
    try:
        plots.plot_curves(run.path, ("pdf",))
        mistakes.plot_misclassified(run.path, "ln", formats=["pdf"])
        first = {p: p.read_bytes() for p in pdfs}
        plots.plot_curves(run.path, ("pdf",))
        mistakes.plot_misclassified(run.path, "ln", formats=["pdf"])
        for p in pdfs:
            data = p.read_bytes()
            assert data.startswith(b"%PDF") and b"/FontFile2" in data, p.name
            assert b"/CreationDate" not in data and data == first[p], p.name
    finally:
        for p in run.figures.glob("*.pdf"):
            p.unlink()


def test_text_prints_at_7pt_or_more_at_full_width(multi_seed_run, tmp_path) -> None:
    """Scaled to the full width of a two-column paper (7 in), the smallest text of every figure
    (the curves, the grids, a sweep figure, explain's figure, an experiment's mechanism figure;
    read from their SVGs) is >= 7 pt."""
    from normlab.axes_figure import draw_norm_axes
    from normlab.experiment_report import mechanism_figure
    from normlab.sweep_report import sweep_figure

    run, paths = multi_seed_run
    rows = [{"lr": lr, "variant": "gn", "seed": 0, "status": "ok", "final_test_acc": 98 + lr}
            for lr in (0.01, 0.1)]
    paths = paths + [sweep_figure(rows, "lr", [], tmp_path / "sweep.png"),
                     draw_norm_axes(tmp_path / "axes.png")]
    mech = [{"lr": lr, "variant": v, "seed": s, "dead_pct": 1.0 + s, "weight_norm": 5.0 + lr,
             "grad_ratio": 0.1 * (s + 1), "bn_gap": 0.05 if v == "bn" else None}
            for lr in (0.01, 0.1, 1.0) for v in ("bn", "gn") for s in (0, 1)]
    batch = [{"lr": r["lr"], "variant": "bn", "seed": r["seed"], "acc_running": 98.0,
              "acc_batch": 97.0 + r["seed"]} for r in mech if r["variant"] == "bn"]
    paths.append(mechanism_figure(mech, batch, ["lr"], tmp_path / "mechanism.png", ("png", "svg")))
    for p in paths:
        printed = helpers.smallest_printed_pt(p.with_suffix(".svg").read_text(encoding="utf-8"))
        assert printed >= 7.0, (p.name, printed)


def test_every_panel_of_the_mechanism_figure_names_its_axes(tmp_path, monkeypatch) -> None:
    """Each drawn panel of an experiment's mechanism figure has a title and both axis labels:
    the swept setting below, and above the measure's own label (those of the diagnostics figure
    for the per-epoch measures; test accuracy in percent for BatchNorm's panel). An interval
    that passes 0, or 100 for a percentage, is drawn within those bounds."""
    from normlab import experiment_report
    from normlab.diag_plots import PANELS

    drawn = []
    monkeypatch.setattr(experiment_report, "save_figure",
                        lambda fig, path, formats: drawn.append(fig) or path)
    mech = [{"lr": lr, "variant": v, "seed": s, "dead_pct": 1.0 + s, "weight_norm": 5.0 + lr,
             "grad_ratio": 0.1 * (s + 1), "bn_gap": 0.05 if v == "bn" else None,
             "loss_grad_ratio": 0.01 * (s + 1)}
            for lr in (0.01, 0.1) for v in ("bn", "gn") for s in (0, 1)]
    batch = [{"lr": r["lr"], "variant": "bn", "seed": r["seed"], "acc_running": 98.0,
              "acc_batch": 97.0 + r["seed"]} for r in mech if r["variant"] == "bn"]
    experiment_report.mechanism_figure(mech, batch, ["lr"], tmp_path / "m.png", ())
    panels = [ax for ax in drawn[0].axes if ax.get_visible()]
    assert len(panels) == 6
    for ax in panels:
        assert ax.get_title() and "(lr)" in ax.get_xlabel() and ax.get_ylabel(), (
            ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
    ylabels = [ax.get_ylabel() for ax in panels]
    assert ylabels[:4] == [ylabel for _, _, ylabel, _ in PANELS]
    assert ylabels[5] == "test accuracy (%)"
    # two seeds far apart: their t-intervals pass 0 (and 100), which no measure can; the
    # axes stop there
    wide = [{**r, "dead_pct": 5.0 + 90.0 * r["seed"], "weight_norm": 0.5 + 9.0 * r["seed"]}
            for r in mech]
    batch = [{**r, "acc_batch": 10.0 + 89.0 * r["seed"]} for r in batch]
    experiment_report.mechanism_figure(wide, batch, ["lr"], tmp_path / "m2.png", ())
    panels = [ax for ax in drawn[1].axes if ax.get_visible()]
    for ax, top in zip([panels[i] for i in (0, 1, 5)], (100.0, None, 100.0)):
        lo, hi = ax.get_ylim()
        assert lo == 0.0 and (top is None or hi == top), (ax.get_title(), lo, hi)


def test_parse_formats() -> None:
    """Formats are a comma-separated list (any case, repeats and blanks ignored) returned in
    png, svg, pdf order; an unknown or empty one is a ConfigError naming the valid ones; the
    saver always writes the PNG, and the other formats next to it with the same stem."""
    assert FIGURE_FORMATS == ("png", "svg", "pdf")
    assert parse_formats("pdf, PNG,,svg,pdf") == ("png", "svg", "pdf")
    assert parse_formats(["svg"]) == ("svg",)
    for bad, what in (("png,jpg", "unknown figure format 'jpg'"), (" , ", "no figure format")):
        with pytest.raises(ConfigError, match=what) as e:
            parse_formats(bad)
        assert "valid: png, svg, pdf" in str(e.value)
    png = RunFolder("run").misclassified_figure("bn+l1=2e-05")   # a dot in the variant's name
    assert figure_files(png, ("pdf",)) == {"png": png, "pdf": png.with_name(png.stem + ".pdf")}
    assert list(figure_files(png, ("pdf", "svg", "png"))) == ["png", "svg", "pdf"]


def test_colours_are_stable_and_colour_blind_safe() -> None:
    """A line gets its norm's Okabe-Ito colour whatever the figure and the order of its lines
    (the default study's gn, ln, bn the first three; every registered norm its own); a second
    line of one norm takes a colour no norm of the figure has; the palette is exactly
    Okabe-Ito's eight colours."""
    from normlab import norms

    c = style.variant_colors(["gn", "ln", "bn+l1=2e-05"])
    assert c == {"gn": style.OKABE_ITO[0], "ln": style.OKABE_ITO[1],
                 "bn+l1=2e-05": style.OKABE_ITO[2]}
    assert style.variant_colors(["bn", "none", "ln", "gn"]) == {
        "bn": c["bn+l1=2e-05"], "none": style.variant_colors(["none"])["none"], "ln": c["ln"],
        "gn": c["gn"]}
    assert sorted(style.norm_order()) == sorted(norms.NORMS)
    every = style.variant_colors(list(norms.NORMS))
    assert len(set(every.values())) == len(norms.NORMS)
    two = style.variant_colors(["gn, batch_size=8", "gn, batch_size=128", "ln, batch_size=8"])
    assert two["gn, batch_size=8"] == c["gn"] and len(set(two.values())) == 3
    assert two["gn, batch_size=128"] not in (c["gn"], c["ln"])   # the figure's norms' colours
    many = style.variant_colors([f"bn, x={i}" for i in range(9)] + ["gn"])   # > 8 lines
    assert many["gn"] == c["gn"] and many["bn, x=0"] == c["bn+l1=2e-05"]
    assert style.variant_colors(["bn", "bn", "gn"]) == {"bn": c["bn+l1=2e-05"], "gn": c["gn"]}


def test_lines_of_one_norm_share_its_colour_and_differ_in_style() -> None:
    """line_styles: every line of a norm in that norm's colour (gn blue at batch 8 and 128 alike),
    told apart by line style and marker (16 lines of one norm, e.g. the groups experiment's,
    all differ); the first line of each norm solid with round markers."""
    gn = style.variant_colors(["gn"])["gn"]
    s = style.line_styles(["gn, batch_size=8", "gn, batch_size=128", "ln, batch_size=8"])
    assert s["gn, batch_size=8"] == {"color": gn, "linestyle": "-", "marker": "o"}
    assert s["gn, batch_size=128"] == {"color": gn, "linestyle": "--", "marker": "s"}
    assert s["ln, batch_size=8"]["linestyle"] == "-" and s["ln, batch_size=8"]["color"] != gn
    many = style.line_styles([f"gn, groups={g}" for g in range(16)])   # one norm, 16 lines
    assert len({(v["linestyle"], v["marker"]) for v in many.values()}) == 16


def test_sweep_figure_zoom_spans_the_near_means_and_no_axis_passes_100(tmp_path,
                                                                       monkeypatch) -> None:
    """With one untrainable variant and two seeds far apart (t-intervals far past 100%), the
    zoom panel's y-range is that of the means within ZOOM_WITHIN points of the best (a few
    points, not the wide bars), and neither panel's axis goes past 100.5%."""
    from normlab import sweep_report

    drawn = []
    monkeypatch.setattr(sweep_report, "save_figure",
                        lambda fig, path, formats: drawn.append(fig) or path)
    accs = {("gn", 8): [90.0, 99.0], ("gn", 128): [91.0, 98.0], ("none", 8): [11.0, 12.0],
            ("none", 128): [11.5, 11.0]}
    rows = [{"batch_size": b, "variant": v, "seed": s, "status": "ok", "final_test_acc": x,
             "final_val_acc": None} for (v, b), xs in accs.items() for s, x in enumerate(xs)]
    sweep_report.sweep_figure(rows, "batch_size", [], tmp_path / "s.png", ("png",))
    main, zoom = drawn[0].axes[:2]
    assert main.get_ylim()[1] <= 100.5 and zoom.get_ylim()[1] <= 100.5
    low, high = zoom.get_ylim()
    assert low < 94.5 < high and high - low < 3, (low, high)   # the means 94.5 and 94.5


def test_sweep_figure_names_its_axis_and_seeds(tmp_path) -> None:
    """The sweep figure's x axis says what the setting is, with its unit, and its name; the title
    states how many seeds each bar rests on and, on a line of its own, how many runs failed; when
    the means spread over more than ZOOM_WITHIN points (an untrainable variant), a second panel
    zooms on the y-range of the means near the best (others may cross it), if two or more are
    near it."""
    from normlab.sweep_report import sweep_figure

    rows = [{"batch_size": b, "variant": "gn", "seed": s, "status": "ok" if s < 3 else "failed",
             "final_test_acc": 98.0 + s / 10, "final_val_acc": None}
            for b in (8, 128) for s in range(4)]
    png = sweep_figure(rows, "batch_size", [], tmp_path / "sweep.png", ("png", "svg"))
    svg = png.with_suffix(".svg").read_text(encoding="utf-8")
    for text in ("batch size, images (batch_size)", "over 3 seeds", "2 run(s) failed"):
        assert text in svg, text
    assert "zoom" not in svg   # every mean within ZOOM_WITHIN of the best: one panel
    rows += [{**r, "variant": "none", "final_test_acc": 11.35} for r in rows]   # untrainable
    png = sweep_figure(rows, "batch_size", [], tmp_path / "wide.png", ("png", "svg"))
    assert "zoom: the y-range of the means within 3 points of the best" in png.with_suffix(
        ".svg").read_text(encoding="utf-8")
    alone = [{**r, "final_test_acc": r["final_test_acc"] - 20 * (r["batch_size"] == 128)}
             for r in rows if r["variant"] == "gn"]   # one mean near the best: nothing to zoom on
    png = sweep_figure(alone, "batch_size", [], tmp_path / "alone.png", ("png", "svg"))
    assert "zoom" not in png.with_suffix(".svg").read_text(encoding="utf-8")
    assert {x.upper() for x in style.OKABE_ITO} == {
        "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}

"""The notebook runs end to end through normlab's API (tiny settings, real MNIST)."""

from pathlib import Path

import pytest

from helpers import real_mnist_dir

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "normalization_study.ipynb"


def test_notebook_has_parameters_cell() -> None:
    """The notebook has exactly one cell tagged 'parameters' (papermill), setting epochs, seeds
    and train_subset."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for name in ("epochs", "seeds", "train_subset"):
        assert f"{name} =" in tagged[0].source


def test_notebook_executes_and_makes_figures(tmp_path: Path) -> None:
    """Executed by papermill with 1 epoch on 1,000 images, the notebook runs without errors and
    leaves both graphs, the three misclassified grids and report.md in its run folder, and shows
    images inline."""
    papermill = pytest.importorskip("papermill")
    data = real_mnist_dir()
    if data is None:
        pytest.skip("real MNIST not found (set $NORMLAB_DATA or provide ../shared/data/mnist)")
    out = tmp_path / "run"
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(executed), cwd=str(tmp_path), progress_bar=False,
        parameters={"epochs": 1, "seeds": 1, "train_subset": 1000, "data_dir": str(data),
                    "device": "cpu", "out": str(out)},
    )
    figures = out / "figures"
    expected = ["test_loss.png", "test_accuracy.png", "train_vs_test.png",
                "misclassified_gn.png", "misclassified_ln.png", "misclassified_bn+l1=2e-05.png"]
    for name in expected:
        assert (figures / name).is_file(), name
    assert (out / "report.md").is_file()
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 5
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors

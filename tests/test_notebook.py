"""The notebook runs end to end through normlab's API (tiny settings, real MNIST)."""

from pathlib import Path

import pytest

from normlab.runfolder import RunFolder
from normlab.runfolder import FIGURES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "normalization_study.ipynb"


def test_notebook_has_parameters_cell() -> None:
    """The notebook has exactly one cell tagged 'parameters' (papermill), setting epochs, seeds
    and train_subset, and no cell of papermill's own ('injected-parameters', left by the run
    that made its saved outputs): that cell would override the parameters on a plain Run All,
    writing into the committed run folder."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for name in ("epochs", "seeds", "train_subset"):
        assert f"{name} =" in tagged[0].source
    assert not [c for c in nb.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]


def test_notebook_executes_and_makes_figures(tmp_path: Path, real_mnist: Path) -> None:
    """Executed by papermill with 1 epoch on 1,000 images, the notebook runs without errors and
    leaves the three curve figures, the three misclassified grids and the report in its run folder
    (where RunFolder says they go), and shows images inline."""
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "run"
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(executed), cwd=str(tmp_path), progress_bar=False,
        parameters={"epochs": 1, "seeds": 1, "train_subset": 1000, "data_dir": str(real_mnist),
                    "device": "cpu", "out": str(out)},
    )
    run = RunFolder(out)
    expected = [run.figure(k) for k in FIGURES] + [
        run.misclassified_figure(v) for v in ("gn", "ln", "bn+l1=2e-05")]
    for path in expected:
        assert path.is_file(), path
    assert run.report.is_file()
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    assert images >= 5
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors

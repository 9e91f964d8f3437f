"""The run folder's file names and CSV columns, in one place for the writer and the readers."""

# metrics.csv: one row per variant, seed and epoch (accuracies in percent). Only what the seed and
# config decide, so a resumed study writes the same bytes as an uninterrupted one.
METRIC_COLUMNS = ("variant", "seed", "epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                  "lr")
# timing.csv: seconds of each epoch (training + evaluation), which vary from run to run.
TIMING_COLUMNS = ("variant", "seed", "epoch", "seconds")
# predictions/<run>.csv: the final model's prediction for every test image.
PREDICTION_COLUMNS = ("index", "label", "pred", "confidence")


def run_name(variant: str, seed: int) -> str:
    """The stem of a run's files: predictions/<stem>.csv, checkpoints/<stem>.pt."""
    return f"{variant}-s{seed}"

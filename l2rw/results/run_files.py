"""The files a finished run writes into its run dir besides metrics.csv and example_weights.csv
(which the training loop writes as it goes). docs/outputs.md describes each."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from l2rw.file_io import write_csv
from l2rw.models.saved import MODEL_FILES
from l2rw.results.confusion_plot import save_confusion_png
from l2rw.training.evaluation import Evaluation

METRICS = "metrics.csv"                  # one row per evaluation, written as the run goes
EXAMPLE_WEIGHTS = "example_weights.csv"  # per training example: its mean weight over the run
# Everything a run may write into its run dir: no results_csv may be one of them
RUN_FILES = ("config.yaml", METRICS, EXAMPLE_WEIGHTS, "confusion.csv", "confusion.png",
             "per_class_recall.csv", "summary.json", "checkpoint.pt", "skipped_images.txt", *MODEL_FILES)


def write_run_files(run_dir: Path, row: dict, evaluation: Evaluation, class_names: list[str]) -> None:
    """confusion.csv, per_class_recall.csv, confusion.png and summary.json of a finished run."""
    write_confusion(run_dir / "confusion.csv", evaluation.confusion, class_names)
    write_per_class_recall(run_dir / "per_class_recall.csv", evaluation, class_names)
    title = f"{row['dataset']} {row['model']} {row['method']}: balanced accuracy {evaluation.balanced_accuracy:.2%}"
    save_confusion_png(run_dir / "confusion.png", evaluation.confusion, class_names, title)
    (run_dir / "summary.json").write_text(json.dumps(row | {"class_names": class_names}, indent=2))


def write_skipped_images(run_dir: Path, skipped: list[str]) -> None:
    """The images the loader could not read and left out (dataset.skip_unreadable=true), one per line."""
    if skipped:
        (run_dir / "skipped_images.txt").write_text("".join(f"{path}\n" for path in skipped))


def write_confusion(path: Path, confusion: torch.Tensor, class_names: list[str]) -> None:
    rows = [[name, *row] for name, row in zip(class_names, confusion.tolist())]
    write_csv(path, ["true\\predicted", *class_names], rows)


def write_per_class_recall(path: Path, evaluation: Evaluation, class_names: list[str]) -> None:
    """Test images and recall per class; balanced accuracy is the mean recall over classes with images."""
    support = evaluation.confusion.sum(1).tolist()
    rows = [[name, n, f"{r:.6f}"] for name, n, r in zip(class_names, support, evaluation.per_class_recall)]
    write_csv(path, ["class", "support", "recall"], rows)


"""logger=tensorboard: a SummaryWriter in the run dir, so `tensorboard --logdir outputs/multirun`
shows every job of a sweep as it runs, and its HParams tab compares them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from l2rw.optional import require
from l2rw.run.options import text
from l2rw.tracking.loggers import RunLogger, final_metrics, numbers


def hparam_value(value) -> bool | int | float | str:
    """TensorBoard's hparams take numbers, bools and text only."""
    if isinstance(value, bool | int | float | str):
        return value
    return "null" if value is None else str(value)


class TensorBoardLogger(RunLogger):
    def __init__(self, subdir: text("a folder name inside the run dir", doc="where the event files are written") = "tensorboard"):
        require("tensorboard", "tensorboard", "logger=tensorboard")  # torch's SummaryWriter writes through it
        self.subdir = subdir
        self.writer = None
        self.params: dict = {}

    def start(self, run_dir: Path, params: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / self.subdir))
        self.params = {key: hparam_value(value) for key, value in params.items()}

    def log_evaluation(self, step: int, values: dict, example_weights: torch.Tensor) -> None:
        for key, value in numbers(values).items():
            if key != "step":
                self.writer.add_scalar(key, value, step)
        seen = example_weights[~example_weights.isnan()]
        if len(seen) and seen.min() != seen.max():  # a uniform method's weights are all 1: no histogram to read
            self.writer.add_histogram("example_weight", seen, step)
        self.writer.flush()

    def finish(self, row: dict, run_dir: Path) -> None:
        confusion_png = Path(run_dir) / "confusion.png"
        if confusion_png.is_file():
            image = torch.from_numpy(np.array(Image.open(confusion_png).convert("RGB")))
            self.writer.add_image("confusion_matrix", image, dataformats="HWC")
        # "." keeps the hparams in this run's own folder, so the HParams tab shows one row per run
        self.writer.add_hparams(self.params, {f"hparam/{key}": value for key, value in final_metrics(row).items()}, run_name=".")

    def close(self, finished: bool) -> None:
        if self.writer is not None:
            self.writer.close()

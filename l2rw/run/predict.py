"""l2rw-predict: a finished run's model on new images -> a CSV of predicted classes and class probabilities.

    l2rw-predict outputs/runs/RUN photo.jpg more_photos/ labels.csv
    l2rw-predict outputs/runs/RUN more_photos/ --model best --output predictions.csv
    l2rw-predict outputs/runs/RUN more_photos/ --posthoc-tau run

IMAGES are image files, folders (every image at any depth below, in sorted order, hidden files
left out, as dataset=folder reads a class folder) or manifest CSVs (a `path` column, relative to
the CSV's folder unless absolute; other columns are ignored). Each image is decoded and
standardised as the run's training images were (its model.json). The CSV, on stdout unless
`--output`, has one row per image: `path` (as given, found below a folder, or written in the
manifest), `predicted` (a class name) and `p_<class>` per class, the softmax probabilities.
`--posthoc-tau` divides out the class prior the run trained on, as the run's `posthoc_tau` does
at evaluation: `run` takes the run's own value, 0 (the default) predicts the plain argmax.

An image that cannot be decoded is named on stderr and left out of the CSV, and the exit status
is 1. A bad argument is one line `error: ...` and exit status 2, and nothing is written.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from l2rw.data.folder import EXTENSIONS, images_below
from l2rw.data.images import decode_or_reason, read_table
from l2rw.errors import UserError, shown
from l2rw.file_io import atomic_path
from l2rw.models.saved import WHICH, ModelCard, load_trained
from l2rw.training.evaluation import PixelStandardizer
from l2rw.training.trained_prior import TrainedPrior

MANY_IMAGES = 1000  # from this many on, a progress bar: fewer are done in seconds
INPUTS_FIX = "give image files, folders of images or manifest CSVs with a path column"


@dataclass(frozen=True)
class Input:
    name: str   # the path as the CSV shows it: as given, as found below a folder, or as the manifest writes it
    file: Path  # where the image is read


def tau_option(value: str) -> float | None:
    """`--posthoc-tau` as a number >= 0, or None for the run's own."""
    if value == "run":
        return None
    try:
        tau = float(value)
    except ValueError:
        tau = math.nan
    if not (math.isfinite(tau) and tau >= 0):
        raise UserError(f"--posthoc-tau {shown(value)} is neither a number >= 0 nor `run`; give e.g. --posthoc-tau 1, "
                        "or --posthoc-tau run for the run's own posthoc_tau")
    return tau


def check_output(output: Path | None) -> None:
    """Refuse an `--output` that would replace a file (never a user's) or land in no folder."""
    if output is None:
        return
    if os.path.lexists(output):
        raise UserError(f"--output {shown(output)} exists; l2rw-predict never replaces a file: choose another path, or delete it")
    if not output.parent.is_dir():
        raise UserError(f"--output {shown(output)}: the folder {shown(output.parent)} does not exist; create it, or choose "
                        "another path")


def list_inputs(arguments: list[str]) -> list[Input]:
    """The images the arguments name, in the order given."""
    inputs = []
    for argument in arguments:
        path = Path(argument)
        if not os.path.lexists(path):  # a dangling link is there: decoding says what it is
            raise UserError(f"{shown(argument)} does not exist; {INPUTS_FIX}")
        if path.is_dir():
            inputs += folder_inputs(path)
        elif path.suffix.lower() == ".csv":
            inputs += manifest_inputs(path)
        else:
            inputs.append(Input(argument, path))
    return inputs


def folder_inputs(folder: Path) -> list[Input]:
    found = images_below(folder)
    if not found:
        raise UserError(f"{shown(folder)} holds no images ({', '.join(EXTENSIONS)}), at any depth; {INPUTS_FIX}")
    return [Input(str(path), path) for path in found]


def manifest_inputs(manifest: Path) -> list[Input]:
    """One input per row; a row naming nothing that exists is refused with its line."""
    if not manifest.is_file():  # a FIFO would block the read forever
        raise UserError(f"{shown(manifest)} is not a file; {INPUTS_FIX}")
    table = read_table(manifest, ["path"], "a manifest lists one image per row in its path column (relative to the CSV's "
                                           "folder, or absolute)")
    inputs = []
    for line, name in zip(table.index + 2, table.path.str.strip()):  # the CSV line, after the header
        if not name:
            raise UserError(f"{shown(manifest)} line {line}: the path is empty; fill it in or remove the line")
        file = manifest.parent / name  # an absolute name stays as it is
        if not os.path.lexists(file):
            raise UserError(f"{shown(manifest)} line {line}: {shown(file)} does not exist; fix the path (relative to the "
                            "CSV's folder, or absolute)")
        inputs.append(Input(name, file))
    return inputs


@contextmanager
def output_stream(output: Path | None) -> Iterator[TextIO]:
    """stdout, or a file that appears whole once everything is written (never half a CSV)."""
    if output is None:
        yield sys.stdout
        return
    with atomic_path(output) as partial_file, open(partial_file, "w", newline="", encoding="utf-8") as file:
        yield file


@torch.no_grad()
def probabilities(model: nn.Module, standardize: PixelStandardizer, images: list[np.ndarray],
                  adjustment: torch.Tensor | None) -> torch.Tensor:
    """Softmax of the (adjusted) logits of decoded (size, size, channels) images."""
    # contiguous: the layout of training's image cache; a channels-last batch would take other
    # kernels, whose rounding may differ and flip a near tie
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    logits = model(standardize(pixels)).float()
    return (logits if adjustment is None else logits + adjustment).softmax(1)


def write_predictions(writer, model: nn.Module, card: ModelCard, inputs: list[Input], adjustment: torch.Tensor | None,
                      batch_size: int) -> int:
    """One row per image that decodes, in order; returns how many did not (each named on stderr)."""
    standardize = card.standardizer()
    channels, size = card.image_shape[0], card.image_shape[1]
    mode = "L" if channels == 1 else "RGB"
    left_out = 0
    with tqdm(total=len(inputs), desc="predicting", unit="image", file=sys.stderr, disable=len(inputs) < MANY_IMAGES) as bar:
        for start in range(0, len(inputs), batch_size):
            batch, decoded, kept = inputs[start:start + batch_size], [], []
            for item in batch:
                image = decode_or_reason(item.file, size, mode)
                if isinstance(image, str):
                    bar.write(f"left out: cannot decode image {shown(item.file)} ({shown(image)})", file=sys.stderr)
                    left_out += 1
                else:
                    decoded.append(image)
                    kept.append(item)
            if kept:
                shares = probabilities(model, standardize, decoded, adjustment)
                writer.writerows([item.name, card.class_names[int(row.argmax())], *(f"{share:.6g}" for share in row.tolist())]
                                 for item, row in zip(kept, shares))
            bar.update(len(batch))
    return left_out


def predict(run_dir: Path, images: list[str], which: str, tau_text: str, output: Path | None, batch_size: int) -> int:
    """Write the predictions; returns how many images were left out. Every argument is checked
    before anything is written."""
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size} is below 1; give a positive number of images per batch")
    tau = tau_option(tau_text)
    check_output(output)
    model, card = load_trained(run_dir, which)
    inputs = list_inputs(images)
    tau = card.posthoc_tau if tau is None else tau
    adjustment = TrainedPrior(len(card.class_names), torch.device("cpu"), card.trained_prior).adjustment(tau)
    with output_stream(output) as stream:
        writer = csv.writer(stream, lineterminator="\n")  # quotes a comma or line break in a path or class name
        writer.writerow(["path", "predicted", *(f"p_{name}" for name in card.class_names)])
        left_out = write_predictions(writer, model, card, inputs, adjustment, batch_size)
    if left_out:
        print(f"{left_out} of {len(inputs)} images could not be decoded and are left out of the CSV", file=sys.stderr)
    return left_out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="l2rw-predict", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run dir of a finished run (it holds model.json)")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders of images, manifest CSVs with a path column")
    parser.add_argument("--model", choices=tuple(WHICH), default="final",
                        help="final: the weights after the last step; best: at the best validation evaluation")
    parser.add_argument("--posthoc-tau", default="0", metavar="TAU|run",
                        help="adjust the logits by -TAU * log(the class prior the run trained on); run: the run's own "
                             "posthoc_tau (default: 0, the plain argmax)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the CSV to this new file (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per forward pass (default: 256)")
    args = parser.parse_args(argv)
    try:
        left_out = predict(args.run_dir, args.images, args.model, args.posthoc_tau, args.output, args.batch_size)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if left_out:
        sys.exit(1)


if __name__ == "__main__":
    main()

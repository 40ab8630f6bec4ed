"""Your own images with l2rw: write a small imbalanced folder of PNGs with a trusted/ split, then
train three methods on it with `dataset=folder`.

    python examples/own_folder/run.py                     # into ./own_folder_data
    python examples/own_folder/run.py --folder /tmp/imgs steps=500

The images come from Fashion-MNIST when l2rw finds it (dataset.root, $L2RW_DATA or the system
copy), else from scikit-learn's 8x8 digits. The folder it writes:

    own_folder_data/
      train/<class>/*.png     # the first class has --majority images, the others --minority each
      trusted/<class>/*.png   # --trusted clean images per class: the meta set, never trained on
      test/<class>/*.png      # --test images per class, from the official test images

Then it runs, and prints, the command a user with such a folder types:

    l2rw-train --multirun dataset=folder dataset.root=own_folder_data dataset.channels=grey \\
        dataset.image_size=28 method=sgd,class_balanced,l2rw

Arguments after the options (key=value) are passed on to l2rw-train.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from l2rw.data.digits import load_digits
from l2rw.data.idx import load_fashion_mnist
from l2rw.data.splits import LabeledImages, Source
from l2rw.errors import UserError


def images_to_copy(digits: bool) -> tuple[Source, str]:
    """Fashion-MNIST when it is on this machine (and not `digits`), else scikit-learn's digits."""
    if not digits:
        try:
            return load_fashion_mnist(os.environ.get("L2RW_DATA", "~/.cache/l2rw")), "Fashion-MNIST"
        except UserError:
            pass
    return load_digits(), "scikit-learn digits"


def write_images(folder: Path, images: LabeledImages, class_names: list[str]) -> None:
    """Each image as folder/<class>/<n>.png."""
    for n, (image, label) in enumerate(zip(images.images, images.labels.tolist())):
        class_folder = folder / class_names[label].replace("/", "_")  # Fashion-MNIST's "T-shirt/top"
        class_folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(class_folder / f"{n:05d}.png")


def take(images: LabeledImages, counts: list[int], generator: torch.Generator) -> tuple[LabeledImages, LabeledImages]:
    """`counts[c]` random images of each class c, and the images left."""
    chosen = []
    for c, count in enumerate(counts):
        members = torch.nonzero(images.labels == c).flatten()
        if len(members) < count:
            raise SystemExit(f"class {c} has only {len(members)} images, fewer than the {count} asked for")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:count]])
    taken = torch.zeros(len(images), dtype=torch.bool)
    taken[torch.cat(chosen)] = True
    return images.subset(torch.nonzero(taken).flatten()), images.subset(torch.nonzero(~taken).flatten())


def write_folder(folder: Path, args: argparse.Namespace) -> int:
    """The imbalanced train/, trusted/ and test/ folders, disjoint; returns the image side in pixels."""
    source, name = images_to_copy(args.digits)
    generator = torch.Generator().manual_seed(0)
    trusted, rest = take(source.pool, [args.trusted] * args.classes, generator)
    train, rest = take(rest, [args.majority] + [args.minority] * (args.classes - 1), generator)
    test, _ = take(rest if source.test is None else source.test, [args.test] * args.classes, generator)  # digits: no test split
    for split, images in [("train", train), ("trusted", trusted), ("test", test)]:
        write_images(folder / split, images, source.class_names)
    print(f"wrote {folder}: {len(train)} training, {len(trusted)} trusted and {len(test)} test images "
          f"of {args.classes} {name} classes", flush=True)
    return source.pool.images.shape[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("own_folder_data"))
    parser.add_argument("--classes", type=int, default=5, help="the first CLASSES classes")
    parser.add_argument("--majority", type=int, default=100, help="training images of the first class")
    parser.add_argument("--minority", type=int, default=10, help="training images of each other class")
    parser.add_argument("--trusted", type=int, default=10, help="trusted images per class")
    parser.add_argument("--test", type=int, default=40, help="test images per class")
    parser.add_argument("--digits", action="store_true", help="copy scikit-learn's digits even when Fashion-MNIST is here")
    args, overrides = parser.parse_known_args()
    size = write_folder(args.folder, args)
    command = ["--multirun", "dataset=folder", f"dataset.root={args.folder}", "dataset.channels=grey",
               f"dataset.image_size={size}", "method=sgd,class_balanced,l2rw", *overrides]
    print("l2rw-train " + shlex.join(command), flush=True)
    return subprocess.run([sys.executable, "-m", "l2rw.run.train", *command]).returncode


if __name__ == "__main__":
    sys.exit(main())

"""CIFAR-10 (Krizhevsky 2009) from its official python version, `cifar-10-batches-py/`.

Read by a small reader of our own rather than torchvision's dataset class, so any files in
that format load (the tests write miniature ones, which fail torchvision's MD5 checks);
torchvision is used only to download the archive and verify its checksum.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from l2rw.data.splits import LabeledImages, Source
from l2rw.errors import UserError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # the official archive's checksum, as torchvision lists it
IMAGE_SHAPE = (3, 32, 32)  # each row holds the red, then green, then blue 32x32 plane


def load_cifar10(root: str, download: bool = False) -> Source:
    """The 50,000 official training images as the pool to split, the 10,000 test images as `test`."""
    folder = Path(root).expanduser() / FOLDER
    if download and missing_files(folder):
        fetch_archive(folder.parent)
    missing = missing_files(folder)
    if missing:
        problem = f"lacks {', '.join(missing)}" if folder.is_dir() else "does not exist"
        raise UserError(
            f"CIFAR-10 not found: {folder} {problem}. Either set dataset.root (or the "
            f"L2RW_DATA environment variable) to the folder that holds {FOLDER}/, or add "
            f"dataset.download=true to fetch it from {URL}"
        )
    class_names = [name.decode() for name in read_pickle(folder / META_FILE, [b"label_names"])[b"label_names"]]
    train = [read_batch(folder / name, len(class_names)) for name in TRAIN_FILES]
    return Source(
        pool=LabeledImages(torch.cat([b.images for b in train]), torch.cat([b.labels for b in train])),
        test=read_batch(folder / TEST_FILE, len(class_names)),
        class_names=class_names,
    )


def missing_files(folder: Path) -> list[str]:
    return [name for name in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (folder / name).is_file()]


def fetch_archive(root: Path) -> None:
    """Download the official archive into `root`, check its MD5 and unpack it there."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(URL, download_root=str(root), md5=ARCHIVE_MD5)
    except (OSError, RuntimeError) as error:  # no network (URLError is an OSError), or a checksum mismatch
        raise UserError(
            f"dataset.download=true could not fetch {URL} into {root} ({error}); download and unpack "
            f"it there by hand, or set dataset.root to a folder that already holds {FOLDER}/"
        ) from error


def read_pickle(path: Path, keys: list[bytes]) -> dict:
    """One official file: a pickled dict with bytes keys (written by Python 2)."""
    try:
        with open(path, "rb") as file:
            content = pickle.load(file, encoding="bytes")
    except Exception as error:  # a damaged pickle can fail with almost any exception type
        raise UserError(
            f"{path} is not a readable CIFAR-10 pickle ({type(error).__name__}: {error}); {replace_advice(path)}"
        ) from error
    if not isinstance(content, dict) or not all(key in content for key in keys):
        wanted = ", ".join(key.decode() for key in keys)
        raise UserError(
            f"{path} is not a CIFAR-10 file: expected a dict with the keys {wanted}; {replace_advice(path)}"
        )
    return content


def replace_advice(path: Path) -> str:
    return f"replace it with the official file (delete {path.parent} and rerun with dataset.download=true)"


def read_batch(path: Path, num_classes: int) -> LabeledImages:
    """A batch file's uint8 rows of 3,072 pixels as (N, 3, 32, 32) images, with their labels."""
    batch = read_pickle(path, [b"data", b"labels"])
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    pixels = int(np.prod(IMAGE_SHAPE))
    well_formed = (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (pixels,)
        and labels.shape == (len(data),) and np.issubdtype(labels.dtype, np.integer)
        and (len(labels) == 0 or 0 <= labels.min() <= labels.max() < num_classes)
    )
    if not well_formed:
        raise UserError(
            f"{path} is not a CIFAR-10 batch: expected uint8 rows of {pixels} pixels and one label in "
            f"[0, {num_classes - 1}] per row; {replace_advice(path)}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *IMAGE_SHAPE))
    return LabeledImages(images, torch.from_numpy(labels.astype(np.int64)))

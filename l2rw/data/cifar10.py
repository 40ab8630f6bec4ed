"""CIFAR-10 (Krizhevsky 2009) from its official python version, `cifar-10-batches-py/`, and the
reader of that pickle format that CIFAR-100 (l2rw/data/cifar100.py) shares.

Read by a small reader of our own rather than torchvision's dataset class, so any files in
that format load (the tests write miniature ones, which fail torchvision's MD5 checks);
torchvision is used only to download the archive and verify its checksum.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2rw.data.splits import LabeledImages, Source
from l2rw.errors import UserError
from l2rw.run.options import filesystem_path, flag

IMAGE_SHAPE = (3, 32, 32)  # each row holds the red, then green, then blue 32x32 plane
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's ndarray rebuilder, wherever this numpy keeps it


class ForeignObject(pickle.UnpicklingError):
    """A pickle names a class or function that no official file holds."""


def _latin1(text: str, encoding: str) -> bytes:
    """Python 3 pickles bytes for protocol 2 as _codecs.encode(text, "latin1"): that, no other codec."""
    if encoding != "latin1":
        raise ForeignObject(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


# All that the official files name besides builtins (which need no lookup): the numpy array of
# pixels, as Python 2's numpy named it and as today's does; and the bytes of copies that Python 3
# wrote with protocol 2, as the tests' miniatures are.
PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


@dataclass(frozen=True)
class CifarFormat:
    """One official python version: its folder, files and the keys its pickles use."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    labels_key: bytes  # in each batch file
    names_key: bytes  # in the meta file
    url: str
    archive_md5: str  # the official archive's checksum, as torchvision lists it

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


CIFAR10 = CifarFormat(
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    labels_key=b"labels",
    names_key=b"label_names",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
)


# The options of both CIFAR loaders
CIFAR_ROOT = filesystem_path(doc="the folder holding the official python version's folder, `cifar-10-batches-py/` "
                                 "or `cifar-100-python/`; ~ is expanded")
CIFAR_DOWNLOAD = flag(doc="true: fetch the official archive into root when files are missing, its MD5 checked")


def load_cifar10(root: CIFAR_ROOT, download: CIFAR_DOWNLOAD = False) -> Source:
    """The 50,000 official training images as the pool to split, the 10,000 test images as `test`."""
    return load_cifar(CIFAR10, root, download)


def load_cifar(fmt: CifarFormat, root: str, download: bool) -> Source:
    folder = Path(root).expanduser() / fmt.folder
    if download and missing_files(fmt, folder):
        fetch_archive(fmt, folder.parent)
    missing = missing_files(fmt, folder)
    if missing:
        problem = f"lacks {', '.join(missing)}" if folder.is_dir() else "does not exist"
        raise UserError(
            f"{fmt.title} not found: {folder} {problem}. Either set dataset.root (or the "
            f"L2RW_DATA environment variable) to the folder that holds {fmt.folder}/, or add "
            f"dataset.download=true to fetch it from {fmt.url}"
        )
    class_names = read_class_names(fmt, folder / fmt.meta_file)
    train = [read_batch(fmt, folder / name, len(class_names)) for name in fmt.train_files]
    return Source(
        pool=LabeledImages(torch.cat([b.images for b in train]), torch.cat([b.labels for b in train])),
        test=read_batch(fmt, folder / fmt.test_file, len(class_names)),
        class_names=class_names,
        provenance={"data_source": str(folder.resolve())},
    )


def missing_files(fmt: CifarFormat, folder: Path) -> list[str]:
    return [name for name in fmt.files if not (folder / name).is_file()]


def fetch_archive(fmt: CifarFormat, root: Path) -> None:
    """Download the official archive into `root`, check its MD5 and unpack it there."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(fmt.url, download_root=str(root), md5=fmt.archive_md5)
    except (OSError, RuntimeError) as error:  # no network (URLError is an OSError), or a checksum mismatch
        raise UserError(
            f"dataset.download=true could not fetch {fmt.url} into {root} ({error}); download and unpack "
            f"it there by hand, or set dataset.root to a folder that already holds {fmt.folder}/"
        ) from error


class OfficialUnpickler(pickle.Unpickler):
    """Builds only what the official files hold: anything else is refused unbuilt, since
    unpickling a hostile file's objects can run any code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_GLOBALS:
            raise ForeignObject(f"{module}.{name}")
        return PICKLE_GLOBALS[module, name]


def read_pickle(fmt: CifarFormat, path: Path, keys: list[bytes]) -> dict:
    """One official file: a pickled dict with bytes keys (written by Python 2)."""
    try:
        with open(path, "rb") as file:
            content = OfficialUnpickler(file, encoding="bytes").load()
    except ForeignObject as error:
        raise UserError(
            f"{path} holds {error}, which no {fmt.title} file holds; it was not loaded, as that could run code "
            f"from it: {replace_advice(path)}"
        ) from None
    except Exception as error:  # a damaged pickle can fail with almost any exception type
        raise UserError(
            f"{path} is not a readable {fmt.title} pickle ({type(error).__name__}: {error}); {replace_advice(path)}"
        ) from error
    if not isinstance(content, dict) or not all(key in content for key in keys):
        wanted = ", ".join(key.decode() for key in keys)
        raise UserError(
            f"{path} is not a {fmt.title} file: expected a dict with the keys {wanted}; {replace_advice(path)}"
        )
    return content


def read_class_names(fmt: CifarFormat, path: Path) -> list[str]:
    """The meta file's class names: a non-empty list of bytes."""
    names = read_pickle(fmt, path, [fmt.names_key])[fmt.names_key]
    if not (isinstance(names, list) and names and all(isinstance(name, bytes) for name in names)):
        raise UserError(
            f"{path} is not a {fmt.title} meta file: expected {fmt.names_key.decode()} to be a non-empty list of "
            f"class names (bytes); {replace_advice(path)}"
        )
    return [name.decode(errors="replace") for name in names]


def replace_advice(path: Path) -> str:
    return f"replace it with the official file (delete {path.parent} and rerun with dataset.download=true)"


def read_batch(fmt: CifarFormat, path: Path, num_classes: int) -> LabeledImages:
    """A batch file's uint8 rows of 3,072 pixels as (N, 3, 32, 32) images, with their labels."""
    batch = read_pickle(fmt, path, [b"data", fmt.labels_key])
    data = batch[b"data"]
    try:
        labels = np.asarray(batch[fmt.labels_key])
    except ValueError:  # ragged lists make no array
        labels = None
    pixels = int(np.prod(IMAGE_SHAPE))
    well_formed = (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (pixels,)
        and labels is not None and labels.shape == (len(data),) and np.issubdtype(labels.dtype, np.integer)
        and (len(labels) == 0 or 0 <= labels.min() <= labels.max() < num_classes)
    )
    if not well_formed:
        raise UserError(
            f"{path} is not a {fmt.title} batch: expected uint8 rows of {pixels} pixels and one label in "
            f"[0, {num_classes - 1}] per row; {replace_advice(path)}"
        )
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *IMAGE_SHAPE))
    return LabeledImages(images, torch.from_numpy(labels.astype(np.int64)))

"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) from their four IDX files.

Read by a small reader of our own, gzipped or not, so that any files in that format load: the
tests' miniatures, torchvision's downloads and Debian's `dataset-fashion-mnist` package alike.
torchvision is used only to download. Decompressing and `np.frombuffer` keep Fashion-MNIST's
47 MB to about a second.
"""
from __future__ import annotations

import gzip
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2rw.data.splits import LabeledImages, Source
from l2rw.errors import UserError
from l2rw.run.options import filesystem_path, flag

IMAGE_SIZE = (28, 28)
UINT8 = 0x08  # the IDX type code of unsigned bytes, the only one these datasets use
# The official file names; each may also end in .gz.
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Folders that system packages install the files into, looked in after `root`, by dataset.
SYSTEM_FOLDERS = {"FashionMNIST": [Path("/usr/share/datasets/fashion-mnist")]}


@dataclass(frozen=True)
class IdxDataset:
    title: str
    torchvision_name: str  # torchvision's dataset class, and its download folder <root>/<name>/raw/
    class_names: tuple[str, ...]
    system_package: str | None = None  # the command that installs a system copy


MNIST = IdxDataset("MNIST", "MNIST", tuple(str(digit) for digit in range(10)))
FASHION_MNIST = IdxDataset(
    "Fashion-MNIST", "FashionMNIST",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Bag", "Sneaker", "Ankle boot"),
    system_package="apt-get install dataset-fashion-mnist",
)


# The options of both IDX loaders
IDX_ROOT = filesystem_path(doc="the folder holding the four IDX files, gzipped or not, or torchvision's layout "
                               "below it (`MNIST/raw/`, `FashionMNIST/raw/`); ~ is expanded. Fashion-MNIST is also "
                               "looked for in `/usr/share/datasets/fashion-mnist/`")
IDX_DOWNLOAD = flag(doc="true: fetch the four files through torchvision into root's `MNIST/raw/` or "
                        "`FashionMNIST/raw/` when no folder holds them")


def load_mnist(root: IDX_ROOT, download: IDX_DOWNLOAD = False) -> Source:
    """The 60,000 training digits as the pool to split, the 10,000 test digits as `test`."""
    return load_idx_dataset(MNIST, root, download)


def load_fashion_mnist(root: IDX_ROOT, download: IDX_DOWNLOAD = False) -> Source:
    """The 60,000 training images as the pool to split, the 10,000 test images as `test`."""
    return load_idx_dataset(FASHION_MNIST, root, download)


def load_idx_dataset(dataset: IdxDataset, root: str, download: bool) -> Source:
    root_path = Path(root).expanduser()
    folders = candidate_folders(dataset, root_path)
    folder = first_complete(folders)
    if folder is None and download:
        fetch(dataset, root_path)
        folder = first_complete(folders)
    if folder is None:
        raise not_found(dataset, root_path, folders)
    if not folder.is_relative_to(root_path):  # a user who set dataset.root must see that another copy was read
        problem = "holds no" if root_path.is_dir() else "does not exist, so it holds no"
        print(f"dataset.root={root} {problem} {dataset.title} files; reading the copy in {folder}", file=sys.stderr)
    files = {name: file_in(folder, name) for name in FILES}
    num_classes = len(dataset.class_names)
    return Source(
        pool=read_pair(files[TRAIN_IMAGES], files[TRAIN_LABELS], num_classes),
        test=read_pair(files[TEST_IMAGES], files[TEST_LABELS], num_classes),
        class_names=list(dataset.class_names),
        provenance={"data_source": str(folder.resolve())},
    )


def candidate_folders(dataset: IdxDataset, root: Path) -> list[Path]:
    """Where the files may be, in the order looked in: `root` itself, torchvision's layout
    below it, then the system folders."""
    return [root, download_folder(dataset, root), *SYSTEM_FOLDERS.get(dataset.torchvision_name, [])]


def download_folder(dataset: IdxDataset, root: Path) -> Path:
    return root / dataset.torchvision_name / "raw"


def file_in(folder: Path, name: str) -> Path | None:
    """`name` or `name.gz` in `folder`; the uncompressed one when both are there (faster to read)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def first_complete(folders: list[Path]) -> Path | None:
    return next((folder for folder in folders if all(file_in(folder, name) for name in FILES)), None)


def not_found(dataset: IdxDataset, root: Path, folders: list[Path]) -> UserError:
    def state(folder: Path) -> str:
        if not folder.is_dir():
            return f"{folder} (no such folder)"
        missing = [name for name in FILES if not file_in(folder, name)]
        if len(missing) == len(FILES):
            return f"{folder} (holds none of them)"
        return f"{folder} (lacks {', '.join(missing)})"

    fixes = [f"run `{dataset.system_package}`"] if dataset.system_package else []
    fixes += [
        f"add dataset.download=true to fetch it into {download_folder(dataset, root)}",
        "set dataset.root (or the L2RW_DATA environment variable) to the folder holding the files",
    ]
    return UserError(
        f"{dataset.title} not found: looked for {', '.join(f'{name}[.gz]' for name in FILES)} in "
        f"{'; '.join(state(folder) for folder in folders)}. Either {', or '.join(fixes)}"
    )


def fetch(dataset: IdxDataset, root: Path) -> None:
    """torchvision's downloader puts the four files (and their .gz) in `download_folder`."""
    import torchvision.datasets

    downloader = getattr(torchvision.datasets, dataset.torchvision_name)
    try:
        downloader(str(root), download=True)
    except (OSError, RuntimeError) as error:  # no network (URLError is an OSError), or a checksum mismatch
        raise UserError(
            f"dataset.download=true could not fetch {dataset.title} from {' or '.join(downloader.mirrors)} "
            f"into {download_folder(dataset, root)} ({error}); copy the four files there by hand, "
            "or set dataset.root to a folder that already holds them"
        ) from error


def read_pair(images_path: Path, labels_path: Path, num_classes: int) -> LabeledImages:
    """An images file and its labels file as (N, 1, 28, 28) uint8 images and int64 labels."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if not len(images):  # nothing to train on, or to evaluate on
        raise damaged(images_path, "holds no images")
    if images.shape[1:] != IMAGE_SIZE:
        raise damaged(images_path, f"holds {dims(images.shape[1:])} images, expected {dims(IMAGE_SIZE)}")
    if len(images) != len(labels):
        raise damaged(labels_path, f"holds {len(labels)} labels for the {len(images)} images of {images_path}")
    if len(labels) and labels.max() >= num_classes:
        raise damaged(labels_path, f"holds label {labels.max()}, outside [0, {num_classes - 1}]")
    return LabeledImages(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes: magic number 0x0000 08 <ndim>, `ndim` big-endian int32
    sizes, then the values in C order."""
    content = read_bytes(path)
    header = 4 + 4 * ndim
    expected_magic = UINT8 << 8 | ndim
    if len(content) < header:
        raise damaged(path, f"is truncated: {len(content)} bytes, shorter than its {header}-byte header")
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:
        raise damaged(path, f"has magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    shape = tuple(int(size) for size in np.frombuffer(content, ">i4", count=ndim, offset=4))
    if min(shape) < 0:
        raise damaged(path, f"announces a negative size: {dims(shape)}")
    size = math.prod(shape)  # exact: np.prod would wrap around past int64 and could match the length
    values = len(content) - header
    if values != size:
        problem = "is truncated" if values < size else "has extra bytes"
        raise damaged(path, f"{problem}: {values} bytes of values where its header announces {dims(shape)} = {size}")
    # a writable copy, so that torch may share it
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape).copy()


def read_bytes(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # EOFError: a gzip stream cut short
        raise damaged(path, f"cannot be read ({type(error).__name__}: {error})") from error


def dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def damaged(path: Path, problem: str) -> UserError:
    return UserError(
        f"{path} {problem}; replace it with the official file (delete it and rerun with dataset.download=true)"
    )

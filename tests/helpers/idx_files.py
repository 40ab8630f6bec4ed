"""Miniature MNIST and Fashion-MNIST folders in the IDX format."""
import gzip
from pathlib import Path

import numpy as np

from l2rw.data.idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS

TEST_ID_OFFSET = 30000  # test images get ids from here on, so every image in a miniature is unique


def write_idx(path: Path, values: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, values.ndim]) + np.array(values.shape, ">i4").tobytes()
    content = header + values.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)


def write_mini_idx(folder: Path, gz: bool = True, train_per_class: int = 10, test_per_class: int = 3, seed: int = 0):
    """The four files with few images: labels shuffled, every image unique (its id in the first
    two pixels, read back by `image_ids`) and its third pixel set to 200 + label, so images and
    labels that come apart show."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""

    def write(images_name: str, labels_name: str, per_class: int, first_id: int) -> None:
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        images = rng.integers(0, 200, size=(len(labels), 28, 28))
        ids = first_id + np.arange(len(labels))
        images[:, 0, 0], images[:, 0, 1], images[:, 0, 2] = ids % 256, ids // 256, 200 + labels
        write_idx(folder / (images_name + suffix), images)
        write_idx(folder / (labels_name + suffix), labels)

    write(TRAIN_IMAGES, TRAIN_LABELS, train_per_class, 0)
    write(TEST_IMAGES, TEST_LABELS, test_per_class, TEST_ID_OFFSET)
    return folder

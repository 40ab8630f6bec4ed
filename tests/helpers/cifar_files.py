"""Miniature CIFAR-10 and CIFAR-100 folders in the official pickle format."""
import pickle

import numpy as np

from l2rw.data.cifar10 import CIFAR10, CifarFormat
from l2rw.data.cifar100 import CIFAR100

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FINE_NAMES = [f"fine{c}" for c in range(100)]
TEST_ID_OFFSET = 30000  # test images get ids from here on, so every image in the miniature is unique


def write_mini_cifar(
    root, train_per_class: int = 20, test_per_class: int = 3, seed: int = 0,
    fmt: CifarFormat = CIFAR10, class_names: list[str] = CLASS_NAMES,
):
    """The official layout of `fmt` with few images: labels shuffled across its training files,
    every image unique (its id in the first two red pixels, read back by `image_ids`) and its
    green plane's first pixel set to 200 + label % 50, so a wrong channel layout shows."""
    rng = np.random.default_rng(seed)
    folder = root / fmt.folder
    folder.mkdir(parents=True)
    k = len(class_names)

    def rows(labels: np.ndarray, first_id: int) -> np.ndarray:
        data = rng.integers(0, 200, size=(len(labels), 3072), dtype=np.uint8)
        ids = first_id + np.arange(len(labels))
        data[:, 0], data[:, 1], data[:, 1024] = ids % 256, ids // 256, 200 + labels % 50
        return data

    train_labels = rng.permutation(np.repeat(np.arange(k), train_per_class))
    train_rows = rows(train_labels, 0)
    parts = np.array_split(np.arange(len(train_labels)), len(fmt.train_files))
    for name, part in zip(fmt.train_files, parts):
        dump(folder / name, {b"batch_label": name.encode(), fmt.labels_key: train_labels[part].tolist(), b"data": train_rows[part]})
    test_labels = rng.permutation(np.repeat(np.arange(k), test_per_class))
    dump(folder / fmt.test_file, {fmt.labels_key: test_labels.tolist(), b"data": rows(test_labels, TEST_ID_OFFSET)})
    dump(folder / fmt.meta_file, {fmt.names_key: [name.encode() for name in class_names], b"num_vis": 3072})
    return root


def write_mini_cifar100(root, train_per_class: int = 4):
    return write_mini_cifar(root, train_per_class, test_per_class=1, fmt=CIFAR100, class_names=FINE_NAMES)


def dump(path, content: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=2)  # the official files are Python 2 pickles

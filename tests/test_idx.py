"""MNIST and Fashion-MNIST on generated miniatures in the IDX format, gzipped and not, in each
folder layout looked in; the Debian package's real Fashion-MNIST when it is installed."""
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets

from l2rw.data import idx
from l2rw.data.idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, load_fashion_mnist, load_mnist
from l2rw.errors import UserError
from l2rw.run.train import train
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST
from tests.helpers.idx_files import TEST_ID_OFFSET, write_idx, write_mini_idx
from tests.helpers.sources import image_ids

DEBIAN_FOLDER = idx.SYSTEM_FOLDERS["FashionMNIST"][0]
FASHION_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Bag", "Sneaker", "Ankle boot",
]
# config name: (loader, torchvision's class and folder name, class names)
DATASETS = {
    "mnist": (load_mnist, "MNIST", [str(d) for d in range(10)]),
    "fashion_mnist": (load_fashion_mnist, "FashionMNIST", FASHION_NAMES),
}


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch, tmp_path):
    """Tests see the same folders whether or not the Debian package is installed."""
    monkeypatch.setattr(idx, "SYSTEM_FOLDERS", {"FashionMNIST": [tmp_path / "system"]})


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("layout", ["root", "torchvision"])
def test_loads_shapes_labels_and_class_names(tmp_path, name, gz, layout):
    load, torchvision_name, class_names = DATASETS[name]
    write_mini_idx(tmp_path / torchvision_name / "raw" if layout == "torchvision" else tmp_path, gz=gz)
    source = load(str(tmp_path))
    assert source.class_names == class_names
    assert source.pool.images.shape == (100, 1, 28, 28) and source.pool.images.dtype == torch.uint8
    assert source.test.images.shape == (30, 1, 28, 28) and source.pool.labels.dtype == torch.int64
    assert class_counts(source.pool.labels) == [10] * 10 and class_counts(source.test.labels) == [3] * 10
    for part in (source.pool, source.test):
        assert torch.equal(part.images[:, 0, 0, 2].long(), 200 + part.labels)
    assert image_ids(source.pool.images) == set(range(100))
    assert image_ids(source.test.images) == set(range(TEST_ID_OFFSET, TEST_ID_OFFSET + 30))


def test_root_comes_before_torchvision_layout_before_system_folder_and_raw_before_gz(tmp_path, monkeypatch):
    system = write_mini_idx(tmp_path / "system", train_per_class=4)
    monkeypatch.setattr(idx, "SYSTEM_FOLDERS", {"FashionMNIST": [system]})
    root = tmp_path / "data"
    assert len(load_fashion_mnist(str(root)).pool) == 40
    write_mini_idx(root / "FashionMNIST" / "raw", train_per_class=5)
    assert len(load_fashion_mnist(str(root)).pool) == 50
    write_mini_idx(root, train_per_class=6)
    assert len(load_fashion_mnist(str(root)).pool) == 60
    write_mini_idx(root, gz=False, train_per_class=7)  # beside the .gz files: read first, being faster
    assert len(load_fashion_mnist(str(root)).pool) == 70


@pytest.mark.parametrize("root_exists", [True, False], ids=["empty-root", "no-root"])
def test_the_copy_read_is_named_on_stderr_and_in_the_provenance(tmp_path, monkeypatch, capsys, root_exists):
    system = write_mini_idx(tmp_path / "system")
    monkeypatch.setattr(idx, "SYSTEM_FOLDERS", {"FashionMNIST": [system]})
    root = tmp_path / "data"
    if root_exists:
        root.mkdir()
    source = load_fashion_mnist(str(root))
    assert source.provenance == {"data_source": str(system.resolve())}
    said = "holds no" if root_exists else "does not exist, so it holds no"
    assert capsys.readouterr().err == f"dataset.root={root} {said} Fashion-MNIST files; reading the copy in {system}\n"
    write_mini_idx(root / "FashionMNIST" / "raw")
    source = load_fashion_mnist(str(root))
    assert source.provenance == {"data_source": str((root / "FashionMNIST" / "raw").resolve())}
    assert capsys.readouterr().err == ""  # the copy the user pointed at needs no word


def test_root_expands_home(tmp_path, monkeypatch):
    write_mini_idx(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    assert len(load_mnist(f"~/{tmp_path.name}").pool) == 100


def test_missing_data_names_every_folder_and_the_fixes(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(UserError) as raised:
        load_fashion_mnist(str(root))
    message = str(raised.value)
    assert "\n" not in message
    for folder in (root, root / "FashionMNIST" / "raw", tmp_path / "system"):
        assert f"{folder} (no such folder)" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "dataset.download=true" in message and "dataset.root" in message


def test_a_folder_lacking_a_file_says_which(tmp_path):
    write_mini_idx(tmp_path)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    with pytest.raises(UserError, match=f"{tmp_path} \\(lacks {TEST_LABELS}\\)") as raised:
        load_mnist(str(tmp_path))
    assert "apt-get" not in str(raised.value)  # no system package holds MNIST


def rewrite(path: Path, change) -> None:
    """Apply `change` to the file's IDX bytes, decompressing and recompressing a .gz file."""
    content = path.read_bytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(change(gzip.decompress(content))))
    else:
        path.write_bytes(change(content))


@pytest.mark.parametrize(
    "name, damage, problem",
    [
        (TRAIN_IMAGES, lambda p: rewrite(p, lambda c: bytes([0, 0, 8, 1]) + c[4:]), "magic number 0x00000801"),
        (TRAIN_IMAGES, lambda p: p.write_bytes(b"<html>404 Not Found</html>"), "cannot be read"),
        (TRAIN_IMAGES, lambda p: p.write_bytes(p.read_bytes()[:5000]), "cannot be read"),  # an interrupted copy
        (TEST_IMAGES, lambda p: rewrite(p, lambda c: c[:-100]),
         "truncated: 23420 bytes of values where its header announces 30x28x28 = 23520"),
        (TEST_LABELS, lambda p: rewrite(p, lambda c: c[:6]), "truncated: 6 bytes, shorter than its 8-byte header"),
        (TRAIN_LABELS, lambda p: write_idx(p, np.zeros(99)), "99 labels for the 100 images"),
        (TRAIN_IMAGES, lambda p: write_idx(p, np.zeros((100, 28, 27))), "28x27 images"),
        (TEST_LABELS, lambda p: write_idx(p, np.full(30, 10)), "label 10"),
        (TEST_IMAGES, lambda p: rewrite(p, lambda c: c[:4] + np.array([-30, -28, 28], ">i4").tobytes() + c[16:]),
         "announces a negative size: -30x-28x28"),
        # 2^22 x 2^21 x 2^21 = 2^64 wraps around to 0 in int64, and the file holds no values
        (TEST_IMAGES, lambda p: rewrite(p, lambda c: c[:4] + np.array([1 << 22, 1 << 21, 1 << 21], ">i4").tobytes()),
         "is truncated: 0 bytes of values where its header announces 4194304x2097152x2097152"),
        (TEST_IMAGES, lambda p: write_idx(p, np.zeros((0, 28, 28))), "holds no images"),
    ],
    ids=["bad-magic", "not-gzip", "truncated-gzip", "truncated-values", "truncated-header", "count-mismatch",
         "wrong-size", "label-out-of-range", "negative-size", "size-overflows", "no-test-images"],
)
def test_damaged_file_is_named_with_what_is_wrong(tmp_path, name, damage, problem):
    path = write_mini_idx(tmp_path) / f"{name}.gz"
    damage(path)
    with pytest.raises(UserError) as raised:
        load_mnist(str(tmp_path))
    assert str(path) in str(raised.value) and problem in str(raised.value)
    assert "dataset.download=true" in str(raised.value)


@pytest.mark.parametrize("name", DATASETS)
def test_download_goes_through_torchvision(tmp_path, monkeypatch, name):
    load, torchvision_name, _ = DATASETS[name]
    calls = []

    class FakeDownloader(getattr(torchvision.datasets, torchvision_name)):
        def __init__(self, root, download):
            calls.append((root, download))
            write_mini_idx(Path(root) / torchvision_name / "raw")

    monkeypatch.setattr(torchvision.datasets, torchvision_name, FakeDownloader)
    assert len(load(str(tmp_path), download=True).pool) == 100
    assert calls == [(str(tmp_path), True)]
    load(str(tmp_path), download=True)
    assert len(calls) == 1  # files present: nothing fetched


def test_failed_download_names_the_address_and_the_folder(tmp_path, monkeypatch):
    class OfflineDownloader(torchvision.datasets.FashionMNIST):
        def __init__(self, root, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", OfflineDownloader)
    with pytest.raises(UserError) as raised:
        load_fashion_mnist(str(tmp_path), download=True)
    message = str(raised.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message and "Error downloading" in message
    assert all(mirror in message for mirror in OfflineDownloader.mirrors)


@pytest.mark.slow
@pytest.mark.parametrize("name, model", [("fashion_mnist", "lenet"), ("mnist", "mlp"), ("fashion_mnist", "resnet32")])
def test_trains_through_the_real_configs(make_cfg, tmp_path, name, model, optimizer_steps):
    root = write_mini_idx(tmp_path / "data", gz=name == "mnist")
    cfg = make_cfg(
        f"dataset={name}", f"dataset.root={root}", f"model={model}", "imbalance=0.5", "meta.per_class=2",
        "steps=4", "eval_every=4", "batch_size=8",
    )
    assert cfg.dataset.augment is False and cfg.meta.per_class == 2
    row = train(cfg, tmp_path / "run")
    assert (row["dataset"], row["model"], row["status"]) == (name, model, "ok")
    assert list(optimizer_steps.values()) == [4 - row["skipped_steps"]] and row["skipped_steps"] < 4
    assert row["train_size"] == 8 + 9  # 8 left per class after meta: majority 8 and 1 per other class, about half
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1


@pytest.mark.slow
def test_missing_data_through_the_cli_is_one_line_and_exit_code_2(tmp_path):
    done = run_cli("dataset=mnist", f"dataset.root={tmp_path / 'nowhere'}", *FAST, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MNIST not found" in lines[0] and str(tmp_path / "nowhere") in lines[0]
    assert not (tmp_path / "outputs" / "results.csv").exists()


@pytest.mark.skipif(
    not (DEBIAN_FOLDER / f"{TRAIN_IMAGES}.gz").is_file(), reason="apt-get install dataset-fashion-mnist"
)
@pytest.mark.slow
def test_debian_fashion_mnist_trains_well_above_chance(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "SYSTEM_FOLDERS", {"FashionMNIST": [DEBIAN_FOLDER]})
    cfg = make_cfg(
        "dataset=fashion_mnist", f"dataset.root={tmp_path / 'empty'}", "model=lenet", "method=sgd",
        "imbalance=0.5", "steps=300", "eval_every=300",
    )
    source = load_fashion_mnist(cfg.dataset.root)
    assert (len(source.pool), len(source.test)) == (60000, 10000)
    row = train(cfg, tmp_path / "run")
    assert row["status"] == "ok" and row["balanced_accuracy"] > 0.6  # chance is 0.1

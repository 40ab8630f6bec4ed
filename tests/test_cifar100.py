"""CIFAR-100 on a generated miniature `cifar-100-python` in the official pickle format."""
import numpy as np
import pytest
import torch

from l2rw.data.cifar10 import load_cifar10
from l2rw.data.cifar100 import CIFAR100, load_cifar100
from l2rw.errors import UserError
from l2rw.run.train import train
from tests.helpers.cifar_files import FINE_NAMES, TEST_ID_OFFSET, dump, write_mini_cifar, write_mini_cifar100
from tests.helpers.sources import image_ids


@pytest.fixture
def mini_root(tmp_path):
    return write_mini_cifar100(tmp_path / "data")


def test_loads_shapes_fine_labels_and_class_names(mini_root):
    source = load_cifar100(str(mini_root))
    assert source.class_names == FINE_NAMES
    assert source.pool.images.shape == (400, 3, 32, 32) and source.pool.images.dtype == torch.uint8
    assert source.test.images.shape == (100, 3, 32, 32) and source.test.labels.dtype == torch.int64
    assert torch.bincount(source.pool.labels).tolist() == [4] * 100
    assert torch.bincount(source.test.labels).tolist() == [1] * 100
    for part in (source.pool, source.test):  # rows are red, green, blue planes of 32x32, in that order
        assert torch.equal(part.images[:, 1, 0, 0].long(), 200 + part.labels % 50)
    assert image_ids(source.pool.images) == set(range(400))
    assert image_ids(source.test.images) == set(range(TEST_ID_OFFSET, TEST_ID_OFFSET + 100))


def test_missing_data_names_the_folder_and_both_fixes(tmp_path):
    with pytest.raises(UserError) as raised:
        load_cifar100(str(tmp_path / "nowhere"))
    message = str(raised.value)
    assert f"CIFAR-100 not found: {tmp_path / 'nowhere' / 'cifar-100-python'} does not exist" in message
    assert "dataset.root" in message and "dataset.download=true" in message and CIFAR100.url in message


def test_a_cifar10_batch_in_place_of_the_training_file_is_named(mini_root):
    path = mini_root / "cifar-100-python" / "train"
    dump(path, {b"labels": [0], b"data": np.zeros((1, 3072), np.uint8)})  # CIFAR-10's label key
    with pytest.raises(UserError) as raised:
        load_cifar100(str(mini_root))
    assert f"{path} is not a CIFAR-100 file: expected a dict with the keys data, fine_labels" in str(raised.value)
    assert "dataset.download=true" in str(raised.value)


@pytest.mark.parametrize(
    "load, write, url, md5, pool_size",
    [
        (load_cifar10, write_mini_cifar, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
         "c58f30108f718f92721af3b95e74349a", 200),
        (load_cifar100, write_mini_cifar100, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
         "eb9058c3a382ffc7106e4002c42a8d85", 400),
    ],
    ids=["cifar10", "cifar100"],
)
def test_download_goes_through_torchvision_with_the_official_checksum(
    tmp_path, monkeypatch, load, write, url, md5, pool_size
):
    """Both versions share CIFAR-10's downloader; each passes its own archive and checksum."""
    calls = []

    def fake_download(url, download_root, md5):
        calls.append((url, download_root, md5))
        write(tmp_path)

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    assert len(load(str(tmp_path), download=True).pool) == pool_size
    assert calls == [(url, str(tmp_path), md5)]
    load(str(tmp_path), download=True)
    assert len(calls) == 1  # files present: nothing fetched


@pytest.mark.slow
def test_trains_through_the_real_config(make_cfg, mini_root, tmp_path, optimizer_steps):
    cfg = make_cfg(
        "dataset=cifar100", f"dataset.root={mini_root}", "dataset.classes=[99,0,50]", "meta.per_class=2",
        "imbalance=0.5", "steps=4", "eval_every=4", "batch_size=8",
    )
    assert cfg.dataset.augment is True and make_cfg("dataset=cifar100").meta.per_class == 10
    row = train(cfg, tmp_path / "run")
    assert (row["dataset"], row["status"]) == ("cifar100", "ok")
    assert list(optimizer_steps.values()) == [4 - row["skipped_steps"]] and row["skipped_steps"] < 4
    assert row["train_size"] == 2 + 1 + 1  # 2 left per class after meta: fine99 holds half
    assert len(row["per_class_recall"].split()) == 3

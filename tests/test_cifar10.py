"""CIFAR-10 on a generated miniature `cifar-10-batches-py` in the official pickle format."""
import numpy as np
import pandas as pd
import pytest
import torch

from l2rw.data import build_splits
from l2rw.data.augment import crop_and_flip, random_crop_and_flip
from l2rw.data.cifar10 import CIFAR10, load_cifar10
from l2rw.errors import UserError
from l2rw.run.train import train
from tests.helpers.cifar_files import CLASS_NAMES, TEST_ID_OFFSET, dump, write_mini_cifar
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST, compose_preset
from tests.helpers.sources import image_ids


@pytest.fixture
def mini_root(tmp_path):
    return write_mini_cifar(tmp_path / "data")


def cifar(root, *overrides: str) -> list[str]:
    return ["dataset=cifar10", f"dataset.root={root}", *overrides]


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels, minlength=10).tolist()


def test_loads_shapes_labels_and_class_names(mini_root):
    source = load_cifar10(str(mini_root))
    assert source.class_names == CLASS_NAMES
    assert source.pool.images.shape == (200, 3, 32, 32) and source.pool.images.dtype == torch.uint8
    assert source.test.images.shape == (30, 3, 32, 32)
    assert class_counts(source.pool.labels) == [20] * 10 and class_counts(source.test.labels) == [3] * 10
    for part in (source.pool, source.test):  # rows are red, green, blue planes of 32x32, in that order
        assert torch.equal(part.images[:, 1, 0, 0].long(), 200 + part.labels % 50)
    assert image_ids(source.pool.images) == set(range(200))
    assert image_ids(source.test.images) == set(range(TEST_ID_OFFSET, TEST_ID_OFFSET + 30))


def test_root_expands_home_and_comes_from_the_environment(tmp_path, monkeypatch, make_cfg):
    write_mini_cifar(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path.parent))
    assert len(load_cifar10(f"~/{tmp_path.name}").pool) == 200
    monkeypatch.setenv("L2RW_DATA", str(tmp_path))
    assert make_cfg("dataset=cifar10").dataset.source.root == str(tmp_path)


@pytest.mark.parametrize("profile", ["step", "longtail"])
def test_meta_train_test_disjoint_meta_balanced_test_official(make_cfg, mini_root, profile):
    splits = build_splits(make_cfg(*cifar(mini_root, f"dataset.profile={profile}", "meta.per_class=4", "imbalance_ratio=10")))
    train, meta, test = (image_ids(part.images) for part in (splits.train, splits.meta, splits.test))
    assert len(train) == len(splits.train) and len(meta) == len(splits.meta)
    assert not (train & meta) and not (train & test) and not (meta & test)
    assert max(train | meta) < TEST_ID_OFFSET  # meta comes from the official training set
    assert class_counts(splits.meta.labels) == [4] * 10
    assert test == set(range(TEST_ID_OFFSET, TEST_ID_OFFSET + 30))  # the whole official test set


def test_step_profile_counts(make_cfg, mini_root):
    splits = build_splits(make_cfg(*cifar(mini_root, "meta.per_class=2", "imbalance=0.5")))
    assert class_counts(splits.train.labels) == [18] + [2] * 9  # 18 of 36: exactly half


def test_longtail_profile_counts(make_cfg, mini_root):
    splits = build_splits(make_cfg(*cifar(mini_root, "dataset.profile=longtail", "meta.per_class=2", "imbalance_ratio=10")))
    # CIFAR-10-LT: n_c = floor(18 * 10^(-c/9)), 18 images left per class after the meta set
    assert class_counts(splits.train.labels) == [18, 13, 10, 8, 6, 5, 3, 3, 2, 1]


def test_class_subset_airplane_vs_automobile(make_cfg, mini_root):
    splits = build_splits(make_cfg(*cifar(mini_root, "dataset.classes=[1,0]", "meta.per_class=2", "imbalance=0.9")))
    assert splits.class_names == ["automobile", "airplane"]
    assert torch.equal(torch.bincount(splits.train.labels), torch.tensor([18, 2]))  # majority: the first listed
    assert torch.equal(torch.bincount(splits.test.labels), torch.tensor([3, 3]))


def test_missing_data_names_the_folder_and_both_fixes(make_cfg, tmp_path):
    with pytest.raises(UserError) as raised:
        train(make_cfg(*cifar(tmp_path / "nowhere")), tmp_path / "run")
    message = str(raised.value)
    assert str(tmp_path / "nowhere" / CIFAR10.folder) in message
    assert "dataset.root" in message and "dataset.download=true" in message
    assert not (tmp_path / "results.csv").exists()


def test_missing_file_is_named(mini_root):
    (mini_root / CIFAR10.folder / "data_batch_4").unlink()
    with pytest.raises(UserError, match="lacks data_batch_4"):
        load_cifar10(str(mini_root))


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"<html>404 Not Found</html>"),
        lambda path: path.write_bytes(path.read_bytes()[:5000]),  # an interrupted copy
        lambda path: dump(path, {b"labels": [0]}),  # no pixels
        lambda path: dump(path, {b"labels": [0, 1], b"data": np.zeros((2, 1024), np.uint8)}),  # grey images
        lambda path: dump(path, {b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}),  # label out of range
        lambda path: dump(path, {b"labels": [[0, 1], [2]], b"data": np.zeros((2, 3072), np.uint8)}),
    ],
    ids=["not-a-pickle", "truncated", "missing-key", "wrong-shape", "bad-label", "ragged-labels"],
)
def test_corrupt_file_is_named_with_the_fix(mini_root, damage):
    damage(mini_root / CIFAR10.folder / "data_batch_3")
    with pytest.raises(UserError) as raised:
        load_cifar10(str(mini_root))
    assert str(mini_root / CIFAR10.folder / "data_batch_3") in str(raised.value)
    assert "dataset.download=true" in str(raised.value)


@pytest.mark.parametrize("names", ["airplane", 10, [], [b"airplane", 10]], ids=["text", "number", "empty", "mixed"])
def test_damaged_class_names_name_the_meta_file(mini_root, names):
    path = mini_root / CIFAR10.folder / "batches.meta"
    dump(path, {b"label_names": names})
    with pytest.raises(UserError) as raised:
        load_cifar10(str(mini_root))
    message = str(raised.value)
    assert message.startswith(f"{path} is not a CIFAR-10 meta file: expected label_names to be a non-empty list")
    assert "\n" not in message and "dataset.download=true" in message


def test_batched_crop_and_flip_match_a_per_image_reference():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    offsets, flips = torch.randint(0, 9, (64, 2), generator=generator), torch.rand(64, generator=generator) < 0.5
    expected = []
    for image, (row, column), flip in zip(images, offsets.tolist(), flips):
        crop = torch.nn.functional.pad(image, (4, 4, 4, 4))[:, row : row + 32, column : column + 32]
        expected.append(crop.flip(-1) if flip else crop)
    assert torch.equal(crop_and_flip(images, offsets, flips, 4), torch.stack(expected))
    assert flips.any() and not flips.all() and (offsets != 4).any()


def test_random_crop_and_flip_follow_the_generator():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    first, again = (random_crop_and_flip(images, torch.Generator().manual_seed(1)) for _ in range(2))
    other = random_crop_and_flip(images, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other) and first.dtype == torch.uint8


@pytest.mark.slow
def test_augmentation_is_switchable_and_reproducible(make_cfg, mini_root, tmp_path):
    def metrics(name, *overrides):
        cfg = make_cfg(*cifar(mini_root, "meta.per_class=2", "steps=4", "eval_every=2", "batch_size=16", *overrides))
        train(cfg, tmp_path / name)
        return pd.read_csv(tmp_path / name / "metrics.csv").drop(columns="seconds")

    on, on_again, off = metrics("a"), metrics("b"), metrics("c", "dataset.augment=false")
    pd.testing.assert_frame_equal(on, on_again)
    assert not on.equals(off)
    assert make_cfg().dataset.augment is False  # digits: shifting or mirroring 8x8 digits changes them


@pytest.mark.slow
def test_resnet32_l2rw_end_to_end_through_the_cli(mini_root, tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        *cifar(mini_root, "model=resnet32", "method=l2rw", "meta.per_class=2"), *FAST,
        "steps=3", "eval_every=3", "batch_size=8", f"results_csv={results}", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(results)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.dataset, row.model, row.method, row.status) == ("cifar10", "resnet32", "l2rw", "ok")
    assert row.train_size == 18 + 9 and len(str(row.per_class_recall).split()) == 10
    assert pd.read_csv(tmp_path / "run" / "metrics.csv").step.tolist() == [3]


@pytest.mark.parametrize("preset", ["cifar10_imbalance", "cifar10_lt"])
@pytest.mark.slow
def test_preset_composes_and_runs_a_few_steps(make_cfg, tmp_path, preset):
    root = write_mini_cifar(tmp_path / "data", train_per_class=110)  # LT at ratio 100 needs >= 100 per class
    cfg = make_cfg(f"+experiment={preset}", f"dataset.root={root}", "steps=2", "eval_every=2", "batch_size=16")
    assert (cfg.dataset.name, cfg.model.name, cfg.meta.per_class) == ("cifar10", "resnet32", 10)
    row = train(cfg, tmp_path / "run")
    assert row["status"] == "ok" and row["profile"] == ("step" if preset == "cifar10_imbalance" else "longtail")


@pytest.mark.parametrize(
    "preset, grid",
    [
        ("cifar10_imbalance", {"method": "sgd,weighted_sampler,l2rw", "imbalance": "0.5,0.6,0.7,0.8,0.9"}),
        ("cifar10_lt", {"method": "sgd,weighted_sampler,l2rw", "imbalance": "0.9", "imbalance_ratio": "10,100"}),
    ],
)
def test_preset_sweeps_its_grid(preset, grid):
    cfg = compose_preset(preset, hydra_config=True)
    assert {key: str(value) for key, value in cfg.hydra.sweeper.params.items()} == grid
    assert (cfg.steps, cfg.schedule, cfg.momentum, cfg.batch_size) == (80000, "step", 0.9, 100)

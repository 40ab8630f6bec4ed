"""example_weights.csv's `path` column: each training example's image file, carried from the loader
(dataset=folder in both layouts, HAM10000) through class selection, the imbalance profile, the
train_size cap, label noise and meta.add_to_train; a dataset without files has no such column.

Every generated image is one flat grey level of its own, so the file a path names can be decoded
and compared with the training image it is said to be.
"""
from itertools import count
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from l2rw.data import build_splits, images
from l2rw.data.ham10000 import load_ham10000
from l2rw.run.train import train

SIZE = 6
# images per class of each split: imbalanced train, a trusted split that is the meta set
LAYOUT = {"train": {"cat": 12, "dog": 6, "emu": 5}, "trusted": {"cat": 2, "dog": 2, "emu": 2}}
EXAMPLE_COLUMNS = ["index", "class", "corrupted", "mean_weight", "zero_share", "steps_seen"]  # without files


def write_grey(path: Path, grey: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (7, 5), grey).save(path)


def write_class_folders(root: Path) -> None:
    """root/<split>/<class>/<i>.png, each image a grey level no other has."""
    levels = count(10, 3)
    for split, classes in LAYOUT.items():
        for name, images_of_class in classes.items():
            for i in range(images_of_class):
                write_grey(root / split / name / f"{i:03d}.png", next(levels))


def write_manifest(folder: Path, per_class: dict[str, int]) -> list[str]:
    """folder/labels.csv listing folder/imgs/<label>/<i>.png (training images only, two to a
    patient); the paths as listed."""
    levels, rows = count(10, 3), []
    for label, images_of_class in per_class.items():
        for i in range(images_of_class):
            name = f"imgs/{label}/{i}.png"
            write_grey(folder / name, next(levels))
            rows.append({"path": name, "label": label, "patient": f"{label}{i // 2}"})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return [row["path"] for row in rows]


def make_unreadable(path: Path) -> None:
    path.write_bytes(b"\x89PNG not really")


def decoded(path: Path) -> torch.Tensor:
    return torch.tensor(images.decode_image(path, SIZE)).permute(2, 0, 1)


def assert_each_path_names_its_training_image(splits, base: Path) -> None:
    """Each training image is the decoded file its path names, and, where noise left the label
    alone, that file's class folder is the example's class."""
    assert splits.train_paths is not None and len(splits.train_paths) == len(splits.train)
    for image, label, corrupted, name in zip(splits.train.images, splits.train.labels, splits.train_corrupted, splits.train_paths):
        assert torch.equal(decoded(base / name), image), name
        assert corrupted or Path(name).parent.name == splits.class_names[label], name


def folder_cfg(make_cfg, root: Path, *overrides: str):
    return make_cfg("dataset=folder", f"dataset.root={root}", f"dataset.image_size={SIZE}", "dataset.workers=1",
                    "dataset.test_per_class=1", "dataset.skip_unreadable=true", *overrides)


@pytest.mark.parametrize("overrides", [
    ["dataset.profile=step", "imbalance=0.6", "dataset.classes=[2,0]"],
    ["dataset.profile=longtail", "imbalance_ratio=2", "dataset.train_size=8", "meta.add_to_train=true"],
    ["noise.kind=uniform", "noise.rate=0.5", "dataset.classes=[1,0]", "meta.add_to_train=true"],
])
def test_class_folder_paths_name_each_training_image_with_an_unreadable_one_left_out(make_cfg, tmp_path, overrides):
    write_class_folders(tmp_path)
    make_unreadable(tmp_path / "train" / "cat" / "003.png")
    make_unreadable(tmp_path / "trusted" / "cat" / "000.png")
    splits = build_splits(folder_cfg(make_cfg, tmp_path, *overrides))
    assert splits.skipped_files == ["train/cat/003.png", "trusted/cat/000.png"]
    assert_each_path_names_its_training_image(splits, tmp_path)
    assert not set(splits.skipped_files) & set(splits.train_paths)
    trusted = [name for name in splits.train_paths if name.startswith("trusted/")]
    assert len(trusted) == (len(splits.meta) if "meta.add_to_train=true" in overrides else 0)


@pytest.mark.parametrize("overrides", [
    ["dataset.profile=step", "imbalance=0.6", "dataset.classes=[0,2]", "meta.add_to_train=true"],
    ["dataset.profile=longtail", "imbalance_ratio=2", "dataset.train_size=6", "dataset.group_column=patient"],
])
def test_manifest_paths_are_relative_to_its_folder_with_an_unreadable_one_left_out(make_cfg, tmp_path, overrides):
    listed = write_manifest(tmp_path / "data", {"a": 14, "b": 9, "c": 8})
    make_unreadable(tmp_path / "data" / "imgs" / "a" / "5.png")
    splits = build_splits(folder_cfg(make_cfg, tmp_path, "dataset.manifest=data/labels.csv", "meta.per_class=2", *overrides))
    assert splits.skipped_files == ["imgs/a/5.png"]
    assert_each_path_names_its_training_image(splits, tmp_path / "data")
    assert set(splits.train_paths) <= set(listed) - {"imgs/a/5.png"}


def test_ham10000_paths_are_relative_to_its_root_with_an_unreadable_one_left_out(tmp_path):
    rows = [{"lesion_id": f"HAM_{i}", "image_id": f"ISIC_{i:07d}", "dx": dx} for i, dx in enumerate(["nv", "nv", "mel", "bcc"])]
    pd.DataFrame(rows).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    names = [f"part_{i % 2 + 1}/ISIC_{i:07d}.jpg" for i in range(len(rows))]
    for i, name in enumerate(names):
        write_grey(tmp_path / name, 40 * i + 20)
    make_unreadable(tmp_path / names[1])
    source = load_ham10000(str(tmp_path), SIZE, str(tmp_path / "cache"), workers=1, skip_unreadable=True)
    assert source.skipped_files == [names[1]] and source.pool_paths == [names[0], *names[2:]]
    for image, name in zip(source.pool.images, source.pool_paths):
        assert torch.equal(decoded(tmp_path / name), image), name


def test_a_dataset_without_files_has_no_paths(make_cfg):
    assert build_splits(make_cfg("dataset=digits")).train_paths is None


@pytest.mark.slow
def test_a_folder_runs_example_weights_name_each_examples_file_and_digits_runs_do_not(make_cfg, tmp_path):
    write_class_folders(tmp_path / "data")
    make_unreadable(tmp_path / "data" / "train" / "dog" / "002.png")
    row = train(folder_cfg(make_cfg, tmp_path / "data", "method=sgd", "dataset.classes=[2,1]", "meta.add_to_train=true"),
                tmp_path / "folder_run")
    examples = pd.read_csv(tmp_path / "folder_run" / "example_weights.csv")
    assert list(examples.columns) == ["index", "path", *EXAMPLE_COLUMNS[1:]] and len(examples) == row["train_size"]
    assert (examples.path.map(lambda name: Path(name).parent.name) == examples["class"]).all()
    assert "train/dog/002.png" not in set(examples.path) and examples.path.str.startswith("trusted/").sum() == row["meta_size"]

    train(make_cfg("dataset=digits", "method=sgd"), tmp_path / "digits_run")
    assert (tmp_path / "digits_run" / "example_weights.csv").read_text().splitlines()[0] == ",".join(EXAMPLE_COLUMNS)

"""dataset=folder on generated PNG and JPEG folders: both layouts, trusted/ as the whole meta set,
grouping, the cache, bad input, and the example through the CLI.

Most images are one flat grey level, unique per image (`level`), so any split can be traced back
to the files it came from after resizing.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from l2rw.data import build_splits, images
from l2rw.data.folder import load_folder
from l2rw.errors import UserError
from tests.helpers.command_line import l2rw_train
from tests.helpers.configs import FAST
from tests.helpers.scripts import load_script

SIZE = 6
ROOT = Path(__file__).resolve().parents[1]
# images per class in each split of the standard miniature: imbalanced train, uneven trusted
LAYOUT = {"train": {"cat": 12, "dog": 5, "emu": 4}, "trusted": {"cat": 2, "dog": 3, "emu": 2}}


def level(n: int) -> int:
    return 3 * n + 10


def write_image(path: Path, grey: int, size=(13, 9), mode="L") -> None:
    """A flat image; RGB ones are grey too (equal channels), so that any mode decodes to `grey`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = grey if mode == "L" else (grey, grey, grey)
    Image.new(mode, size, colour).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


def write_folder(root: Path, layout=LAYOUT) -> dict[str, list[int]]:
    """root/<split>/<class>/<n>.png, grey and RGB of odd sizes; the levels written per split."""
    levels, n = {}, 0
    for split, classes in layout.items():
        levels[split] = []
        for name, count in classes.items():
            for i in range(count):
                mode, size = ("RGB", (15, 11)) if n % 2 else ("L", (9, 14))
                write_image(root / split / name / f"{i:03d}.png", level(n), size, mode)
                levels[split].append(level(n))
                n += 1
    return levels


def levels_of(images: torch.Tensor) -> list[int]:
    return sorted(images.float().mean(dim=(1, 2, 3)).round().long().tolist())


def folder_cfg(make_cfg, root, *overrides):
    return make_cfg("dataset=folder", f"dataset.root={root}", f"dataset.image_size={SIZE}", "dataset.workers=1",
                    "dataset.test_per_class=1", *overrides)


def test_class_folders_load_in_sorted_class_order_in_both_colour_modes(tmp_path):
    levels = write_folder(tmp_path)
    rgb = load_folder(str(tmp_path), image_size=SIZE, workers=1)
    grey = load_folder(str(tmp_path), image_size=SIZE, channels="grey", workers=1)
    assert rgb.class_names == ["cat", "dog", "emu"] and rgb.test is None and rgb.val is None
    assert rgb.pool.images.shape == (21, 3, SIZE, SIZE) and grey.pool.images.shape == (21, 1, SIZE, SIZE)
    assert rgb.pool.labels.tolist() == [0] * 12 + [1] * 5 + [2] * 4
    assert levels_of(rgb.pool.images) == levels["train"] == levels_of(grey.pool.images)
    assert levels_of(rgb.meta.images) == levels["trusted"] and rgb.meta.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert rgb.provenance["data_source"] == str(tmp_path.resolve()) and rgb.provenance["skipped_images"] == 0
    assert rgb.provenance["data_cache_key"] != grey.provenance["data_cache_key"]


def test_decoding_keeps_colour_and_crops_the_centre_of_odd_sizes(tmp_path):
    image = np.zeros((21, 37, 3), dtype=np.uint8)
    image[:, 8:29] = (200, 40, 90)  # the centre 21x21 square is coloured, the sides black
    Image.fromarray(image).save(tmp_path / "wide.jpg", quality=98)
    decoded = images.decode_image(tmp_path / "wide.jpg", 7)
    assert decoded.shape == (7, 7, 3)
    error = np.abs(decoded.astype(int) - (200, 40, 90))
    assert error[:, 1:-1].max() < 8 and decoded[..., 0].min() > 100  # squashing would darken whole columns
    assert images.decode_image(tmp_path / "wide.jpg", 7, "L").shape == (7, 7, 1)


def test_trusted_is_the_whole_meta_set_and_never_trained_on(make_cfg, tmp_path, capsys):
    levels = write_folder(tmp_path)
    for add_to_train in (False, True):
        splits = build_splits(folder_cfg(make_cfg, tmp_path, "meta.per_class=1", f"meta.add_to_train={add_to_train}"))
        assert levels_of(splits.meta.images) == levels["trusted"]  # all 7, whatever meta.per_class says
        trained = set(levels_of(splits.train.images))
        assert bool(trained & set(levels["trusted"])) == add_to_train
        assert trained | set(levels_of(splits.test.images)) >= set(levels["train"])  # natural: every image used
    assert "has no test images: a balanced test set is carved from train" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, train_counts", [
    (["dataset.profile=step", "imbalance=0.5"], [6, 3, 3]),  # after 1 test image per class: 11, 4, 3 left
    (["dataset.profile=longtail", "imbalance_ratio=3"], [6, 3, 2]),
    (["noise.kind=uniform", "noise.rate=0.5", "dataset.classes=[2,0]"], [3, 11]),
])
def test_profiles_noise_and_class_selection_work_on_a_folder(make_cfg, tmp_path, overrides, train_counts):
    levels = write_folder(tmp_path)
    splits = build_splits(folder_cfg(make_cfg, tmp_path, *overrides))
    true_counts = torch.bincount(splits.train.labels[~splits.train_corrupted], minlength=len(train_counts))
    assert true_counts.sum() + splits.train_corrupted.sum() == sum(train_counts)
    if "noise.kind=uniform" in overrides:
        assert 0 < splits.train_corrupted.sum() < sum(train_counts) and splits.class_names == ["emu", "cat"]
    else:
        assert true_counts.tolist() == train_counts
    assert set(levels_of(splits.meta.images)) <= set(levels["trusted"])  # the trusted images, never noisy


def test_given_val_and_test_splits_are_used_whole(make_cfg, tmp_path, capsys):
    layout = LAYOUT | {"val": {"cat": 1, "dog": 1, "emu": 1}, "test": {"cat": 2, "dog": 1, "emu": 3}}
    levels = write_folder(tmp_path, layout)
    splits = build_splits(folder_cfg(make_cfg, tmp_path, "dataset.val_per_class=2"))
    assert levels_of(splits.val.images) == levels["val"] and levels_of(splits.test.images) == levels["test"]
    assert levels_of(splits.train.images) == levels["train"]  # nothing carved from train
    assert " has no " not in capsys.readouterr().err  # nothing is missing, nothing said


def write_manifest(root: Path, rows: list[dict], name="labels.csv") -> Path:
    path = root / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def manifest_rows(root: Path, per_class: dict[str, int], groups_of: int = 1) -> list[dict]:
    """JPEGs and PNGs in nested folders; `groups_of` consecutive images of a class share a patient."""
    rows = []
    for name, count in per_class.items():
        for i in range(count):
            relative = f"imgs/{name[0]}/{i}.{'jpg' if i % 3 == 0 else 'png'}"
            write_image(root / relative, level(len(rows)), (17, 12), "RGB")
            rows.append({"path": relative, "label": name, "patient": f"{name}{i // groups_of}"})
    return rows


def test_a_manifest_without_split_column_is_all_training_data_and_says_what_is_carved(make_cfg, tmp_path, capsys):
    rows = manifest_rows(tmp_path, {"b": 6, "a": 9})
    write_manifest(tmp_path, rows)
    splits = build_splits(folder_cfg(make_cfg, tmp_path, "dataset.manifest=labels.csv", "meta.per_class=2"))
    assert splits.class_names == ["a", "b"] and len(splits.meta) == 4 and len(splits.test) == 2
    assert len(splits.train) == 15 - 6
    err = capsys.readouterr().err
    assert "labels.csv has no trusted images: the meta set is carved from train (meta.per_class per class)" in err
    assert "has no test images" in err
    assert splits.provenance["data_source"] == str((tmp_path / "labels.csv").resolve())


def test_a_manifest_split_column_and_an_absolute_manifest_path(make_cfg, tmp_path):
    rows = manifest_rows(tmp_path / "data", {"a": 8, "b": 4})
    for row, split in zip(rows, ["trusted", "test", "", "train"] * 3):
        row["split"] = split
    manifest = write_manifest(tmp_path / "data", rows)
    source = load_folder(str(tmp_path / "elsewhere"), manifest=str(manifest), image_size=SIZE, workers=1)
    assert [len(source.meta), len(source.test), len(source.pool)] == [3, 3, 6]
    assert source.class_names == ["a", "b"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_column_keeps_each_patient_in_one_split(make_cfg, tmp_path, seed):
    rows = manifest_rows(tmp_path, {"a": 12, "b": 9}, groups_of=3)
    write_manifest(tmp_path, rows)
    splits = build_splits(folder_cfg(make_cfg, tmp_path, "dataset.manifest=labels.csv",
                                     "dataset.group_column=patient", "meta.per_class=1", f"seed={seed}"))
    patient = {level(i): row["patient"] for i, row in enumerate(rows)}
    parts = [{patient[v] for v in levels_of(getattr(splits, part).images)} for part in ("train", "meta", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(splits.meta) == 6 and len(splits.test) == 6  # one whole patient of 3 images per class each


def test_cache_is_reused_and_rebuilt_after_a_file_changes(tmp_path, monkeypatch):
    write_folder(tmp_path)
    decoded = []
    real_decode = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda path, *args: decoded.append(path) or real_decode(path, *args))

    def load():
        return load_folder(str(tmp_path), image_size=SIZE, cache_dir=str(tmp_path / "cache"), workers=1)

    first = load()
    assert len(decoded) == 28 and [p.name for p in (tmp_path / "cache").iterdir()] == [f"folder_{SIZE}px.pt"]
    decoded.clear()
    again = load()
    assert decoded == [] and torch.equal(again.pool.images, first.pool.images)
    assert again.provenance["data_cache_key"] == first.provenance["data_cache_key"]

    changed = tmp_path / "train" / "dog" / "000.png"
    write_image(changed, 250)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    rebuilt = load()
    assert len(decoded) == 28 and rebuilt.provenance["data_cache_key"] != first.provenance["data_cache_key"]
    assert 250 in levels_of(rebuilt.pool.images) and 250 not in levels_of(first.pool.images)


def damage(root: Path, name: str) -> None:
    """Each bad input the folder loader must name, made from the standard miniature."""
    if name == "unreadable":
        (root / "train" / "dog" / "001.png").write_bytes(b"\x89PNG not really")
    elif name == "truncated":
        path = root / "train" / "dog" / "001.png"
        write_image(path, 100, (64, 64), "RGB")
        path.write_bytes(path.read_bytes()[:60])
    elif name == "unknown extension":
        (root / "train" / "dog" / "notes.txt").write_text("a note")
    elif name == "empty class folder":
        (root / "train" / "fox").mkdir()
    elif name == "stray file":
        write_image(root / "train" / "loose.png", 5)
    elif name == "label not in trusted":
        write_image(root / "train" / "fox" / "0.png", 5)
    elif name == "no train":
        (root / "train").rename(root / "training")


def assert_refused_in_one_line(load, start: str) -> None:
    with pytest.raises(UserError) as error:
        load()
    message = str(error.value)
    assert message.startswith(start) and "\n" not in message, message


FOLDER_CASES = {
    "unreadable": "cannot decode image {root}/train/dog/001.png (",
    "truncated": "cannot decode image {root}/train/dog/001.png (",
    "unknown extension": "{root}/train/dog/notes.txt is not an image file l2rw reads",
    "empty class folder": "{root}/train/fox holds no images; add images of class 'fox' or remove the folder",
    "stray file": "{root}/train/loose.png is not in a class folder; move it into {root}/train/<class>/",
    "label not in trusted": "{root}/train/fox/0.png: label 'fox' (train) is not one of trusted's classes (cat, dog, emu)",
    "no train": "dataset.root={root} has no train/ folder",
}


@pytest.mark.parametrize("name", FOLDER_CASES)
def test_bad_folder_input_is_named_in_one_line(tmp_path, name):
    write_folder(tmp_path)
    damage(tmp_path, name)
    assert_refused_in_one_line(lambda: load_folder(str(tmp_path), image_size=SIZE, workers=1), FOLDER_CASES[name].format(root=tmp_path))
    assert not list(tmp_path.glob("*.pt"))  # no cache of a refused folder


def manifest_case(root: Path, name: str) -> dict:
    """A manifest broken one way; returns the loader arguments that read it."""
    rows = manifest_rows(root, {"a": 3, "b": 3})
    arguments = {"manifest": "labels.csv"}
    if name == "missing column":
        rows = [{"file": row["path"], "label": row["label"]} for row in rows]
    elif name == "duplicate path":
        rows.append(rows[1] | {"path": "imgs/../imgs/a/1.png"})
    elif name == "escaping path":
        rows[2]["path"] = "../outside.png"
        write_image(root.parent / "outside.png", 5)
    elif name == "unknown split":
        rows[0]["split"] = "holdout"
    elif name == "missing file":
        rows[0]["path"] = "imgs/a/404.png"
    elif name == "group across splits":
        rows = [row | {"split": "test" if i == 1 else "train"} for i, row in enumerate(rows)]
        arguments["group_column"] = "patient"
        for row in rows:
            row["patient"] = row["label"]
    elif name == "trusted lacks a label":
        rows = [row | {"split": "trusted" if i < 2 else "train"} for i, row in enumerate(rows)]  # 2 of 3 a's
    write_manifest(root, rows)
    return arguments


MANIFEST_CASES = {
    "missing column": "{root}/labels.csv lacks the column(s) path; the manifest needs the columns path,label",
    "duplicate path": "{root}/labels.csv lists {root}/imgs/a/1.png twice (lines 3 and 8); list each image once",
    "escaping path": "{root}/labels.csv line 4: path ../outside.png leads outside the manifest's folder",
    "unknown split": "{root}/labels.csv line 2: split 'holdout' is not one of train, trusted, val, test",
    "missing file": "{root}/labels.csv line 2: {root}/imgs/a/404.png does not exist",
    "group across splits": "{root}/labels.csv: patient 'a' has images in test and train; a group must stay in one split",
    "trusted lacks a label": "{root}/imgs/b/0.jpg: label 'b' (train) is not one of trusted's classes (a)",
}


@pytest.mark.parametrize("name", MANIFEST_CASES)
def test_bad_manifest_is_named_in_one_line(tmp_path, name):
    root = tmp_path / "data"
    arguments = manifest_case(root, name)
    assert_refused_in_one_line(lambda: load_folder(str(root), image_size=SIZE, workers=1, **arguments),
                               MANIFEST_CASES[name].format(root=root))


def test_skip_unreadable_leaves_damaged_files_out_and_lists_them(tmp_path):
    levels = write_folder(tmp_path)
    damage(tmp_path, "truncated")
    (tmp_path / "trusted" / "emu" / "000.png").write_bytes(b"")

    def load(skip: bool):
        return load_folder(str(tmp_path), image_size=SIZE, workers=1, skip_unreadable=skip)

    for _ in range(2):  # built, then read from the cache
        source = load(skip=True)
        assert source.skipped_files == ["train/dog/001.png", "trusted/emu/000.png"]
        assert source.provenance["skipped_images"] == 2
        assert len(source.pool) == 20 and len(source.meta) == 6 and level(13) not in levels_of(source.pool.images)
        assert levels_of(source.meta.images) == levels["trusted"][:5] + levels["trusted"][6:]
    with pytest.raises(UserError, match=r"cannot decode image .*train/dog/001\.png .*\(2 unreadable files in all\)"):
        load(skip=False)  # the cache that lists them does not make them readable


def test_two_copies_of_one_folder_never_share_a_config_hash_or_cache_key(make_cfg, tmp_path):
    from l2rw.run.identity import config_hash

    for folder in ("one", "two"):
        write_folder(tmp_path / folder)
    sources = [load_folder(str(tmp_path / folder), image_size=SIZE, workers=1) for folder in ("one", "two")]
    assert len({source.provenance["data_cache_key"] for source in sources}) == 2  # written at other times
    assert len({source.provenance["data_source"] for source in sources}) == 2
    assert len({config_hash(folder_cfg(make_cfg, tmp_path / folder)) for folder in ("one", "two")}) == 2


CLI_CASES = [
    ("unreadable", ["dataset.workers=1", "dataset.test_per_class=1"], "cannot decode image "),
    ("empty class folder", [], "holds no images"),
    ("label not in trusted", [], "is not one of trusted's classes"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, extra, fragment", CLI_CASES, ids=[case[0] for case in CLI_CASES])
def test_bad_folder_through_the_cli_is_exit_2_and_writes_nothing(tmp_path, name, extra, fragment):
    root = tmp_path / "data"
    write_folder(root)
    damage(root, name)
    results, run_dir = tmp_path / "results.csv", tmp_path / "run"
    code, stderr = l2rw_train("dataset=folder", f"dataset.root={root}", *extra, *FAST,
                              f"results_csv={results}", f"hydra.run.dir={run_dir}")
    assert code == 2 and stderr.strip().splitlines()[-1].startswith(f"error: {root}/" if name != "unreadable"
                                                                     else "error: cannot decode image ")
    assert fragment in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    assert not results.exists() and not (run_dir / "metrics.csv").exists() and not list(root.glob("*.pt"))


@pytest.mark.slow
def test_the_example_writes_a_folder_and_sweeps_three_methods(tmp_path):
    """examples/own_folder/run.py at a tiny size, on scikit-learn's digits (no download needed)."""
    results = tmp_path / "results.csv"
    env = os.environ | {"PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_folder" / "run.py"), "--digits", "--folder", "imgs",
         "--classes", "3", "--majority", "30", "--minority", "4", "--trusted", "3", "--test", "5",
         "steps=3", "eval_every=3", "batch_size=8", "progress=false", f"results_csv={results}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^l2rw-train --multirun dataset=folder dataset\.root=imgs ", done.stdout, re.MULTILINE)
    rows = pd.read_csv(results)
    assert sorted(rows.method) == ["class_balanced", "l2rw", "sgd"]
    assert set(rows.dataset) == {"folder"} and set(rows.status) == {"ok"} and set(rows.train_size) == {38}
    assert set(rows.meta_size) == {3 * 3}  # the whole trusted/ set, whatever meta.per_class says
    for run_dir in rows.run_dir:
        recall = pd.read_csv(f"{run_dir}/per_class_recall.csv", dtype={"class": str})
        assert list(recall["class"]) == ["0", "1", "2"] and list(recall.support) == [5, 5, 5]  # the folder names


@pytest.mark.slow
def test_skip_unreadable_through_the_cli_lists_and_counts_the_skipped_files(tmp_path):
    root = tmp_path / "data"
    write_folder(root)
    damage(root, "unreadable")
    results, run_dir = tmp_path / "results.csv", tmp_path / "run"
    code, stderr = l2rw_train("dataset=folder", f"dataset.root={root}", "dataset.skip_unreadable=true",
                              "dataset.test_per_class=1", "dataset.workers=1", *FAST,
                              f"results_csv={results}", f"hydra.run.dir={run_dir}")
    assert code == 0, stderr
    row = pd.read_csv(results).iloc[0]
    assert row.dataset == "folder" and row.skipped_images == 1 and row.data_source == str(root.resolve())
    assert len(row.data_cache_key) == 64
    assert (run_dir / "skipped_images.txt").read_text() == "train/dog/001.png\n"


def test_the_cache_benchmark_times_both_loaders_on_the_same_files(monkeypatch, capsys):
    benchmark = load_script("image_cache_benchmark")
    monkeypatch.setattr(sys, "argv", ["image_cache_benchmark.py", "--images", "14", "--size", "8", "--workers", "1"])
    benchmark.main()
    out = capsys.readouterr().out
    assert re.search(r"cache of \d+ JPEGs at 8 px, workers=1", out), out  # each class gets at least one
    assert re.search(r"^\| build \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", out, re.MULTILINE), out
    assert re.search(r"^\| rerun \(cache hit\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", out, re.MULTILINE), out


def test_a_dataset_key_the_source_node_does_not_pass_on_is_refused(make_cfg, tmp_path):
    from l2rw.run.config_schema import check_config

    check_config(folder_cfg(make_cfg, tmp_path))  # every key of conf/dataset/folder.yaml reaches load_folder
    with pytest.raises(UserError, match=re.escape("dataset.workers is not passed to the loader: add `workers: ${..workers}`")):
        check_config(folder_cfg(make_cfg, tmp_path, "~dataset.source.workers"))

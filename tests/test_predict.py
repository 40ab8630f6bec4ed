"""l2rw-predict: runs trained through l2rw-train on a generated folder whose test images it
predicts as the run scored them (the same decoding, standardisation and post-hoc adjustment),
and, on a run dir written by hand, its inputs, its CSV and its refusals."""
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from l2rw.models import build_model
from l2rw.models.saved import FINAL, ModelCard, save_weights, write_card
from l2rw.run import predict
from l2rw.training.trained_prior import SMALLEST_SHARE
from tests.helpers.command_line import l2rw_train

SIZE = 16
CLASSES = ["cat", "dog", "emu"]
# Noise with a faint tint per class: a model trained for a few steps gets some test images wrong,
# so a prediction that decodes or standardises differently from training shows in its confusion
TINTS = {"cat": (90, 0, 0), "dog": (0, 90, 0), "emu": (0, 0, 90)}
LAYOUT = {"train": {"cat": 30, "dog": 12, "emu": 10}, "trusted": {"cat": 2, "dog": 2, "emu": 2},
          "val": {"cat": 6, "dog": 6, "emu": 6}, "test": {"cat": 8, "dog": 8, "emu": 8}}
LENET = {"name": "lenet", "_target_": "l2rw.models.lenet.LeNet", "normed_head": False}


def write_image(path: Path, rng: np.random.Generator, tint=(0, 0, 0)) -> Path:
    """A 24x20 noise image (decoding crops and resizes it to SIZE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 196, (20, 24, 3)) + np.array(tint)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def run_predict(capsys, *args) -> tuple[int, str, str]:
    """`l2rw-predict ARGS` in this process: exit status, stdout, stderr."""
    try:
        predict.main([str(arg) for arg in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_of(csv_text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(csv_text), dtype={"path": str, "predicted": str})


def confusion(truth: pd.Series, predicted: pd.Series, class_names: list[str]) -> list[list[int]]:
    return [[int(((truth == true) & (predicted == guess)).sum()) for guess in class_names] for true in class_names]


def scores(table: pd.DataFrame, class_names: list[str]) -> tuple[list[list[int]], float, float]:
    """Confusion, accuracy and balanced accuracy of predictions of images in <class>/ folders,
    rounded as the run's summary.json rounds them."""
    matrix = confusion(table.path.map(lambda path: Path(path).parent.name), table.predicted, class_names)
    accuracy = sum(matrix[i][i] for i in range(len(class_names))) / len(table)
    balanced = np.mean([matrix[i][i] / sum(matrix[i]) for i in range(len(class_names))])
    return matrix, round(accuracy, 6), round(float(balanced), 6)


def run_confusion(run_dir: Path) -> list[list[int]]:
    return pd.read_csv(run_dir / "confusion.csv", index_col=0).to_numpy().tolist()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    for split, classes in LAYOUT.items():
        for name, count in classes.items():
            for i in range(count):
                write_image(root / split / name / f"{i:03d}.png", rng, TINTS[name])
    return root


def train(image_folder: Path, out: Path, *overrides: str) -> Path:
    """A tiny run on `image_folder` through l2rw-train; its run dir."""
    threads = torch.get_num_threads()
    code, stderr = l2rw_train(
        "dataset=folder", f"dataset.root={image_folder}", f"dataset.image_size={SIZE}", "dataset.workers=1",
        f"dataset.cache_dir={out / 'cache'}", "steps=30", "batch_size=32", "eval_every=10", "progress=false", "threads=1",
        f"results_csv={out / 'results.csv'}", f"hydra.run.dir={out / 'run'}", *overrides,
    )
    torch.set_num_threads(threads)  # the tests after this module's first get the threads they would have had
    assert code == 0, stderr
    return out / "run"


@pytest.fixture(scope="module")
def rgb_run(image_folder, tmp_path_factory) -> Path:
    return train(image_folder, tmp_path_factory.mktemp("rgb"))


@pytest.fixture(scope="module")
def grey_posthoc_run(image_folder, tmp_path_factory) -> Path:
    return train(image_folder, tmp_path_factory.mktemp("grey"), "dataset.channels=grey", "posthoc_tau=1")


@pytest.mark.slow
def test_the_final_and_best_models_predict_the_test_images_as_the_run_scored_them(rgb_run, image_folder, capsys):
    summary = json.loads((rgb_run / "summary.json").read_text())
    code, out, err = run_predict(capsys, rgb_run, image_folder / "test")
    assert code == 0, err
    assert scores(table_of(out), CLASSES) == (run_confusion(rgb_run), summary["accuracy"], summary["balanced_accuracy"])
    assert summary["best_accuracy"] != summary["accuracy"]  # else the final model would pass for the best
    code, out, err = run_predict(capsys, rgb_run, image_folder / "test", "--model", "best")
    assert code == 0, err
    assert scores(table_of(out), CLASSES)[1:] == (summary["best_accuracy"], summary["best_balanced_accuracy"])


@pytest.mark.slow
def test_a_grey_run_with_posthoc_tau_is_reproduced_by_posthoc_tau_run(grey_posthoc_run, image_folder, capsys):
    """Its test images through a manifest, whose paths are relative to its folder."""
    test_images = sorted((image_folder / "test").rglob("*.png"))
    manifest = image_folder / "test_images.csv"
    pd.DataFrame({"label": [path.parent.name for path in test_images],
                  "path": [path.relative_to(image_folder).as_posix() for path in test_images]}).to_csv(manifest, index=False)
    code, out, err = run_predict(capsys, grey_posthoc_run, manifest, "--posthoc-tau", "run")
    assert code == 0, err
    assert scores(table_of(out), CLASSES)[0] == run_confusion(grey_posthoc_run)
    code, out, err = run_predict(capsys, grey_posthoc_run, manifest)  # tau 0: the plain argmax, which the run did not score
    assert code == 0, err
    assert scores(table_of(out), CLASSES)[0] != run_confusion(grey_posthoc_run)


def made_run(folder: Path, channels: int = 3, trained_prior=(0.6, 0.3, 0.1), posthoc_tau: float = 0.0) -> Path:
    """A run dir as a finished run leaves it, its LeNet untrained: no training needed."""
    torch.manual_seed(0)
    shape = [channels, SIZE, SIZE]
    model = build_model(OmegaConf.create(LENET), tuple(shape), len(CLASSES))
    folder.mkdir(parents=True)
    save_weights(model, folder / FINAL)
    write_card(folder, ModelCard(LENET, shape, CLASSES, [0.5] * channels, [0.25] * channels, list(trained_prior), posthoc_tau))
    return folder


def images_in(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(1)
    return [write_image(folder / f"{i}.png", rng) for i in range(count)]


def test_each_image_gets_the_likeliest_class_and_probabilities_that_sum_to_1(tmp_path, capsys):
    run_dir = made_run(tmp_path / "run")
    images = images_in(tmp_path / "images", 4)
    code, out, err = run_predict(capsys, run_dir, *images)
    table = table_of(out)
    assert code == 0 and err == ""
    assert list(table.columns) == ["path", "predicted", "p_cat", "p_dog", "p_emu"]
    assert table.path.tolist() == [str(path) for path in images]
    shares = table[["p_cat", "p_dog", "p_emu"]].to_numpy()
    assert np.allclose(shares.sum(axis=1), 1, atol=1e-5) and (shares > 0).all()
    assert table.predicted.tolist() == [CLASSES[i] for i in shares.argmax(axis=1)]


def test_posthoc_tau_divides_out_the_trained_prior_and_run_takes_the_runs_own(tmp_path, capsys):
    prior = np.array([0.6, 0.3999, 0.0001])  # shares of 1; the last is raised to SMALLEST_SHARE
    run_dir = made_run(tmp_path / "run", trained_prior=prior.tolist(), posthoc_tau=0.5)
    images = images_in(tmp_path / "images", 3)

    def shares(*tau: str) -> np.ndarray:
        code, out, err = run_predict(capsys, run_dir, *images, *tau)
        assert code == 0, err
        return table_of(out)[["p_cat", "p_dog", "p_emu"]].to_numpy()

    plain = shares()
    for tau in (2.0, 0.5):
        expected = plain * np.maximum(prior, SMALLEST_SHARE) ** -tau
        assert np.allclose(shares("--posthoc-tau", str(tau)), expected / expected.sum(axis=1, keepdims=True), rtol=1e-4)
    assert np.array_equal(shares("--posthoc-tau", "run"), shares("--posthoc-tau", "0.5"))
    assert np.array_equal(shares("--posthoc-tau", "0"), plain)


def test_a_folder_gives_every_image_below_it_in_sorted_order_without_hidden_files(tmp_path, capsys, monkeypatch):
    run_dir = made_run(tmp_path / "run")
    rng = np.random.default_rng(2)
    for name in ("photos/b/z.png", "photos/a.png", "photos/a/deep/y.jpg", "photos/.hidden.png", "photos/._a.png",
                 "photos/.thumbnails/x.png", "single.png"):
        write_image(tmp_path / name, rng)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_predict(capsys, run_dir, "photos", "single.png")
    assert code == 0, err
    assert table_of(out).path.tolist() == ["photos/a.png", "photos/a/deep/y.jpg", "photos/b/z.png", "single.png"]


def test_a_manifest_names_images_relative_to_its_folder_or_absolute(tmp_path, capsys, monkeypatch):
    run_dir = made_run(tmp_path / "run")
    rng = np.random.default_rng(3)
    write_image(tmp_path / "data/imgs/1.png", rng)
    write_image(tmp_path / "data/imgs/2.png", rng)
    elsewhere = write_image(tmp_path / "elsewhere/3.png", rng)
    pd.DataFrame({"label": ["cat", "dog", "emu"], "path": ["imgs/2.png", " imgs/1.png", str(elsewhere)],
                  "notes": ["", "x", "y"]}).to_csv(tmp_path / "data/labels.csv", index=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_predict(capsys, run_dir, "data/labels.csv")
    assert code == 0, err
    assert table_of(out).path.tolist() == ["imgs/2.png", "imgs/1.png", str(elsewhere)]  # as the manifest writes them


def test_an_unreadable_image_is_named_with_why_and_left_out_with_exit_1(tmp_path, capsys):
    run_dir = made_run(tmp_path / "run")
    good = images_in(tmp_path / "images", 2)
    (tmp_path / "images/text.png").write_text("not an image")
    (tmp_path / "images/truncated.png").write_bytes(good[0].read_bytes()[:300])
    (tmp_path / "images/folder.png").mkdir()
    pd.DataFrame({"path": ["0.png", "text.png", "truncated.png", "folder.png", "1.png"]}).to_csv(tmp_path / "images/list.csv", index=False)
    code, out, err = run_predict(capsys, run_dir, tmp_path / "images/list.csv")
    assert code == 1
    assert table_of(out).path.tolist() == ["0.png", "1.png"]
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"left out: cannot decode image {tmp_path}/images/text.png (cannot identify image file")
    assert lines[1].startswith(f"left out: cannot decode image {tmp_path}/images/truncated.png (")
    assert lines[2] == f"left out: cannot decode image {tmp_path}/images/folder.png (it is a folder)"
    assert lines[3:] == ["3 of 5 images could not be decoded and are left out of the CSV"]


def test_batches_a_progress_bar_and_an_output_file_change_nothing_in_the_csv(tmp_path, capsys, monkeypatch):
    run_dir = made_run(tmp_path / "run", channels=1)
    images = images_in(tmp_path / "images", 5)
    code, whole, err = run_predict(capsys, run_dir, tmp_path / "images")
    assert code == 0 and err == ""  # few images: no bar
    monkeypatch.setattr(predict, "MANY_IMAGES", 5)
    output = tmp_path / "predictions.csv"
    code, out, err = run_predict(capsys, run_dir, *images, "--batch-size", "2", "--output", output)
    assert code == 0 and out == "" and "predicting: 100%" in err and "5/5" in err
    assert output.read_text() == whole


@pytest.mark.parametrize("args, fragment", [
    (["{run}", "{tmp}/nothing.png"], "{tmp}/nothing.png does not exist; give image files, folders"),
    (["{run}", "{tmp}/empty"], "{tmp}/empty holds no images"),
    (["{tmp}/empty", "{image}"], "{tmp}/empty/model.json does not exist"),
    (["{run}", "{image}", "--model", "best"],
     "{run}/best_model.safetensors does not exist (the run had no validation split, or predates the kept model)"),
    (["{run}", "{image}", "--output", "{tmp}/taken.csv"], "--output {tmp}/taken.csv exists; l2rw-predict never replaces"),
    (["{run}", "{image}", "--output", "{tmp}/new/p.csv"], "the folder {tmp}/new does not exist; create it"),
    (["{run}", "{image}", "--posthoc-tau", "abc"], "--posthoc-tau abc is neither a number >= 0 nor `run`"),
    (["{run}", "{image}", "--posthoc-tau", "-1"], "--posthoc-tau -1 is neither"),
    (["{run}", "{image}", "--batch-size", "0"], "--batch-size 0 is below 1"),
    (["{run}", "{tmp}/no_path.csv"], "{tmp}/no_path.csv lacks the column(s) path"),
    (["{run}", "{tmp}/missing_row.csv"], "{tmp}/missing_row.csv line 3: {tmp}/gone.png does not exist; fix the path"),
    (["{run}", "{tmp}/empty_row.csv"], "{tmp}/empty_row.csv line 2: the path is empty"),
])
def test_a_bad_argument_is_one_line_and_exit_2_and_nothing_is_written(tmp_path, capsys, args, fragment):
    paths = {"run": made_run(tmp_path / "run"), "tmp": tmp_path, "image": images_in(tmp_path, 1)[0]}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty/.DS_Store").write_text("")
    (tmp_path / "taken.csv").write_text("the user's\n")
    pd.DataFrame({"file": ["0.png"]}).to_csv(tmp_path / "no_path.csv", index=False)
    pd.DataFrame({"path": ["0.png", "gone.png"]}).to_csv(tmp_path / "missing_row.csv", index=False)
    pd.DataFrame({"path": [" ", "0.png"], "label": ["cat", "dog"]}).to_csv(tmp_path / "empty_row.csv", index=False)
    before = sorted(os.walk(tmp_path))
    code, out, err = run_predict(capsys, *(arg.format(**paths) for arg in args))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment.format(**paths) in err
    assert sorted(os.walk(tmp_path)) == before and (tmp_path / "taken.csv").read_text() == "the user's\n"

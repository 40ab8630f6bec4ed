"""The real-data presets compose, run on miniature IDX files, and yield to the command line."""
import pandas as pd
import pytest

from l2rw.data import idx
from l2rw.run.train import train
from tests.helpers.command_line import run_cli
from tests.helpers.configs import FAST, compose_preset, swept
from tests.helpers.idx_files import write_mini_idx


@pytest.fixture
def mini_root(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "SYSTEM_FOLDERS", {})  # the miniature, not Debian's copy
    return write_mini_idx(tmp_path / "idx", train_per_class=12)


@pytest.mark.slow
@pytest.mark.parametrize("name, dataset", [("fashion_mnist_imbalance", "fashion_mnist"), ("mnist_4v9", "mnist")])
def test_the_last_combination_trains_two_steps_on_a_miniature(name, dataset, mini_root, tmp_path, optimizer_steps):
    last = [f"{key}={values[-1]}" for key, values in swept(name).items()]
    cfg = compose_preset(name, *FAST, *last, "steps=2", "eval_every=2", f"dataset.root={mini_root}",
                         "dataset.val_per_class=1", "meta.per_class=2", f"results_csv={tmp_path / 'r.csv'}")
    assert cfg.dataset.name == dataset
    row = train(cfg, tmp_path / "run")
    assert row["status"] == "ok" and row["method"] == "l2rw" and row["skipped_steps"] < 2
    assert list(optimizer_steps.values()) == [2 - row["skipped_steps"]]


def test_mnist_4v9_is_ren_et_al_setting():
    cfg = compose_preset("mnist_4v9")
    assert list(cfg.dataset.classes) == [4, 9] and cfg.dataset.majority_class == 9
    assert (cfg.dataset.train_size, cfg.meta.per_class * 2, cfg.batch_size) == (5000, 10, 100)
    assert swept("mnist_4v9")["imbalance"] == ["0.9", "0.95", "0.98", "0.99", "0.995"]


def test_fashion_mnist_preset_sweeps_every_method_bias_and_seed():
    params = swept("fashion_mnist_imbalance")
    assert params["method"] == ["sgd", "weighted_sampler", "class_balanced", "l2rw"]
    assert (params["imbalance"], params["seed"]) == (["0.5", "0.7", "0.9"], ["0", "1", "2"])


@pytest.mark.slow
def test_command_line_values_override_the_presets_sweep(mini_root, tmp_path):
    results = tmp_path / "results.csv"
    done = run_cli(
        "--multirun", "+experiment=fashion_mnist_imbalance", "method=l2rw", "imbalance=0.9", "seed=1",
        "noise.kind=uniform", "noise.rate=0.4", "steps=2", "eval_every=2", "progress=false",
        f"dataset.root={mini_root}", "dataset.val_per_class=1", "meta.per_class=2",
        f"results_csv={results}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = pd.read_csv(results)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.method, row.imbalance, row.seed, row.noise_kind, row.noise_rate) == ("l2rw", 0.9, 1, "uniform", 0.4)

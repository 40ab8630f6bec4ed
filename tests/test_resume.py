"""A run stopped mid-way and resumed ends with every file an uninterrupted run writes, and the same
results row, byte for byte but the timings: with momentum, for each method whose state lives
across steps."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from l2rw.errors import Interrupted
from l2rw.methods import catalog
from l2rw.methods.base import Method
from l2rw.run.train import train
from tests.helpers.command_line import run_cli
from tests.helpers.configs import compose_config

ROOT = Path(__file__).resolve().parents[1]

# What the clock gives (run_id holds the start time), and the process's peak memory, which grows
# with whatever ran before: they differ between any two runs. Row columns, and metrics.csv's `seconds`.
TIMING_FIELDS = ("run_id", "time", "wall_seconds", "seconds_per_step", "warmup_seconds", "peak_memory_mb", "seconds")


def without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING_FIELDS}


def assert_same_files_but_timing(whole_dir, resumed_dir) -> None:
    names = sorted(path.name for path in whole_dir.iterdir())
    assert names == sorted(path.name for path in resumed_dir.iterdir())
    for name in names:
        whole, resumed = whole_dir / name, resumed_dir / name
        if name == "summary.json":
            assert without_timing(json.loads(resumed.read_text())) == without_timing(json.loads(whole.read_text()))
        elif name == "metrics.csv":
            metrics = [pd.read_csv(path).drop(columns="seconds") for path in (whole, resumed)]
            pd.testing.assert_frame_equal(*metrics)
        else:
            assert resumed.read_bytes() == whole.read_bytes(), name


# every method whose own state lives across steps, with options that make it act within 20 steps,
# and ELR's per-example state under a meta method
# (the noisy-label recipes' own methods and losses: through the command line, below)
NEW_RECIPES = ["sce", "elr", "coteaching_ce", "cmwnet_ce"]
STATEFUL = {
    **{name: [f"method={name}"] for name, method in catalog().items() if method.keeps_state() and f"{name}_ce" not in NEW_RECIPES},
    "l2rw": ["method=l2rw", "method.smoothing=0.5"],
    "class_balanced": ["method=class_balanced", "method.defer=0.5"],
    "l2rw elr": ["method=l2rw", "loss=elr"],
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", STATEFUL.values(), ids=STATEFUL.keys())
def test_resume_equals_an_uninterrupted_run(make_cfg, tmp_path, monkeypatch, overrides):
    cfg = make_cfg(
        *overrides, "momentum=0.9", "lr=0.05", "steps=20", "eval_every=5", "checkpoint_every=0",
        "dataset.val_per_class=3", "noise.kind=uniform", "noise.rate=0.3",
    )
    # both runs in one run dir, so the run_dir column and config.yaml match too
    run_dir = tmp_path / "run"
    whole = train(cfg, run_dir)
    run_dir.rename(tmp_path / "whole")

    from l2rw.run import train as train_module

    real_build = train_module.build

    def build_and_watch(node, **runtime):
        obj = real_build(node, **runtime)
        if isinstance(obj, Method):
            original = obj.step_loss
            count = {"n": 0}

            def counting(*args, **kwargs):
                count["n"] += 1
                if count["n"] == 8:
                    os.kill(os.getpid(), signal.SIGINT)
                return original(*args, **kwargs)

            obj.step_loss = counting
        return obj

    monkeypatch.setattr(train_module, "build", build_and_watch)
    with pytest.raises(Interrupted):
        train(cfg, run_dir)
    assert (run_dir / "checkpoint.pt").exists()
    monkeypatch.setattr(train_module, "build", real_build)
    resumed = train(cfg, run_dir)

    assert without_timing(resumed) == without_timing(whole)
    with open(cfg.results_csv, newline="") as results:
        rows = [without_timing(row) for row in csv.DictReader(results)]
    assert len(rows) == 2 and rows[0] == rows[1]
    assert_same_files_but_timing(tmp_path / "whole", run_dir)


# `l2rw-train ARGS`, sending itself SIGTERM from inside step AT (before its update), whatever the method
TERMINATED_AT = """
import os, signal, sys
from l2rw.training import loop
at, take_step = int(sys.argv[1]), loop.take_step
def terminating_take_step(*args, **kwargs):
    if args[-1] == at:
        os.kill(os.getpid(), signal.SIGTERM)
    return take_step(*args, **kwargs)
loop.take_step = terminating_take_step
sys.argv = ["l2rw-train", *sys.argv[2:]]
from l2rw.run.train import cli
cli()
"""


@pytest.mark.slow
@pytest.mark.parametrize("recipe", NEW_RECIPES)
def test_the_noisy_label_recipes_resume_through_the_command_line_to_every_file_of_an_uninterrupted_run(tmp_path, recipe):
    args = [f"+recipe={recipe}", "momentum=0.9", "steps=20", "eval_every=5", "checkpoint_every=0", "progress=false",
            "threads=1", "dataset.val_per_class=3", "noise.kind=uniform", "noise.rate=0.3",
            *(["method.meta_every=3"] if recipe == "cmwnet_ce" else []),
            f"results_csv={tmp_path / 'results.csv'}", f"hydra.run.dir={tmp_path / 'run'}"]
    threads = torch.get_num_threads()
    try:  # the uninterrupted run in this process, in the same run dir, so config.yaml and the run_dir column match
        train(compose_config(*args), tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    (tmp_path / "run").rename(tmp_path / "whole")
    (tmp_path / "results.csv").rename(tmp_path / "whole.csv")
    env = os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(ROOT)}
    stopped = subprocess.run([sys.executable, "-c", TERMINATED_AT, "8", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0 and "resuming from step 8" in resumed.stderr, resumed.stderr
    rows = []
    for table in ("whole.csv", "results.csv"):
        with open(tmp_path / table, newline="") as results:
            rows += [without_timing(row) for row in csv.DictReader(results)]
    assert len(rows) == 2 and rows[0] == rows[1]
    # the command line's record and log, which the run in this process does not write
    shutil.rmtree(tmp_path / "run" / ".hydra")
    (tmp_path / "run" / "train.log").unlink()
    assert_same_files_but_timing(tmp_path / "whole", tmp_path / "run")

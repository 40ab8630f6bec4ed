"""A run stopped mid-way and resumed ends with every file an uninterrupted run writes, and the same
results row, byte for byte but the timings: with momentum, for each method whose state lives
across steps."""
import csv
import json
import os
import signal

import pandas as pd
import pytest

from l2rw.errors import Interrupted
from l2rw.methods import catalog
from l2rw.methods.base import Method
from l2rw.run.train import train

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


@pytest.mark.slow
@pytest.mark.parametrize("method", [name for name, method in catalog().items() if method.keeps_state()])
def test_resume_equals_an_uninterrupted_run(make_cfg, tmp_path, monkeypatch, method):
    cfg = make_cfg(
        f"method={method}", "momentum=0.9", "lr=0.05", "steps=20", "eval_every=5", "checkpoint_every=0",
        "dataset.val_per_class=3", "noise.kind=uniform", "noise.rate=0.3",
        *(["method.smoothing=0.5"] if method == "l2rw" else []), *(["method.defer=0.5"] if method == "class_balanced" else []),
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

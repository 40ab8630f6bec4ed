"""A run stopped mid-way and resumed ends with every file an uninterrupted run writes, byte for
byte but the timings: with momentum, for each method whose state lives across steps."""
import os
import signal

import pandas as pd
import pytest

from l2rw.errors import Interrupted
from l2rw.methods.base import Method
from l2rw.train import train

# every file a finished run writes whose content does not depend on the clock
SAME_FILES = ("example_weights.csv", "confusion.csv", "per_class_recall.csv")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mwnet", "l2rw", "class_balanced"])
def test_resume_equals_an_uninterrupted_run(make_cfg, tmp_path, monkeypatch, method):
    overrides = [f"method={method}", "momentum=0.9", "lr=0.05", "steps=20", "eval_every=5", "checkpoint_every=0",
                 "dataset.val_per_class=3", "noise.kind=uniform", "noise.rate=0.3",
                 *(["method.smoothing=0.5"] if method == "l2rw" else []), *(["method.defer=0.5"] if method == "class_balanced" else [])]
    whole = train(make_cfg(*overrides, f"results_csv={tmp_path / 'whole.csv'}"), tmp_path / "whole")

    cfg = make_cfg(*overrides, f"results_csv={tmp_path / 'resumed.csv'}")
    built = {}
    from l2rw import train as train_module

    real_build = train_module.build

    def build_and_watch(node, **runtime):
        obj = real_build(node, **runtime)
        if isinstance(obj, Method):
            built["method"] = obj
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
        train(cfg, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    monkeypatch.setattr(train_module, "build", real_build)
    resumed = train(cfg, tmp_path / "resumed")

    assert resumed["balanced_accuracy"] == whole["balanced_accuracy"] and resumed["best_step"] == whole["best_step"]
    for name in SAME_FILES:
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    metrics = [pd.read_csv(tmp_path / run / "metrics.csv").drop(columns="seconds") for run in ("whole", "resumed")]
    pd.testing.assert_frame_equal(*metrics)

"""Tests compose the real configs in conf/ through Hydra's compose API."""
import collections
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from l2rw.run import CONFIG_DIR

# Small enough for 2 CPU cores, long enough for the assertions to mean something.
FAST = ["steps=20", "eval_every=10", "progress=false"]
# Configurations setting a key the run does not read (l2rw.run.identity.unread_keys): never checked, never hashed
UNREAD_KEY_OVERRIDES = [
    ["imbalance_ratio=0.5"],  # the step profile reads imbalance
    ["dataset.profile=longtail", "imbalance=abc"],
    ["dataset.profile=natural", "dataset.majority_class=abc"],
    ["noise.flip_to=abc"],  # no noise
    ["noise.kind=uniform", "noise.rate=0.2", "noise.background_class=[1]"],
]


def config_options(group: str) -> list[str]:
    """Every option of a config group, as the files in conf/<group>/ define them."""
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.fixture
def make_cfg(tmp_path):
    """Compose conf/config.yaml with FAST settings, outputs under tmp_path, then `overrides`."""

    def _make(*overrides: str):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            # skip_done=false: tests train one configuration twice on purpose (reproducibility)
            return compose(
                "config", overrides=[*FAST, f"results_csv={tmp_path / 'results.csv'}", "skip_done=false", *overrides]
            )

    return _make


@pytest.fixture
def optimizer_steps(monkeypatch) -> collections.Counter:
    """torch.optim.SGD.step calls, counted per optimizer: a run's model is trained by one SGD
    optimizer (Meta-Weight-Net's weight net by SGD under `variant=imbalance`, by Adam otherwise), so
    a test of a run that "trains" sees its updates as `list(optimizer_steps.values()) == [steps - skipped_steps]`."""
    counts = collections.Counter()
    real_step = torch.optim.SGD.step

    def counted_step(self, *args, **kwargs):
        counts[id(self)] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted_step)
    return counts


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`l2rw-train ARGS` in a subprocess, as a user would type it."""
    # this checkout's l2rw, whichever copy the venv has installed
    env = os.environ | {"HYDRA_FULL_ERROR": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "l2rw.run.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def load_script(name: str):
    """scripts/<name>.py as a module (scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # where dataclasses look their module up
    spec.loader.exec_module(module)
    return module

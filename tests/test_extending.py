"""README's "Extending" promise: a new method or model is one Python file plus one YAML; its
options are checked from its constructor's signature, with no other declaration anywhere."""
import sys

import pytest

from l2rw.errors import UserError
from l2rw.run.config_schema import check_config
from l2rw.run.train import train
from tests.helpers.configs import FAST, compose_config

TOY_METHOD = '''
from l2rw.methods.base import Method


class Toy(Method):
    """Plain SGD whose step weighs the loss by `strength` (normalised away: it trains as sgd)."""

    def __init__(self, strength: float = 0.5):
        self.strength = strength
'''
TOY_MODEL = '''
import torch
from torch import nn


class Toy(nn.Module):
    def __init__(self, image_shape: tuple, num_classes: int, width: int = 8):
        super().__init__()
        self.penultimate = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(image_shape).prod()), width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.penultimate(x))
'''


@pytest.fixture
def toy_configs(tmp_path, monkeypatch):
    """toy_method.py and toy_model.py on the path, conf/method/toy.yaml and conf/model/toy.yaml in
    a config folder Hydra searches besides the package's: the two files each, nothing else."""
    (tmp_path / "toy_method.py").write_text(TOY_METHOD)
    (tmp_path / "toy_model.py").write_text(TOY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    for group, text in (("method", "name: toy\n_target_: toy_method.Toy\nstrength: 0.5\n"),
                        ("model", "name: toy\n_target_: toy_model.Toy\nwidth: 8\n")):
        (tmp_path / "conf" / group).mkdir(parents=True)
        (tmp_path / "conf" / group / "toy.yaml").write_text(text)
    yield tmp_path
    for module in ("toy_method", "toy_model"):
        sys.modules.pop(module, None)


def compose_toy(root, *overrides):
    return compose_config(*FAST, f"hydra.searchpath=[file://{root / 'conf'}]", "method=toy", "model=toy",
                          f"results_csv={root / 'results.csv'}", *overrides)


@pytest.mark.slow
def test_a_toy_method_and_model_train_and_appear_in_the_row(toy_configs, optimizer_steps):
    row = train(compose_toy(toy_configs, "method.strength=2"), toy_configs / "run")
    assert row["skipped_steps"] < row["steps"] and list(optimizer_steps.values()) == [row["steps"] - row["skipped_steps"]]
    assert (row["status"], row["method"], row["model"], row["method.strength"], row["model.width"]) == ("ok", "toy", "toy", 2, 8)


@pytest.mark.parametrize("override, message", [
    ("method.strength=abc", "method.strength='?abc'? must be a finite number"),
    ("+method.strenght=1", r"method.strenght is not an option of method=toy; check its spelling \(options: strength\)"),
    ("model.width=1.5", "model.width=1.5 must be a whole number"),
])
def test_a_toy_option_is_checked_from_its_signature(toy_configs, override, message):
    with pytest.raises(UserError, match=f"^{message}") as raised:
        check_config(compose_toy(toy_configs, override))
    assert len(str(raised.value).splitlines()) == 1

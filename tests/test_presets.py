"""Every `+experiment=` preset composes, every swept value composes, and a run of it trains."""
import pytest
from omegaconf import OmegaConf

from l2rw.run.train import train
from tests.helpers.configs import FAST, compose_preset, config_options, swept


def test_the_documented_presets_exist():
    assert {"noise_and_imbalance", "meta_size"} <= set(config_options("experiment"))


@pytest.mark.parametrize("name", config_options("experiment"))
@pytest.mark.slow
def test_every_swept_value_of_every_preset_composes(name):
    params = swept(name)
    assert params, "a preset should sweep something"
    for key, values in params.items():
        for value in values:
            compose_preset(name, f"{key}={value}")


# presets on other datasets need their files: test_cifar10.py and test_ham10000.py run those on miniature copies.
# Named rather than found by composing every preset, which every test process would pay for while
# collecting; the test below keeps the list whole.
DIGITS_PRESETS = ["meta_size", "noise_and_imbalance"]


@pytest.mark.slow  # the list only chooses what the slow test below trains
def test_the_digits_presets_are_every_preset_on_digits():
    assert DIGITS_PRESETS == [name for name in config_options("experiment") if compose_preset(name).dataset.name == "digits"]


@pytest.mark.slow
@pytest.mark.parametrize("name", DIGITS_PRESETS)
def test_the_last_combination_of_a_digits_preset_trains(name, tmp_path, optimizer_steps):
    params = swept(name)
    last = [f"{key}={values[-1]}" for key, values in params.items()]
    cfg = compose_preset(name, *FAST, *last, f"results_csv={tmp_path / 'results.csv'}")
    row = train(cfg, tmp_path / "run")
    assert row["status"] == "ok" and row["skipped_steps"] < cfg.steps
    assert list(optimizer_steps.values()) == [cfg.steps - row["skipped_steps"]]
    for override in last:
        key, value = override.split("=")
        assert str(cfg.method.name if key == "method" else OmegaConf.select(cfg, key)) == value

"""The baselines presets: every recipe composes to the method and loss it names, and runs two
steps on a miniature of its dataset."""
import pytest

from l2rw.data import idx
from l2rw.run.train import train
from tests.helpers.cifar_files import write_mini_cifar, write_mini_cifar100
from tests.helpers.configs import FAST, compose_preset, config_options, swept
from tests.helpers.idx_files import write_mini_idx

BASELINE_PRESETS = ["fashion_mnist_baselines", "cifar10_lt_baselines", "cifar100_lt_baselines"]
# recipe -> (method, loss, its own settings)
RECIPES = {
    "ldam_drw": ("class_balanced", "ldam", {"method.beta": 0.9999, "method.defer": "first_lr_drop", "model.normed_head": True}),
    "cb_focal": ("class_balanced", "focal", {"method.beta": 0.9999}),
    "l2rw_logit_adjusted": ("l2rw", "logit_adjusted", {}),
    "mwnet_posthoc": ("mwnet", "ce", {}),
}


# Recipes that compose to another recipe's run (same config_hash): a sweep holding both would train it twice
ALIASES = {"balanced_softmax": "logit_adjusted"}
# The noisy-label literature's recipes, compared under label noise (the README's noise columns name
# them), not in the long-tail protocol these presets follow
NOISY_LABEL_RECIPES = {"sce", "elr", "coteaching_ce", "cmwnet_ce"}


@pytest.mark.parametrize("preset", BASELINE_PRESETS)
def test_each_preset_sweeps_every_long_tail_recipe(preset):
    assert sorted(swept(preset)["+recipe"]) == sorted(set(config_options("recipe")) - set(ALIASES) - NOISY_LABEL_RECIPES)


@pytest.mark.parametrize("alias, recipe", ALIASES.items())
def test_an_alias_is_the_run_of_the_recipe_it_names(alias, recipe):
    from l2rw.run.identity import config_hash

    for preset in BASELINE_PRESETS:
        assert config_hash(compose_preset(preset, f"+recipe={alias}")) == config_hash(compose_preset(preset, f"+recipe={recipe}"))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_a_recipe_sets_its_method_loss_and_options(recipe):
    method, loss, settings = RECIPES[recipe]
    cfg = compose_preset("cifar10_lt_baselines", f"+recipe={recipe}")
    assert (cfg.method.name, cfg.loss.name) == (method, loss)
    for key, value in settings.items():
        assert cfg[key.split(".")[0]][key.split(".")[1]] == value
    assert cfg.posthoc_tau == (1.0 if recipe.endswith("posthoc") else 0.0)


@pytest.fixture
def miniature(tmp_path, monkeypatch):
    """dataset -> overrides that point it at a miniature copy (and ResNet-32 at its 8-layer form:
    the recipes are under test, not the depth)."""
    monkeypatch.setattr(idx, "SYSTEM_FOLDERS", {})
    return {
        "fashion_mnist_baselines": [f"dataset.root={write_mini_idx(tmp_path / 'idx', train_per_class=12)}",
                                    "dataset.val_per_class=1", "meta.per_class=2"],
        # epochs=null: two steps, not the protocol's 200 epochs
        "cifar10_lt_baselines": [f"dataset.root={write_mini_cifar(tmp_path / 'c10')}", "epochs=null", "dataset.val_per_class=1",
                                 "meta.per_class=2", "imbalance_ratio=4", "batch_size=8", "model.blocks_per_stage=1"],
        "cifar100_lt_baselines": [f"dataset.root={write_mini_cifar100(tmp_path / 'c100', train_per_class=6)}", "epochs=null",
                                  "dataset.val_per_class=1", "meta.per_class=1", "imbalance_ratio=2", "batch_size=8",
                                  "model.blocks_per_stage=1"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("preset", BASELINE_PRESETS)
def test_every_recipe_of_a_preset_trains_two_steps_on_a_miniature(preset, miniature, tmp_path, optimizer_steps):
    for recipe in swept(preset)["+recipe"]:
        optimizer_steps.clear()
        cfg = compose_preset(preset, *FAST, f"+recipe={recipe}", "steps=2", "eval_every=2", *miniature[preset],
                             "hardware.channels_last=false", f"results_csv={tmp_path / 'r.csv'}")
        row = train(cfg, tmp_path / recipe)
        assert row["status"] == "ok" and row["loss"] == cfg.loss.name and row["best_step"] == 2, recipe
        # every SGD optimizer (the model's; Meta-Weight-Net's imbalance variant's weight net's too) steps once per update
        assert row["skipped_steps"] < 2 and set(optimizer_steps.values()) == {2 - row["skipped_steps"]}, recipe

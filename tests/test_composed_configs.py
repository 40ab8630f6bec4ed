"""tests/helpers/configs.compose_config, which most tests compose through: the config hydra.compose
gives for the same overrides, refusals included, a fresh copy each time."""
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tests.helpers.configs import FAST, compose_config, hydra_compose

OVERRIDES = {
    "defaults": [],
    # values, a list, each prefix (+, ++, ~), an interpolated default and a _target_ elsewhere
    "values": [*FAST, "results_csv=/tmp/somewhere/results.csv", "lr=abc", "dataset.classes=[0,true]", "noise.flip_to=null",
               "+dataset.bogus=1", "++momentum=0.5", "++dataset.other=[1,2]", "meta.per_class=5", "+dataset.tuned.sgd.lr=0.5",
               "dataset.source._target_=tests.helpers.sources.indexed_source"],
    "group choices": ["dataset=folder", "~dataset.source.workers", "dataset.image_size=6", "method=l2rw", "method.update_every=3"],
    "optional group": ["+recipe=ldam_drw", "method.defer=later"],
    "preset": ["+experiment=cifar10_lt", "dataset.root=/nowhere", "seed=3"],
    "list of choices": ["logger=[tensorboard,mlflow]", "logger.mlflow.tracking_uri=sqlite:///x.db"],
}


def resolved(cfg):
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as error:  # noqa: BLE001  an interpolation that fails must fail alike in both
        return type(error)


@pytest.mark.parametrize("overrides", OVERRIDES.values(), ids=OVERRIDES.keys())
def test_the_config_is_the_one_hydra_composes(overrides):
    ours, hydras = compose_config(*overrides), hydra_compose(*overrides)
    assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras)
    assert resolved(ours) == resolved(hydras)
    assert OmegaConf.is_struct(ours) and OmegaConf.is_struct(hydras)


@pytest.mark.parametrize("overrides", [["lrr=1"], ["+lr=1"], ["method=l2rw", "~method.bogus"]])
def test_an_override_compose_refuses_is_refused_alike(overrides):
    with pytest.raises(ConfigCompositionException) as hydras:
        hydra_compose(*overrides)
    with pytest.raises(ConfigCompositionException) as ours:
        compose_config(*overrides)
    assert str(ours.value) == str(hydras.value)


def test_each_call_hands_out_its_own_copy():
    first = compose_config("method=l2rw")
    first.method.meta_batch_size = 7
    first.seed = 99
    again = compose_config("method=l2rw")
    assert again.method.meta_batch_size != 7 and again.seed == 0
    with_hydra = compose_config("+experiment=meta_size", hydra_config=True)
    with_hydra.hydra.sweeper.params.seed = "9"
    assert compose_config("+experiment=meta_size", hydra_config=True).hydra.sweeper.params.seed == "0,1,2"

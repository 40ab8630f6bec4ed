"""Every option of every config group composes and builds its object."""
import pytest
import torch

from l2rw.data import build_splits
from l2rw.methods.base import Method
from l2rw.models import build_model
from l2rw.run.instantiation import build
from tests.helpers.configs import config_options


def test_every_group_has_its_documented_options():
    assert {"digits", "cifar10"} <= set(config_options("dataset"))
    assert {"lenet", "mlp"} <= set(config_options("model"))
    assert {"sgd", "weighted_sampler", "l2rw", "class_balanced"} <= set(config_options("method"))
    assert {"cpu", "cuda"} <= set(config_options("hardware"))


@pytest.mark.parametrize("model", config_options("model"))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_model_builds_for_any_image_shape(make_cfg, model, shape):
    cfg = make_cfg(f"model={model}")
    net = build_model(cfg.model, shape, num_classes=7)
    assert net(torch.zeros(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("method", config_options("method"))
def test_every_method_builds(make_cfg, method):
    cfg = make_cfg(f"method={method}")
    assert isinstance(build(cfg.method), Method)
    assert cfg.method.name == method


def test_default_dataset_builds(make_cfg):
    cfg = make_cfg()
    splits = build_splits(cfg)
    assert splits.num_classes == 10 and splits.image_shape == (1, 8, 8)
    assert splits.train.images.dtype == torch.uint8

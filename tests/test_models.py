"""l2rw.models: every model's head/penultimate interface (impl=last_layer's), the state_dict keys
that earlier checkpoints hold, and ResNet-32's size."""
import pytest
import torch
from torch import nn

from l2rw.models import build_model
from l2rw.models.heads import NormedLinear
from tests.helpers.configs import config_options


@pytest.mark.parametrize("name", config_options("model"))
def test_every_model_is_its_head_applied_to_its_penultimate_features(make_cfg, name):
    torch.manual_seed(0)
    model = build_model(make_cfg(f"model={name}").model, (1, 8, 8), num_classes=10).eval()
    x = torch.randn(4, 1, 8, 8)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 10
    torch.testing.assert_close(model(x), model.head(model.penultimate(x)), atol=0, rtol=0)


def test_lenet_and_mlp_keep_the_state_dict_keys_of_earlier_checkpoints(make_cfg):
    lenet = build_model(make_cfg("model=lenet").model, (1, 8, 8), num_classes=10)
    mlp = build_model(make_cfg("model=mlp").model, (1, 8, 8), num_classes=10)

    def layers(*names: str) -> list[str]:
        return [f"{name}.{tensor}" for name in names for tensor in ("weight", "bias")]

    assert list(lenet.state_dict()) == layers("features.0", "features.3", "classifier.0", "classifier.2", "classifier.4")
    assert list(mlp.state_dict()) == layers("net.1", "net.3", "net.5")


def test_resnet32_has_the_papers_parameter_count(make_cfg):
    net = build_model(make_cfg("model=resnet32").model, (3, 32, 32), num_classes=10)
    assert sum(p.numel() for p in net.parameters()) == 464154  # He et al. 2016: 0.46M


@pytest.mark.parametrize("features", [84, 64])  # LeNet's and ResNet-32's penultimate widths
def test_the_cosine_heads_class_vectors_start_at_unit_norm(features):
    # Cao et al.'s NormedLinear: uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5) on an (in, out) weight
    torch.manual_seed(0)
    head = NormedLinear(features, 10)
    torch.testing.assert_close(head.weight.norm(dim=1), torch.ones(10))
    assert head.weight.abs().max() < 1  # still the uniform draw's directions, scaled down

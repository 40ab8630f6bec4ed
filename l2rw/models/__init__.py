"""Models: one file per architecture, selected by `conf/model/<name>.yaml` (`_target_`).

Every model splits into the features its last layer sees and that layer:
`model.penultimate(x)` returns the features h (batch x d) and `model.head` is the final
`nn.Linear`, with `model(x) == model.head(model.penultimate(x))`. `method.impl=last_layer`
computes its weights from h and the head alone (`l2rw.reweight.weights_last_layer`).
"""
from omegaconf import DictConfig
from torch import nn

from l2rw.instantiation import build


def build_model(model_cfg: DictConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The data decides the model's input shape and class count."""
    return build(model_cfg, image_shape=tuple(image_shape), num_classes=num_classes)

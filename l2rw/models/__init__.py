"""Models: one file per architecture, selected by `conf/model/<name>.yaml` (`_target_`)."""
from omegaconf import DictConfig
from torch import nn

from l2rw.registry import build


def build_model(model_cfg: DictConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The data decides the model's input shape and class count."""
    return build(model_cfg, image_shape=tuple(image_shape), num_classes=num_classes)

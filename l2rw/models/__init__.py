"""Models: one file per architecture, selected by `conf/model/<name>.yaml` (`_target_`).

Every model splits into the features its last layer sees and that layer:
`model.penultimate(x)` returns the features h (batch x d) and `model.head` is the final
`nn.Linear`, with `model(x) == model.head(model.penultimate(x))`. `method.impl=last_layer`
computes its weights from h and the head alone (`l2rw.reweight.weights_last_layer`).
"""
import re

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from l2rw.errors import UserError
from l2rw.run.instantiation import build

# What torch's CPU allocator says when it gets no memory; it raises a plain RuntimeError
CPU_ALLOCATOR_REFUSED = "can't allocate memory"


def build_model(model_cfg: DictConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The data decides the model's input shape and class count."""
    try:
        return build(model_cfg, image_shape=tuple(image_shape), num_classes=num_classes)
    except InstantiationException as error:  # Hydra wraps what the model's constructor raised
        if is_out_of_memory(error.__cause__):
            raise UserError(too_big(model_cfg, image_shape, num_classes, error.__cause__)) from None
        raise


def is_out_of_memory(error: BaseException | None) -> bool:
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or CPU_ALLOCATOR_REFUSED in str(error)


def too_big(model_cfg: DictConfig, image_shape: tuple[int, int, int], num_classes: int, error: BaseException) -> str:
    """One line: which model did not fit, how many bytes it asked for, and the options that size it."""
    request = allocation_request(error)
    sizes = [f"model.{key}={as_override(value)}"
             for key, value in model_cfg.items() if key not in ("name", "_target_") and sizes_the_model(value)]
    fix = f"make {' or '.join(sizes)} smaller" if sizes else "choose a smaller model"
    shape = "x".join(map(str, image_shape))
    return (f"model={model_cfg.name} for {shape} images and {num_classes} classes does not fit in memory{request}; "
            f"{fix}, or the images (dataset.image_size where the dataset has it)")


def allocation_request(error: BaseException) -> str:
    """What an out-of-memory error says was asked for, as a message's clause (": one of its tensors
    asked for 400.0 GB"); empty when it does not say."""
    asked = re.search(r"allocate (\d+) bytes", str(error))
    return f": one of its tensors asked for {int(asked[1]) / 1e9:,.1f} GB" if asked else ""


def sizes_the_model(value) -> bool:
    """A width or depth option: a whole number, or a list of them (true/false switch something else)."""
    values = list(value) if OmegaConf.is_list(value) else [value]
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def as_override(value) -> str:
    """How the command line writes the value: [256,256] for a list."""
    return f"[{','.join(map(str, value))}]" if OmegaConf.is_list(value) else str(value)

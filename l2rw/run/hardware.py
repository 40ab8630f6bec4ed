"""Where a run computes: the device (`hardware.device`), the model's placement on it
(memory layout, compilation), mixed precision, and the memory it used."""
from __future__ import annotations

import resource

import torch
from omegaconf import DictConfig

from l2rw.errors import UserError

AMP_DTYPES = {None: None, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name) if isinstance(name, str) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # the two the code is tested on
        raise UserError(f"hardware.device={name!r} is unknown; use hardware=cpu or hardware=cuda (or hardware.device=cuda:N)")
    if device.type == "cpu" and device.index is not None:
        raise UserError(f"hardware.device={name} names a CPU by number; there is one CPU device: use hardware.device=cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("hardware=cuda was asked for, but this machine has no usable CUDA GPU; use hardware=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"hardware.device={name}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")
    return device


def place_model(model: torch.nn.Module, hardware: DictConfig, device: torch.device) -> torch.nn.Module:
    """The model on `device`, in the hardware config's memory layout, compiled if asked."""
    model = model.to(device)
    if hardware.channels_last:
        # convolution weights in NHWC make every activation after them NHWC too (inputs may stay NCHW)
        model = model.to(memory_format=torch.channels_last)
    if hardware.compile:
        model = torch.compile(model)  # shares the parameters; `reweight` compiles its own functions of the eager module
    return model


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

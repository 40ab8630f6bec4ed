"""The optimizer and lr schedule every method trains with: SGD, and `schedule` over `steps`."""
from __future__ import annotations

import torch
from omegaconf import DictConfig


def make_optimizer(model: torch.nn.Module, cfg: DictConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if schedule == "step":
        milestones = [int(steps * 0.5), int(steps * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

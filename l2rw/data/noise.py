"""Label noise for the training pool (Ren et al., 2018, sec. 4.2): pure functions on label tensors.

Every kind is "with probability `rate`, replace the label by target(label)"; the kinds differ
only in the target. An example counts as corrupted when its label actually changed.
"""
from __future__ import annotations

import torch

from l2rw.errors import UserError

NOISE_KINDS = ("none", "uniform", "flip", "background")


def uniform_targets(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random class other than each example's own (a shift by 1..K-1 never lands on it)."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift) % num_classes


def next_class_mapping(num_classes: int) -> list[int]:
    """The default flip: class c becomes c+1 mod K."""
    return [(c + 1) % num_classes for c in range(num_classes)]


def check_flip_mapping(mapping: list[int], num_classes: int) -> None:
    """A flip must send every class to another valid class, or "corrupted" would mean nothing."""
    if len(mapping) != num_classes or any(not 0 <= t < num_classes for t in mapping):
        raise UserError(
            f"noise.flip_to={mapping} must list one target class for each of the {num_classes} classes "
            "(class indices, in class order); or null for c -> c+1 mod K"
        )
    fixed = [c for c, t in enumerate(mapping) if t == c]
    if fixed:
        raise UserError(f"noise.flip_to maps classes {fixed} to themselves; give each class a different target")


def corrupt_labels(
    labels: torch.Tensor, targets: torch.Tensor, rate: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each label by its `targets` entry with probability `rate`.

    Returns the new labels and a bool mask of the examples whose label changed.
    """
    chosen = torch.rand(labels.shape, generator=generator) < rate
    noisy = torch.where(chosen, targets, labels)
    return noisy, noisy != labels


def apply_label_noise(
    labels: torch.Tensor, num_classes: int, generator: torch.Generator,
    *, kind: str, rate: float, flip_to: list[int] | None, background: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy labels and the corrupted mask; `flip_to` and `background` are class positions.
    kind=none draws no random numbers, so noise-free splits stay exactly as they were. The config
    schema has checked the kind and the rate (`l2rw.run.config_schema`)."""
    if kind == "none":
        return labels, torch.zeros_like(labels, dtype=torch.bool)
    targets = noise_targets(kind, labels, num_classes, generator, flip_to, background)
    return corrupt_labels(labels, targets, rate, generator)


def noise_targets(
    kind: str, labels: torch.Tensor, num_classes: int, generator: torch.Generator,
    flip_to: list[int] | None, background: int,
) -> torch.Tensor:
    """The label each example would get if corrupted."""
    if kind == "uniform":
        return uniform_targets(labels, num_classes, generator)
    if kind == "flip":
        mapping = next_class_mapping(num_classes) if flip_to is None else list(flip_to)
        check_flip_mapping(mapping, num_classes)
        return torch.tensor(mapping, dtype=labels.dtype)[labels]
    return torch.full_like(labels, background)  # "background", the last of NOISE_KINDS

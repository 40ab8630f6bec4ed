"""Train / meta / test splits with a class-imbalance profile applied to the training pool only."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from l2rw.errors import UserError
from l2rw.registry import build


@dataclass
class LabeledImages:
    images: torch.Tensor  # uint8, (N, C, H, W)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> LabeledImages:
        return LabeledImages(self.images[index], self.labels[index])

    def to(self, device) -> LabeledImages:
        return LabeledImages(self.images.to(device), self.labels.to(device))


@dataclass
class Source:
    """What a dataset loader returns: a pool to split, and the official test set if there is one."""

    pool: LabeledImages
    test: LabeledImages | None
    class_names: list[str]


@dataclass
class Splits:
    train: LabeledImages
    meta: LabeledImages
    test: LabeledImages
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def to(self, device) -> Splits:
        return Splits(self.train.to(device), self.meta.to(device), self.test.to(device), self.class_names)


def step_counts(available: list[int], imbalance: float, majority: int) -> list[int]:
    """Per-class counts where class `majority` holds a fraction `imbalance` of the total and
    every other class has the same count: the closest fraction integers allow, then the most images."""
    k = len(available)
    if not 1.0 / k - 1e-9 <= imbalance < 1.0:
        raise UserError(
            f"imbalance={imbalance} is outside [1/K, 1) = [{1.0 / k:.4g}, 1) for K={k} classes "
            "(1/K is balanced; the step profile's majority class holds this fraction of the training set)"
        )
    n_major_max = available[majority]
    n_minor_max = min(n for c, n in enumerate(available) if c != majority)
    ratio = (1.0 - imbalance) / (imbalance * (k - 1))  # minority count / majority count
    ideal_minor = min(n_major_max * ratio, n_minor_max)
    candidates = []
    for n_minor in {math.floor(ideal_minor + 1e-9), math.ceil(ideal_minor - 1e-9)}:
        n_major = min(n_major_max, round(n_minor / ratio))
        if 1 <= n_minor <= n_minor_max and n_major >= 1:
            error = abs(n_major / (n_major + (k - 1) * n_minor) - imbalance)
            candidates.append((round(error, 9), -(n_major + (k - 1) * n_minor), n_major, n_minor))
    if not candidates:
        raise UserError(
            f"imbalance={imbalance} leaves no training image for the minority classes "
            f"(majority class has {n_major_max}); lower `imbalance` or use a larger dataset"
        )
    *_, n_major, n_minor = min(candidates)
    return [n_major if c == majority else n_minor for c in range(k)]


def longtail_counts(available: list[int], imbalance_ratio: float) -> list[int]:
    """Exponential profile n_c = n_max * r^(-c/(K-1)) over class order (Cui et al. 2019)."""
    k = len(available)
    if imbalance_ratio < 1:
        raise UserError(f"imbalance_ratio={imbalance_ratio} must be >= 1 (n_max / n_min; 1 is balanced)")
    decay = [imbalance_ratio ** (-c / (k - 1)) if k > 1 else 1.0 for c in range(k)]
    n_max = min(math.floor(n / d + 1e-9) for n, d in zip(available, decay))
    counts = [math.floor(n_max * d + 1e-9) for d in decay]
    if min(counts) < 1:
        raise UserError(
            f"imbalance_ratio={imbalance_ratio} leaves no training image for the rarest class "
            f"(at most {n_max} images for the largest); lower `imbalance_ratio`"
        )
    return counts


def _select_classes(source: Source, classes) -> Source:
    """Keep only `classes` (original label indices), relabelled 0..K'-1 in the given order."""
    if classes is None:
        return source
    classes = list(classes)
    k = len(source.class_names)
    bad = [c for c in classes if not (isinstance(c, int) and 0 <= c < k)]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise UserError(
            f"dataset.classes={classes} must list at least 2 distinct class indices in [0, {k - 1}] "
            f"({', '.join(f'{i}={n}' for i, n in enumerate(source.class_names))})"
        )
    relabel = torch.full((k,), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(part: LabeledImages | None) -> LabeledImages | None:
        if part is None:
            return None
        new = relabel[part.labels]
        mask = new >= 0
        return LabeledImages(part.images[mask], new[mask])

    return Source(keep(source.pool), keep(source.test), [source.class_names[c] for c in classes])


def build_splits(cfg: DictConfig) -> Splits:
    """Meta and (when the dataset has no official one) test sets are balanced and taken
    first from each class; the imbalance profile then subsamples the rest into the training set."""
    data_cfg = cfg.dataset
    source = _select_classes(build(data_cfg.source), data_cfg.classes)
    k = len(source.class_names)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    meta_per_class = int(cfg.meta.per_class)
    test_per_class = 0 if source.test is not None else int(data_cfg.test_per_class)
    if meta_per_class < 1:
        raise UserError(f"meta.per_class={meta_per_class} must be >= 1")

    by_class = []
    for c in range(k):
        members = torch.nonzero(source.pool.labels == c).flatten()
        needed = meta_per_class + test_per_class + 1
        if len(members) < needed:
            test_part = f" + dataset.test_per_class={test_per_class}" if test_per_class else ""
            raise UserError(
                f"class {c} ({source.class_names[c]}) has {len(members)} images, but meta.per_class="
                f"{meta_per_class}{test_part} + 1 training image need {needed}; lower meta.per_class"
                + (" or dataset.test_per_class" if test_per_class else "")
            )
        by_class.append(members[torch.randperm(len(members), generator=generator)])

    test_index = [m[:test_per_class] for m in by_class]
    meta_index = [m[test_per_class : test_per_class + meta_per_class] for m in by_class]
    rest = [m[test_per_class + meta_per_class :] for m in by_class]

    available = [len(r) for r in rest]
    if data_cfg.profile == "step":
        majority = data_cfg.majority_class
        majority = 0 if majority is None else _position_of(majority, data_cfg.classes, k)
        counts = step_counts(available, float(cfg.imbalance), majority)
    elif data_cfg.profile == "longtail":
        counts = longtail_counts(available, float(cfg.imbalance_ratio))
    else:
        raise UserError(f"dataset.profile={data_cfg.profile!r} is unknown; use 'step' or 'longtail'")
    train_index = torch.cat([r[:n] for r, n in zip(rest, counts)])

    test = source.test if source.test is not None else source.pool.subset(torch.cat(test_index))
    return Splits(
        train=source.pool.subset(train_index),
        meta=source.pool.subset(torch.cat(meta_index)),
        test=test,
        class_names=source.class_names,
    )


def _position_of(majority: int, classes, k: int) -> int:
    """`dataset.majority_class` is an original class index; return its position after selection."""
    chosen = list(range(k)) if classes is None else list(classes)
    if majority not in chosen:
        raise UserError(f"dataset.majority_class={majority} is not one of the selected classes {chosen}")
    return chosen.index(majority)

"""Train / meta / test splits with a class-imbalance profile applied to the training pool only."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from l2rw.data.noise import apply_label_noise
from l2rw.errors import UserError
from l2rw.run.instantiation import build


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
    """What a dataset loader returns: a pool to split, and the official test set if there is one.

    `groups` (optional, int64, one id per pool image) keeps related images in one split: several
    photos of one skin lesion must not land in both training and test. `unit` names a group in
    messages. Without groups every image is its own group. `meta` and `val`, when the dataset
    brings them (a folder's trusted/ and val/), are used whole instead of being carved from the
    pool, and are never trained on (but with meta.add_to_train). `provenance` says what was read
    (`l2rw.results.row.PROVENANCE_COLUMNS`: the folder, the cache key, the count of images left out);
    `skipped_files` lists the images left out because they could not be read. `pool_paths` and
    `meta_paths` (optional, one per image of the pool and of the brought meta set, which
    meta.add_to_train trains on) name the file each image was decoded from, as `skipped_files` names them.
    """

    pool: LabeledImages
    test: LabeledImages | None
    class_names: list[str]
    groups: torch.Tensor | None = None
    unit: str = "image"
    meta: LabeledImages | None = None
    val: LabeledImages | None = None
    provenance: dict[str, str | int] = field(default_factory=dict)
    skipped_files: list[str] = field(default_factory=list)
    pool_paths: list[str] | None = None
    meta_paths: list[str] | None = None


@dataclass
class Splits:
    train: LabeledImages
    meta: LabeledImages
    test: LabeledImages
    class_names: list[str]
    train_corrupted: torch.Tensor  # bool, (len(train),): the label noise changed this training label
    val: LabeledImages | None = None  # balanced, clean, disjoint from the rest: for choosing hyper-parameters
    provenance: dict[str, str | int] = field(default_factory=dict)  # the Source's
    skipped_files: list[str] = field(default_factory=list)          # the Source's
    train_paths: list[str] | None = None  # the file of each training image, when the dataset has files

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def to(self, device) -> Splits:
        return replace(
            self, train=self.train.to(device), meta=self.meta.to(device), test=self.test.to(device),
            train_corrupted=self.train_corrupted.to(device), val=None if self.val is None else self.val.to(device),
        )


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
    classes = _class_selection(classes, source.class_names)
    relabel = torch.full((len(source.class_names),), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(part: LabeledImages | None) -> LabeledImages | None:
        if part is None:
            return None
        new = relabel[part.labels]
        mask = new >= 0
        return LabeledImages(part.images[mask], new[mask])

    def keep_paths(paths: list[str] | None, part: LabeledImages | None) -> list[str] | None:
        return None if paths is None else _paths_at(paths, torch.nonzero(relabel[part.labels] >= 0).flatten())

    groups = None if source.groups is None else source.groups[relabel[source.pool.labels] >= 0]
    return replace(
        source, pool=keep(source.pool), test=keep(source.test), meta=keep(source.meta), val=keep(source.val),
        class_names=[source.class_names[c] for c in classes], groups=groups,
        pool_paths=keep_paths(source.pool_paths, source.pool), meta_paths=keep_paths(source.meta_paths, source.meta),
    )


def _paths_at(paths: list[str] | None, index: torch.Tensor) -> list[str] | None:
    """paths[index], as `LabeledImages.subset` takes images; None without paths."""
    return None if paths is None else [paths[i] for i in index.tolist()]


def _class_selection(classes, class_names: list[str]) -> list[int]:
    """`dataset.classes` as a list of original class indices, refused unless it names 2 or more distinct classes."""
    k = len(class_names)
    bad = [c for c in classes if not 0 <= c < k]  # the config schema has checked they are class indices
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        raise UserError(
            f"dataset.classes={list(classes)} must list at least 2 distinct class indices in [0, {k - 1}], "
            f"e.g. dataset.classes=[0,1] ({', '.join(f'{i}={n}' for i, n in enumerate(class_names))})"
        )
    return list(classes)


def _keep_groups_together(order: torch.Tensor, groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder shuffled pool indices so that each group's images are adjacent, the groups in the
    order of their first image; also return the group sizes in that order. Without groups the
    order is unchanged and every size is 1."""
    if groups is None:
        return order, torch.ones(len(order), dtype=torch.long)
    _, group_of = torch.unique(groups[order], return_inverse=True)
    first_seen = torch.full((len(order),), len(order)).scatter_reduce(0, group_of, torch.arange(len(order)), "amin")
    rank, by_rank = torch.sort(first_seen[group_of], stable=True)
    return order[by_rank], torch.unique_consecutive(rank, return_counts=True)[1]


def _test_field(data_cfg: DictConfig) -> str:
    """A dataset sets its test size as a count per class or as a fraction of each class."""
    return "test_fraction" if "test_fraction" in data_cfg else "test_per_class"


def _test_groups(data_cfg: DictConfig, groups_in_class: int) -> int:
    """Test groups of one class: `dataset.test_per_class`, or a stratified `dataset.test_fraction`
    (at least one group, so that every class counts in the balanced accuracy)."""
    if _test_field(data_cfg) == "test_per_class":
        return data_cfg.test_per_class
    return max(1, round(data_cfg.test_fraction * groups_in_class))


def _too_few_groups(class_name: str, unit: str, available: int, meta: int, val: int, test: int, data_cfg: DictConfig) -> UserError:
    def count(n: int) -> str:
        return f"{n} {unit}" + ("" if n == 1 else "s")

    needs = [(f"meta.per_class={meta}", "meta.per_class")] if meta else []  # none when the dataset brings its meta set
    if val:
        needs.append((f"dataset.val_per_class={val}", "dataset.val_per_class"))
    if test:
        field = _test_field(data_cfg)
        needs.append((f"dataset.{field}={data_cfg[field]}" + (f" ({count(test)})" if field == "test_fraction" else ""),
                      f"dataset.{field}"))
    need = " + ".join(amount for amount, _ in needs)
    fix = f"lower {' or '.join(key for _, key in needs)}" if needs else "add images of this class"
    return UserError(
        f"class {class_name!r} has {count(available)}, but {need + ' + ' if need else ''}1 training "
        f"{unit} need {meta + val + test + 1}; {fix}"
    )


@dataclass(frozen=True)
class PoolCounts:
    """What the size of the training set depends on, without the images: the pool's images per
    class (before `dataset.classes` selects), the class names and unit, and which sets the dataset
    brings instead of having them carved from the pool (`Source.test`, `Source.meta`, `Source.val`)."""

    class_sizes: list[int]
    class_names: list[str]
    official_test: bool
    brought_meta: list[int] | None = None  # images per class of the meta set the dataset brings
    brings_val: bool = False
    unit: str = "image"

    @classmethod
    def of(cls, source: Source) -> PoolCounts:
        def per_class(part: LabeledImages) -> list[int]:
            return torch.bincount(part.labels.cpu(), minlength=len(source.class_names)).tolist()

        return cls(
            per_class(source.pool), source.class_names, official_test=source.test is not None,
            brought_meta=None if source.meta is None else per_class(source.meta), brings_val=source.val is not None,
            unit=source.unit,
        )

    def selected(self, classes) -> PoolCounts:
        """The counts of `dataset.classes` only, in its order (as `_select_classes` keeps them)."""
        if classes is None:
            return self
        classes = _class_selection(classes, self.class_names)

        def pick(per_class: list) -> list:
            return [per_class[c] for c in classes]

        brought_meta = None if self.brought_meta is None else pick(self.brought_meta)
        return replace(self, class_sizes=pick(self.class_sizes), class_names=pick(self.class_names), brought_meta=brought_meta)

    def held_out(self, cfg: DictConfig, c: int, groups_in_class: int) -> tuple[int, int, int]:
        """The test, meta and validation groups taken from class `c`'s `groups_in_class` before the
        imbalance profile; a class left without a training group is refused."""
        data_cfg = cfg.dataset
        test = 0 if self.official_test else _test_groups(data_cfg, groups_in_class)
        meta = 0 if self.brought_meta is not None else cfg.meta.per_class
        val = 0 if self.brings_val else data_cfg.val_per_class
        if groups_in_class < test + meta + val + 1:
            raise _too_few_groups(self.class_names[c], self.unit, groups_in_class, meta, val, test, data_cfg)
        return test, meta, val


def training_counts(cfg: DictConfig, available: list[int]) -> list[int]:
    """The training images kept of each class's `available` ones (what the hold-outs left): the
    imbalance profile, then the `dataset.train_size` cap."""
    return capped_counts(PROFILES[cfg.dataset.profile](cfg, available), cfg.dataset.train_size)


def planned_train_counts(cfg: DictConfig, pool: PoolCounts) -> list[int]:
    """The training images per class that `build_splits(cfg)` draws from a pool of these counts
    (label noise then moves some to other labels), worked out without the images: the same
    hold-outs, profile, cap and `meta.add_to_train`. Exact when every image is its own group; a
    dataset with `Source.groups` holds out whole groups, whose image counts depend on the shuffle."""
    pool = pool.selected(cfg.dataset.classes)
    available = [n - sum(pool.held_out(cfg, c, n)) for c, n in enumerate(pool.class_sizes)]
    counts = training_counts(cfg, available)
    if cfg.meta.add_to_train:
        meta = [cfg.meta.per_class] * len(counts) if pool.brought_meta is None else pool.brought_meta
        counts = [n + m for n, m in zip(counts, meta)]
    return counts


def build_splits(cfg: DictConfig) -> Splits:
    """Meta, validation (`dataset.val_per_class`, 0 = none) and, when the dataset has no official
    one, test sets are balanced and taken first from each class, whole groups at a time (see
    `Source.groups`); the imbalance profile then subsamples the rest into the training set,
    `dataset.train_size` caps it, and label noise, last, corrupts training labels only. A meta or
    validation set the dataset brings (`Source.meta`, `Source.val`) is used whole instead. With
    `meta.add_to_train` the (clean) meta images also join the training set: the control that gives
    the baselines the data L2RW sees. `planned_train_counts` works out the training set's size
    with the same arithmetic, without the images."""
    data_cfg = cfg.dataset
    _check_counts_before_loading(cfg)
    source = _select_classes(build(data_cfg.source), data_cfg.classes)
    _check_every_class_in_brought_sets(source)
    pool = PoolCounts.of(source)
    k = len(source.class_names)
    generator = torch.Generator().manual_seed(int(cfg.seed))

    test_index, meta_index, val_index, rest = [], [], [], []
    for c in range(k):
        members = torch.nonzero(source.pool.labels == c).flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        members, group_sizes = _keep_groups_together(shuffled, source.groups)
        test_per_class, meta_per_class, val_per_class = pool.held_out(cfg, c, len(group_sizes))
        # image offsets where the test, meta, validation and training groups end
        ends = torch.cat([torch.zeros(1, dtype=torch.long), group_sizes.cumsum(0)])
        test_end = int(ends[test_per_class])
        meta_end = int(ends[test_per_class + meta_per_class])
        val_end = int(ends[test_per_class + meta_per_class + val_per_class])
        test_index.append(members[:test_end])
        meta_index.append(members[test_end:meta_end])
        val_index.append(members[meta_end:val_end])
        rest.append(members[val_end:])

    counts = training_counts(cfg, [len(r) for r in rest])
    train_index = torch.cat([r[:n] for r, n in zip(rest, counts)])

    train, train_paths = source.pool.subset(train_index), _paths_at(source.pool_paths, train_index)
    noisy_labels, corrupted = _label_noise(cfg, train.labels, k, generator)
    train = LabeledImages(train.images, noisy_labels)
    if source.meta is not None:
        meta, meta_paths = source.meta, source.meta_paths
    else:
        carved_meta = torch.cat(meta_index)
        meta, meta_paths = source.pool.subset(carved_meta), _paths_at(source.pool_paths, carved_meta)
    if cfg.meta.add_to_train:
        train = LabeledImages(torch.cat([train.images, meta.images]), torch.cat([train.labels, meta.labels]))
        corrupted = torch.cat([corrupted, torch.zeros(len(meta), dtype=torch.bool)])
        # a row without its file's name would shift every name after it, so then no image has one
        train_paths = None if train_paths is None or meta_paths is None else train_paths + meta_paths

    test = source.test if source.test is not None else source.pool.subset(torch.cat(test_index))
    val = source.val if source.val is not None else source.pool.subset(torch.cat(val_index)) if data_cfg.val_per_class else None
    return Splits(
        train=train,
        meta=meta,
        test=test,
        class_names=source.class_names,
        train_corrupted=corrupted,
        val=val,
        provenance=source.provenance,
        skipped_files=source.skipped_files,
        train_paths=train_paths,
    )


def _check_counts_before_loading(cfg: DictConfig) -> None:
    """Refuse the hold-outs and profile `cfg` asks of the pool before the images are loaded, when the
    loader can count them without decoding (a `pool_counts` beside it, as dataset=folder has): a
    refusal then comes before an image cache is built. Images that turn out unreadable are counted
    too, so what passes here may still be refused by `build_splits`, never the other way round."""
    options = OmegaConf.to_container(cfg.dataset.source, resolve=True)
    counts = getattr(get_object(options.pop("_target_")), "pool_counts", None)
    if counts is not None:
        planned_train_counts(cfg, counts(**options))


def _check_every_class_in_brought_sets(source: Source) -> None:
    """A meta, validation or test set the dataset brings must hold every class: without one, the
    meta set never shows it, or the balanced accuracy averages over fewer classes. Files left out
    as unreadable (`dataset.skip_unreadable`) can leave a class without any."""
    for name, part in (("trusted (meta)", source.meta), ("validation", source.val), ("test", source.test)):
        if part is None:
            continue
        sizes = torch.bincount(part.labels.cpu(), minlength=len(source.class_names))
        if (sizes == 0).any():
            missing = source.class_names[int(torch.nonzero(sizes == 0)[0])]
            cause = " left once the unreadable files were skipped" if source.skipped_files else ""
            raise UserError(f"class {missing!r} has no {name} images{cause}; every class needs at least one there: "
                            f"add readable {name} images of {missing!r}, or leave the class out")


def _step_profile(cfg: DictConfig, available: list[int]) -> list[int]:
    majority = cfg.dataset.majority_class
    majority = 0 if majority is None else _position_of(majority, cfg.dataset.classes, len(available), "dataset.majority_class")
    return step_counts(available, float(cfg.imbalance), majority)


def _longtail_profile(cfg: DictConfig, available: list[int]) -> list[int]:
    return longtail_counts(available, float(cfg.imbalance_ratio))


def _natural_profile(cfg: DictConfig, available: list[int]) -> list[int]:
    return available  # a dataset that is imbalanced as collected keeps all of it


# `dataset.profile`: the training images kept per class, from those available after meta, val and test
PROFILES = {"step": _step_profile, "longtail": _longtail_profile, "natural": _natural_profile}


def capped_counts(counts: list[int], train_size) -> list[int]:
    """`counts` scaled down to about `train_size` images in all (null: unchanged), keeping the
    profile's proportions and at least one image per class."""
    if train_size is None:
        return counts
    if train_size < len(counts):
        raise UserError(
            f"dataset.train_size={train_size} must be at least {len(counts)} (one image per class), "
            "or null for all the imbalance profile allows"
        )
    total = sum(counts)
    if train_size >= total:
        return counts
    return [max(1, round(n * train_size / total)) for n in counts]


def _label_noise(cfg: DictConfig, labels: torch.Tensor, k: int, generator: torch.Generator):
    """`noise.*` names classes by original index, like `dataset.majority_class`."""
    noise, classes = cfg.noise, cfg.dataset.classes
    flip_to = noise.flip_to if noise.kind == "flip" else None  # each kind reads its own key only
    flip_to = None if flip_to is None else [_position_of(c, classes, k, "noise.flip_to") for c in flip_to]
    background = noise.background_class if noise.kind == "background" else None
    background = 0 if background is None else _position_of(background, classes, k, "noise.background_class")
    return apply_label_noise(
        labels, k, generator, kind=noise.kind, rate=float(noise.rate), flip_to=flip_to, background=background
    )


def _position_of(class_index: int, classes, k: int, field: str) -> int:
    """`field` holds an original class index; return its position after `dataset.classes` selection."""
    chosen = list(range(k)) if classes is None else list(classes)
    if class_index not in chosen:  # the config schema has checked it is a class index, not a flag
        raise UserError(f"{field}={class_index} is not one of the selected classes {chosen}")
    return chosen.index(class_index)

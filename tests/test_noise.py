"""Label noise: realised rates, the intended target classes, clean meta/test sets, config errors."""
import pytest
import torch

from l2rw.data import build_splits
from l2rw.data.noise import apply_label_noise
from l2rw.errors import UserError
from l2rw.run.config_schema import check_config
from tests.helpers.sources import INDEXED, image_ids

K = 5
LABELS = torch.arange(20_000) % K


def noisy(kind: str, rate: float, flip_to=None, background: int = 0, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return apply_label_noise(
        LABELS, K, generator, kind=kind, rate=rate, flip_to=flip_to, background=background
    )


@pytest.mark.parametrize("kind", ["uniform", "flip"])
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_realised_rate_matches_the_rate(kind, rate):
    labels, corrupted = noisy(kind, rate)
    tolerance = 4 * (rate * (1 - rate) / len(LABELS)) ** 0.5  # 4 binomial standard deviations
    assert corrupted.float().mean().item() == pytest.approx(rate, abs=tolerance)
    assert torch.equal(corrupted, labels != LABELS)


def test_uniform_noise_picks_every_other_class_equally_and_never_the_own_one():
    labels, corrupted = noisy("uniform", 0.5)
    assert (labels[corrupted] != LABELS[corrupted]).all()
    moved_from_0 = labels[corrupted & (LABELS == 0)]
    share = torch.bincount(moved_from_0, minlength=K).double() / len(moved_from_0)
    assert share[0] == 0
    assert torch.allclose(share[1:], torch.full((K - 1,), 1 / (K - 1), dtype=torch.double), atol=0.03)


def test_flip_maps_to_the_next_class_or_the_given_mapping():
    labels, corrupted = noisy("flip", 0.3)
    assert torch.equal(labels[corrupted], (LABELS[corrupted] + 1) % K)
    mapping = [3, 0, 4, 1, 2]
    labels, corrupted = noisy("flip", 0.3, flip_to=mapping)
    assert torch.equal(labels[corrupted], torch.tensor(mapping)[LABELS[corrupted]])
    assert corrupted.any()


def test_background_noise_moves_labels_to_the_background_class_only():
    labels, corrupted = noisy("background", 0.4, background=2)
    assert (labels[corrupted] == 2).all()
    assert not corrupted[LABELS == 2].any()  # already the background class: nothing to corrupt
    others = LABELS != 2
    assert corrupted[others].float().mean().item() == pytest.approx(0.4, abs=0.02)


def test_noise_none_changes_nothing_and_rate_one_changes_everything():
    labels, corrupted = noisy("none", 0.0)
    assert torch.equal(labels, LABELS) and not corrupted.any()
    labels, corrupted = noisy("uniform", 1.0)
    assert corrupted.all()


@pytest.mark.parametrize("kind", ["uniform", "flip", "background"])
def test_noise_touches_training_labels_only(make_cfg, kind):
    clean = build_splits(make_cfg(*INDEXED, "imbalance=0.5"))
    dirty = build_splits(make_cfg(*INDEXED, "imbalance=0.5", f"noise.kind={kind}", "noise.rate=0.5"))
    for part in ("meta", "test"):
        assert torch.equal(getattr(clean, part).images, getattr(dirty, part).images)
        assert torch.equal(getattr(clean, part).labels, getattr(dirty, part).labels)
    # the same training images (the profile counted true classes), some with other labels
    assert torch.equal(clean.train.images, dirty.train.images)
    assert torch.equal(dirty.train_corrupted, clean.train.labels != dirty.train.labels)
    assert dirty.train_corrupted.any() and not clean.train_corrupted.any()


def test_noise_classes_are_original_indices_like_majority_class(make_cfg):
    splits = build_splits(make_cfg(
        *INDEXED, "dataset.classes=[3,1]", "noise.kind=background", "noise.background_class=1", "noise.rate=0.9",
    ))
    assert splits.class_names == ["class3", "class1"]
    assert (splits.train.labels[splits.train_corrupted] == 1).all()  # position of class 1
    assert image_ids(splits.meta.images).isdisjoint(image_ids(splits.train.images))


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["noise.kind=salt"], "noise.kind"),
        (["noise.rate=0.2"], "noise.rate"),  # kind=none with a rate: probably a forgotten kind
        (["noise.kind=uniform", "noise.rate=1.5"], "noise.rate"),
        (["noise.kind=flip", "noise.rate=0.2", "noise.flip_to=[1,0]"], "noise.flip_to"),
        (["noise.kind=flip", "noise.rate=0.2", "noise.flip_to=[0,2,3,1]"], "noise.flip_to"),
        (["noise.kind=flip", "noise.rate=0.2", "noise.flip_to=[1,2,3,7]"], "noise.flip_to"),
        (["noise.kind=background", "noise.rate=0.2", "noise.background_class=9"], "noise.background_class"),
    ],
)
def test_impossible_noise_requests_name_the_field(make_cfg, overrides, field):
    """As a run meets them: the config schema refuses what the config alone rules out, the splits
    what needs the data."""
    cfg = make_cfg(*INDEXED, *overrides)
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        check_config(cfg)
        build_splits(cfg)

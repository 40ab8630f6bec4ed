"""scripts/weight_agreement.py: its two agreement measures on hand-made cases, and a short run."""
import pytest
import torch

from tests.conftest import load_script


@pytest.fixture(scope="module")
def agreement():
    return load_script("weight_agreement")


def test_spearman_is_one_for_the_same_order_and_minus_one_reversed(agreement):
    a = torch.tensor([0.0, 0.1, 0.3, 0.6])
    assert agreement.spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert agreement.spearman(a, -a) == pytest.approx(-1.0)
    # ties share their mean rank: [0, 0, 1] ranks as [0.5, 0.5, 2]
    assert agreement.spearman(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.1, 1.0])) == pytest.approx(0.8660254)


def test_zero_overlap_is_the_jaccard_index_of_the_zero_sets(agreement):
    assert agreement.zero_overlap(torch.tensor([0.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])) == pytest.approx(2 / 3)
    assert agreement.zero_overlap(torch.ones(3), torch.ones(3)) == 1.0


def test_a_short_digits_run_gives_both_kinds_in_range(agreement):
    scores = agreement.measure(["dataset=digits", "imbalance=0.5"], steps=6, skip=1, update_every=2)
    assert set(scores) == {"last_layer", "update_every=2"}
    for rank, overlap in scores.values():
        assert -1.0 <= rank <= 1.0 and 0.0 <= overlap <= 1.0

"""scripts/weight_agreement.py: its two agreement measures on hand-made cases, and a probe that
measures without changing how exact L2RW trains."""
import pytest
import torch

from l2rw.data import build_splits
from l2rw.methods.l2rw import L2RW
from l2rw.run.bench import Run, compose_config
from l2rw.training.optimization import make_scheduler
from tests.helpers.scripts import load_script


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


def trained_parameters(method, overrides: list[str], steps: int, tmp_path) -> list[torch.Tensor]:
    cfg = compose_config(overrides)
    run = Run.build(cfg, build_splits(cfg))
    run.fit(method, steps, make_scheduler(run.optimizer, cfg.schedule, steps), tmp_path / "metrics.csv")
    return [p.detach() for p in run.model.parameters()]


def test_the_probe_scores_every_step_after_skip_and_trains_as_exact_l2rw(agreement, tmp_path):
    overrides = ["dataset=digits", "imbalance=0.5", *agreement.EXACT, "method.meta_batch_size=10"]
    probe = agreement.AgreementProbe(meta_batch_size=10, update_every=2, skip=2)
    probed = trained_parameters(probe, overrides, 6, tmp_path)
    assert {kind: len(scores) for kind, scores in probe.scores.items()} == {"last_layer": 4, "update_every=2": 4}
    # the meta set (3 per class) is larger than the meta batch: exact and cheap weights share the step's sample
    plain = trained_parameters(L2RW(meta_batch_size=10), overrides, 6, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(probed, plain))

"""The model a run keeps (l2rw/models/saved.py): rebuilt only as one of l2rw's models, never from
what a card names otherwise; the best model's file belongs to the run beside it, with the class
prior of its own evaluation."""
import json

import pytest
import torch

from l2rw.errors import UserError
from l2rw.models.saved import BEST, CARD, FINAL, load_trained
from tests.helpers.command_line import l2rw_train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    code, stderr = l2rw_train("dataset.val_per_class=5", "steps=40", "eval_every=10", "progress=false", "posthoc_tau=1",
                              f"hydra.run.dir={folder}/run", f"results_csv={folder}/results.csv")
    assert code == 0, stderr
    return folder / "run"


def copy_of(run_dir, folder, names=(CARD, FINAL, BEST)):
    """`folder` (made if needed) holding copies of the run dir's files `names`."""
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes((run_dir / name).read_bytes())
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("model, says", [
    ({"_target_": "builtins.dict", "x": 1}, "its model is not one of conf/model/'s"),
    ({"_target_": "l2rw.models.lenet.LeNet", "normed_head": {"_target_": "pathlib.Path.touch", "_args_": ["/tmp/x"]}},
     "its model's options are not plain values"),
])
def test_a_card_naming_other_code_is_refused_before_anything_is_built(run_dir, tmp_path, model, says):
    card = json.loads((run_dir / CARD).read_text())
    copy = copy_of(run_dir, tmp_path)
    (copy / CARD).write_text(json.dumps(card | {"model": model}))
    with pytest.raises(UserError, match=says):
        load_trained(copy)


@pytest.mark.slow
def test_the_best_model_carries_the_prior_of_its_own_evaluation(run_dir):
    _, final = load_trained(run_dir)
    _, best = load_trained(run_dir, "best")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert final.trained_prior == pytest.approx([float(p) for p in summary["trained_prior"].split()], abs=1e-3)
    if summary["best_step"] != summary["steps"]:
        assert best.trained_prior != final.trained_prior


@pytest.mark.slow
def test_a_fresh_run_in_a_dir_forgets_the_earlier_runs_model(run_dir, tmp_path):
    folder = copy_of(run_dir, tmp_path / "run", ("config.yaml", CARD, FINAL, BEST))
    code, stderr = l2rw_train("steps=10", "eval_every=10", "progress=false", "seed=1", f"hydra.run.dir={folder}",
                              f"results_csv={tmp_path}/results.csv")
    assert code == 0, stderr
    assert not (folder / BEST).exists() and (folder / FINAL).exists()
    state = load_trained(folder)[0].state_dict()
    assert not all(torch.equal(state[k], v) for k, v in load_trained(run_dir)[0].state_dict().items())


@pytest.mark.slow
def test_a_fresh_run_that_ends_without_a_model_leaves_none_of_the_earlier_runs(run_dir, tmp_path):
    folder = copy_of(run_dir, tmp_path / "run", ("config.yaml", CARD, FINAL, BEST))
    code, _ = l2rw_train("steps=10", "lr=1e30", "progress=false", f"hydra.run.dir={folder}", f"results_csv={tmp_path}/results.csv")
    assert code == 1  # diverged
    assert not any((folder / name).exists() for name in (CARD, FINAL, BEST))

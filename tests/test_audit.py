"""l2rw-audit: its score rule and its measures on hand-made cases whose answers are known, the
fold trainings cleanlab compares on, and the command end to end on a noisy L2RW run made through
l2rw-train, refusals included."""
import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from l2rw.data import LabeledImages, Splits, build_splits
from l2rw.methods.base import Method
from l2rw.models.saved import load_trained
from l2rw.results import audit
from tests.helpers.command_line import l2rw_train

# A run that learns within seconds (the MLP with momentum), on a balanced training set of 400 with 40% of its labels flipped
NOISY_RUN = ["method=l2rw", "model=mlp", "momentum=0.9", "imbalance=0.1", "dataset.train_size=400", "noise.kind=uniform",
             "noise.rate=0.4", "steps=30", "eval_every=30", "progress=false"]
OUTPUTS = ("audit.csv", "audit.png", "audit.json")


def audit_cli(*args) -> tuple[int, str, str]:
    """`l2rw-audit ARGS` in this process: its exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            audit.main([str(arg) for arg in args])
    except SystemExit as exit_:
        code = exit_.code
    return code, stdout.getvalue(), stderr.getvalue()


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_refused(code: int, stderr: str, named: str) -> None:
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert named in stderr


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("audit_run")
    code, stderr = l2rw_train(*NOISY_RUN, f"hydra.run.dir={base / 'run'}", f"results_csv={base / 'results.csv'}")
    assert code == 0, stderr
    return base / "run"


@pytest.fixture(scope="module")
def audited(noisy_run, tmp_path_factory) -> tuple[Path, str]:
    """The audit of `noisy_run` into a folder of its own, with a contact sheet of 12 images, and what it printed."""
    out = tmp_path_factory.mktemp("audited")
    code, stdout, stderr = audit_cli(noisy_run, "--top", "12", "--out", out)
    assert code == 0, stderr
    return out, stdout


def test_score_is_the_mean_of_the_signals_rank_percentiles():
    signals = audit.suspicion_signals(pd.Series([0.5, 2.0, np.nan, 1.0]), pd.Series([0.5, 0.0, np.nan, 0.25]),
                                      np.array([0.9, 0.1, 0.5, 0.5]))
    # ranks, 1 the least suspicious: low weight 4, 2, 1 (never used), 3; high zero share the same;
    # disagreement (0.1, 0.9, 0.5, 0.5) 1, 4, 2.5, 2.5 (the tie averaged); each over N = 4, then the mean of three
    expected = [(4 + 4 + 1) / 12, (2 + 2 + 4) / 12, (1 + 1 + 2.5) / 12, (3 + 3 + 2.5) / 12]
    assert audit.combined_score(signals).tolist() == pytest.approx(expected)


def test_plain_sgd_is_ranked_by_the_models_disagreement_alone():
    p_label = np.random.default_rng(0).random(50)
    signals = audit.suspicion_signals(pd.Series(np.ones(50)), pd.Series(np.zeros(50)), p_label)
    score = audit.combined_score(signals).to_numpy()
    assert np.argsort(-score, kind="stable").tolist() == np.argsort(p_label, kind="stable").tolist()


@pytest.mark.parametrize(("suspicion", "positives", "auroc", "precision"), [
    # positive-negative pairs ranked right: 0.9>0.8, 0.9>0.6, 0.7>0.6, not 0.7<0.8; the top 2 hold one positive
    ([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], 3 / 4, 1 / 2),
    # the pair tied at 1 counts half; the second place is shared by the two 1s, half a positive each
    ([2, 1, 1, 0], [1, 1, 0, 0], 3.5 / 4, 3 / 4),
    # everything tied: chance, and the share of positives
    ([5, 5, 5, 5], [1, 0, 0, 1], 1 / 2, 1 / 2),
])
def test_auroc_and_precision_at_the_number_corrupted_by_hand(suspicion, positives, auroc, precision):
    measured = audit.detection({"ranking": pd.Series(suspicion)}, np.array(positives, dtype=bool))
    assert measured["ranking"] == pytest.approx({"auroc": auroc, "precision_at_k": precision})


def test_auroc_agrees_with_sklearn_and_is_undefined_without_both_kinds():
    rng = np.random.default_rng(1)
    suspicion, positives = rng.integers(0, 5, 300), rng.random(300) < 0.3  # many ties
    assert audit.auroc(suspicion, positives) == pytest.approx(roc_auc_score(positives, suspicion))
    assert audit.auroc([0.2, 0.1], [False, False]) is None


def test_each_example_is_predicted_by_a_model_that_never_trained_on_it(make_cfg, monkeypatch):
    n, folds = 36, 3  # 12 images of each of 3 classes: 4 of each held out per fold
    # each image's pixels hold its index, so what a fold trained on can be read off its images
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    train = LabeledImages(images, torch.arange(n) % 3)
    splits = Splits(train, train, train, ["a", "b", "c"], torch.zeros(n, dtype=torch.bool))
    trained_on = []

    def recorded_fit(model, method, fold_splits, *args, **kwargs):
        assert type(method) is Method and "loss_fn" not in kwargs  # plain SGD on cross-entropy, fit's default
        trained_on.append(fold_splits.train.images[:, 0, 0, 0].tolist())
        assert torch.bincount(fold_splits.train.labels).tolist() == [8, 8, 8]  # stratified

    def seen_or_not(model, held_out, standardize, device):
        """Class 0 for an image the last model trained on, class 1 for one it never saw."""
        return np.eye(3)[[0 if i in trained_on[-1] else 1 for i in held_out[:, 0, 0, 0].tolist()]]

    monkeypatch.setattr(audit, "fit", recorded_fit)
    monkeypatch.setattr(audit, "class_probabilities", seen_or_not)
    probabilities, seconds = audit.out_of_fold_probabilities(make_cfg("model=mlp"), splits, folds, torch.device("cpu"))
    assert probabilities.argmax(axis=1).tolist() == [1] * n
    assert [len(indices) for indices in trained_on] == [24] * folds
    assert seconds > 0


def test_a_folder_that_is_no_run_dir_is_refused(tmp_path):
    code, _, stderr = audit_cli(tmp_path, "--out", tmp_path / "out")
    assert_refused(code, stderr, f"{tmp_path / 'config.yaml'} does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_audit_csv_ranks_every_training_example_by_score(noisy_run, audited):
    out, _ = audited
    table = pd.read_csv(out / "audit.csv", dtype={"class": str, "predicted": str})
    examples = pd.read_csv(noisy_run / "example_weights.csv", dtype={"class": str})
    assert table["rank"].tolist() == list(range(1, len(examples) + 1))
    assert table.score.is_monotonic_decreasing
    by_index = table.set_index("index").sort_index()
    assert by_index.index.tolist() == list(range(len(examples)))
    assert by_index["class"].tolist() == examples["class"].tolist()
    assert by_index.corrupted.tolist() == examples.corrupted.tolist()
    assert by_index.mean_weight.tolist() == pytest.approx(examples.mean_weight.tolist(), nan_ok=True)


@pytest.mark.slow
def test_p_label_is_the_final_models_probability_of_the_label_and_the_score_follows(noisy_run, audited):
    out, _ = audited
    cfg = OmegaConf.load(noisy_run / "config.yaml")
    torch.manual_seed(cfg.seed)
    train = build_splits(cfg).train
    model, card = load_trained(noisy_run)
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (card.mean, card.std))
    with torch.no_grad():
        probabilities = model((train.images / 255 - mean) / std).softmax(dim=1)
    table = pd.read_csv(out / "audit.csv").sort_values("index")
    assert table.p_label.to_numpy() == pytest.approx(probabilities[torch.arange(len(train)), train.labels].numpy(), rel=1e-4)
    assert (table.p_label < table.p_predicted).any()  # the noise gave labels the model does not predict
    never_used = table.mean_weight.max() + 1  # least suspicious as a low weight
    by_hand = pd.DataFrame({"low_mean_weight": -table.mean_weight.fillna(never_used), "high_zero_share": table.zero_share.fillna(-1),
                            "model_disagreement": 1 - table.p_label}).rank(pct=True).mean(axis=1)
    assert table.score.to_numpy() == pytest.approx(by_hand.to_numpy(), abs=0.01)  # audit.csv's 6 digits may tie what full precision does not


@pytest.mark.slow
def test_measures_agree_with_sklearn_and_the_ranked_table(audited):
    out, stdout = audited
    findings = json.loads((out / "audit.json").read_text())
    table = pd.read_csv(out / "audit.csv")
    k = int(table.corrupted.sum())
    assert (findings["examples"], findings["corrupted"]) == (len(table), k) and k > 0
    suspicions = {"score": table.score, "low_mean_weight": -table.mean_weight.fillna(table.mean_weight.max() + 1),
                  "high_zero_share": table.zero_share.fillna(-1), "model_disagreement": 1 - table.p_label}
    assert list(findings["rankings"]) == list(suspicions)
    for name, suspicion in suspicions.items():
        assert findings["rankings"][name]["auroc"] == pytest.approx(roc_auc_score(table.corrupted, suspicion), abs=1e-3), name
    tied_at_k = int((table.score == table.score[k - 1]).sum())  # places shared at the k-th move the precision by up to this
    assert findings["rankings"]["score"]["precision_at_k"] == pytest.approx(table.corrupted.head(k).mean(), abs=(tied_at_k - 1) / k + 1e-9)
    assert f"{findings['rankings']['score']['auroc']:6.3f}" in stdout and f"precision@{k}" in stdout


@pytest.mark.slow
def test_contact_sheet_holds_the_top_images(audited):
    out, _ = audited
    height, width = matplotlib.image.imread(out / "audit.png").shape[:2]
    assert width > height  # --top 12: two rows of eight thumbnails; the default 64 would be eight rows, taller than wide


@pytest.mark.slow
def test_the_run_dir_is_the_default_out_and_a_rerun_replaces_the_audits_own_files(noisy_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(noisy_run, run_copy)
    for _ in range(2):
        code, stdout, stderr = audit_cli(run_copy, "--top", "1")
        assert code == 0, stderr
    assert all((run_copy / name).is_file() for name in OUTPUTS)
    assert str(run_copy / "audit.csv") in stdout


@pytest.mark.slow
@pytest.mark.parametrize(("options", "named"), [
    (["--top", "0"], "--top 0"),
    (["--cleanlab-folds", "1"], "--cleanlab-folds 1"),
    (["--cleanlab-folds", "1000"], "--cleanlab-folds 1000"),  # the smallest class has 40 examples
])
@pytest.mark.parametrize("out", [None, "out"])
def test_bad_options_exit_2_writing_nothing(noisy_run, tmp_path, options, named, out):
    before = files_in(noisy_run)
    code, _, stderr = audit_cli(noisy_run, *options, *(["--out", tmp_path / out] if out else []))
    assert_refused(code, stderr, named)
    assert files_in(noisy_run) == before and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_unfinished_runs_changed_data_and_foreign_files_are_refused(noisy_run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(noisy_run, unfinished)
    (unfinished / "model.json").unlink()
    code, _, stderr = audit_cli(unfinished)
    assert_refused(code, stderr, f"{unfinished / 'model.json'} does not exist")

    changed = tmp_path / "changed"
    shutil.copytree(noisy_run, changed)
    examples = pd.read_csv(changed / "example_weights.csv", dtype=str, keep_default_na=False)
    examples.loc[0, "class"] = "9" if examples.loc[0, "class"] != "9" else "8"
    examples.to_csv(changed / "example_weights.csv", index=False)
    code, _, stderr = audit_cli(changed)
    assert_refused(code, stderr, "the data changed since the run")

    foreign = tmp_path / "out"
    foreign.mkdir()
    (foreign / "audit.png").write_text("a person's own file")
    code, _, stderr = audit_cli(noisy_run, "--out", foreign)
    assert_refused(code, stderr, "audit.png exists and is not a file l2rw-audit wrote")
    assert files_in(foreign) == {"audit.png": b"a person's own file"}
    assert not any((folder / name).exists() for folder in (unfinished, changed) for name in OUTPUTS)


@pytest.mark.slow
def test_without_cleanlab_installed_the_option_names_the_install(noisy_run, tmp_path, monkeypatch):
    for module in ("cleanlab", "cleanlab.filter", "cleanlab.rank"):
        monkeypatch.setitem(sys.modules, module, None)  # what importing a package that is not installed raises
    code, _, stderr = audit_cli(noisy_run, "--cleanlab-folds", "2", "--out", tmp_path / "out")
    assert_refused(code, stderr, "pip install -e '.[cleanlab]'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cleanlab_folds_compare_confident_learning_and_its_cost(noisy_run, tmp_path):
    before = files_in(noisy_run)
    code, stdout, stderr = audit_cli(noisy_run, "--cleanlab-folds", "2", "--top", "1", "--out", tmp_path)
    assert code == 0, stderr
    assert files_in(noisy_run) == before  # the fold trainings wrote nothing into the run dir
    findings = json.loads((tmp_path / "audit.json").read_text())
    cleanlab = findings["cleanlab"]
    table = pd.read_csv(tmp_path / "audit.csv")
    assert cleanlab["folds"] == 2
    assert cleanlab["flagged"] == table.cleanlab_flagged.sum() > 0
    assert cleanlab["flagged_corrupted"] == (table.cleanlab_flagged & table.corrupted).sum()
    quality = findings["rankings"]["cleanlab_label_quality"]
    assert quality["auroc"] == pytest.approx(roc_auc_score(table.corrupted, -table.cleanlab_quality), abs=1e-3)
    assert cleanlab["run_wall_seconds"] == json.loads((noisy_run / "summary.json").read_text())["wall_seconds"]
    assert cleanlab["fold_training_seconds"] > 0
    assert f"cleanlab flags {cleanlab['flagged']} examples" in stdout and "2 fold trainings took" in stdout

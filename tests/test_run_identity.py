"""l2rw.run.identity: `config_hash` names what a run reads and nothing else, and `skip_done` skips a
configuration that already has a finished row (and only a finished one)."""
import pandas as pd
import pytest

from l2rw.errors import DivergedError
from l2rw.run.identity import config_hash
from l2rw.run.train import train
from tests.helpers.configs import UNREAD_KEY_OVERRIDES, compose_config


@pytest.mark.parametrize("overrides, same_run", [
    (["dataset.profile=longtail", "imbalance=0.5"], ["dataset.profile=longtail", "imbalance=0.9"]),
    (["imbalance_ratio=0.5"], ["imbalance_ratio=100"]),  # the step profile never reads it, nonsense or not
    (["dataset.profile=longtail", "dataset.majority_class=4"], ["dataset.profile=longtail"]),
    (["noise.flip_to=[1,2]"], []),  # no noise
    (["noise.kind=uniform", "noise.rate=0.2", "noise.background_class=3"], ["noise.kind=uniform", "noise.rate=0.2"]),
    (["noise.kind=background", "noise.rate=0.2", "noise.flip_to=abc"], ["noise.kind=background", "noise.rate=0.2"]),
    (["noise.rate=0"], ["noise.rate=0.0"]),  # no noise: any rate but 0 is refused, however it is written
    (["lr=1"], ["lr=1.0"]),
    (["meta.per_class=5"], ["dataset.meta_per_class=5"]),  # the dataset's value is only meta.per_class's default
    (["+dataset.tuned.l2rw.lr=0.5"], []),  # another method's tuned value: an sgd run reads only its own lr
    # where the run writes or shows things, and how fast: never what it learns
    (["progress=true"], ["progress=false"]),
    (["threads=3"], ["threads=1"]),
    (["skip_done=true"], ["skip_done=false"]),
    (["checkpoint_every=5"], ["checkpoint_every=0"]),
    (["results_csv=elsewhere/results.csv"], []),
])
def test_config_hash_ignores_what_the_run_does_not_read(make_cfg, overrides, same_run):
    assert config_hash(make_cfg(*overrides)) == config_hash(make_cfg(*same_run))


@pytest.mark.parametrize("overrides, other_run", [
    (["imbalance=0.5"], ["imbalance=0.9"]),
    (["dataset.profile=longtail", "imbalance_ratio=10"], ["dataset.profile=longtail"]),
    (["dataset.majority_class=4"], []),
    (["noise.kind=flip", "noise.rate=0.2", "noise.flip_to=[1,2,3,4,5,6,7,8,9,0]"], ["noise.kind=flip", "noise.rate=0.2"]),
    (["noise.kind=background", "noise.rate=0.2", "noise.background_class=3"], ["noise.kind=background", "noise.rate=0.2"]),
    (["noise.kind=uniform", "noise.rate=0.2"], ["noise.kind=uniform", "noise.rate=0.4"]),
    (["+dataset.tuned.sgd.lr=0.5"], []),  # this method's tuned value reaches the run as its lr
])
def test_config_hash_tells_apart_what_the_run_reads(make_cfg, overrides, other_run):
    assert config_hash(make_cfg(*overrides)) != config_hash(make_cfg(*other_run))


@pytest.mark.parametrize("overrides", UNREAD_KEY_OVERRIDES)
def test_a_key_the_run_does_not_read_is_not_hashed(overrides):
    without = [o for o in overrides if o.split("=")[0] in ("dataset.profile", "noise.kind", "noise.rate")]
    assert config_hash(compose_config(*overrides)) == config_hash(compose_config(*without))


# --- skip_done ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_longtail_run_differing_only_in_the_imbalance_it_does_not_read_is_skipped(make_cfg, tmp_path):
    first = train(make_cfg("dataset.profile=longtail", "imbalance=0.5", "skip_done=true"), tmp_path / "a")
    again = train(make_cfg("dataset.profile=longtail", "imbalance=0.9", "skip_done=true"), tmp_path / "b")
    assert again["run_dir"] == str(tmp_path / "a") and again["config_hash"] == first["config_hash"]
    assert not (tmp_path / "b").exists()
    rows = pd.read_csv(tmp_path / "results.csv")
    assert len(rows) == 1 and rows.imbalance.isna().all()


def test_skip_done_runs_again_a_configuration_whose_only_row_is_diverged(make_cfg, tmp_path, capsys):
    diverging = ["lr=1e30", "momentum=0.9", "schedule=constant", "skip_done=true"]
    with pytest.raises(DivergedError):
        train(make_cfg(*diverging), tmp_path / "a")
    with pytest.raises(DivergedError):  # not skipped: trained again, and diverged again
        train(make_cfg(*diverging), tmp_path / "b")
    assert "skipped:" not in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "results.csv")
    assert rows.status.tolist() == ["diverged", "diverged"] and rows.config_hash.nunique() == 1
    assert rows.run_dir.tolist() == [str(tmp_path / "a"), str(tmp_path / "b")]

"""l2rw-plan: a preset's sweep expanded and planned without training (steps, lr, deferred
re-weighting, time from measured step costs, the literature's numbers), and its refusals."""
import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2rw.data import build_splits
from l2rw.data.digits import load_digits
from l2rw.data.splits import PoolCounts, planned_train_counts
from l2rw.run import plan

CIFAR10_LT = "+experiment=cifar10_lt_baselines"


def cifar10_lt_train_size() -> int:
    """Cui et al.'s longtail profile at ratio 100, n_c = floor(n_max * 100^(-c/9)), over the 5,000
    images per class CIFAR-10 has left after 10 meta and 100 validation images."""
    n_max = 5000 - 10 - 100
    return sum(math.floor(n_max * 100 ** (-c / 9)) for c in range(10))


def cao_lr(epoch: int, lr: float = 0.1) -> float:
    """Cao et al.'s released schedule (LDAM-DRW cifar_train.py, adjust_learning_rate), epochs from 0."""
    if epoch < 5:
        return lr * (epoch + 1) / 5
    if epoch >= 180:
        return lr * 1e-4
    if epoch >= 160:
        return lr * 0.01
    return lr


@pytest.fixture(scope="module")
def cifar10_lt_plans() -> list[plan.JobPlan]:
    return plan.plan_sweep([CIFAR10_LT])


def test_the_cifar10_lt_preset_plans_15_jobs_of_200_epochs_over_the_longtail_training_set(cifar10_lt_plans):
    batches = cifar10_lt_train_size() // 128
    assert len(cifar10_lt_plans) == 15
    assert {(p.train_size, p.job.cfg.epochs, p.steps_per_epoch, p.steps) for p in cifar10_lt_plans} == {
        (cifar10_lt_train_size(), 200, batches, 200 * batches)
    }


def test_the_lr_at_each_milestone_is_cao_et_al_s(cifar10_lt_plans):
    for job in cifar10_lt_plans:
        epochs = [int(at.removeprefix("e")) for at, _ in job.lr_at]
        assert epochs == [0, 5, 160, 180]
        assert [lr for _, lr in job.lr_at] == pytest.approx([cao_lr(epoch) for epoch in epochs])


def test_ldam_drw_switches_its_class_weights_on_at_the_first_lr_drop(cifar10_lt_plans):
    by_recipe = {p.job.recipe: p for p in cifar10_lt_plans}
    assert by_recipe["ldam_drw"].reweighting_from == 160 * by_recipe["ldam_drw"].steps_per_epoch
    assert by_recipe["class_balanced_ce"].reweighting_from == 0  # undeferred: weighted from the start
    assert by_recipe["sgd_ce"].reweighting_from is None and by_recipe["l2rw_ce"].reweighting_from is None
    [longer] = plan.plan_sweep([CIFAR10_LT, "+recipe=ldam_drw", "epochs=250"])  # the drop, not 80% of the run
    assert longer.reweighting_from == 160 * longer.steps_per_epoch != 0.8 * longer.steps


def test_the_literature_s_numbers_stand_beside_the_matching_recipes_only(cifar10_lt_plans):
    by_recipe = {p.job.recipe: p.literature for p in cifar10_lt_plans}
    assert by_recipe["ldam_drw"] == {"accuracy": 77.03, "source": "Cao et al. 2019, Table 2"}
    assert by_recipe["mwnet_ce"]["accuracy"] == 75.21 and by_recipe["gce"] is None
    other_ratio = plan.plan_sweep([CIFAR10_LT, "+recipe=ldam_drw", "imbalance_ratio=50"])
    assert other_ratio[0].literature is None


def write_step_costs(path: Path, rows: dict[str, float]) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["model", "method", "batch", "hardware", "s_per_step", "machine"])
        writer.writeheader()
        for label, seconds in rows.items():
            writer.writerow({"model": "resnet32", "method": label, "batch": 128, "hardware": "cuda", "s_per_step": seconds, "machine": "a GPU"})
    return path


def test_a_step_costs_csv_gives_each_job_steps_times_its_method_s_seconds_per_step(tmp_path, capsys):
    costs = write_step_costs(tmp_path / "bench.csv", {"sgd": 0.05, "class_balanced": 0.05, "l2rw fwd": 0.2, "l2rw double_backprop": 0.9})
    # the command line's +recipe replaces the preset's 15
    assert plan.main(["--step-costs", str(costs), CIFAR10_LT, "+recipe=sgd_ce,class_balanced_ce,l2rw_ce"]) == 0
    out = capsys.readouterr().out
    steps = 200 * (cifar10_lt_train_size() // 128)
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    for recipe, seconds in [("sgd_ce", 0.05), ("class_balanced_ce", 0.05), ("l2rw_ce", 0.2)]:
        assert f"| {seconds} | {plan.duration(steps * seconds)} |" in rows[recipe]
    assert f"| all | 3 | {3 * steps} | {plan.duration(steps * 0.3)} |" in out
    assert "a GPU" in out


def test_a_job_without_a_row_in_the_step_costs_gets_no_time(tmp_path, capsys):
    costs = write_step_costs(tmp_path / "bench.csv", {"sgd": 0.05})
    assert plan.main(["--step-costs", str(costs), CIFAR10_LT, "+recipe=sgd_ce,mwnet_ce"]) == 0
    out = capsys.readouterr().out
    assert "| all | 2 |" in out and out.split("| all | 2 |")[1].split("\n")[0].endswith("| – |")
    assert "no step cost for: model resnet32, batch 128, 'mwnet fwd'" in out


def test_without_step_costs_the_time_column_says_how_to_get_them(capsys):
    assert plan.main([CIFAR10_LT, "+recipe=sgd_ce"]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("time:")]
    assert len(hint) == 1 and "scripts/bench_step.py --hardware cuda --models resnet32 --batch 128" in hint[0]


@pytest.mark.parametrize("overrides, field", [
    (["lrr=1"], "lrr"),
    ([CIFAR10_LT, "+recipe=sgd_ce", "lr=abc"], "lr=abc"),
    ([CIFAR10_LT, "+recipe=sgd_ce,focal", "dataset.val_per_class=5000"], "dataset.val_per_class"),
])
def test_bad_input_is_one_line_naming_the_field_and_exit_2(overrides, field, capsys):
    assert plan.main(overrides) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and field in err


@pytest.mark.parametrize("overrides", [
    ["dataset.profile=step", "imbalance=0.7", "dataset.val_per_class=5"],
    ["dataset.profile=longtail", "imbalance_ratio=10", "dataset.val_per_class=5"],
    ["dataset.profile=longtail", "imbalance_ratio=10", "dataset.classes=[7,2,5]", "meta.add_to_train=true", "dataset.train_size=200"],
])
def test_planned_train_counts_are_the_ones_build_splits_draws_on_digits(make_cfg, overrides):
    cfg = make_cfg(*overrides)
    drawn = torch.bincount(build_splits(cfg).train.labels, minlength=len(cfg.dataset.classes or range(10))).tolist()
    assert planned_train_counts(cfg, PoolCounts.of(load_digits())) == drawn


@pytest.mark.slow
def test_measure_times_each_step_here_with_a_progress_bar(capsys):
    assert plan.main(["--measure", "method=sgd,l2rw", "steps=10"]) == 0
    out, err = capsys.readouterr()
    assert "step costs measured now on" in out and "timing steps" in err
    [total] = [line for line in out.splitlines() if line.startswith("| all |")]
    assert total.startswith("| all | 2 | 20 |") and not total.endswith("| – |")


@pytest.mark.slow
def test_the_console_script_plans_a_preset():
    script = Path(sys.executable).parent / "l2rw-plan"
    done = subprocess.run([str(script), CIFAR10_LT, "+recipe=ldam_drw"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| ldam_drw | class_balanced+ldam | 12131 | 200 | 94 | 18800 |" in done.stdout

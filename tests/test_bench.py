"""l2rw.run.bench, the timing harness the benchmarks in scripts/ share: every method composed from the
real configs and timed through `fit`, one row each, ratios to the sgd of the same round."""
import pytest
import torch

from l2rw.losses.focal import Focal
from l2rw.run import bench
from l2rw.run.instantiation import build
from l2rw.training.optimization import make_scheduler
from tests.helpers.scripts import load_script


def tiny(methods: list[str], with_compiled: bool = False) -> bench.Comparison:
    return bench.Comparison(methods=methods, batch=20, meta_batch=10, rounds=1, steps=1, with_compiled=with_compiled)


@pytest.mark.slow
def test_rows_cover_every_method_with_sgd_as_the_unit(tmp_path):
    rows = bench.compare_methods("lenet", tiny(list(bench.METHODS)), tmp_path)
    assert [row["method"] for row in rows] == list(bench.METHODS) and "l2rw last_layer" in bench.METHODS
    assert rows[0]["x_sgd"] == 1.0
    # the meta batch each meta method was built with: cmwnet's two, l2rw's three and mwnet's two; not sgd,
    # class_balanced, coteaching or weighted_sampler
    assert [row["meta_batch"] for row in rows] == ["", "", 10, 10, "", *[10] * 5, ""]


def test_methods_picks_the_rows_and_sgd_stays_as_the_unit(tmp_path):
    rows = bench.compare_methods("mlp", tiny(["l2rw last_layer"]), tmp_path)
    assert [row["method"] for row in rows] == ["sgd", "l2rw last_layer"] and rows[0]["x_sgd"] == 1.0


@pytest.mark.slow
def test_a_model_comes_with_its_options_and_library_models_get_cifars_shape(tmp_path):
    rows = bench.compare_methods("timm model.arch=test_resnet", tiny(["l2rw fwd"]), tmp_path)
    assert [(row["model"], row["input"], row["method"]) for row in rows] == [
        ("timm model.arch=test_resnet", "3x32x32", "sgd"), ("timm model.arch=test_resnet", "3x32x32", "l2rw fwd")]
    assert bench.run_overrides("timm model.arch=test_vit model.image_size=32", "cpu", 8, ["seed=1"]) == [
        "model=timm", "model.arch=test_vit", "model.image_size=32", "hardware=cpu", "batch_size=8", "seed=1"]


@pytest.mark.slow
def test_with_compiled_times_each_method_twice_with_its_own_sgd_as_the_unit(tmp_path):
    torch.compiler.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    rows = {row["method"]: row for row in bench.compare_methods("mlp", tiny(list(bench.METHODS), with_compiled=True), tmp_path)}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs_before  # the compiled ones ran compiled
    assert list(rows) == [*bench.METHODS, *(label + ", compiled" for label in bench.METHODS)]
    assert [row["compile"] for row in rows.values()] == [False] * len(bench.METHODS) + [True] * len(bench.METHODS)
    assert rows["sgd"]["x_sgd"] == rows["sgd"]["x_first_sgd"] == rows["sgd, compiled"]["x_sgd"] == 1.0


def test_compiled_rows_are_ratios_to_compiled_sgd_and_to_the_first_sgd():
    wall = {"sgd": [1.0, 2.0, 1.0], "sgd, compiled": [0.5, 1.0, 0.5], "l2rw fwd, compiled": [1.5, 3.5, 2.0]}
    timings = {label: bench.Timings(seconds, [2 * s for s in seconds]) for label, seconds in wall.items()}
    columns = bench.timing_columns("l2rw fwd, compiled", timings)
    assert (columns["x_sgd"], columns["x_sgd_min"], columns["x_sgd_max"]) == (3.5, 3.0, 4.0)
    assert columns["x_first_sgd"] == 1.75  # median of 1.5, 1.75, 2.0
    assert columns["cpu_x_sgd"] == 3.5 and columns["s_per_step"] == 2.0


def test_the_first_round_is_left_out_and_contenders_take_turns():
    calls = []

    class Recorded:
        def __init__(self, label):
            self.label = label

        def seconds_per_step(self, steps):
            calls.append(self.label)
            return float(len(calls)), 0.0

    timings = bench.time_in_rounds({"sgd": Recorded("sgd"), "l2rw fwd": Recorded("l2rw fwd")}, rounds=2, steps=1)
    assert calls == ["sgd", "l2rw fwd"] * 3
    assert timings["sgd"].wall == [3.0, 5.0] and timings["l2rw fwd"].wall == [4.0, 6.0]


def test_a_run_is_built_from_the_composed_config_and_trains_through_fit(tmp_path):
    run = bench.Run.on_random_data(["model=mlp", "method=l2rw", "loss=focal", "lr=0.05"], bench.DIGITS_SHAPE, 40, 10)
    assert run.optimizer.param_groups[0]["lr"] == 0.05 and isinstance(run.loss_fn, Focal)
    before = [p.detach().clone() for p in run.model.parameters()]
    scheduler = make_scheduler(run.optimizer, "constant", 1)
    result = run.fit(build(run.cfg.method), 2, scheduler, tmp_path / "metrics.csv")
    assert result.skipped_steps < 2 and any(not torch.equal(a, b) for a, b in zip(before, run.model.parameters()))


@pytest.mark.slow
def test_the_scripts_run_at_tiny_size(tmp_path, capsys):
    load_script("bench_step").main(["--models", "mlp", "--methods", "l2rw fwd", "--batch", "8", "--meta-batch", "4",
                                    "--repeats", "1", "--steps", "1", "--csv", str(tmp_path / "bench.csv")])
    assert "| mlp | 1x8x8 | l2rw fwd |" in capsys.readouterr().out and (tmp_path / "bench.csv").is_file()
    load_script("bench_cifar10").main(["--batch", "4", "--repeats", "1", "--steps", "1", "--input-batches", "2"])
    printed = capsys.readouterr().out
    assert "images/s" in printed and "| l2rw fwd |" in printed and "l2rw fwd / sgd" in printed

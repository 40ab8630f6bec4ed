"""scripts/bench_step.py builds every method from the real configs and reports one row each."""
import argparse

import pytest
import torch

from tests.conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_step")


def tiny_args(with_compiled: bool, methods: list[str]) -> argparse.Namespace:
    return argparse.Namespace(
        batch=20, meta_batch=10, hardware="cpu", repeats=1, steps=1, overrides=[], with_compiled=with_compiled, methods=methods
    )


@pytest.mark.slow
def test_bench_rows_cover_every_method_with_sgd_as_the_unit(bench, tmp_path):
    rows = bench.bench_model("lenet", tiny_args(False, list(bench.METHODS)), tmp_path)
    assert [row["method"] for row in rows] == list(bench.METHODS) and "l2rw last_layer" in bench.METHODS
    assert rows[0]["x_sgd"] == 1.0 and all(row["s_per_step"] > 0 and row["peak_step_mb"] > 0 for row in rows)


def test_methods_picks_the_rows_and_sgd_stays_as_the_unit(bench, tmp_path):
    rows = bench.bench_model("mlp", tiny_args(False, ["l2rw last_layer"]), tmp_path)
    assert [row["method"] for row in rows] == ["sgd", "l2rw last_layer"] and rows[0]["x_sgd"] == 1.0


@pytest.mark.slow
def test_with_compiled_times_each_method_twice_with_its_own_sgd_as_the_unit(bench, tmp_path):
    args = tiny_args(True, list(bench.METHODS))
    torch.compiler.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    rows = {row["method"]: row for row in bench.bench_model("mlp", args, tmp_path)}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs_before  # the compiled ones ran compiled
    assert list(rows) == [*bench.METHODS, *(label + ", compiled" for label in bench.METHODS)]
    assert [row["compile"] for row in rows.values()] == [False] * len(bench.METHODS) + [True] * len(bench.METHODS)
    assert rows["sgd"]["x_sgd"] == rows["sgd"]["x_first_sgd"] == rows["sgd, compiled"]["x_sgd"] == 1.0


def test_compiled_rows_are_ratios_to_compiled_sgd_and_to_the_first_sgd(bench):
    times = {"sgd": [1.0, 2.0, 1.0], "sgd, compiled": [0.5, 1.0, 0.5], "l2rw fwd, compiled": [1.5, 3.5, 2.0]}
    columns = bench.timing_columns("l2rw fwd, compiled", times, {k: [2 * t for t in v] for k, v in times.items()})
    assert (columns["x_sgd"], columns["x_sgd_min"], columns["x_sgd_max"]) == (3.5, 3.0, 4.0)
    assert columns["x_first_sgd"] == 1.75  # median of 1.5, 1.75, 2.0
    assert columns["cpu_x_sgd"] == 3.5 and columns["s_per_step"] == 2.0

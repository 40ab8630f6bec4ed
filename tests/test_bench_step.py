"""scripts/bench_step.py builds every method from the real configs and reports one row each."""
import argparse
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_step.py"


def test_bench_rows_cover_every_method_with_sgd_as_the_unit(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_step", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(batch=20, meta_batch=10, hardware="cpu", repeats=1, steps=1, overrides=[])
    rows = bench.bench_model("lenet", args, tmp_path)
    assert [row["method"] for row in rows] == list(bench.METHODS)
    assert rows[0]["x_sgd"] == 1.0 and all(row["s_per_step"] > 0 and row["peak_step_mb"] > 0 for row in rows)

"""`from l2rw import example_weights` as a library user has it: without Hydra, and in the example
training loop the README points to. (The weights themselves: test_reweight*.py.)"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a fresh interpreter, the only one without Hydra imported: torch's import alone takes seconds
def test_importing_the_library_does_not_import_hydra():
    code = "import sys; from l2rw import example_weights; assert 'hydra' not in sys.modules, 'hydra imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_own_training_loop_example_runs_and_reports_both_losses():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_training_loop.py")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "balanced accuracy" in done.stdout and "l2rw" in done.stdout and "uniform" in done.stdout
